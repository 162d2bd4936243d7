//! The PacificA vocabulary shared by every crate: ballots, decrees, partition ids, configurations.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Numbers configurations of one partition; increases on every membership change.
pub type Ballot = u64;
/// Numbers mutations within one partition; contiguous from 1.
pub type Decree = u64;
/// A replica server's identity: the `host:port` it serves gRPC on.
pub type NodeAddr = String;

/// Global partition id: table and partition index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Gpid {
    pub table_id: u32,
    pub partition: u32,
}

impl Gpid {
    pub fn new(table_id: u32, partition: u32) -> Self {
        Gpid { table_id, partition }
    }
}

impl fmt::Display for Gpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table_id, self.partition)
    }
}

/// The role a replica plays in its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionStatus {
    Primary,
    Secondary,
    Learner,
    Inactive,
    Error,
}

impl PartitionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            PartitionStatus::Primary => "primary",
            PartitionStatus::Secondary => "secondary",
            PartitionStatus::Learner => "learner",
            PartitionStatus::Inactive => "inactive",
            PartitionStatus::Error => "error",
        }
    }
}

/// The configuration of one partition, owned by the meta server. A change is a compare-and-set
/// on `ballot`; learners ride along without a ballot change because they are not in the quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartitionConfig {
    pub gpid: Gpid,
    pub ballot: Ballot,
    pub primary: Option<NodeAddr>,
    pub secondaries: Vec<NodeAddr>,
    pub learners: Vec<NodeAddr>,
    /// Members dropped by past reconfigurations, most recent last: when every member is gone,
    /// the last one dropped holds the most data and is promoted first when it returns.
    pub last_drops: Vec<NodeAddr>,
}

impl Default for Gpid {
    fn default() -> Self {
        Gpid::new(0, 0)
    }
}

impl PartitionConfig {
    /// Primary and secondaries: every node that must log a mutation before it commits.
    pub fn members(&self) -> impl Iterator<Item = &NodeAddr> {
        self.primary.iter().chain(self.secondaries.iter())
    }

    pub fn status_of(&self, node: &str) -> PartitionStatus {
        if self.primary.as_deref() == Some(node) {
            PartitionStatus::Primary
        } else if self.secondaries.iter().any(|s| s == node) {
            PartitionStatus::Secondary
        } else if self.learners.iter().any(|s| s == node) {
            PartitionStatus::Learner
        } else {
            PartitionStatus::Inactive
        }
    }

    pub fn hosts(&self, node: &str) -> bool {
        self.status_of(node) != PartitionStatus::Inactive
    }

    pub fn replica_count(&self) -> usize {
        self.members().count()
    }
}
