//! Stored key: `u16 hash_key_len (BE) ‖ hash_key ‖ sort_key`. Records of one hash key are
//! contiguous and ordered by sort key.

use crate::error::{Error, Result};

pub fn encode_key(hash_key: &[u8], sort_key: &[u8]) -> Vec<u8> {
    assert!(hash_key.len() <= u16::MAX as usize, "hash key length is checked against limits first");
    let mut out = Vec::with_capacity(2 + hash_key.len() + sort_key.len());
    out.extend_from_slice(&(hash_key.len() as u16).to_be_bytes());
    out.extend_from_slice(hash_key);
    out.extend_from_slice(sort_key);
    out
}

/// Splits a stored key into `(hash_key, sort_key)`.
pub fn decode_key(key: &[u8]) -> Result<(&[u8], &[u8])> {
    if key.len() < 2 {
        return Err(Error::corrupt("stored key", format!("{} bytes, need at least 2", key.len())));
    }
    let len = u16::from_be_bytes([key[0], key[1]]) as usize;
    if key.len() < 2 + len {
        return Err(Error::corrupt("stored key", format!("hash key length {len} exceeds key of {} bytes", key.len())));
    }
    Ok((&key[2..2 + len], &key[2 + len..]))
}

/// The first stored key of a hash key (its empty sort key).
pub fn hash_key_prefix(hash_key: &[u8]) -> Vec<u8> {
    encode_key(hash_key, b"")
}

/// The smallest stored key greater than every key with this prefix, or None if there is none.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let k = encode_key(b"user", b"a");
        assert_eq!(decode_key(&k).unwrap(), (&b"user"[..], &b"a"[..]));
        assert!(encode_key(b"user", b"a") < encode_key(b"user", b"b"));
        assert!(decode_key(&[0, 5, 1]).is_err());
        assert!(decode_key(&[0]).is_err());
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }
}
