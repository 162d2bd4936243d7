//! One long-lived `Batch` stream per replica server for the hot calls (get, write; and
//! prepare, from one replica server to another).
//!
//! Callers queue calls; a task per server sends every call queued by the time the stream can
//! take another message as one `BatchRequest`, and routes each reply to its caller by id. So
//! under load many calls share one HTTP/2 message instead of paying for a stream each.
//!
//! Failures, as the caller sees them (`Table::call` decides about retries):
//! - the stream could not be opened, or broke before a call was sent: the call was not taken,
//!   and its status says "could not connect", like a unary call that never connected (and
//!   `refused` tells whether the server's port refused the connection: nothing listens there);
//! - the stream broke after the call was sent: "stream … broke", and the call may or may not
//!   have been applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_proto::errors::batch_status;
use tandem_proto::v1;
use tandem_proto::v1::replica_service_client::ReplicaServiceClient;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::Status;

/// Calls in one message at most (the server takes up to 4096).
const CALLS_PER_MESSAGE_MAX: usize = 1024;
/// Encoded bytes of the calls in one message at most, beyond its first call.
const BYTES_PER_MESSAGE_MAX: usize = 4 << 20;
/// Messages queued for the stream before the sender waits for HTTP/2 to take them; meanwhile
/// calls gather into larger messages.
const MESSAGES_QUEUED_MAX: usize = 4;
/// Abandoned callers (timed out) are forgotten at the latest after this many new calls, and
/// callers past their deadline (`call_then`) are answered this often.
const SWEEP_EVERY_CALLS: u64 = 4096;
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// A stream that has not opened by then has failed (like a connection that does not connect).
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

type Answer = Result<v1::batch_reply::Reply, Status>;

/// Who waits for a call's reply: a task awaiting it, or a function to call with it, which the
/// stream's tasks call (by its deadline at the latest).
enum Caller {
    Task(oneshot::Sender<Answer>),
    Then { done: Box<dyn FnOnce(Answer) + Send>, deadline: Instant },
}

impl Caller {
    fn answer(self, answer: Answer) {
        match self {
            Caller::Task(tx) => {
                let _ = tx.send(answer);
            }
            Caller::Then { done, .. } => done(answer),
        }
    }

    /// The caller no longer waits (it gave up), or its deadline has passed.
    fn is_gone(&self, now: Instant) -> bool {
        match self {
            Caller::Task(tx) => tx.is_closed(),
            Caller::Then { deadline, .. } => *deadline <= now,
        }
    }

    /// Lets go of a caller that `is_gone`: one past its deadline learns it timed out.
    fn give_up(self) {
        if let Caller::Then { done, .. } = self {
            done(Err(Status::deadline_exceeded("no answer in time on the batch stream")));
        }
    }
}

struct Queued {
    call: v1::batch_call::Call,
    reply: Caller,
}

/// The batch stream to one replica server; the task behind it ends when this is dropped.
pub struct BatchConn {
    addr: Arc<str>,
    queue: mpsc::UnboundedSender<Queued>,
}

impl BatchConn {
    /// `grpc` must not carry a per-request timeout: the stream lives as long as the connection.
    pub fn new(addr: &str, grpc: ReplicaServiceClient<Channel>) -> BatchConn {
        let (queue, rx) = mpsc::unbounded_channel();
        let addr: Arc<str> = addr.into();
        tokio::spawn(run(addr.clone(), grpc, rx));
        BatchConn { addr, queue }
    }

    pub async fn call(&self, call: v1::batch_call::Call) -> Result<v1::batch_reply::Reply, Status> {
        let (reply, rx) = oneshot::channel();
        if self.queue.send(Queued { call, reply: Caller::Task(reply) }).is_err() {
            return Err(not_sent(&self.addr, "the client is shutting down"));
        }
        rx.await.map_err(|_| not_sent(&self.addr, "the batch stream task stopped"))?
    }

