//! The only place where an error becomes a response: status, AWS
//! gateway-response type, headers and the `{"message": …}` body, with the
//! API's customised gateway responses applied.

use crate::Body;
use crate::config::{GatewayResponses, ResponseBody};
use crate::error::GatewayError;
use crate::request::body::ClientBodyError;
use http::{HeaderValue, Response, StatusCode, header};
use pylon_common::GatewayResponseType as Type;
use pylon_common::model::template::RenderError;

/// Records in `outcome` that a request (or WebSocket event) failed with
/// `error`: its default status, gateway-response type and message, and
/// whether a throttle or a quota refused it; returns the status.
pub fn record(outcome: &mut crate::context::Outcome, error: &GatewayError) -> StatusCode {
    let (kind, status) = classify(error);
    outcome.status = status.as_u16();
    outcome.throttled = matches!(error, GatewayError::Throttled { .. });
    outcome.quota_exceeded = matches!(error, GatewayError::QuotaExceeded { .. });
    outcome.error_type = Some(kind.as_str());
    outcome.error_message = Some(error.to_string());
    status
}

/// The gateway-response type and default status of an error. One exhaustive
/// match: a new error variant does not compile until it is classified here.
/// A status is the type's own ([`Type::default_status`], the table both
/// planes share) unless the error names a more precise one.
pub fn classify(error: &GatewayError) -> (Type, StatusCode) {
    use GatewayError as E;
    let (kind, status) = match error {
        E::HeadersTooLarge { .. } => (
            Type::Default4xx,
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ),
        E::MalformedRequest(_) | E::BadFraming(_) => (Type::Default4xx, None),
        E::UriTooLong { .. } => (Type::Default4xx, Some(StatusCode::URI_TOO_LONG)),
        E::UnsupportedTransferCoding(_) => (Type::Default5xx, Some(StatusCode::NOT_IMPLEMENTED)),
        E::UnknownApi => (Type::ResourceNotFound, None),
        E::NoRoute | E::NoRouteForMessage => (Type::MissingAuthenticationToken, None),
        E::BodyTooLarge { .. } => (Type::RequestTooLarge, None),
        E::ClientBody(body) => (
            Type::Default4xx,
            Some(match body {
                ClientBodyError::Stalled(_) | ClientBodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
                ClientBodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ClientBodyError::Malformed(_) | ClientBodyError::Incomplete(_) => StatusCode::BAD_REQUEST,
                ClientBodyError::Abandoned(_) => CLIENT_CLOSED_REQUEST,
            }),
        ),
        E::IntegrationTimeout(_) => (Type::IntegrationTimeout, None),
        E::IntegrationUnreachable(_) | E::InvalidIntegrationResponse(_) => (Type::IntegrationFailure, None),
        E::ApiConfiguration(_) => (Type::ApiConfigurationError, None),
        E::AccessDenied { .. } | E::Forbidden { .. } | E::CacheInvalidationDenied => {
            (Type::AccessDenied, None)
        }
        E::InvalidApiKey(_) => (Type::InvalidApiKey, None),
        E::MissingCredential | E::Unauthorized { .. } => (Type::Unauthorized, None),
        E::ExpiredToken => (Type::ExpiredToken, None),
        E::InvalidSignature => (Type::InvalidSignature, None),
        E::AuthorizerFailure(_) => (Type::AuthorizerFailure, None),
        E::AuthorizerConfiguration(_) => (Type::AuthorizerConfigurationError, None),
        E::BadRequestParameters(_) => (Type::BadRequestParameters, None),
        E::BadRequestBody(_) => (Type::BadRequestBody, None),
        E::UnsupportedMediaType(_) => (Type::UnsupportedMediaType, None),
        E::Throttled { .. } => (Type::Throttled, None),
        E::QuotaExceeded { .. } => (Type::QuotaExceeded, None),
        E::LimitsUnavailable(_) | E::ConnectionRegistryUnavailable(_) | E::ShutDown => {
            (Type::Default5xx, Some(StatusCode::SERVICE_UNAVAILABLE))
        }
        E::ConnectionGone => (Type::Default4xx, Some(StatusCode::GONE)),
        E::UnsupportedWebSocketVersion => (Type::Default4xx, Some(StatusCode::UPGRADE_REQUIRED)),
        E::ConnectionBusy => (Type::Default4xx, Some(StatusCode::TOO_MANY_REQUESTS)),
    };
    (kind, status.unwrap_or_else(|| kind.default_status()))
}

