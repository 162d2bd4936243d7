//! The simulator's event queue entries, and what a node hands back while it handles one: sends
//! and timers. Nodes never touch the queue or the network themselves.

use crate::msg::{Endpoint, Envelope, RpcId};
use crate::rng::Rng;
use crate::stats::Stats;
use tandem_core::Gpid;

#[derive(Debug)]
pub enum Event {
    Deliver(Envelope),
    /// Node timers carry the incarnation they were set in: a crash voids them.
    /// The host's tick: replica ticks, beacons, log GC.
    HostTick {
        node: usize,
        incarnation: u64,
    },
    /// A replica's task runs a turn of its queued events.
    ReplicaTurn {
        node: usize,
        incarnation: u64,
        gpid: Gpid,
    },
    /// The log writer takes the queued appends and writes them out (not yet synced).
    LogWrite {
        node: usize,
        incarnation: u64,
    },
    /// The fsync of the written appends returns.
    LogSync {
        node: usize,
        incarnation: u64,
    },
    /// The runtime's asynchronous checkpoint creation finished.
    CheckpointMade {
        node: usize,
        incarnation: u64,
        gpid: Gpid,
        id: String,
    },
    /// A fetched checkpoint database was opened and made current.
    CheckpointActivated {
        node: usize,
        incarnation: u64,
        gpid: Gpid,
        db: String,
        decree: tandem_core::Decree,
    },
    /// A removed replica's files are deleted.
    ReplicaDeleted {
        node: usize,
        incarnation: u64,
        gpid: Gpid,
    },
    /// A server whose log failed has stopped its replicas and closed its port; it starts again
    /// from its disk after `StartAfterLogFailure`.
    SupervisorRestart {
        node: usize,
        incarnation: u64,
    },
    /// A batch shipped to the other site tries again what was not taken.
    ShipRetry {
        node: usize,
        incarnation: u64,
        ship: u64,
    },
    /// The operator adds the other site and the workload table's duplication to it (a two-site
    /// run), and later pauses or resumes it.
    DupSetup,
    DupToggle,
    RpcTimeout {
        at: Endpoint,
        incarnation: u64,
        rpc: RpcId,
    },
    MetaTick {
        meta: usize,
        incarnation: u64,
    },
    /// A meta server claims (or renews) the store's lease row.
    MetaClaim {
        meta: usize,
        incarnation: u64,
    },
    /// A meta server's store call reaches the store (applied only if that process still runs).
    MetaStoreApply {
        meta: usize,
        incarnation: u64,
        call: crate::meta::StoreCall,
    },
    /// The store's answer reaches the meta server (lost if it crashed meanwhile).
    MetaStoreDone {
        meta: usize,
        incarnation: u64,
        answer: crate::meta::StoreAnswer,
    },
    CreateTable,
    ClientWake {
        client: usize,
    },
    Fault,
    /// A crash fault aimed at a moment when the server's log holds written, unsynced records.
    CrashReplica {
        node: usize,
        incarnation: u64,
    },
    /// An armed crash found no log write in time: crash a random server instead.
    CrashArmExpired {
        arm: u64,
    },
    Restart(Endpoint),
    Unblock {
        links: Vec<(Endpoint, Endpoint)>,
    },
    /// Replica server `node`, stopped by a failed log, may start again from its disk.
    StartAfterLogFailure {
        node: usize,
    },
    /// The disk-full fault ends: replica server `node`'s disk has room again.
    DiskRoom {
        node: usize,
    },
    Heal,
    CheckProgress,
    /// The operator changes the workload table's replica count.
    PolicyChange,
    /// The operator creates, drops or recalls the scratch table.
    TableChurn,
    /// The operator asks for a backup, or restores one (runs that take backups).
    BackupOperator,
    /// A meta server's call to the backup target is carried out (lost if it crashed meanwhile).
    MetaObjects {
        meta: usize,
        incarnation: u64,
        work: crate::meta::ObjectWork,
    },
    /// A replica server's upload or restore runs (lost if it crashed meanwhile).
    ReplicaObjects {
        node: usize,
        incarnation: u64,
        work: crate::replica_server::ObjectWork,
    },
}

impl Event {
    /// A code for the trace hash.
    pub fn code(&self) -> u64 {
        match self {
            Event::Deliver(_) => 1,
            Event::HostTick { .. } => 2,
            Event::ReplicaTurn { .. } => 3,
            Event::LogSync { .. } => 4,
            Event::CheckpointActivated { .. } => 5,
            Event::CheckpointMade { .. } => 6,
            Event::SupervisorRestart { .. } => 7,
            Event::RpcTimeout { .. } => 8,
            Event::MetaTick { .. } => 9,
            Event::MetaClaim { .. } => 10,
            Event::CreateTable => 11,
            Event::ClientWake { .. } => 12,
            Event::Fault => 13,
            Event::Restart(_) => 14,
            Event::Unblock { .. } => 15,
            Event::Heal => 16,
            Event::CheckProgress => 17,
            Event::LogWrite { .. } => 18,
            Event::CrashReplica { .. } => 19,
            Event::CrashArmExpired { .. } => 20,
            Event::ReplicaDeleted { .. } => 21,
            Event::MetaStoreApply { .. } => 22,
            Event::MetaStoreDone { .. } => 23,
            Event::PolicyChange => 24,
            Event::TableChurn => 25,
            Event::ShipRetry { .. } => 26,
            Event::DupSetup => 27,
            Event::DupToggle => 28,
            Event::BackupOperator => 29,
            Event::MetaObjects { .. } => 30,
            Event::ReplicaObjects { .. } => 31,
            Event::DiskRoom { .. } => 32,
            Event::StartAfterLogFailure { .. } => 33,
        }
    }
}

/// One line of the trace, at true simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    pub at_us: u64,
    pub text: String,
    /// A delivered message (`TANDEM_SIM_TRACE_MESSAGES=1`): too many for a scenario's expected
    /// output, which holds faults, role changes, configurations and failures only.
    pub message: bool,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>10}µs {}", self.at_us, self.text)
    }
}

pub enum Out {
    Send(Envelope),
    Timer { at_us: u64, event: Event },
}

/// What a node may use while it handles one event.
pub struct Io<'a> {
    pub now_us: u64,
    pub rng: &'a mut Rng,
    pub out: &'a mut Vec<Out>,
    pub stats: &'a mut Stats,
    pub next_rpc: &'a mut RpcId,
    pub trace: Option<&'a mut Vec<TraceLine>>,
}

impl Io<'_> {
    pub fn send(&mut self, from: Endpoint, to: Endpoint, msg: crate::msg::Msg) {
        self.out.push(Out::Send(Envelope { from, to, msg }));
    }

    pub fn timer(&mut self, after_us: u64, event: Event) {
        self.out.push(Out::Timer { at_us: self.now_us + after_us, event });
    }

    pub fn rpc_id(&mut self) -> RpcId {
        *self.next_rpc += 1;
        *self.next_rpc
    }

    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.push(TraceLine { at_us: self.now_us, text: line(), message: false });
        }
    }
}
