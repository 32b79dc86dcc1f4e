//! A route's integration, parsed once per config snapshot.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use pylon_common::model::mapping::{Mapping, Side, compile_mappings};
use pylon_proto::config::v1::{Integration, IntegrationResponse, integration::Type};
use std::time::Duration;

#[derive(Debug)]
pub enum CompiledIntegration {
    /// HTTP_PROXY (pass-through) or HTTP (the mapping hooks come with the
    /// request phase); both stream bodies both ways.
    Http {
        uri: IntegrationUri,
        /// The backend method for HTTP integrations (None: the client's).
        method: Option<Method>,
        timeout: Duration,
    },
    Mock {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        /// `${stageVariables.x}` and `$context.requestId` filled per request.
        body: String,
    },
}

impl CompiledIntegration {
    pub fn compile(integration: &Integration) -> Result<CompiledIntegration, String> {
        let timeout = Duration::from_millis(u64::from(integration.timeout_ms));
        match Type::try_from(integration.r#type) {
            Ok(kind @ (Type::Http | Type::HttpProxy)) => {
                let method = if integration.http_method.is_empty() || kind == Type::HttpProxy {
                    None
                } else {
                    Some(
                        Method::from_bytes(integration.http_method.as_bytes())
                            .map_err(|e| format!("http_method: {e}"))?,
                    )
                };
                // (Validation already refused path parameters outside the
                // URI's path.)
                Ok(CompiledIntegration::Http {
                    uri: IntegrationUri::new(&integration.uri),
                    method,
                    timeout,
                })
            }
            Ok(Type::Mock) => {
                let mock = integration.mock.clone().unwrap_or_default();
                let status = StatusCode::from_u16(mock.status_code as u16)
                    .map_err(|e| format!("mock.status_code: {e}"))?;
                let mut headers = Vec::new();
                for (name, value) in &mock.headers {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| format!("mock.headers[{name:?}]: {e}"))?;
                    let value =
                        HeaderValue::from_str(value).map_err(|e| format!("mock.headers[{name:?}]: {e}"))?;
                    headers.push((name, value));
                }
                Ok(CompiledIntegration::Mock {
                    status,
                    headers,
                    body: mock.body,
                })
            }
            Ok(Type::Unspecified) | Err(_) => {
                Err(format!("unsupported integration type {}", integration.r#type))
            }
        }
    }

    #[cfg(test)]
    pub fn test_mock() -> CompiledIntegration {
        CompiledIntegration::Mock {
            status: StatusCode::OK,
            headers: vec![],
            body: String::new(),
        }
    }
}

/// An HTTP integration's URI: the template as written and, when it has
/// nothing to fill per request, the URI it always is, parsed once per
/// snapshot.
#[derive(Debug)]
pub struct IntegrationUri {
    /// With `${stageVariables.x}` and `{param}` left to fill per request.
    pub template: String,
    /// The template parsed, when it has no `$` or `{` (nothing to fill)
    /// and is an absolute `http`/`https` URL; `None` otherwise (the
    /// filled string is parsed, and judged, per request).
    pub literal: Option<Uri>,
}

impl IntegrationUri {
    pub fn new(template: &str) -> IntegrationUri {
        let literal = Some(template)
            .filter(|t| !t.contains(['$', '{', '#']))
            .and_then(|t| Uri::try_from(t).ok())
            .filter(|uri| {
                let tls = match uri.scheme_str() {
                    Some("http") => false,
                    Some("https") => true,
                    _ => return false,
                };
                uri.authority()
                    .is_some_and(|a| pylon_common::model::authority_problem(a.as_str(), tls).is_none())
            });
        IntegrationUri {
            template: template.to_owned(),
            literal,
        }
    }
}

/// One integration response (AWS's REST semantics): selected when its
/// pattern matches the whole of the backend's status code; the default
/// (no pattern) when none does.
#[derive(Debug)]
pub struct CompiledResponse {
    /// `None`: the default response.
    pub pattern: Option<regex::Regex>,
    /// The client's status; `None`: the backend's.
    pub status: Option<StatusCode>,
    pub mappings: Vec<Mapping>,
    /// Template names by media type (lowercase), in name order.
    pub templates: Vec<(String, String)>,
}

impl CompiledResponse {
    pub fn compile(
        response: &IntegrationResponse,
        templates: Vec<(String, String)>,
    ) -> Result<CompiledResponse, String> {
        let pattern = if response.selection_pattern.is_empty() {
            None
        } else {
            Some(
                pylon_common::model::selection_pattern(&response.selection_pattern)
                    .map_err(|e| format!("selection_pattern: {e}"))?,
            )
        };
        let status = match response.status_code {
            0 => None,
            code => Some(
                u16::try_from(code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("status_code: {code} is not a status"))?,
            ),
        };
        let mappings = compile_mappings(&response.response_parameters, Side::Response)
            .map_err(|e| format!("response_parameters: {e}"))?;
        Ok(CompiledResponse {
            pattern,
            status,
            mappings,
            templates,
        })
    }

