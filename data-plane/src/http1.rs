//! Pylon's own HTTP/1.1 server for the requests most traffic is made of;
//! hyper's for everything else on the same connection.
//!
//! A request head is parsed here with `httparse` (the parser hyper itself
//! uses, with hyper's settings) and answered by this module when it is
//! *lean*:
//!
//! - HTTP/1.1, any method but `CONNECT`, an origin-form target (`/…`) that
//!   [`http::Uri`] accepts;
//! - no `Content-Length`, `Transfer-Encoding`, `Expect` or `Upgrade` field:
//!   the request has no body (RFC 9112 §6.3) and wants nothing but an
//!   answer;
//! - at most 100 fields, the head within 64 KiB.
//!
//! Anything else — a body, HTTP/1.0, a WebSocket upgrade, an oversized or
//! malformed head — hands the connection to hyper, from the first byte of
//! that request on, for the rest of its life. hyper then answers exactly as
//! it would have from the start (400, 414, 431, `100 Continue`, upgrades…):
//! this module only ever takes a subset of what hyper accepts, never a
//! request hyper would refuse, so both read a head alike.
//!
//! The answer is written as hyper's server writes it: the same status
//! line, lower-case field names, `content-length` from the body's exact
//! size (or `transfer-encoding: chunked` when it is unknown), no body for
//! `HEAD`, 204 and 304, a `date` field, `connection: close` when the
//! connection will close (the client asked, or the node is draining). A
//! body that fails or ends short of its length closes the connection, as
//! hyper does. Trailers are not sent (the response phase drops `Trailer`,
//! without which hyper sends none either).
//!
//! While a request is at the backend the socket is watched: a client that
//! closes its connection drops the request (recorded as 499), as hyper
//! does without half-close; bytes of a pipelined next request are kept for
//! after the answer.
//!
//! What it saves against hyper's server, per request (docs/performance.md):
//! hyper's dispatcher task state, the boxed service future and its
//! response channel; measured at ~2 µs of user CPU on this machine.

