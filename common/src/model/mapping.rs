//! Parameter mappings and body templates, parsed once per snapshot.
//!
//! A mapping is `ACTION:TARGET` → value, HTTP-API style:
//! `append|overwrite|remove:header.NAME`, `…:querystring.NAME`,
//! `overwrite:path` on requests, `…:header.NAME` and `overwrite:statuscode`
//! on responses. A value is a literal, one reference (`$request.header.x`),
//! or text with `${…}` references inside (`Bearer ${context.requestId}`).

use http::HeaderName;
use serde_json_path::JsonPath;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Append,
    Overwrite,
    Remove,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Header(HeaderName),
    Query(String),
    Path,
    StatusCode,
}

/// Where a value comes from.
#[derive(Debug)]
pub enum Source {
    RequestHeader(HeaderName),
    RequestQuery(String),
    /// The request path below the stage.
    RequestPath,
    RequestPathParam(String),
    /// The whole body (`$request.body`) or a JSONPath into it.
    RequestBody(Option<JsonPath>),
    ResponseHeader(HeaderName),
    ResponseBody(Option<JsonPath>),
    Context(String),
    StageVariable(String),
}

#[derive(Debug)]
pub enum Part {
    Text(String),
    Ref(Source),
}

#[derive(Debug)]
pub struct Mapping {
    pub action: Action,
    pub target: Target,
    pub value: Vec<Part>,
}

impl Mapping {
    pub fn reads_request_body(&self) -> bool {
        self.value
            .iter()
            .any(|p| matches!(p, Part::Ref(Source::RequestBody(_))))
    }
    pub fn reads_response_body(&self) -> bool {
        self.value
            .iter()
            .any(|p| matches!(p, Part::Ref(Source::ResponseBody(_))))
    }
}

/// Headers a mapping may not set or remove: they frame the message or
/// manage the connection, and the gateway sets them from what it sends.
const GATEWAY_OWNED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Whether `name` (lowercase) is a header only the gateway sets.
pub fn is_gateway_owned(name: &str) -> bool {
    GATEWAY_OWNED.contains(&name)
}

/// Which side a mapping belongs to decides its targets and sources.
#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    Request,
    Response,
}

pub fn compile_mappings<'a>(
    mappings: impl IntoIterator<Item = (&'a String, &'a String)>,
    side: Side,
) -> Result<Vec<Mapping>, String> {
    let mut out = Vec::new();
    for (target, value) in mappings {
        let (action, rest) = target
            .split_once(':')
            .ok_or_else(|| format!("{target}: expected ACTION:TARGET"))?;
        let action = match action {
            "append" => Action::Append,
            "overwrite" => Action::Overwrite,
            "remove" => Action::Remove,
            other => return Err(format!("{target}: unknown action {other}")),
        };
        let parsed = if let Some(name) = rest.strip_prefix("header.") {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{target}: {e}"))?;
            if GATEWAY_OWNED.contains(&name.as_str()) {
                return Err(format!(
                    "{target}: {name} is the gateway's to set (message framing and the connection, RFC 9110 §7.6.1, RFC 9112 §6); it cannot be mapped"
                ));
            }
            Target::Header(name)
        } else if let Some(name) = rest.strip_prefix("querystring.")
            && side == Side::Request
        {
            Target::Query(name.to_owned())
        } else if rest == "path" && side == Side::Request && action == Action::Overwrite {
            Target::Path
        } else if rest == "statuscode" && side == Side::Response && action == Action::Overwrite {
            Target::StatusCode
        } else {
            return Err(format!("{target}: unsupported target"));
        };
        let value = if action == Action::Remove {
            Vec::new()
        } else if value.is_empty() {
            return Err(format!("{target}: needs a value"));
        } else {
            parse_value(value, side).map_err(|e| format!("{target}: {e}"))?
        };
        if matches!(parsed, Target::Header(_)) {
            // Literal text goes into a header as it is: it must be a field
            // value (no CR, LF or other control characters).
            for part in &value {
                if let Part::Text(text) = part
                    && http::HeaderValue::from_str(text).is_err()
                {
                    return Err(format!(
                        "{target}: {text:?} is not a header field value (control characters such as CR and LF are not allowed)"
                    ));
                }
            }
        }
        if parsed == Target::StatusCode && value.iter().all(|p| matches!(p, Part::Text(_))) {
            // A literal status: 200..=599 (a 1xx would break the
            // connection). References are checked when they resolve.
            let literal: String = value
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.as_str(),
                    Part::Ref(_) => "",
                })
                .collect();
            let ok = literal
                .trim()
                .parse::<u16>()
                .is_ok_and(|c| (200..=599).contains(&c));
            if !ok {
                return Err(format!("{target}: {literal:?} is not a status code 200..=599"));
            }
        }
        out.push(Mapping {
            action,
            target: parsed,
            value,
        });
    }
    // Removals last, so `remove` wins over an `append` of the same name.
    out.sort_by_key(|m| m.action == Action::Remove);
    Ok(out)
}

