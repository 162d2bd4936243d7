//! Messages between simulated nodes: the RPCs of the replica, meta and client protocols, carried
//! as the core's own types (the wire encoding is tandem-proto's business and is not simulated).

use tandem_core::replica::{ConfigProposal, LearnReply, LearnRequest, PrepareMsg, PrepareReply, ReplicaState, WriteRequest, WriteResponse};
use tandem_core::{Error, Gpid, NodeAddr, PartitionConfig};
use tandem_dup_core::TableDup;
use tandem_meta_core::MetaError;
use tandem_meta_core::duplication::{DupReport, Site};

/// Who sends and receives: meta server `i` (`meta`, `meta2`, …), replica server `i` (address
/// `r{i+1}`), or client `i` of this site; or a meta or replica server of the other site (a
/// two-site run), as this site sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Meta(usize),
    Replica(usize),
    Client(usize),
    PeerMeta(usize),
    PeerReplica(usize),
}

impl Endpoint {
    pub fn name(&self) -> String {
        match self {
            Endpoint::Meta(0) => "meta".into(),
            Endpoint::Meta(i) => format!("meta{}", i + 1),
            Endpoint::Replica(i) => replica_addr(*i),
            Endpoint::Client(i) => format!("c{}", i + 1),
            Endpoint::PeerMeta(i) => format!("peer:{}", Endpoint::Meta(*i).name()),
            Endpoint::PeerReplica(i) => format!("peer:{}", replica_addr(*i)),
        }
    }

    /// Whether it is a node of the other site.
    pub fn is_peer(&self) -> bool {
        matches!(self, Endpoint::PeerMeta(_) | Endpoint::PeerReplica(_))
    }

    /// The same node as the other site sees it (clients never cross).
    pub fn across(&self) -> Option<Endpoint> {
        match *self {
            Endpoint::Meta(i) => Some(Endpoint::PeerMeta(i)),
            Endpoint::Replica(i) => Some(Endpoint::PeerReplica(i)),
            Endpoint::PeerMeta(i) => Some(Endpoint::Meta(i)),
            Endpoint::PeerReplica(i) => Some(Endpoint::Replica(i)),
            Endpoint::Client(_) => None,
        }
    }

    /// A small number for the trace hash.
    pub fn code(&self) -> u64 {
        match self {
            Endpoint::Meta(0) => 0,
            Endpoint::Meta(i) => 80 + *i as u64,
            Endpoint::Replica(i) => 1 + *i as u64,
            Endpoint::Client(i) => 100 + *i as u64,
            Endpoint::PeerMeta(i) => 280 + *i as u64,
            Endpoint::PeerReplica(i) => 201 + *i as u64,
        }
    }
}

pub fn replica_addr(i: usize) -> NodeAddr {
    format!("r{}", i + 1)
}

/// The meta server of a name (`meta` → 0, `meta3` → 2).
pub fn meta_index(name: &str) -> Option<usize> {
    match name.strip_prefix("meta")? {
        "" => Some(0),
        n => n.parse::<usize>().ok()?.checked_sub(1).filter(|i| *i > 0),
    }
}

/// The replica server of an address (`r3` → 2).
pub fn replica_index(addr: &str) -> Option<usize> {
    addr.strip_prefix('r')?.parse::<usize>().ok()?.checked_sub(1)
}

/// Identifies one RPC so its answer (or its timeout) finds the caller.
pub type RpcId = u64;

/// A checkpoint's state: data, decree and clock bound, as the files of a RocksDB checkpoint hold them.
pub type Checkpoint = tandem_core::storage::MemEngine;

/// What the meta answers a beacon: the configurations the server hosts or reported, the
/// partition count of their tables, the reported partitions whose table is gone, the tables'
/// tombstone retention, their duplications and the sites those ship to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BeaconAnswer {
    pub configs: Vec<PartitionConfig>,
    pub partition_counts: Vec<(u32, u32)>,
    pub gone: Vec<Gpid>,
    pub tombstone_retention: Vec<(u32, u64)>,
    pub dups: Vec<TableDup>,
    pub sites: Vec<Site>,
    pub backups: Vec<tandem_backup_core::BackupTask>,
    pub restores: Vec<tandem_backup_core::RestoreSource>,
    pub configs_unchanged: bool,
    pub resend_reports: bool,
}

