//! Size limits of keys and values (DESIGN.md §2). Rejected with a clear error, never truncated.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const HASH_KEY_BYTES_MAX: usize = 1024;
pub const SORT_KEY_BYTES_MAX: usize = 4096;
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { value_bytes_max: VALUE_BYTES_MAX_DEFAULT }
    }
}

pub fn human_bytes(n: usize) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if n >= 1 << 20 {
        let v = n as f64 / MIB;
        if v.fract() == 0.0 { format!("{v:.0} MiB") } else { format!("{v:.1} MiB") }
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

impl Limits {
    /// Bytes of keys and values in one request of many records (`multi_set`, a duplicate batch):
    /// 4 × `value_bytes_max`.
    pub fn batch_bytes_max(&self) -> usize {
        4 * self.value_bytes_max
    }

    pub fn check_hash_key(&self, hash_key: &[u8]) -> Result<()> {
        if hash_key.is_empty() {
            return Err(Error::InvalidArgument("hash key is empty (it must be 1 to 1024 bytes)".into()));
        }
        if hash_key.len() > HASH_KEY_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "hash key of {} bytes exceeds the {HASH_KEY_BYTES_MAX}-byte limit",
                hash_key.len()
            )));
        }
        Ok(())
    }

    pub fn check_sort_key(&self, sort_key: &[u8]) -> Result<()> {
        if sort_key.len() > SORT_KEY_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "sort key of {} bytes exceeds the {SORT_KEY_BYTES_MAX}-byte limit",
                sort_key.len()
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.value_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "value of {} exceeds the {} limit (set max_value_bytes to raise it)",
                human_bytes(value.len()),
                human_bytes(self.value_bytes_max)
            )));
        }
        Ok(())
    }

    pub fn check_key(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<()> {
        self.check_hash_key(hash_key)?;
        self.check_sort_key(sort_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit() {
        let l = Limits::default();
        assert!(l.check_hash_key(b"").unwrap_err().to_string().contains("empty"));
        let e = l.check_hash_key(&[0; 1025]).unwrap_err().to_string();
        assert!(e.contains("1025") && e.contains("1024"), "{e}");
        assert!(l.check_sort_key(&[0; 4096]).is_ok());
        assert!(l.check_sort_key(&[0; 4097]).is_err());
        let e = l.check_value(&vec![0; (1 << 20) + (1 << 19) / 5 * 5]).unwrap_err().to_string();
        assert!(e.contains("1 MiB limit") && e.contains("max_value_bytes"), "{e}");
        assert!(l.check_value(&vec![0; 1 << 20]).is_ok());
    }
}
