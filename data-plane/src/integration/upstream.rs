//! Upstream connections: per-worker idle stacks of hyper `client::conn`
//! senders, one set per proxy worker (see [`crate::workers`]).
//!
//! Measured against hyper-util's pooled `Client` (docs/performance.md): the
//! pool's checkout, its waiter bookkeeping and the extra dispatch hop cost
//! ~2 µs of CPU per proxied request on this path; a stack of senders taken
//! under an uncontended lock costs a few hundred nanoseconds. What the pool
//! gave that is kept here:
//! - idle HTTP/1.1 connections are reused last-in first-out (the warmest
//!   socket), at most [`MAX_IDLE_PER_ORIGIN`] per origin and worker, closed
//!   after [`IDLE_TIMEOUT`] unused;
//! - a connection returns to its stack only once its response body has been
//!   read to the end (a body dropped half-read closes the connection: the
//!   rest of it would be read as the next response);
//! - a request that a reused connection could not even start sending (the
//!   backend closed it while idle) is sent once more on a new connection —
//!   the request was not sent, so this is safe for any method (RFC 9110
//!   §9.2.2 permits it only for idempotent requests that *were* sent);
//! - HTTPS backends negotiate HTTP/2 by ALPN; an HTTP/2 connection is shared
//!   by every request of its worker to that origin (streams multiplex);
//!   requests that start together before the first connection to an
//!   origin is made each make their own, and only the last made is kept.
//!
//! - a `GET` or `HEAD` without a body to an `http` backend goes by
//!   [`super::h1`] on connections of its own (no hyper client: ~1 µs of CPU
//!   less per request); one that a reused connection could not send, or
//!   got no byte of an answer on, is sent once more on a new connection
//!   (such requests are idempotent, RFC 9110 §9.2.2).
//!
//! Origins are told apart by scheme and authority (host and port, as
//! spelled: an origin spelled in two cases keeps two stacks). Connections
//! are made by hyper-util's `HttpConnector` (DNS on the blocking pool, 10 s
//! connect timeout, `TCP_NODELAY`) wrapped in rustls.

use super::h1;
use crate::Body;
use crate::error::BoxError;
use foldhash::HashMap;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Idle HTTP/1.1 connections kept per origin and worker.
pub const MAX_IDLE_PER_ORIGIN: usize = 1024;
/// An idle connection unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long connecting to a backend may take (DNS not included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Connector = HttpsConnector<HttpConnector>;

/// The upstream connections of every worker, plus one set for calls made
/// off the workers (the node's main runtime).
pub struct Upstreams {
    clients: Box<[Client]>,
}

impl Upstreams {
    /// Connection stacks for `workers` workers plus one; `tls` verifies
    /// HTTPS backends.
    pub fn new(tls: rustls::ClientConfig, workers: usize) -> Upstreams {
        let connector = connector(tls);
        Upstreams {
            clients: (0..=workers)
                .map(|_| Client {
                    connector: connector.clone(),
                    pool: Arc::new(Pool::default()),
                })
                .collect(),
        }
    }

