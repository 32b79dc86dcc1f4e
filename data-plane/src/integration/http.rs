//! HTTP and HTTP_PROXY integrations: the request streams to the backend and
//! the response streams back. Hop-by-hop headers are removed both ways and
//! `X-Forwarded-For/Proto/Host` are set. Connections come from
//! [`super::upstream`] (kept per worker; HTTP/2 or HTTP/1.1 by ALPN on
//! HTTPS).

use crate::error::{BoxError, GatewayError};
use crate::headers::{is_hop_by_hop, names_in_connection, strip_hop_by_hop, transfer_codings};
use crate::request::body::{ClientBodyError, Fault};
use crate::{Body, ConnInfo};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Body as _;
use std::future::Future as _;
use std::time::Duration;

pub use super::upstream::{Client, UpstreamError, Upstreams};

/// What a backend is told about the request's way here: `X-Forwarded-For`
/// (every earlier hop the client claimed, then the client's address),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (the authority the request was
/// routed on); `Forwarded` is removed (one convention). Computed once per
/// request: the cache selects variants by what the backend was told.
#[derive(Clone, Debug)]
pub struct Forwarding {
    pub forwarded_for: Option<HeaderValue>,
    pub proto: HeaderValue,
    pub host: HeaderValue,
}

impl Forwarding {
    pub fn new(client: &HeaderMap, conn: &ConnInfo, authority: &HeaderValue) -> Forwarding {
        let claimed = client.get_all(&X_FORWARDED_FOR);
        let forwarded_for = if claimed.iter().next().is_none() {
            // The usual case: the client's address, made once per connection.
            Some(conn.client_address.clone())
        } else {
            let mut list = String::with_capacity(64);
            for value in claimed.iter().filter_map(|v| v.to_str().ok()) {
                list.push_str(value);
                list.push_str(", ");
            }
            list.push_str(conn.client_address.to_str().unwrap_or(""));
            HeaderValue::from_str(&list).ok()
        };
        Forwarding {
            forwarded_for,
            proto: HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
            host: authority.clone(),
        }
    }

    /// For a forwarding header, what a backend is told (`Some(None)`:
    /// nothing, it is removed); `None` for any other header.
    pub fn told(&self, name: &HeaderName) -> Option<Option<&HeaderValue>> {
        match name.as_str() {
            "x-forwarded-for" => Some(self.forwarded_for.as_ref()),
            "x-forwarded-proto" => Some(Some(&self.proto)),
            "x-forwarded-host" => Some(Some(&self.host)),
            "forwarded" => Some(None),
            _ => None,
        }
    }

