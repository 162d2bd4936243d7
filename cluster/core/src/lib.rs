//! tandem-core: the IO-free heart of a Tandem site.
//!
//! Keys, values, timetags, partitioning and limits (DESIGN.md §2), the mutation and log record
//! formats, the storage trait with its in-memory twin, and the PacificA replica state machine
//! (`replica`), which takes inputs (client writes, prepares, acks, IO completions, timer ticks,
//! configurations from the meta) and returns actions for a runtime to execute:
//!
//! ```text
//!   runtime ──Input──▶ Replica::step ──▶ Vec<Action> ──▶ runtime executes (log append, send, apply, reply)
//!      ▲                                                          │
//!      └──────────── IO completion (LogAppended, PrepareReply…) ◀─┘
//! ```
//!
//! Nothing here reads a clock, a socket, a file or a random source: time arrives as `now_ms`.

pub mod digest;
pub mod disk;
pub mod error;
pub mod key;
pub mod limits;
pub mod log_read;
pub mod meta_route;
pub mod mutation;
pub mod partition;
pub mod replica;
pub mod storage;
pub mod timetag;
pub mod types;
pub mod value;

pub use error::{Error, Result};
pub use mutation::{LogRecord, Mutation, WriteOp};
pub use types::{Ballot, Decree, Gpid, NodeAddr, PartitionConfig, PartitionStatus};
