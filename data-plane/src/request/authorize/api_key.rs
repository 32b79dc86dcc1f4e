//! API keys: `x-api-key` must be an enabled key of a usage plan attached to
//! the stage. Keys are known only by their SHA-256; the presented key is
//! hashed and looked up by that digest, so lookup time depends on the
//! digest, never on how much of a real key a guess shares.

use crate::config::{CompiledStage, StageKey};
use crate::context::RequestContext;
use crate::error::GatewayError;
use http::HeaderMap;
use sha2::{Digest, Sha256};

pub const HEADER: &str = "x-api-key";

pub fn check<'s>(
    stage: &'s CompiledStage,
    headers: &HeaderMap,
    ctx: &mut RequestContext,
) -> Result<&'s StageKey, GatewayError> {
    let presented = headers
        .get(HEADER)
        .filter(|v| !v.is_empty())
        .ok_or(GatewayError::InvalidApiKey("no API key"))?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    match stage.api_keys.get(&digest) {
        Some(key) if key.enabled => {
            ctx.identity.api_key_id = Some(key.id.clone());
            Ok(key)
        }
        Some(_) => Err(GatewayError::InvalidApiKey("API key disabled")),
        None => Err(GatewayError::InvalidApiKey(
            "API key unknown or not in a usage plan of this stage",
        )),
    }
}
