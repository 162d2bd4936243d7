//! How a file becomes an object and back. Decoding checks everything a manifest says about the
//! file (stored size, size, SHA-256) and never inflates past the size it expects, so a damaged
//! or hostile object costs neither memory nor a wrong byte.

use crate::manifest::{sha256_hex, Encoding, FileEntry};
use std::io::Read;

/// zstd's default level: several hundred MB/s on one core, which keeps compression off the
/// critical path of an upload.
const ZSTD_LEVEL: i32 = 3;

pub fn encode(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Raw => bytes.to_vec(),
        Encoding::Zstd => zstd::bulk::compress(bytes, ZSTD_LEVEL).expect("compressing into memory cannot fail"),
    }
}

/// The file `entry` describes, from its object's bytes; or what is wrong with them.
pub fn decode(entry: &FileEntry, stored: &[u8]) -> Result<Vec<u8>, String> {
    if stored.len() as u64 != entry.stored_bytes {
        return Err(format!("holds {} bytes, the manifest says {}", stored.len(), entry.stored_bytes));
    }
    let bytes = match entry.encoding {
        Encoding::Raw => stored.to_vec(),
        Encoding::Zstd => {
            let mut out = Vec::new();
            let decoder = zstd::stream::read::Decoder::new(stored).map_err(|e| format!("is not zstd: {e}"))?;
            // One byte more than expected tells a longer file from an exact one.
            decoder.take(entry.size + 1).read_to_end(&mut out).map_err(|e| format!("does not decompress: {e}"))?;
            out
        }
    };
    if bytes.len() as u64 != entry.size {
        return Err(format!("decodes to {}{} bytes, the manifest says {}", bytes.len(), if bytes.len() as u64 > entry.size { "+" } else { "" }, entry.size));
    }
    if sha256_hex(&bytes) != entry.sha256 {
        return Err("fails its SHA-256 checksum".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8], encoding: Encoding) -> (FileEntry, Vec<u8>) {
        let stored = encode(encoding, bytes);
        let e = FileEntry {
            name: "f".into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            object: "tables/1/objects/x".into(),
            stored_bytes: stored.len() as u64,
            encoding,
            reused: false,
        };
        (e, stored)
    }

    #[test]
    fn round_trips_and_names_each_kind_of_damage() {
        for encoding in [Encoding::Raw, Encoding::Zstd] {
            let data = vec![42u8; 10_000];
            let (e, stored) = entry(&data, encoding);
            assert_eq!(decode(&e, &stored).unwrap(), data);
            assert!(decode(&e, &stored[..stored.len() - 1]).unwrap_err().contains("the manifest says"));
            let mut flipped = stored.clone();
            let last = flipped.len() - 1;
            flipped[last / 2] ^= 1;
            assert!(decode(&e, &flipped).is_err(), "{encoding:?}: a flipped bit is found");
        }
        // A zstd object that inflates beyond its entry's size stops at size + 1.
        let (mut e, stored) = entry(&vec![0u8; 1 << 20], Encoding::Zstd);
        e.size = 10;
        assert!(decode(&e, &stored).unwrap_err().contains("decodes to 11+ bytes"));
    }
}
