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
    NotPrimary { gpid: Gpid, status: &'static str, ballot: Ballot },
    #[error("replica {gpid} is busy: {reason}; retry")]
    Busy { gpid: Gpid, reason: String },
    #[error("check failed: {0}")]
    CheckFailed(String),
    #[error("storage error: {0}")]
    Storage(String),
}

impl Error {
    pub fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Corrupt { what, detail: detail.into() }
    }
}
