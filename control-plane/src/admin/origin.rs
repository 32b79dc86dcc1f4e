//! Where an admin write comes from: the caller's credential and the method,
//! for the audit log, and the caller's `idempotency-key`, with a digest of
//! the request it came with, so a retried write is recognised.
//!
//! The key travels as gRPC metadata (`idempotency-key: <1–128 visible ASCII
//! characters>`, after the IETF `Idempotency-Key` HTTP header draft); the
//! digest is SHA-256 over the method name and the request message's protobuf
//! encoding (deterministic: every map is a `BTreeMap`), so the same request
//! sent to any node gives the same digest.

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
    pub fn of<T: Message>(request: &Request<T>) -> Result<Origin, Status> {
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
            hasher.update(request.get_ref().encode_to_vec());
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