/// nginx's status for a client that left before its answer (logged and
/// counted as a 4xx; the client is not there to read it).
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// The `WWW-Authenticate` challenge (RFC 6750) an authentication failure
/// carries.
fn challenge(error: &GatewayError) -> Option<String> {
    let (code, description) = match error {
        GatewayError::MissingCredential => return Some("Bearer".into()),
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
                tracing::warn!(request_id, response_type = kind.as_str(), error = %crate::error::error_chain(&why), "gateway response template failed; default body sent");
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
    if matches!(
        error,
        GatewayError::BodyTooLarge { .. }
            | GatewayError::ClientBody(_)
            | GatewayError::UnsupportedTransferCoding(_)
            | GatewayError::BadFraming(_)
    ) {
        // The rest of the body is not read: this connection cannot carry another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let GatewayError::Throttled { retry_after } | GatewayError::QuotaExceeded { retry_after } = error {
        // Whole seconds, at least one (RFC 9110 §10.2.3).
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if matches!(error, GatewayError::UnsupportedWebSocketVersion) {
        // A 426 names the protocol to upgrade to (RFC 9110 §15.5.22).
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
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
) -> Result<String, RenderError> {
    let template = responses
        .templates
        .get_template(name)
        .map_err(RenderError::Template)?;
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
    use crate::request::authorize::AuthorizerError;
    use std::time::Duration;

    fn io_error() -> crate::error::BoxError {
        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    /// Each variant's place in the table below. Exhaustive: a new variant
    /// does not compile until it has one, and the table test then fails
    /// until it has a row.
    fn variant(error: &GatewayError) -> usize {
        use GatewayError as E;
        match error {
            E::HeadersTooLarge { .. } => 0,
            E::MalformedRequest(_) => 1,
            E::UnsupportedTransferCoding(_) => 2,
            E::UnknownApi => 3,
            E::NoRoute => 4,
            E::BodyTooLarge { .. } => 5,
            E::ClientBody(_) => 6,
            E::IntegrationTimeout(_) => 7,
            E::IntegrationUnreachable(_) => 8,
            E::InvalidIntegrationResponse(_) => 9,
            E::ApiConfiguration(_) => 10,
            E::AccessDenied { .. } => 11,
            E::InvalidApiKey(_) => 12,
            E::MissingCredential => 13,
            E::Unauthorized { .. } => 14,
            E::ExpiredToken => 15,
            E::InvalidSignature => 16,
            E::Forbidden { .. } => 17,
            E::AuthorizerFailure(_) => 18,
            E::AuthorizerConfiguration(_) => 19,
            E::BadRequestParameters(_) => 20,
            E::BadRequestBody(_) => 21,
            E::Throttled { .. } => 22,
            E::QuotaExceeded { .. } => 23,
            E::LimitsUnavailable(_) => 24,
            E::CacheInvalidationDenied => 25,
            E::NoRouteForMessage => 26,
            E::ConnectionGone => 27,
            E::ConnectionBusy => 28,
            E::ConnectionRegistryUnavailable(_) => 29,
            E::UnsupportedWebSocketVersion => 30,
            E::BadFraming(_) => 31,
            E::ShutDown => 32,
            E::UnsupportedMediaType(_) => 33,
            E::UriTooLong { .. } => 34,
        }
    }
    const VARIANTS: usize = 35;

    #[test]
    fn every_error_has_the_aws_status_type_and_message() {
        use GatewayError as E;
        let second = Duration::from_secs(1);
        let table: Vec<(GatewayError, u16, &str, &str)> = vec![
            (
                E::HeadersTooLarge {
                    size: 20_000,
                    limit: 10_240,
                },
                431,
                "DEFAULT_4XX",
                "Request Header Fields Too Large",
            ),
            (
                E::MalformedRequest("Missing Host header"),
                400,
                "DEFAULT_4XX",
                "Missing Host header",
            ),
            (E::ShutDown, 503, "DEFAULT_5XX", "Service Unavailable"),
            (
                E::UriTooLong {
                    length: 70_000,
                    limit: 65_534,
                },
                414,
                "DEFAULT_4XX",
                "URI Too Long",
            ),
            (
                E::UnsupportedMediaType("text/plain".into()),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "Unsupported Media Type",
            ),
            (
                E::BadFraming("chunked is applied more than once"),
                400,
                "DEFAULT_4XX",
                "chunked is applied more than once",
            ),
            (
                E::UnsupportedTransferCoding("gzip, chunked".into()),
                501,
                "DEFAULT_5XX",
                "Not Implemented",
            ),
            (E::UnknownApi, 404, "RESOURCE_NOT_FOUND", "Not Found"),
            (
                E::NoRoute,
                403,
                "MISSING_AUTHENTICATION_TOKEN",
                "Missing Authentication Token",
            ),
            (
                E::BodyTooLarge { limit: 10 },
                413,
                "REQUEST_TOO_LARGE",
                "Request Too Long",
            ),
            (
                E::ClientBody(ClientBodyError::Stalled(second)),
                408,
                "DEFAULT_4XX",
                "Request Timeout",
            ),
            (
                E::ClientBody(ClientBodyError::TooSlow(second)),
                408,
                "DEFAULT_4XX",
                "Request Timeout",
            ),
            (
                E::ClientBody(ClientBodyError::Malformed(io_error())),
                400,
                "DEFAULT_4XX",
                "Bad Request",
            ),
            (
                E::ClientBody(ClientBodyError::Incomplete(io_error())),
                400,
                "DEFAULT_4XX",
                "Bad Request",
            ),
            (
                E::ClientBody(ClientBodyError::Abandoned(io_error())),
                499,
                "DEFAULT_4XX",
                "Client Closed Request",
            ),
            (
                E::IntegrationTimeout(Duration::from_secs(29)),
                504,
                "INTEGRATION_TIMEOUT",
                "Endpoint request timed out",
            ),
            (
                E::IntegrationUnreachable(io_error()),
                502,
                "INTEGRATION_FAILURE",
                "Internal server error",
            ),
            (
                E::InvalidIntegrationResponse(io_error()),
                502,
                "INTEGRATION_FAILURE",
                "Internal server error",
            ),
            (
                E::ApiConfiguration("x".into()),
                500,
                "API_CONFIGURATION_ERROR",
                "Internal server error",
            ),
            (
                E::AccessDenied {
                    source_ip: std::net::IpAddr::from([10, 0, 0, 1]),
                },
                403,
                "ACCESS_DENIED",
                "User: anonymous is not authorized to perform: execute-api:Invoke",
            ),
            (
                E::InvalidApiKey("unknown key"),
                403,
                "INVALID_API_KEY",
                "Forbidden",
            ),
            (E::MissingCredential, 401, "UNAUTHORIZED", "Unauthorized"),
            (
                E::Unauthorized { reason: "bad".into() },
                401,
                "UNAUTHORIZED",
                "Unauthorized",
            ),
            (
                E::ExpiredToken,
                403,
                "EXPIRED_TOKEN",
                "The incoming token has expired",
            ),
            (E::InvalidSignature, 403, "INVALID_SIGNATURE", "Invalid signature"),
            (
                E::Forbidden {
                    reason: "no".into(),
                    insufficient_scope: true,
                },
                403,
                "ACCESS_DENIED",
                "Forbidden",
            ),
            (
                E::AuthorizerFailure(AuthorizerError::Status {
                    uri: "http://authorizer".into(),
                    status: StatusCode::BAD_GATEWAY,
                }),
                500,
                "AUTHORIZER_FAILURE",
                "Internal server error",
            ),
            (
                E::AuthorizerConfiguration(AuthorizerError::Invalid {
                    uri: "http://authorizer".into(),
                    what: "no boolean isAuthorized",
                }),
                500,
                "AUTHORIZER_CONFIGURATION_ERROR",
                "Internal server error",
            ),
            (
                E::BadRequestParameters("Missing query q".into()),
                400,
                "BAD_REQUEST_PARAMETERS",
                "Missing query q",
            ),
            (
                E::BadRequestBody("Invalid request body".into()),
                400,
                "BAD_REQUEST_BODY",
                "Invalid request body",
            ),
            (
                E::Throttled { retry_after: second },
                429,
                "THROTTLED",
                "Too Many Requests",
            ),
            (
                E::QuotaExceeded { retry_after: second },
                429,
                "QUOTA_EXCEEDED",
                "Limit Exceeded",
            ),
            (
                E::LimitsUnavailable("redis down".into()),
                503,
                "DEFAULT_5XX",
                "Service Unavailable",
            ),
            (E::CacheInvalidationDenied, 403, "ACCESS_DENIED", "Forbidden"),
            (
                E::NoRouteForMessage,
                403,
                "MISSING_AUTHENTICATION_TOKEN",
                "Forbidden",
            ),
            (E::ConnectionGone, 410, "DEFAULT_4XX", "Gone"),
            (
                E::UnsupportedWebSocketVersion,
                426,
                "DEFAULT_4XX",
                "Upgrade Required",
            ),
            (E::ConnectionBusy, 429, "DEFAULT_4XX", "Too Many Requests"),
            (
                E::ConnectionRegistryUnavailable("redis down".into()),
                503,
                "DEFAULT_5XX",
                "Service Unavailable",
            ),
        ];
        let covered: std::collections::BTreeSet<usize> = table.iter().map(|(e, ..)| variant(e)).collect();
        assert_eq!(covered, (0..VARIANTS).collect(), "every variant has a row");
        for (error, status, kind, message) in table {
            let (got_kind, got_status) = classify(&error);
            assert_eq!(
                (got_status.as_u16(), got_kind.as_str()),
                (status, kind),
                "{error:?}"
            );
            assert_eq!(error.to_string(), message);
            // The response carries the same.
            let response = respond(&error, None, "r-1");
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            assert_eq!(
                response
                    .headers()
                    .get(super::super::ERROR_TYPE)
                    .map(|v| v.as_bytes()),
                Some(kind.as_bytes())
            );
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
            body.ok().as_deref(),
            Some(r#"{"error": "Too Many Requests", "type": "THROTTLED", "id": "r-9"}"#)
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
