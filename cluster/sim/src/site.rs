//! One site: its meta servers, the store they share, its replica servers. A run simulates one
//! today; duplication between two sites adds a second `Site` beside it.

use crate::meta::SimMeta;
use crate::msg::Endpoint;
use crate::replica_server::ReplicaServer;
use tandem_core::{Gpid, PartitionConfig};
use tandem_meta_core::store::MemStore;

pub struct Site {
    pub metas: Vec<SimMeta>,
    /// The meta servers' shared SQL store (its lease row, its tables and configurations).
    pub store: MemStore,
    pub servers: Vec<ReplicaServer>,
    /// Until when each meta server's store calls hang (`store-clog`).
    pub store_clogs: Vec<u64>,
    /// The backup target (an object store outlives every process of the site).
    pub objects: tandem_backup_core::MemObjectStore,
}

impl Site {
    /// Every node of the site, metas first.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        (0..self.metas.len()).map(Endpoint::Meta).chain((0..self.servers.len()).map(Endpoint::Replica)).collect()
    }

    /// The meta server that leads with its store loaded, if one does.
    pub fn leading_meta(&self) -> Option<usize> {
        (0..self.metas.len()).find(|i| self.metas[*i].up && self.metas[*i].machine.state().is_some())
    }

    /// The configuration of `gpid` the store holds (what the leading meta answers with).
    pub fn config(&self, gpid: Gpid) -> Option<&PartitionConfig> {
        self.store.partition(gpid)
    }

    /// Replica servers that are up.
    pub fn up_count(&self) -> usize {
        self.servers.iter().filter(|s| s.up).count()
    }
}
