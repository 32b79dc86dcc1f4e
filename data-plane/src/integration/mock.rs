//! MOCK integrations: the route answers with its configured status, headers
//! and body (`${stageVariables.x}` and `$context.requestId` filled in).

use crate::Body;
use crate::config::Target;
use http::{HeaderName, HeaderValue, Response, StatusCode};

pub fn respond(
    status: StatusCode,
    headers: &[(HeaderName, HeaderValue)],
    body: &str,
    target: &Target,
    request_id: &str,
) -> Response<Body> {
    let body = super::fill(body, &target.variables, &[]).replace("$context.requestId", request_id);
    let mut response = Response::new(crate::full_body(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    if !response.headers().contains_key(http::header::CONTENT_TYPE) {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}
