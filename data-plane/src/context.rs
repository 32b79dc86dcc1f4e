//! `$context`: the one typed context of a request (or of a WebSocket
//! message). The first phases fill it from the request and the compiled
//! config without copying either (`Arc<str>` from the config, the
//! request's own `Method`, `Uri` and header values); later phases add what
//! they learn (route, caller, authorizer, cache status, error), and when
//! the answer is ready telemetry reads it whole: metrics, the span's end
//! and the access-log line.
//!
//! Names follow AWS's `$context` variables ([`Variable`]). Nothing is
//! rendered as text until a mapping, template, request authorizer or
//! access-log format reads it ([`RequestContext::lookup`],
//! [`RequestContext::write`]).

use http::{HeaderValue, Method, Uri};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A request id: 32 random hex digits in UUID form (8-4-4-4-12), unique
/// across nodes; kept inline, never allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 36]);

impl RequestId {
    /// A fresh random id: a version 4 UUID (RFC 9562 §5.4), lower-case
    /// hex, as AWS's `$context.requestId`.
    pub fn new() -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Where each random byte's two digits go (the dashes stay).
        const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut bytes: [u8; 16] = rand::random();
        // Version 4 and the RFC variant.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut id = [b'-'; 36];
        for (byte, at) in bytes.into_iter().zip(AT) {
            id[at] = HEX[usize::from(byte >> 4)];
            id[at + 1] = HEX[usize::from(byte & 0xf)];
        }
        RequestId(id)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// As a header value (`x-pylon-request-id`).
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one request (or WebSocket message) is and did.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: RequestId,
    /// The API's name.
    pub api_id: Arc<str>,
    pub stage: Arc<str>,
    pub deployment_id: Arc<str>,
    /// Served by the stage's canary deployment.
    pub canary: bool,
    /// The host the request was routed on (lower-case, no port).
    pub domain_name: Arc<str>,
    pub http_method: Method,
    /// The request target as the client sent it (`$context.path` is its path).
    pub uri: Uri,
    /// `HTTP/1.1`, `HTTP/2.0`, `WebSocket`.
    pub protocol: &'static str,
    pub request_time: SystemTime,
    /// `GET /pets/{id}` once a route matched (a WebSocket route key as it is).
    pub route_key: Option<Arc<str>>,
    pub identity: Identity,
    pub authorizer: AuthorizerContext,
    /// The request's server span, when it is traced.
    pub trace: Option<opentelemetry::Context>,
    /// How it ended; filled as the answer is made.
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct Identity {
    pub source_ip: IpAddr,
    pub user_agent: Option<HeaderValue>,
    pub api_key_id: Option<Arc<str>>,
    pub client_cert: Option<Arc<ClientCert>>,
    /// A digest of the credential an authorizer accepted (token, identity
    /// sources): tells callers apart when the authorizer names no principal.
    pub caller: Option<[u8; 32]>,
}

/// A verified client certificate (mutual TLS).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCert {
    #[serde(rename = "subjectDN")]
    pub subject_dn: String,
    #[serde(rename = "issuerDN")]
    pub issuer_dn: String,
    pub serial_number: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// A JWT authorizer's verified claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
    /// A request authorizer's context map.
    #[serde(flatten)]
    pub context: Map<String, Value>,
}

/// A token's scopes: `scope` (space-separated, RFC 8693 §4.2) and `scp` (a
/// list, or a space-separated string as some issuers send it). Every check
/// of a scope reads them through this one function.
pub fn token_scopes(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_whitespace();
    let scp: Vec<&str> = match claims.get("scp") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    scope.chain(scp)
}

/// What the cache did for a request (`X-Cache`, `$context.cacheStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "Hit",
            CacheStatus::Miss => "Miss",
            CacheStatus::Bypass => "Bypass",
        }
    }
}

