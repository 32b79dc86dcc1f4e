//! The HTTP/1.1 exchange of a plain request — `GET` or `HEAD`, no body, to
//! an `http` backend — without hyper's client: the request head written
//! with one `write`, the response head parsed with `httparse` (as hyper
//! does) and the body read by the request's own task, on a kept-alive TCP
//! connection that [`super::upstream`] keeps per worker.
//!
//! Measured (docs/performance.md): on a bare proxy hyper's client
//! connection (its dispatch channel, its spawned connection task, its body
//! channel) costs ~2 µs of user CPU per request; in Pylon this path saves
//! ~1 µs of the ~14 µs a proxied request costs. Requests with a body,
//! `https` backends, HTTP/2 and anything else keep hyper's client.
//!
//! The response is read as RFC 9112 says a client must, and anything else
//! is refused rather than guessed at:
//! - the head: at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] fields (hyper
//!   client's defaults), names and values as `http` accepts them, no
//!   obsolete line folding; empty lines before the status line and 1xx
//!   answers other than 101 are skipped (§2.2, §4); parsed only once a
//!   blank line can have ended it (a trickled head costs linear time);
//! - the body's framing (§6.3): none after `HEAD`, 101, 204 and 304; with
//!   `Transfer-Encoding`, `chunked` last or the answer is refused (a coding
//!   the client would get undecoded; exactly `chunked` is checked by
//!   [`super::http`]), never in an HTTP/1.0 answer (§6.1), and
//!   `Content-Length` beside it is ignored; else one `Content-Length`
//!   (a list of one repeated value, leading zeros allowed) or the body runs
//!   to the close;
//! - chunked bodies (§7.1): hex sizes of at most 15 significant digits,
//!   every line ended by CRLF (a bare LF or a CR inside refused), chunk
//!   lines up to 4 KiB, extensions (16 KiB a body, no control characters)
//!   and trailer fields (16 KiB, field lines only) skipped.
//!
//! A connection is reused only after an HTTP/1.1 answer without
//! `Connection: close`, read to its end, with no byte after it; never after
//! both framings, a 101, or any answer to `HEAD` (a body a backend sends
//! after `HEAD` anyway would be read as the next answer).

