//! tandem-meta: the meta server runtime (`server`) and its SQL store (`store`, sqlx over
//! PostgreSQL or SQLite). The protocol logic it runs lives in `tandem-meta-core`.
pub mod server;
pub mod store;
