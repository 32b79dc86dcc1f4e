//! A route's integration, parsed once per config snapshot.

use http::{HeaderName, HeaderValue, Method, StatusCode};
use pylon_proto::config::v1::{Integration, integration::Type};
use std::time::Duration;

#[derive(Debug)]
pub enum CompiledIntegration {
    /// HTTP_PROXY (pass-through) or HTTP (the mapping hooks come with the
    /// request phase); both stream bodies both ways.
    Http {
        /// With `${stageVariables.x}` and `{param}` left to fill per request.
        uri: String,
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
                    uri: integration.uri.clone(),
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