/// How a request ended: the fields of metrics, the span's end and the
/// access-log line that only the answer knows.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The answer's status (0 until there is one).
    pub status: u16,
    /// Bytes in the answer's body, when known.
    pub response_length: Option<u64>,
    /// From the request's arrival to its answer's headers.
    pub latency: Duration,
    /// The backend call, request to response headers.
    pub integration_latency: Option<Duration>,
    pub cache: Option<CacheStatus>,
    /// An unauthorized `Cache-Control: max-age=0` was ignored with a
    /// warning: the answer, or the error, carries `Warning: 199`.
    pub cache_warning: bool,
    pub throttled: bool,
    pub quota_exceeded: bool,
    /// Set when the request failed: the gateway-response type and message.
    pub error_type: Option<&'static str>,
    pub error_message: Option<String>,
}

impl RequestContext {
    /// A context for a request of `api_id`'s `stage` with nothing learnt
    /// yet; the caller fills the rest.
    pub fn new(
        api_id: Arc<str>,
        stage: Arc<str>,
        deployment_id: Arc<str>,
        source_ip: IpAddr,
    ) -> RequestContext {
        RequestContext {
            request_id: RequestId::new(),
            api_id,
            stage,
            deployment_id,
            canary: false,
            domain_name: Arc::from(""),
            http_method: Method::GET,
            uri: Uri::from_static("/"),
            protocol: "HTTP/1.1",
            request_time: SystemTime::now(),
            route_key: None,
            identity: Identity {
                source_ip,
                user_agent: None,
                api_key_id: None,
                client_cert: None,
                caller: None,
            },
            authorizer: AuthorizerContext::default(),
            trace: None,
            outcome: Outcome::default(),
        }
    }

    /// The route's path part (`/pets/{id}`; a WebSocket route key as it
    /// is), or "" before a route matched.
    pub fn resource_path(&self) -> &str {
        self.route_key
            .as_deref()
            .map(|k| k.split_once(' ').map_or(k, |(_, p)| p))
            .unwrap_or("")
    }

