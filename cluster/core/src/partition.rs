//! Key placement: `crc64(hash_key) % partition_count` with CRC-64/NVME, as Pegasus places keys.

use crc::{CRC_64_NVME, Crc};

const CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_NVME);

pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// The partition index that owns `hash_key` in a table of `partition_count` partitions.
pub fn partition_index(hash_key: &[u8], partition_count: u32) -> u32 {
    assert!(partition_count.is_power_of_two(), "partition count must be a power of two");
    (crc64(hash_key) % partition_count as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_nvme_check_value() {
        // The catalogue check value of CRC-64/NVME over "123456789".
        assert_eq!(crc64(b"123456789"), 0xae8b_1486_0a79_9888);
    }

    #[test]
    fn placement_is_stable_and_in_range() {
        for count in [1u32, 2, 8, 64] {
            for i in 0..1000u32 {
                let key = format!("user{i}");
                let p = partition_index(key.as_bytes(), count);
                assert!(p < count);
                assert_eq!(p, partition_index(key.as_bytes(), count));
            }
        }
    }
}
