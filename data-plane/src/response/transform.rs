//! Response transformation: the route's response mappings (headers, status
//! code) and its body template (HTTP and MOCK integrations), applied to what
//! the integration answered. The body is read only when a mapping or the
//! template needs it.

use crate::config::integration::CompiledResponse;
use crate::config::{CompiledDefinition, RouteSettings};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::inputs::{Inputs, ResponseInputs};
use crate::{Body, full_body};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use pylon_common::model::mapping::{Action, Target};
use pylon_common::model::template::render_bounded;

pub async fn apply(
    settings: &RouteSettings,
    definition: &CompiledDefinition,
    response: Response<Body>,
    inputs: &Inputs<'_>,
    ctx: &RequestContext,
    max_body_bytes: u64,
) -> Result<Response<Body>, GatewayError> {
    if !settings.transforms_response() {
        return Ok(response);
    }
    // The integration response the backend's status selects (REST APIs).
    let selected = if settings.integration_responses.is_empty() {
        None
    } else {
        Some(
            CompiledResponse::select(&settings.integration_responses, response.status()).ok_or_else(
                || {
                    GatewayError::ApiConfiguration(format!(
                        "no integration response matches status {} and there is no default",
                        response.status().as_u16()
                    ))
                },
            )?,
        )
    };
    let (template_type, template_name) = match selected {
        Some(selected) => selected
            .template_for(&inputs.parts.headers)
            .map_or((None, None), |(media_type, name)| (Some(media_type), Some(name))),
        None => (None, settings.response_template.as_deref()),
    };
    let (mut parts, body) = response.into_parts();
    let (bytes, body) = if settings.reads_response_body {
        let limit = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
        (Some(read_limited(body, limit).await?), None)
    } else {
        (None, Some(body))
    };
    let body_json: Option<serde_json::Value> = bytes.as_ref().and_then(|b| serde_json::from_slice(b).ok());
    let seen = ResponseInputs {
        status: parts.status,
        headers: &parts.headers,
        body: bytes.as_ref(),
        body_json: body_json.as_ref(),
    };

    let mut changes = Vec::new();
    let selected_mappings = selected.map(|s| s.mappings.as_slice()).unwrap_or_default();
    for mapping in settings.response_mappings.iter().chain(selected_mappings) {
        let value = match mapping.action {
            Action::Remove => None,
            _ => match inputs.eval(&mapping.value, ctx, Some(&seen)) {
                Some(value) => Some(value),
                None => continue,
            },
        };
        changes.push((mapping.action, &mapping.target, value));
    }
    let mut velocity_override = None;
    let rendered = match template_name {
        None => None,
        Some(name) if definition.velocity.contains_key(name) => {
            let nodes = definition.velocity.get(name).cloned().unwrap_or_default();
            let answer = bytes.as_deref().unwrap_or_default();
            let (text, over) = pylon_common::vtl::render(&nodes, &inputs.velocity(Some(answer), ctx))
                .map_err(|e| GatewayError::ApiConfiguration(format!("{name}: {e}")))?;
            velocity_override = Some(over);
            Some(text)
        }
        Some(name) => {
            let template = definition
                .templates
                .get_template(name)
                .map_err(|e| GatewayError::ApiConfiguration(format!("{name}: {e}")))?;
            let body_value = match (&body_json, &bytes) {
                (Some(json), _) => json.clone(),
                (None, Some(b)) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
                (None, None) => serde_json::Value::Null,
            };
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.into())))
                .collect();
            let context = serde_json::json!({
                "response": {"status": parts.status.as_u16(), "headers": headers, "body": body_value},
                "request": inputs.template_value(),
                "context": ctx.to_value(),
                "stageVariables": inputs.variables,
            });
            Some(
                render_bounded(
                    &template,
                    minijinja::Value::from(minijinja::value::Serde(&context)),
                )
                .map_err(|e| {
                    GatewayError::ApiConfiguration(format!("{name}: {}", crate::error::error_chain(&e)))
                })?,
            )
        }
    };

    if let Some(status) = selected.and_then(|s| s.status) {
        parts.status = status;
    }
    // An integration response's template is for its media type (mappings
    // applied next may still set another).
    if rendered.is_some()
        && let Some(media_type) = template_type.and_then(|t| HeaderValue::from_str(t).ok())
    {
        parts.headers.insert(header::CONTENT_TYPE, media_type);
    }
    // `$context.responseOverride` in a Velocity template has the last word.
    if let Some(over) = &velocity_override {
        if let Some(status) = over.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            parts.status = status;
        }
        for (name, value) in &over.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                GatewayError::ApiConfiguration(format!(
                    "responseOverride.header: {name:?} is not a header name"
                ))
            })?;
            if pylon_common::model::mapping::is_gateway_owned(name.as_str()) {
                return Err(GatewayError::ApiConfiguration(format!(
                    "responseOverride.header: {name} is the gateway's to set"
                )));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                GatewayError::ApiConfiguration(format!("responseOverride.header.{name}: not a header value"))
            })?;
            parts.headers.insert(name, value);
        }
    }
    for (action, target, value) in changes {
        match target {
            Target::Header(name) => {
                let value = value
                    .map(|v| {
                        HeaderValue::from_str(&v).map_err(|_| {
                            GatewayError::ApiConfiguration(format!(
                                "response mapping for {name}: not a header value"
                            ))
                        })
                    })
                    .transpose()?;
                match (action, value) {
                    (Action::Remove, _) => {
                        parts.headers.remove(name);
                    }
                    (Action::Append, Some(v)) => {
                        parts.headers.append(name.clone(), v);
                    }
                    (Action::Overwrite, Some(v)) => {
                        parts.headers.insert(name.clone(), v);
                    }
                    (_, None) => {}
                }
            }
            Target::StatusCode => {
                let code = value.as_deref().unwrap_or("").trim().parse::<u16>().ok();
                // 1xx would break the connection (a 101 without a switch):
                // 200..=599 only, as validation allows for literals.
                parts.status = code
                    .filter(|c| (200..=599).contains(c))
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| {
                        GatewayError::ApiConfiguration(format!(
                            "overwrite:statuscode: {value:?} is not a status code"
                        ))
                    })?;
            }
            Target::Query(_) | Target::Path => {}
        }
    }
    let body = match (rendered, bytes, body) {
        // 204 and 304 have no content (RFC 9110 §15.3.5, §15.4.5).
        _ if matches!(parts.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            full_body(Bytes::new())
        }
        (Some(text), _, _) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            full_body(text)
        }
        (None, Some(bytes), _) => full_body(bytes),
        (None, None, Some(body)) => body,
        (None, None, None) => full_body(Bytes::new()),
    };
    Ok(Response::from_parts(parts, body))
}

/// The integration's whole response body, at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    crate::read_whole(body, limit).await.map_err(|e| match e {
        crate::ReadWholeError::Body(e) => crate::integration::http::body_failed(e),
        crate::ReadWholeError::TooLarge(limit) => GatewayError::InvalidIntegrationResponse(
            format!("response body over {limit} bytes: too large to transform").into(),
        ),
    })
}
