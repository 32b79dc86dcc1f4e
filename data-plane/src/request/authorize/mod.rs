//! Authentication and authorization, per route: the route's authorizer (JWT
//! or request authorizer) first, then its API-key requirement, as AWS orders
//! them. What they learn (principal, claims, context, key id) goes into
//! [`RequestContext`] for mappings and templates.

pub mod api_key;
pub mod jwt;
pub mod request_authorizer;

use crate::Gateway;
use crate::config::auth::{AuthorizerKind, IdentitySource, RouteAuth};
use crate::config::{CompiledStage, StageKey};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::inputs::Inputs;
use serde_json::Value;
use sha2::Digest as _;

/// Why an authorizer (a request authorizer's endpoint, a JWKS or discovery
/// document) gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error("calling {uri}")]
    Fetch {
        uri: String,
        #[source]
        source: crate::integration::http::FetchError,
    },
    #[error("{uri} answered {status}")]
    Status { uri: String, status: http::StatusCode },
    #[error("{uri} answered something that is not JSON")]
    NotJson {
        uri: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{uri}: {what}")]
    Invalid { uri: String, what: &'static str },
}

/// Node-wide authorizer state that outlives config versions.
#[derive(Default)]
pub struct Authorizers {
    pub keys: jwt::KeyCache,
    pub tokens: jwt::TokenCache,
    pub decisions: request_authorizer::DecisionCache,
}

/// Authenticates and authorizes; returns the API key when the route
/// required one (its usage plan's limits apply next).
pub async fn run<'s>(
    gateway: &Gateway,
    stage: &'s CompiledStage,
    auth: &RouteAuth,
    inputs: &Inputs<'_>,
    ctx: &mut RequestContext,
) -> Result<Option<&'s StageKey>, GatewayError> {
    if let Some(authorizer) = &auth.authorizer {
        match &authorizer.kind {
            AuthorizerKind::Jwt(settings) => {
                let token =
                    bearer_token(&settings.identity, inputs, ctx).ok_or(GatewayError::MissingCredential)?;
                let claims = jwt::verify(
                    &gateway.authorizers.keys,
                    &gateway.authorizers.tokens,
                    gateway.upstreams.client(),
                    settings,
                    &auth.scopes,
                    &token,
                )
                .await?;
                ctx.authorizer.principal_id = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
                ctx.identity.caller = Some(sha2::Sha256::digest(token.as_bytes()).into());
                ctx.authorizer.claims = Some(claims);
            }
            AuthorizerKind::Request(settings) => {
                request_authorizer::authorize(
                    &gateway.authorizers.decisions,
                    gateway.upstreams.client(),
                    &authorizer.name,
                    settings,
                    inputs,
                    ctx,
                )
                .await?
            }
        }
    }
    if auth.api_key_required {
        return api_key::check(stage, &inputs.parts.headers, ctx).map(Some);
    }
    Ok(None)
}

/// The token from the identity source, without a `Bearer ` prefix; `None`
/// when the source header comes on more than one line (RFC 9110 §11.6.2:
/// `Authorization` is a single credential).
fn bearer_token(source: &IdentitySource, inputs: &Inputs<'_>, ctx: &RequestContext) -> Option<String> {
    let sources = std::slice::from_ref(source);
    let value = request_authorizer::identity_values(sources, inputs, ctx, true)?.pop()?;
    let token = match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim().to_owned(),
        _ => value.trim().to_owned(),
    };
    (!token.is_empty()).then_some(token)
}
