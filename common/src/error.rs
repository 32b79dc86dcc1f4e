//! The one table that turns an error code into a gRPC code, and the
//! AWS-style gateway-response types with their default statuses (the data
//! plane's statuses come from here).
//!
//! Each layer keeps its own error enum; they all end here, in exhaustive matches
//! (no `_ =>`), so adding a code forces a decision in each mapping.

use http::StatusCode;
use std::fmt;

/// What went wrong, independent of the protocol that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Input is malformed or out of range; the message names every field at fault.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// An optimistic-concurrency check failed: the resource moved to another revision.
    Conflict,
    /// The request is valid but the current state forbids it (e.g. a stage points
    /// at a deployment that does not exist, or a resource is still referenced).
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    ResourceExhausted,
    /// The cluster cannot serve now (no leader, shutting down); safe to retry.
    Unavailable,
    DeadlineExceeded,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
    ];

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Conflict => tonic::Code::Aborted,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The code a caller gets back for a gRPC status (used by clients that
    /// forward or retry).
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            tonic::Code::Unavailable | tonic::Code::Cancelled => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::DataLoss => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

macro_rules! gateway_response_types {
    ($($variant:ident = $name:literal => $status:expr),* $(,)?) => {
        /// AWS API Gateway's gateway-response types, each with its default status.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GatewayResponseType {
            $($variant),*
        }

        impl GatewayResponseType {
            pub const ALL: &'static [GatewayResponseType] = &[$(GatewayResponseType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(GatewayResponseType::$variant => $name),*
                }
            }

            pub fn default_status(self) -> StatusCode {
                match self {
                    $(GatewayResponseType::$variant => $status),*
                }
            }

            pub fn parse(name: &str) -> Option<GatewayResponseType> {
                match name {
                    $($name => Some(GatewayResponseType::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

gateway_response_types! {
    AccessDenied = "ACCESS_DENIED" => StatusCode::FORBIDDEN,
    ApiConfigurationError = "API_CONFIGURATION_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
    AuthorizerConfigurationError = "AUTHORIZER_CONFIGURATION_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
    AuthorizerFailure = "AUTHORIZER_FAILURE" => StatusCode::INTERNAL_SERVER_ERROR,
    BadRequestParameters = "BAD_REQUEST_PARAMETERS" => StatusCode::BAD_REQUEST,
    BadRequestBody = "BAD_REQUEST_BODY" => StatusCode::BAD_REQUEST,
    Default4xx = "DEFAULT_4XX" => StatusCode::BAD_REQUEST,
    Default5xx = "DEFAULT_5XX" => StatusCode::INTERNAL_SERVER_ERROR,
    ExpiredToken = "EXPIRED_TOKEN" => StatusCode::FORBIDDEN,
    // AWS's table lists 504; Pylon answers 502 for a backend that failed or
    // answered something that is not HTTP (docs/data-plane.md).
    IntegrationFailure = "INTEGRATION_FAILURE" => StatusCode::BAD_GATEWAY,
    IntegrationTimeout = "INTEGRATION_TIMEOUT" => StatusCode::GATEWAY_TIMEOUT,
    InvalidApiKey = "INVALID_API_KEY" => StatusCode::FORBIDDEN,
    InvalidSignature = "INVALID_SIGNATURE" => StatusCode::FORBIDDEN,
    MissingAuthenticationToken = "MISSING_AUTHENTICATION_TOKEN" => StatusCode::FORBIDDEN,
    QuotaExceeded = "QUOTA_EXCEEDED" => StatusCode::TOO_MANY_REQUESTS,
    RequestTooLarge = "REQUEST_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
    ResourceNotFound = "RESOURCE_NOT_FOUND" => StatusCode::NOT_FOUND,
    Throttled = "THROTTLED" => StatusCode::TOO_MANY_REQUESTS,
    Unauthorized = "UNAUTHORIZED" => StatusCode::UNAUTHORIZED,
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    WafFiltered = "WAF_FILTERED" => StatusCode::FORBIDDEN,
}

/// An error and its causes, `outer: inner: …`: one line for a log or a
/// message, with every source the error carries.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_maps_to_the_documented_grpc_code() {
        let table = [
            (ErrorCode::InvalidArgument, tonic::Code::InvalidArgument),
            (ErrorCode::NotFound, tonic::Code::NotFound),
            (ErrorCode::AlreadyExists, tonic::Code::AlreadyExists),
            (ErrorCode::Conflict, tonic::Code::Aborted),
            (ErrorCode::FailedPrecondition, tonic::Code::FailedPrecondition),
            (ErrorCode::Unauthenticated, tonic::Code::Unauthenticated),
            (ErrorCode::PermissionDenied, tonic::Code::PermissionDenied),
            (ErrorCode::ResourceExhausted, tonic::Code::ResourceExhausted),
            (ErrorCode::Unavailable, tonic::Code::Unavailable),
            (ErrorCode::DeadlineExceeded, tonic::Code::DeadlineExceeded),
            (ErrorCode::Internal, tonic::Code::Internal),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, grpc) in table {
            assert_eq!(code.grpc_code(), grpc, "{code}");
            assert_eq!(ErrorCode::from_grpc(grpc), code, "{code} round trip");
        }
    }

    #[test]
    fn gateway_response_types_have_aws_default_statuses_and_round_trip_by_name() {
        let expected = [
            ("ACCESS_DENIED", 403),
            ("API_CONFIGURATION_ERROR", 500),
            ("AUTHORIZER_CONFIGURATION_ERROR", 500),
            ("AUTHORIZER_FAILURE", 500),
            ("BAD_REQUEST_PARAMETERS", 400),
            ("BAD_REQUEST_BODY", 400),
            ("DEFAULT_4XX", 400),
            ("DEFAULT_5XX", 500),
            ("EXPIRED_TOKEN", 403),
            ("INTEGRATION_FAILURE", 502),
            ("INTEGRATION_TIMEOUT", 504),
            ("INVALID_API_KEY", 403),
            ("INVALID_SIGNATURE", 403),
            ("MISSING_AUTHENTICATION_TOKEN", 403),
            ("QUOTA_EXCEEDED", 429),
            ("REQUEST_TOO_LARGE", 413),
            ("RESOURCE_NOT_FOUND", 404),
            ("THROTTLED", 429),
            ("UNAUTHORIZED", 401),
            ("UNSUPPORTED_MEDIA_TYPE", 415),
            ("WAF_FILTERED", 403),
        ];
        assert_eq!(expected.len(), GatewayResponseType::ALL.len());
        for (name, status) in expected {
            let kind = GatewayResponseType::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.default_status().as_u16(), status, "{name}");
        }
        assert_eq!(GatewayResponseType::parse("NOPE"), None);
    }
}
