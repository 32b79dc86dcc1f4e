//! Compiles `pylon/**/*.proto` with protox (pure Rust, no system `protoc`), then
//! generates prost messages, tonic services and pbjson serde impls.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "pylon/config/v1/config.proto",
    "pylon/admin/v1/admin.proto",
    "pylon/raft/v1/raft.proto",
    "pylon/publish/v1/publish.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out_dir.join("pylon_descriptor.bin");
    fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        // BTreeMap keeps encodings (and so Raft snapshots) byte-for-byte deterministic.
        .btree_map(".")
        // Shared, not copied, by every subscriber's stream.
        .bytes(".pylon.publish.v1.EncodedSnapshot.payload")
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .btree_map(["."])
        .build(&[".pylon"])?;
    Ok(())
}