use crate::conn::{Activity, Guarded, Socket};
use crate::request::body::RequestBody;
use crate::{Body, ConnInfo, Gateway, pipeline};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most header fields a lean head may have (hyper's default limit).
const MAX_FIELDS: usize = 100;
/// The largest head read before hyper takes over (and answers 431): the
/// server's `max_buf_size`.
pub const MAX_HEAD: usize = 64 * 1024;
/// hyper's longest request target (beyond it: 414).
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Small body frames are copied behind the head into one write; larger
/// ones go as their own buffer of a vectored write.
const COPY_BELOW: usize = 8 * 1024;
/// Bytes gathered before they are written even though the body has more
/// ready.
const WRITE_BATCH: usize = 64 * 1024;

/// Asks a connection to finish the request in flight and close (the node
/// is draining); shared between [`serve`] and [`crate::conn::drive`].
#[derive(Debug, Default)]
pub struct Closing(AtomicBool);

impl Closing {
    pub fn close(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one look at the buffered bytes found.
#[allow(clippy::large_enum_variant)] // (one lives on the stack at a time)
enum Head {
    /// A lean request, and whether the connection may stay open after it.
    Lean(Request<RequestBody>, bool),
    /// More bytes are needed.
    Partial,
    /// A request for hyper.
    Hyper,
}

/// Serves an HTTP/1.1 connection whose first bytes are `first`; returns
/// when it closes. `closing` set: close once the request in flight (if
/// any) is answered.
pub async fn serve<I>(
    mut io: Guarded<I>,
    first: Bytes,
    gateway: Arc<Gateway>,
    info: ConnInfo,
    activity: Arc<Activity>,
    builder: &http1::Builder,
    closing: &Closing,
) where
    I: tokio::io::AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    buf.extend_from_slice(&first);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // A head, whole.
        let (request, keep_alive) = loop {
            if !buf.is_empty() {
                match parse(&mut buf) {
                    Head::Lean(request, keep_alive) => break (request, keep_alive),
                    Head::Hyper => {
                        io.unread(buf.split().freeze());
                        return hand_to_hyper(io, gateway, info, activity, builder, closing).await;
                    }
                    Head::Partial if buf.len() >= MAX_HEAD => {
                        io.unread(buf.split().freeze());
                        return hand_to_hyper(io, gateway, info, activity, builder, closing).await;
                    }
                    Head::Partial => {}
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            match read_unless_closing(&mut io, &mut buf, closing).await {
                Some(n) if n > 0 => {}
                // Closed, failed, or closing while idle.
                _ => return,
            }
        };
        let in_flight = activity.begin();
        let head_request = request.method() == Method::HEAD;
        let handling = pipeline::handle(gateway.clone(), request, info.clone());
        let response = tokio::select! {
            biased;
            response = handling => response,
            () = watch_client(&mut io, &mut buf) => return,
        };
        let keep_alive = keep_alive && !closing.is_set();
        let sent = respond(&mut io, &mut out, response, head_request, keep_alive).await;
        drop(in_flight);
        match sent {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return;
            }
            Err(e) => {
                tracing::debug!(remote = %info.remote, error = %e, "the answer could not be sent whole; closing");
                return;
            }
        }
    }
}

/// Reads more of a request head; `None` when the connection closed or
/// failed, or the node is closing it (no request is in flight: as hyper's
/// graceful shutdown, a head not read whole yet is not waited for).
async fn read_unless_closing<I>(io: &mut Guarded<I>, buf: &mut BytesMut, closing: &Closing) -> Option<usize>
where
    I: tokio::io::AsyncRead + Unpin,
{
    let mut read = std::pin::pin!(io.read_buf(buf));
    // `drive` polls the connection again right after setting `closing`.
    std::future::poll_fn(|cx| {
        if closing.is_set() {
            return Poll::Ready(None);
        }
        read.as_mut().poll(cx).map(Result::ok)
    })
    .await
}

/// Resolves when the client closes its side (or the socket fails) while
/// its request is in flight; bytes it sends meanwhile (a pipelined next
/// request) are kept, and then the socket is left alone until the answer.
async fn watch_client<I>(io: &mut Guarded<I>, buf: &mut BytesMut)
where
    I: tokio::io::AsyncRead + Unpin,
{
    if buf.is_empty() {
        if buf.capacity() < 1024 {
            buf.reserve(8 * 1024);
        }
        match io.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
    std::future::pending::<()>().await
}

/// Parses the head at the start of `buf`; a lean request takes its bytes.
fn parse(buf: &mut BytesMut) -> Head {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Head::Hyper;
    };
    if !target.starts_with('/') || target.len() > MAX_TARGET {
        return Head::Hyper;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Hyper;
    };
    if method == Method::CONNECT {
        return Head::Hyper;
    }
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let target_at = span(target.as_bytes());
    let mut keep_alive = true;
    let mut at = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Head::Hyper;
        };
        match name {
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => {
                return Head::Hyper;
            }
            header::CONNECTION if keep_alive && has_token(field.value, "close") => keep_alive = false,
            _ => {}
        }
        at.push((name, span(field.value)));
    }
    let head = buf.split_to(len).freeze();
    // What hyper would refuse (400) goes back to it whole.
    let give_back = |buf: &mut BytesMut| {
        let mut again = BytesMut::with_capacity(head.len() + buf.len());
        again.extend_from_slice(&head);
        again.extend_from_slice(buf);
        *buf = again;
        Head::Hyper
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target_at)) else {
        return give_back(buf);
    };
    let mut headers = HeaderMap::with_capacity(at.len());
    for (name, range) in at {
        match HeaderValue::from_maybe_shared(head.slice(range)) {
            Ok(value) => {
                headers.append(name, value);
            }
            Err(_) => return give_back(buf),
        }
    }
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Head::Lean(request, keep_alive)
}

/// Whether a comma-separated field value lists `token` (case-insensitive),
/// as hyper reads `Connection`.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// How the body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// No body at all (HEAD, 204, 304).
    None,
}

