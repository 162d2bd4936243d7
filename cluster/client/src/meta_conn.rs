//! A connection to the meta servers: tries the known addresses, remembers the one that answered
//! (the leader), and follows a "not leader" hint.

use std::sync::Mutex;
use tandem_core::meta_route::MetaRoute;
use std::time::Duration;
use tandem_proto::errors::{leader_hint, ErrorKind};
use tandem_proto::v1::meta_service_client::MetaServiceClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug)]
pub struct MetaConn {
    addrs: Vec<String>,
    route: Mutex<MetaRoute>,
    channels: Vec<Channel>,
    timeout: Duration,
    /// How long one meta server gets before the next is tried.
    attempt_timeout: Duration,
}

/// HTTP/2 flow-control windows of every Tandem connection (clients and servers).
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

pub fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(stream_endpoint(addr)?.timeout(timeout))
}

/// Like `endpoint`, without a per-request timeout: for long-lived streams.
pub fn stream_endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") { addr.to_string() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        // HTTP/2's default 64 KiB windows fill after ~60 in-flight 1 KiB values and then cost a
        // WINDOW_UPDATE round per few responses; prepare batches are larger still.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

impl MetaConn {
    /// `addrs`: one or more `host:port` of meta servers. Connections are made lazily.
    pub fn new(addrs: &[String], timeout: Duration) -> Result<MetaConn, String> {
        if addrs.is_empty() {
            return Err("no meta server address given (use --meta HOST:PORT or TANDEM_META)".into());
        }
        let channels = addrs
            .iter()
            .map(|a| endpoint(a, timeout).map(|e| e.connect_lazy()).map_err(|e| format!("bad meta address {a:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MetaConn { addrs: addrs.to_vec(), route: Mutex::new(MetaRoute::new(addrs.len())), channels, timeout, attempt_timeout: timeout })
    }

    /// Gives each meta server at most `attempt` before trying the next one (default: the whole
    /// timeout). Replica servers beacon with a short one, so a frozen meta server cannot hold
    /// their beacons past the new leader's grace period.
    pub fn with_attempt_timeout(mut self, attempt: Duration) -> MetaConn {
        self.attempt_timeout = attempt.min(self.timeout);
        self
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Calls `f` on the current meta server. On a transport error or a "not leader" answer it
    /// moves on — to the leader the answer names when that is one of the known addresses, else
    /// to the next address — and when every server said "not leader" without naming one (an
    /// election is under way) it retries, within one timeout per address.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(MetaServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with_attempt(self.attempt_timeout, f).await
    }

    /// `call` with at most `attempt` per meta server (never more than the connection's own), for
    /// reads a leader answers from memory (a table's route): a frozen leader then delays them by
    /// `attempt` rather than by a whole timeout. Calls that write to the store may take longer
    /// and use `call`, so a slow write is not sent again to another meta server.
    pub async fn call_with_attempt<T, F, Fut>(&self, attempt: Duration, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(MetaServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let attempt_timeout = attempt.min(self.attempt_timeout);
        // A meta server that accepts connections but never answers (frozen, or cut off) costs one
        // attempt before the next one is tried: the call gets an attempt per address, at least
        // the whole timeout.
        let per_address = attempt_timeout * self.channels.len().max(1) as u32;
        let deadline = tokio::time::Instant::now() + self.timeout.max(per_address);
        let mut last;
        let mut tried_since_progress = 0;
        loop {
            let idx = self.route.lock().expect("meta route lock").current();
            let client = MetaServiceClient::new(self.channels[idx].clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now()).min(attempt_timeout);
            // Remembered even if the caller gives up on this call: the next one starts elsewhere.
            match tokio::time::timeout(remaining, f(client)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => {
                    let not_leader = matches!(ErrorKind::of(&status), Some(ErrorKind::NotLeader));
                    // Transport trouble (no Tandem error kind): refused, reset, or the channel's
                    // own timeout ("Timeout expired") on a server that does not answer.
                    let unreachable = ErrorKind::of(&status).is_none()
                        && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded);
                    if !not_leader && !unreachable {
                        return Err(status);
                    }
                    let hint = leader_hint(&status).and_then(|hint| self.addrs.iter().position(|a| a == &hint || a.ends_with(&format!("//{hint}"))));
                    let mut route = self.route.lock().expect("meta route lock");
                    if not_leader { route.not_leader(hint) } else { route.unreachable() }
                    last = Some(status);
                }
                Err(_) => {
                    self.route.lock().expect("meta route lock").unreachable();
                    last = Some(tonic::Status::deadline_exceeded(format!("meta server {} did not answer in time", self.addrs[idx])));
                }
            }
            tried_since_progress += 1;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if tried_since_progress >= self.channels.len() {
                // A full round without a leader: give an election a moment.
                tried_since_progress = 0;
                let pause = Duration::from_millis(200).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no meta server reachable")))
    }
}
