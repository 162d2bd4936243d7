//! A simulated client that routes like `cluster/client`: it asks the meta for the table's
//! configurations, sends each request to the primary of the key's partition, and on NotPrimary
//! or a failed connection refreshes the route and retries with backoff until its deadline.
//!
//! One deliberate difference: a write whose outcome became unknown (timeout, lost answer, or a
//! primary answering "may or may not be applied") is not sent again; it is recorded as unknown
//! with an open end. The real client resends `set` and `del` after such answers, which can apply
//! a write twice; the linearizability checker could not judge such histories.

use crate::event::{Event, Io};
use crate::history::{BANK_ACCOUNTS, BANK_HASH_KEY, BANK_INITIAL_BALANCE, BANK_VERSION, History, OpKind, Outcome, Output, bank_account};
use crate::msg::{Endpoint, Msg, RpcId, replica_index};
use crate::stats::path;
use std::collections::{BTreeMap, VecDeque};
use tandem_core::meta_route::MetaRoute;
use tandem_core::partition::partition_index;
use tandem_core::replica::{CheckType, MutateOp, WriteRequest, WriteResponse};
use tandem_core::{Error, Gpid, PartitionConfig};

pub const CLIENT_RPC_TIMEOUT_MS: u64 = 2_000;
pub const ROUTE_RPC_TIMEOUT_MS: u64 = 1_000;
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

#[derive(Clone, Debug)]
enum Request {
    Write(WriteRequest),
    Read { hash_key: Vec<u8>, sort_keys: Vec<Vec<u8>> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Route,
    Request,
}

#[derive(Debug)]
struct Current {
    op: usize,
    hash_key: Vec<u8>,
    request: Request,
    deadline_us: u64,
    backoff_ms: u64,
    rpc: Option<(RpcId, Stage)>,
}

/// What the random workload draws from.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub register_keys: usize,
    pub active: bool,
    /// Put before this site's own keys (register, bank, probe) in a two-site run, so that each
    /// site's linearizability and bank checks see only its own clients; empty in one site.
    pub prefix: String,
    /// Keys both sites write (sets and deletes only: what reads see there is the other site's
    /// business too), judged by the two-site LWW oracle. None in one site.
    pub shared_keys: usize,
}

impl Workload {
    pub fn register_key(&self, i: usize) -> Vec<u8> {
        format!("{}k{i}", self.prefix).into_bytes()
    }

    pub fn bank_key(&self) -> Vec<u8> {
        [self.prefix.as_bytes(), BANK_HASH_KEY].concat()
    }
}

/// A key both sites of a two-site run write.
pub fn shared_key(i: usize) -> Vec<u8> {
    format!("s{i}").into_bytes()
}

pub struct SimClient {
    pub index: usize,
    route: Vec<PartitionConfig>,
    /// Which meta server to ask for the route.
    meta: MetaRoute,
    current: Option<Current>,
    /// Operations to run before random ones (probes, final reads, scripted writes).
    pub queue: VecDeque<(Vec<u8>, OpKind)>,
    seq: u64,
    last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bank_view: Option<(i64, Vec<i64>)>,
    pub wake_scheduled: bool,
}

