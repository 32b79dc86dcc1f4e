//! JWT authorizers (the Cognito/OIDC equivalent).
//!
//! The token's algorithm must be one the authorizer pins (so `none` and
//! RS/HS confusion never verify); its key comes from the issuer's JWKS by
//! `kid`. Keys are cached per JWKS (or discovery) URL for the whole node,
//! across config versions: refreshed when older than [`MAX_KEY_AGE`], and on
//! an unknown `kid` at most once per [`MIN_REFRESH_INTERVAL`], so a flood of
//! made-up key ids cannot turn into a flood of fetches.
//!
//! Verified tokens are remembered ([`TokenCache`]) under the SHA-256 of the
//! token and the authorizer's settings until their `exp`, for at most
//! [`MAX_TOKEN_CACHE`]: a client sending the same token again costs a hash,
//! not an RSA verification. Scopes are checked per route on every request.

use crate::config::auth::{JWKS_TIMEOUT, JwtSettings, KeySource};
use crate::error::GatewayError;
use crate::integration::http::{Client, fetch};
use crate::request::authorize::AuthorizerError;
use http::{Request, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const MAX_KEY_AGE: Duration = Duration::from_secs(600);
/// The longest a verified token is trusted without verifying it again (a
/// key the issuer withdraws stops working within this time).
pub const MAX_TOKEN_CACHE: Duration = Duration::from_secs(300);
const MAX_CACHED_TOKENS: u64 = 100_000;
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The clock skew `exp` and `nbf` tolerate.
pub const LEEWAY_SECONDS: u64 = 30;
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Signing keys by source, shared by every authorizer naming that source.
#[derive(Default)]
pub struct KeyCache {
    sets: Mutex<HashMap<KeySource, Arc<KeySet>>>,
}

#[derive(Default)]
struct KeySet {
    state: RwLock<KeyState>,
    /// One fetch at a time per source.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    keys: Vec<CachedKey>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

#[derive(Clone)]
struct CachedKey {
    kid: Option<String>,
    algorithm: Option<String>,
    key: DecodingKey,
}

impl KeySet {
    fn lookup(&self, kid: Option<&str>, max_age: Option<Duration>) -> Option<CachedKey> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let fresh = state
            .fetched
            .is_some_and(|at| max_age.is_none_or(|max| at.elapsed() < max));
        if !fresh {
            return None;
        }
        match kid {
            Some(kid) => state.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            // No kid: only unambiguous with a single key.
            None if state.keys.len() == 1 => state.keys.first().cloned(),
            None => None,
        }
    }
}

impl KeyCache {
    fn set(&self, source: &KeySource) -> Arc<KeySet> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entry(source.clone()).or_default().clone()
    }

    /// The key for `kid`; `Ok(None)` when the source has no such key.
    async fn key(
        &self,
        client: &Client,
        source: &KeySource,
        kid: Option<&str>,
    ) -> Result<Option<CachedKey>, AuthorizerError> {
        let set = self.set(source);
        if let Some(key) = set.lookup(kid, Some(MAX_KEY_AGE)) {
            return Ok(Some(key));
        }
        let _one_fetch = set.refresh.lock().await;
        if let Some(key) = set.lookup(kid, Some(MAX_KEY_AGE)) {
            return Ok(Some(key));
        }
        let recently = {
            let state = set.state.read().unwrap_or_else(|e| e.into_inner());
            state
                .attempted
                .is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL)
        };
        if recently {
            return Ok(set.lookup(kid, None));
        }
        set.state.write().unwrap_or_else(|e| e.into_inner()).attempted = Some(Instant::now());
        // Boxed: a fetch is rare, and its future would otherwise make every
        // request's future larger.
        match Box::pin(fetch_keys(client, source)).await {
            Ok(keys) => {
                tracing::info!(source = ?source, keys = keys.len(), "fetched JWKS");
                let mut state = set.state.write().unwrap_or_else(|e| e.into_inner());
                state.keys = keys;
                state.fetched = Some(Instant::now());
                drop(state);
                Ok(set.lookup(kid, None))
            }
            Err(why) => {
                tracing::warn!(source = ?source, error = %crate::error::error_chain(&why), "JWKS fetch failed; keeping the keys already known");
                let known = set
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .fetched
                    .is_some();
                if known {
                    Ok(set.lookup(kid, None))
                } else {
                    Err(why)
                }
            }
        }
    }
}