use crate::error::BoxError;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The largest response head read (hyper's client default: 8 KiB + 100 ×
/// 4 KiB).
pub const MAX_HEAD_BYTES: usize = 8 * 1024 + 100 * 4 * 1024;
/// The most header fields a response head may have (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most bytes of trailer fields skipped after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// The most chunk-extension bytes a body may carry (hyper's limit).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// How much is read at a time once the head is in.
const READ_BYTES: usize = 16 * 1024;

/// A kept-alive connection and the bytes read from it but not used yet
/// (always none while it is idle).
pub struct Conn {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub fn new(tcp: TcpStream) -> Conn {
        Conn {
            tcp,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: the backend has
    /// neither closed it nor sent anything unasked, as far as the reactor
    /// has seen (no system call unless it saw something: reads that leave
    /// the socket drained clear its readiness). That is what hyper's idle
    /// connections know too; a close still on its way shows as
    /// [`ExchangeError::ClosedBeforeAnswer`].
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request could not be written.
    #[error("writing the request to the backend")]
    Write(#[source] io::Error),
    /// The connection closed (or was reset) before any byte of an answer.
    #[error("the backend closed the connection before answering")]
    ClosedBeforeAnswer(#[source] Option<io::Error>),
    /// Reading the answer failed part way.
    #[error("reading the backend's answer")]
    Read(#[source] io::Error),
    /// The backend answered something that is not a valid HTTP/1.x answer.
    #[error("the backend's answer is not valid HTTP/1.1: {0}")]
    Invalid(String),
}

impl ExchangeError {
    /// Whether the answer itself was at fault (502 as an invalid answer),
    /// not the connection.
    pub fn is_invalid(&self) -> bool {
        matches!(self, ExchangeError::Invalid(_))
    }

    /// Whether a request sent on a reused connection may be sent again on
    /// a new one: nothing of an answer came back, and the requests taken
    /// this way are idempotent (RFC 9110 §9.2.2).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ExchangeError::Write(_) | ExchangeError::ClosedBeforeAnswer(_)
        )
    }
}

fn invalid(why: impl Into<String>) -> ExchangeError {
    ExchangeError::Invalid(why.into())
}

/// Whether `request` can go this way: `GET` or `HEAD` with an empty body
/// and no framing headers.
pub fn eligible<B: hyper::body::Body>(request: &Request<B>) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && request.body().is_end_stream()
        && !request.headers().contains_key(header::CONTENT_LENGTH)
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
}

/// The request head in HTTP/1.1 form: `request` carries an origin-form
/// target and `Host` already.
pub fn head<B>(request: &Request<B>) -> Vec<u8> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(65 + target.len() + request.headers().len() * 48);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    // An origin-form target starts with `/` (RFC 9112 §3.2.1), also for a
    // URI that has a query and no path (`http://backend?v=1`).
    if !target.starts_with('/') {
        head.push(b'/');
    }
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// An answer's head, and its body still on the connection.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// How the body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (after `HEAD`, 204, 304, or `Content-Length: 0`).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `chunked`.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// Writes `head` on `conn` and reads the answer's head (`head_request`: the
/// method was `HEAD`, so no body follows).
///
/// # Errors
/// [`ExchangeError`]; the connection goes with it.
pub async fn exchange(conn: &mut Conn, head: &[u8], head_request: bool) -> Result<Answer, ExchangeError> {
    conn.tcp.write_all(head).await.map_err(ExchangeError::Write)?;
    conn.buf.clear();
    let mut answered = false;
    // Parsed only once a blank line can have ended the head, and searched
    // for it only in what is new: a head trickled in byte by byte costs
    // linear time, not a parse per byte.
    let mut searched: usize = 0;
    loop {
        // Empty lines before a status line are skipped (as httparse does)
        // here, once each: else every one would look like a head's end.
        let empty = conn.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        if empty > 0 {
            conn.buf.advance(empty);
            searched = searched.saturating_sub(empty);
        }
        if blank_line_from(&conn.buf, searched)
            && let Some(answer) = parse(&mut conn.buf, head_request)?
        {
            return Ok(answer);
        }
        searched = conn.buf.len();
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(invalid(format!("a response head over {MAX_HEAD_BYTES} bytes")));
        }
        conn.buf.reserve(8 * 1024);
        let read = conn.tcp.read_buf(&mut conn.buf).await;
        match read {
            Ok(0) if !answered => return Err(ExchangeError::ClosedBeforeAnswer(None)),
            // (As hyper says it: an incomplete message, not an invalid one.)
            Ok(0) => return Err(ExchangeError::Read(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => answered = true,
            Err(e) if !answered && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ExchangeError::ClosedBeforeAnswer(Some(e)));
            }
            Err(e) => return Err(ExchangeError::Read(e)),
        }
    }
}

/// Whether `buf` has a blank line (`\n\n` or `\n\r\n`: httparse also
/// takes bare LF line ends) that ends at or after `from`.
fn blank_line_from(buf: &[u8], from: usize) -> bool {
    let Some(tail) = buf.get(from.saturating_sub(2)..) else {
        return false;
    };
    // Line ends found a word at a time, not a byte at a time.
    memchr::memchr_iter(b'\n', tail).any(|at| match tail.get(at + 1) {
        Some(b'\n') => true,
        Some(b'\r') => tail.get(at + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// One answer's head from `buf` if it is all there (1xx answers other than
/// 101 skipped), leaving the body's first bytes in `buf`.
fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Answer>, ExchangeError> {
    loop {
        // Left uninitialised: httparse writes the fields it finds (zeroing
        // all 100 slots cost more than parsing a small head).
        let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid(format!("more than {MAX_HEADERS} header fields")));
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("status {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(length);
            continue;
        }
        // Values are slices of the head, as hyper makes them: no copy each.
        let start = buf.as_ptr() as usize;
        let mut fields: smallvec::SmallVec<[(HeaderName, usize, usize); 24]> = smallvec::SmallVec::new();
        let mut seen = Seen::default();
        for field in response.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| invalid(format!("the header name {:?}", field.name)))?;
            seen.note(&name);
            let from = (field.value.as_ptr() as usize)
                .checked_sub(start)
                .filter(|from| from + field.value.len() <= length)
                .ok_or_else(|| invalid("a header value outside the head"))?;
            fields.push((name, from, from + field.value.len()));
        }
        let http11 = response.version == Some(1);
        if length > MAX_HEAD_BYTES {
            return Err(invalid(format!("a response head over {MAX_HEAD_BYTES} bytes")));
        }
        let head = buf.split_to(length).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, from, to) in fields {
            let value = HeaderValue::from_maybe_shared(head.slice(from..to))
                .map_err(|_| invalid(format!("the value of {name}")))?;
            headers.append(name, value);
        }
        let (body, reusable) = framing(&headers, seen, status, head_request, http11)?;
        let keep_alive = http11 && reusable && !(seen.connection && connection_close(&headers));
        return Ok(Some(Answer {
            status,
            headers,
            body,
            keep_alive,
        }));
    }
}

/// Which of the fields that frame an answer its head has, noted while the
/// head is read: most answers lack some, and a lookup by name hashes it.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName) {
        if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == header::CONTENT_LENGTH {
            self.content_length = true;
        } else if *name == header::CONNECTION {
            self.connection = true;
        }
    }
}

