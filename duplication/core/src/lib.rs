//! tandem-dup-core: duplication between two writable sites, IO-free (DESIGN.md §5,
//! docs/duplication.md).
//!
//! A primary runs one [`Duplicator`] per duplication of its table. It reads the partition's
//! committed mutations after the confirmed decree (or, to start or to recover from a log that no
//! longer holds them, a snapshot of the partition), keeps the records that originated at this
//! site (no loops), batches them by bytes, and hands each batch to the runtime to send. The
//! runtime routes the records per key at the remote site ([`route::split_by_partition`]) and
//! reports the outcome; an acknowledged batch advances the confirmed decree, which the host
//! reports to the meta, which persists it so that a new primary resumes from there.
//!
//! ```text
//!   host ──Input (committed decree, log read, ship result, tick)──▶ Duplicator::step
//!                                                                      │
//!   runtime ◀── Action (read the log / a snapshot, ship a batch) ◀─────┘
//! ```
//!
//! The apply side — a record is written only if its timetag beats the stored one — is part of
//! the replica's write path (`tandem_core::replica::WriteRequest::Duplicate`), so it is
//! replicated and replayed like any write.
//!
//! Nothing here reads a clock, a socket, a file or a random source: time arrives as [`Now`].

pub mod duplicator;
pub mod records;
pub mod route;
pub mod verify;

/// A duplication of a table as the meta hands it to the replica servers hosting the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDup {
    pub dup_id: u32,
    pub table_id: u32,
    /// The table's name, the same at both sites.
    pub table: String,
    pub remote_site: String,
    pub paused: bool,
    pub fail_mode: FailMode,
    /// A new duplication ships a snapshot of each partition first.
    pub sync_existing: bool,
    /// The persisted confirmed decree of each partition that has one.
    pub confirmed: Vec<(u32, tandem_core::Decree)>,
    /// The table's watermark: every record it made before this time is applied at the remote
    /// (the smallest its partitions reported; 0 until all did).
    pub watermark_us: u64,
}

pub use duplicator::{Action, BatchId, Duplicator, DuplicatorOptions, DuplicatorState, FailMode, Input, Now, Phase, ShipFailure};
pub use records::{records_of_mutation, snapshot_record};
pub use route::split_by_partition;
