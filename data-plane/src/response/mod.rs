//! The response phase: the route's response mappings and template
//! ([`transform`]), headers every response carries (request id, and which
//! deployment served), and [`rescue`], the one place errors become responses.

pub mod rescue;
pub mod transform;

use crate::Body;
use crate::config::Target;
use http::{HeaderName, HeaderValue, Response};

pub const REQUEST_ID: &str = "x-pylon-request-id";
pub const DEPLOYMENT: &str = "x-pylon-deployment";
pub const CANARY: &str = "x-pylon-canary";
pub const ERROR_TYPE: &str = "x-pylon-error-type";

/// Headers every answer of a stage carries: the request id, and which
/// deployment (and side of a canary) served it.
pub fn finish(response: &mut Response<Body>, request_id: &HeaderValue, target: Option<&Target>) {
    const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);
    const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static(DEPLOYMENT);
    const CANARY_HEADER: HeaderName = HeaderName::from_static(CANARY);
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    if let Some(target) = target {
        headers.insert(DEPLOYMENT_HEADER, target.deployment_header.clone());
        if target.is_canary {
            headers.insert(CANARY_HEADER, HeaderValue::from_static("true"));
        }
    }
}
