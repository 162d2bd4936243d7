//! tandem-runtime: what every Tandem server process shares — the standard gRPC health and
//! reflection services (`grpc_tools`), the Prometheus `/metrics` endpoint (`metrics`) and stop
//! handling (`stopped`), free-space readings (`disk`), the open-files limit (`limits`). Runtimes
//! only: nothing here decides anything.

pub mod disk;
pub mod grpc_tools;
pub mod limits;
pub mod metrics;

/// Resolves once `shutdown` holds true (or its sender is gone).
pub async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
