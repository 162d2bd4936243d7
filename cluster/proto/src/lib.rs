//! tandem-proto: the generated gRPC code (prost + tonic) and the encoded descriptor set that the
//! servers' reflection services publish.

pub mod v1 {
    tonic::include_proto!("tandem.v1");
}

pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));
