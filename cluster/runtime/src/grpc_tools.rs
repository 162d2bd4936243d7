//! The standard gRPC services every Tandem server carries, so `grpcurl` and
//! `grpc_health_probe` work against any of them.

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::server::{v1, v1alpha};

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
