//! Process limits a server sets for itself at start.

/// Raises this process's soft limit of open files to its hard limit (a server holds a log, a
/// database and connections per replica; a soft limit of 1,024 is a cliff). Returns the soft
/// limit before and after, and the hard limit, for the start-up log line.
pub fn raise_open_files() -> std::io::Result<(u64, u64, u64)> {
    let mut limit: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (before, after, hard) = super::raise_open_files().unwrap();
        assert!(before <= after);
        assert_eq!(after, hard);
        assert_eq!(super::raise_open_files().unwrap(), (hard, hard, hard), "a second call changes nothing");
    }
}
