//! A connection to the meta servers: tries the known addresses, remembers the one that answered
//! (the leader), and follows a "not leader" hint.

use std::sync::Mutex;
use std::time::Duration;
use tandem_proto::errors::ErrorKind;
use tandem_proto::v1::meta_service_client::MetaServiceClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug)]
pub struct MetaConn {
    addrs: Vec<String>,
    current: Mutex<usize>,
    channels: Vec<Channel>,
    timeout: Duration,
}

/// HTTP/2 flow-control windows of every Tandem connection (clients and servers).
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

pub fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") { addr.to_string() } else { format!("http://{addr}") };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
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
        Ok(MetaConn { addrs: addrs.to_vec(), current: Mutex::new(0), channels, timeout })
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Calls `f` on the current meta server, moving to the next one on transport errors or a
    /// "not leader" answer, until every address was tried once.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(MetaServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = *self.current.lock().expect("meta index lock");
        let mut last = None;
        for i in 0..self.channels.len() {
            let idx = (start + i) % self.channels.len();
            let client = MetaServiceClient::new(self.channels[idx].clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            match tokio::time::timeout(self.timeout, f(client)).await {
                Ok(Ok(resp)) => {
                    *self.current.lock().expect("meta index lock") = idx;
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => {
                    let retry_elsewhere = matches!(ErrorKind::of(&status), Some(ErrorKind::NotLeader))
                        || (status.code() == tonic::Code::Unavailable && ErrorKind::of(&status).is_none());
                    if !retry_elsewhere {
                        return Err(status);
                    }
                    last = Some(status);
                }
                Err(_) => last = Some(tonic::Status::deadline_exceeded(format!("meta server {} did not answer in time", self.addrs[idx]))),
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no meta server reachable")))
    }
}
