//! The replica servers' watch streams and the probes of their ports. Each replica server keeps
//! one `Watch` call open to the meta leader. Over it the meta asks the server to beacon now when
//! a configuration it hosts changed (`MetaAction::AskBeacon`), so a promoted secondary learns
//! of its promotion in a round trip rather than at its next beacon. When the stream breaks (the
//! server's host closed the connection), the machine hears `WatchBroken` and may ask for a probe
//! of the server's port (`MetaAction::Probe`); what a refused probe means is decided in the
//! machine (`FailureDetector::on_probe`), not here.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_meta_core::MetaInput;
use tandem_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// A probe gives up after this, well within the machine's `PROBE_ANSWER_MS`.
const PROBE_TIMEOUT: Duration = Duration::from_millis(tandem_meta_core::failure_detector::PROBE_ANSWER_MS * 3 / 4);
/// An accepted connection is tried again after this, until the probe's time is up.
const PROBE_AGAIN: Duration = Duration::from_millis(100);

pub type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<v1::WatchEvent, Status>>;

struct Stream {
    id: u64,
    events: mpsc::Sender<Result<v1::WatchEvent, Status>>,
    /// Dropped to end the stream from this side (replaced, or this meta stepped down).
    _cancel: oneshot::Sender<()>,
}

#[derive(Default)]
pub struct Watchers {
    streams: Mutex<HashMap<String, Stream>>,
    next_id: AtomicU64,
}

impl Watchers {
    /// Opens `node`'s stream (ending an older one of the same server). When the server's side
    /// goes away, the machine hears `WatchBroken`.
    pub fn open(&self, meta: &Arc<crate::server::Meta>, node: String) -> WatchStream {
        // One event waits at most: a second "beacon now" adds nothing to the first.
        let (events, rx) = mpsc::channel(1);
        let (cancel, cancelled) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = events.clone();
        self.streams.lock().expect("watchers lock").insert(node.clone(), Stream { id, events, _cancel: cancel });
        let meta = meta.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = closed.closed() => {
                    let current = {
                        let mut streams = meta.watchers.streams.lock().expect("watchers lock");
                        let current = streams.get(&node).is_some_and(|s| s.id == id);
                        if current {
                            streams.remove(&node);
                        }
                        current
                    };
                    if current {
                        tracing::info!(node, "a replica server's watch stream broke");
                        meta.step(MetaInput::WatchBroken { node });
                    }
                }
                _ = cancelled => {}
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// Asks each of `nodes` that has a stream open to beacon now.
    pub fn ask_beacon(&self, nodes: &BTreeSet<String>) {
        let streams = self.streams.lock().expect("watchers lock");
        for node in nodes {
            if let Some(s) = streams.get(node) {
                // Full: a request is already waiting, which is as good.
                let _ = s.events.try_send(Ok(v1::WatchEvent { beacon_now: true }));
            }
        }
    }

    /// Ends every stream (this meta server stepped down): the servers open them at the leader.
    pub fn close_all(&self) {
        self.streams.lock().expect("watchers lock").clear();
    }
}

/// Whether a connection to `node` is refused outright within `PROBE_TIMEOUT`: nothing listens on
/// its port. An accepted one is tried again every `PROBE_AGAIN`, because a process being killed
/// breaks its connections (the watch stream) a moment before its host lets go of its port (seen
/// in real-process runs: the first connect accepted, the next refused). Timed out or failed
/// otherwise (unreachable host, no route, bad name) is not refused.
pub async fn probe_refused(node: &str) -> bool {
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(node)).await {
            Ok(Err(e)) => return e.kind() == std::io::ErrorKind::ConnectionRefused,
            Err(_) => return false,
            Ok(Ok(_)) => {}
        }
        if tokio::time::Instant::now() + PROBE_AGAIN >= deadline {
            return false;
        }
        tokio::time::sleep(PROBE_AGAIN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_refused_and_a_listening_one_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert!(!probe_refused(&open).await, "a listening port accepts");
        drop(listener);
        assert!(probe_refused(&open).await, "nothing listens there any more");
    }
}