async fn get_json(client: &Client, uri: &Uri) -> Result<Value, AuthorizerError> {
    let mut request = Request::new(crate::full_body(bytes::Bytes::new()));
    *request.uri_mut() = uri.clone();
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let fetched = fetch(client, request, JWKS_TIMEOUT, MAX_JWKS_BYTES)
        .await
        .map_err(|source| AuthorizerError::Fetch {
            uri: uri.to_string(),
            source,
        })?;
    if !fetched.status.is_success() {
        return Err(AuthorizerError::Status {
            uri: uri.to_string(),
            status: fetched.status,
        });
    }
    serde_json::from_slice(&fetched.body).map_err(|source| AuthorizerError::NotJson {
        uri: uri.to_string(),
        source,
    })
}

async fn fetch_keys(client: &Client, source: &KeySource) -> Result<Vec<CachedKey>, AuthorizerError> {
    let jwks_uri: Uri = match source {
        KeySource::Jwks(uri) => uri.clone(),
        KeySource::Discovery(uri) => {
            let document = get_json(client, uri).await?;
            let invalid = |what| AuthorizerError::Invalid {
                uri: uri.to_string(),
                what,
            };
            let jwks_uri: Uri = document
                .get("jwks_uri")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("no jwks_uri in the discovery document"))?
                .parse()
                .map_err(|_| invalid("the discovery document's jwks_uri is not a URI"))?;
            // As the admin API judges a configured `jwks_uri`: an absolute
            // http(s) URL, no userinfo (it would be printed in errors).
            let absolute = matches!(jwks_uri.scheme_str(), Some("http" | "https"));
            match jwks_uri.authority() {
                Some(authority) if absolute && !authority.as_str().contains('@') => jwks_uri,
                _ => {
                    return Err(invalid(
                        "the discovery document's jwks_uri is not an http(s) URL with a host and no userinfo",
                    ));
                }
            }
        }
    };
    let document = get_json(client, &jwks_uri).await?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| AuthorizerError::Invalid {
            uri: jwks_uri.to_string(),
            what: "no \"keys\" array",
        })?;
    // Keys of kinds we cannot use are skipped, not fatal.
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(CachedKey {
                kid: jwk.common.key_id.clone(),
                algorithm: jwk.common.key_algorithm.map(|a| a.to_string()),
                key,
            })
        })
        .collect())
}

/// Tokens that verified, with their claims.
pub struct TokenCache {
    cache: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
}

struct VerifiedToken {
    claims: Map<String, Value>,
    /// `exp`, or sooner.
    until: Instant,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_TOKENS)
                .time_to_live(MAX_TOKEN_CACHE)
                .build(),
        }
    }
}

