//! The on-the-wire form of a config snapshot: protobuf, then gzip, with a
//! SHA-256 of the uncompressed bytes so a damaged copy is never applied.
//!
//! The control plane encodes each published version once and shares the bytes
//! with every subscriber; the data plane decodes, and may keep the encoded form
//! on disk as its snapshot cache. This module does no I/O.

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message as _;
use pylon_proto::publish::v1::{ConfigSnapshot, EncodedSnapshot, encoded_snapshot::Encoding};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The description of the `pylon.config.version` gauge, which both planes
/// export (in `pylon dev` from one process: one description, or
/// OpenTelemetry warns of a conflict).
pub const VERSION_METRIC_DESCRIPTION: &str =
    "Config version on this node (control plane: applied; data plane: served)";

/// Refuse to inflate anything larger than this (a corrupt or hostile size field).
pub const MAX_SNAPSHOT_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes uncompressed; the limit is {MAX_SNAPSHOT_BYTES}")]
    TooLarge(u64),
    #[error("unknown snapshot encoding {0}")]
    UnknownEncoding(i32),
    #[error("snapshot does not decompress: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("snapshot checksum mismatch: the copy is damaged")]
    Checksum,
    #[error("snapshot does not decode: {0}")]
    Decode(#[source] prost::DecodeError),
}

/// SHA-256 of a snapshot's content, ignoring its version and publication time:
/// two versions with the same digest serve exactly the same traffic, on any
/// node and however often the snapshot was decoded.
///
/// The deployments' models are digested apart, in [`canonical_form`]: a
/// model's schema is a `google.protobuf.Struct`, a `HashMap` whose protobuf
/// encoding orders its keys differently with each decoding.
pub fn content_digest(snapshot: &ConfigSnapshot) -> [u8; 32] {
    let mut content = ConfigSnapshot {
        version: 0,
        published_at: None,
        ..snapshot.clone()
    };
    let mut hash = Sha256::new();
    for stage in &mut content.stages {
        for deployment in [stage.deployment.as_mut(), stage.canary_deployment.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(api) = deployment.definition.as_mut() {
                // (A model that cannot be written as JSON — NaN — is refused
                // by validation, so it never reaches a snapshot.)
                let models = sorted_json(&std::mem::take(&mut api.models)).unwrap_or_default();
                hash.update((models.len() as u64).to_be_bytes());
                hash.update(&models);
            }
        }
    }
    hash.update(content.encode_to_vec());
    hash.finalize().into()
}

/// The bytes a digest of `message` is taken over, the same for equal
/// messages however they were built or decoded: its JSON form with every
/// object's keys sorted (`serde_json::Value` keeps a `BTreeMap`), or,
/// should it not serialize (a NaN in a `google.protobuf.Struct`), its
/// protobuf encoding. Not the protobuf encoding first: a
/// `google.protobuf.Struct` is a `HashMap`, encoded in an order that
/// differs with each decoding of the same bytes.
pub fn canonical_form<T: prost::Message + serde::Serialize>(message: &T) -> Vec<u8> {
    sorted_json(message).unwrap_or_else(|_| message.encode_to_vec())
}

/// `value` as JSON with every object's keys sorted.
fn sorted_json<T: serde::Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

/// Encodes and compresses `snapshot`.
pub fn encode(snapshot: &ConfigSnapshot) -> EncodedSnapshot {
    let raw = snapshot.encode_to_vec();
    let sha256 = Sha256::digest(&raw).to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let compressed = gz.write_all(&raw).and_then(|()| gz.finish());
    match compressed {
        Ok(payload) => EncodedSnapshot {
            encoding: Encoding::Gzip as i32,
            payload: payload.into(),
            sha256,
            uncompressed_size: raw.len() as u64,
        },
        Err(_) => EncodedSnapshot {
            encoding: Encoding::Identity as i32,
            uncompressed_size: raw.len() as u64,
            payload: raw.into(),
            sha256,
        },
    }
}

