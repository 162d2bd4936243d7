//! tandem-storage: the disk under a replica server, and the only crate that links RocksDB.
//!
//! - [`MutationLog`]: the server's single write-ahead log, shared by all its partitions, with
//!   group commit (one fsync serves every write queued meanwhile) and per-partition garbage
//!   collection.
//! - [`RocksEngine`]: one RocksDB instance per replica, implementing
//!   `tandem_core::storage::KvEngine`, with RocksDB's own WAL disabled.
//!
//! How the two fit (DESIGN.md §4): a mutation is durable once the log has synced it; applying it
//! to RocksDB only fills memtables, and the decree it reached is written with the data and
//! flushed atomically with it. After a crash a replica opens its engine, reads the last flushed
//! decree, and replays its records from the log after that decree. So the log keeps a record
//! until the engine has flushed it:
//!
//! ```text
//!   write ─▶ MutationLog::append ─fsync─▶ done ─▶ RocksEngine::apply (memtable, no WAL)
//!                                                         │ flush (atomic, data + decree)
//!   MutationLog::gc(durable = last flushed decree per gpid) ◀┘
//! ```

pub mod error;
pub mod mutation_log;
pub mod rocks_engine;

pub use error::{Error, Result};
pub use mutation_log::{AppendDone, LogOptions, MutationLog, SyncPolicy};
pub use rocks_engine::{EngineMemory, RocksEngine, TableCompaction, ARENA_BLOCK_BYTES, FILES_PER_ENGINE, TABLE_FILES_OPEN};