fn write_of(key: &[u8], kind: &OpKind) -> Request {
    let hash_key = key.to_vec();
    let put = |sort_key: &[u8], value: Vec<u8>| MutateOp::Put { sort_key: sort_key.to_vec(), value, ttl_s: 0 };
    Request::Write(match kind {
        OpKind::Set { value } => WriteRequest::Set { hash_key, sort_key: vec![], value: value.clone(), ttl_s: 0 },
        OpKind::Del => WriteRequest::Del { hash_key, sort_key: vec![] },
        OpKind::Cas { expected, new } => WriteRequest::CheckAndMutate {
            hash_key,
            check_sort_key: vec![],
            check_type: if expected.is_some() { CheckType::BytesEqual } else { CheckType::ValueNotExist },
            check_operand: expected.clone().unwrap_or_default(),
            mutations: vec![put(b"", new.clone())],
            return_check_value: false,
        },
        OpKind::BankInit => WriteRequest::CheckAndMutate {
            hash_key,
            check_sort_key: BANK_VERSION.to_vec(),
            check_type: CheckType::ValueNotExist,
            check_operand: vec![],
            mutations: std::iter::once(put(BANK_VERSION, b"0".to_vec()))
                .chain((0..BANK_ACCOUNTS).map(|i| put(&bank_account(i), BANK_INITIAL_BALANCE.to_string().into_bytes())))
                .collect(),
            return_check_value: false,
        },
        OpKind::BankTransfer { version, from, to, amount, balances } => WriteRequest::CheckAndMutate {
            hash_key,
            check_sort_key: BANK_VERSION.to_vec(),
            check_type: CheckType::BytesEqual,
            check_operand: version.to_string().into_bytes(),
            mutations: vec![
                put(BANK_VERSION, (version + 1).to_string().into_bytes()),
                put(&bank_account(*from), (balances[*from] - amount).to_string().into_bytes()),
                put(&bank_account(*to), (balances[*to] + amount).to_string().into_bytes()),
            ],
            return_check_value: false,
        },
        OpKind::Get | OpKind::BankRead => unreachable!("reads are not writes"),
    })
}

fn request_of(key: &[u8], kind: &OpKind) -> Request {
    match kind {
        OpKind::Get => Request::Read { hash_key: key.to_vec(), sort_keys: vec![vec![]] },
        OpKind::BankRead => Request::Read {
            hash_key: key.to_vec(),
            sort_keys: std::iter::once(BANK_VERSION.to_vec()).chain((0..BANK_ACCOUNTS).map(bank_account)).collect(),
        },
        _ => write_of(key, kind),
    }
}

impl SimClient {
    pub fn new(index: usize, metas: usize) -> SimClient {
        SimClient {
            index,
            route: Vec::new(),
            meta: MetaRoute::new(metas),
            current: None,
            queue: VecDeque::new(),
            seq: 0,
            last_seen: BTreeMap::new(),
            bank_view: None,
            wake_scheduled: false,
        }
    }

    fn me(&self) -> Endpoint {
        Endpoint::Client(self.index)
    }

    pub fn busy(&self) -> bool {
        self.current.is_some() || !self.queue.is_empty()
    }

    fn draw(&mut self, io: &mut Io<'_>, w: &Workload) -> (Vec<u8>, OpKind) {
        let roll = io.rng.range(0, 99);
        if roll < 15 {
            return match &self.bank_view {
                Some((version, balances)) if roll < 10 => {
                    let from = io.rng.index(BANK_ACCOUNTS);
                    let to = (from + 1 + io.rng.index(BANK_ACCOUNTS - 1)) % BANK_ACCOUNTS;
                    let amount = io.rng.range(1, 30) as i64;
                    let kind = OpKind::BankTransfer { version: *version, from, to, amount, balances: balances.clone() };
                    (w.bank_key(), kind)
                }
                _ => (w.bank_key(), OpKind::BankRead),
            };
        }
        if w.shared_keys > 0 && io.rng.chance(0.3) {
            let key = shared_key(io.rng.index(w.shared_keys));
            self.seq += 1;
            let kind = if io.rng.chance(0.2) {
                OpKind::Del
            } else {
                OpKind::Set { value: format!("{}c{}-{}", w.prefix, self.index + 1, self.seq).into_bytes() }
            };
            return (key, kind);
        }
        let key = w.register_key(io.rng.index(w.register_keys));
        self.seq += 1;
        let value = format!("c{}-{}", self.index + 1, self.seq).into_bytes();
        let kind = match roll {
            15..=49 => OpKind::Get,
            50..=79 => OpKind::Set { value },
            80..=84 => OpKind::Del,
            _ => {
                let expected = self.last_seen.get(&key).cloned().unwrap_or(None);
                OpKind::Cas { expected, new: value }
            }
        };
        (key, kind)
    }

