//! Every way a request can fail in the data plane, as one enum.
//!
//! Phases return a [`GatewayError`]; none of them writes an error response.
//! [`crate::response::rescue`] is the only place that turns one into a status
//! code, gateway-response type and body.

use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Request line + headers over the limit.
    #[error("Request Header Fields Too Large")]
    HeadersTooLarge { size: usize, limit: usize },
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
    /// The body is (or turned out to be) over the payload limit.
    #[error("Request Too Long")]
    BodyTooLarge { limit: u64 },
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
}

impl GatewayError {
    /// What to log about this error, beyond its public message.
    pub fn detail(&self) -> String {
        match self {
            GatewayError::HeadersTooLarge { size, limit } => {
                format!("{size} bytes of request line and headers, limit {limit}")
            }
            GatewayError::BodyTooLarge { limit } => format!("body over {limit} bytes"),
            GatewayError::IntegrationTimeout(after) => format!("no response within {after:?}"),
            GatewayError::IntegrationUnreachable(e) | GatewayError::InvalidIntegrationResponse(e) => {
                let mut text = e.to_string();
                let mut source = e.source();
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            }
            GatewayError::ApiConfiguration(why) => why.clone(),
            GatewayError::MalformedRequest(_) | GatewayError::UnknownApi | GatewayError::NoRoute => {
                String::new()
            }
        }
    }
}
