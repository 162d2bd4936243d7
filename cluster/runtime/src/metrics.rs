//! The `/metrics` HTTP endpoint of a server (Prometheus text format).

use prometheus::{IntGaugeVec, Opts, Registry, TextEncoder};
use std::net::SocketAddr;

/// Refreshes gauges from live state right before a scrape.
pub type Refresh = std::sync::Arc<dyn Fn() + Send + Sync>;

/// What every server's `/metrics` has besides its own figures: the process's (CPU seconds,
/// resident and virtual memory, open and allowed files, start time: the `prometheus` crate's
/// process collector, `process_*`) and the build it runs (`tandem_build_info`, always 1).
/// Servers sharing a process (the playground) each report the same process.
pub fn register_common(registry: &Registry, server: &str) {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registered once per registry");
    let info = IntGaugeVec::new(Opts::new("tandem_build_info", "the build this server runs (always 1)"), &["version", "server"]).expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), server]).set(1);
    registry.register(Box::new(info)).expect("registered once per registry");
}

/// The registry's metrics in the text format.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

/// Serves `GET /metrics` until `shutdown` resolves; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    refresh: Refresh,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            refresh();
            async move { render(&registry) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!("metrics server stopped: {e}");
        }
    });
    Ok(local)
}
