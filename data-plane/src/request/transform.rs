//! Request transformation: the route's parameter mappings applied (headers,
//! query string, path), and for HTTP integrations the body mapping template
//! rendered. (Client `x-pylon-*` headers are gone already:
//! [`crate::request::admit`].)
//!
//! Values are evaluated against the request as the client sent it, then
//! applied; a header value that is not a valid header (CR, LF, other control
//! characters) is refused with 400, never written.

use crate::config::CompiledDefinition;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::inputs::Inputs;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use pylon_common::model::mapping::{Action, Mapping, Target};
use pylon_common::model::template::render_bounded;

/// What the integration sends instead of what the client sent.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The query string to send (without `?`), when a mapping changed it.
    pub query: Option<String>,
    /// The path to send, when `overwrite:path` set it.
    pub path: Option<String>,
    /// The body to send, when a template rendered it.
    pub body: Option<Bytes>,
}

/// One header change a mapping makes: the action, the header, the value.
pub type HeaderChange = (Action, http::HeaderName, Option<HeaderValue>);

/// Header changes evaluated against the client's request, applied after.
pub struct Plan {
    headers: Vec<HeaderChange>,
    outgoing: Outgoing,
}

/// Evaluates the route's request mappings (headers, query string, path).
///
/// # Errors
/// [`GatewayError::BadRequestParameters`] for a mapped header value that is
/// not one or a mapped path that climbs.
pub fn plan(mappings: &[Mapping], inputs: &Inputs<'_>, ctx: &RequestContext) -> Result<Plan, GatewayError> {
    let mut headers = Vec::new();
    let mut outgoing = Outgoing::default();
    let mut query: Option<QueryEdit<'_>> = None;
    for mapping in mappings {
        let value = match mapping.action {
            Action::Remove => None,
            _ => match inputs.eval(&mapping.value, ctx, None) {
                Some(value) => Some(value),
                None => continue,
            },
        };
        match &mapping.target {
            Target::Header(name) => {
                let value = value
                    .map(|v| {
                        HeaderValue::from_str(&v).map_err(|_| {
                            GatewayError::BadRequestParameters(format!("Invalid value for header {name}"))
                        })
                    })
                    .transpose()?;
                headers.push((mapping.action, name.clone(), value));
            }
            Target::Query(name) => {
                let edit =
                    query.get_or_insert_with(|| QueryEdit::new(inputs.parts.uri.query().unwrap_or("")));
                if mapping.action != Action::Append {
                    edit.remove(name);
                }
                if let Some(value) = value {
                    edit.add(name, value);
                }
            }
            Target::Path => {
                let path = value.unwrap_or_default();
                check_path(&path)?;
                outgoing.path = Some(percent_encode_path(path));
            }
            Target::StatusCode => {}
        }
    }
    outgoing.query = query.map(QueryEdit::finish);
    Ok(Plan { headers, outgoing })
}

/// The client's query string as query mappings change it: the parameters
/// no mapping names are sent byte for byte as the client wrote them (a
/// backend that signs or compares its query sees the client's own; `b`
/// stays `b`, `%20` stays `%20`); a parameter a mapping removes goes, with
/// every spelling of its name; one a mapping sets is added at the end,
/// form-encoded.
struct QueryEdit<'a> {
    segments: Vec<Segment<'a>>,
}

enum Segment<'a> {
    /// A client's `name=value` as written, and its name decoded.
    Client { raw: &'a str, name: Option<String> },
    /// A mapped parameter: name and value, not encoded yet.
    Mapped(String, String),
}

