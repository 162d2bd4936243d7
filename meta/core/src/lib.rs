//! tandem-meta-core: the IO-free logic of the meta server: failure detection by beacons
//! (`failure_detector`), cure of partitions after failures and toward their replica count
//! (`cure`), initial placement (`placement`), meta leadership through the store's lease row
//! (`leadership`) and per-table redundancy policies (`policy`). The meta runtime persists every change these
//! produce in the SQL store (compare-and-set on the ballot) before acting on it.
pub mod beacon;
pub mod cure;
pub mod failure_detector;
pub mod leadership;
pub mod placement;
pub mod policy;
pub mod table;
pub use table::{MetaSnapshot, TableInfo, TableStatus};
