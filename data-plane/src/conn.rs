//! One client connection, from accept to close.
//!
//! - The node holds at most [`ConnectionOptions::max_connections`] open
//!   connections (plain, TLS and upgraded WebSockets alike); beyond that a
//!   connection is accepted and closed at once ([`Connections::admit`]).
//! - The protocol is told from the first bytes (the HTTP/2 preface and its
//!   SETTINGS frame, or not) within the first-byte deadline; a connection
//!   that sends nothing, or half a preface, is closed then. Behind TLS the same deadline covers
//!   the handshake.
//! - Every later state has a deadline too ([`Activity`]): an HTTP/1.1
//!   request head must arrive within the header timeout of its first byte;
//!   a connection with no request in flight is closed after the keep-alive
//!   idle time (HTTP/1.1) or sent a GOAWAY after the HTTP/2 idle time; a
//!   write the client does not take within the send timeout ends the
//!   connection ([`Guarded`]). Request bodies have their own deadline
//!   ([`crate::request::body`]).
//! - The hot path only stores times ([`Activity`] is a few atomics): no
//!   request wakes the connection's deadline loop ([`drive`]). The loop
//!   looks again at least once per shortest timeout, which is enough to
//!   enforce every deadline on time (see [`drive`]).
//!
//! Defaults follow nginx and Envoy: first byte 10 s, headers 10 s,
//! keep-alive 75 s, HTTP/2 idle 300 s, send 60 s, 10,000 connections.

