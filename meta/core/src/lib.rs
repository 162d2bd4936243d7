//! tandem-meta-core: the IO-free logic of the meta server.
pub mod table;
pub use table::{MetaSnapshot, TableInfo, TableStatus};
