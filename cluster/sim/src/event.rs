//! The simulator's event queue entries, and what a node hands back while it handles one: sends
//! and timers. Nodes never touch the queue or the network themselves.

use crate::msg::{Endpoint, Envelope, RpcId};
use crate::rng::Rng;
use crate::stats::Stats;
use tandem_core::Gpid;
use tandem_core::replica::RequestId;

#[derive(Debug)]
pub enum Event {
    Deliver(Envelope),
    /// Node timers carry the incarnation they were set in: a crash voids them.
    ReplicaTick {
        node: usize,
        incarnation: u64,
    },
    Beacon {
        node: usize,
        incarnation: u64,
    },
    LogSync {
        node: usize,
        incarnation: u64,
    },
    Flush {
        node: usize,
        incarnation: u64,
    },
    /// The runtime's asynchronous checkpoint creation finished.
    CheckpointMade {
        node: usize,
        incarnation: u64,
        gpid: Gpid,
        token: RequestId,
    },
    /// A server whose log failed is restarted by its supervisor.
    SupervisorRestart {
        node: usize,
        incarnation: u64,
    },
    RpcTimeout {
        at: Endpoint,
        incarnation: u64,
        rpc: RpcId,
    },
    MetaTick {
        incarnation: u64,
    },
    /// A meta answer leaves only after the store write it depends on.
    MetaReply {
        incarnation: u64,
        envelope: Envelope,
    },
    CreateTable,
    ClientWake {
        client: usize,
    },
    Fault,
    Restart(Endpoint),
    Unblock {
        links: Vec<(Endpoint, Endpoint)>,
    },
    Heal,
    CheckProgress,
}

impl Event {
    /// A code for the trace hash.
    pub fn code(&self) -> u64 {
        match self {
            Event::Deliver(_) => 1,
            Event::ReplicaTick { .. } => 2,
            Event::Beacon { .. } => 3,
            Event::LogSync { .. } => 4,
            Event::Flush { .. } => 5,
            Event::CheckpointMade { .. } => 6,
            Event::SupervisorRestart { .. } => 7,
            Event::RpcTimeout { .. } => 8,
            Event::MetaTick { .. } => 9,
            Event::MetaReply { .. } => 10,
            Event::CreateTable => 11,
            Event::ClientWake { .. } => 12,
            Event::Fault => 13,
            Event::Restart(_) => 14,
            Event::Unblock { .. } => 15,
            Event::Heal => 16,
            Event::CheckProgress => 17,
        }
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
    pub trace: Option<&'a mut Vec<String>>,
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
            t.push(format!("{:>10}µs {}", self.now_us, line()));
        }
    }
}
