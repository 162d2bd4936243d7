//! tandem-backup-core: what a backup needs to know about object storage, IO-free. Backups will
//! write partitions' files and manifests as objects under a target (`s3://bucket/prefix`,
//! `file:///path`); the job's decisions live here so that the simulator runs them, against
//! `MemObjectStore`, the in-memory twin of the real target (`tandem-backup-store`).
//!
//! `object_store_conformance` is what every implementation passes: the twin here, the real one
//! over `object_store` there.

pub mod object;

pub use object::{object_store_conformance, validate_key, MemObjectStore, ObjectError, ObjectStore};
