//! tandem-host: what drives the replica cores of one replica server, IO-free (DESIGN.md §1,
//! layer 2). The replica server (`cluster/replica`) and the simulator (`cluster/sim`) run this
//! same code and differ only in how they carry out its actions, so every decision here — turns,
//! request tokens, the read gate, the order of configurations and leases, when replica data and
//! checkpoints are deleted, what the shared log keeps — is exercised by the simulator.
//!
//! ```text
//!             ┌──────────────── Host (one per server) ────────────────┐
//!  ticks ───▶ │ beacons & lease · replica map · deletions · log GC    │ ──▶ HostAction
//!  beacon ──▶ │                                                       │     (open, configure,
//!  answers    └───────────────────────────────────────────────────────┘      extend lease, …)
//!             ┌──────── HostedReplica (one per replica, own queue) ───┐
//!  events ──▶ │ turn: step… end_turn · tokens · read gate · installs  │ ──▶ ReplicaAction
//!             │        └─▶ tandem_core::replica::Replica               │     (append, send, reply, …)
//!             └───────────────────────────────────────────────────────┘
//! ```
//!
//! A runtime runs each `HostedReplica` on its own queue (the server: a task per replica, so
//! replicas proceed in parallel), and the `Host` behind a lock that no IO is done under.
//! Time arrives as arguments; nothing here reads a clock, a socket, a file or a random source.

pub mod backup;
pub mod checkpoints;
pub mod disk;
pub mod duplication;
pub mod options;
pub mod replica;
pub mod reports;
pub mod restart;
pub mod server;

pub use backup::{BackupCommand, Backups};
pub use checkpoints::{holds_conformance, CheckpointFilesUnderTest, CheckpointRetention};
pub use duplication::{config_for, DupConfig, DupId, DupWork, Duplications};
pub use tandem_dup_core::TableDup;
pub use disk::{DirSpace, DiskShort, DiskWatch};
pub use options::HostOptions;
pub use reports::{BeaconReports, ReportsDelta};
pub use restart::Restarts;
pub use replica::{Carrier, HostedReplica, ReplicaAction, ReplicaEvent, STEPS_PER_TURN_MAX};
pub use server::{Host, HostAction, HostInput};
