//! Timetags: `timestamp_us (56 bits) << 8 | cluster_id (7 bits) << 1 | delete_flag (1 bit)`, and
//! the per-partition hybrid clock that issues them.

pub type Timetag = u64;

/// The largest cluster id a timetag holds (7 bits).
pub const CLUSTER_ID_MAX: u8 = 127;

pub fn make_timetag(timestamp_us: u64, cluster_id: u8, delete: bool) -> Timetag {
    assert!(cluster_id <= CLUSTER_ID_MAX, "cluster id is 7 bits");
    ((timestamp_us & ((1 << 56) - 1)) << 8) | ((cluster_id as u64) << 1) | delete as u64
}

pub fn timetag_timestamp_us(t: Timetag) -> u64 {
    t >> 8
}

pub fn timetag_cluster_id(t: Timetag) -> u8 {
    ((t >> 1) & 0x7f) as u8
}

pub fn timetag_is_delete(t: Timetag) -> bool {
    t & 1 == 1
}

/// `max(wall_clock_us, last + 1)`: timetags of one partition strictly increase.
#[derive(Clone, Debug, Default)]
pub struct HybridClock {
    last_timestamp_us: u64,
}

impl HybridClock {
    pub fn next(&mut self, wall_clock_us: u64) -> u64 {
        self.last_timestamp_us = wall_clock_us.max(self.last_timestamp_us + 1);
        self.last_timestamp_us
    }

    /// Advances past a timestamp seen in a mutation (replayed, prepared or from the other site).
    pub fn observe(&mut self, timestamp_us: u64) {
        self.last_timestamp_us = self.last_timestamp_us.max(timestamp_us);
    }

    pub fn last_timestamp_us(&self) -> u64 {
        self.last_timestamp_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let t = make_timetag(1_700_000_000_000_000, 5, true);
        assert_eq!(timetag_timestamp_us(t), 1_700_000_000_000_000);
        assert_eq!(timetag_cluster_id(t), 5);
        assert!(timetag_is_delete(t));
        assert!(make_timetag(10, 1, false) > make_timetag(9, 127, true));
    }

    #[test]
    fn clock_is_monotonic() {
        let mut c = HybridClock::default();
        assert_eq!(c.next(100), 100);
        assert_eq!(c.next(50), 101);
        c.observe(500);
        assert_eq!(c.next(200), 501);
    }
}
