//! Where an admin write comes from: the caller's credential and the method,
//! for the audit log, and the caller's `idempotency-key`, with a digest of
//! the request it came with, so a retried write is recognised.
//!
//! The key travels as gRPC metadata (`idempotency-key: <1–128 visible ASCII
//! characters>`, after the IETF `Idempotency-Key` HTTP header draft); the
//! digest is SHA-256 over the method name and the request message's canonical
//! JSON form (object keys sorted), so the same request sent to any node gives
//! the same digest. Not its protobuf encoding: a model's schema is a
//! `google.protobuf.Struct`, a `HashMap` whose keys are encoded in an order
//! that differs with each decoding of the same bytes.

use super::super::access::{CalledMethod, Caller};
use super::super::state::history::MAX_IDEMPOTENCY_KEY;
use prost::Message;
use pylon_proto::raft::v1::Actor;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

/// The metadata key a caller sends its idempotency key in.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Who makes a write, through which method, and how to know its retry.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub actor: Actor,
    pub method: String,
    pub idempotency_key: String,
    pub request_digest: Vec<u8>,
}

impl Origin {
    /// Reads the caller (set by the access layer), the method and the key.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming `idempotency-key` when it is empty, longer
    /// than 128 characters or not visible ASCII.
    pub fn of<T: Message + serde::Serialize>(request: &Request<T>) -> Result<Origin, Status> {
        let actor = match request.extensions().get::<Caller>() {
            Some(caller) => Actor {
                name: caller.name.to_string(),
                roles: caller.roles().iter().map(|r| r.as_str().to_owned()).collect(),
            },
            // No credentials configured: an open loopback node.
            None => Actor {
                name: "anonymous".to_owned(),
                roles: Vec::new(),
            },
        };
        let method = request
            .extensions()
            .get::<CalledMethod>()
            .map(|m| m.0.to_string())
            .unwrap_or_default();
        if request.metadata().get_all(IDEMPOTENCY_KEY).iter().count() > 1 {
            return Err(Status::invalid_argument(format!(
                "{IDEMPOTENCY_KEY}: sent more than once"
            )));
        }
        let idempotency_key = match request.metadata().get(IDEMPOTENCY_KEY) {
            None => String::new(),
            Some(value) => {
                let key = value.to_str().unwrap_or("");
                if key.is_empty()
                    || key.len() > MAX_IDEMPOTENCY_KEY
                    || !key.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(Status::invalid_argument(format!(
                        "{IDEMPOTENCY_KEY}: must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    )));
                }
                key.to_owned()
            }
        };
        let request_digest = if idempotency_key.is_empty() {
            Vec::new()
        } else {
            let mut hasher = Sha256::new();
            hasher.update(method.as_bytes());
            hasher.update([0]);
            hasher.update(pylon_common::snapshot::canonical_form(request.get_ref()));
            hasher.finalize().to_vec()
        };
        Ok(Origin {
            actor,
            method,
            idempotency_key,
            request_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::admin::v1::CreateApiRequest;
    use pylon_proto::config::v1::Api;

    /// A request as a client sends it, decoded afresh as the server does.
    fn received(bytes: &[u8]) -> Request<CreateApiRequest> {
        let mut request = Request::new(CreateApiRequest::decode(bytes).expect("decodes"));
        request
            .metadata_mut()
            .insert(IDEMPOTENCY_KEY, "create-pets".parse().expect("ascii"));
        request
    }

    #[test]
    fn a_retried_request_with_a_model_has_the_digest_of_the_first() {
        let properties: pylon_proto::wkt::Struct = (0..32)
            .map(|i| {
                (
                    format!("field{i}"),
                    pylon_proto::wkt::Value::from(format!("v{i}")),
                )
            })
            .collect();
        let schema: pylon_proto::wkt::Struct =
            [("properties".to_owned(), pylon_proto::wkt::Value::from(properties))]
                .into_iter()
                .collect();
        let api = Api {
            name: "pets".to_owned(),
            models: [("Pet".to_owned(), schema)].into_iter().collect(),
            ..Api::default()
        };
        let sent = CreateApiRequest { api: Some(api) }.encode_to_vec();
        let first = Origin::of(&received(&sent)).expect("origin");
        for _ in 0..8 {
            let retry = Origin::of(&received(&sent)).expect("origin");
            assert_eq!(retry.request_digest, first.request_digest);
        }
        let mut other = CreateApiRequest::decode(&sent[..]).expect("decodes");
        if let Some(api) = other.api.as_mut() {
            api.name = "cats".to_owned();
        }
        let other = Origin::of(&received(&other.encode_to_vec())).expect("origin");
        assert_ne!(other.request_digest, first.request_digest);
    }
}
