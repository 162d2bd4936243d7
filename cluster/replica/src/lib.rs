//! tandem-replica: the replica server. A thin runtime around the IO-free replica state machines
//! of `tandem-core`: one task and one event queue per replica; RocksDB engines and the shared
//! mutation log from `tandem-storage`; gRPC (tonic) to clients, peers and the meta.
//!
//! ```text
//!  gRPC Write/Prepare/Learn ─┐                 ┌─▶ MutationLog::append (group commit) ─▶ LogAppended ─┐
//!  beacon reply (configs) ───┼─▶ replica queue ─▶ Replica::step ─▶ actions ─┼─▶ peer RPCs (prepare, learn) ─▶ replies ───┤
//!  tick (100 ms) ────────────┘        ▲                                    └─▶ meta RPCs (proposals) ───────────────────┤
//!                                     └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Reads are served inside the replica's task, from the engine, after the core confirms the
//! replica is a primary with a valid lease.

mod checkpoint;
mod cpu;
pub mod grpc_tools;
pub mod metrics;
mod node;
pub mod options;
mod replica_task;
mod service;

pub use node::{run, Node};
pub use options::ReplicaServerOptions;

/// Resolves once `shutdown` holds true (or its sender is gone).
pub async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
