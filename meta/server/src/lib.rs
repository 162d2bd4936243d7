//! tandem-meta: the meta server runtime. It carries out what the meta state machine
//! (`tandem_meta_core::machine`) decides: `server` runs it and its claim loop, `rpc` is its gRPC
//! face, `store` its SQL store (sqlx over PostgreSQL or SQLite), `metrics` what `/metrics` shows,
//! `watch` the replica servers' watch streams and the probes of their ports.
pub mod backup_rpc;
pub mod dup_rpc;
pub mod metrics;
pub mod rpc;
pub mod server;
pub mod store;
pub mod watch;