/// The body's framing (RFC 9112 §6.3), and whether it leaves the connection
/// reusable. `seen`: which framing fields `headers` has.
fn framing(
    headers: &HeaderMap,
    seen: Seen,
    status: StatusCode,
    head_request: bool,
    http11: bool,
) -> Result<(Framing, bool), ExchangeError> {
    let chunked = seen.transfer_encoding;
    // Both: the exchange is suspect, the connection is not reused.
    let alone = !(chunked && seen.content_length);
    if chunked && !http11 {
        // RFC 9112 §6.1: faulty framing in an HTTP/1.0 message.
        return Err(invalid("Transfer-Encoding in an HTTP/1.0 answer"));
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // What follows is no longer HTTP/1.1 (RFC 9110 §15.2.2).
        return Ok((Framing::Empty, false));
    }
    if head_request {
        // Backends that send a body after `HEAD` anyway are common enough,
        // and what comes late would be the next request's answer: a
        // connection that carried a `HEAD` is not reused.
        return Ok((Framing::Empty, false));
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, alone));
    }
    if chunked {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|coding| !coding.is_empty());
        if !last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")) {
            return Err(invalid("a transfer coding other than chunked"));
        }
        // Content-Length beside it is not the body's length.
        return Ok((Framing::Chunked, alone));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            // (Leading zeros are digits like any other: RFC 9110 §8.6.)
            let significant = &item[item.iter().take_while(|b| **b == b'0').count()..];
            let parsed = if item.is_empty() || significant.len() > 19 || !item.iter().all(u8::is_ascii_digit)
            {
                None
            } else if significant.is_empty() {
                Some(0)
            } else {
                std::str::from_utf8(significant)
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
            };
            match (parsed, length) {
                (None, _) => return Err(invalid("an invalid Content-Length")),
                (Some(n), Some(seen)) if n != seen => {
                    return Err(invalid("Content-Length values that differ"));
                }
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn connection_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Where a connection goes once its answer is read to the end.
pub trait PutBack: Send + Unpin + 'static {
    fn put_back(self, conn: Conn);
}

/// A response body read from its connection by the task that polls it;
/// the connection is put back once the body is read to its end, and closes
/// with the body if it is dropped before.
pub struct Incoming<P: PutBack> {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    home: Option<P>,
    /// How much of the buffer's current line was searched for its end.
    scanned: usize,
    /// Chunk-extension bytes seen so far (at most [`MAX_EXTENSION_BYTES`]).
    extensions: usize,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Close,
    Done,
}

impl<P: PutBack> Incoming<P> {
    /// The body of `answer` on `conn`; an empty one puts the connection
    /// back at once.
    pub fn new(conn: Conn, framing: Framing, keep_alive: bool, home: P) -> Incoming<P> {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = Incoming {
            conn: Some(conn),
            state,
            keep_alive,
            home: Some(home),
            scanned: 0,
            extensions: 0,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The end of the body: the connection goes back if it can carry
    /// another request (nothing after the answer), else it closes.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.keep_alive
            && conn.buf.is_empty()
        {
            home.put_back(conn);
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the close.
    fn fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if conn.buf.capacity() - conn.buf.len() < READ_BYTES / 4 {
            conn.buf.reserve(READ_BYTES);
        }
        // (`AsyncRead`, not `try_read_buf`: a short read clears the
        // socket's readiness, so [`Conn::is_open`] costs no system call.)
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.tcp), cx, &mut conn.buf)
    }

