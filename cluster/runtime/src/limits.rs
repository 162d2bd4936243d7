//! Process limits a server sets for itself at start.

/// Raises this process's soft limit of open files to its hard limit (a server holds a log, a
/// database and connections per replica; a soft limit of 1,024 is a cliff). Returns the soft
/// limit before and after, and the hard limit, for the start-up log line.
///
/// A process allowed to (root, CAP_SYS_RESOURCE) first raises its hard limit to the kernel's
/// `fs.nr_open` (at most 1,048,576), as a service manager's LimitNOFILE would; anyone else keeps
/// the hard limit it was given.
pub fn raise_open_files() -> std::io::Result<(u64, u64, u64)> {
    let mut limit: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<libc::rlim_t>().ok()).unwrap_or(0).min(1 << 20);
    if limit.rlim_max < nr_open {
        let raised = libc::rlimit { rlim_cur: limit.rlim_cur, rlim_max: nr_open };
        // SAFETY: `raised` is a valid rlimit. Without the privilege this fails with EPERM and
        // changes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((before as u64, limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// This process's soft limit of open files (0 if it cannot be read).
pub fn open_files_limit() -> u64 {
    let mut limit: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur as u64
}

/// Replicas that fit `open_files` files when each holds `files_per_replica`: what is left after
/// an eighth of the limit (256 to 2,048 files) kept for connections, log segments and the rest.
/// At least one.
pub fn replicas_for_open_files(open_files: u64, files_per_replica: u64) -> usize {
    let kept = (open_files / 8).clamp(256, 2048);
    (open_files.saturating_sub(kept) / files_per_replica.max(1)).max(1) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn replicas_fit_the_files_left_after_the_kept_share() {
        use super::replicas_for_open_files as fit;
        assert_eq!(fit(20_000, 16), (20_000 - 2_048) / 16, "a thousand and more on this machine's 20,000");
        assert_eq!(fit(1_048_576, 16), (1_048_576 - 2_048) / 16);
        assert_eq!(fit(1_024, 16), (1_024 - 256) / 16);
        assert_eq!(fit(100, 16), 1, "never none: a server with too few files refuses the rest");
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (before, after, hard) = super::raise_open_files().unwrap();
        assert!(before <= after);
        assert_eq!(after, hard);
        assert_eq!(super::raise_open_files().unwrap(), (hard, hard, hard), "a second call changes nothing");
    }
}
