//! The one error enum of the storage crate. Every variant names the file or directory involved,
//! because an operator reading "Input/output error" alone cannot tell which disk is failing.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done: "open", "read", "write", "fsync", "truncate", "remove", ...
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("corrupt mutation log {} at offset {offset}: {detail} (only the last segment may have a torn tail; restore this server's data from its peers)", .path.display())]
    CorruptLog { path: PathBuf, offset: u64, detail: String },

    #[error("mutation log record of {record_bytes} bytes exceeds record_bytes_max of {record_bytes_max} bytes")]
    RecordTooLarge { record_bytes: usize, record_bytes_max: usize },

    #[error("mutation log in {} refuses appends after an earlier write failure ({detail}); restart the server so it recovers from what is on disk", .dir.display())]
    LogFailed { dir: PathBuf, detail: String },

    #[error("mutation log in {} is closed", .dir.display())]
    LogClosed { dir: PathBuf },

    #[error("rocksdb {}: {op}: {source}", .dir.display())]
    Rocks { op: &'static str, dir: PathBuf, source: rocksdb::Error },

    #[error("corrupt replica data in {}: {detail}", .dir.display())]
    CorruptEngine { dir: PathBuf, detail: String },

    #[error("checkpoint directory {} already exists; checkpoints go into a new directory", .path.display())]
    CheckpointExists { path: PathBuf },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    pub(crate) fn rocks(op: &'static str, dir: impl Into<PathBuf>, source: rocksdb::Error) -> Self {
        Error::Rocks { op, dir: dir.into(), source }
    }
}

impl From<Error> for tandem_core::Error {
    fn from(e: Error) -> Self {
        tandem_core::Error::Storage(e.to_string())
    }
}