    fn fail(&mut self, error: ExchangeError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

/// The end of the line at the start of `buf` (the index of its CRLF), if
/// it is all there; `from`: how much was searched already (no `\n` in it).
///
/// # Errors
/// A bare LF, or a CR inside the line: line ends are CRLF (RFC 9112 §2.2
/// lets a recipient take a bare LF; in a body's framing that is where
/// parsers disagree, so it is refused, as hyper does).
fn line(buf: &[u8], from: usize) -> Result<Option<usize>, &'static str> {
    let Some(lf) = buf
        .get(from..)
        .and_then(|tail| tail.iter().position(|b| *b == b'\n'))
    else {
        return Ok(None);
    };
    let lf = from + lf;
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("a chunk line ended by a bare LF");
    }
    if buf[..lf - 1].contains(&b'\r') {
        return Err("a CR inside a chunk line");
    }
    Ok(Some(lf - 1))
}

/// Whether a trailer line is a field line: a name, a colon, a value
/// without control characters other than tab.
fn field_line(line: &[u8]) -> bool {
    line.iter().position(|b| *b == b':').is_some_and(|colon| {
        colon > 0
            && line[..colon].iter().all(u8::is_ascii_graphic)
            && line[colon + 1..]
                .iter()
                .all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
    })
}

/// A chunk-size line's size and the length of its extensions (RFC 9112
/// §7.1: hex digits — leading zeros allowed, at most 15 significant —
/// then optional spaces or tabs and `;` extensions, which are skipped but
/// may hold no control character other than tab).
fn chunk_size(line: &[u8]) -> Option<(u64, usize)> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let significant = line[..digits].iter().skip_while(|b| **b == b'0').count();
    if digits == 0 || significant > 15 {
        return None;
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count()..];
    let extensions = match rest.first() {
        None => 0,
        Some(b';') if rest.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)) => rest.len(),
        Some(_) => return None,
    };
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
    Some((size, extensions))
}