    /// The connections of the worker running the caller.
    pub fn client(&self) -> &Client {
        let index = crate::workers::current().min(self.clients.len() - 1);
        &self.clients[index]
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`] and
    /// forgets closed ones, on every worker's stacks. Run every few seconds.
    pub fn sweep(&self) {
        let now = Instant::now();
        for client in self.clients.iter() {
            client.pool.lock().retain(|_, idle| {
                idle.http1
                    .retain(|(sender, since)| !sender.is_closed() && now - *since < IDLE_TIMEOUT);
                idle.plain
                    .retain(|(conn, since)| conn.is_open() && now - *since < IDLE_TIMEOUT);
                if idle.http2.as_ref().is_some_and(http2::SendRequest::is_closed) {
                    idle.http2 = None;
                }
                !idle.http1.is_empty() || !idle.plain.is_empty() || idle.http2.is_some()
            });
        }
    }
}

fn connector(tls: rustls::ClientConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// One worker's upstream connections.
pub struct Client {
    connector: Connector,
    pool: Arc<Pool>,
}

/// Scheme and authority: which connections can carry a request.
///
/// Hashed as two strings and compared byte for byte (`Authority`'s own
/// hash feeds the hasher one lower-cased byte at a time, which made the two
/// stack lookups of every request cost more than parsing its head):
/// spellings of one origin that differ in case keep stacks of their own.
#[derive(Clone, Debug)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        self.scheme.as_str() == other.scheme.as_str() && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.as_str().hash(state);
        self.authority.as_str().hash(state);
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[derive(Default)]
struct Pool {
    origins: Mutex<HashMap<Origin, Idle>>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, HashMap<Origin, Idle>> {
        // The critical sections only push and pop; a panic inside one
        // leaves the map consistent.
        self.origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put_back(&self, origin: Origin, sender: http1::SendRequest<Body>) {
        let mut origins = self.lock();
        let idle = origins.entry(origin).or_default();
        if idle.http1.len() < MAX_IDLE_PER_ORIGIN {
            idle.http1.push((sender, Instant::now()));
        }
    }
}

#[derive(Default)]
struct Idle {
    /// Last in, first out; with the time each was put back.
    http1: Vec<(http1::SendRequest<Body>, Instant)>,
    /// Connections of [`h1`] exchanges, likewise.
    plain: Vec<(h1::Conn, Instant)>,
    http2: Option<http2::SendRequest<Body>>,
}

/// Where an [`h1`] connection returns once its answer is read.
struct Home {
    pool: Arc<Pool>,
    origin: Origin,
}

impl h1::PutBack for Home {
    fn put_back(self, conn: h1::Conn) {
        let mut origins = self.pool.lock();
        let idle = origins.entry(self.origin).or_default();
        if idle.plain.len() < MAX_IDLE_PER_ORIGIN {
            idle.plain.push((conn, Instant::now()));
        }
    }
}

/// A connection to carry one request.
enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: DNS, TCP or TLS failed, or the connect timed out.
    #[error("cannot connect to {origin}")]
    Connect {
        origin: String,
        #[source]
        source: BoxError,
    },
    /// The connection was made but the HTTP handshake failed.
    #[error("HTTP handshake with {origin} failed")]
    Handshake {
        origin: String,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be sent or the response could not be read
    /// (the connection broke, or the backend answered something that is
    /// not HTTP: `is_parse()` on the source).
    #[error("the exchange with the backend failed")]
    Exchange(#[source] hyper::Error),
    /// The same, on a connection of [`h1`] (`is_invalid()` on the source:
    /// the answer was not valid HTTP).
    #[error("the exchange with the backend failed")]
    Plain(#[source] h1::ExchangeError),
    /// The URI names no scheme or authority.
    #[error("the URI {0} is not absolute")]
    NotAbsolute(String),
}

impl Client {
    /// Sends `request` (absolute `http`/`https` URI) on an idle connection
    /// of this worker or a new one; the response body streams, and its
    /// connection returns to the stack once the body is read to the end.
    ///
    /// # Errors
    /// [`UpstreamError`]: no connection could be made, or the exchange
    /// failed.
    pub async fn request(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let origin = match (request.uri().scheme(), request.uri().authority()) {
            (Some(scheme), Some(authority)) => Origin {
                scheme: scheme.clone(),
                authority: authority.clone(),
            },
            _ => return Err(UpstreamError::NotAbsolute(request.uri().to_string())),
        };
        let absolute = request.uri().clone();
        if origin.scheme == Scheme::HTTP && h1::eligible(&request) {
            origin_form(&mut request, &absolute);
            return self.plain(request, origin).await;
        }
        loop {
            let (sender, reused) = match self.idle(&origin) {
                Some(sender) => (sender, true),
                None => (self.connect(&origin).await?, false),
            };
            match sender {
                Sender::Http2(mut sender) => {
                    *request.uri_mut() = absolute.clone();
                    request.headers_mut().remove(header::HOST);
                    *request.version_mut() = http::Version::HTTP_2;
                    return match sender.try_send_request(request).await {
                        Ok(response) => Ok(response.map(boxed)),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) if reused => {
                                request = unsent;
                                continue;
                            }
                            _ => Err(UpstreamError::Exchange(e.into_error())),
                        },
                    };
                }
                Sender::Http1(mut sender) => {
                    origin_form(&mut request, &absolute);
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            let (parts, body) = response.into_parts();
                            let body = Returning {
                                body,
                                sender: Some(sender),
                                origin: Some(origin),
                                pool: self.pool.clone(),
                            };
                            return Ok(Response::from_parts(parts, Body::new(body)));
                        }
                        Err(mut e) => match e.take_message() {
                            // A reused connection the backend had closed:
                            // nothing was sent, try a new one.
                            Some(unsent) if reused => {
                                request = unsent;
                                continue;
                            }
                            _ => return Err(UpstreamError::Exchange(e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// A bodyless `GET` or `HEAD` (origin form, `Host` set) to an `http`
    /// origin, by [`h1`].
    async fn plain(&self, request: Request<Body>, origin: Origin) -> Result<Response<Body>, UpstreamError> {
        let head = h1::head(&request);
        let head_request = request.method() == http::Method::HEAD;
        let mut retried = false;
        loop {
            // Once a reused connection failed, the one retry goes on a new
            // connection: a request that kills its connection is not
            // replayed on every idle one.
            let idle = if retried { None } else { self.idle_plain(&origin) };
            let (mut conn, reused) = match idle {
                Some(conn) => (conn, true),
                None => (self.connect_plain(&origin).await?, false),
            };
            match h1::exchange(&mut conn, &head, head_request).await {
                Ok(answer) => {
                    let home = Home {
                        pool: self.pool.clone(),
                        origin,
                    };
                    let body = h1::Incoming::new(conn, answer.body, answer.keep_alive, home);
                    let mut response = Response::new(Body::new(body));
                    *response.status_mut() = answer.status;
                    *response.headers_mut() = answer.headers;
                    return Ok(response);
                }
                // A reused connection the backend had closed: once more, on
                // a new one.
                Err(e) if reused && e.is_retryable() => retried = true,
                Err(e) => return Err(UpstreamError::Plain(e)),
            }
        }
    }

    /// An idle [`h1`] connection to `origin` that is still open, if the
    /// stack has one.
    fn idle_plain(&self, origin: &Origin) -> Option<h1::Conn> {
        let mut origins = self.pool.lock();
        let idle = origins.get_mut(origin)?;
        let now = Instant::now();
        while let Some((conn, since)) = idle.plain.pop() {
            if now - since < IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// A new TCP connection for [`h1`] (boxed, as [`Client::connect`]).
    fn connect_plain<'a>(
        &'a self,
        key: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<h1::Conn, UpstreamError>> + Send + 'a>> {
        Box::pin(async move {
            let uri = Uri::builder()
                .scheme(key.scheme.clone())
                .authority(key.authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|e| UpstreamError::Connect {
                    origin: key.to_string(),
                    source: e.into(),
                })?;
            let stream =
                self.connector
                    .clone()
                    .oneshot(uri)
                    .await
                    .map_err(|source| UpstreamError::Connect {
                        origin: key.to_string(),
                        source,
                    })?;
            match stream {
                MaybeHttpsStream::Http(tcp) => Ok(h1::Conn::new(tcp.into_inner())),
                MaybeHttpsStream::Https(_) => Err(UpstreamError::Connect {
                    origin: key.to_string(),
                    source: "an http origin answered with TLS".into(),
                }),
            }
        })
    }

    /// An idle connection to `origin` ready for a request, if the stack has
    /// one.
    fn idle(&self, origin: &Origin) -> Option<Sender> {
        let mut origins = self.pool.lock();
        let idle = origins.get_mut(origin)?;
        if let Some(sender) = &idle.http2 {
            if sender.is_ready() {
                return Some(Sender::Http2(sender.clone()));
            }
            if sender.is_closed() {
                idle.http2 = None;
            }
        }
        let now = Instant::now();
        while let Some((sender, since)) = idle.http1.pop() {
            if sender.is_ready() && now - since < IDLE_TIMEOUT {
                return Some(Sender::Http1(sender));
            }
            if !sender.is_closed() && now - since < IDLE_TIMEOUT {
                // Still finishing its last exchange (e.g. sending a body
                // the backend answered before reading): it returns by
                // itself once ready.
                let pool = self.pool.clone();
                let origin = origin.clone();
                tokio::spawn(async move {
                    let mut sender = sender;
                    if sender.ready().await.is_ok() {
                        pool.put_back(origin, sender);
                    }
                });
            }
        }
        None
    }

    /// A new connection (boxed: a cold path, and the boxed future keeps
    /// the connector's future types out of every caller's).
    fn connect<'a>(
        &'a self,
        key: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Sender, UpstreamError>> + Send + 'a>> {
        Box::pin(self.connect_inner(key))
    }

    async fn connect_inner(&self, key: &Origin) -> Result<Sender, UpstreamError> {
        let uri = Uri::builder()
            .scheme(key.scheme.clone())
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::Connect {
                origin: key.to_string(),
                source: e.into(),
            })?;
        let stream = self
            .connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(|source| UpstreamError::Connect {
                origin: key.to_string(),
                source,
            })?;
        if stream.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(|source| UpstreamError::Handshake {
                    origin: key.to_string(),
                    source,
                })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            self.pool.lock().entry(key.clone()).or_default().http2 = Some(sender.clone());
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) =
                http1::handshake(stream)
                    .await
                    .map_err(|source| UpstreamError::Handshake {
                        origin: key.to_string(),
                        source,
                    })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
            });
            Ok(Sender::Http1(sender))
        }
    }
}

/// HTTP/1.1 requests name the origin in `Host` (with the port when it is
/// not the scheme's default) and the target in origin form (RFC 9112 §3.2).
fn origin_form(request: &mut Request<Body>, absolute: &Uri) {
    if let Some(authority) = absolute.authority() {
        let default_port = match absolute.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        if let Some(host) = host_field(authority.as_str(), default_port) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    let target = absolute
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(target);
}

/// The `Host` field for an authority (as `http` parsed it): host and port
/// only, never the userinfo (`user:pass@`); the port only when it is not
/// `default_port`. One pass over the authority: this runs per request.
fn host_field(authority: &str, default_port: u16) -> Option<HeaderValue> {
    // Byte searches: `str::rfind` with a char costs more than the whole of
    // a short authority.
    let at = authority.bytes().rposition(|b| b == b'@');
    let host_port = &authority[at.map_or(0, |at| at + 1)..];
    // The port follows the last `:` unless an IPv6 literal's `]` comes after it.
    let (host, port) = match host_port.bytes().rposition(|b| b == b':' || b == b']') {
        Some(colon) if host_port.as_bytes()[colon] == b':' => {
            (&host_port[..colon], host_port[colon + 1..].parse::<u16>().ok())
        }
        _ => (host_port, None),
    };
    match port {
        Some(port) if port != default_port && at.is_some() => {
            HeaderValue::from_str(&format!("{host}:{port}")).ok()
        }
        Some(port) if port != default_port => HeaderValue::from_str(host_port).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

fn boxed(body: Incoming) -> Body {
    use http_body_util::BodyExt;
    body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
}

/// A response body that puts its connection back on the stack once read to
/// the end; dropped before, the connection closes with it.
struct Returning {
    body: Incoming,
    sender: Option<http1::SendRequest<Body>>,
    origin: Option<Origin>,
    pool: Arc<Pool>,
}

impl Returning {
    fn put_back(&mut self) {
        if let (Some(sender), Some(origin)) = (self.sender.take(), self.origin.take()) {
            self.pool.put_back(origin, sender);
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.put_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.put_back(),
            Poll::Ready(Some(Err(_))) => {
                // A broken body: the connection is not reused.
                this.sender = None;
            }
            _ => {}
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // A body nobody polled because it was empty (HEAD, 204, 304,
        // `Content-Length: 0`) is read to the end too.
        if self.body.is_end_stream() {
            self.put_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw TCP server on a free loopback port that runs `connection` for
    /// each connection it accepts, counting them; its `http://` base URI.
    async fn serve<F, Fut>(connection: F) -> (Uri, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let address = listener.local_addr().expect("test setup");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(socket));
            }
        });
        (
            format!("http://{address}/").parse().expect("test setup"),
            accepted,
        )
    }

    /// A raw HTTP/1.1 backend ([`serve`]): answers each request read on a
    /// connection with what `answer` gives for its request line.
    async fn backend(answer: fn(&str) -> &'static str) -> (Uri, Arc<AtomicUsize>) {
        serve(move |mut socket| async move {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    buffer.drain(..end + 4);
                    let line = head.lines().next().unwrap_or("").to_string();
                    let reply = answer(&line);
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if reply.contains("Connection: close") || reply.contains("X-Then-Close") {
                        return;
                    }
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    fn client() -> Client {
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("test setup")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let upstreams = Upstreams::new(tls, 0);
        let Upstreams { clients } = upstreams;
        clients.into_vec().remove(0)
    }

    fn get(base: &Uri, path: &str) -> Request<Body> {
        let uri: Uri = format!("{}{}", base.to_string().trim_end_matches('/'), path)
            .parse()
            .expect("test setup");
        Request::get(uri)
            .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
            .expect("test setup")
    }

    async fn read(response: Response<Body>) -> String {
        let body = response
            .into_body()
            .collect()
            .await
            .expect("test setup")
            .to_bytes();
        String::from_utf8(body.to_vec()).expect("test setup")
    }

    /// `times` GETs of `/a` one after another: their bodies.
    async fn ask(client: &Client, base: &Uri, times: usize) -> Vec<String> {
        let mut bodies = Vec::new();
        for _ in 0..times {
            bodies.push(read(client.request(get(base, "/a")).await.expect("an answer")).await);
        }
        bodies
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (base, accepted) = backend(|_| OK).await;
        assert_eq!(ask(&client(), &base, 5).await, ["hello"; 5]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_takes_its_connection_with_it() {
        let (base, accepted) = backend(|line| {
            if line.contains("/long") {
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it"
            } else {
                OK
            }
        })
        .await;
        let client = client();
        let response = client.request(get(&base, "/long")).await.expect("test setup");
        drop(response);
        assert_eq!(
            read(client.request(get(&base, "/a")).await.expect("an answer")).await,
            "hello"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_still_returns_its_connection() {
        let (base, accepted) = backend(|_| "HTTP/1.1 204 No Content\r\n\r\n").await;
        let client = client();
        for _ in 0..3 {
            let response = client.request(get(&base, "/a")).await.expect("an answer");
            assert_eq!(response.status(), 204);
            drop(response);
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced_without_an_error() {
        let (base, accepted) =
            backend(|_| "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
        assert_eq!(ask(&client(), &base, 3).await, ["hello"; 3]);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_without_an_error() {
        // No `Connection: close`: the backend just closes the socket after
        // answering, as one does when its keep-alive timeout ends.
        let (base, accepted) =
            backend(|_| "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Then-Close: 1\r\n\r\nhello").await;
        assert_eq!(ask(&client(), &base, 3).await, ["hello"; 3]);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_their_connection_reused() {
        let (base, accepted) = backend(|_| {
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        })
        .await;
        assert_eq!(ask(&client(), &base, 3).await, ["hello world"; 3]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_delimited_by_the_close_is_read_to_it_and_its_connection_not_reused() {
        let (base, accepted) = backend(|_| "HTTP/1.1 200 OK\r\nX-Then-Close: 1\r\n\r\nuntil the end").await;
        assert_eq!(ask(&client(), &base, 2).await, ["until the end"; 2]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn empty_lines_before_a_status_line_are_skipped() {
        let (base, _) = backend(|_| "\r\n\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        assert_eq!(
            read(client().request(get(&base, "/a")).await.expect("an answer")).await,
            "hello"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_shorter_body() {
        let (base, _) =
            backend(|_| "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Then-Close: 1\r\n\r\nshort").await;
        let response = client().request(get(&base, "/a")).await.expect("a head");
        assert!(response.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn an_answer_with_bytes_after_it_never_lends_its_connection_again() {
        // Whatever follows the declared body would be read as the next
        // request's answer.
        let (base, accepted) =
            backend(|_| "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged").await;
        assert_eq!(ask(&client(), &base, 2).await, ["ok"; 2]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bytes_a_backend_sends_after_its_answer_are_never_the_next_answer() {
        let (base, accepted) = serve(|mut socket| async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = socket.read(&mut buffer).await {
                if n == 0 || socket.write_all(OK.as_bytes()).await.is_err() {
                    return;
                }
                // A moment later, an answer nobody asked for.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
                if socket.write_all(forged.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let client = client();
        for _ in 0..3 {
            assert_eq!(ask(&client, &base, 1).await, ["hello"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_that_kills_its_connection_is_sent_at_most_twice() {
        // The backend answers /ok, and closes on /crash without answering.
        let crashes = Arc::new(AtomicUsize::new(0));
        let counter = crashes.clone();
        let (base, _) = serve(move |mut socket| {
            let counter = counter.clone();
            async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 || String::from_utf8_lossy(&buffer[..n]).contains("/crash") {
                        counter.fetch_add(usize::from(n > 0), Ordering::SeqCst);
                        return;
                    }
                    if socket.write_all(OK.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        let client = client();
        // Ten idle connections.
        let answers = futures::future::join_all((0..10).map(|_| client.request(get(&base, "/ok")))).await;
        for answer in answers {
            assert_eq!(read(answer.expect("an answer")).await, "hello");
        }
        assert!(client.request(get(&base, "/crash")).await.is_err());
        assert_eq!(
            crashes.load(Ordering::SeqCst),
            2,
            "once, and once more on a new connection"
        );
    }

    #[tokio::test]
    async fn http1_requests_carry_host_and_an_origin_form_target() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test setup");
        let address = listener.local_addr().expect("test setup");
        let seen = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("test setup");
            let mut buffer = vec![0u8; 4096];
            let n = socket.read(&mut buffer).await.expect("test setup");
            socket.write_all(OK.as_bytes()).await.expect("test setup");
            String::from_utf8_lossy(&buffer[..n]).into_owned()
        });
        let base: Uri = format!("http://{address}/").parse().expect("test setup");
        read(
            client()
                .request(get(&base, "/pets?kind=dog"))
                .await
                .expect("test setup"),
        )
        .await;
        let head = seen.await.expect("test setup").to_ascii_lowercase();
        assert!(head.starts_with("get /pets?kind=dog http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {address}\r\n")), "{head}");
    }

    #[test]
    fn host_carries_the_port_only_when_it_is_not_the_schemes_default() {
        for (uri, host) in [
            ("http://example.test/x", "example.test"),
            ("http://example.test:80/x", "example.test"),
            ("http://example.test:080/x", "example.test"),
            ("http://example.test:8080/x", "example.test:8080"),
            ("http://example.test:/x", "example.test"),
            ("https://example.test:443/x", "example.test"),
            ("https://example.test:80/x", "example.test:80"),
            ("http://[::1]/x", "[::1]"),
            ("http://[::1]:80/x", "[::1]"),
            ("http://[::1]:9000/x", "[::1]:9000"),
            ("http://u@[::1]:9000/x", "[::1]:9000"),
        ] {
            let mut request = Request::new(Body::default());
            origin_form(&mut request, &uri.parse().expect("uri"));
            assert_eq!(request.headers()[header::HOST], host, "{uri}");
            assert_eq!(request.uri(), "/x", "{uri}");
        }
    }

    #[test]
    fn host_never_carries_the_uris_userinfo() {
        let mut request = Request::new(Body::default());
        origin_form(
            &mut request,
            &"http://user:pass@example.test:8080/x".parse().expect("uri"),
        );
        assert_eq!(request.headers()[header::HOST], "example.test:8080");
        origin_form(
            &mut request,
            &"http://user:pass@example.test/x".parse().expect("uri"),
        );
        assert_eq!(request.headers()[header::HOST], "example.test");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_origin() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
        let address = listener.local_addr().expect("test setup");
        drop(listener);
        let base: Uri = format!("http://{address}/").parse().expect("test setup");
        let error = client().request(get(&base, "/")).await.expect_err("refused");
        assert!(matches!(error, UpstreamError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }

    #[tokio::test]
    async fn https_backends_that_offer_http2_share_one_multiplexed_connection() {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", "/CN=backend", "-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert");
        let private = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .expect("server config");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                        let seen = format!(
                            "{:?} {} {}",
                            request.version(),
                            request.uri(),
                            request.headers().contains_key(header::HOST)
                        );
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(seen),
                        )))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let client = Upstreams::new(crate::pem::client_config(Some(&cert)).expect("client config"), 0);
        let base: Uri = format!("https://{address}/").parse().expect("uri");
        let first = read(
            client
                .client()
                .request(get(&base, "/first"))
                .await
                .expect("an answer"),
        )
        .await;
        assert_eq!(first, format!("HTTP/2.0 https://{address}/first false"));
        // Once the backend is known to speak HTTP/2, concurrent requests
        // are streams of the one connection.
        let answers = futures::future::join_all(
            (0..4).map(|i| client.client().request(get(&base, &format!("/pets/{i}")))),
        )
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let body = read(answer.expect("an answer")).await;
            assert_eq!(body, format!("HTTP/2.0 https://{address}/pets/{i} false"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