fn token_key(settings: &JwtSettings, token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let source = match &settings.keys {
        KeySource::Jwks(uri) | KeySource::Discovery(uri) => uri.to_string(),
    };
    let algorithms = format!("{:?}", settings.algorithms);
    for part in [settings.issuer.as_str(), &source, &algorithms]
        .into_iter()
        .chain(settings.audiences.iter().map(String::as_str))
        .chain([token])
    {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Verifies `token` for `settings` (or finds it verified), checks the
/// route's `scopes`, and returns its claims.
pub async fn verify(
    cache: &KeyCache,
    tokens: &TokenCache,
    client: &Client,
    settings: &JwtSettings,
    scopes: &[String],
    token: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let key = token_key(settings, token);
    let claims = match tokens
        .cache
        .get(&key)
        .filter(|entry| entry.until > Instant::now())
    {
        Some(entry) => entry.claims.clone(),
        None => {
            let claims = verify_signed(cache, client, settings, token).await?;
            let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
            let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
            let until = Instant::now() + Duration::from_secs(left).min(MAX_TOKEN_CACHE);
            tokens.cache.insert(
                key,
                Arc::new(VerifiedToken {
                    claims: claims.clone(),
                    until,
                }),
            );
            claims
        }
    };
    if !scopes.is_empty()
        && !crate::context::token_scopes(&claims).any(|s| scopes.iter().any(|want| want == s))
    {
        return Err(GatewayError::Forbidden {
            reason: "insufficient scope".into(),
            insufficient_scope: true,
        });
    }
    Ok(claims)
}

/// The full check: algorithm, key, signature, time, issuer, audience.
async fn verify_signed(
    cache: &KeyCache,
    client: &Client,
    settings: &JwtSettings,
    token: &str,
) -> Result<Map<String, Value>, GatewayError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| unauthorized("malformed token or unsupported algorithm"))?;
    if !settings.algorithms.contains(&header.alg) {
        return Err(unauthorized("algorithm not allowed"));
    }
    let key = cache
        .key(client, &settings.keys, header.kid.as_deref())
        .await
        .map_err(GatewayError::AuthorizerFailure)?
        .ok_or_else(|| unauthorized("unknown signing key"))?;
    if key
        .algorithm
        .as_ref()
        .is_some_and(|alg| *alg != algorithm_name(header.alg))
    {
        return Err(unauthorized("the key is not for this algorithm"));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.validate_aud = false; // checked below, with client_id as AWS does
    validation.set_issuer(&[&settings.issuer]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => GatewayError::ExpiredToken,
            ErrorKind::InvalidSignature => GatewayError::InvalidSignature,
            ErrorKind::InvalidIssuer => unauthorized("wrong issuer"),
            ErrorKind::MissingRequiredClaim(claim) => unauthorized(&format!("no {claim} claim")),
            _ => unauthorized("invalid token"),
        })?
        .claims;
    check_audience(&claims, &settings.audiences).map_err(unauthorized)?;
    Ok(claims)
}

fn unauthorized(reason: &str) -> GatewayError {
    GatewayError::Unauthorized {
        reason: reason.to_owned(),
    }
}

/// The JOSE name of an algorithm (`RS256`), as a JWK's `alg` spells it.
fn algorithm_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

/// `aud` must name one of the audiences; only a token without `aud` is
/// checked by `client_id` (as AWS does for access tokens).
fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), &'static str> {
    let matches = |v: &Value| v.as_str().is_some_and(|s| audiences.iter().any(|a| a == s));
    match claims.get("aud") {
        Some(Value::Array(list)) if list.iter().any(matches) => Ok(()),
        Some(aud @ Value::String(_)) if matches(aud) => Ok(()),
        Some(_) => Err("wrong audience"),
        None => match claims.get("client_id") {
            Some(id) if matches(id) => Ok(()),
            _ => Err("wrong audience"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn audience_is_checked_and_client_id_only_without_aud() {
        let auds = ["api".to_owned()];
        assert!(check_audience(&claims(serde_json::json!({"aud": "api"})), &auds).is_ok());
        assert!(check_audience(&claims(serde_json::json!({"aud": ["x", "api"]})), &auds).is_ok());
        assert!(
            check_audience(
                &claims(serde_json::json!({"aud": "other", "client_id": "api"})),
                &auds
            )
            .is_err()
        );
        assert!(check_audience(&claims(serde_json::json!({"client_id": "api"})), &auds).is_ok());
        assert!(check_audience(&claims(serde_json::json!({})), &auds).is_err());
    }

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let c = claims(serde_json::json!({"scope": "read write", "scp": ["admin"]}));
        let all: Vec<&str> = crate::context::token_scopes(&c).collect();
        assert_eq!(all, ["read", "write", "admin"]);
    }
}
