//! The response phase: the route's response mappings and template
//! ([`transform`]), headers every response carries (request id, and which
//! deployment served), and [`rescue`], the one place errors become responses.

pub mod rescue;
pub mod transform;

use crate::Body;
use crate::config::Target;
use http::{HeaderValue, Response};

pub const REQUEST_ID: &str = "x-pylon-request-id";
pub const DEPLOYMENT: &str = "x-pylon-deployment";
pub const CANARY: &str = "x-pylon-canary";
pub const ERROR_TYPE: &str = "x-pylon-error-type";

pub fn finish(response: &mut Response<Body>, request_id: &str, target: Option<&Target>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Some(target) = target {
        if let Ok(value) = HeaderValue::from_str(&target.deployment_id) {
            headers.insert(DEPLOYMENT, value);
        }
        if target.is_canary {
            headers.insert(CANARY, HeaderValue::from_static("true"));
        }
    }
}
