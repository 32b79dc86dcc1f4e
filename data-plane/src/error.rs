//! Every way a request can fail in the data plane, as one enum.
//!
//! Phases return a [`GatewayError`]; none of them writes an error response.
//! [`crate::response::rescue`] is the only place that turns one into a status
//! code, gateway-response type and body.

use crate::request::authorize::AuthorizerError;
use crate::request::body::ClientBodyError;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Request line + headers over the limit.
    #[error("Request Header Fields Too Large")]
    HeadersTooLarge { size: usize, limit: usize },
    /// The URI the backend would be sent, once filled with the request's
    /// path parameters and query, is longer than a URI can be (the `http`
    /// crate's limit): the request made it so (RFC 9110 §15.5.15).
    #[error("URI Too Long")]
    UriTooLong { length: usize, limit: usize },
    /// The request cannot be understood (no Host, a path that is not a path).
    #[error("{0}")]
    MalformedRequest(&'static str),
    /// No API is served at this host.
    #[error("Not Found")]
    UnknownApi,
    /// The API exists but the stage or route does not (AWS answers this with
    /// MISSING_AUTHENTICATION_TOKEN).
    #[error("Missing Authentication Token")]
    NoRoute,
    /// Framing that cannot be trusted (`chunked` twice, Content-Length
    /// fields that disagree): 400, and the connection is closed.
    #[error("{0}")]
    BadFraming(&'static str),
    /// A transfer coding other than `chunked` (RFC 9112 §6.1).
    #[error("Not Implemented")]
    UnsupportedTransferCoding(String),
    /// The body is (or turned out to be) over the payload limit.
    #[error("Request Too Long")]
    BodyTooLarge { limit: u64 },
    /// The client's body stalled, was malformed or cut short, or the client
    /// left: the client's fault, never the backend's.
    #[error("{}", client_body_message(.0))]
    ClientBody(#[source] ClientBodyError),
    #[error("Endpoint request timed out")]
    IntegrationTimeout(Duration),
    /// Connection refused or reset, TLS failure, upstream gone mid-request.
    #[error("Internal server error")]
    IntegrationUnreachable(#[source] BoxError),
    /// The backend answered with something that is not valid HTTP.
    #[error("Internal server error")]
    InvalidIntegrationResponse(#[source] BoxError),
    /// The route's integration cannot be built (e.g. a stage variable that
    /// makes the URI invalid).
    #[error("Internal server error")]
    ApiConfiguration(String),
    /// The API's resource policy does not admit the source address.
    #[error("User: anonymous is not authorized to perform: execute-api:Invoke")]
    AccessDenied { source_ip: std::net::IpAddr },
    /// No API key, or one that is unknown, disabled or not in a usage plan of
    /// this stage.
    #[error("Forbidden")]
    InvalidApiKey(&'static str),
    /// The route's credential (token, identity sources) is missing.
    #[error("Unauthorized")]
    MissingCredential,
    /// A credential that is not valid (RFC 6750 `invalid_token`).
    #[error("Unauthorized")]
    Unauthorized { reason: String },
    /// A token outside its `exp`/`nbf` window.
    #[error("The incoming token has expired")]
    ExpiredToken,
    /// A token whose signature does not verify.
    #[error("Invalid signature")]
    InvalidSignature,
    /// A valid token without any of the route's scopes, or an authorizer's deny.
    #[error("Forbidden")]
    Forbidden {
        reason: String,
        insufficient_scope: bool,
    },
    /// The authorizer (or a JWKS endpoint) could not be reached or failed.
    #[error("Internal server error")]
    AuthorizerFailure(#[source] AuthorizerError),
    /// The request authorizer answered something that is not a decision.
    #[error("Internal server error")]
    AuthorizerConfiguration(#[source] AuthorizerError),
    #[error("{0}")]
    BadRequestParameters(String),
    #[error("{0}")]
    BadRequestBody(String),
    /// The route's request templates have none for the body's media type
    /// and its passthrough behaviour refuses it (AWS: 415).
    #[error("Unsupported Media Type")]
    UnsupportedMediaType(String),
    /// A token bucket (usage plan, stage, node) is empty.
    #[error("Too Many Requests")]
    Throttled { retry_after: Duration },
    /// The key's usage-plan quota for this period is used up.
    #[error("Limit Exceeded")]
    QuotaExceeded { retry_after: Duration },
    /// The shared limits could not be consulted and the stage fails closed.
    #[error("Service Unavailable")]
    LimitsUnavailable(String),
    /// A caller not allowed to invalidate cache entries sent
    /// `Cache-Control: max-age=0` to a stage that refuses that.
    #[error("Forbidden")]
    CacheInvalidationDenied,
    /// A WebSocket handshake for a version other than 13 (RFC 6455 §4.4).
    #[error("Upgrade Required")]
    UnsupportedWebSocketVersion,
    /// A WebSocket message that no route (and no `$default`) takes.
    #[error("Forbidden")]
    NoRouteForMessage,
    /// `@connections`: the WebSocket connection does not exist (any more).
    #[error("Gone")]
    ConnectionGone,
    /// `@connections`: the connection has too many messages queued.
    #[error("Too Many Requests")]
    ConnectionBusy,
    /// `@connections`: the cluster's connection registry (Redis) did not answer.
    #[error("Service Unavailable")]
    ConnectionRegistryUnavailable(String),
    /// The node shut down before the answer was complete: the drain timeout
    /// ended the request (the client did not leave; not a 499).
    #[error("Service Unavailable")]
    ShutDown,
}

impl GatewayError {
    /// What to log about this error, beyond its public message.
    pub fn detail(&self) -> String {
        match self {
            GatewayError::HeadersTooLarge { size, limit } => {
                format!("{size} bytes of request line and headers, limit {limit}")
            }
            GatewayError::BodyTooLarge { limit } => format!("body over {limit} bytes"),
            GatewayError::UriTooLong { length, limit } => {
                format!("the integration URI filled for this request is {length} bytes, limit {limit}")
            }
            GatewayError::ClientBody(e) => error_chain(e),
            GatewayError::UnsupportedTransferCoding(coding) => format!("Transfer-Encoding: {coding}"),
            GatewayError::IntegrationTimeout(after) => format!("no response within {after:?}"),
            GatewayError::IntegrationUnreachable(e) | GatewayError::InvalidIntegrationResponse(e) => {
                error_chain(e.as_ref())
            }
            GatewayError::AuthorizerFailure(e) | GatewayError::AuthorizerConfiguration(e) => error_chain(e),
            GatewayError::ApiConfiguration(why)
            | GatewayError::Unauthorized { reason: why }
            | GatewayError::Forbidden { reason: why, .. } => why.clone(),
            GatewayError::AccessDenied { source_ip } => format!("source {source_ip}"),
            GatewayError::InvalidApiKey(why) => (*why).to_owned(),
            GatewayError::Throttled { retry_after } | GatewayError::QuotaExceeded { retry_after } => {
                format!("retry after {retry_after:?}")
            }
            GatewayError::LimitsUnavailable(why) | GatewayError::ConnectionRegistryUnavailable(why) => {
                why.clone()
            }
            GatewayError::ConnectionGone => "no such WebSocket connection".into(),
            GatewayError::ConnectionBusy => "the connection is not reading its messages".into(),
            GatewayError::CacheInvalidationDenied => "not authorized to invalidate cache entries".into(),
            GatewayError::ShutDown => "the node shut down before the answer (drain timeout)".into(),
            GatewayError::UnsupportedMediaType(media_type) => format!("no request template for {media_type}"),
            GatewayError::MalformedRequest(_)
            | GatewayError::BadFraming(_)
            | GatewayError::MissingCredential
            | GatewayError::NoRouteForMessage
            | GatewayError::UnsupportedWebSocketVersion
            | GatewayError::UnknownApi
            | GatewayError::NoRoute
            | GatewayError::ExpiredToken
            | GatewayError::InvalidSignature
            | GatewayError::BadRequestParameters(_)
            | GatewayError::BadRequestBody(_) => String::new(),
        }
    }
}

/// What a client is told about its own body's failure.
fn client_body_message(error: &ClientBodyError) -> &'static str {
    match error {
        ClientBodyError::Stalled(_) | ClientBodyError::TooSlow(_) => "Request Timeout",
        ClientBodyError::TooLarge { .. } => "Request Too Long",
        ClientBodyError::Malformed(_) | ClientBodyError::Incomplete(_) => "Bad Request",
        ClientBodyError::Abandoned(_) => "Client Closed Request",
    }
}

pub use pylon_common::error::error_chain;