/// Writes `response`; `Ok(true)` when the connection stays open for the
/// next request.
///
/// # Errors
/// The client did not take the bytes (or the send timeout passed), or the
/// body failed or ended short of its length: the connection must close.
async fn respond<I>(
    io: &mut Guarded<I>,
    out: &mut Vec<u8>,
    response: Response<Body>,
    head_request: bool,
    mut keep_alive: bool,
) -> io::Result<bool>
where
    I: AsyncWrite + Socket + Unpin,
{
    let (mut parts, body) = response.into_parts();
    let mut body = if parts.status.is_informational() {
        // hyper cannot send a 1xx as the answer: it sends 500 and closes.
        tracing::warn!(status = %parts.status, "an informational status cannot be the answer; sending 500");
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
        keep_alive = false;
        crate::full_body(Bytes::new())
    } else {
        body
    };
    let length = if hyper::body::Body::is_end_stream(&body) {
        Some(0)
    } else {
        hyper::body::Body::size_hint(&body).exact()
    };
    out.clear();
    let (framing, last) = encode_head(out, &mut parts, length, head_request, keep_alive);
    let keep_alive = keep_alive && !last;
    let mut remaining = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
        Framing::None => 0,
    };
    if framing != Framing::None {
        loop {
            // Frames ready now go with what is gathered; the gathered
            // bytes are written before waiting for more.
            let frame = match futures::FutureExt::now_or_never(body.frame()) {
                Some(frame) => frame,
                None => {
                    write_all(io, out, None).await?;
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    write_all(io, out, None).await?;
                    return Err(io::Error::other(e));
                }
            };
            if data.is_empty() {
                continue;
            }
            if framing == Framing::Chunked {
                let _ = write!(out, "{:X}\r\n", data.len());
            } else if data.len() as u64 > remaining {
                write_all(io, out, Some(&data.slice(..remaining as usize))).await?;
                return Err(io::Error::other("the body is longer than its Content-Length"));
            } else {
                remaining -= data.len() as u64;
            }
            if data.len() < COPY_BELOW {
                out.extend_from_slice(&data);
            } else {
                write_all(io, out, Some(&data)).await?;
            }
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= WRITE_BATCH {
                write_all(io, out, None).await?;
            }
        }
        match framing {
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(_) if remaining > 0 => {
                write_all(io, out, None).await?;
                return Err(io::Error::other("the body ended short of its Content-Length"));
            }
            _ => {}
        }
    }
    write_all(io, out, None).await?;
    Ok(keep_alive)
}

