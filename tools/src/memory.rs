//! The memory budget both programs hold their large buffers to.
//!
//! A size that follows from a file or a flag (a model's `max_seq_len`, a
//! text's length, `--batch`) is computed with checked arithmetic, compared
//! with the budget before anything is allocated, and then allocated
//! fallibly: asking for too much ends in one error line that names the
//! size and the flag that lowers it, never in an abort or the OOM killer.
//!
//! The budget is `--max-memory SIZE` when given; otherwise the memory the
//! machine has available when the command starts (`MemAvailable` in
//! `/proc/meminfo`), or 4 GiB where that cannot be read.

use std::fmt;

/// The budget when neither the flag nor `/proc/meminfo` gives one.
pub const FALLBACK_BYTES: u64 = 4 << 30;

/// How many bytes the large buffers of one command may take, and where
/// that number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The limit, in bytes.
    pub bytes: u64,
    /// Whether `--max-memory` set it.
    pub from_flag: bool,
}

impl Budget {
    /// `--max-memory` if given, else the available memory.
    pub fn new(max_memory: Option<u64>) -> Budget {
        match max_memory {
            Some(bytes) => Budget {
                bytes,
                from_flag: true,
            },
            None => Budget {
                bytes: available_memory().unwrap_or(FALLBACK_BYTES),
                from_flag: false,
            },
        }
    }

    /// Whether `bytes` (`None`: beyond counting) fit.
    pub fn fits(&self, bytes: Option<u64>) -> bool {
        bytes.is_some_and(|b| b <= self.bytes)
    }

    /// `Ok` when `bytes` (`None`: beyond counting) fit the budget; else the
    /// one-line explanation: what needs how much, the budget, and `lower`,
    /// the flag or file that asks for it.
    pub fn check(&self, bytes: Option<u64>, what: &str, lower: &str) -> Result<(), OutOfMemory> {
        if self.fits(bytes) {
            return Ok(());
        }
        Err(OutOfMemory {
            what: what.to_string(),
            bytes,
            budget: Some(*self),
            lower: lower.to_string(),
        })
    }

    /// `n` default values, when their bytes fit the budget and the
    /// allocator gives them.
    pub fn zeroed<T: Clone + Default>(
        &self,
        n: usize,
        what: &str,
        lower: &str,
    ) -> Result<Vec<T>, OutOfMemory> {
        let bytes = n.checked_mul(std::mem::size_of::<T>()).map(|b| b as u64);
        self.check(bytes, what, lower)?;
        zeroed(n, what, lower)
    }
}

/// Bytes of an engine session of `max_seq` positions (`None`: more than
/// 64 bits can count).
pub fn session_bytes(config: &kinglet::Config, max_seq: u32) -> Option<u64> {
    match kinglet::session_floats(config, max_seq) {
        usize::MAX => None,
        floats => (floats as u64).checked_mul(4),
    }
}

/// A buffer that does not fit: over the budget, or refused by the
/// allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// What the buffer is for.
    pub what: String,
    /// Its size (`None`: it overflows 64 bits).
    pub bytes: Option<u64>,
    /// The budget it exceeds (`None`: the allocator refused it).
    pub budget: Option<Budget>,
    /// What the user can change to need less.
    pub lower: String,
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.bytes.map_or("more than 16 EiB".to_string(), human);
        write!(f, "{} needs {size}", self.what)?;
        match self.budget {
            Some(b) if b.from_flag => write!(f, ", more than --max-memory {}", human(b.bytes))?,
            Some(b) => write!(
                f,
                ", more than the {} of memory available (--max-memory overrides)",
                human(b.bytes)
            )?,
            None => f.write_str(", which could not be allocated")?,
        }
        write!(f, "; {}", self.lower)
    }
}

impl std::error::Error for OutOfMemory {}

/// `n` default (zero) values, allocated fallibly: an error instead of an
/// abort when the allocator refuses.
pub fn zeroed<T: Clone + Default>(
    n: usize,
    what: &str,
    lower: &str,
) -> Result<Vec<T>, OutOfMemory> {
    let mut v = Vec::new();
    let bytes = n.checked_mul(std::mem::size_of::<T>()).map(|b| b as u64);
    if bytes.is_none() || v.try_reserve_exact(n).is_err() {
        return Err(OutOfMemory {
            what: what.to_string(),
            bytes,
            budget: None,
            lower: lower.to_string(),
        });
    }
    v.resize(n, T::default());
    Ok(v)
}

/// Bytes as a person reads them, in the binary units `--max-memory` takes:
/// `64.0 GiB`, `512.0 MiB`, `900 bytes`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses `--max-memory`: bytes, or a number with K, M, G or T (powers of
/// 1024; `KiB`, `MB`… spelled out are accepted too): `512M`, `4G`, `1.5G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: give bytes, or a number with K, M, G or T"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: give bytes, or a number with K, M, G or T")
    })?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is not a usable memory size"));
    }
    Ok(bytes as u64)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2 tb"), Ok(2 << 40));
        for bad in [
            "",
            "G",
            "-1G",
            "0",
            "nan",
            "infG",
            "1e3",
            "12X",
            "99999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_message_names_size_budget_and_remedy() {
        let flag = Budget::new(Some(1 << 30));
        let e = flag
            .check(
                Some(68_727_871_664),
                "a session of 1,048,576 positions",
                "--max-seq lowers it",
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a session of 1,048,576 positions needs 64.0 GiB, more than --max-memory 1.0 GiB; --max-seq lowers it"
        );
        assert_eq!(flag.check(Some(1 << 30), "x", "y"), Ok(()));
        assert!(flag
            .check(None, "x", "y")
            .unwrap_err()
            .to_string()
            .contains("more than 16 EiB"));
        let refused = zeroed::<f32>(usize::MAX / 2, "the arena", "--dim lowers it").unwrap_err();
        assert_eq!(refused.bytes, None);
        assert!(Budget::new(None).bytes > 0);
        assert_eq!(zeroed::<u32>(3, "x", "y").unwrap(), [0, 0, 0]);
    }
}
