//! A fault-injecting TCP proxy for loopback links between test processes or tasks.
//!
//! Each directed peer link `A → B` of a cluster under test goes through its own [`FaultProxy`], which
//! listens on `127.0.0.1:<free port>` and forwards every accepted connection to `B`'s real address.
//! [`FaultProxy::set`] switches the link's [`Fault`] at any time; the change applies immediately to
//! established connections (long-lived HTTP/2 streams included), not only to new ones:
//!
//! * [`Fault::Pass`] forwards bytes both ways as they arrive.
//! * [`Fault::Blackhole`] is a network partition: established connections stay open but nothing is
//!   forwarded in either direction and the proxy stops reading from both sockets, so senders see
//!   silence, then TCP back-pressure — never an end-of-stream or a reset. New connections are accepted
//!   (the kernel completes the handshake on loopback regardless) and held the same way, without
//!   connecting to the target. A connection that was blackholed is **closed with a reset when the fault
//!   leaves `Blackhole`**: bytes may have been lost mid-stream, so it cannot resume safely. Peers
//!   reconnect as they would after a long real partition, and new connections work normally.
//! * [`Fault::Reset`] aborts every connection with a TCP reset on both sides and resets each new
//!   connection as soon as it is accepted.
//! * [`Fault::Delay`] forwards each chunk read from one side to the other once the delay has passed
//!   since it was read; order is preserved and throughput is not limited (the delay is latency).
//!   Chunks already queued keep their delay when the fault changes.
//!
//! A proxy counts accepted connections and forwarded bytes. Dropping it stops its listener and every
//! connection task; sockets are closed as the runtime drops the tasks.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The behaviour of a proxied link. See the module documentation for the precise semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward bytes both ways as they arrive.
    #[default]
    Pass,
    /// Forward nothing and stop reading, keeping sockets open: a partition. Blackholed connections are
    /// reset when the fault changes again.
    Blackhole,
    /// Abort every current connection with a TCP reset and reset new ones as soon as they are accepted.
    Reset,
    /// Forward each chunk this long after it was read, preserving order.
    Delay(Duration),
}

/// Largest number of bytes read from one side and not yet written to the other, per direction; beyond
/// it the proxy stops reading so that back-pressure reaches the sender.
const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Size of the read buffer of each direction of each connection.
const CHUNK_BYTES: usize = 16 * 1024;

/// What every connection task watches: the current fault, and how many times `Reset` and `Blackhole`
/// were set, so that a connection notices a fault even if it was lifted before the task ran.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    fault: Fault,
    resets: u64,
    blackholes: u64,
}

/// The `resets` and `blackholes` counts a connection has already taken into account.
#[derive(Debug, Clone, Copy)]
struct Seen {
    resets: u64,
    blackholes: u64,
}

/// What a connection must do under the current control state.
enum Verdict {
    /// Abort the connection.
    Close,
    /// Keep the sockets open without reading or writing.
    Hold,
    /// Forward chunks read from now on after this delay.
    Forward(Duration),
}

impl Control {
    fn verdict(&self, seen: Seen) -> Verdict {
        match self.fault {
            Fault::Reset => Verdict::Close,
            _ if self.resets != seen.resets => Verdict::Close,
            Fault::Blackhole => Verdict::Hold,
            _ if self.blackholes != seen.blackholes => Verdict::Close,
            Fault::Pass => Verdict::Forward(Duration::ZERO),
            Fault::Delay(delay) => Verdict::Forward(delay),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    forwarded: AtomicU64,
}

/// A TCP proxy on `127.0.0.1` forwarding to one target address, with a switchable [`Fault`].
///
/// Must be started inside a Tokio runtime with I/O and timers enabled. Dropping it aborts its accept
/// loop and all its connection tasks, which closes the listener and every proxied socket (the runtime
/// completes the cancellation asynchronously, within a scheduler tick).
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    target: SocketAddr,
    control: watch::Sender<Control>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds a listener on `127.0.0.1` with an ephemeral port and starts forwarding every accepted
    /// connection to `target`, with [`Fault::Pass`].
    ///
    /// # Errors
    ///
    /// Returns the I/O error if the listener cannot be bound or its address read. Failures to reach
    /// `target` later are not errors: the proxied connection is simply closed.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (control, watcher) = watch::channel(Control::default());
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, target, watcher, Arc::clone(&counters)));
        Ok(FaultProxy {
            address,
            target,
            control,
            counters,
            task,
        })
    }

    /// The address clients should connect to instead of the target.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address connections are forwarded to.
    #[must_use]
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the link to `fault`, for established connections at once and for new ones.
    pub fn set(&self, fault: Fault) {
        self.control.send_modify(|control| {
            match fault {
                Fault::Reset => control.resets += 1,
                Fault::Blackhole => control.blackholes += 1,
                Fault::Pass | Fault::Delay(_) => {}
            }
            control.fault = fault;
        });
    }

    /// The fault currently in force.
    #[must_use]
    pub fn fault(&self) -> Fault {
        self.control.borrow().fault
    }

    /// How many connections the listener has accepted so far, including those reset or held at once.
    #[must_use]
    pub fn connections_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// How many bytes have been written to either side so far, both directions added up.
    #[must_use]
    pub fn bytes_forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its `JoinSet`, which aborts every connection task.
        self.task.abort();
    }
}

