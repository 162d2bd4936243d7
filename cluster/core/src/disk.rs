//! Free space on a server's disks, IO-free (the replica servers' hosts and the meta run it). Below
//! the reserve on any of its directories (data, log), a replica server's primaries take only
//! writes that delete (`Ctx::disk_low`): nothing lands on a full disk, reads go on, the server
//! keeps beaconing and says so. Below the reserve under its SQLite store, the meta refuses the
//! admin requests that write. Once every directory is back above the reserve plus a quarter of
//! it (so a server does not flap around the line), writes are taken again, without a restart.
//!
//! The reserve of a directory is the smaller of `disk_reserve_bytes` and `disk_reserve_percent`
//! of its filesystem: a large disk keeps a fixed reserve, a small one a share. It is room for
//! what is in flight when the line is crossed (log appends, memtable flushes) and for the
//! compactions that turn deletes into free space.

/// A server's disk below its reserve: the free bytes of its fullest directory, and the reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLow {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

/// A directory of a server below its reserve: what its beacons report and the meta shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskShort {
    pub dir: String,
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

impl DiskShort {
    pub fn low(&self) -> DiskLow {
        DiskLow { free_bytes: self.free_bytes, reserve_bytes: self.reserve_bytes }
    }
}

impl std::fmt::Display for DiskShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk almost full: {} has {} bytes free, reserve {}", self.dir, self.free_bytes, self.reserve_bytes)
    }
}

/// One directory's filesystem, as the runtime read it (statvfs: bytes free to this process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSpace {
    pub dir: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct DiskWatch {
    reserve_bytes: u64,
    reserve_percent: u64,
    short: Option<DiskShort>,
}

impl DiskWatch {
    pub fn new(reserve_bytes: u64, reserve_percent: u64) -> DiskWatch {
        DiskWatch { reserve_bytes, reserve_percent, short: None }
    }

    pub fn reserve_of(&self, total_bytes: u64) -> u64 {
        self.reserve_bytes.min(total_bytes / 100 * self.reserve_percent)
    }

    /// The directory below its reserve, while writes are refused.
    pub fn short(&self) -> Option<&DiskShort> {
        self.short.as_ref()
    }

    /// A new reading of every directory. The state after it: short while any directory is
    /// below its reserve, and after that until every one is back above its reserve plus a
    /// quarter. While short, it names the directory with the least room against its reserve.
    pub fn on_space(&mut self, dirs: &[DirSpace]) -> Option<&DiskShort> {
        let worst = dirs
            .iter()
            .map(|d| (d, self.reserve_of(d.total_bytes)))
            .min_by_key(|(d, reserve)| d.free_bytes as i128 - *reserve as i128)
            .map(|(d, reserve)| DiskShort { dir: d.dir.clone(), free_bytes: d.free_bytes, reserve_bytes: reserve });
        let below = |d: &DirSpace, margin: u64| d.free_bytes < self.reserve_of(d.total_bytes) + margin;
        let short = if self.short.is_some() {
            dirs.iter().any(|d| below(d, self.reserve_of(d.total_bytes) / 4))
        } else {
            dirs.iter().any(|d| below(d, 0))
        };
        self.short = if short { worst } else { None };
        self.short.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(dir: &str, free_bytes: u64, total_bytes: u64) -> DirSpace {
        DirSpace { dir: dir.into(), free_bytes, total_bytes }
    }

    #[test]
    fn the_reserve_is_the_smaller_of_bytes_and_a_share() {
        let w = DiskWatch::new(2 << 30, 5);
        assert_eq!(w.reserve_of(100 << 20), 5 << 20, "a small disk keeps 5%");
        assert_eq!(w.reserve_of(1 << 40), 2 << 30, "a large one 2 GiB");
    }

    #[test]
    fn short_below_the_reserve_and_back_only_above_it_plus_a_quarter() {
        let mut w = DiskWatch::new(u64::MAX, 10);
        assert_eq!(w.on_space(&[space("data", 500, 1_000), space("log", 500, 1_000)]), None);
        let short = w.on_space(&[space("data", 99, 1_000), space("log", 500, 1_000)]).cloned();
        assert_eq!(short, Some(DiskShort { dir: "data".into(), free_bytes: 99, reserve_bytes: 100 }));
        assert_eq!(short.unwrap().low(), DiskLow { free_bytes: 99, reserve_bytes: 100 });
        // Above the reserve, not above it plus a quarter: still short, with the new figures.
        let short = w.on_space(&[space("data", 120, 1_000), space("log", 500, 1_000)]).cloned();
        assert_eq!(short, Some(DiskShort { dir: "data".into(), free_bytes: 120, reserve_bytes: 100 }));
        assert_eq!(w.on_space(&[space("data", 125, 1_000), space("log", 500, 1_000)]), None);
        // Any directory counts; the one with the least room is named.
        let short = w.on_space(&[space("data", 300, 1_000), space("log", 10, 200)]).cloned();
        assert_eq!(short, Some(DiskShort { dir: "log".into(), free_bytes: 10, reserve_bytes: 20 }));
    }
}
