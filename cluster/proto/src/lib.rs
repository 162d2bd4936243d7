//! tandem-proto: the generated gRPC code (prost + tonic), the descriptor set that the servers'
//! reflection services publish, conversions to core types, and the error-kind convention.

pub mod v1 {
    tonic::include_proto!("tandem.v1");
}

pub mod convert;
pub mod errors;

pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));
