//! Where a backup's objects live under a target. Everything of a table is under
//! `tables/<table_id>/`, so one table's backups, retention and garbage collection never touch
//! another's:
//!
//! ```text
//! tables/7/objects/<sha256>-<backup>      an SST file, content-addressed; <backup> uploaded it
//! tables/7/backups/<backup>/manifest.json the table manifest, written last
//! tables/7/backups/<backup>/<p>/<attempt>/manifest.json     partition p's manifest
//! tables/7/backups/<backup>/<p>/<attempt>/files/<name>.zst  partition p's other files, compressed
//! ```
//!
//! A partition's upload is an attempt: when its primary changes or fails, the job hands the
//! partition out again under the next attempt number. An earlier uploader that is still
//! running writes only under its own attempt, so it can never overwrite the manifest or files
//! the job accepted.
//!
//! An SST file's key carries the id of the backup that uploaded it as well as its checksum.
//! A later backup reuses it only when a kept, complete backup references it; otherwise it
//! uploads its own copy under its own id. So an object a backup uploads can never be one that a
//! garbage collection listed before the backup began (see `retention`), and no two backups
//! race on one key.

use crate::manifest::BackupId;

pub const MANIFEST_NAME: &str = "manifest.json";

pub fn table_root(table_id: u32) -> String {
    format!("tables/{table_id}")
}

pub fn backup_root(table_id: u32, backup: BackupId) -> String {
    format!("tables/{table_id}/backups/{backup}")
}

pub fn table_manifest_key(table_id: u32, backup: BackupId) -> String {
    format!("{}/{MANIFEST_NAME}", backup_root(table_id, backup))
}

pub fn partition_root(table_id: u32, backup: BackupId, partition: u32, attempt: u32) -> String {
    format!("{}/{partition}/{attempt}", backup_root(table_id, backup))
}

pub fn partition_manifest_key(table_id: u32, backup: BackupId, partition: u32, attempt: u32) -> String {
    format!("{}/{MANIFEST_NAME}", partition_root(table_id, backup, partition, attempt))
}

/// A file other than an SST: compressed, under the attempt's own prefix.
pub fn file_key(table_id: u32, backup: BackupId, partition: u32, attempt: u32, name: &str) -> String {
    format!("{}/files/{name}.zst", partition_root(table_id, backup, partition, attempt))
}

/// An SST file: named by its checksum and the backup that uploaded it.
pub fn sst_key(table_id: u32, backup: BackupId, sha256: &str) -> String {
    format!("tables/{table_id}/objects/{sha256}-{backup}")
}

/// Which backup owns a key under `tables/<table_id>/`: the one that uploaded an SST object, or
/// the one whose prefix holds a manifest or file. None for a key this layout does not name
/// (garbage collection leaves those alone).
pub fn owner(table_id: u32, key: &str) -> Option<BackupId> {
    let rest = key.strip_prefix(&table_root(table_id))?.strip_prefix('/')?;
    if let Some(object) = rest.strip_prefix("objects/") {
        let (sha, backup) = object.rsplit_once('-')?;
        return if is_sha256_hex(sha) { parse_backup_id(backup) } else { None };
    }
    parse_backup_id(rest.strip_prefix("backups/")?.split('/').next()?)
}

/// A backup id as keys write it: decimal, no leading zeros.
pub fn parse_backup_id(s: &str) -> Option<BackupId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` may be a file of a checkpoint: one path segment, nothing a key or a restore
/// directory could misread.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_the_layout() {
        let sha = "ab".repeat(32);
        assert_eq!(owner(7, &sst_key(7, 12, &sha)), Some(12));
        assert_eq!(owner(7, &file_key(7, 12, 3, 1, "MANIFEST-000005")), Some(12));
        assert_eq!(owner(7, &partition_manifest_key(7, 12, 3, 2)), Some(12));
        assert_eq!(owner(7, &table_manifest_key(7, 12)), Some(12));
        // Another table's keys, and keys the layout does not name, have no owner here.
        assert_eq!(owner(7, &sst_key(70, 12, &sha)), None);
        assert_eq!(owner(7, "tables/7/objects/notahash-12"), None);
        assert_eq!(owner(7, &format!("tables/7/objects/{sha}-012")), None);
        assert_eq!(owner(7, "tables/7/backups/x/manifest.json"), None);
        assert_eq!(owner(7, "tables/7/notes.txt"), None);
    }

    #[test]
    fn file_names_are_single_segments() {
        for ok in ["000012.sst", "MANIFEST-000005", "OPTIONS-000007", "CURRENT"] {
            assert!(is_safe_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\n"] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }
}