/// Closes `socket` with a TCP reset rather than an orderly shutdown (`SO_LINGER` of zero, which never
/// blocks; `set_zero_linger` needs Tokio 1.50 or later).
fn abort(socket: TcpStream) {
    // Best effort: if the option cannot be set the socket is still closed, with a FIN instead.
    let _ = socket.set_zero_linger();
    drop(socket);
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let accepted_under = *control.borrow();
                    if accepted_under.fault == Fault::Reset {
                        abort(socket);
                    } else {
                        let task = serve(socket, target, control.clone(), accepted_under, Arc::clone(&counters));
                        connections.spawn(task);
                    }
                }
                // E.g. out of file descriptors: keep the listener and try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A direction of a proxied connection stopped abnormally and the whole connection must be aborted:
/// the fault requires it, the proxy is gone, or reading or writing failed (e.g. the peer reset).
struct Abort;

/// Proxies one accepted connection; `accepted_under` is the control state when it was accepted.
async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    mut control: watch::Receiver<Control>,
    accepted_under: Control,
    counters: Arc<Counters>,
) {
    let mut seen = Seen {
        resets: accepted_under.resets,
        blackholes: accepted_under.blackholes,
    };
    if accepted_under.fault == Fault::Blackhole {
        // Accepted during a partition: hold it, and close it once the partition heals.
        seen.blackholes = seen.blackholes.wrapping_sub(1);
    }
    let mut upstream = loop {
        let verdict = control.borrow_and_update().verdict(seen);
        match verdict {
            Verdict::Close => {
                abort(client);
                return;
            }
            Verdict::Hold => {
                if control.changed().await.is_err() {
                    return;
                }
            }
            Verdict::Forward(_) => {
                tokio::select! {
                    connected = TcpStream::connect(target) => {
                        if let Ok(upstream) = connected {
                            break upstream;
                        }
                        abort(client);
                        return;
                    }
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
        }
    };
    // Latency matters more than segment count for the small RPCs that go through the proxy.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let result = {
        let (mut client_reader, mut client_writer) = client.split();
        let (mut upstream_reader, mut upstream_writer) = upstream.split();
        tokio::try_join!(
            pump(
                &mut client_reader,
                &mut upstream_writer,
                control.clone(),
                seen,
                &counters
            ),
            pump(&mut upstream_reader, &mut client_writer, control, seen, &counters),
        )
    };
    if result.is_err() {
        abort(client);
        abort(upstream);
    }
}

/// A chunk read from one side, to be written to the other at `due`.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
    written: usize,
}

/// Waits until `chunk` is due, then writes as much of its remainder as the socket takes. Never
/// completes without a chunk. Cancel-safe: nothing is written unless it completes.
async fn write_due<W: AsyncWrite + Unpin>(to: &mut W, chunk: Option<&Chunk>) -> io::Result<usize> {
    let Some(chunk) = chunk else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(chunk.due).await;
    to.write(&chunk.bytes[chunk.written..]).await
}

