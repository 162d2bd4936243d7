//! One long-lived `Batch` stream per replica server for the hot calls (get, write; and
//! prepare, from one replica server to another).
//!
//! Callers queue calls; a task per server sends every call queued by the time the stream can
//! take another message as one `BatchRequest`, and routes each reply to its caller by id. So
//! under load many calls share one HTTP/2 message instead of paying for a stream each.
//!
//! Failures, as the caller sees them (`Table::call` decides about retries):
//! - the stream could not be opened, or broke before a call was sent: the call was not taken,
//!   and its status says "could not connect", like a unary call that never connected;
//! - the stream broke after the call was sent: "stream … broke", and the call may or may not
//!   have been applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
/// Abandoned callers (timed out) are forgotten at the latest after this many new calls.
const SWEEP_EVERY_CALLS: u64 = 4096;

type ReplyTx = oneshot::Sender<Result<v1::batch_reply::Reply, Status>>;

struct Queued {
    call: v1::batch_call::Call,
    reply: ReplyTx,
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
        if self.queue.send(Queued { call, reply }).is_err() {
            return Err(not_sent(&self.addr, "the client is shutting down"));
        }
        rx.await.map_err(|_| not_sent(&self.addr, "the batch stream task stopped"))?
    }
}

/// Marks the statuses made here: "no" = the call was never sent, "maybe" = it was sent and
/// the stream broke before its reply.
const SENT_KEY: &str = "tandem-batch-sent";

fn not_sent(addr: &str, why: &str) -> Status {
    let mut status = Status::unavailable(format!("could not connect to {addr}: {why}"));
    status.metadata_mut().insert(SENT_KEY, tonic::metadata::MetadataValue::from_static("no"));
    status
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
    callers: HashMap<u64, ReplyTx>,
}

async fn run(addr: Arc<str>, mut grpc: ReplicaServiceClient<Channel>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut next_id: u64 = 0;
    // Each turn of this loop is one stream, opened when a call is queued.
    while let Some(first) = queue.recv().await {
        let (messages, message_rx) = mpsc::channel::<v1::BatchRequest>(MESSAGES_QUEUED_MAX);
        let mut first = Some(first);
        let response = grpc.batch(tokio_stream::wrappers::ReceiverStream::new(message_rx)).await;
        let mut replies = match response {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let status = not_sent(&addr, status.message());
                for q in first.into_iter().chain(std::iter::from_fn(|| queue.try_recv().ok())) {
                    let _ = q.reply.send(Err(status.clone()));
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
                                let _ = caller.send(result);
                            }
                        }
                        Ok(None) => break "the server closed it".to_string(),
                        Err(status) => break status.message().to_string(),
                    }
                };
                let mut w = waiting.lock().expect("waiting lock");
                w.open = false;
                for (_, caller) in w.callers.drain() {
                    let _ = caller.send(Err(broke(&addr, &why)));
                }
                drop(w);
                let _ = broken_tx.send(());
            })
        };
        let mut since_sweep: u64 = 0;
        loop {
            let q = match first.take() {
                Some(q) => q,
                None => tokio::select! {
                    q = queue.recv() => match q {
                        Some(q) => q,
                        None => break,
                    },
                    _ = &mut broken => break,
                },
            };
            // Let the callers that are ready to run queue their calls too: they join this
            // message instead of each paying for one.
            tokio::task::yield_now().await;
            let calls = match take_calls(&waiting, q, &mut queue, &mut next_id, &mut since_sweep) {
                Ok(calls) => calls,
                Err(q) => {
                    let _ = q.reply.send(Err(not_sent(&addr, "the stream broke before the call was sent")));
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
        w.callers.retain(|_, caller| !caller.is_closed());
        *since_sweep = 0;
    }
    Ok(calls)
}