    /// The value of `$context.NAME`, as text (strings bare, other JSON
    /// values serialised). `None` when unknown or unset.
    pub fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.value(&Variable::parse(name)?)? {
            Text::Str(s) => Some(Cow::Borrowed(s)),
            Text::Bytes(b) => Some(String::from_utf8_lossy(b)),
            Text::Json(value) => Some(json_text(value)),
            other => {
                let mut out = String::new();
                other.write(&mut out, Escape::None);
                Some(Cow::Owned(out))
            }
        }
    }

    /// Appends `variable`'s value to `out` (escaped as `escape` says);
    /// `false`, and nothing written, when it has none.
    pub fn write(&self, variable: &Variable, out: &mut String, escape: Escape) -> bool {
        match self.value(variable) {
            Some(text) => {
                text.write(out, escape);
                true
            }
            None => false,
        }
    }

    fn value<'a>(&'a self, variable: &Variable) -> Option<Text<'a>> {
        let text = |s: &'a str| (!s.is_empty()).then_some(Text::Str(s));
        let outcome = &self.outcome;
        Some(match variable {
            Variable::RequestId => Text::Str(self.request_id.as_str()),
            Variable::ApiId => return text(&self.api_id),
            Variable::Stage => return text(&self.stage),
            Variable::DeploymentId => return text(&self.deployment_id),
            Variable::DomainName => return text(&self.domain_name),
            Variable::HttpMethod => Text::Str(self.http_method.as_str()),
            Variable::Path => Text::Str(self.uri.path()),
            Variable::ResourcePath => return text(self.resource_path()),
            Variable::RouteKey => return self.route_key.as_deref().map(Text::Str),
            Variable::Protocol => Text::Str(self.protocol),
            Variable::RequestTime => Text::Time(self.request_time),
            Variable::RequestTimeEpoch => Text::Int(
                self.request_time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            Variable::SourceIp => Text::Ip(self.identity.source_ip),
            Variable::UserAgent => {
                let agent = self.identity.user_agent.as_ref()?.as_bytes();
                return (!agent.is_empty()).then_some(Text::Bytes(agent));
            }
            Variable::ApiKeyId => Text::Str(self.identity.api_key_id.as_deref()?),
            Variable::PrincipalId => Text::Str(self.authorizer.principal_id.as_deref()?),
            Variable::ClientCert(field) => {
                let cert = self.identity.client_cert.as_deref()?;
                return text(match field {
                    CertField::SubjectDn => &cert.subject_dn,
                    CertField::IssuerDn => &cert.issuer_dn,
                    CertField::SerialNumber => &cert.serial_number,
                    CertField::Fingerprint => &cert.fingerprint,
                });
            }
            Variable::Claim(name) => Text::Json(self.authorizer.claims.as_ref()?.get(&**name)?),
            Variable::Authorizer(name) => Text::Json(self.authorizer.context.get(&**name)?),
            Variable::Status => Text::Int(u64::from(outcome.status)),
            Variable::ResponseLength => Text::Int(outcome.response_length?),
            Variable::ResponseLatency => Text::Int(outcome.latency.as_millis() as u64),
            Variable::IntegrationLatency => Text::Int(outcome.integration_latency?.as_millis() as u64),
            Variable::ErrorMessage => Text::Str(outcome.error_message.as_deref()?),
            Variable::ErrorResponseType => Text::Str(outcome.error_type?),
            Variable::CacheStatus => Text::Str(outcome.cache?.as_str()),
        })
    }

    /// The whole context as a template value (`$context` in templates,
    /// `requestContext` in a request authorizer's event).
    pub fn to_value(&self) -> Value {
        let mut identity = Map::new();
        identity.insert(
            "sourceIp".into(),
            Value::from(self.identity.source_ip.to_string()),
        );
        let user_agent = self
            .identity
            .user_agent
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        identity.insert(
            "userAgent".into(),
            Value::from(user_agent.as_deref().unwrap_or("")),
        );
        if let Some(id) = &self.identity.api_key_id {
            identity.insert("apiKeyId".into(), Value::from(&**id));
        }
        if let Some(cert) = &self.identity.client_cert {
            identity.insert(
                "clientCert".into(),
                serde_json::to_value(&**cert).unwrap_or(Value::Null),
            );
        }
        serde_json::json!({
            "requestId": self.request_id.as_str(),
            "apiId": &*self.api_id,
            "stage": &*self.stage,
            "deploymentId": &*self.deployment_id,
            "domainName": &*self.domain_name,
            "httpMethod": self.http_method.as_str(),
            "path": self.uri.path(),
            "resourcePath": self.resource_path(),
            "routeKey": self.route_key.as_deref().unwrap_or(""),
            "protocol": self.protocol,
            "requestTimeEpoch": self.request_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "identity": identity,
            "authorizer": serde_json::to_value(&self.authorizer).unwrap_or(Value::Null),
        })
    }
}

/// A `$context` variable, named as AWS names it; parsed once (a stage's
/// access-log format is compiled per snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    /// `requestId`, `extendedRequestId`.
    RequestId,
    ApiId,
    Stage,
    DeploymentId,
    DomainName,
    HttpMethod,
    Path,
    ResourcePath,
    RouteKey,
    Protocol,
    /// `requestTime`: `24/Nov/2026:18:19:55 +0000`.
    RequestTime,
    /// Milliseconds since the Unix epoch.
    RequestTimeEpoch,
    /// `identity.sourceIp`.
    SourceIp,
    /// `identity.userAgent`.
    UserAgent,
    /// `identity.apiKeyId`.
    ApiKeyId,
    /// `identity.clientCert.*`.
    ClientCert(CertField),
    /// `authorizer.principalId`.
    PrincipalId,
    /// `authorizer.claims.NAME`.
    Claim(Box<str>),
    /// `authorizer.NAME` (a request authorizer's context).
    Authorizer(Box<str>),
    Status,
    ResponseLength,
    /// `responseLatency`, ms.
    ResponseLatency,
    /// `integrationLatency`, `integration.latency`, ms.
    IntegrationLatency,
    /// `error.message`.
    ErrorMessage,
    /// `error.responseType`.
    ErrorResponseType,
    CacheStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertField {
    SubjectDn,
    IssuerDn,
    SerialNumber,
    Fingerprint,
}