/// Copies bytes from `from` to `to` under the watched fault until `from` ends (then shuts `to` down and
/// returns `Ok`), the fault requires closing, or I/O fails.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut control: watch::Receiver<Control>,
    seen: Seen,
    counters: &Counters,
) -> Result<(), Abort>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    let mut queue: VecDeque<Chunk> = VecDeque::new();
    let mut current: Option<Chunk> = None;
    let mut queued_bytes = 0_usize;
    let mut ended = false;
    loop {
        let verdict = control.borrow_and_update().verdict(seen);
        let delay = match verdict {
            Verdict::Close => return Err(Abort),
            Verdict::Hold => {
                control.changed().await.map_err(|_| Abort)?;
                continue;
            }
            Verdict::Forward(delay) => delay,
        };
        if current.is_none() {
            current = queue.pop_front();
        }
        if ended && current.is_none() {
            // Propagate the end of stream; the other direction may go on (half-close).
            let _ = to.shutdown().await;
            return Ok(());
        }
        let may_read = !ended && queued_bytes < MAX_QUEUED_BYTES;
        // Fault changes first, so that a chunk read right after one is treated under the new fault;
        // writes before reads, so that a steady inflow does not hold queued chunks back.
        tokio::select! {
            biased;
            changed = control.changed() => changed.map_err(|_| Abort)?,
            written = write_due(to, current.as_ref()), if current.is_some() => match (written, current.as_mut()) {
                (Ok(n), Some(chunk)) if n > 0 => {
                    counters.forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    chunk.written += n;
                    if chunk.written == chunk.bytes.len() {
                        queued_bytes -= chunk.bytes.len();
                        current = None;
                    }
                }
                _ => return Err(Abort),
            },
            read = from.read(&mut buffer), if may_read => match read {
                Ok(0) => ended = true,
                Ok(n) => {
                    // The fault may have changed since the loop started; the next turn acts on it.
                    let delay = match control.borrow().verdict(seen) {
                        Verdict::Forward(delay) => delay,
                        Verdict::Close | Verdict::Hold => delay,
                    };
                    queue.push_back(Chunk { due: Instant::now() + delay, bytes: buffer[..n].to_vec(), written: 0 });
                    queued_bytes += n;
                }
                Err(_) => return Err(Abort),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SILENCE: Duration = Duration::from_millis(300);
    const PROMPTLY: Duration = Duration::from_secs(2);

    /// An echo server on loopback that counts the connections and bytes it received.
    struct Echo {
        address: SocketAddr,
        connections: Arc<AtomicU64>,
        received: Arc<AtomicU64>,
        task: JoinHandle<()>,
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn echo_server() -> Echo {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("works in the test");
        let address = listener.local_addr().expect("works in the test");
        let connections = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (count, bytes) = (Arc::clone(&connections), Arc::clone(&received));
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let bytes = Arc::clone(&bytes);
                sessions.spawn(async move {
                    let mut buffer = [0_u8; 4096];
                    while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        if socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo {
            address,
            connections,
            received,
            task,
        }
    }

    async fn round_trip(socket: &mut TcpStream, message: &[u8]) {
        socket.write_all(message).await.expect("works in the test");
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(PROMPTLY, socket.read_exact(&mut echoed))
            .await
            .expect("works in the test")
            .expect("works in the test");
        assert_eq!(echoed, message);
    }

    /// Waits until the peer closes `socket` (end of stream or reset) and returns how it closed.
    async fn closed(socket: &mut TcpStream) -> io::Result<usize> {
        let mut buffer = [0_u8; 64];
        loop {
            match tokio::time::timeout(PROMPTLY, socket.read(&mut buffer)).await {
                Ok(Ok(0)) => return Ok(0),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(elapsed) => panic!("the connection was not closed within {PROMPTLY:?}: {elapsed}"),
            }
        }
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < PROMPTLY, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pass_forwards_bytes_both_ways_and_counts_them() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        assert_eq!(proxy.target(), echo.address);
        assert_eq!(proxy.fault(), Fault::Pass);
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"hello").await;
        round_trip(&mut socket, &vec![7; 100_000]).await;
        eventually("both directions are counted", || {
            proxy.bytes_forwarded() == 2 * 100_005
        })
        .await;
        assert_eq!(proxy.connections_accepted(), 1);
        assert_eq!(echo.received.load(Ordering::Relaxed), 100_005);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pass_propagates_the_end_of_stream() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"bye").await;
        socket.shutdown().await.expect("works in the test");
        assert_eq!(closed(&mut socket).await.expect("works in the test"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blackhole_silences_an_established_connection_without_closing_it() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"ping").await;
        proxy.set(Fault::Blackhole);
        socket.write_all(b"lost").await.expect("works in the test");
        let mut buffer = [0_u8; 16];
        let read = tokio::time::timeout(SILENCE, socket.read(&mut buffer)).await;
        assert!(read.is_err(), "expected silence, got {read:?}");
        assert_eq!(
            echo.received.load(Ordering::Relaxed),
            4,
            "nothing reaches the target"
        );
        socket.write_all(b"still open").await.expect("works in the test");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blackhole_stops_reading_so_a_busy_sender_is_eventually_held_back() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"ping").await;
        proxy.set(Fault::Blackhole);
        let flood = vec![0_u8; 64 << 20];
        let write = tokio::time::timeout(SILENCE, socket.write_all(&flood)).await;
        assert!(write.is_err(), "64 MiB were accepted although nobody reads them");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blackhole_holds_new_connections_without_reaching_the_target() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        proxy.set(Fault::Blackhole);
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        socket.write_all(b"hello?").await.expect("works in the test");
        let mut buffer = [0_u8; 16];
        assert!(
            tokio::time::timeout(SILENCE, socket.read(&mut buffer))
                .await
                .is_err()
        );
        assert_eq!(proxy.connections_accepted(), 1);
        assert_eq!(echo.connections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healing_a_blackhole_closes_the_silenced_connections_and_lets_new_ones_through() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut old = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut old, b"ping").await;
        proxy.set(Fault::Blackhole);
        old.write_all(b"lost").await.expect("works in the test");
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.set(Fault::Pass);
        closed(&mut old).await.ok();
        let mut new = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut new, b"healed").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn even_a_brief_blackhole_closes_the_connections_it_caught() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"ping").await;
        proxy.set(Fault::Blackhole);
        proxy.set(Fault::Pass);
        closed(&mut socket).await.ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_closes_an_established_connection() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"ping").await;
        proxy.set(Fault::Reset);
        match closed(&mut socket).await {
            Ok(0) => {}
            Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset),
            Ok(n) => panic!("read {n} bytes after a reset"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_refuses_new_connections_until_the_link_passes_again() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        proxy.set(Fault::Reset);
        // The kernel completes the handshake; the proxy then resets the connection at once.
        if let Ok(mut refused) = TcpStream::connect(proxy.address()).await {
            let _ = refused.write_all(b"anyone?").await;
            closed(&mut refused).await.ok();
        }
        eventually("the refused connection is counted", || {
            proxy.connections_accepted() == 1
        })
        .await;
        assert_eq!(echo.connections.load(Ordering::Relaxed), 0);
        proxy.set(Fault::Pass);
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"back").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_delays_each_direction_and_preserves_order() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let mut socket = TcpStream::connect(proxy.address())
            .await
            .expect("works in the test");
        round_trip(&mut socket, b"warm").await;
        let delay = Duration::from_millis(150);
        proxy.set(Fault::Delay(delay));
        let start = Instant::now();
        let mut expected = Vec::new();
        for i in 0..20_u8 {
            let chunk = [i; 10];
            socket.write_all(&chunk).await.expect("works in the test");
            expected.extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut echoed = vec![0; expected.len()];
        tokio::time::timeout(PROMPTLY, socket.read_exact(&mut echoed))
            .await
            .expect("works in the test")
            .expect("works in the test");
        let elapsed = start.elapsed();
        assert_eq!(echoed, expected);
        assert!(
            elapsed >= 2 * delay,
            "a round trip through a delayed link took only {elapsed:?}"
        );
        assert!(elapsed < 2 * delay + Duration::from_secs(1), "{elapsed:?}");
        proxy.set(Fault::Pass);
        let start = Instant::now();
        round_trip(&mut socket, b"fast again").await;
        assert!(start.elapsed() < delay, "{:?}", start.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_proxy_closes_its_listener_and_connections() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start(echo.address).await.expect("works in the test");
        let address = proxy.address();
        let mut socket = TcpStream::connect(address).await.expect("works in the test");
        round_trip(&mut socket, b"ping").await;
        drop(proxy);
        closed(&mut socket).await.ok();
        let start = Instant::now();
        loop {
            match TcpStream::connect(address).await {
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => break,
                _ => {
                    assert!(start.elapsed() < PROMPTLY, "the listener is still open");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
