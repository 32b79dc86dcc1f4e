//! The proxy's listeners and the node's wiring.
//!
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or TLS with ALPN), each
//! connection told apart by its first bytes and held to the deadlines and
//! limit of [`crate::conn`]; hyper's limits are set explicitly (header
//! buffer, HTTP/2 concurrent streams and header list size, keepalive pings).
//! Accept errors (out of file descriptors) are logged once and backed off,
//! never fatal. Shutdown stops accepting, then drains in-flight requests
//! for up to the drain timeout.

use crate::config::CompiledConfig;
use crate::conn::{self, Activity, ConnectionOptions, Connections, Guarded, Protocol, Slot};
use crate::request::admit::Limits;
use crate::sync::{self, SyncOptions};
use crate::{ConnInfo, Gateway, GatewayOptions, pipeline, tls};
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    pub listen: SocketAddr,
    /// A TLS listener (with `tls_cert`/`tls_key` as the default certificate;
    /// custom domains bring their own).
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub base_domain: String,
    /// Control-plane admin endpoints (`http://host:port` or `https://…`).
    pub control_planes: Vec<String>,
    pub token: Option<String>,
    /// Where `token` came from: read again at every (re)connect.
    pub token_file: Option<PathBuf>,
    pub control_plane_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS with the control plane.
    pub control_plane_identity: Option<(PathBuf, PathBuf)>,
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    pub snapshot_cache: Option<PathBuf>,
    /// Serve only this cluster's config; NACK any other (see `sync`).
    pub pin_cluster_id: Option<String>,
    /// Extra CA for HTTPS backends (besides the system's roots).
    pub upstream_ca: Option<PathBuf>,
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connection limit and deadlines.
    pub connections: ConnectionOptions,
    /// Longest wait for the next bytes of a request body (default 30 s).
    pub body_read_timeout: Duration,
    pub drain_timeout: Duration,
    /// Proxy workers, one single-threaded runtime each (0: one per CPU the
    /// process may use; see [`crate::workers`]).
    pub workers: usize,
    /// Limit counters and the cache's shared tier (default: in-process).
    pub shared: Option<Arc<crate::shared::SharedState>>,
    /// Seals cached entries of stages that encrypt their cache.
    pub cache_key: Option<crate::cache::entry::CacheKey>,
    pub telemetry: crate::telemetry::TelemetryOptions,
    /// Set once the node serves a config version (for `/readyz`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl DataPlaneConfig {
    pub fn new(listen: SocketAddr, control_planes: Vec<String>, node_id: String) -> Self {
        DataPlaneConfig {
            listen,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            base_domain: "localhost".into(),
            control_planes,
            token: None,
            token_file: None,
            control_plane_ca: None,
            control_plane_identity: None,
            node_id,
            labels: BTreeMap::new(),
            snapshot_cache: None,
            pin_cluster_id: None,
            upstream_ca: None,
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            shared: None,
            cache_key: None,
            telemetry: Default::default(),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            connections: ConnectionOptions::default(),
            body_read_timeout: crate::request::body::DEFAULT_READ_TIMEOUT,
            drain_timeout: Duration::from_secs(30),
            workers: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `flag` names the setting that chose `address`.
    #[error("{flag} {address}: cannot listen")]
    Bind {
        flag: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Workers(#[from] crate::workers::StartError),
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    /// The access-log sink cannot be opened (`sink`: `stdout` or the file).
    #[error("access log {sink}")]
    AccessLog {
        sink: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a data-plane node until `shutdown` resolves.
pub async fn serve(
    config: DataPlaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if config.control_planes.is_empty() {
        return Err(ServeError::Config(
            "at least one --control-plane endpoint is required".into(),
        ));
    }
    let live = Arc::new(ArcSwap::from_pointee(CompiledConfig::default()));
    let workers = match config.workers {
        0 => crate::workers::default_count(),
        n => n,
    };
    // A shard of every route's counts per worker (each worker is a thread).
    let meters = Arc::new(crate::meters::Meters::with_shards(workers));
    if let Some(path) = &config.snapshot_cache {
        match sync::load_cache(
            path,
            pylon_common::snapshot::serves_private(&config.labels),
            &meters,
            config.pin_cluster_id.as_deref(),
        ) {
            Ok(Some(compiled)) => {
                tracing::info!(version = compiled.version, path = %path.display(), "serving the cached config snapshot until the control plane answers");
                live.store(Arc::new(compiled));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring the snapshot cache"),
        }
    }
    let client_tls = crate::pem::client_config(config.upstream_ca.as_deref())?;
    let shared = match &config.shared {
        Some(shared) => shared.clone(),
        None => crate::shared::SharedState::start(&Default::default()).map_err(ServeError::Config)?,
    };
    let telemetry =
        crate::telemetry::Telemetry::new(config.telemetry.clone(), meters.clone()).map_err(|source| {
            ServeError::AccessLog {
                sink: match &config.telemetry.access_log {
                    crate::telemetry::access_log::LineSink::File(path) => format!("file {}", path.display()),
                    other => format!("{other:?}").to_ascii_lowercase(),
                },
                source,
            }
        })?;
    let gateway = Arc::new(Gateway {
        config: live.clone(),
        upstreams: crate::integration::http::Upstreams::new(client_tls, workers),
        options: GatewayOptions {
            base_domain: config.base_domain.to_ascii_lowercase(),
            limits: config.limits.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            body_read_timeout: config.body_read_timeout,
        },
        authorizers: Default::default(),
        cache: crate::cache::ResponseCache::new(shared.redis().cloned(), config.cache_key.clone()),
        sockets: crate::websocket::hub::Hub::start(&config.node_id, shared.redis().cloned()),
        shared,
        telemetry,
        drain_expired: Default::default(),
    });

    let listener = bind("--listen", config.listen).await?;
    let tls_listener = match config.tls_listen {
        Some(address) => {
            let default = match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => Some(crate::pem::load_certified_key(cert, key)?),
                (None, None) => None,
                _ => return Err(ServeError::Config("--tls-cert and --tls-key go together".into())),
            };
            let acceptor = tls::Listener::new(live.clone(), default).map_err(ServeError::Config)?;
            Some((bind("--tls-listen", address).await?, acceptor))
        }
        None => None,
    };

    // Idle upstream connections are closed after their timeout even when
    // no request comes to notice.
    let sweeping = Arc::downgrade(&gateway);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match sweeping.upgrade() {
                Some(gateway) => gateway.upstreams.sweep(),
                None => break,
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let sync_options = SyncOptions {
        endpoints: config.control_planes.clone(),
        token: config.token.clone(),
        token_file: config.token_file.clone(),
        ca: config.control_plane_ca.clone(),
        identity: config.control_plane_identity.clone(),
        node_id: config.node_id.clone(),
        labels: config.labels.clone(),
        cache: config.snapshot_cache.clone(),
        pin_cluster_id: config.pin_cluster_id.clone(),
        diverged: Arc::default(),
        metrics: crate::telemetry::metrics::SnapshotMetrics::new(&opentelemetry::global::meter(
            "pylon-data-plane",
        )),
        meters,
    };
    let subscriber = tokio::spawn(sync::run(sync_options, live.clone(), stop_rx.clone()));
    {
        // Ready (for /readyz) once some config version is served.
        let (live, ready) = (live.clone(), config.ready.clone());
        tokio::spawn(async move {
            while live.load().version == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            ready.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    {
        // Connections of a stage (or API) that was deleted are closed
        // without waiting for their next message.
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let config = gateway.config.load();
                if config.version == 0 || gateway.sockets.is_empty() {
                    continue;
                }
                // Connections another cluster accepted (the node adopted
                // another cluster's config) are served by no config now.
                let foreign = gateway
                    .sockets
                    .close_where(|c| c.cluster != config.cluster_id, "cluster changed");
                if foreign > 0 {
                    tracing::warn!(
                        connections = foreign,
                        cluster = %config.cluster_id,
                        "closing WebSocket connections another cluster accepted"
                    );
                }
                let closed = gateway
                    .sockets
                    .close_where(|c| config.stage(&c.api, &c.stage).is_none(), "stage deleted");
                if closed > 0 {
                    tracing::info!(
                        connections = closed,
                        version = config.version,
                        "closing WebSocket connections of deleted stages"
                    );
                }
            }
        });
    }
    let workers = crate::workers::Workers::start(workers)?;
    let server = Arc::new(Server {
        gateway: gateway.clone(),
        http1: http1_builder(),
        http2: http2_builder(),
        options: config.connections.clone(),
        connections: Connections::new(config.connections.max_connections),
        stop: stop_rx.clone(),
    });
    tracing::info!(
        node = %config.node_id,
        listen = %local(&listener),
        tls_listen = tls_listener.as_ref().map(|(l, _)| local(l)).unwrap_or_default(),
        base_domain = %gateway.options.base_domain,
        control_planes = ?config.control_planes,
        max_connections = config.connections.max_connections,
        workers = workers.len(),
        "data plane ready"
    );
    let plain = accept(listener, None, server.clone(), &workers);
    match tls_listener {
        Some((listener, acceptor)) => {
            let secure = accept(listener, Some(acceptor), server.clone(), &workers);
            tokio::join!(plain, secure);
        }
        None => plain.await,
    }
    let sockets = gateway.sockets.len();
    tracing::info!(
        timeout = ?config.drain_timeout,
        connections = server.connections.open(),
        websockets = sockets,
        "draining in-flight requests"
    );
    // WebSocket clients are told the node is going away (1001) and their
    // `$disconnect` runs, within the same drain time.
    gateway.sockets.close_all("server shutting down");
    let drained = async {
        server.connections.wait_empty().await;
        gateway.sockets.wait_empty(config.drain_timeout).await;
    };
    workers
        .stop(async {
            if tokio::time::timeout(config.drain_timeout, drained).await.is_err() {
                gateway
                    .drain_expired
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    connections = server.connections.open(),
                    websockets = gateway.sockets.len(),
                    "drain timeout reached; closing the remaining connections"
                );
            }
        })
        .await;
    subscriber.abort();
    tracing::info!("data plane stopped");
    Ok(())
}

fn local(listener: &TcpListener) -> String {
    listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

async fn bind(flag: &'static str, address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            flag,
            address,
            source,
        })
}

/// What every connection task shares.
struct Server {
    gateway: Arc<Gateway>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    options: ConnectionOptions,
    connections: Arc<Connections>,
    stop: watch::Receiver<bool>,
}

fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        // No timer: [`conn::drive`] enforces the header and keep-alive
        // deadlines; hyper's own header timeout would arm a boxed timer for
        // every request.
        .header_read_timeout(None)
        // Our own 10,240-byte check answers in JSON; beyond this hyper answers 431 itself.
        // (The default of 100 headers keeps hyper's parse buffer on the stack.)
        .max_buf_size(64 * 1024);
    builder
}

fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Accepts connections and hands each to the next worker.
async fn accept(
    listener: TcpListener,
    tls: Option<tls::Listener>,
    server: Arc<Server>,
    workers: &crate::workers::Workers,
) {
    let mut stop = server.stop.clone();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the connection
                // waits in the backlog while we back off; keep serving.
                if backoff.is_zero() {
                    tracing::warn!(error = %e, "accept failed; backing off until it succeeds");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if !backoff.is_zero() {
            tracing::info!("accepting connections again");
            backoff = Duration::ZERO;
        }
        // Beyond the limit: accepted and closed at once.
        let Some(slot) = server.connections.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The socket leaves this runtime's reactor for the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let server = server.clone();
        let tls = tls.clone();
        workers.dispatch(Box::pin(async move {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            let deadline = server.options.first_byte;
            match tls {
                None => {
                    let info = ConnInfo {
                        remote,
                        client_address: client_address(remote),
                        tls: false,
                        sni: None,
                        client_cert: None,
                    };
                    serve_connection(&server, stream, info, slot).await;
                }
                Some(acceptor) => {
                    let (stream, sni, client_cert) =
                        match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(accepted)) => accepted,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let info = ConnInfo {
                        remote,
                        client_address: client_address(remote),
                        tls: true,
                        sni,
                        client_cert,
                    };
                    serve_connection(&server, stream, info, slot).await;
                }
            }
        }));
    }
}

/// One connection: its protocol from the first bytes, then hyper's
/// connection under [`conn::drive`]'s deadlines.
async fn serve_connection<I>(server: &Server, mut io: I, info: ConnInfo, slot: Slot)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + conn::Socket + Unpin + Send + 'static,
{
    let (protocol, prefix) =
        match tokio::time::timeout(server.options.first_byte, conn::detect(&mut io)).await {
            Ok(Ok(detected)) => detected,
            Ok(Err(e)) => {
                tracing::trace!(remote = %info.remote, error = %e, "connection ended before a request");
                return;
            }
            Err(_) => {
                tracing::debug!(remote = %info.remote, "no request within the first-byte timeout; closing");
                return;
            }
        };
    let activity = Activity::new(protocol);
    let io = TokioIo::new(Guarded::new(
        io,
        prefix,
        activity.clone(),
        server.options.send,
        slot,
    ));
    let service = {
        let (gateway, activity) = (server.gateway.clone(), activity.clone());
        service_fn(move |request| {
            let in_flight = activity.begin();
            let mut unserved = Unserved(Some((gateway.clone(), request, info.clone())));
            async move {
                let response = match unserved.0.take() {
                    Some((gateway, request, info)) => pipeline::handle(gateway, request, info).await,
                    // (Taken only here, at the first poll.)
                    None => crate::response::rescue::respond(&crate::error::GatewayError::NoRoute, None, ""),
                };
                Ok::<_, Infallible>(response.map(|body| conn::Tracked::new(body, in_flight)))
            }
        })
    };
    let stop = server.stop.clone();
    match protocol {
        Protocol::Http1 => {
            let connection = server.http1.serve_connection(io, service).with_upgrades();
            let shutdown = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
            conn::drive(connection, shutdown, protocol, activity, &server.options, stop).await;
        }
        Protocol::Http2 => {
            let connection = server.http2.serve_connection(io, service);
            let shutdown = |c: Pin<&mut _>| http2::Connection::graceful_shutdown(c);
            conn::drive(connection, shutdown, protocol, activity, &server.options, stop).await;
        }
    }
}

/// A request hyper took but whose future was never polled: the
/// connection ended first (see [`pipeline::abandoned`]), which logs it.
struct Unserved(Option<(Arc<Gateway>, http::Request<hyper::body::Incoming>, ConnInfo)>);

impl Drop for Unserved {
    fn drop(&mut self) {
        if let Some((gateway, request, info)) = self.0.take() {
            pipeline::abandoned(&gateway, request, &info);
        }
    }
}

/// A client's IP address as a header value.
fn client_address(remote: std::net::SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&remote.ip().to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}