/// Writes `out` then `data`, with vectored writes; empties `out`.
async fn write_all<I>(io: &mut Guarded<I>, out: &mut Vec<u8>, data: Option<&Bytes>) -> io::Result<()>
where
    I: AsyncWrite + Socket + Unpin,
{
    let data: &[u8] = data.map_or(&[], |d| &d[..]);
    let (mut head, mut tail) = (0, 0);
    while head < out.len() || tail < data.len() {
        let n = if head < out.len() {
            io.write_vectored(&[IoSlice::new(&out[head..]), IoSlice::new(&data[tail..])])
                .await?
        } else {
            io.write(&data[tail..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let into_head = n.min(out.len() - head);
        head += into_head;
        tail += n - into_head;
    }
    out.clear();
    Ok(())
}

/// Encodes the status line and fields of an answer as hyper's server does
/// (`proto/h1/role.rs`); the body's framing, and whether the connection
/// closes after it. `length`: the body's exact size, when known.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    length: Option<u64>,
    head_request: bool,
    keep_alive: bool,
) -> (Framing, bool) {
    let status = parts.status;
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        None if status == StatusCode::OK => out.extend_from_slice(b"HTTP/1.1 200 OK\r\n"),
        reason => {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            match reason {
                Some(reason) => out.extend_from_slice(reason.as_bytes()),
                None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    // RFC 9110 §6.4.1, §8.6: no body, and no length, for 204 and 304; no
    // body (but the GET's length) for HEAD.
    let bodiless_status = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut last = !keep_alive;
    let mut wrote_date = false;
    let mut content_length: Option<HeaderValue> = None;
    let mut connection: Vec<HeaderValue> = Vec::new();
    for (name, value) in parts.headers.iter() {
        match *name {
            header::CONTENT_LENGTH => {
                if content_length.is_none() {
                    content_length = Some(value.clone());
                }
                continue;
            }
            // The response phase removes hop-by-hop fields; framing is ours.
            header::TRANSFER_ENCODING | header::TRAILER => continue,
            header::CONNECTION => {
                last |= has_token(value.as_bytes(), "close");
                connection.push(value.clone());
                continue;
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive && !connection.iter().any(|v| has_token(v.as_bytes(), "close")) {
        connection.push(HeaderValue::from_static("close"));
    }
    if !connection.is_empty() {
        out.extend_from_slice(b"connection: ");
        for (i, value) in connection.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    let framing = match length {
        _ if bodiless_status => Framing::None,
        Some(n) => {
            if head_request {
                // The answer to HEAD keeps the length a GET would get.
                match content_length {
                    Some(value) => put_field(out, "content-length", value.as_bytes()),
                    None if n > 0 => put_length(out, n),
                    None => {}
                }
            } else {
                put_length(out, n);
            }
            Framing::Length(n)
        }
        None => match content_length
            .as_ref()
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok())
        {
            Some(n) => {
                put_length(out, n);
                Framing::Length(n)
            }
            None if head_request => Framing::None,
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let framing = if head_request { Framing::None } else { framing };
    (framing, last)
}

fn put_length(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "content-length: {n}\r\n");
}

fn put_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Today's IMF-fixdate (RFC 9110 §5.6.7), formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// hyper serves the rest of the connection (its first bytes already put
/// back into `io`).
async fn hand_to_hyper<I>(
    io: Guarded<I>,
    gateway: Arc<Gateway>,
    info: ConnInfo,
    activity: Arc<Activity>,
    builder: &http1::Builder,
    closing: &Closing,
) where
    I: tokio::io::AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    let service = service(gateway, info, activity);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut shutting = false;
    std::future::poll_fn(|cx| {
        if !shutting && closing.is_set() {
            shutting = true;
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await
    .ok();
}

/// The hyper service that runs each request through the pipeline; its
/// answer keeps the request in flight until hyper has sent it.
pub fn service(
    gateway: Arc<Gateway>,
    info: ConnInfo,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Response<crate::conn::Tracked>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Send
+ 'static {
    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (gateway, info) = (gateway.clone(), info.clone());
        let in_flight = activity.begin();
        async move {
            let response = pipeline::handle(gateway, request.map(RequestBody::Incoming), info).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| crate::conn::Tracked::new(body, in_flight)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        (parse(&mut buf), buf)
    }

    #[test]
    fn a_bodyless_head_is_lean_and_read_as_hyper_reads_it() {
        let (head, rest) = parsed(
            "\r\nGET /a/b?c=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a:  2 \r\nConnection: keep-alive\r\n\r\nGET /next",
        );
        let Head::Lean(request, keep_alive) = head else {
            panic!("lean")
        };
        assert!(keep_alive);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/a/b");
        assert_eq!(request.uri().query(), Some("c=1"));
        assert_eq!(request.version(), Version::HTTP_11);
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next", "the next request's bytes stay");
    }

    #[test]
    fn bodies_upgrades_old_versions_and_odd_targets_go_to_hyper_untouched() {
        for bytes in [
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "G@T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            let (head, rest) = parsed(bytes);
            assert!(matches!(head, Head::Hyper), "{bytes:?}");
            assert_eq!(
                &rest[..],
                bytes.as_bytes(),
                "{bytes:?}: hyper reads it from its first byte"
            );
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(MAX_FIELDS + 1));
        assert!(
            matches!(parsed(&many).0, Head::Hyper),
            "over 100 fields: hyper's 431"
        );
    }

    #[test]
    fn a_close_on_any_connection_line_ends_the_connection_after_the_answer() {
        for bytes in [
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n",
            "GET / HTTP/1.1\r\nconnection: x-a , CLOSE\r\n\r\n",
        ] {
            let (head, _) = parsed(bytes);
            assert!(matches!(head, Head::Lean(_, false)), "{bytes:?}");
        }
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n").0,
            Head::Lean(_, true)
        ));
    }

    #[test]
    fn half_a_head_waits_for_more() {
        assert!(matches!(parsed("GET /a HTTP/1.1\r\nHost: x").0, Head::Partial));
        assert!(matches!(parsed("GE").0, Head::Partial));
    }

    fn head_of(
        status: u16,
        headers: &[(&str, &str)],
        length: Option<u64>,
        head: bool,
        keep: bool,
    ) -> (String, Framing, bool) {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or_default();
        for (name, value) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap_or(header::VIA),
                HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
            );
        }
        let (mut parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let (framing, last) = encode_head(&mut out, &mut parts, length, head, keep);
        let text = String::from_utf8_lossy(&out).into_owned();
        // The date changes every second.
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            String::from_utf8_lossy(&out).contains("\r\ndate: "),
            "a date field"
        );
        (text, framing, last)
    }

    #[test]
    fn answers_are_framed_as_hypers_server_frames_them() {
        let (text, framing, last) = head_of(
            200,
            &[("x-a", "1"), ("content-length", "5")],
            Some(5),
            false,
            true,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 5\n");
        assert_eq!((framing, last), (Framing::Length(5), false));
        let (text, framing, _) = head_of(200, &[], None, false, true);
        assert_eq!(text, "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n");
        assert_eq!(framing, Framing::Chunked);
        let (text, framing, _) = head_of(200, &[], Some(0), false, true);
        assert_eq!(
            (text.as_str(), framing),
            ("HTTP/1.1 200 OK\ncontent-length: 0\n", Framing::Length(0))
        );
        // HEAD: the GET's length, no body.
        let (text, framing, _) = head_of(200, &[("content-length", "42")], Some(0), true, true);
        assert_eq!(
            (text.as_str(), framing),
            ("HTTP/1.1 200 OK\ncontent-length: 42\n", Framing::None)
        );
        let (text, framing, _) = head_of(200, &[], None, true, true);
        assert_eq!((text.as_str(), framing), ("HTTP/1.1 200 OK\n", Framing::None));
        // 204 and 304: no length, no body.
        for status in [204, 304] {
            let (text, framing, _) = head_of(status, &[("content-length", "3")], Some(3), false, true);
            assert!(!text.contains("content-length"), "{text}");
            assert_eq!(framing, Framing::None);
        }
        // A code without a registered reason still gets one.
        assert!(
            head_of(299, &[], Some(0), false, true)
                .0
                .starts_with("HTTP/1.1 299 <none>\n")
        );
        // Closing: said once, whoever asked.
        let (text, _, last) = head_of(200, &[], Some(0), false, false);
        assert!(text.contains("\nconnection: close\n") && last, "{text}");
        let (text, _, last) = head_of(200, &[("connection", "close")], Some(0), false, true);
        assert!(text.contains("\nconnection: close\n") && last, "{text}");
        assert_eq!(text.matches("connection").count(), 1, "{text}");
        // Framing fields from elsewhere are never passed on.
        let (text, _, _) = head_of(
            200,
            &[("transfer-encoding", "gzip"), ("trailer", "x")],
            Some(1),
            false,
            true,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 1\n");
        // A date the answer has is kept (and not doubled).
        let mut response = Response::new(());
        response.headers_mut().insert(
            header::DATE,
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        let (mut parts, ()) = response.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &mut parts, Some(0), false, true);
        assert_eq!(String::from_utf8_lossy(&out).matches("date: ").count(), 1);
    }
}
