//! tandem-sim: the deterministic simulator (DESIGN.md §8). One thread, a virtual clock and one
//! seeded RNG run a meta and several replica servers whose protocol code is the production code:
//! `tandem_core::replica::Replica` with the in-memory engine, and the meta-core functions
//! (failure detector, cure, placement, proposals, beacon answers). Only IO is simulated: the
//! network, the disks (mutation log with group commit, flushed engine state), clocks and crashes.
//!
//! ```text
//!  seed ─▶ Rng ─▶ Params (cluster shape) + FaultPlan (kinds, rates)
//!            │
//!            ▼
//!   event queue ─▶ Sim::handle ─▶ ReplicaServer / SimMeta / SimClient ─▶ sends, timers ─▶ Network
//!            │                        (Replica::step, cure(), …)
//!            ▼
//!   checkers after every event (single primary, decree agreement, bank reads, linearizability
//!   of each key as its operations return)
//!   healing ─▶ probes (30 s) ─▶ final reads ─▶ convergence ─▶ linearizability (whole history),
//!   no lost writes
//! ```
//!
//! `tandem sim` mounts `SimArgs` and calls `run`; `docs/simulation.md` describes the fault model,
//! the invariants and the scenario script format (whose expected output is the trace).

pub mod check;
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
pub mod stats;

pub use cli::{SimArgs, SimFailure, run, run_seed};
pub use faults::{FaultKind, FaultSet};
pub use sim::Sim;
pub use stats::{Stats, Summary};