    /// Starts the next operation (queued, else random when the workload is active) or retries
    /// the current one after its backoff.
    pub fn wake(&mut self, io: &mut Io<'_>, history: &mut History, w: &Workload) {
        self.wake_scheduled = false;
        if self.current.as_ref().is_some_and(|c| c.rpc.is_some()) {
            return;
        }
        if self.current.is_none() {
            let (key, kind) = match self.queue.pop_front() {
                Some(next) => next,
                None if w.active => self.draw(io, w),
                None => return,
            };
            let request = request_of(&key, &kind);
            let op = history.invoke(self.index, key.clone(), kind, io.now_us);
            self.current = Some(Current {
                op,
                hash_key: key,
                request,
                deadline_us: io.now_us + REQUEST_TIMEOUT_MS * 1_000,
                backoff_ms: 20,
                rpc: None,
            });
        }
        self.attempt(io, history);
    }

    pub fn schedule_wake(&mut self, io: &mut Io<'_>, after_us: u64) {
        if !self.wake_scheduled {
            self.wake_scheduled = true;
            io.timer(after_us, Event::ClientWake { client: self.index });
        }
    }

    fn attempt(&mut self, io: &mut Io<'_>, history: &mut History) {
        let me = self.me();
        let now = io.now_us;
        let Some(cur) = self.current.as_mut() else { return };
        if now >= cur.deadline_us {
            // Every attempt so far was refused before it was taken (or was a read).
            self.finish(io, history, Outcome::Failed);
            return;
        }
        let primary = (!self.route.is_empty())
            .then(|| {
                let p = partition_index(&cur.hash_key, self.route.len() as u32);
                self.route.iter().find(|c| c.gpid.partition == p).and_then(|c| Some((c.gpid, replica_index(c.primary.as_deref()?)?)))
            })
            .flatten();
        let rpc = io.rpc_id();
        match primary {
            None => {
                cur.rpc = Some((rpc, Stage::Route));
                io.send(me, Endpoint::Meta(self.meta.current()), Msg::QueryConfig { rpc });
                io.timer(ROUTE_RPC_TIMEOUT_MS * 1_000, Event::RpcTimeout { at: me, incarnation: 0, rpc });
            }
            Some((gpid, node)) => {
                cur.rpc = Some((rpc, Stage::Request));
                let msg = match &cur.request {
                    Request::Write(request) => Msg::ClientWrite { rpc, gpid, request: request.clone() },
                    Request::Read { hash_key, sort_keys } => {
                        Msg::ClientRead { rpc, gpid, hash_key: hash_key.clone(), sort_keys: sort_keys.clone() }
                    }
                };
                io.send(me, Endpoint::Replica(node), msg);
                io.timer(CLIENT_RPC_TIMEOUT_MS * 1_000, Event::RpcTimeout { at: me, incarnation: 0, rpc });
            }
        }
    }

    /// Drops the route and tries again after a backoff (the cluster is moving a primary).
    fn retry(&mut self, io: &mut Io<'_>) {
        io.stats.path(path::CLIENT_REROUTE);
        self.route.clear();
        let Some(cur) = self.current.as_mut() else { return };
        cur.rpc = None;
        let backoff = cur.backoff_ms;
        cur.backoff_ms = (cur.backoff_ms * 2).min(500);
        self.schedule_wake(io, backoff * 1_000);
    }

    fn finish(&mut self, io: &mut Io<'_>, history: &mut History, outcome: Outcome) {
        let cur = self.current.take().expect("an operation is running");
        match &outcome {
            Outcome::Ok(_) => io.stats.ops_ok += 1,
            Outcome::Unknown => {
                io.stats.ops_unknown += 1;
                io.stats.path(path::WRITE_UNKNOWN);
            }
            _ => io.stats.ops_failed += 1,
        }
        let op = &history.ops[cur.op];
        match (&op.kind, &outcome) {
            (OpKind::Get, Outcome::Ok(Output::Value(v))) => {
                self.last_seen.insert(op.key.clone(), v.clone());
            }
            (OpKind::Set { value }, Outcome::Ok(_)) | (OpKind::Cas { new: value, .. }, Outcome::Ok(Output::Applied(true))) => {
                self.last_seen.insert(op.key.clone(), Some(value.clone()));
            }
            (OpKind::Del, Outcome::Ok(_)) => {
                self.last_seen.insert(op.key.clone(), None);
            }
            (OpKind::BankRead, Outcome::Ok(Output::Bank(values))) => self.bank_view = crate::history::parse_bank(values),
            (OpKind::BankTransfer { .. }, _) | (OpKind::BankInit, _) => self.bank_view = None,
            _ => {}
        }
        let me = self.index;
        io.note(|| format!("c{}: {} → {}", me + 1, crate::history::describe_op(op), crate::history::describe_outcome(&outcome)));
        history.complete(cur.op, outcome, io.now_us);
        let think = io.rng.range(0, 20_000);
        self.schedule_wake(io, think);
    }

