//! The standard gRPC services every Tandem server carries, so `grpcurl` and
//! `grpc_health_probe` work against any of them.

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::server::{v1, v1alpha};

/// How many streams a peer may open and reset before the server accepts them, per connection.
/// h2 allows 20 (against the "rapid reset" flood, CVE-2023-44487) and then closes the connection
/// with GOAWAY `too_many_resets`, failing every call in flight on it. But a server that was
/// paused (SIGSTOP, a long GC-like stall, a frozen VM) finds, when it resumes, every call its
/// clients cancelled by deadline meanwhile — hundreds on a busy connection — and closing the
/// connection then fails good writes with unknown outcomes. Tandem's peers are its own clients
/// and servers; this bound still ends a real flood.
pub const PENDING_ACCEPT_RESET_STREAMS_MAX: usize = 10_000;

/// The gRPC server builder every Tandem server starts from.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder().http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESET_STREAMS_MAX))
}

/// Health (reporting `S` as serving) and reflection v1 and v1alpha over Tandem's descriptors.
#[allow(clippy::type_complexity)]
pub async fn health_and_reflection<S: tonic::server::NamedService>() -> Result<(
        HealthServer<impl Health>,
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((health, builder().build_v1()?, builder().build_v1alpha()?))
}
