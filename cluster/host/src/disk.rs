//! Free space on the server's disks: `tandem_core::disk`, shared with the meta.

pub use tandem_core::disk::{DirSpace, DiskShort, DiskWatch};