impl<'a> QueryEdit<'a> {
    fn new(query: &'a str) -> QueryEdit<'a> {
        let segments = if query.is_empty() {
            Vec::new()
        } else {
            // Empty segments (`a=1&&b=2&`) are kept: the client's part of
            // the query reaches the backend byte for byte.
            query
                .split('&')
                .map(|raw| Segment::Client {
                    raw,
                    name: form_urlencoded::parse(raw.as_bytes())
                        .next()
                        .map(|(name, _)| name.into_owned()),
                })
                .collect()
        };
        QueryEdit { segments }
    }

    fn remove(&mut self, name: &str) {
        self.segments.retain(|segment| match segment {
            Segment::Client { name: Some(own), .. } | Segment::Mapped(own, _) => own != name,
            Segment::Client { name: None, .. } => true,
        });
    }

    fn add(&mut self, name: &str, value: String) {
        self.segments.push(Segment::Mapped(name.to_owned(), value));
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            match segment {
                Segment::Client { raw, .. } => out.push_str(raw),
                Segment::Mapped(name, value) => {
                    out.push_str(
                        &form_urlencoded::Serializer::new(String::new())
                            .append_pair(name, value)
                            .finish(),
                    );
                }
            }
        }
        out
    }
}

/// Renders a route's body template (a name in the definition's templates).
///
/// # Errors
/// [`GatewayError::ApiConfiguration`] for a template that fails.
pub fn render(
    definition: &CompiledDefinition,
    name: &str,
    inputs: &Inputs<'_>,
    ctx: &RequestContext,
) -> Result<Bytes, GatewayError> {
    if let Some(nodes) = definition.velocity.get(name) {
        let (text, _) = pylon_common::vtl::render(nodes, &inputs.velocity(None, ctx))
            .map_err(|e| GatewayError::ApiConfiguration(format!("{name}: {e}")))?;
        return Ok(Bytes::from(text));
    }
    let template = definition
        .templates
        .get_template(name)
        .map_err(|e| GatewayError::ApiConfiguration(format!("{name}: {e}")))?;
    let context = serde_json::json!({
        "request": inputs.template_value(),
        "context": ctx.to_value(),
        "stageVariables": inputs.variables,
    });
    let body = render_bounded(
        &template,
        minijinja::Value::from(minijinja::value::Serde(&context)),
    )
    .map_err(|e| GatewayError::ApiConfiguration(format!("{name}: {}", crate::error::error_chain(&e))))?;
    Ok(Bytes::from(body))
}

impl Plan {
    /// The header changes, in the order they apply.
    pub fn header_changes(&self) -> &[HeaderChange] {
        &self.headers
    }

    /// Applies the header changes to `headers` (the client's) and hands
    /// over the rest (once).
    pub fn apply(&mut self, headers: &mut HeaderMap) -> Outgoing {
        // (Only a stage that allows underscores in names lets them in.)
        let underscores = headers.keys().any(|k| k.as_str().contains('_'));
        for (action, name, value) in &self.headers {
            if underscores {
                // A CGI-style backend reads `x_user` as `x-user`: a header
                // the mapping sets has no other spelling beside it.
                let twins: Vec<http::HeaderName> = headers
                    .keys()
                    .filter(|k| k.as_str().contains('_') && k.as_str().replace('_', "-") == name.as_str())
                    .cloned()
                    .collect();
                for twin in twins {
                    headers.remove(twin);
                }
            }
            match (action, value) {
                (Action::Remove, _) => {
                    headers.remove(name);
                }
                (Action::Append, Some(value)) => {
                    headers.append(name.clone(), value.clone());
                }
                (Action::Overwrite, Some(value)) => {
                    headers.insert(name.clone(), value.clone());
                }
                (_, None) => {}
            }
        }
        std::mem::take(&mut self.outgoing)
    }
}

/// The values a backend is told for header `name`: the client's, as the
/// header changes leave them.
pub fn changed_values<'a>(
    changes: &'a [HeaderChange],
    client: &'a HeaderMap,
    name: &http::HeaderName,
) -> Vec<&'a HeaderValue> {
    let mut values: Vec<&HeaderValue> = client.get_all(name).iter().collect();
    for (action, changed, value) in changes {
        if changed != name {
            continue;
        }
        match (action, value) {
            (Action::Remove, _) => values.clear(),
            (Action::Append, Some(value)) => values.push(value),
            (Action::Overwrite, Some(value)) => values = vec![value],
            (_, None) => {}
        }
    }
    values
}

