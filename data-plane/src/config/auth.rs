//! Authorizers and each route's authorization, parsed once per snapshot.

use http::{HeaderName, Uri};
use jsonwebtoken::Algorithm;
use pylon_proto::config::v1::{Authorization, Authorizer, authorization, authorizer};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// AWS's JWKS fetch timeout.
pub const JWKS_TIMEOUT: Duration = Duration::from_millis(1500);
const DEFAULT_RESULT_TTL: u32 = 300;
const DEFAULT_AUTHORIZER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a credential is read from.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentitySource {
    Header(HeaderName),
    Query(String),
    /// A `$context.*` value, e.g. `identity.sourceIp`.
    Context(String),
    StageVariable(String),
}

impl IdentitySource {
    pub fn parse(source: &str) -> Result<IdentitySource, String> {
        if let Some(name) = source.strip_prefix("$request.header.") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(IdentitySource::Header)
                .map_err(|e| format!("{source}: {e}"));
        }
        if let Some(name) = source.strip_prefix("$request.querystring.") {
            return Ok(IdentitySource::Query(name.to_owned()));
        }
        if let Some(name) = source.strip_prefix("$context.") {
            return Ok(IdentitySource::Context(name.to_owned()));
        }
        if let Some(name) = source.strip_prefix("$stageVariables.") {
            return Ok(IdentitySource::StageVariable(name.to_owned()));
        }
        Err(format!("{source}: not an identity source"))
    }
}

#[derive(Debug)]
pub struct CompiledAuthorizer {
    pub name: String,
    pub kind: AuthorizerKind,
}

#[derive(Debug)]
pub enum AuthorizerKind {
    Jwt(JwtSettings),
    Request(RequestSettings),
}

/// Where a JWT authorizer's signing keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    Jwks(Uri),
    /// An OpenID Connect discovery document naming the `jwks_uri`.
    Discovery(Uri),
}

#[derive(Debug)]
pub struct JwtSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// Pinned: a token whose header names another algorithm is refused.
    pub algorithms: Vec<Algorithm>,
    pub identity: IdentitySource,
}

#[derive(Debug)]
pub struct RequestSettings {
    pub uri: Uri,
    pub identity_sources: Vec<IdentitySource>,
    /// Zero: decisions are not cached.
    pub ttl: Duration,
    pub timeout: Duration,
}

/// What a route demands before its integration runs.
#[derive(Debug, Default)]
pub struct RouteAuth {
    pub authorizer: Option<Arc<CompiledAuthorizer>>,
    /// JWT: the token must carry at least one of these (none: no scope check).
    pub scopes: Vec<String>,
    pub api_key_required: bool,
}

impl RouteAuth {
    /// Whether the route's authorizer reads request header `name` as its
    /// identity (the token, an identity source): once the route ran, that
    /// header's value was verified.
    pub fn verifies(&self, name: &http::HeaderName) -> bool {
        let Some(authorizer) = &self.authorizer else {
            return false;
        };
        let is = |source: &IdentitySource| matches!(source, IdentitySource::Header(h) if h == name);
        match &authorizer.kind {
            AuthorizerKind::Jwt(settings) => is(&settings.identity),
            AuthorizerKind::Request(settings) => settings.identity_sources.iter().any(is),
        }
    }
}

pub fn compile_authorizers(
    authorizers: &[Authorizer],
) -> Result<HashMap<String, Arc<CompiledAuthorizer>>, String> {
    let mut out = HashMap::new();
    for (i, authorizer) in authorizers.iter().enumerate() {
        let at = |e: String| format!("authorizers[{i}].{e}");
        let kind = match &authorizer.kind {
            Some(authorizer::Kind::Jwt(jwt)) => {
                let keys = if jwt.jwks_uri.is_empty() {
                    KeySource::Discovery(
                        parse_uri(&jwt.discovery_url).map_err(|e| at(format!("jwt.discovery_url: {e}")))?,
                    )
                } else {
                    KeySource::Jwks(parse_uri(&jwt.jwks_uri).map_err(|e| at(format!("jwt.jwks_uri: {e}")))?)
                };
                let algorithms = jwt
                    .algorithms
                    .iter()
                    .map(|a| Algorithm::from_str(a).map_err(|e| at(format!("jwt.algorithms: {a}: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let identity = if jwt.identity_source.is_empty() {
                    IdentitySource::Header(http::header::AUTHORIZATION)
                } else {
                    IdentitySource::parse(&jwt.identity_source)
                        .map_err(|e| at(format!("jwt.identity_source: {e}")))?
                };
                AuthorizerKind::Jwt(JwtSettings {
                    issuer: jwt.issuer.clone(),
                    audiences: jwt.audiences.clone(),
                    keys,
                    algorithms,
                    identity,
                })
            }
            Some(authorizer::Kind::Request(request)) => AuthorizerKind::Request(RequestSettings {
                uri: parse_uri(&request.uri).map_err(|e| at(format!("request.uri: {e}")))?,
                identity_sources: request
                    .identity_sources
                    .iter()
                    .map(|s| IdentitySource::parse(s))
                    .collect::<Result<_, _>>()
                    .map_err(|e| at(format!("request.identity_sources: {e}")))?,
                ttl: Duration::from_secs(u64::from(
                    request.result_ttl_seconds.unwrap_or(DEFAULT_RESULT_TTL),
                )),
                timeout: match request.timeout_ms {
                    0 => DEFAULT_AUTHORIZER_TIMEOUT,
                    ms => Duration::from_millis(u64::from(ms)),
                },
            }),
            None => return Err(at("kind: missing".into())),
        };
        out.insert(
            authorizer.name.clone(),
            Arc::new(CompiledAuthorizer {
                name: authorizer.name.clone(),
                kind,
            }),
        );
    }
    Ok(out)
}

pub fn compile_route_auth(
    authorization: Option<&Authorization>,
    authorizers: &HashMap<String, Arc<CompiledAuthorizer>>,
) -> Result<RouteAuth, String> {
    let Some(authorization) = authorization else {
        return Ok(RouteAuth::default());
    };
    let authorizer = match authorization.r#type() {
        authorization::Type::None => None,
        authorization::Type::Jwt | authorization::Type::Request => Some(
            authorizers
                .get(&authorization.authorizer)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "authorization.authorizer: no authorizer {:?}",
                        authorization.authorizer
                    )
                })?,
        ),
    };
    Ok(RouteAuth {
        authorizer,
        scopes: authorization.scopes.clone(),
        api_key_required: authorization.api_key_required,
    })
}

fn parse_uri(uri: &str) -> Result<Uri, String> {
    let parsed: Uri = uri.parse().map_err(|e| format!("{e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.authority().is_none() {
        return Err(format!("{uri} is not an absolute http(s) URL"));
    }
    Ok(parsed)
}
