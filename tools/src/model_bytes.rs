//! A model file's bytes in memory that the kernels stream fastest: an
//! anonymous mapping which Linux is asked to back with transparent huge
//! pages (2 MiB on x86-64).
//!
//! Decoding a token reads every weight once, front to back. On 4 KiB pages
//! that is a TLB miss every 4 KiB, each a page walk, doubled inside a
//! virtual machine, and the hardware prefetchers start over at every page;
//! on huge pages the same stream runs faster (see docs/PERFORMANCE.md,
//! 2026-12-02). A `Vec<u8>` gets huge pages only where the system gives them
//! to every allocation (`/sys/kernel/mm/transparent_hugepage/enabled` set to
//! `always`); the common setting is `madvise`, which gives them to regions
//! that ask, as this one does.
//!
//! Elsewhere (another OS, huge pages disabled) the bytes sit in ordinary
//! pages: only the speed differs.

use std::io::{self, Read};

use memmap2::MmapMut;

/// The bytes of a model file, read-only once loaded.
pub struct ModelBytes {
    map: MmapMut,
    /// Bytes in use (the mapping is at least one byte long).
    len: usize,
}

impl ModelBytes {
    /// `len` bytes read from `source` (an error if it holds fewer).
    pub fn read_from(source: &mut impl Read, len: usize) -> io::Result<ModelBytes> {
        let mut map = huge_page_buffer(len)?;
        source.read_exact(&mut map[..len])?;
        Ok(ModelBytes { map, len })
    }

    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> io::Result<ModelBytes> {
        ModelBytes::read_from(&mut &bytes[..], bytes.len())
    }
}

/// `len` zeroed, writable bytes (at least one is mapped) in an anonymous
/// mapping that Linux is asked to back with huge pages: for weights the
/// kernels stream, such as the model's bytes or their packed copy.
pub fn huge_page_buffer(len: usize) -> io::Result<MmapMut> {
    let map = MmapMut::map_anon(len.max(1))?;
    // Only a hint: where it is refused, ordinary pages serve.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

impl AsRef<[u8]> for ModelBytes {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_the_bytes_read() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(ModelBytes::copy_of(&bytes).unwrap().as_ref(), &bytes[..]);
        assert!(ModelBytes::copy_of(&[]).unwrap().as_ref().is_empty());
    }

    #[test]
    fn a_short_source_is_an_error() {
        let err = ModelBytes::read_from(&mut &[1u8, 2, 3][..], 4)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
