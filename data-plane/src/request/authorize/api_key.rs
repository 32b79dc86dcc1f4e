//! API keys: `x-api-key` must be an enabled key of a usage plan attached to
//! the stage. Keys are known only by their SHA-256; the presented key is
//! hashed and looked up by that digest, so lookup time depends on the
//! digest, never on how much of a real key a guess shares. A request with
//! more than one `x-api-key` line is refused: a backend could read another
//! line than the one checked.

use crate::config::{CompiledStage, PresentedKey, StageKey};
use crate::context::RequestContext;
use crate::error::GatewayError;
use http::HeaderMap;

pub fn check<'s>(
    stage: &'s CompiledStage,
    headers: &HeaderMap,
    ctx: &mut RequestContext,
) -> Result<&'s StageKey, GatewayError> {
    let presented = match crate::config::presented_key(headers) {
        PresentedKey::One(presented) => presented,
        PresentedKey::Absent => return Err(GatewayError::InvalidApiKey("no API key")),
        PresentedKey::Several => return Err(GatewayError::InvalidApiKey("more than one API key")),
    };
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