    /// Like `call`, without a task waiting: `done` runs on the stream's tasks with the reply, or
    /// with an error when the stream breaks or no reply came within `timeout` (checked every
    /// `SWEEP_INTERVAL`). Exactly once.
    pub fn call_then(&self, call: v1::batch_call::Call, timeout: Duration, done: impl FnOnce(Answer) + Send + 'static) {
        let reply = Caller::Then { done: Box::new(done), deadline: Instant::now() + timeout };
        if let Err(mpsc::error::SendError(q)) = self.queue.send(Queued { call, reply }) {
            q.reply.answer(Err(not_sent(&self.addr, "the client is shutting down")));
        }
    }
}

/// Marks the statuses made here: "no" = the call was never sent, "maybe" = it was sent and
/// the stream broke before its reply.
const SENT_KEY: &str = "tandem-batch-sent";

/// On a status made here: the connection was refused.
const REFUSED_KEY: &str = "tandem-batch-refused";

fn not_sent(addr: &str, why: &str) -> Status {
    let mut status = Status::unavailable(format!("could not connect to {addr}: {why}"));
    status.metadata_mut().insert(SENT_KEY, tonic::metadata::MetadataValue::from_static("no"));
    status
}

/// Whether a call failed because the server's port refused the connection (nothing listens
/// there: its process is gone, or not started yet).
pub fn refused(status: &Status) -> bool {
    status.metadata().contains_key(REFUSED_KEY)
}

/// Whether a transport failure of tonic is a refused connection: an `io::Error` of that kind
/// in its sources (or, where a layer kept only the text, the OS's words for it).
pub fn connection_refused(status: &Status) -> bool {
    sources(status).any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused))
        || status.message().contains("Connection refused")
}

/// The errors under a status, outermost first.
fn sources(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

fn broke(addr: &str, why: &str) -> Status {
    let mut status = Status::unavailable(format!("stream to {addr} broke ({why}); the call may or may not have been applied"));
    status.metadata_mut().insert(SENT_KEY, tonic::metadata::MetadataValue::from_static("maybe"));
    status
}

/// For a status made here: whether the call may have reached the server. None for any other.
pub(crate) fn maybe_sent(status: &Status) -> Option<bool> {
    match status.metadata().get(SENT_KEY).and_then(|v| v.to_str().ok()) {
        Some("no") => Some(false),
        Some(_) => Some(true),
        None => None,
    }
}

/// The callers waiting for replies on the current stream. `open` turns false when the stream
/// breaks: the callers still waiting are failed then, and no new one is added.
struct Waiting {
    open: bool,
    callers: HashMap<u64, Caller>,
}

impl Waiting {
    /// Forgets the callers that gave up and answers those past their deadline.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.callers.extract_if(|_, c| c.is_gone(now)).for_each(|(_, c)| c.give_up());
    }
}

async fn run(addr: Arc<str>, mut grpc: ReplicaServiceClient<Channel>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut next_id: u64 = 0;
    // Each turn of this loop is one stream, opened when a call is queued.
    while let Some(first) = queue.recv().await {
        let (messages, message_rx) = mpsc::channel::<v1::BatchRequest>(MESSAGES_QUEUED_MAX);
        let mut first = Some(first);
        let response = open(&mut grpc, message_rx, &mut first).await;
        let mut replies = match response {
            Ok(r) => r,
            Err(status) => {
                let refused = connection_refused(&status);
                let mut status = not_sent(&addr, &transport_text(&status));
                if refused {
                    status.metadata_mut().insert(REFUSED_KEY, tonic::metadata::MetadataValue::from_static("yes"));
                }
                for q in first.into_iter().chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                    q.reply.answer(Err(status.clone()));
                }
                continue;
            }
        };
        let waiting = Arc::new(Mutex::new(Waiting { open: true, callers: HashMap::new() }));
        let (broken_tx, mut broken) = oneshot::channel::<()>();
        let reader = {
            let waiting = waiting.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                let why = loop {
                    match replies.message().await {
                        Ok(Some(batch)) => {
                            let mut w = waiting.lock().expect("waiting lock");
                            for r in batch.replies {
                                let Some(caller) = w.callers.remove(&r.id) else { continue };
                                let result = match r.reply {
                                    Some(v1::batch_reply::Reply::Error(e)) => Err(batch_status(&e)),
                                    Some(reply) => Ok(reply),
                                    None => Err(Status::internal(format!("{addr} sent a batch reply without a result"))),
                                };
                                caller.answer(result);
                            }
                        }
                        Ok(None) => break "the server closed it".to_string(),
                        Err(status) => break status.message().to_string(),
                    }
                };
                let mut w = waiting.lock().expect("waiting lock");
                w.open = false;
                for (_, caller) in w.callers.drain() {
                    caller.answer(Err(broke(&addr, &why)));
                }
                drop(w);
                let _ = broken_tx.send(());
            })
        };
        let mut since_sweep: u64 = 0;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let q = match first.take() {
                Some(q) => q,
                None => tokio::select! {
                    q = queue.recv() => match q {
                        Some(q) => q,
                        None => break,
                    },
                    _ = sweep.tick() => {
                        waiting.lock().expect("waiting lock").sweep();
                        continue;
                    }
                    _ = &mut broken => break,
                },
            };
            // Let the callers that are ready to run queue their calls too: they join this
            // message instead of each paying for one.
            tokio::task::yield_now().await;
            let calls = match take_calls(&waiting, q, &mut queue, &mut next_id, &mut since_sweep) {
                Ok(calls) => calls,
                Err(q) => {
                    q.reply.answer(Err(not_sent(&addr, "the stream broke before the call was sent")));
                    break;
                }
            };
            tokio::select! {
                sent = messages.send(v1::BatchRequest { calls }) => if sent.is_err() {
                    // The request stream is gone: the reader sees the stream end and fails the
                    // callers.
                    break;
                },
                _ = &mut broken => break,
            }
        }
        // Dropping the sender ends the request stream; the reader fails whoever still waits.
        drop(messages);
        let _ = reader.await;
    }
}

