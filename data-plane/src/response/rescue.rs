//! The only place where an error becomes a response: status, AWS
//! gateway-response type, headers and the `{"message": …}` body, with the
//! API's customised gateway responses applied.

use crate::Body;
use crate::config::{GatewayResponses, ResponseBody};
use crate::error::GatewayError;
use http::{HeaderValue, Response, StatusCode, header};
use pylon_common::GatewayResponseType as Type;

/// The gateway-response type and default status of an error. One exhaustive
/// match: a new error variant does not compile until it is classified here.
pub fn classify(error: &GatewayError) -> (Type, StatusCode) {
    match error {
        GatewayError::HeadersTooLarge { .. } => {
            (Type::Default4xx, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        GatewayError::MalformedRequest(_) => (Type::Default4xx, StatusCode::BAD_REQUEST),
        GatewayError::UnknownApi => (Type::ResourceNotFound, StatusCode::NOT_FOUND),
        GatewayError::NoRoute => (Type::MissingAuthenticationToken, StatusCode::FORBIDDEN),
        GatewayError::BodyTooLarge { .. } => (Type::RequestTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
        GatewayError::IntegrationTimeout(_) => (Type::IntegrationTimeout, StatusCode::GATEWAY_TIMEOUT),
        GatewayError::IntegrationUnreachable(_) => (Type::IntegrationFailure, StatusCode::BAD_GATEWAY),
        GatewayError::InvalidIntegrationResponse(_) => (Type::IntegrationFailure, StatusCode::BAD_GATEWAY),
        GatewayError::ApiConfiguration(_) => (Type::ApiConfigurationError, StatusCode::INTERNAL_SERVER_ERROR),
        GatewayError::AccessDenied { .. } => (Type::AccessDenied, StatusCode::FORBIDDEN),
        GatewayError::InvalidApiKey(_) => (Type::InvalidApiKey, StatusCode::FORBIDDEN),
        GatewayError::Unauthorized { .. } => (Type::Unauthorized, StatusCode::UNAUTHORIZED),
        GatewayError::ExpiredToken => (Type::ExpiredToken, StatusCode::FORBIDDEN),
        GatewayError::InvalidSignature => (Type::InvalidSignature, StatusCode::FORBIDDEN),
        GatewayError::Forbidden { .. } => (Type::AccessDenied, StatusCode::FORBIDDEN),
        GatewayError::AuthorizerFailure(_) => (Type::AuthorizerFailure, StatusCode::INTERNAL_SERVER_ERROR),
        GatewayError::AuthorizerConfiguration(_) => (
            Type::AuthorizerConfigurationError,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        GatewayError::BadRequestParameters(_) => (Type::BadRequestParameters, StatusCode::BAD_REQUEST),
        GatewayError::BadRequestBody(_) => (Type::BadRequestBody, StatusCode::BAD_REQUEST),
        GatewayError::Throttled { .. } => (Type::Throttled, StatusCode::TOO_MANY_REQUESTS),
        GatewayError::QuotaExceeded { .. } => (Type::QuotaExceeded, StatusCode::TOO_MANY_REQUESTS),
        GatewayError::LimitsUnavailable(_) => (Type::Default5xx, StatusCode::SERVICE_UNAVAILABLE),
        GatewayError::CacheInvalidationDenied => (Type::AccessDenied, StatusCode::FORBIDDEN),
        GatewayError::ConnectionGone => (Type::Default4xx, StatusCode::GONE),
        GatewayError::ConnectionBusy => (Type::Default4xx, StatusCode::TOO_MANY_REQUESTS),
        GatewayError::ConnectionRegistryUnavailable(_) => (Type::Default5xx, StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// The `WWW-Authenticate` challenge (RFC 6750) an authentication failure
/// carries.
fn challenge(error: &GatewayError) -> Option<String> {
    let (code, description) = match error {
        GatewayError::Unauthorized { reason } if reason == "missing token" => return Some("Bearer".into()),
        GatewayError::Unauthorized { reason } => ("invalid_token", reason.as_str()),
        GatewayError::ExpiredToken => ("invalid_token", "the token has expired or is not yet valid"),
        GatewayError::InvalidSignature => ("invalid_token", "the token's signature does not verify"),
        GatewayError::Forbidden {
            insufficient_scope: true,
            ..
        } => ("insufficient_scope", "the token has none of the route's scopes"),
        _ => return None,
    };
    let description: String = description
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    Some(format!(
        r#"Bearer error="{code}", error_description="{description}""#
    ))
}

/// Builds the response for `error`. `responses` are the serving API's
/// customisations (none when the request never reached an API).
pub fn respond(
    error: &GatewayError,
    responses: Option<&GatewayResponses>,
    request_id: &str,
) -> Response<Body> {
    let (kind, default_status) = classify(error);
    let message = error.to_string();
    let custom = responses.and_then(|r| r.lookup(kind, default_status));
    let status = custom.and_then(|c| c.status).unwrap_or(default_status);
    let default_body = || serde_json::json!({ "message": message }).to_string();
    let body = match (custom.and_then(|c| c.body.as_ref()), responses) {
        (Some(ResponseBody::Text(text)), _) => render(text, &message, request_id),
        (Some(ResponseBody::Template(name)), Some(responses)) => {
            render_template(responses, name, kind, &message, request_id).unwrap_or_else(|why| {
                tracing::warn!(request_id, response_type = kind.as_str(), error = %why, "gateway response template failed; default body sent");
                default_body()
            })
        }
        _ => default_body(),
    };
    let mut response = Response::new(crate::full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(kind.as_str()) {
        headers.insert(super::ERROR_TYPE, value);
    }
    if matches!(error, GatewayError::BodyTooLarge { .. }) {
        // The rest of the body is not read: this connection cannot carry another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let GatewayError::Throttled { retry_after } | GatewayError::QuotaExceeded { retry_after } = error {
        // Whole seconds, at least one (RFC 9110 §10.2.3).
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if let Some(value) = challenge(error).and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    if let Some(custom) = custom {
        for (name, value) in &custom.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    response
}

/// Renders a minijinja gateway-response template with `context.requestId`
/// and `context.error.message|messageString|responseType`.
fn render_template(
    responses: &GatewayResponses,
    name: &str,
    kind: Type,
    message: &str,
    request_id: &str,
) -> Result<String, String> {
    let template = responses
        .templates
        .get_template(name)
        .map_err(|e| e.to_string())?;
    let context = serde_json::json!({"context": {
        "requestId": request_id,
        "error": {
            "message": message,
            "messageString": serde_json::Value::String(message.to_owned()).to_string(),
            "responseType": kind.as_str(),
        },
    }});
    pylon_common::model::template::render_bounded(
        &template,
        minijinja::Value::from(minijinja::value::Serde(&context)),
    )
}

/// Fills `$context.error.message`, `$context.error.messageString` (quoted
/// JSON string) and `$context.requestId` into a body template.
fn render(template: &str, message: &str, request_id: &str) -> String {
    let quoted = serde_json::Value::String(message.to_owned()).to_string();
    template
        .replace("$context.error.messageString", &quoted)
        .replace("$context.error.message", message)
        .replace("$context.requestId", request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn io_error() -> crate::error::BoxError {
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[test]
    fn every_error_has_the_aws_status_type_and_message() {
        let table: Vec<(GatewayError, u16, &str, &str)> = vec![
            (
                GatewayError::HeadersTooLarge {
                    size: 20_000,
                    limit: 10_240,
                },
                431,
                "DEFAULT_4XX",
                "Request Header Fields Too Large",
            ),
            (
                GatewayError::MalformedRequest("Missing Host header"),
                400,
                "DEFAULT_4XX",
                "Missing Host header",
            ),
            (GatewayError::UnknownApi, 404, "RESOURCE_NOT_FOUND", "Not Found"),
            (
                GatewayError::NoRoute,
                403,
                "MISSING_AUTHENTICATION_TOKEN",
                "Missing Authentication Token",
            ),
            (
                GatewayError::BodyTooLarge { limit: 10 },
                413,
                "REQUEST_TOO_LARGE",
                "Request Too Long",
            ),
            (
                GatewayError::IntegrationTimeout(Duration::from_secs(29)),
                504,
                "INTEGRATION_TIMEOUT",
                "Endpoint request timed out",
            ),
            (
                GatewayError::IntegrationUnreachable(io_error()),
                502,
                "INTEGRATION_FAILURE",
                "Internal server error",
            ),
            (
                GatewayError::InvalidIntegrationResponse(io_error()),
                502,
                "INTEGRATION_FAILURE",
                "Internal server error",
            ),
            (
                GatewayError::ApiConfiguration("x".into()),
                500,
                "API_CONFIGURATION_ERROR",
                "Internal server error",
            ),
        ];
        for (error, status, kind, message) in table {
            let (got_kind, got_status) = classify(&error);
            assert_eq!(
                (got_status.as_u16(), got_kind.as_str()),
                (status, kind),
                "{error:?}"
            );
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_minijinja_gateway_response_template_renders_the_error() {
        let mut responses = GatewayResponses::default();
        responses
            .templates
            .add_template_owned("THROTTLED".to_owned(), r#"{"error": {{ context.error.message | tojson }}, "type": "{{ context.error.responseType }}", "id": "{{ context.requestId }}"}"#.to_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        let body = render_template(
            &responses,
            "THROTTLED",
            Type::Throttled,
            "Too Many Requests",
            "r-9",
        );
        assert_eq!(
            body.as_deref(),
            Ok(r#"{"error": "Too Many Requests", "type": "THROTTLED", "id": "r-9"}"#)
        );
    }

    #[test]
    fn a_template_gets_the_message_and_request_id() {
        assert_eq!(
            render(
                r#"{"error": $context.error.messageString, "id": "$context.requestId"}"#,
                "Nope",
                "r-1"
            ),
            r#"{"error": "Nope", "id": "r-1"}"#
        );
    }
}