/// Decompresses, verifies and decodes an encoded snapshot.
pub fn decode(encoded: &EncodedSnapshot) -> Result<ConfigSnapshot, SnapshotError> {
    if encoded.uncompressed_size > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::TooLarge(encoded.uncompressed_size));
    }
    let raw = match Encoding::try_from(encoded.encoding) {
        Ok(Encoding::Identity) => encoded.payload.to_vec(),
        Ok(Encoding::Gzip) => {
            let mut raw = Vec::with_capacity(encoded.uncompressed_size as usize);
            GzDecoder::new(&encoded.payload[..])
                .take(MAX_SNAPSHOT_BYTES + 1)
                .read_to_end(&mut raw)
                .map_err(SnapshotError::Decompress)?;
            if raw.len() as u64 > MAX_SNAPSHOT_BYTES {
                return Err(SnapshotError::TooLarge(raw.len() as u64));
            }
            raw
        }
        Err(_) => return Err(SnapshotError::UnknownEncoding(encoded.encoding)),
    };
    if Sha256::digest(&raw).as_slice() != encoded.sha256.as_slice() {
        return Err(SnapshotError::Checksum);
    }
    ConfigSnapshot::decode(raw.as_slice()).map_err(SnapshotError::Decode)
}

/// The data-plane label that says which endpoint class a node serves.
pub const ENDPOINT_CLASS_LABEL: &str = "endpoint-class";

/// Whether a node with these labels serves PRIVATE APIs.
pub fn serves_private(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels
        .get(ENDPOINT_CLASS_LABEL)
        .is_some_and(|class| class == "private")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::publish::v1::StageSnapshot;

    fn sample(version: u64) -> ConfigSnapshot {
        ConfigSnapshot {
            version,
            stages: vec![StageSnapshot::default(); 3],
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_survives_encoding_and_is_smaller_on_the_wire() {
        let snapshot = sample(7);
        let encoded = encode(&snapshot);
        assert_eq!(encoded.encoding, Encoding::Gzip as i32);
        assert_eq!(decode(&encoded).ok(), Some(snapshot));
    }

    #[test]
    fn a_damaged_payload_or_checksum_is_refused() {
        let mut encoded = encode(&sample(7));
        encoded.sha256[0] ^= 1;
        assert!(matches!(decode(&encoded), Err(SnapshotError::Checksum)));
        let mut encoded = encode(&sample(7));
        let mut payload = encoded.payload.to_vec();
        let last = payload.len() - 1;
        payload[last] ^= 0xff;
        encoded.payload = payload.into();
        assert!(decode(&encoded).is_err());
        let mut encoded = encode(&sample(7));
        encoded.uncompressed_size = MAX_SNAPSHOT_BYTES + 1;
        assert!(matches!(decode(&encoded), Err(SnapshotError::TooLarge(_))));
    }

    #[test]
    fn the_content_digest_ignores_the_version() {
        assert_eq!(content_digest(&sample(1)), content_digest(&sample(2)));
        let mut other = sample(1);
        other.stages.pop();
        assert_ne!(content_digest(&sample(1)), content_digest(&other));
    }

    /// A snapshot whose deployment has a model of many properties.
    fn with_model(property: &str) -> ConfigSnapshot {
        use pylon_proto::config::v1::{Api, Deployment};
        use pylon_proto::wkt::{Struct, Value};
        let properties: Struct = (0..32)
            .map(|i| (format!("{property}{i}"), Value::from("string")))
            .collect();
        let schema: Struct = [("properties".to_owned(), Value::from(properties))]
            .into_iter()
            .collect();
        let mut snapshot = sample(1);
        snapshot.stages[0].deployment = Some(Deployment {
            definition: Some(Api {
                name: "pets".into(),
                models: [("Pet".to_owned(), schema)].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        snapshot
    }

    #[test]
    fn the_content_digest_of_a_model_is_the_same_on_every_decoding() {
        let encoded = encode(&with_model("field"));
        let first = decode(&encoded).expect("decodes");
        for _ in 0..8 {
            let again = decode(&encoded).expect("decodes");
            assert_eq!(content_digest(&again), content_digest(&first));
            assert_eq!(canonical_form(&again), canonical_form(&first));
        }
        assert_ne!(content_digest(&with_model("other")), content_digest(&first));
    }
}
