//! Stored value: `u8 format_version ‖ u32 expire_ts (BE) ‖ u64 timetag (BE) ‖ user bytes`.
//!
//! A delete writes a **tombstone**: a value-less record whose timetag carries the delete flag.
//! Reads treat it as absent; the last-writer-wins rule of duplication compares it like any other
//! record, so a delete is never undone by an older put arriving late from the other site;
//! compaction drops it once it is older than the table's tombstone retention
//! (`compaction_drops`).

use crate::error::{Error, Result};
use crate::timetag::{Timetag, timetag_is_delete, timetag_timestamp_us};

pub const VALUE_FORMAT_VERSION: u8 = 1;
/// How long a tombstone is kept when nothing says otherwise (a table policy's default).
pub const TOMBSTONE_RETENTION_MS_DEFAULT: u64 = 24 * 3_600_000;
pub const VALUE_HEADER_BYTES: usize = 13;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueHeader {
    /// Seconds since the Unix epoch after which the value is gone; 0 = never.
    pub expire_ts: u32,
    pub timetag: Timetag,
}

pub fn encode_value(expire_ts: u32, timetag: Timetag, user: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER_BYTES + user.len());
    out.push(VALUE_FORMAT_VERSION);
    out.extend_from_slice(&expire_ts.to_be_bytes());
    out.extend_from_slice(&timetag.to_be_bytes());
    out.extend_from_slice(user);
    out
}

pub fn decode_value(stored: &[u8]) -> Result<(ValueHeader, &[u8])> {
    if stored.len() < VALUE_HEADER_BYTES {
        return Err(Error::corrupt("stored value", format!("{} bytes, header needs {VALUE_HEADER_BYTES}", stored.len())));
    }
    if stored[0] != VALUE_FORMAT_VERSION {
        return Err(Error::corrupt("stored value", format!("unknown format version {}", stored[0])));
    }
    let expire_ts = u32::from_be_bytes(stored[1..5].try_into().expect("4 bytes"));
    let timetag = u64::from_be_bytes(stored[5..13].try_into().expect("8 bytes"));
    Ok((ValueHeader { expire_ts, timetag }, &stored[VALUE_HEADER_BYTES..]))
}

/// A tombstone: no expiry, no user bytes, `timetag` with its delete flag set.
pub fn encode_tombstone(timetag: Timetag) -> Vec<u8> {
    assert!(timetag_is_delete(timetag), "a tombstone's timetag carries the delete flag");
    encode_value(0, timetag, &[])
}

impl ValueHeader {
    pub fn is_tombstone(&self) -> bool {
        timetag_is_delete(self.timetag)
    }

    /// Whether reads see this value at `now_s`: not a tombstone, not expired.
    pub fn is_live(&self, now_s: u32) -> bool {
        !self.is_tombstone() && !is_expired(self.expire_ts, now_s)
    }
}

/// Whether compaction may drop a stored value at `now_us`: a tombstone whose timetag, or an
/// expired value whose expiry, is older than `tombstone_retention_ms`, and whose timetag is
/// below `hold_us`. An expired value is a delete too: dropped at once, an older write of the
/// other site arriving later would take its place (found in review). `hold_us` is the smallest
/// watermark of the duplications in and out of this partition: a site that has not yet shipped
/// everything older than the tombstone could still send an older write it must lose to, and a
/// duplication of ours that has not yet shipped it may have to re-send it from a snapshot
/// (`u64::MAX`: nothing duplicated). A value that does not decode is kept: compaction must never
/// destroy data it does not understand.
pub fn compaction_drops(stored: &[u8], now_us: u64, tombstone_retention_ms: u64, hold_us: u64) -> bool {
    let Ok((header, _)) = decode_value(stored) else { return false };
    let retention_us = tombstone_retention_ms.saturating_mul(1000);
    let timestamp_us = timetag_timestamp_us(header.timetag);
    if timestamp_us >= hold_us {
        return false;
    }
    if header.is_tombstone() {
        return timestamp_us.saturating_add(retention_us) < now_us;
    }
    header.expire_ts != 0 && (header.expire_ts as u64 * 1_000_000).saturating_add(retention_us) <= now_us
}

/// True when a value with this `expire_ts` is invisible at `now_s` (seconds since the epoch).
pub fn is_expired(expire_ts: u32, now_s: u32) -> bool {
    expire_ts != 0 && expire_ts <= now_s
}

/// The expire_ts for a TTL in seconds from `now_s`; 0 TTL means no expiry.
pub fn expire_ts_from_ttl(ttl_s: u32, now_s: u32) -> u32 {
    if ttl_s == 0 { 0 } else { now_s.saturating_add(ttl_s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let v = encode_value(42, 7, b"hello");
        let (h, user) = decode_value(&v).unwrap();
        assert_eq!(h, ValueHeader { expire_ts: 42, timetag: 7 });
        assert_eq!(user, b"hello");
        assert!(decode_value(&v[..5]).is_err());
        let mut bad = v.clone();
        bad[0] = 9;
        assert!(decode_value(&bad).is_err());
        assert!(is_expired(10, 10) && !is_expired(0, 10) && !is_expired(11, 10));
    }

    #[test]
    fn tombstones_are_not_live_and_go_after_their_retention() {
        use crate::timetag::make_timetag;
        let t = encode_tombstone(make_timetag(5_000_000, 1, true));
        let (h, user) = decode_value(&t).unwrap();
        assert!(h.is_tombstone() && !h.is_live(0) && user.is_empty());
        let (live, _) = decode_value(&encode_value(0, make_timetag(5_000_000, 1, false), b"v")).unwrap();
        assert!(live.is_live(u32::MAX));
        // Retention 1 s: kept at the timetag + 1 s, dropped after.
        let free = u64::MAX;
        assert!(!compaction_drops(&t, 6_000_000, 1000, free));
        assert!(compaction_drops(&t, 6_000_001, 1000, free));
        assert!(compaction_drops(&encode_value(3, 6, b"x"), 3_000_000, 0, free));
        // An expired value is kept as long as a tombstone would be.
        assert!(!compaction_drops(&encode_value(3, 6, b"x"), 3_999_999, 1000, free));
        assert!(compaction_drops(&encode_value(3, 6, b"x"), 4_000_000, 1000, free));
        assert!(!compaction_drops(&encode_value(0, 6, b"x"), u64::MAX, 0, free));
        assert!(!compaction_drops(b"xx", u64::MAX, 0, free));
        // Held while a duplication has not passed the timetag, whatever the retention says.
        assert!(!compaction_drops(&t, u64::MAX, 0, 5_000_000));
        assert!(compaction_drops(&t, u64::MAX, 0, 5_000_001));
        let expired = encode_value(3, make_timetag(2_000_000, 2, false), b"x");
        assert!(!compaction_drops(&expired, u64::MAX, 0, 2_000_000));
        assert!(compaction_drops(&expired, u64::MAX, 0, 2_000_001));
    }
}
