//! tandem-sim: the deterministic simulator (DESIGN.md §8). One thread, a virtual clock and one
//! seeded RNG run one site — one to three meta servers sharing a store, several replica servers,
//! clients — whose protocol code is the production code: replica servers run the IO-free host
//! (`tandem_host::Host`, `HostedReplica`, which drive `tandem_core::replica::Replica` over the
//! in-memory engine), meta servers run `tandem_meta_core::MetaMachine` over the in-memory twin
//! of the SQL store (`MemStore`: lease row, fencing, compare-and-set). Only IO is simulated: the
//! network, the disks (mutation log with group commit, flushed engine state), the store's
//! latency, clocks and crashes.
//!
//! ```text
//!  seed ─▶ Rng ─▶ Params (cluster shape) + FaultPlan (kinds, rates)
//!            │
//!            ▼
//!   event queue ─▶ Sim::handle ─▶ ReplicaServer / SimMeta / SimClient ─▶ sends, timers ─▶ Network
//!            │                     (Host + HostedReplica turns, MetaMachine)
//!            ▼
//!   checkers after every event (single primary, decree agreement, bank reads, linearizability
//!   of each key as its operations return)
//!   healing ─▶ probes (30 s) ─▶ final reads ─▶ convergence ─▶ linearizability (whole history),
//!   no lost writes
//! ```
//!
//! `tandem sim` mounts `SimArgs` and calls `run`; `docs/simulation.md` describes the fault model,
//! the invariants and the scenario script format (whose expected output is the trace).

pub mod backup;
pub mod check;
pub mod checkpoints;
pub mod clock;
pub mod cli;
pub mod client;
pub mod disk;
pub mod engine;
pub mod event;
pub mod faults;
pub mod hash;
pub mod history;
pub mod meta;
pub mod msg;
pub mod network;
pub mod replica_server;
pub mod rng;
pub mod script;
pub mod sim;
pub mod site;
pub mod stats;
pub mod world;

pub use cli::{SimArgs, SimFailure, run, run_seed, run_seed_sites};
pub use faults::{FaultKind, FaultSet};
pub use sim::Sim;
pub use stats::{Stats, Summary};
