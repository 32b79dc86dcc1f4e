//! Which API stage a request addresses: `{api}.{base-domain}/{stage}/{path}`,
//! or a custom domain's base-path mapping.

use crate::config::{CompiledConfig, CompiledStage};
use crate::error::GatewayError;
use std::sync::Arc;

/// The stage and the path within it (always starting with '/').
pub fn resolve<'p>(
    config: &CompiledConfig,
    base_domain: &str,
    host: &str,
    path: &'p str,
) -> Result<(Arc<CompiledStage>, &'p str), GatewayError> {
    // A custom domain wins, even one under the base domain.
    if config.has_domain(host) {
        let (stage, rest) = config.domain_stage(host, path).ok_or(GatewayError::NoRoute)?;
        let rest = if rest.is_empty() { "/" } else { rest };
        return Ok((stage.clone(), rest));
    }
    if let Some(api) = host
        .strip_suffix(base_domain)
        .and_then(|h| h.strip_suffix('.'))
        .filter(|api| !api.is_empty() && !api.contains('.'))
    {
        if !config.has_api(api) {
            return Err(GatewayError::UnknownApi);
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        let (stage, rest) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let stage = config.stage(api, stage).ok_or(GatewayError::NoRoute)?;
        return Ok((stage.clone(), rest));
    }
    Err(GatewayError::UnknownApi)
}