#[derive(Clone, Debug)]
pub enum Msg {
    Prepare {
        rpc: RpcId,
        msg: PrepareMsg,
    },
    PrepareResp {
        rpc: RpcId,
        reply: PrepareReply,
    },
    Learn {
        rpc: RpcId,
        gpid: Gpid,
        request: LearnRequest,
    },
    LearnResp {
        rpc: RpcId,
        reply: LearnReply,
    },
    FetchCheckpoint {
        rpc: RpcId,
        gpid: Gpid,
        checkpoint_id: String,
    },
    FetchCheckpointResp {
        rpc: RpcId,
        result: Result<Checkpoint, String>,
    },
    /// `incarnation`: the sending process. Its answer reaches only that process (its RPC id
    /// dies with it, as a real answer dies with the connection of a process that crashed).
    Beacon {
        rpc: RpcId,
        node: NodeAddr,
        incarnation: u64,
        reports: Vec<ReplicaState>,
        lease_period_ms: u64,
        /// No beacon of this process was answered yet.
        restarted: bool,
        /// What its primaries' duplicators report: (partition, duplication, progress).
        dup_reports: Vec<(Gpid, u32, DupReport)>,
        backup_reports: Vec<tandem_backup_core::BackupTaskReport>,
        restore_failures: Vec<tandem_backup_core::RestoreFailure>,
        disk_short: Option<tandem_core::replica::DiskShort>,
        /// The most replicas it hosts (None: no limit), and those it refused for want of room.
        replicas_max: Option<u32>,
        refused: Vec<Gpid>,
        /// `reports` are only those that changed since the last answered beacon (and
        /// `reports_gone` those no longer hosted), checked by the digest of all of them.
        reports_delta: bool,
        reports_gone: Vec<Gpid>,
        reports_digest: tandem_core::digest::Digest,
        /// The digest of the last answer's configurations.
        configs_digest: Option<tandem_core::digest::Digest>,
    },
    BeaconResp {
        rpc: RpcId,
        answer: BeaconAnswer,
    },
    Propose {
        rpc: RpcId,
        gpid: Gpid,
        proposal: ConfigProposal,
        from: NodeAddr,
    },
    ProposeResp {
        rpc: RpcId,
        config: PartitionConfig,
    },
    QueryConfig {
        rpc: RpcId,
    },
    QueryConfigResp {
        rpc: RpcId,
        configs: Vec<PartitionConfig>,
    },
    /// A meta server refused a request (not the leader, a refused proposal, …).
    MetaError {
        rpc: RpcId,
        error: MetaError,
    },
    ClientWrite {
        rpc: RpcId,
        gpid: Gpid,
        request: WriteRequest,
    },
    ClientWriteResp {
        rpc: RpcId,
        result: Result<WriteResponse, Error>,
    },
    /// Reads several sort keys of one hash key in one step of the replica (one snapshot).
    ClientRead {
        rpc: RpcId,
        gpid: Gpid,
        hash_key: Vec<u8>,
        sort_keys: Vec<Vec<u8>>,
    },
    ClientReadResp {
        rpc: RpcId,
        result: Result<Vec<Option<Vec<u8>>>, Error>,
    },
    /// An RPC failed in transport: its caller learns it after the latency. `not_sent`: the
    /// request never reached the server (a failed connect), so it was certainly not taken.
    /// `refused`: the server's port refused the connection (its process was killed, its host
    /// is up).
    RpcFailed {
        rpc: RpcId,
        not_sent: bool,
        refused: bool,
    },
    /// A replica server's watch stream to a meta server broke: its process was killed, and its
    /// host closed the connection.
    WatchBroken {
        node: NodeAddr,
    },
    /// A meta server asks a replica server, over its watch stream, to beacon now.
    BeaconNow,
    /// A meta server's connection attempt to a replica server's port (`MetaAction::Probe`),
    /// answered by the host's network stack, not the server process.
    Probe {
        node: NodeAddr,
        probe: u64,
    },
    ProbeAnswer {
        node: NodeAddr,
        probe: u64,
        refused: bool,
    },
}

impl Msg {
    /// The kind, as scenario scripts name it (`drop=prepare`).
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Prepare { .. } => "prepare",
            Msg::PrepareResp { .. } => "prepare-reply",
            Msg::Learn { .. } => "learn",
            Msg::LearnResp { .. } => "learn-reply",
            Msg::FetchCheckpoint { .. } => "fetch-checkpoint",
            Msg::FetchCheckpointResp { .. } => "fetch-checkpoint-reply",
            Msg::Beacon { .. } => "beacon",
            Msg::BeaconResp { .. } => "beacon-reply",
            Msg::Propose { .. } => "propose",
            Msg::ProposeResp { .. } => "propose-reply",
            Msg::QueryConfig { .. } => "query-config",
            Msg::QueryConfigResp { .. } => "query-config-reply",
            Msg::MetaError { .. } => "meta-error",
            Msg::ClientWrite { .. } => "write",
            Msg::ClientWriteResp { .. } => "write-reply",
            Msg::ClientRead { .. } => "read",
            Msg::ClientReadResp { .. } => "read-reply",
            Msg::RpcFailed { .. } => "rpc-failed",
            Msg::WatchBroken { .. } => "watch-broken",
            Msg::BeaconNow => "beacon-now",
            Msg::Probe { .. } => "probe",
            Msg::ProbeAnswer { .. } => "probe-answer",
        }
    }

    /// The RPC a request opens; its loss is reported to the sender as `RpcFailed`.
    pub fn request_rpc(&self) -> Option<RpcId> {
        match self {
            Msg::Prepare { rpc, .. }
            | Msg::Beacon { rpc, .. }
            | Msg::Learn { rpc, .. }
            | Msg::FetchCheckpoint { rpc, .. }
            | Msg::Propose { rpc, .. }
            | Msg::QueryConfig { rpc }
            | Msg::ClientWrite { rpc, .. }
            | Msg::ClientRead { rpc, .. } => Some(*rpc),
            _ => None,
        }
    }

    /// The RPC an answer closes.
    pub fn response_rpc(&self) -> Option<RpcId> {
        match self {
            Msg::PrepareResp { rpc, .. }
            | Msg::BeaconResp { rpc, .. }
            | Msg::LearnResp { rpc, .. }
            | Msg::FetchCheckpointResp { rpc, .. }
            | Msg::ProposeResp { rpc, .. }
            | Msg::QueryConfigResp { rpc, .. }
            | Msg::MetaError { rpc, .. }
            | Msg::ClientWriteResp { rpc, .. }
            | Msg::ClientReadResp { rpc, .. }
            | Msg::RpcFailed { rpc, .. } => Some(*rpc),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Endpoint,
    pub to: Endpoint,
    pub msg: Msg,
}
