//! Request authorizers (the Lambda-authorizer equivalent): the gateway POSTs
//! the request's identity sources and context to an HTTP endpoint, which
//! answers `{"isAuthorized": bool, "principalId": "...", "context": {...}}`.
//!
//! Decisions, allow and deny, are cached for the authorizer's TTL under a key
//! made of the API, stage, authorizer, **route** and identity-source values:
//! a decision made for `GET /pets` never answers for `DELETE /pets/{id}`.

use crate::config::auth::{IdentitySource, RequestSettings};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::integration::http::{Client, fetch};
use crate::request::authorize::AuthorizerError;
use crate::request::inputs::Inputs;
use http::{Request, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_CACHED_DECISIONS: u64 = 100_000;

#[derive(Debug)]
pub struct Decision {
    pub allow: bool,
    pub principal_id: Option<String>,
    pub context: Map<String, Value>,
    expires: Instant,
}

/// Decisions of every request authorizer on this node.
pub struct DecisionCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Decision>>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_DECISIONS)
                // The longest TTL allowed; each entry also carries its own.
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }
}

/// The identity-source values, or `None` when one is missing (AWS answers
/// 401 without calling the authorizer), is a header with a line that is
/// not ASCII text ([`Inputs::credential`]), or is a query parameter whose
/// percent-encoding is not UTF-8. With `single`, a header source
/// sent on more than one line is missing too.
pub fn identity_values(
    sources: &[IdentitySource],
    inputs: &Inputs<'_>,
    ctx: &RequestContext,
    single: bool,
) -> Option<Vec<String>> {
    sources
        .iter()
        .map(|source| {
            let value = match source {
                IdentitySource::Header(name) => inputs.credential(name.as_str(), single),
                // A value whose percent-encoding is not UTF-8 would reach
                // the authorizer altered (U+FFFD) and the backend as sent.
                IdentitySource::Query(name) => inputs.query(name).filter(|v| !v.contains('\u{FFFD}')),
                IdentitySource::Context(name) => ctx.lookup(name).map(|v| v.into_owned()),
                IdentitySource::StageVariable(name) => inputs.variables.get(name).cloned(),
            };
            value.filter(|v| !v.is_empty())
        })
        .collect()
}

pub async fn authorize(
    cache: &DecisionCache,
    client: &Client,
    name: &str,
    settings: &RequestSettings,
    inputs: &Inputs<'_>,
    ctx: &mut RequestContext,
) -> Result<(), GatewayError> {
    let values = identity_values(&settings.identity_sources, inputs, ctx, false)
        .ok_or(GatewayError::MissingCredential)?;
    let key = cache_key(ctx, name, settings, &values);
    ctx.identity.caller = Some(key);
    let cached = (!settings.ttl.is_zero())
        .then(|| cache.cache.get(&key))
        .flatten()
        .filter(|d| d.expires > Instant::now());
    let decision = match cached {
        Some(decision) => decision,
        None => {
            // Boxed: only a decision the cache lacks makes the call, and its
            // future would otherwise make every request's future larger.
            let decision = Arc::new(Box::pin(call(client, settings, inputs, ctx, &values)).await?);
            if !settings.ttl.is_zero() {
                cache.cache.insert(key, decision.clone());
            }
            decision
        }
    };
    if !decision.allow {
        return Err(GatewayError::Forbidden {
            reason: format!("request authorizer {name} denied"),
            insufficient_scope: false,
        });
    }
    ctx.authorizer.principal_id = decision.principal_id.clone();
    ctx.authorizer.context = decision.context.clone();
    Ok(())
}

fn cache_key(ctx: &RequestContext, name: &str, settings: &RequestSettings, values: &[String]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [
        &*ctx.api_id,
        &*ctx.stage,
        name,
        &settings.uri.to_string(),
        ctx.route_key.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .chain(values.iter().map(String::as_str))
    {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

async fn call(
    client: &Client,
    settings: &RequestSettings,
    inputs: &Inputs<'_>,
    ctx: &RequestContext,
    values: &[String],
) -> Result<Decision, GatewayError> {
    let event = json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeKey": ctx.route_key,
        "rawPath": ctx.uri.path(),
        "rawQueryString": inputs.parts.uri.query().unwrap_or(""),
        "identitySource": values,
        "headers": inputs.headers_json().0,
        "queryStringParameters": inputs.query_json(),
        "pathParameters": inputs.params_json(),
        "stageVariables": inputs.variables,
        "requestContext": ctx.to_value(),
    });
    let uri = || settings.uri.to_string();
    let mut request = Request::new(crate::full_body(event.to_string()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = settings.uri.clone();
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    request
        .headers_mut()
        .insert("x-pylon-request-id", ctx.request_id.header_value());
    let started = Instant::now();
    let fetched = fetch(client, request, settings.timeout, MAX_RESPONSE_BYTES)
        .await
        .map_err(|source| GatewayError::AuthorizerFailure(AuthorizerError::Fetch { uri: uri(), source }))?;
    if !fetched.status.is_success() {
        return Err(GatewayError::AuthorizerFailure(AuthorizerError::Status {
            uri: uri(),
            status: fetched.status,
        }));
    }
    let answer: Value = serde_json::from_slice(&fetched.body).map_err(|source| {
        GatewayError::AuthorizerConfiguration(AuthorizerError::NotJson { uri: uri(), source })
    })?;
    let allow = answer
        .get("isAuthorized")
        .and_then(Value::as_bool)
        .ok_or_else(|| {
            GatewayError::AuthorizerConfiguration(AuthorizerError::Invalid {
                uri: uri(),
                what: "no boolean isAuthorized",
            })
        })?;
    tracing::debug!(uri = %settings.uri, allow, took_ms = started.elapsed().as_millis() as u64, "request authorizer decided");
    Ok(Decision {
        allow,
        principal_id: answer
            .get("principalId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        context: answer
            .get("context")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        expires: Instant::now() + settings.ttl,
    })
}