    fn take_rpc(&mut self, rpc: RpcId) -> Option<Stage> {
        let cur = self.current.as_mut()?;
        match cur.rpc {
            Some((id, stage)) if id == rpc => {
                cur.rpc = None;
                Some(stage)
            }
            _ => None,
        }
    }

    fn is_write(&self) -> bool {
        matches!(self.current.as_ref().map(|c| &c.request), Some(Request::Write(_)))
    }

    pub fn on_timeout(&mut self, io: &mut Io<'_>, history: &mut History, rpc: RpcId) {
        match self.take_rpc(rpc) {
            Some(Stage::Request) if self.is_write() => self.finish(io, history, Outcome::Unknown),
            Some(Stage::Route) => {
                self.meta.unreachable();
                self.retry(io)
            }
            Some(_) => self.retry(io),
            None => {}
        }
    }

    pub fn on_message(&mut self, io: &mut Io<'_>, history: &mut History, msg: Msg) {
        let Some(rpc) = msg.response_rpc() else { return };
        let Some(stage) = self.take_rpc(rpc) else { return };
        match msg {
            Msg::QueryConfigResp { configs, .. } => {
                self.route = configs;
                if self.route.is_empty() {
                    self.retry(io);
                } else {
                    self.attempt(io, history);
                }
            }
            Msg::MetaError { error, .. } => {
                if matches!(error, tandem_meta_core::MetaError::NotLeader { .. }) {
                    self.meta.not_leader(crate::meta::hinted(&error));
                }
                self.retry(io);
            }
            Msg::RpcFailed { not_sent, .. } => {
                if stage == Stage::Route {
                    self.meta.unreachable();
                }
                if stage == Stage::Request && self.is_write() && !not_sent {
                    self.finish(io, history, Outcome::Unknown);
                } else {
                    self.retry(io);
                }
            }
            Msg::ClientWriteResp { result, .. } => match result {
                Ok(WriteResponse::Done) => self.finish(io, history, Outcome::Ok(Output::Done)),
                Ok(WriteResponse::Checked { applied, .. }) => self.finish(io, history, Outcome::Ok(Output::Applied(applied))),
                Ok(WriteResponse::Incr { .. } | WriteResponse::Duplicated { .. }) => {
                    unreachable!("the workload sends no incr and no duplicate batch")
                }
                // Neither took the write: sent again (the checkers catch it if one did).
                Err(Error::NotPrimary { .. } | Error::Busy { .. }) => self.retry(io),
                // A primary stepping down answers "may or may not be applied".
                Err(Error::OutcomeUnknown { .. }) => self.finish(io, history, Outcome::Unknown),
                // Refused, not applied: the checkers catch it if it was.
                Err(Error::DiskFull { .. }) => {
                    io.stats.path(path::DISK_FULL_REFUSED);
                    self.finish(io, history, Outcome::Failed)
                }
                Err(_) => self.finish(io, history, Outcome::Failed),
            },
            Msg::ClientReadResp { result, .. } => match result {
                Ok(values) => {
                    let op = &history.ops[self.current.as_ref().expect("running").op];
                    let out = match op.kind {
                        OpKind::BankRead => Output::Bank(values),
                        _ => Output::Value(values.into_iter().next().flatten()),
                    };
                    self.finish(io, history, Outcome::Ok(out));
                }
                Err(_) => self.retry(io),
            },
            _ => {}
        }
    }

    /// Whether this client's route names `gpid`'s primary (for scripts and probes).
    pub fn knows(&self, gpid: Gpid) -> bool {
        self.route.iter().any(|c| c.gpid == gpid)
    }
}
