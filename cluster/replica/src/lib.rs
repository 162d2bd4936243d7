//! tandem-replica: the replica server, a runtime that decides nothing. The IO-free host
//! (`tandem-host`) decides; this crate carries its actions out with tokio, tonic, RocksDB and
//! files: one task and one event queue per replica, each driving its `HostedReplica` a turn at a
//! time, and the server's `Host` behind a lock no IO is done under.
//!
//! ```text
//!  gRPC Write/Prepare/Learn ─┐                   ┌─▶ MutationLog::append (group commit) ─▶ LogAppended ─┐
//!  Configure, Tick (host) ───┼─▶ replica queue ──▶ HostedReplica turn ─┼─▶ peer RPCs (prepare, learn) ─▶ replies ─────┤
//!  IO completions ───────────┘        ▲                                 └─▶ meta (proposals), checkpoints, read gate ──┤
//!                                     └──────────────────────────────────────────────────────────────────────────────┘
//!  tick (100 ms) ─▶ Host ─▶ beacons ─▶ BeaconAnswered ─▶ Host ─▶ open / configure / remove replicas, lease, log GC
//! ```
//!
//! Reads skip the queue while the replica's read gate is open (set at the end of each turn) and
//! the server holds its lease; otherwise they wait for a turn, which answers with the reason.

mod backup;
mod checkpoint;
mod cpu;
pub mod error;
pub mod metrics;
mod node;
pub mod options;
mod replica_task;
mod service;

pub use error::{Error, Result};
pub use node::{run, Node};
pub use options::ReplicaServerOptions;