    /// Puts them into a request's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.remove(header::FORWARDED);
        match &self.forwarded_for {
            Some(value) => headers.insert(X_FORWARDED_FOR, value.clone()),
            None => headers.remove(X_FORWARDED_FOR),
        };
        headers.insert(X_FORWARDED_PROTO, self.proto.clone());
        headers.insert(X_FORWARDED_HOST, self.host.clone());
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_PYLON_REQUEST_ID: HeaderName = HeaderName::from_static(crate::response::REQUEST_ID);

/// The backend's URI for one request, before the mapped path and query.
pub enum BackendUri<'a> {
    /// An integration URI with nothing to fill, parsed once with the config
    /// ([`crate::config::integration::IntegrationUri`]).
    Parsed(&'a Uri),
    /// An integration URI filled for this request (stage variables, path
    /// parameters), parsed here.
    Filled(String),
}

/// What the call needs besides the client's request.
pub struct Call<'a> {
    pub uri: BackendUri<'a>,
    pub method: Option<&'a Method>,
    pub timeout: Duration,
    /// `x-pylon-request-id`.
    pub request_id: &'a HeaderValue,
    /// The `X-Forwarded-*` headers the backend is told.
    pub forwarding: &'a Forwarding,
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
/// or frames its body with a transfer coding other than `chunked` (502);
/// an integration URI that is not an absolute `http`/`https` URL once
/// filled (500); a URI the request's parameters and query make longer than
/// [`MAX_URI_BYTES`] (414).
pub async fn call(
    client: &Client,
    call: Call<'_>,
    mut parts: http::request::Parts,
    body: Body,
    fault: Option<Fault>,
) -> Result<Response<Body>, GatewayError> {
    let query = call
        .query
        .as_deref()
        .or(parts.uri.query())
        .filter(|q| !q.is_empty());
    let uri = backend_uri(call.uri, call.path.as_deref(), query)?;

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    call.forwarding.apply(headers);
    headers.insert(X_PYLON_REQUEST_ID, call.request_id.clone());

    // A failing client body is noticed through its fault, whatever the
    // backend protocol makes of the broken stream (HTTP/2: a reset).
    let mut request = Request::new(body);
    *request.method_mut() = call.method.cloned().unwrap_or(parts.method);
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    // The version is negotiated with the backend, not copied from the client.

    let response = match tokio::time::timeout(call.timeout, client.request(request)).await {
        // A backend still waiting for a slow client's body is not slow.
        Err(_) if fault.as_ref().is_some_and(Fault::client_still_sending) => {
            return Err(ClientBodyError::TooSlow(call.timeout).into());
        }
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
    let present = Present::scan(&parts.headers);
    if present.content_length {
        one_content_length(parts.status, &mut parts.headers);
    }
    // A 101 would switch a client that never asked to; 600 and beyond are
    // not statuses (RFC 9110 §15).
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS || parts.status.as_u16() > 599 {
        return Err(GatewayError::InvalidIntegrationResponse(
            format!("the backend answered status {}", parts.status.as_u16()).into(),
        ));
    }
    // The client's protocol is the client's: never an HTTP/1.0 status line
    // on its HTTP/1.1 connection.
    parts.version = http::Version::default();
    if present.transfer_encoding {
        check_framing(&mut parts.headers).map_err(GatewayError::InvalidIntegrationResponse)?;
    }
    // Cache directives addressed to this hop (named by Connection) are
    // obeyed before they are removed: the answer is then not stored.
    if present.connection
        && names_in_connection(&parts.headers)
            .any(|name| name.eq_ignore_ascii_case("cache-control") || name.eq_ignore_ascii_case("pragma"))
    {
        parts.extensions.insert(crate::cache::Uncacheable);
    }
    if present.hop_by_hop {
        strip_hop_by_hop(&mut parts.headers);
    }
    // Only the gateway says which side served or what failed, in any
    // spelling.
    while present.ours
        && let Some(name) = parts.headers.keys().find(|name| is_ours(name)).cloned()
    {
        parts.headers.remove(name);
    }
    // A body already whole needs no deadline (an empty one, say).
    let body = if body.is_end_stream() {
        body
    } else {
        Body::new(ReadDeadline::new(body, call.timeout, fault))
    };
    Ok(Response::from_parts(parts, body))
}

/// The longest URI `http` parses (`u16::MAX - 1` bytes, for the whole URI
/// and for its path and query alike).
pub const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// The URI a request goes to: `uri` with its path replaced by `path` (a
/// mapping's `overwrite:path`) and `query` appended to its own.
///
/// # Errors
/// The result would be longer than [`MAX_URI_BYTES`]
/// ([`GatewayError::UriTooLong`]), or is not an absolute `http`/`https`
/// URL ([`GatewayError::ApiConfiguration`]).
fn backend_uri(uri: BackendUri<'_>, path: Option<&str>, query: Option<&str>) -> Result<Uri, GatewayError> {
    // The request's own path parameters and query can make a URI longer
    // than `http` parses (a parameter repeated in the template multiplies
    // the client's bytes): the client's fault, not the API's.
    let length = match &uri {
        BackendUri::Parsed(_) if path.is_none() && query.is_none() => 0,
        BackendUri::Parsed(parsed) => {
            parsed.scheme_str().map_or(0, str::len)
                + 3
                + parsed.authority().map_or(0, |a| a.as_str().len())
                + parsed.path_and_query().map_or(0, |p| p.as_str().len())
        }
        BackendUri::Filled(filled) => filled.len(),
    } + path.map_or(0, str::len)
        + query.map_or(0, |q| q.len() + 1);
    if length > MAX_URI_BYTES {
        return Err(GatewayError::UriTooLong {
            length,
            limit: MAX_URI_BYTES,
        });
    }
    let uri = match uri {
        // The usual case: nothing to change, nothing to parse.
        BackendUri::Parsed(parsed) if path.is_none() && query.is_none() => return Ok(parsed.clone()),
        BackendUri::Parsed(parsed) => {
            let mut target = String::with_capacity(64);
            target.push_str(path.unwrap_or_else(|| parsed.path()));
            let own = parsed.query().filter(|q| path.is_none() && !q.is_empty());
            for (i, part) in own.into_iter().chain(query).enumerate() {
                target.push(if i == 0 { '?' } else { '&' });
                target.push_str(part);
            }
            let mut parts = http::uri::Parts::default();
            parts.scheme = parsed.scheme().cloned();
            parts.authority = parsed.authority().cloned();
            parts.path_and_query = Some(
                http::uri::PathAndQuery::try_from(target)
                    .map_err(|e| GatewayError::ApiConfiguration(format!("integration URI: {e}")))?,
            );
            Uri::from_parts(parts)
                .map_err(|e| GatewayError::ApiConfiguration(format!("integration URI: {e}")))?
        }
        BackendUri::Filled(mut uri) => {
            // A fragment is never sent, and what follows it (the client's
            // query) would be dropped with it.
            if uri.contains('#') {
                return Err(GatewayError::ApiConfiguration(format!(
                    "integration URI {} has a fragment",
                    without_userinfo(&uri)
                )));
            }
            if let Some(path) = path {
                // Keep scheme and authority; the mapped path replaces the
                // rest (the URI's own path and query).
                let authority_end = uri
                    .find("://")
                    .and_then(|scheme| uri[scheme + 3..].find(['/', '?']).map(|end| scheme + 3 + end))
                    .unwrap_or(uri.len());
                uri.truncate(authority_end);
                uri.push_str(path);
            }
            if let Some(query) = query {
                // (After an empty query of the URI's own, no `&`.)
                if !uri.ends_with('?') {
                    uri.push(if uri.contains('?') { '&' } else { '?' });
                }
                uri.push_str(query);
            }
            Uri::try_from(uri).map_err(|e| GatewayError::ApiConfiguration(format!("integration URI: {e}")))?
        }
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(GatewayError::ApiConfiguration(format!(
            "integration URI {} is not an absolute http(s) URL",
            without_userinfo(&uri.to_string())
        )));
    }
    // The rules the admin API applies to a literal URI, for one filled from
    // stage variables (a port out of range would be read as no port; an
    // https host TLS cannot verify would fail as a 502 connect error).
    let tls = uri.scheme_str() == Some("https");
    if let Some(problem) = uri
        .authority()
        .and_then(|authority| pylon_common::model::authority_problem(authority.as_str(), tls))
    {
        // (Scheme and host only: the authority may hold a password.)
        return Err(GatewayError::ApiConfiguration(format!(
            "integration URI {}://{}: {problem}",
            uri.scheme_str().unwrap_or_default(),
            uri.host().unwrap_or_default()
        )));
    }
    Ok(uri)
}

/// `uri` for an error message, which is logged: everything between the
/// scheme and the last `@` replaced by `…@`, as userinfo (which may hold a
/// password, and which the admin API refuses but a stage variable can fill
/// in) may itself hold `/`, `?` or `#` when the URI is malformed. An `@` in
/// the path or query hides a little more than needed; never a password.
fn without_userinfo(uri: &str) -> std::borrow::Cow<'_, str> {
    let start = uri.find("://").map_or(0, |scheme| scheme + 3);
    match uri[start..].rfind('@') {
        Some(at) => format!("{}…@{}", &uri[..start], &uri[start + at + 1..]).into(),
        None => uri.into(),
    }
}

/// The gateway error for a backend's response body that could not be read
/// whole: the client's error when its upload failed meanwhile
/// ([`ClientBodyBroke`]), [`GatewayError::IntegrationTimeout`] when it went
/// silent past the route's timeout ([`BodyStalled`]), else
/// [`GatewayError::InvalidIntegrationResponse`].
pub fn body_failed(error: BoxError) -> GatewayError {
    let error = match error.downcast::<ClientBodyBroke>() {
        Ok(client) => return client.0.into(),
        Err(error) => error,
    };
    match error.downcast::<BodyStalled>() {
        Ok(stalled) => GatewayError::IntegrationTimeout(Duration::from_millis(stalled.after_ms as u64)),
        Err(error) => GatewayError::InvalidIntegrationResponse(error),
    }
}

/// The client's request body failed while the backend's answer was
/// streaming back (the backend answered before it had read the whole
/// upload): the answer breaks off through the client's fault, not the
/// backend's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyBroke(pub ClientBodyError);

/// A backend sent nothing of its response body for the route's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing of its body for {after_ms} ms")]
pub struct BodyStalled {
    pub after_ms: u128,
}

/// A response body that fails once the backend sends nothing of it for
/// `after` (the route's timeout, as nginx's `proxy_read_timeout` bounds each
/// wait between reads): a backend that stalls mid-body does not hold the
/// client's connection for ever. The timer is made only when a read has to
/// wait.
///
/// A failure is held back for one poll: the server gets to send what it
/// has gathered (the head and the bytes before the break) before the
/// failure makes it drop the connection, as nginx sends what it received
/// before an upstream's premature close. Without that, a backend that
/// breaks off right behind its head left the client with no answer at all.
struct ReadDeadline {
    body: Body,
    after: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Whether the body moved since the timer was last set.
    progressed: bool,
    /// The body's failure, held back for one poll.
    failed: Option<BoxError>,
    /// The client's request body's, when it streams to the backend: a
    /// failure of the answer while it failed is the client's.
    fault: Option<Fault>,
}

impl ReadDeadline {
    /// `body` with `after` between reads; `fault`: the client's request
    /// body's, when it streams to the backend.
    fn new(body: Body, after: Duration, fault: Option<Fault>) -> ReadDeadline {
        ReadDeadline {
            body,
            after,
            sleep: None,
            progressed: true,
            failed: None,
            fault,
        }
    }
}

impl hyper::body::Body for ReadDeadline {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_ready() {
            if let Poll::Ready(Some(Err(error))) = polled {
                let error = match this.fault.as_ref().and_then(Fault::take) {
                    Some(client) => Box::new(ClientBodyBroke(client)) as BoxError,
                    None => {
                        // Said here, as nginx's "upstream prematurely closed
                        // connection"; the access-log line says it too.
                        tracing::warn!(error = %error, "the backend's response body broke off");
                        error
                    }
                };
                this.failed = Some(error);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.progressed = true;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + this.after;
        let sleep = match &mut this.sleep {
            Some(sleep) => {
                if this.progressed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.progressed = false;
        match sleep.as_mut().poll(cx) {
            // A backend that streams its answer as the upload comes (an
            // echo) waits for the client: the client's body deadline
            // governs that.
            Poll::Ready(()) if this.fault.as_ref().is_some_and(Fault::client_still_sending) => {
                this.progressed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(()) => {
                let after = this.after.as_millis();
                tracing::warn!(
                    after_ms = after,
                    "the backend sent nothing of its response body in time"
                );
                Poll::Ready(Some(Err(Box::new(BodyStalled { after_ms: after }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // A failure held back is still to come.
        self.failed.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// `x-pylon-*`, also spelt with underscores: the gateway's own headers.
/// Which fields of a backend's answer the gateway has to read or remove,
/// found in one pass over its names: most answers carry few of them, and
/// each lookup by name hashes the name.
#[derive(Clone, Copy, Debug, Default)]
struct Present {
    content_length: bool,
    transfer_encoding: bool,
    connection: bool,
    /// A hop-by-hop field, `Connection` included ([`is_hop_by_hop`]).
    hop_by_hop: bool,
    /// A field only the gateway sets ([`is_ours`]).
    ours: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut present = Present::default();
        for name in headers.keys() {
            if *name == header::CONTENT_LENGTH {
                present.content_length = true;
            } else if is_hop_by_hop(name) {
                present.hop_by_hop = true;
                present.transfer_encoding |= *name == header::TRANSFER_ENCODING;
                present.connection |= *name == header::CONNECTION;
            } else if is_ours(name) {
                present.ours = true;
            }
        }
        present
    }
}

fn is_ours(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.len() > 8
        && name[..8]
            .iter()
            .zip(b"x-pylon-")
            .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
}

/// A backend answer's framing: hyper has decoded `chunked`, and any other
/// transfer coding would reach the client undecoded and unannounced. With
/// Transfer-Encoding, Content-Length is not the body's length (RFC 9112
/// §6.3) and is dropped.
///
/// # Errors
/// A transfer coding other than `chunked`.
fn check_framing(headers: &mut HeaderMap) -> Result<(), BoxError> {
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    let codings = transfer_codings(headers);
    // `chunked, chunked` would reach the client still chunked once.
    if codings.len() != 1 || codings.iter().any(|c| c != "chunked") {
        return Err(format!("the backend used the transfer coding {:?}", codings.join(", ")).into());
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok(())
}

/// One Content-Length, never a list of the same value (RFC 9110 §8.6: `3, 3`
/// was read as 3; it is passed on as `3`). On answers whose framing did not
/// read it (to `HEAD`, 304) a value that is not one number, or values that
/// differ, are dropped rather than passed on; a 204 or 1xx carries none
/// (RFC 9110 §8.6: HTTP/2 clients refuse such a stream).
fn one_content_length(status: http::StatusCode, headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONTENT_LENGTH) {
        return;
    }
    if status == http::StatusCode::NO_CONTENT || status.is_informational() {
        headers.remove(header::CONTENT_LENGTH);
        return;
    }
    let mut lines = headers.get_all(header::CONTENT_LENGTH).iter();
    let alone = lines.next().filter(|_| lines.next().is_none());
    if alone.is_some_and(|value| length(value.as_bytes()).is_some()) {
        return;
    }
    let mut values = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii);
    let first = values.next().unwrap_or_default();
    let one = length(first).is_some() && values.all(|other| other == first);
    match HeaderValue::from_bytes(first).ok().filter(|_| one) {
        Some(first) => headers.insert(header::CONTENT_LENGTH, first),
        None => headers.remove(header::CONTENT_LENGTH),
    };
}

/// A Content-Length value as a length: digits, below 2^63 (what HTTP/2
/// peers take).
fn length(value: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))?;
    digits.parse::<u64>().ok().filter(|n| *n < 1 << 63)
}

/// Why the backend call failed (the body limit is noticed before): a
/// connection that could not be made or broke, or a response that is not HTTP.
fn classify(error: UpstreamError) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        let invalid = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
            || e.downcast_ref::<super::h1::ExchangeError>()
                .is_some_and(super::h1::ExchangeError::is_invalid);
        if invalid {
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
    Request(#[source] UpstreamError),
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
        let (mut parts, body) = response.into_parts();
        check_framing(&mut parts.headers).map_err(FetchError::Body)?;
        let body = crate::read_whole(body, max_bytes).await.map_err(|e| {
            FetchError::Body(match e {
                crate::ReadWholeError::Body(e) => e,
                crate::ReadWholeError::TooLarge(limit) => {
                    format!("the response body is over {limit} bytes").into()
                }
            })
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend URI both ways: from the URI parsed with the config, and
    /// from the same template filled per request.
    fn both_ways(template: &str, path: Option<&str>, query: Option<&str>) -> (String, String) {
        let parsed = crate::config::integration::IntegrationUri::new(template)
            .literal
            .expect("a literal URI");
        let once = backend_uri(BackendUri::Parsed(&parsed), path, query).expect("valid");
        let filled = backend_uri(BackendUri::Filled(template.to_owned()), path, query).expect("valid");
        (once.to_string(), filled.to_string())
    }

    #[test]
    fn one_pass_over_the_names_finds_what_the_answer_must_lose() {
        let scan = |names: &[&'static str]| {
            let headers: HeaderMap = names
                .iter()
                .map(|name| (HeaderName::from_static(name), HeaderValue::from_static("1")))
                .collect();
            let p = Present::scan(&headers);
            (
                p.content_length,
                p.transfer_encoding,
                p.connection,
                p.hop_by_hop,
                p.ours,
            )
        };
        assert_eq!(scan(&["date", "server"]), (false, false, false, false, false));
        assert_eq!(
            scan(&["content-length", "connection"]),
            (true, false, true, true, false)
        );
        assert_eq!(scan(&["transfer-encoding"]), (false, true, false, true, false));
        assert_eq!(
            scan(&["keep-alive", "upgrade"]),
            (false, false, false, true, false)
        );
        assert_eq!(scan(&["x_pylon_stage"]), (false, false, false, false, true));
        assert_eq!(scan(&["x-pylon-request-id"]), (false, false, false, false, true));
    }

    #[test]
    fn a_uri_parsed_once_is_sent_as_the_same_uri_filled_per_request() {
        for (template, path, query, sent) in [
            ("http://127.0.0.1:9/pets", None, None, "http://127.0.0.1:9/pets"),
            (
                "http://127.0.0.1:9/pets",
                None,
                Some("a=1"),
                "http://127.0.0.1:9/pets?a=1",
            ),
            (
                "http://127.0.0.1:9/pets?v=2",
                None,
                Some("a=1"),
                "http://127.0.0.1:9/pets?v=2&a=1",
            ),
            (
                "http://127.0.0.1:9/pets?v=2",
                None,
                None,
                "http://127.0.0.1:9/pets?v=2",
            ),
            (
                "http://127.0.0.1:9/pets?v=2",
                Some("/mapped"),
                None,
                "http://127.0.0.1:9/mapped",
            ),
            (
                "https://backend.example:8443/a",
                Some("/b"),
                Some("x=%20"),
                "https://backend.example:8443/b?x=%20",
            ),
            ("http://127.0.0.1:9", None, Some("a=1"), "http://127.0.0.1:9/?a=1"),
            (
                "http://127.0.0.1:9?v=1",
                None,
                Some("a=1"),
                "http://127.0.0.1:9/?v=1&a=1",
            ),
            (
                "http://127.0.0.1:9/x?",
                None,
                Some("a=1"),
                "http://127.0.0.1:9/x?a=1",
            ),
            (
                "http://127.0.0.1:9?v=1",
                Some("/mapped"),
                None,
                "http://127.0.0.1:9/mapped",
            ),
            (
                "http://127.0.0.1:9?v=1",
                Some("/mapped"),
                Some("a=1"),
                "http://127.0.0.1:9/mapped?a=1",
            ),
        ] {
            let (once, filled) = both_ways(template, path, query);
            assert_eq!(once, sent, "{template} {path:?} {query:?}");
            assert_eq!(filled, sent, "{template} {path:?} {query:?}");
        }
    }

    #[test]
    fn a_uri_the_request_made_too_long_is_the_clients_error() {
        let long = "q".repeat(MAX_URI_BYTES);
        let parsed: Uri = "http://127.0.0.1:9/x".parse().expect("uri");
        for uri in [
            BackendUri::Parsed(&parsed),
            BackendUri::Filled("http://127.0.0.1:9/x".into()),
        ] {
            let error = backend_uri(uri, None, Some(&long)).expect_err("too long");
            assert!(matches!(error, GatewayError::UriTooLong { .. }), "{error:?}");
        }
        let near = "q".repeat(MAX_URI_BYTES - 100);
        assert!(backend_uri(BackendUri::Parsed(&parsed), None, Some(&near)).is_ok());
    }

    #[test]
    fn a_filled_uri_that_is_not_an_absolute_http_url_is_a_configuration_error() {
        for filled in [
            "/pets",
            "ftp://127.0.0.1/pets",
            "http://bad host/",
            "http://127.0.0.1:99999/pets",
            "http://:80/pets",
            "http://u@/pets",
            "http://u:secret@127.0.0.1/pets",
            "http://u:secret@127.0.0.1/pets#top",
            "http://bob:pa#ss5secret@127.0.0.1/pets",
            "http://bob:pa/ss?secret@127.0.0.1/pets",
            "ftp://u:secret@127.0.0.1/pets",
            "http://127.0.0.1/pets#top",
            // An https host TLS cannot verify would fail as a 502 connect error.
            "https://1.2.3.256/pets",
            "https://bad_host!/pets",
        ] {
            let error = backend_uri(BackendUri::Filled(filled.to_owned()), None, None).expect_err(filled);
            assert!(
                matches!(&error, GatewayError::ApiConfiguration(why) if !why.contains("secret")),
                "{filled}: {error:?}"
            );
        }
    }

    fn content_length(status: u16, values: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::CONTENT_LENGTH,
                HeaderValue::from_str(value).expect("test value"),
            );
        }
        one_content_length(
            http::StatusCode::from_u16(status).expect("test status"),
            &mut headers,
        );
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// One frame, then nothing ever again.
    struct Stalls(bool);

    impl hyper::body::Body for Stalls {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.0, true) {
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                b"he",
            )))))
        }
    }

    #[tokio::test]
    async fn a_body_the_backend_stops_sending_fails_after_the_timeout() {
        use http_body_util::BodyExt;
        let mut body = ReadDeadline::new(Body::new(Stalls(false)), Duration::from_millis(50), None);
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "he");
        let started = std::time::Instant::now();
        let error = body.frame().await.expect("an end").expect_err("cut");
        assert!(error.to_string().contains("50 ms"), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_broken_body_lets_the_server_send_what_it_has_before_failing() {
        use std::task::Poll;
        let broken = http_body_util::StreamBody::new(futures::stream::iter([
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"he"))),
            Err::<_, BoxError>("cut".into()),
        ]));
        let mut body = ReadDeadline::new(Body::new(broken), Duration::from_secs(5), None);
        let mut poll = || {
            let woken = std::sync::Arc::new(Woken::default());
            let waker = std::task::Waker::from(woken.clone());
            let polled = hyper::body::Body::poll_frame(
                std::pin::Pin::new(&mut body),
                &mut std::task::Context::from_waker(&waker),
            );
            (polled, woken.0.load(std::sync::atomic::Ordering::Relaxed))
        };
        assert!(matches!(poll(), (Poll::Ready(Some(Ok(_))), false)));
        // Held back once, with a wake-up: the server flushes meanwhile.
        assert!(matches!(poll(), (Poll::Pending, true)));
        assert!(matches!(poll(), (Poll::Ready(Some(Err(_))), false)));
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_body_that_went_silent_is_a_timeout_and_any_other_failure_invalid() {
        let stalled = body_failed(Box::new(BodyStalled { after_ms: 500 }));
        assert!(matches!(stalled, GatewayError::IntegrationTimeout(d) if d == Duration::from_millis(500)));
        assert!(matches!(
            body_failed("cut".into()),
            GatewayError::InvalidIntegrationResponse(_)
        ));
    }

    #[test]
    fn an_answer_goes_on_with_one_content_length_or_none() {
        assert_eq!(content_length(200, &["5"]), ["5"]);
        assert_eq!(content_length(200, &["5, 5"]), ["5"]);
        assert_eq!(content_length(200, &["5", "5"]), ["5"]);
        // Only reachable where framing did not read it: HEAD, 304.
        assert!(content_length(304, &["abc"]).is_empty());
        assert!(content_length(304, &["5", "7"]).is_empty());
        assert!(content_length(304, &[""]).is_empty());
        assert!(content_length(204, &["6"]).is_empty());
        assert!(content_length(304, &["99999999999999999999999"]).is_empty());
        assert!(content_length(304, &["9223372036854775808"]).is_empty());
        assert_eq!(
            content_length(304, &["9223372036854775807"]),
            ["9223372036854775807"]
        );
    }
}