impl Variable {
    /// The variable `$context.NAME` names; `None` for a name Pylon does
    /// not know.
    pub fn parse(name: &str) -> Option<Variable> {
        Some(match name {
            "requestId" | "extendedRequestId" => Variable::RequestId,
            "apiId" => Variable::ApiId,
            "stage" => Variable::Stage,
            "deploymentId" => Variable::DeploymentId,
            "domainName" => Variable::DomainName,
            "httpMethod" => Variable::HttpMethod,
            "path" => Variable::Path,
            "resourcePath" => Variable::ResourcePath,
            "routeKey" => Variable::RouteKey,
            "protocol" => Variable::Protocol,
            "requestTime" => Variable::RequestTime,
            "requestTimeEpoch" => Variable::RequestTimeEpoch,
            "identity.sourceIp" => Variable::SourceIp,
            "identity.userAgent" => Variable::UserAgent,
            "identity.apiKeyId" => Variable::ApiKeyId,
            "authorizer.principalId" => Variable::PrincipalId,
            "status" => Variable::Status,
            "responseLength" => Variable::ResponseLength,
            "responseLatency" => Variable::ResponseLatency,
            "integrationLatency" | "integration.latency" => Variable::IntegrationLatency,
            "error.message" => Variable::ErrorMessage,
            "error.responseType" => Variable::ErrorResponseType,
            "cacheStatus" => Variable::CacheStatus,
            _ => {
                if let Some(field) = name.strip_prefix("identity.clientCert.") {
                    return Some(Variable::ClientCert(match field {
                        "subjectDN" => CertField::SubjectDn,
                        "issuerDN" => CertField::IssuerDn,
                        "serialNumber" => CertField::SerialNumber,
                        "fingerprint" => CertField::Fingerprint,
                        _ => return None,
                    }));
                }
                if let Some(claim) = name.strip_prefix("authorizer.claims.") {
                    return Some(Variable::Claim(claim.into()));
                }
                Variable::Authorizer(name.strip_prefix("authorizer.")?.into())
            }
        })
    }

    /// Whether its value is a number (written bare in JSON).
    pub fn is_number(&self) -> bool {
        matches!(
            self,
            Variable::RequestTimeEpoch
                | Variable::Status
                | Variable::ResponseLength
                | Variable::ResponseLatency
                | Variable::IntegrationLatency
        )
    }
}

/// How a value is written into text around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As it is.
    None,
    /// Inside a JSON string: quotes, backslashes and control characters
    /// escaped.
    JsonString,
}

