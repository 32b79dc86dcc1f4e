//! Pylon's protobuf packages, compiled from `pylon/**/*.proto`.
//!
//! - [`config::v1`]: the resource model (also the YAML/JSON format of `pylon apply`).
//! - [`admin::v1`]: the gRPC admin API.
//! - [`publish::v1`]: config snapshots streamed to data planes, and their ACK/NACK.
//! - [`raft::v1`]: peer transport and the commands stored in the Raft log.
//!
//! Only generated code lives here; validation is in `pylon-common`.

#![allow(clippy::all, missing_docs)]

pub mod config {
    pub mod v1 {
        tonic::include_proto!("pylon.config.v1");
        include!(concat!(env!("OUT_DIR"), "/pylon.config.v1.serde.rs"));
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("pylon.admin.v1");
        include!(concat!(env!("OUT_DIR"), "/pylon.admin.v1.serde.rs"));
    }
}

pub mod publish {
    pub mod v1 {
        tonic::include_proto!("pylon.publish.v1");
        include!(concat!(env!("OUT_DIR"), "/pylon.publish.v1.serde.rs"));
    }
}

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("pylon.raft.v1");
        include!(concat!(env!("OUT_DIR"), "/pylon.raft.v1.serde.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every Pylon package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pylon_descriptor.bin"));

pub use pbjson_types as wkt;