impl<P: PutBack> hyper::body::Body for Incoming<P> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Data already read, for the states that hand it out.
            match this.state {
                State::Length(left) | State::ChunkData(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(conn.buf.len());
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    match this.state {
                        State::Length(_) if left == 0 => this.finish(),
                        State::Length(_) => this.state = State::Length(left),
                        _ if left == 0 => this.state = State::ChunkEnd,
                        _ => this.state = State::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize | State::Trailers(_) => {
                    let limit = match this.state {
                        State::Trailers(seen) => MAX_TRAILER_BYTES.saturating_sub(seen),
                        _ => MAX_CHUNK_LINE,
                    };
                    match line(&conn.buf, this.scanned) {
                        Ok(Some(end)) if end <= limit => {
                            this.scanned = 0;
                            match this.state {
                                State::Trailers(_) if end == 0 => {
                                    conn.buf.advance(2);
                                    this.finish();
                                    return Poll::Ready(None);
                                }
                                State::Trailers(seen) => {
                                    if !field_line(&conn.buf[..end]) {
                                        return this.fail(invalid("a trailer line that is not a field"));
                                    }
                                    this.state = State::Trailers(seen + end + 2);
                                }
                                _ => {
                                    let Some((size, extensions)) = chunk_size(&conn.buf[..end]) else {
                                        return this.fail(invalid("an invalid chunk-size line"));
                                    };
                                    this.extensions += extensions;
                                    if this.extensions > MAX_EXTENSION_BYTES {
                                        return this.fail(invalid("chunk extensions over 16 KiB"));
                                    }
                                    this.state = if size == 0 {
                                        State::Trailers(0)
                                    } else {
                                        State::ChunkData(size)
                                    };
                                }
                            }
                            conn.buf.advance(end + 2);
                            continue;
                        }
                        // More is needed (below).
                        Ok(None) if conn.buf.len() <= limit => this.scanned = conn.buf.len(),
                        Ok(_) => return this.fail(invalid("a chunk line or trailer section over its limit")),
                        Err(why) => return this.fail(invalid(why)),
                    }
                }
                State::ChunkEnd if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return this.fail(invalid("a chunk not ended by CRLF"));
                    }
                    conn.buf.advance(2);
                    this.state = State::ChunkSize;
                    continue;
                }
                _ => {}
            }
            // More is needed.
            match ready!(Self::fill(conn, cx)) {
                Ok(0) if matches!(this.state, State::Close) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(ExchangeError::Read(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return this.fail(ExchangeError::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<Answer>, ExchangeError> {
        parse(&mut BytesMut::from(head.as_bytes()), false)
    }

    fn framed(head: &str) -> (Framing, bool) {
        let answer = parsed(head).expect("valid").expect("complete");
        (answer.body, answer.keep_alive)
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (Framing::Chunked, true)
        );
        // Both: chunked wins, and the connection is not trusted again.
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            (Framing::Chunked, false)
        );
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000000005\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 00\r\n\r\n"),
            (Framing::Empty, true)
        );
        // After a 101 the connection no longer speaks HTTP/1.1.
        assert_eq!(
            framed("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            (Framing::Empty, false)
        );
        // Bodyless, but with both framings: not trusted again either.
        assert_eq!(
            framed("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"),
            (Framing::Empty, false)
        );
        let after_head = parse(
            &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]),
            true,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!((after_head.body, after_head.keep_alive), (Framing::Empty, false));
    }

    #[test]
    fn answers_that_are_not_valid_http_are_refused() {
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(matches!(parsed(head), Err(ExchangeError::Invalid(_))), "{head:?}");
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS + 1));
        assert!(matches!(parsed(&many), Err(ExchangeError::Invalid(_))));
    }

    #[test]
    fn informational_answers_are_skipped_but_101_is_kept() {
        let answer = parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(answer.status, 200);
        assert!(!answer.headers.contains_key("link"));
        let switching = parsed("HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(switching.status, 101);
        assert!(
            parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2")
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn a_target_with_a_query_and_no_path_starts_with_a_slash() {
        for (uri, line) in [
            ("?v=1", "GET /?v=1 HTTP/1.1\r\n"),
            ("/x?v=1", "GET /x?v=1 HTTP/1.1\r\n"),
        ] {
            let request = Request::get(http::Uri::from(
                http::uri::PathAndQuery::try_from(uri).expect("target"),
            ))
            .body(())
            .expect("request");
            let head = String::from_utf8(head(&request)).expect("text");
            assert!(head.starts_with(line), "{head}");
        }
    }

    #[test]
    fn a_head_is_looked_for_only_where_it_can_have_ended() {
        assert!(blank_line_from(b"HTTP/1.1 200 OK\r\n\r\n", 0));
        assert!(blank_line_from(b"HTTP/1.1 200 OK\r\n\r\n", 17));
        assert!(blank_line_from(b"HTTP/1.1 200 OK\n\n", 16));
        assert!(!blank_line_from(b"HTTP/1.1 200 OK\r\nX: 1\r\n", 0));
        assert!(!blank_line_from(b"HTTP/1.1 200 OK\r\nX: 1\r\n\r", 0));
        assert!(blank_line_from(b"HTTP/1.1 200 OK\r\nX: 1\n\r\n", 20));
        assert!(!blank_line_from(b"", 0));
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a"), Some((26, 0)));
        assert_eq!(chunk_size(b"A;name=value"), Some((10, 11)));
        assert_eq!(chunk_size(b"5 \t;ext"), Some((5, 4)));
        assert_eq!(chunk_size(b"0"), Some((0, 0)));
        assert_eq!(chunk_size(b"0000000000000005"), Some((5, 0)));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"5 x",
            b"1234567890abcdef0",
            b"0x5",
            b"5;a\x01",
            b"5\x0b;a",
        ] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunk_lines_end_in_crlf_and_hold_no_other_line_end() {
        assert_eq!(line(b"5;a\r\nhello", 0), Ok(Some(3)));
        assert_eq!(line(b"5;a", 0), Ok(None));
        assert!(line(b"5\n;hello\r\n", 0).is_err());
        assert!(line(b"5\r;x\r\n", 0).is_err());
        assert!(line(b"\n", 0).is_err());
        // Searched in steps, as the bytes come.
        assert_eq!(line(b"5;abc", 3), Ok(None));
        assert_eq!(line(b"5;abc\r\n", 5), Ok(Some(5)));
        assert!(field_line(b"X-Trailer: 1"));
        for bad in [&b"no colon"[..], b": empty name", b"X Y: 1", b"X: a\x01"] {
            assert!(!field_line(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_bodyless_gets_and_heads_go_this_way() {
        let empty = || http_body_util::Empty::<Bytes>::new();
        assert!(eligible(&Request::get("/").body(empty()).expect("request")));
        assert!(eligible(&Request::head("/").body(empty()).expect("request")));
        assert!(!eligible(&Request::post("/").body(empty()).expect("request")));
        assert!(!eligible(
            &Request::get("/")
                .body(http_body_util::Full::new(Bytes::from_static(b"x")))
                .expect("request")
        ));
        assert!(!eligible(
            &Request::get("/")
                .header("content-length", "0")
                .body(empty())
                .expect("request")
        ));
    }
}