/// A mapped path must be a plain absolute path that stays where it is put
/// (a space is no smuggling: [`percent_encode_path`] sends it as `%20`).
fn check_path(path: &str) -> Result<(), GatewayError> {
    let invalid = || GatewayError::BadRequestParameters("Invalid mapped path".into());
    if !path.starts_with('/') || path.contains(['?', '#', '\\']) || path.chars().any(char::is_control) {
        return Err(invalid());
    }
    crate::integration::check_params(&[("path", path.to_owned())]).map_err(|_| invalid())
}

/// A mapped path goes as a valid path (RFC 3986 §3.3): every character
/// outside `pchar` and `/` is percent-encoded (its UTF-8 bytes), and so is
/// a `%` that does not start an escape; escapes already there (a path
/// parameter as the client encoded it) are kept.
fn percent_encode_path(path: String) -> String {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
    let bytes = path.as_bytes();
    let escape_at = |i: usize| {
        bytes.get(i) == Some(&b'%')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    };
    if (0..bytes.len()).all(|i| allowed(bytes[i]) || escape_at(i)) {
        return path;
    }
    let mut encoded = String::with_capacity(path.len() + 16);
    for (i, &byte) in bytes.iter().enumerate() {
        if allowed(byte) || escape_at(i) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_paths_leave_as_valid_paths() {
        assert_eq!(percent_encode_path("/mapped/café".into()), "/mapped/caf%C3%A9");
        assert_eq!(percent_encode_path("/plain/7".into()), "/plain/7");
        assert_eq!(
            percent_encode_path("/a<b>`\"{|}^".into()),
            "/a%3Cb%3E%60%22%7B%7C%7D%5E"
        );
        assert_eq!(percent_encode_path("/a%b/50%".into()), "/a%25b/50%25");
        assert_eq!(percent_encode_path("/kept%20escape".into()), "/kept%20escape");
        assert!(check_path("/New York").is_ok());
        assert_eq!(percent_encode_path("/New York".into()), "/New%20York");
    }

    #[test]
    fn query_mappings_change_only_the_parameters_they_name() {
        let edited = |query: &str, changes: &[(&str, Option<&str>, bool)]| {
            let mut edit = QueryEdit::new(query);
            for (name, value, append) in changes {
                if !append {
                    edit.remove(name);
                }
                if let Some(value) = value {
                    edit.add(name, (*value).to_owned());
                }
            }
            edit.finish()
        };
        assert_eq!(
            edited("a=1&flag&sp=x%20y+z&b=2", &[("b", Some("new value"), false)]),
            "a=1&flag&sp=x%20y+z&b=new+value"
        );
        assert_eq!(edited("a=1&%61=2&b=3", &[("a", None, false)]), "b=3");
        assert_eq!(edited("a=1", &[("a", Some("2"), true)]), "a=1&a=2");
        assert_eq!(edited("", &[("x", Some("&="), false)]), "x=%26%3D");
        assert_eq!(edited("&&a=1&", &[("b", None, false)]), "&&a=1&");
        assert_eq!(edited("x=1&&y=2&", &[("y", None, false)]), "x=1&&");
        assert_eq!(edited("x=1&&y=2", &[("z", Some("3"), true)]), "x=1&&y=2&z=3");
        assert_eq!(
            edited("a=1", &[("b", Some("1"), false), ("b", None, false)]),
            "a=1"
        );
    }

    #[test]
    fn mapped_paths_cannot_climb_or_smuggle() {
        assert!(check_path("/users/7").is_ok());
        for bad in ["users", "/a/../b", "/a?x=1", "/a#f", "/a\r\nX: y", "/%2e%2e/x"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
