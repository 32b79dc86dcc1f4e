//! One request, phase by phase, in the order they run:
//!
//! ```text
//! admit → address → canary → route → integration → response (finish | rescue)
//! ```
//!
//! Each phase returns a [`GatewayError`] to stop the request; only
//! [`crate::response::rescue`] turns one into a response.

use crate::config::integration::CompiledIntegration;
use crate::config::{CompiledConfig, Target};
use crate::error::GatewayError;
use crate::integration::{self, http::Call};
use crate::request::{address, admit, canary};
use crate::response::{self, rescue};
use crate::{Body, ConnInfo, Gateway};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let request_id = new_request_id();
    let config = gateway.config.load_full();
    let mut served_by: Option<Arc<Target>> = None;
    let (parts, body) = request.into_parts();
    // Kept for the log line of a failed request (cheap: shared bytes).
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let result = run(&gateway, &config, parts, body, &conn, &request_id, &mut served_by).await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            let responses = served_by.as_ref().map(|t| &t.definition.responses);
            let response = rescue::respond(&error, responses, &request_id);
            if response.status().is_server_error() {
                tracing::warn!(request_id, %method, path = uri.path(), status = response.status().as_u16(), error = %error, detail = error.detail(), "request failed");
            } else {
                tracing::debug!(request_id, %method, path = uri.path(), status = response.status().as_u16(), error = %error, "request refused");
            }
            response
        }
    };
    response::finish(&mut response, &request_id, served_by.as_deref());
    response
}

async fn run(
    gateway: &Gateway,
    config: &CompiledConfig,
    parts: http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    request_id: &str,
    served_by: &mut Option<Arc<Target>>,
) -> Result<Response<Body>, GatewayError> {
    let options = &gateway.options;
    // Request phase.
    let host = admit::check_headers(&parts, &options.limits)?;
    let (stage, path) = address::resolve(config, &options.base_domain, &host, parts.uri.path())?;
    let target = canary::pick(&stage, &parts, conn.remote.ip());
    *served_by = Some(target.clone());
    if let Err(error) = admit::check_declared_length(&parts.headers, &options.limits) {
        admit::linger(body);
        return Err(error);
    }
    let matched = target
        .definition
        .routes
        .find(&parts.method, path)
        .ok_or(GatewayError::NoRoute)?;

    // Integration phase.
    match &matched.route.integration {
        CompiledIntegration::Mock {
            status,
            headers,
            body,
        } => Ok(integration::mock::respond(
            *status, headers, body, &target, request_id,
        )),
        CompiledIntegration::Http { uri, method, timeout } => {
            integration::check_params(&matched.params)?;
            let call = Call {
                uri: integration::fill(uri, &target.variables, &matched.params),
                method: method.as_ref(),
                timeout: *timeout,
                max_body_bytes: options.limits.max_body_bytes,
                request_id,
                host: &host,
            };
            integration::http::call(&gateway.client, call, parts, body, conn).await
        }
    }
}

/// A random id in UUID form (8-4-4-4-12 hex digits), unique across nodes.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut id = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        let nibble = ((n >> (124 - 4 * i)) & 0xf) as usize;
        id.push(char::from(HEX[nibble]));
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