/// A transport failure's message with its sources ("transport error: tcp connect error:
/// Connection refused"), which tonic's message alone leaves out.
fn transport_text(status: &Status) -> String {
    let mut text = status.message().to_string();
    for part in sources(status).map(|e| e.to_string()) {
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
    }
    text
}

/// Opens the stream, in `OPEN_TIMEOUT` at most (a server that accepts connections but does not
/// answer must not hold the calls forever). `first`, the call that asked for the stream, is
/// answered meanwhile if its deadline passes.
async fn open(
    grpc: &mut ReplicaServiceClient<Channel>,
    messages: mpsc::Receiver<v1::BatchRequest>,
    first: &mut Option<Queued>,
) -> Result<tonic::Streaming<v1::BatchResponse>, Status> {
    let opening = grpc.batch(tokio_stream::wrappers::ReceiverStream::new(messages));
    tokio::pin!(opening);
    let give_up = tokio::time::sleep(OPEN_TIMEOUT);
    tokio::pin!(give_up);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            response = &mut opening => return response.map(|r| r.into_inner()),
            _ = &mut give_up => return Err(Status::unavailable(format!("the stream did not open within {OPEN_TIMEOUT:?}"))),
            _ = sweep.tick() => {
                let now = Instant::now();
                if let Some(q) = first.take_if(|q| q.reply.is_gone(now)) {
                    q.reply.give_up();
                }
            }
        }
    }
}

/// Numbers `first` and as many queued calls as one message takes, and registers their callers.
/// Gives `first` back when the stream broke.
fn take_calls(
    waiting: &Mutex<Waiting>,
    first: Queued,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    next_id: &mut u64,
    since_sweep: &mut u64,
) -> Result<Vec<v1::BatchCall>, Queued> {
    let mut w = waiting.lock().expect("waiting lock");
    if !w.open {
        return Err(first);
    }
    let mut calls = Vec::new();
    let mut bytes = 0;
    let mut take = |q: Queued| {
        *next_id += 1;
        let call = v1::BatchCall { id: *next_id, call: Some(q.call) };
        bytes += prost::Message::encoded_len(&call);
        w.callers.insert(*next_id, q.reply);
        calls.push(call);
        calls.len() < CALLS_PER_MESSAGE_MAX && bytes < BYTES_PER_MESSAGE_MAX
    };
    let mut room = take(first);
    while room {
        match queue.try_recv() {
            Ok(q) => room = take(q),
            Err(_) => break,
        }
    }
    *since_sweep += calls.len() as u64;
    if *since_sweep >= SWEEP_EVERY_CALLS {
        w.sweep();
        *since_sweep = 0;
    }
    Ok(calls)
}