/// Parses a mapping value: one `$…` reference, or text with `${…}` inside.
pub fn parse_value(value: &str, side: Side) -> Result<Vec<Part>, String> {
    if value.starts_with('$') && !value.starts_with("${") {
        return Ok(vec![Part::Ref(parse_source(&value[1..], side)?)]);
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        parts.push(Part::Ref(parse_source(&after[..end], side)?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn parse_source(reference: &str, side: Side) -> Result<Source, String> {
    let header =
        |name: &str| HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("${reference}: {e}"));
    let json_path =
        |path: &str| JsonPath::parse(&format!("${path}")).map_err(|e| format!("${reference}: {e}"));
    if let Some(name) = reference.strip_prefix("request.header.") {
        return Ok(Source::RequestHeader(header(name)?));
    }
    if let Some(name) = reference.strip_prefix("request.querystring.") {
        return Ok(Source::RequestQuery(name.to_owned()));
    }
    if reference == "request.path" {
        return Ok(Source::RequestPath);
    }
    if let Some(name) = reference.strip_prefix("request.path.") {
        return Ok(Source::RequestPathParam(name.to_owned()));
    }
    if reference == "request.body" {
        return Ok(Source::RequestBody(None));
    }
    if let Some(path) = reference.strip_prefix("request.body") {
        return Ok(Source::RequestBody(Some(json_path(path)?)));
    }
    if side == Side::Response {
        if let Some(name) = reference.strip_prefix("response.header.") {
            return Ok(Source::ResponseHeader(header(name)?));
        }
        if reference == "response.body" {
            return Ok(Source::ResponseBody(None));
        }
        if let Some(path) = reference.strip_prefix("response.body") {
            return Ok(Source::ResponseBody(Some(json_path(path)?)));
        }
    }
    if let Some(name) = reference.strip_prefix("context.")
        && !name.is_empty()
    {
        return Ok(Source::Context(name.to_owned()));
    }
    if let Some(name) = reference.strip_prefix("stageVariables.")
        && !name.is_empty()
    {
        return Ok(Source::StageVariable(name.to_owned()));
    }
    Err(format!("${reference}: unknown reference"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_references_literals_or_text_with_references() {
        let parts = parse_value("$request.header.x-user", Side::Request).unwrap_or_default();
        assert!(matches!(&parts[..], [Part::Ref(Source::RequestHeader(h))] if h == "x-user"));
        let parts = parse_value("Bearer ${context.requestId}!", Side::Request).unwrap_or_default();
        assert!(matches!(
            &parts[..],
            [Part::Text(a), Part::Ref(Source::Context(c)), Part::Text(b)] if a == "Bearer " && c == "requestId" && b == "!"
        ));
        let parts = parse_value("$request.body.items[0].id", Side::Request).unwrap_or_default();
        assert!(matches!(&parts[..], [Part::Ref(Source::RequestBody(Some(_)))]));
        assert!(parse_value("$response.header.x", Side::Request).is_err());
        assert!(parse_value("${request.header.x", Side::Request).is_err());
        assert!(parse_value("$nonsense", Side::Request).is_err());
    }

    #[test]
    fn targets_depend_on_the_side_and_removals_run_last() {
        let map: Vec<(String, String)> = vec![
            ("remove:header.a".into(), String::new()),
            ("append:header.a".into(), "x".into()),
        ];
        let compiled = compile_mappings(map.iter().map(|(a, b)| (a, b)), Side::Request).unwrap_or_default();
        assert_eq!(compiled[1].action, Action::Remove);
        let empty = [("overwrite:header.x".to_owned(), String::new())];
        assert!(compile_mappings(empty.iter().map(|(a, b)| (a, b)), Side::Request).is_err());
        let status = [("overwrite:statuscode".to_owned(), "201".to_owned())];
        assert!(compile_mappings(status.iter().map(|(a, b)| (a, b)), Side::Request).is_err());
        assert!(compile_mappings(status.iter().map(|(a, b)| (a, b)), Side::Response).is_ok());
        for informational in ["101", "100", "99", "600", "ok"] {
            let status = [("overwrite:statuscode".to_owned(), informational.to_owned())];
            assert!(
                compile_mappings(status.iter().map(|(a, b)| (a, b)), Side::Response).is_err(),
                "{informational}"
            );
        }
    }
}
