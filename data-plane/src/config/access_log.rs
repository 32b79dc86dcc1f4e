//! A stage's access-log line, compiled once per snapshot into segments:
//! literal text and `$context` variables, so writing a line is appending
//! to a buffer — no parsing, no map, no allocation per variable.
//!
//! The stage's `access_log_format` is AWS-style text with `$context.NAME`
//! variables; in a format that is a JSON object (starts with `{`) values
//! are JSON-escaped. A variable without a value (or one Pylon does not
//! know) is written `-`, as AWS does. Without a format, the line is
//! Pylon's default JSON object ([`AccessLogFormat::default_json`]).

use crate::context::{Escape, RequestContext, Variable};

/// A compiled access-log line.
#[derive(Debug)]
pub struct AccessLogFormat {
    segments: Vec<Segment>,
}

#[derive(Debug)]
enum Segment {
    Text(Box<str>),
    /// A variable inside the text; `-` when it has no value.
    Variable(Option<Variable>, Escape),
    /// A JSON member's value: a number bare, text quoted, `null` when unset.
    JsonValue(Variable),
}

/// The members of the default line, in order.
const DEFAULT_MEMBERS: [(&str, &str); 18] = [
    ("requestId", "requestId"),
    ("ip", "identity.sourceIp"),
    ("requestTime", "requestTime"),
    ("httpMethod", "httpMethod"),
    ("path", "path"),
    ("routeKey", "routeKey"),
    ("status", "status"),
    ("protocol", "protocol"),
    ("responseLength", "responseLength"),
    ("responseLatency", "responseLatency"),
    ("integrationLatency", "integrationLatency"),
    ("errorMessage", "error.message"),
    ("errorType", "error.responseType"),
    ("principalId", "authorizer.principalId"),
    ("apiKeyId", "identity.apiKeyId"),
    ("cache", "cacheStatus"),
    ("api", "apiId"),
    ("stage", "stage"),
];

impl AccessLogFormat {
    /// Compiles a stage's `access_log_format`; blank means the default.
    pub fn compile(format: &str) -> AccessLogFormat {
        if format.trim().is_empty() {
            return AccessLogFormat::default_json();
        }
        let escape = if format.trim_start().starts_with('{') {
            Escape::JsonString
        } else {
            Escape::None
        };
        let mut segments = Vec::new();
        let mut rest = format;
        while let Some(at) = rest.find("$context.") {
            if at > 0 {
                segments.push(Segment::Text(rest[..at].into()));
            }
            let after = &rest[at + "$context.".len()..];
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(after.len());
            // A sentence's full stop is not part of the name.
            let name = after[..end].trim_end_matches('.');
            segments.push(Segment::Variable(Variable::parse(name), escape));
            rest = &after[name.len()..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.into()));
        }
        AccessLogFormat { segments }
    }

    /// Pylon's default line: a JSON object of the request's id, client,
    /// time, method, path, route, status, protocol, sizes, latencies,
    /// error, caller, cache status, API and stage.
    pub fn default_json() -> AccessLogFormat {
        let mut segments = Vec::new();
        for (i, (member, name)) in DEFAULT_MEMBERS.iter().enumerate() {
            let open = if i == 0 { "{" } else { "," };
            segments.push(Segment::Text(format!("{open}\"{member}\":").into()));
            if let Some(variable) = Variable::parse(name) {
                segments.push(Segment::JsonValue(variable));
            }
        }
        segments.push(Segment::Text("}".into()));
        AccessLogFormat { segments }
    }

    /// Appends the line for `ctx` to `out` (no newline).
    pub fn write(&self, ctx: &RequestContext, out: &mut String) {
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Variable(Some(variable), escape) => {
                    if !ctx.write(variable, out, *escape) {
                        out.push('-');
                    }
                }
                Segment::Variable(None, _) => out.push('-'),
                Segment::JsonValue(variable) => {
                    let quoted = !variable.is_number();
                    let mark = out.len();
                    if quoted {
                        out.push('"');
                    }
                    if ctx.write(variable, out, Escape::JsonString) {
                        if quoted {
                            out.push('"');
                        }
                    } else {
                        out.truncate(mark);
                        out.push_str("null");
                    }
                }
            }
        }
    }

    /// The line for `ctx`, as a new string.
    pub fn render(&self, ctx: &RequestContext) -> String {
        let mut out = String::with_capacity(256);
        self.write(ctx, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, UNIX_EPOCH};

    fn request() -> RequestContext {
        let mut ctx = RequestContext::new(
            "pets".into(),
            "prod".into(),
            "d-1".into(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        ctx.uri = http::Uri::from_static("/prod/pets/7");
        ctx.route_key = Some("GET /pets/{id}".into());
        ctx.request_time = UNIX_EPOCH + Duration::from_secs(1_795_544_395);
        ctx.authorizer.principal_id = Some("ann \"the admin\"".into());
        ctx.outcome.status = 200;
        ctx.outcome.latency = Duration::from_millis(12);
        ctx.outcome.integration_latency = Some(Duration::from_millis(9));
        ctx
    }

    #[test]
    fn a_stage_format_fills_context_variables_and_escapes_json() {
        let ctx = request();
        let format = AccessLogFormat::compile(
            r#"{"id":"$context.requestId","route":"$context.routeKey","who":"$context.authorizer.principalId","status":$context.status,"took":$context.responseLatency,"key":"$context.identity.apiKeyId"}"#,
        );
        let parsed: serde_json::Value = serde_json::from_str(&format.render(&ctx)).unwrap_or_default();
        assert_eq!(parsed["id"], ctx.request_id.as_str());
        assert_eq!(parsed["route"], "GET /pets/{id}");
        assert_eq!(parsed["who"], "ann \"the admin\"");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["took"], 12);
        assert_eq!(parsed["key"], "-");
    }

    #[test]
    fn text_formats_and_the_default_line() {
        let ctx = request();
        let format = AccessLogFormat::compile(
            "$context.identity.sourceIp [$context.requestTime] \"$context.httpMethod $context.resourcePath\" $context.status $context.nonsense.",
        );
        assert_eq!(
            format.render(&ctx),
            "127.0.0.1 [24/Nov/2026:18:19:55 +0000] \"GET /pets/{id}\" 200 -."
        );
        let line = AccessLogFormat::default_json().render(&ctx);
        let default: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(default["integrationLatency"], 9);
        assert_eq!(default["routeKey"], "GET /pets/{id}");
        assert_eq!(default["status"], 200);
        assert_eq!(default["principalId"], "ann \"the admin\"");
        assert_eq!(default["apiKeyId"], serde_json::Value::Null);
        assert_eq!(default["responseLength"], serde_json::Value::Null);
        assert_eq!(default["requestTime"], "24/Nov/2026:18:19:55 +0000");
    }
}
