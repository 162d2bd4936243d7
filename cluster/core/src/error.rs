//! The one error enum of the core crate.

use crate::types::{Ballot, Gpid};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("replica {gpid} is not the primary (status {status}, ballot {ballot})")]
    /// `primary`: the primary this replica's configuration names, a hint for the client (it
    /// may be stale; None when this replica is the primary, without a lease, or knows none).
    NotPrimary { gpid: Gpid, status: &'static str, ballot: Ballot, primary: Option<String> },
    /// Not taken, and nothing of it applied: retry after a pause (queue full, reconciling).
    #[error("replica {gpid} is busy: {reason}; retry")]
    Busy { gpid: Gpid, reason: String },
    /// A write was taken but its replica can no longer tell whether it commits (the primary
    /// stepped down with it pending): it may or may not be applied. Only an idempotent write
    /// may be sent again blindly.
    #[error("replica {gpid}: {reason}; the write may or may not be applied")]
    OutcomeUnknown { gpid: Gpid, reason: String },
    #[error("check failed: {0}")]
    CheckFailed(String),
    #[error("storage error: {0}")]
    Storage(String),
    /// A request over a size limit that a smaller one would pass (the message names the limit).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Records from the other site stamped further ahead of this site's clock than
    /// `max_clock_offset`: applying them would pin the partition's clock. Nothing was applied;
    /// the sender retries later.
    #[error(
        "replica {gpid}: a duplicated record is {ahead_ms} ms ahead of this site's clock (max_clock_offset {max_ms} ms); \
         check the clocks (NTP) of both sites"
    )]
    ClockAhead { gpid: Gpid, ahead_ms: u64, max_ms: u64 },
    /// The server's disk is below its reserve: the write was not taken (deletes still are). Not
    /// worth retrying before space is freed.
    #[error(
        "disk almost full on {node}: {free_bytes} bytes free, reserve {reserve_bytes}; writes are refused until space is freed \
         (deletes are still taken; add disk, or lower [replica] disk_reserve / disk_reserve_percent), replica {gpid}"
    )]
    DiskFull { node: String, gpid: Gpid, free_bytes: u64, reserve_bytes: u64 },
}

impl Error {
    pub fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt { what, detail: detail.into() }
    }
}
