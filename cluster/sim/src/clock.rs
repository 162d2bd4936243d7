//! The clocks of a simulated node: a rate error (drift) and, for the wall clock, an offset from
//! true simulated time.

/// Wall clock of the simulated world at true time zero (2023-11-14).
pub const EPOCH_US: u64 = 1_700_000_000_000_000;

/// A node's clocks: a rate error (drift) and, for the wall clock, an offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    pub rate_ppm: i64,
    pub wall_offset_us: i64,
}

impl NodeClock {
    fn scale(&self, us: u64) -> u64 {
        (us as i128 * (1_000_000 + self.rate_ppm as i128) / 1_000_000) as u64
    }

    /// Monotonic milliseconds since `boot_us` (an `Instant` taken at process start).
    pub fn mono_ms(&self, boot_us: u64, now_us: u64) -> u64 {
        self.scale(now_us - boot_us) / 1_000
    }

    pub fn wall_us(&self, now_us: u64) -> u64 {
        (EPOCH_US as i64 + self.scale(now_us) as i64 + self.wall_offset_us) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_the_clocks() {
        let fast = NodeClock { rate_ppm: 50_000, wall_offset_us: -1_000 };
        assert_eq!(fast.mono_ms(1_000_000, 11_000_000), 10_500);
        assert_eq!(fast.wall_us(0), EPOCH_US - 1_000);
        assert_eq!(NodeClock::default().mono_ms(0, 2_000), 2);
    }
}
