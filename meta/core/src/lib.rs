//! tandem-meta-core: the IO-free logic of the meta server. `machine` is the meta's state
//! machine (inputs in, actions out) that the meta runtime and the simulator both run; it makes
//! its decisions with failure detection by beacons (`failure_detector`), cure of partitions after
//! failures and toward their replica count (`cure`), initial placement (`placement`), beacon
//! answers (`beacon`), leadership through the store's lease row (`leadership`) and per-table
//! redundancy policies (`policy`). `store` names its writes and holds the in-memory twin of the
//! SQL store; `status` the views it reports; `backup` the records, tasks and reports of backups.
pub mod backup;
pub mod beacon;
pub mod cure;
pub mod duplication;
pub mod failure_detector;
pub mod leadership;
pub mod machine;
pub mod placement;
pub mod policy;
pub mod request;
pub mod status;
pub mod store;
pub mod table;
pub use machine::{MetaAction, MetaInput, MetaMachine, MetaOptions, Now};
pub use request::{MetaError, MetaReply, MetaRequest};
pub use table::{MetaSnapshot, TableInfo, TableStatus};