use crate::Body;
use crate::error::BoxError;
use crate::stall::StallTimer;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The node's connection limits and deadlines (`pylon data-plane` flags).
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    /// From accept to the protocol being known (TLS handshake included);
    /// `--first-byte-timeout-s`, default 10 s.
    pub first_byte: Duration,
    /// From an HTTP/1.1 request head's first byte to its end;
    /// `--header-read-timeout-s`, default 10 s.
    pub header_read: Duration,
    /// An HTTP/1.1 connection with no request in flight;
    /// `--keepalive-timeout-s`, default 75 s.
    pub keepalive_idle: Duration,
    /// An HTTP/2 connection with no stream in flight;
    /// `--http2-idle-timeout-s`, default 300 s.
    pub http2_idle: Duration,
    /// A write the client does not take; `--send-timeout-s`, default 60 s.
    pub send: Duration,
    /// Open connections at most; `--max-connections`, default 10,000.
    pub max_connections: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            first_byte: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(75),
            http2_idle: Duration::from_secs(300),
            send: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The node's open connections.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    max: usize,
    /// Set while connections are being refused (logged once per episode).
    refusing: AtomicBool,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            ..Default::default()
        })
    }

    /// A slot for a new connection, or `None` at the limit.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            if self.refusing.swap(false, Ordering::Relaxed) {
                tracing::info!(open = self.open(), "accepting connections again");
            }
            Some(Slot(self.clone()))
        } else {
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    limit = self.max,
                    "connection limit reached: closing new connections (--max-connections)"
                );
            }
            None
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until every connection is closed.
    pub async fn wait_empty(&self) {
        while self.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One admitted connection; dropping it frees the slot. It travels with
/// the socket ([`Guarded`]), so an upgraded WebSocket keeps its slot.
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds on a clock that starts with the process (never 0).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What a connection is doing, for its deadlines.
#[derive(Debug)]
pub struct Activity {
    protocol: Protocol,
    in_flight: AtomicU32,
    /// When the last request ended (or the connection started).
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived, while idle (0: none).
    head_since: AtomicU64,
    /// A write to the client is waiting for it to take bytes: the
    /// connection is not idle ([`Guarded`]'s send timeout governs).
    write_pending: AtomicBool,
    /// Writes the client took, to tell a connection still sending after a
    /// GOAWAY (HTTP/2 sends a body handed over whole as the client's window
    /// opens) from a stuck one.
    writes: AtomicU64,
    /// HTTP/2: per response in flight, since when it has handed hyper a
    /// frame that the client's flow-control window has not let out (0: it
    /// has not). A client that never opens its window stalls no socket
    /// write, so [`Guarded`] cannot see it; [`drive`] can.
    waiting: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

impl Activity {
    /// A new connection's, once its first bytes told its protocol (for
    /// HTTP/1.1 they are a request head's first bytes).
    pub fn new(protocol: Protocol) -> Arc<Activity> {
        let now = now_ms();
        Arc::new(Activity {
            protocol,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(if protocol == Protocol::Http1 { now } else { 0 }),
            write_pending: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            waiting: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The oldest time a response in flight has been waiting for the
    /// client's window (HTTP/2), forgetting finished ones.
    fn oldest_waiting(&self) -> Option<u64> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.retain(|slot| slot.strong_count() > 0);
        waiting
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|since| *since != 0)
            .min()
    }

    fn on_read(&self) {
        if self.protocol == Protocol::Http1
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A request entered the pipeline; it is in flight until the returned
    /// guard (kept by its response body) drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        let waiting = (self.protocol == Protocol::Http2).then(|| {
            let slot = Arc::new(AtomicU64::new(0));
            let mut waiting = self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Finished responses leave dead entries: drop them now and then
            // (amortised; at most 256 streams are in flight at once).
            if waiting.len() >= 512 {
                waiting.retain(|slot| slot.strong_count() > 0);
            }
            waiting.push(Arc::downgrade(&slot));
            slot
        });
        InFlight {
            activity: self.clone(),
            waiting,
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    waiting: Option<Arc<AtomicU64>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.idle_since.store(now_ms(), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it is sent (or
/// dropped).
pub struct Tracked {
    body: Body,
    in_flight: InFlight,
}

impl Tracked {
    pub fn new(body: Body, in_flight: InFlight) -> Tracked {
        // Handed to hyper with the response head: from now on it waits for
        // the client until hyper polls it (HTTP/2 polls a body only once
        // the client's window has room).
        if let Some(waiting) = &in_flight.waiting
            && !hyper::body::Body::is_end_stream(&body)
        {
            waiting.store(now_ms(), Ordering::Relaxed);
        }
        Tracked { body, in_flight }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Some(waiting) = &self.in_flight.waiting {
            // A frame handed over waits for the client until hyper asks
            // for the next one.
            let since = match &polled {
                Poll::Ready(Some(Ok(_))) => now_ms(),
                _ => 0,
            };
            waiting.store(since, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Which HTTP a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame type of SETTINGS (RFC 9113 §6.5).
const SETTINGS: u8 = 0x4;
/// The largest SETTINGS payload read before choosing HTTP/2 (one entry is
/// 6 bytes; RFC 9113 defines 7 settings).
const MAX_SETTINGS: usize = 6 * 64;

/// Reads until the first bytes tell HTTP/2's preface from anything else;
/// the protocol and the bytes read (to be served again).
///
/// # Errors
/// The connection ended, or failed, before.
pub async fn detect<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let seen = buf.len().min(PREFACE.len());
        if buf[..seen] != PREFACE[..seen] {
            return Ok((Protocol::Http1, buf.freeze()));
        }
        // The client's connection preface is the magic and a whole SETTINGS
        // frame (RFC 9113 §3.4): both within the first-byte deadline.
        if let Some(frame) = buf.get(PREFACE.len()..PREFACE.len() + 9) {
            let length = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
            if frame[3] != SETTINGS || length > MAX_SETTINGS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an HTTP/2 preface without a SETTINGS frame",
                ));
            }
            if buf.len() >= PREFACE.len() + 9 + length {
                return Ok((Protocol::Http2, buf.freeze()));
            }
        }
    }
}

/// A client connection's socket as hyper sees it: the bytes read during
/// detection first, writes that stall beyond the send timeout failed, reads
/// noted for the header deadline; holds the connection's [`Slot`].
pub struct Guarded<I> {
    io: I,
    prefix: Bytes,
    activity: Arc<Activity>,
    stall: StallTimer,
    _slot: Slot,
}

impl<I> Guarded<I> {
    pub fn new(io: I, prefix: Bytes, activity: Arc<Activity>, send_timeout: Duration, slot: Slot) -> Self {
        Guarded {
            io,
            prefix,
            activity,
            stall: StallTimer::new(send_timeout),
            _slot: slot,
        }
    }

    /// On a write that is not ready: fails once the send timeout passes,
    /// and makes the close a reset (nginx's `reset_timedout_connection`):
    /// the kernel then drops what the client did not take instead of
    /// holding it, and the socket, for its retransmissions.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>>
    where
        I: Socket,
    {
        self.activity.write_pending.store(true, Ordering::Relaxed);
        if self.stall.poll_expired(cx) {
            let _ = self.io.tcp().set_zero_linger();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take a write within the send timeout",
            )));
        }
        Poll::Pending
    }

    fn written<T>(&mut self, result: io::Result<T>) -> Poll<io::Result<T>> {
        self.stall.progress();
        self.activity.write_pending.store(false, Ordering::Relaxed);
        self.activity.writes.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(result)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

/// A client connection's transport, over TCP.
pub trait Socket {
    fn tcp(&self) -> &tokio::net::TcpStream;
}

impl Socket for tokio::net::TcpStream {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self.get_ref().0
    }
}

impl<I: AsyncWrite + Socket + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => this.written(result),
            Poll::Pending => this.pending_write(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => this.written(result),
            Poll::Pending => this.pending_write(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => this.written(result),
            Poll::Pending => this.pending_write(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(result) => this.written(result),
            Poll::Pending => this.pending_write(cx),
        }
    }
}

/// Why the node ended a connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// No request in flight for the idle time.
    Idle,
    /// A request head did not arrive whole in time.
    Head,
}

/// When the connection's current state times out (on [`now_ms`]'s clock),
/// and what that deadline is for; `None` while a request is in flight or
/// an answer is still being written (a body handed to hyper whole ends its
/// request before the client has taken it: the send timeout governs that).
fn deadline(protocol: Protocol, activity: &Activity, options: &ConnectionOptions) -> Option<(u64, Expired)> {
    if activity.in_flight.load(Ordering::Relaxed) > 0 || activity.write_pending.load(Ordering::Relaxed) {
        return None;
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let head = activity.head_since.load(Ordering::Relaxed);
    match protocol {
        Protocol::Http1 if head != 0 => Some((head + ms(options.header_read), Expired::Head)),
        Protocol::Http1 => Some((
            activity.idle_since.load(Ordering::Relaxed) + ms(options.keepalive_idle),
            Expired::Idle,
        )),
        Protocol::Http2 => Some((
            activity.idle_since.load(Ordering::Relaxed) + ms(options.http2_idle),
            Expired::Idle,
        )),
    }
}

/// Drives a hyper connection until it ends, the node closes it for a
/// deadline, or — after `stop` — it finishes what is in flight.
/// `graceful_shutdown` is the connection's own (HTTP/1.1: close once idle;
/// HTTP/2: GOAWAY).
///
/// Requests never wake this loop: it reads the times [`Activity`] keeps
/// whenever its timer fires, and sleeps at most the shortest timeout
/// (`recheck`) at a time. That is enough to hold every deadline on time:
/// a deadline is an event's time plus a timeout of at least `recheck`, so
/// the loop wakes at least once between the event and its deadline and
/// then sleeps exactly until the deadline. The price is one wake-up per
/// connection every `recheck` (10 s by default), against two per request.
pub async fn drive<C: Future>(
    conn: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    protocol: Protocol,
    activity: Arc<Activity>,
    options: &ConnectionOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = std::pin::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        graceful_shutdown(conn.as_mut());
    }
    let recheck = options
        .keepalive_idle
        .min(options.http2_idle)
        .min(options.header_read)
        .min(options.send)
        .max(Duration::from_millis(1));
    let recheck_ms = recheck.as_millis() as u64;
    let mut going_away = false;
    // The writes seen when the GOAWAY went (or at the last look after it).
    let mut writes_seen = 0;
    let send_ms = options.send.as_millis() as u64;
    // One timer for the connection's life, moved as deadlines move (moving
    // it later does not touch the timer wheel).
    let timer = tokio::time::sleep(recheck);
    let mut timer = std::pin::pin!(timer);
    loop {
        let now = now_ms();
        let (mut wake_at, due) = match deadline(protocol, &activity, options) {
            Some((at, why)) if at <= now => (now, Some(why)),
            Some((at, _)) => (at, None),
            None => (now, None),
        };
        // No sooner deadline can start unseen before the next look.
        wake_at = wake_at.min(now + recheck_ms).max(now + 1);
        if let Some(since) = activity.oldest_waiting() {
            if now >= since + send_ms {
                tracing::debug!("closing an HTTP/2 connection whose client does not take a response");
                return;
            }
            wake_at = wake_at.min(since + send_ms);
        }
        match due {
            Some(Expired::Head) => {
                tracing::debug!("closing a connection whose request head did not arrive in time");
                return;
            }
            Some(Expired::Idle) if protocol == Protocol::Http1 => return,
            Some(Expired::Idle) if !going_away => {
                // HTTP/2: GOAWAY, then the connection ends by itself.
                graceful_shutdown(conn.as_mut());
                going_away = true;
                writes_seen = activity.writes.load(Ordering::Relaxed);
                wake_at = now + options.header_read.as_millis() as u64;
            }
            Some(Expired::Idle) => {
                // Still open a while after the GOAWAY: close, unless the
                // client is still taking an answer's last bytes.
                let writes = activity.writes.load(Ordering::Relaxed);
                if writes == writes_seen {
                    return;
                }
                writes_seen = writes;
                wake_at = now + options.header_read.as_millis() as u64;
            }
            None => {}
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(wake_at - now));
        // The connection's bytes wake this task for every request; the
        // timer and `stop` are looked at only when they woke it.
        let deadline_or_stop = Gated::new(async {
            tokio::select! {
                _ = timer.as_mut() => None,
                changed = stop.changed(), if !draining => Some(changed.is_ok()),
            }
        });
        let stopped = tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            woke = deadline_or_stop => woke,
        };
        if let Some(sender_alive) = stopped {
            draining = true;
            if sender_alive && *stop.borrow() {
                graceful_shutdown(conn.as_mut());
            }
        }
    }
}

/// A future polled only on its first poll and when its own waker fired,
/// not whenever the task that holds it is woken for something else.
struct Gated<F> {
    future: Pin<Box<F>>,
    gate: Arc<Gate>,
    polled: bool,
}

struct Gate {
    woken: AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    fn new(future: F) -> Gated<F> {
        Gated {
            future: Box::pin(future),
            gate: Arc::new(Gate {
                woken: AtomicBool::new(false),
                task: futures::task::AtomicWaker::new(),
            }),
            polled: false,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.gate.task.register(cx.waker());
        if this.polled && !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.polled = true;
        let waker = std::task::Waker::from(this.gate.clone());
        this.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_decides_the_protocol_and_its_bytes_are_kept() {
        let opening = [&PREFACE[..], &[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0][..]].concat();
        let mut h2 = &opening[..];
        let (protocol, seen) = detect(&mut h2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((protocol, &seen[..]), (Protocol::Http2, &opening[..]));
        let mut magic_only = &PREFACE[..];
        assert!(
            detect(&mut magic_only).await.is_err(),
            "no SETTINGS: not HTTP/2 yet"
        );
        let not_settings = [&PREFACE[..], &[0, 0, 0, 0x6, 0, 0, 0, 0, 0][..]].concat();
        assert!(detect(&mut &not_settings[..]).await.is_err());
        // A SETTINGS header whose payload never comes is no preface yet.
        let header_only = [&PREFACE[..], &[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0][..]].concat();
        assert!(detect(&mut &header_only[..]).await.is_err());
        let whole = [&header_only[..], &[0, 3, 0, 0, 0, 100][..]].concat();
        assert_eq!(
            detect(&mut &whole[..]).await.map(|d| d.0).ok(),
            Some(Protocol::Http2)
        );
        let mut h1 = &b"GET / HTTP/1.1\r\n\r\n"[..];
        let (protocol, seen) = detect(&mut h1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (protocol, &seen[..]),
            (Protocol::Http1, &b"GET / HTTP/1.1\r\n\r\n"[..])
        );
        let mut half = &PREFACE[..10];
        assert!(
            detect(&mut half).await.is_err(),
            "half a preface is not a protocol"
        );
    }

    #[test]
    fn the_limit_admits_up_to_max_and_frees_on_drop() {
        let connections = Connections::new(2);
        let a = connections.admit();
        let b = connections.admit();
        assert!(a.is_some() && b.is_some());
        assert!(connections.admit().is_none());
        drop(a);
        assert!(connections.admit().is_some());
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let options = ConnectionOptions::default();
        // HTTP/1.1: the first bytes were a head's.
        let activity = Activity::new(Protocol::Http1);
        let (at, why) =
            deadline(Protocol::Http1, &activity, &options).unwrap_or_else(|| panic!("a head has a deadline"));
        assert_eq!(why, Expired::Head);
        assert!(at >= activity.head_since.load(Ordering::Relaxed) + 10_000);
        let in_flight = activity.begin();
        assert_eq!(deadline(Protocol::Http1, &activity, &options), None);
        drop(in_flight);
        let (at, why) =
            deadline(Protocol::Http1, &activity, &options).unwrap_or_else(|| panic!("idle has a deadline"));
        assert_eq!(why, Expired::Idle);
        assert!(at >= activity.idle_since.load(Ordering::Relaxed) + 75_000);
        activity.on_read();
        assert_eq!(
            deadline(Protocol::Http1, &activity, &options).map(|d| d.1),
            Some(Expired::Head)
        );
        // HTTP/2: only idle time counts.
        let activity = Activity::new(Protocol::Http2);
        activity.on_read();
        assert_eq!(
            deadline(Protocol::Http2, &activity, &options).map(|d| d.1),
            Some(Expired::Idle)
        );
    }

    #[test]
    fn an_http2_response_waits_for_the_client_from_the_frame_it_handed_over() {
        let activity = Activity::new(Protocol::Http2);
        let in_flight = activity.begin();
        let mut body = Tracked::new(crate::full_body("data"), in_flight);
        assert!(
            activity.oldest_waiting().is_some(),
            "not polled yet: waiting for the client"
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            hyper::body::Body::poll_frame(Pin::new(&mut body), &mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(
            activity.oldest_waiting().is_some(),
            "the frame waits for the client"
        );
        assert!(matches!(
            hyper::body::Body::poll_frame(Pin::new(&mut body), &mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(activity.oldest_waiting(), None, "asked for more: it was taken");
        drop(body);
        assert_eq!(activity.oldest_waiting(), None);
        assert_eq!(
            activity.waiting.lock().map(|w| w.len()).unwrap_or(1),
            0,
            "forgotten"
        );
    }
}
