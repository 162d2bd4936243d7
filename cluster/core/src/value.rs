//! Stored value: `u8 format_version ‖ u32 expire_ts (BE) ‖ u64 timetag (BE) ‖ user bytes`.

use crate::error::{Error, Result};
use crate::timetag::Timetag;

pub const VALUE_FORMAT_VERSION: u8 = 1;
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
}
