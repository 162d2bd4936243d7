//! The replica server's errors. Each message names the thing and, where there is one, the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tandem_core::Gpid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done: "create", "open", "read", "write", "fsync", "remove", …
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Storage(#[from] tandem_storage::Error),

    #[error("invalid replica server settings: {0}")]
    Options(String),

    #[error("bind {addr}: {source} (is another server on that port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("peer address {addr:?} is not usable: {detail}")]
    PeerAddress { addr: String, detail: String },

    #[error("checkpoint {id} of {gpid}: {detail}")]
    Checkpoint { gpid: Gpid, id: String, detail: String },

    #[error("{} names an invalid database directory {name:?}; put a directory name of this replica (db, db-…) in it", .path.display())]
    InvalidCurrent { path: PathBuf, name: String },

    #[error("installed checkpoint holds decree {found}, expected {expected}")]
    WrongDecree { found: u64, expected: u64 },

    /// Ends one life of the server; `node::run` starts it again from its disk (docs/host.md).
    #[error("the mutation log in {} failed ({detail}); its replicas stopped. Starting it again replays what the log holds", .dir.display())]
    LogFailed { dir: PathBuf, detail: String },

    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),

    #[error("a background task of the server failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An IO error with what was done to which path.
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    }
}