/// A variable's value, borrowed where it can be.
enum Text<'a> {
    Str(&'a str),
    /// A header's bytes: UTF-8 as it is, other bytes as U+FFFD.
    Bytes(&'a [u8]),
    Int(u64),
    Ip(IpAddr),
    Time(SystemTime),
    Json(&'a Value),
}

impl Text<'_> {
    fn write(&self, out: &mut String, escape: Escape) {
        match self {
            Text::Str(s) => push(out, s, escape),
            Text::Bytes(b) => push(out, &String::from_utf8_lossy(b), escape),
            Text::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Text::Ip(ip) => {
                let _ = write!(out, "{ip}");
            }
            Text::Time(time) => clf_time(*time, out),
            Text::Json(Value::String(s)) => push(out, s, escape),
            Text::Json(Value::Null) => {}
            Text::Json(other) => match escape {
                Escape::None => {
                    let _ = write!(out, "{other}");
                }
                Escape::JsonString => push(out, &other.to_string(), escape),
            },
        }
    }
}

fn push(out: &mut String, s: &str, escape: Escape) {
    match escape {
        Escape::None => out.push_str(s),
        Escape::JsonString => json_escape(s, out),
    }
}

/// Appends `s` as the inside of a JSON string (RFC 8259 §7).
pub fn json_escape(s: &str, out: &mut String) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// `24/Nov/2026:18:19:55 +0000`, as AWS writes `$context.requestTime`.
fn clf_time(time: SystemTime, out: &mut String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = pylon_common::quota::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let month = MONTHS.get((m - 1) as usize).copied().unwrap_or("Jan");
    let _ = write!(
        out,
        "{d:02}/{month}/{y}:{:02}:{:02}:{:02} +0000",
        s / 3600,
        s % 3600 / 60,
        s % 60
    );
}

/// A JSON value as mapping text: strings without quotes, the rest as JSON.
pub fn json_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn context() -> RequestContext {
        let mut ctx = RequestContext::new(
            "pets".into(),
            "prod".into(),
            "d-1".into(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        );
        ctx.route_key = Some("GET /pets/{id}".into());
        ctx.uri = Uri::from_static("/prod/pets/7?x=1");
        ctx
    }

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a, b);
        let a = a.as_str();
        assert_eq!(a.len(), 36);
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        for _ in 0..64 {
            let id = RequestId::new();
            let id = id.as_str().as_bytes();
            assert_eq!(id[14], b'4', "version 4");
            assert!(b"89ab".contains(&id[19]), "RFC 9562 variant");
        }
    }

    #[test]
    fn context_names_resolve_like_aws_variables() {
        let mut ctx = context();
        ctx.authorizer.claims = Some(
            serde_json::json!({"sub": "ann", "groups": ["a"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        ctx.authorizer.context.insert("tier".into(), Value::from("gold"));
        assert_eq!(ctx.lookup("requestId").as_deref(), Some(ctx.request_id.as_str()));
        assert_eq!(ctx.lookup("identity.sourceIp").as_deref(), Some("10.0.0.1"));
        assert_eq!(ctx.lookup("path").as_deref(), Some("/prod/pets/7"));
        assert_eq!(ctx.lookup("resourcePath").as_deref(), Some("/pets/{id}"));
        assert_eq!(ctx.lookup("authorizer.claims.sub").as_deref(), Some("ann"));
        assert_eq!(
            ctx.lookup("authorizer.claims.groups").as_deref(),
            Some(r#"["a"]"#)
        );
        assert_eq!(ctx.lookup("authorizer.tier").as_deref(), Some("gold"));
        assert_eq!(ctx.lookup("authorizer.nothing"), None);
        assert_eq!(ctx.lookup("identity.clientCert.subjectDN"), None);
        assert_eq!(ctx.lookup("identity.userAgent"), None);
        assert_eq!(ctx.lookup("noSuchThing"), None);
        assert_eq!(ctx.to_value()["authorizer"]["tier"], "gold");
        assert_eq!(ctx.to_value()["identity"]["sourceIp"], "10.0.0.1");
        assert_eq!(ctx.to_value()["routeKey"], "GET /pets/{id}");
    }

    #[test]
    fn values_written_into_json_strings_are_escaped() {
        let mut ctx = context();
        ctx.authorizer.principal_id = Some("ann \"the\\admin\"\n\u{1}".into());
        let mut out = String::new();
        assert!(ctx.write(&Variable::PrincipalId, &mut out, Escape::JsonString));
        assert_eq!(out, r#"ann \"the\\admin\"\n\u0001"#);
        let parsed: Value = serde_json::from_str(&format!("\"{out}\"")).unwrap_or_default();
        assert_eq!(parsed, "ann \"the\\admin\"\n\u{1}");
        assert!(!ctx.write(&Variable::ApiKeyId, &mut out, Escape::JsonString));
    }

    #[test]
    fn a_user_agent_beyond_ascii_is_logged_as_sent() {
        let mut ctx = context();
        let agent = HeaderValue::from_bytes("caf\u{e9}\u{2028}bot".as_bytes())
            .unwrap_or(HeaderValue::from_static("x"));
        ctx.identity.user_agent = Some(agent);
        let mut out = String::new();
        assert!(ctx.write(&Variable::UserAgent, &mut out, Escape::JsonString));
        assert_eq!(out, "caf\u{e9}\u{2028}bot");
        ctx.identity.user_agent = HeaderValue::from_bytes(b"bad \xff byte").ok();
        assert_eq!(
            ctx.lookup("identity.userAgent").as_deref(),
            Some("bad \u{fffd} byte")
        );
    }
}
