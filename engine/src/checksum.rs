//! CRC32C (Castagnoli), the checksum of every .klt section: a byte and a
//! table lookup at a time on the portable path (1 KiB of flash, no RAM),
//! eight bytes an instruction with SSE 4.2 on the x86 ones (the same
//! remainder; see [`crate::kernels::crc32c_update`]).
#![forbid(unsafe_code)]

/// Incremental CRC32C: feed bytes with [`Crc32c::update`], read with [`Crc32c::finish`].
#[derive(Clone, Copy, Debug)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh checksum.
    pub const fn new() -> Self {
        Crc32c(!0)
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crate::kernels::crc32c_update(self.0, bytes);
    }

    /// The checksum of everything fed so far.
    pub const fn finish(&self) -> u32 {
        !self.0
    }
}

/// CRC32C of one byte slice.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 and the common check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: [u8; 100] = core::array::from_fn(|i| (i * 7) as u8);
        let mut c = Crc32c::new();
        c.update(&data[..33]);
        c.update(&data[33..]);
        assert_eq!(c.finish(), crc32c(&data));
    }
}
