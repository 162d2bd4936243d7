//! tandem-meta-core: the IO-free logic of the meta server: failure detection by beacons
//! (`failure_detector`), cure of partitions after failures and toward their replica count
//! (`cure`), and initial placement (`placement`). The meta runtime persists every change these
//! produce in the SQL store (compare-and-set on the ballot) before acting on it.
pub mod beacon;
pub mod cure;
pub mod failure_detector;
pub mod placement;
pub mod table;
pub use table::{MetaSnapshot, TableInfo, TableStatus};