    /// A template or a mapping reads the backend's body.
    pub fn reads_body(&self) -> bool {
        !self.templates.is_empty() || self.mappings.iter().any(Mapping::reads_response_body)
    }

    /// The response for the backend's `status`: the first whose pattern
    /// matches it whole, else the default; `None` when neither exists.
    pub fn select(responses: &[CompiledResponse], status: StatusCode) -> Option<&CompiledResponse> {
        let code = status.as_str();
        responses
            .iter()
            .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(code)))
            .or_else(|| responses.iter().find(|r| r.pattern.is_none()))
    }

    /// The template for a request with these headers: the first media type
    /// of its `Accept` (in the client's order, parameters ignored) that has
    /// one; else `application/json`'s; else the first by name (AWS picks
    /// the first template when nothing matches).
    /// Returns the media type (the response's `Content-Type` once rendered)
    /// and the template's name.
    pub fn template_for(&self, request: &HeaderMap) -> Option<(&str, &str)> {
        let by_type = |media_type: &str| {
            self.templates
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(media_type))
                .map(|(t, name)| (t.as_str(), name.as_str()))
        };
        for value in request
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for media_type in value.split(',') {
                let media_type = media_type.split(';').next().unwrap_or("").trim();
                if let Some(name) = by_type(media_type) {
                    return Some(name);
                }
            }
        }
        by_type("application/json").or_else(|| {
            self.templates
                .first()
                .map(|(t, name)| (t.as_str(), name.as_str()))
        })
    }
}

/// The request template for a request's `Content-Type` (application/json
/// when it has none), or what passthrough says: `Ok(None)` sends the body
/// as it came.
///
/// # Errors
/// The media type has no template and the behaviour is `NEVER`, or
/// `WHEN_NO_TEMPLATES` with templates present, or the request's
/// `Content-Type` cannot be read ([`crate::headers::media_type`]): 415 (AWS
/// answers UNSUPPORTED_MEDIA_TYPE).
pub fn request_template_for<'t>(
    templates: &'t [(String, String)],
    passthrough: super::Passthrough,
    request: &HeaderMap,
) -> Result<Option<&'t str>, String> {
    let media_type = crate::headers::media_type(request)
        .map_err(str::to_owned)?
        .unwrap_or_else(|| "application/json".to_owned());
    if let Some((_, name)) = templates.iter().find(|(t, _)| *t == media_type) {
        return Ok(Some(name));
    }
    use super::Passthrough as P;
    match passthrough {
        P::WhenNoMatch => Ok(None),
        P::WhenNoTemplates if templates.is_empty() => Ok(None),
        P::WhenNoTemplates | P::Never => Err(media_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Passthrough;

    #[test]
    fn only_a_uri_with_nothing_to_fill_is_parsed_once() {
        let literal = IntegrationUri::new("http://127.0.0.1:8080/pets?v=1");
        assert_eq!(
            literal.literal.map(|uri| uri.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/pets?v=1")
        );
        for per_request in [
            "${stageVariables.backend}/pets",
            "http://127.0.0.1:8080/pets/{id}",
            "ftp://127.0.0.1/pets",
            "/pets",
            "http://bad host/",
            "http://127.0.0.1:99999/pets",
            "http://127.0.0.1/pets#top",
        ] {
            let uri = IntegrationUri::new(per_request);
            assert!(uri.literal.is_none(), "{per_request}");
            assert_eq!(uri.template, per_request);
        }
    }

    #[test]
    fn a_template_is_chosen_by_the_one_content_type_never_by_one_of_two() {
        let templates = vec![("application/json".to_owned(), "json".to_owned())];
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_template_for(&templates, Passthrough::Never, &headers),
            Ok(Some("json")),
            "no Content-Type is JSON"
        );
        headers.append(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().expect("value"),
        );
        assert_eq!(
            request_template_for(&templates, Passthrough::Never, &headers),
            Ok(Some("json"))
        );
        headers.append(header::CONTENT_TYPE, "text/plain".parse().expect("value"));
        assert!(request_template_for(&templates, Passthrough::WhenNoMatch, &headers).is_err());
        let plain: HeaderMap = [(header::CONTENT_TYPE, "text/plain".parse().expect("value"))]
            .into_iter()
            .collect();
        assert_eq!(
            request_template_for(&templates, Passthrough::WhenNoMatch, &plain),
            Ok(None)
        );
        assert!(request_template_for(&templates, Passthrough::Never, &plain).is_err());
    }
}
