//! Free space of a directory's filesystem, as `tandem_core::disk` takes it.

use std::path::{Path, PathBuf};
use tandem_core::disk::DirSpace;

/// Free space of `dir`'s filesystem for this process (statvfs: blocks available to unprivileged
/// users), or None when it cannot be read (logged).
pub fn dir_space(dir: &Path) -> Option<DirSpace> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        tracing::warn!("cannot read the free space of {}: {}", dir.display(), std::io::Error::last_os_error());
        return None;
    }
    let block = stat.f_frsize as u64;
    Some(DirSpace { dir: dir.display().to_string(), free_bytes: stat.f_bavail as u64 * block, total_bytes: stat.f_blocks as u64 * block })
}

/// The free space of each of `dirs` that can be read.
pub fn dirs_space(dirs: &[PathBuf]) -> Vec<DirSpace> {
    dirs.iter().filter_map(|d| dir_space(d)).collect()
}
