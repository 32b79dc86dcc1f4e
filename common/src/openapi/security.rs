//! Security schemes → API keys and authorizers; an operation's `security`
//! → its route's authorization.
//!
//! | AWS | Pylon |
//! |---|---|
//! | `apiKey` scheme (`x-api-key` header), no authorizer | `api_key_required` |
//! | authorizer `jwt` (HTTP APIs) | JWT authorizer (issuer, audiences, discovery) |
//! | authorizer `cognito_user_pools` | JWT authorizer with the pool's issuer and JWKS |
//! | authorizer `token` / `request` (Lambda) | request authorizer calling `--lambda-url FUNCTION=URL` |
//! | `x-amazon-apigateway-auth: AWS_IAM`, `awsSigv4` | refused |

use super::{Dialect, Document, Report, operation::lambda_function};
use pylon_proto::config::v1::{
    Authorization, Authorizer, JwtAuthorizer, RequestAuthorizer, authorization, authorizer,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What the document's security schemes became.
#[derive(Clone, Debug, Default)]
pub struct Schemes {
    pub authorizers: Vec<Authorizer>,
    /// Where each of `authorizers` came from: `securityDefinitions.NAME`
    /// or `components.securitySchemes.NAME`.
    pub places: Vec<String>,
    /// Scheme name → the authorizer's kind (true: JWT).
    pub by_name: BTreeMap<String, bool>,
    /// Schemes that mean "an API key is required".
    pub api_keys: BTreeSet<String>,
    /// Schemes that could not be imported (already reported).
    pub refused: BTreeSet<String>,
}

pub fn schemes(doc: &Document<'_>, report: &mut Report) -> Schemes {
    let (at, map) = match doc.dialect {
        Dialect::Swagger2 => ("securityDefinitions", doc.root.get("securityDefinitions")),
        Dialect::OpenApi3 => (
            "components.securitySchemes",
            doc.root.get("components").and_then(|c| c.get("securitySchemes")),
        ),
    };
    let mut out = Schemes::default();
    let Some(map) = map.and_then(Value::as_object) else {
        return out;
    };
    for (name, scheme) in map {
        let here = format!("{at}.{name}");
        let Some(scheme) = doc.follow(scheme) else {
            report.refused(&here, "a $ref that does not resolve");
            out.refused.insert(name.clone());
            continue;
        };
        let authtype = scheme
            .get("x-amazon-apigateway-authtype")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !authtype.is_empty() && !authtype.eq_ignore_ascii_case("awsSigv4") {
            report.approximated(
                format!("{here}.x-amazon-apigateway-authtype"),
                "a label for AWS's console: not imported",
            );
        }
        if authtype.eq_ignore_ascii_case("awsSigv4") {
            report.refused(&here, "IAM (SigV4) authorization has no Pylon equivalent");
            out.refused.insert(name.clone());
            continue;
        }
        match scheme.get("x-amazon-apigateway-authorizer") {
            None => {
                let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
                let header = scheme.get("name").and_then(Value::as_str).unwrap_or("");
                let location = scheme.get("in").and_then(Value::as_str).unwrap_or("");
                if kind == "apiKey" && location == "header" && header.eq_ignore_ascii_case("x-api-key") {
                    out.api_keys.insert(name.clone());
                    report.mapped(&here, "API key required (X-API-Key, keys from usage plans)");
                } else {
                    report.refused(
                        &here,
                        format!("a {kind} scheme without an x-amazon-apigateway-authorizer has no AWS (or Pylon) meaning"),
                    );
                    out.refused.insert(name.clone());
                }
            }
            Some(raw) => match authorizer_of(doc, name, scheme, raw, &here, report) {
                Some(authorizer) => {
                    let jwt = matches!(authorizer.kind, Some(authorizer::Kind::Jwt(_)));
                    out.by_name.insert(name.clone(), jwt);
                    out.authorizers.push(authorizer);
                    out.places.push(here);
                }
                None => {
                    out.refused.insert(name.clone());
                }
            },
        }
    }
    out
}

fn authorizer_of(
    doc: &Document<'_>,
    name: &str,
    scheme: &Value,
    raw: &Value,
    at: &str,
    report: &mut Report,
) -> Option<Authorizer> {
    let here = format!("{at}.x-amazon-apigateway-authorizer");
    let kind = raw
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let authorizer_name = pylon_name(name);
    match kind.as_str() {
        "jwt" => {
            let config = raw.get("jwtConfiguration");
            let issuer = config
                .and_then(|c| c.get("issuer"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let audiences = super::strings(config.and_then(|c| c.get("audience")));
            if issuer.is_empty() || audiences.is_empty() {
                report.refused(
                    &here,
                    "a JWT authorizer needs jwtConfiguration.issuer and .audience",
                );
                return None;
            }
            let identity = identity_sources(raw.get("identitySource"), scheme);
            report.approximated(
                &here,
                format!("JWT authorizer {authorizer_name}: keys found by OpenID discovery at the issuer; algorithms pinned to RS256 (what AWS accepts)"),
            );
            Some(Authorizer {
                name: authorizer_name,
                kind: Some(authorizer::Kind::Jwt(JwtAuthorizer {
                    issuer: issuer.to_owned(),
                    audiences,
                    discovery_url: format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    ),
                    algorithms: vec!["RS256".into()],
                    identity_source: identity.into_iter().next().unwrap_or_default(),
                    ..Default::default()
                })),
            })
        }
        "cognito_user_pools" => {
            let pools = super::strings(raw.get("providerARNs"));
            let [pool] = pools.as_slice() else {
                report.refused(&here, "a Cognito authorizer with more than one user pool");
                return None;
            };
            // arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID
            let parts: Vec<&str> = pool.split(':').collect();
            let (Some(region), Some(id)) = (
                parts.get(3),
                pool.rsplit('/').next().filter(|_| pool.contains("userpool/")),
            ) else {
                report.refused(&here, format!("{pool:?} is not a user pool ARN"));
                return None;
            };
            let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{id}");
            let variable = format!("{name}.audience");
            let Some(audience) = doc.options.variables.get(&variable) else {
                report.refused(
                    &here,
                    format!("Pylon's JWT authorizers check the audience: give the user pool's app client ids with --set-var {variable}=CLIENT_ID[,CLIENT_ID…]"),
                );
                return None;
            };
            report.approximated(
                &here,
                format!("Cognito user pool → JWT authorizer {authorizer_name} (issuer {issuer}, JWKS of the pool, audience {audience})"),
            );
            Some(Authorizer {
                name: authorizer_name,
                kind: Some(authorizer::Kind::Jwt(JwtAuthorizer {
                    issuer: issuer.clone(),
                    audiences: audience.split(',').map(|a| a.trim().to_owned()).collect(),
                    jwks_uri: format!("{issuer}/.well-known/jwks.json"),
                    algorithms: vec!["RS256".into()],
                    identity_source: identity_sources(raw.get("identitySource"), scheme)
                        .into_iter()
                        .next()
                        .unwrap_or_default(),
                    ..Default::default()
                })),
            })
        }
        "token" | "request" => {
            let uri = raw.get("authorizerUri").and_then(Value::as_str).unwrap_or("");
            let Some(function) = lambda_function(uri) else {
                report.refused(&here, format!("authorizerUri {uri:?} names no Lambda function"));
                return None;
            };
            let Some(url) = doc.options.lambda_urls.get(&function) else {
                report.refused(
                    &here,
                    format!("Lambda authorizer {function}: give the URL that decides with --lambda-url {function}=URL"),
                );
                return None;
            };
            let sources = identity_sources(raw.get("identitySource"), scheme);
            if sources.is_empty() {
                report.refused(&here, "no identity source");
                return None;
            }
            let ttl = raw
                .get("authorizerResultTtlInSeconds")
                .and_then(Value::as_u64)
                .map_or(300, |t| u32::try_from(t).unwrap_or(3600));
            let mut detail = format!(
                "{kind} authorizer → request authorizer {authorizer_name} calling {url} (Pylon's request-authorizer call, not a Lambda event; docs/request-phase.md), decisions cached {ttl} s"
            );
            if raw.get("authorizerCredentials").is_some() {
                detail.push_str("; authorizerCredentials (an IAM role) is not used");
            }
            if raw.get("identityValidationExpression").is_some() {
                detail.push_str(
                    "; identityValidationExpression is not checked (the authorizer sees every token)",
                );
            }
            report.approximated(&here, detail);
            Some(Authorizer {
                name: authorizer_name,
                kind: Some(authorizer::Kind::Request(RequestAuthorizer {
                    uri: url.clone(),
                    identity_sources: sources,
                    result_ttl_seconds: Some(ttl),
                    ..Default::default()
                })),
            })
        }
        other => {
            report.refused(
                &here,
                format!("authorizer type {other:?} has no Pylon equivalent"),
            );
            None
        }
    }
}

/// AWS names authorizers freely; Pylon takes `A-Z a-z 0-9 _ -`.
fn pylon_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect()
}

/// `method.request.header.Authorization, method.request.querystring.t` (REST)
/// or `$request.header.Authorization` (HTTP APIs) → Pylon's identity
/// sources; a token authorizer without one reads the scheme's header.
fn identity_sources(raw: Option<&Value>, scheme: &Value) -> Vec<String> {
    let mut out: Vec<String> = super::strings(raw)
        .into_iter()
        .filter_map(|source| {
            let source = source.trim();
            if source.starts_with('$') {
                return Some(source.to_owned());
            }
            for (aws, pylon) in [
                ("method.request.header.", "$request.header."),
                ("method.request.querystring.", "$request.querystring."),
                ("context.", "$context."),
                ("stageVariables.", "$stageVariables."),
            ] {
                if let Some(name) = source.strip_prefix(aws) {
                    return Some(format!("{pylon}{name}"));
                }
            }
            None
        })
        .collect();
    if out.is_empty()
        && let Some(header) = scheme.get("name").and_then(Value::as_str)
        && scheme.get("in").and_then(Value::as_str) == Some("header")
    {
        out.push(format!("$request.header.{header}"));
    }
    out
}

/// An operation's (or the document's) `security` → the route's
/// authorization; `None` when a scheme it names was refused.
pub fn authorization(
    requirement: Option<&Value>,
    at: &str,
    schemes: &Schemes,
    report: &mut Report,
) -> Option<Authorization> {
    let mut auth = Authorization::default();
    let Some(alternatives) = requirement.and_then(Value::as_array) else {
        return Some(auth);
    };
    if alternatives.len() > 1 {
        report.approximated(
            at,
            "several alternative security requirements: the first is used (as AWS does)",
        );
    }
    let Some(first) = alternatives.first().and_then(Value::as_object) else {
        return Some(auth);
    };
    for (name, scopes) in first {
        if schemes.refused.contains(name) {
            return None;
        }
        if schemes.api_keys.contains(name) || (name == "api_key" && !schemes.by_name.contains_key(name)) {
            if !schemes.api_keys.contains(name) {
                report.approximated(
                    at,
                    "the scheme api_key is not defined: read as AWS's conventional API key scheme (X-API-Key)",
                );
            }
            auth.api_key_required = true;
        } else if let Some(jwt) = schemes.by_name.get(name) {
            if !auth.authorizer.is_empty() {
                report.refused(at, "two authorizers on one operation");
                return None;
            }
            auth.authorizer = pylon_name(name);
            if *jwt {
                auth.r#type = authorization::Type::Jwt as i32;
                auth.scopes = super::strings(Some(scopes));
            } else {
                auth.r#type = authorization::Type::Request as i32;
            }
        } else {
            report.refused(
                at,
                format!("names the security scheme {name:?}, which the document does not define"),
            );
            return None;
        }
    }
    Some(auth)
}
