//! API keys: `x-api-key` must be an enabled key of a usage plan attached to
//! the stage. Keys are known only by their SHA-256; the presented key is
//! hashed and looked up by that digest, so lookup time depends on the
//! digest, never on how much of a real key a guess shares.

use crate::config::{CompiledStage, StageKey};
use crate::context::RequestContext;
use crate::error::GatewayError;
use http::HeaderMap;

pub const HEADER: &str = crate::config::API_KEY_HEADER;

pub fn check<'s>(
    stage: &'s CompiledStage,
    headers: &HeaderMap,
    ctx: &mut RequestContext,
) -> Result<&'s StageKey, GatewayError> {
    let presented = headers
        .get(HEADER)
        .filter(|v| !v.is_empty())
        .ok_or(GatewayError::InvalidApiKey("no API key"))?;
    match stage.api_key_presented(presented) {
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
