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
use http::{HeaderMap, HeaderValue, header};
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

/// Header changes evaluated against the client's request, applied after.
pub struct Plan {
    headers: Vec<(Action, http::HeaderName, Option<HeaderValue>)>,
    outgoing: Outgoing,
}

/// Evaluates the route's request mappings and its body template (a name
/// in the definition's templates).
///
/// # Errors
/// [`GatewayError::BadRequestParameters`] for a mapped header value that is
/// not one or a mapped path that climbs; [`GatewayError::ApiConfiguration`]
/// for a template that fails.
pub fn plan(
    mappings: &[Mapping],
    template: Option<(&CompiledDefinition, &str)>,
    inputs: &Inputs<'_>,
    ctx: &RequestContext,
) -> Result<Plan, GatewayError> {
    let mut headers = Vec::new();
    let mut outgoing = Outgoing::default();
    let mut query: Option<Vec<(String, String)>> = None;
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
                let pairs = query.get_or_insert_with(|| inputs.query_pairs().to_vec());
                if mapping.action != Action::Append {
                    pairs.retain(|(k, _)| k != name);
                }
                if let Some(value) = value {
                    pairs.push((name.clone(), value));
                }
            }
            Target::Path => {
                let path = value.unwrap_or_default();
                check_path(&path)?;
                outgoing.path = Some(path);
            }
            Target::StatusCode => {}
        }
    }
    outgoing.query = query.map(|pairs| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    });
    if let Some((definition, name)) = template {
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
        outgoing.body = Some(Bytes::from(body));
    }
    Ok(Plan { headers, outgoing })
}

impl Plan {
    /// Applies the header changes to `headers` (the client's, with its
    /// `x-pylon-*` headers already gone) and returns the rest.
    pub fn apply(self, headers: &mut HeaderMap) -> Outgoing {
        for (action, name, value) in self.headers {
            match (action, value) {
                (Action::Remove, _) => {
                    headers.remove(&name);
                }
                (Action::Append, Some(value)) => {
                    headers.append(name, value);
                }
                (Action::Overwrite, Some(value)) => {
                    headers.insert(name, value);
                }
                (_, None) => {}
            }
        }
        if self.outgoing.body.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
        }
        self.outgoing
    }
}

/// A mapped path must be a plain absolute path that stays where it is put.
fn check_path(path: &str) -> Result<(), GatewayError> {
    let invalid = || GatewayError::BadRequestParameters("Invalid mapped path".into());
    if !path.starts_with('/')
        || path.contains(['?', '#', '\\'])
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(invalid());
    }
    crate::integration::check_params(&[("path", path.to_owned())]).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_paths_cannot_climb_or_smuggle() {
        assert!(check_path("/users/7").is_ok());
        for bad in [
            "users",
            "/a/../b",
            "/a?x=1",
            "/a#f",
            "/a b",
            "/a\r\nX: y",
            "/%2e%2e/x",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
