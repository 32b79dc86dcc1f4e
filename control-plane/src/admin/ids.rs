//! Ids and secrets chosen by the proposer (never inside the state machine).

use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

/// A unique id for one proposal, so the node that proposed it can answer it.
pub fn request_id(node: u64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{node}-{}-{}", random(8), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn deployment_id() -> String {
    random(10)
}

pub fn api_key_id() -> String {
    random(10)
}

/// A new API key: 40 random alphanumeric characters (case kept).
pub fn api_key_value() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Keys are stored and shipped only as SHA-256 hex digests.
pub fn hash_api_key(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}
