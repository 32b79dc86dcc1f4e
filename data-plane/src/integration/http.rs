//! HTTP and HTTP_PROXY integrations: the request streams to the backend and
//! the response streams back. Hop-by-hop headers are removed both ways and
//! `X-Forwarded-For/Proto/Host` are set. Upstream connections are pooled;
//! HTTPS backends negotiate HTTP/2 or HTTP/1.1 by ALPN.

use crate::error::{BoxError, GatewayError};
use crate::request::body::Fault;
use crate::{Body, ConnInfo};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Body>;

/// The pooled client every integration shares.
pub fn client(tls: rustls::ClientConfig) -> Client {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the Connection header names.
/// `Upgrade` goes too: WebSockets are a separate API type.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// What the call needs besides the client's request.
pub struct Call<'a> {
    pub uri: String,
    pub method: Option<&'a Method>,
    pub timeout: Duration,
    pub request_id: &'a str,
    /// The authority the request was routed on (`X-Forwarded-Host`).
    pub forwarded_host: &'a HeaderValue,
    /// The query string to send instead of the client's (a mapping set it).
    pub query: Option<String>,
    /// The path to send instead of the integration URI's (`overwrite:path`).
    pub path: Option<String>,
}

/// Sends the client's request to the backend and streams its answer back.
/// `fault` is the client's body's (when it streams): if the body fails,
/// the client is at fault, whatever the backend protocol made of it.
///
/// # Errors
/// The client's body failing ([`GatewayError::ClientBody`],
/// [`GatewayError::BodyTooLarge`]); no answer within the timeout (504);
/// a backend that cannot be reached or answers something that is not HTTP,
/// or frames its body with a transfer coding other than `chunked` (502).
pub async fn call(
    client: &Client,
    call: Call<'_>,
    mut parts: http::request::Parts,
    body: Body,
    fault: Option<Fault>,
    conn: &ConnInfo,
) -> Result<Response<Body>, GatewayError> {
    let mut uri = call.uri;
    if let Some(path) = &call.path {
        // Keep scheme and authority; the mapped path replaces the rest.
        let authority_end = uri
            .find("://")
            .and_then(|scheme| uri[scheme + 3..].find('/').map(|slash| scheme + 3 + slash))
            .unwrap_or(uri.len());
        uri.truncate(authority_end);
        uri.push_str(path);
    }
    if let Some(query) = call
        .query
        .as_deref()
        .or(parts.uri.query())
        .filter(|q| !q.is_empty())
    {
        uri.push(if uri.contains('?') { '&' } else { '?' });
        uri.push_str(query);
    }
    let uri: Uri = uri
        .parse()
        .map_err(|e| GatewayError::ApiConfiguration(format!("integration URI {uri:?}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(GatewayError::ApiConfiguration(format!(
            "integration URI {uri} is not an absolute http(s) URL"
        )));
    }

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    // One forwarding convention: X-Forwarded-*, every earlier hop kept.
    headers.remove(header::FORWARDED);
    let client_ip = conn.remote.ip().to_string();
    let mut forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    forwarded_for.push(&client_ip);
    if let Ok(value) = HeaderValue::from_str(&forwarded_for.join(", ")) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    headers.insert("x-forwarded-host", call.forwarded_host.clone());
    if let Ok(value) = HeaderValue::from_str(call.request_id) {
        headers.insert("x-pylon-request-id", value);
    }

    // A failing client body is noticed through its fault, whatever the
    // backend protocol makes of the broken stream (HTTP/2: a reset).
    let mut request = Request::new(body);
    *request.method_mut() = call.method.cloned().unwrap_or(parts.method);
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    // The version is negotiated with the backend, not copied from the client.

    let response = match tokio::time::timeout(call.timeout, client.request(request)).await {
        Err(_) => return Err(GatewayError::IntegrationTimeout(call.timeout)),
        Ok(Err(e)) => {
            return Err(match fault.and_then(|f| f.take()) {
                Some(client_fault) => client_fault.into(),
                None => classify(e),
            });
        }
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    // hyper has decoded `chunked`; any other coding would reach the client
    // undecoded and unannounced. With Transfer-Encoding, Content-Length is
    // not the body's length (RFC 9112 §6.3) and must not be passed on.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        let codings: Vec<String> = parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if codings.iter().any(|c| c != "chunked") {
            return Err(GatewayError::InvalidIntegrationResponse(
                format!("the backend used the transfer coding {:?}", codings.join(", ")).into(),
            ));
        }
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers);
    // Only the gateway says which side served or what failed.
    for name in [crate::response::CANARY, crate::response::ERROR_TYPE] {
        parts.headers.remove(name);
    }
    let body: Body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// Why the backend call failed (the body limit is noticed before): a
/// connection that could not be made or broke, or a response that is not HTTP.
fn classify(error: hyper_util::client::legacy::Error) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(hyper_error) = e.downcast_ref::<hyper::Error>()
            && hyper_error.is_parse()
        {
            return GatewayError::InvalidIntegrationResponse(Box::new(error));
        }
        source = e.source();
    }
    GatewayError::IntegrationUnreachable(Box::new(error))
}

/// What a small call the gateway makes for itself got back.
#[derive(Debug)]
pub struct Fetched {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Why such a call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("reading the response")]
    Body(#[source] BoxError),
}

impl From<FetchError> for GatewayError {
    /// As an integration's failure: a timeout is 504, the rest 502.
    fn from(error: FetchError) -> GatewayError {
        match error {
            FetchError::Timeout(after) => GatewayError::IntegrationTimeout(after),
            FetchError::Request(e) => classify(e),
            FetchError::Body(e) => GatewayError::InvalidIntegrationResponse(e),
        }
    }
}

/// A small request the gateway makes for itself (a JWKS document, a request
/// authorizer's decision, a WebSocket route's integration): whole response
/// read within `timeout`, at most `max_bytes` of body.
///
/// # Errors
/// [`FetchError`]: no answer in time, a failed request, a body that could
/// not be read or was over `max_bytes`.
pub async fn fetch(
    client: &Client,
    request: Request<Body>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let exchange = async {
        let response = client.request(request).await.map_err(FetchError::Request)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_bytes)
            .collect()
            .await
            .map_err(FetchError::Body)?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}
