//! The `/metrics` HTTP endpoint of a server (Prometheus text format).

use prometheus::{Registry, TextEncoder};
use std::net::SocketAddr;

/// Refreshes gauges from live state right before a scrape.
pub type Refresh = std::sync::Arc<dyn Fn() + Send + Sync>;

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
