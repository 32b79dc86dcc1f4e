//! `pylon dev`, `pylon control-plane` and `pylon data-plane`: flags and config
//! file → a running node.

use crate::telemetry::{Telemetry, TelemetryArgs};
use anyhow::{Context as _, bail};
use pylon_control_plane::admin::usage::UsageStore;
use pylon_control_plane::auth::BearerToken;
use pylon_control_plane::raft::node::RaftTimers;
use pylon_control_plane::{ConsoleListen, ControlPlaneConfig, PortalListen, TlsFiles};
use pylon_data_plane::DataPlaneConfig;
use pylon_data_plane::cache::entry::CacheKey;
use pylon_data_plane::config::limits::quota_id;
use pylon_data_plane::shared::redis::RedisOptions;
use pylon_data_plane::shared::{SharedOptions, SharedState};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Applied entries between Raft snapshots. Each snapshot encodes the whole
/// state on the Raft thread (see docs/control-plane.md), so not too often.
const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;

/// The node's own log: `PYLON_LOG` (tracing's filter syntax; `default`
/// when unset) and `PYLON_LOG_FORMAT` (`text`, the default, or `json`), on
/// stderr through [`crate::logging`]. A value neither takes is said in a
/// warning and the default used; an empty `PYLON_LOG` is the default.
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let mut refused = Vec::new();
    let filter = match std::env::var("PYLON_LOG") {
        Ok(value) if value.trim().is_empty() => EnvFilter::new(default),
        Ok(value) => EnvFilter::try_new(&value).unwrap_or_else(|e| {
            refused.push(format!(
                "PYLON_LOG={value:?} is not a filter ({e}); using {default:?}"
            ));
            EnvFilter::new(default)
        }),
        Err(std::env::VarError::NotPresent) => EnvFilter::new(default),
        Err(e) => {
            refused.push(format!("PYLON_LOG: {e}; using {default:?}"));
            EnvFilter::new(default)
        }
    };
    // The dropped-lines warning and the ones below, whatever PYLON_LOG keeps.
    let filter = match "pylon::logging=warn".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let json = match std::env::var("PYLON_LOG_FORMAT").as_deref() {
        Ok(json) if json.eq_ignore_ascii_case("json") => true,
        Ok(text) if text.eq_ignore_ascii_case("text") => false,
        Err(std::env::VarError::NotPresent) => false,
        Ok(other) => {
            refused.push(format!(
                "PYLON_LOG_FORMAT={other:?} is neither text nor json; using text"
            ));
            false
        }
        Err(e) => {
            refused.push(format!("PYLON_LOG_FORMAT: {e}; using text"));
            false
        }
    };
    // Lines go to stderr through a queue and a thread of their own
    // (crate::logging): a stalled stderr costs lines, not a runtime thread.
    // Were a write to fail anyway, tracing-subscriber would report it with
    // `eprintln!`, which panics on a closed stderr (EPIPE) in whatever
    // thread logged: not reported.
    crate::logging::start();
    pylon_control_plane::raft::node::before_fatal_exit(|| {
        crate::logging::flush(crate::logging::EXIT_FLUSH);
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::logging::Stderr)
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    for problem in refused {
        tracing::warn!(target: "pylon::logging", "{problem}");
    }
}

/// Resolves at the first SIGTERM or SIGINT, after logging it; the second
/// ends the process at once ([`exit_now`]).
///
/// Both are watched by a thread of their own ([`signals`]) from the first
/// call on, not by a task of the node's runtime: the runtime's threads can
/// all be busy or stuck (a drain waiting on requests, a blocked write), and
/// the second signal must still be heard. The servers start the watcher first
/// thing ([`signals`]).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut first = signals();
    async move {
        if first.wait_for(|signalled| *signalled).await.is_err() {
            // No signal thread (see [`signals`]): the node runs until killed.
            return std::future::pending().await;
        }
        tracing::info!("shutting down (a second signal exits at once)");
    }
}

/// The process's signal watcher: a thread with a runtime of its own that
/// says when the first SIGTERM or SIGINT came (the receiver turns `true`)
/// and calls [`exit_now`] at the second. Started by the first call, which
/// returns once the listeners are in place (at most 1 s); the servers make
/// that call before anything else. A signal whose listener the OS refuses
/// (logged) keeps its default action: the process ends at once.
fn signals() -> tokio::sync::watch::Receiver<bool> {
    use std::sync::OnceLock;
    use tokio::signal::unix::SignalKind;
    static FIRST: OnceLock<tokio::sync::watch::Receiver<bool>> = OnceLock::new();
    FIRST
        .get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let (listening, registered) = std::sync::mpsc::channel::<()>();
            let watcher = move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch for shutdown signals");
                        return;
                    }
                };
                let second = runtime.block_on(async move {
                    let mut term = listen(SignalKind::terminate());
                    let mut int = listen(SignalKind::interrupt());
                    let _ = listening.send(());
                    if term.is_none() && int.is_none() {
                        return false;
                    }
                    either(&mut term, &mut int).await;
                    let _ = tx.send(true);
                    either(&mut term, &mut int).await;
                    true
                });
                if second {
                    exit_now();
                }
            };
            match std::thread::Builder::new()
                .name("pylon-signals".into())
                .spawn(watcher)
            {
                // Returns early if the thread ends without listening.
                Ok(_) => {
                    let _ = registered.recv_timeout(Duration::from_secs(1));
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch for shutdown signals"),
            }
            rx
        })
        .clone()
}

/// A listener for `kind`, or `None` (logged) if the OS refused one.
fn listen(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot watch for shutdown signals"))
        .ok()
}

/// Resolves at the next signal either listener receives.
async fn either(
    term: &mut Option<tokio::signal::unix::Signal>,
    int: &mut Option<tokio::signal::unix::Signal>,
) {
    async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = next(term) => {}
        _ = next(int) => {}
    }
}

/// The second signal: writes the access-log lines still buffered (up to
/// the last second's; at most [`EXIT_FLUSH`]) and exits with 130, without
/// waiting for requests in flight.
///
/// The message saying so goes after the log lines already queued, which get
/// at most [`EXIT_MESSAGE`] first: with stderr a pipe nobody reads, they are
/// not written (the message may come late or never), and the exit must not
/// wait on them.
///
/// [`EXIT_FLUSH`]: pylon_data_plane::telemetry::access_log::EXIT_FLUSH
fn exit_now() -> ! {
    crate::logging::say("second signal: exiting without waiting for in-flight requests\n");
    crate::logging::flush(EXIT_MESSAGE);
    // What the orderly shutdown would have written: the access-log lines
    // still in their buffer.
    pylon_data_plane::telemetry::access_log::flush_all(pylon_data_plane::telemetry::access_log::EXIT_FLUSH);
    std::process::exit(130);
}

/// How long [`exit_now`] waits for the log lines and its message to be
/// written.
const EXIT_MESSAGE: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the embedded single-node cluster keeps its state.
    #[arg(long, default_value = ".pylon/dev")]
    data_dir: PathBuf,
    /// The proxy (data plane).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin gRPC API.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Raft port of the embedded node.
    #[arg(long, default_value = "127.0.0.1:7000")]
    raft_listen: SocketAddr,
    /// APIs answer at http://{api}.{base-domain}:{port}/{stage}/...
    #[arg(long, default_value = "localhost")]
    base_domain: String,
    /// A proxy (address or CIDR) whose X-Forwarded-For names the client (repeatable).
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The operator console (docs/console.md).
    #[arg(long, default_value = "127.0.0.1:9080")]
    console_listen: SocketAddr,
    /// Run without the operator console.
    #[arg(long)]
    no_console: bool,
    /// The developer portal (docs/portal.md).
    #[arg(long, default_value = "127.0.0.1:9081")]
    portal_listen: SocketAddr,
    /// Run without the developer portal.
    #[arg(long)]
    no_portal: bool,
    #[command(flatten)]
    shared: SharedArgs,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// The proxy's connection limit and deadlines (data planes, and `pylon dev`).
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectionArgs {
    /// Seconds from accept (TLS handshake included) to the first bytes of a request.
    #[arg(long, default_value_t = 10)]
    first_byte_timeout_s: u64,
    /// Seconds a client has to send its request headers, from their first byte.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_s: u64,
    /// Seconds between the bytes of a request body (then 408).
    #[arg(long, default_value_t = 30)]
    body_read_timeout_s: u64,
    /// Seconds an HTTP/1.1 connection stays open with no request in flight.
    #[arg(long, default_value_t = 75)]
    keepalive_timeout_s: u64,
    /// Seconds an HTTP/2 connection stays open with no stream in flight (then GOAWAY).
    #[arg(long, default_value_t = 300)]
    http2_idle_timeout_s: u64,
    /// Seconds a client may leave a write of ours untaken before the connection is closed.
    #[arg(long, default_value_t = 60)]
    send_timeout_s: u64,
    /// Open client connections at most; beyond it new ones are closed at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Proxy worker threads, each a single-threaded runtime holding whole
    /// connections (0: one per CPU this process may use, cgroup quota included).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Seconds in-flight requests and WebSocket connections get to finish
    /// at shutdown.
    #[arg(long, default_value_t = 30)]
    drain_timeout_s: u64,
}

impl ConnectionArgs {
    /// Fills the data plane's connection settings.
    fn apply(&self, config: &mut DataPlaneConfig) -> anyhow::Result<()> {
        let seconds = |name: &str, value: u64| {
            if (1..=86_400).contains(&value) {
                Ok(Duration::from_secs(value))
            } else {
                Err(anyhow::anyhow!("--{name} must be 1..=86400 seconds"))
            }
        };
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        config.connections = pylon_data_plane::conn::ConnectionOptions {
            first_byte: seconds("first-byte-timeout-s", self.first_byte_timeout_s)?,
            header_read: seconds("header-read-timeout-s", self.header_read_timeout_s)?,
            keepalive_idle: seconds("keepalive-timeout-s", self.keepalive_timeout_s)?,
            http2_idle: seconds("http2-idle-timeout-s", self.http2_idle_timeout_s)?,
            send: seconds("send-timeout-s", self.send_timeout_s)?,
            max_connections: self.max_connections,
        };
        config.body_read_timeout = seconds("body-read-timeout-s", self.body_read_timeout_s)?;
        if self.workers > 1024 {
            bail!("--workers must be 0 (one per CPU) to 1024");
        }
        config.workers = self.workers;
        config.drain_timeout = Duration::from_secs(self.drain_timeout_s.min(86_400));
        Ok(())
    }
}

/// Where limits and cached responses are kept (data planes, and `pylon dev`).
#[derive(clap::Args, Clone, Debug)]
pub struct SharedArgs {
    /// Share limits and the response cache with other nodes through Redis:
    /// redis://USER:PASSWORD@HOST:PORT/DB, rediss://… (TLS),
    /// redis-sentinel://HOST:PORT,HOST:PORT/MASTER, redis-cluster://HOST:PORT,HOST:PORT
    /// (default: kept in this process).
    #[arg(long, env = "PYLON_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Longest wait for one Redis call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    redis_timeout_ms: u64,
    /// Node-wide request rate (requests per second; 0: none).
    #[arg(long, default_value_t = pylon_data_plane::shared::DEFAULT_ACCOUNT_RATE)]
    account_rate: f64,
    /// Node-wide burst.
    #[arg(long, default_value_t = pylon_data_plane::shared::DEFAULT_ACCOUNT_BURST)]
    account_burst: u32,
    /// File with the 32-byte key (raw, hex or base64) that seals cached
    /// responses of stages that encrypt their cache (or PYLON_CACHE_KEY).
    #[arg(long)]
    cache_key_file: Option<PathBuf>,
}

impl SharedArgs {
    /// Starts the shared state these flags describe.
    fn start(&self) -> anyhow::Result<Arc<SharedState>> {
        if !(self.account_rate.is_finite() && self.account_rate >= 0.0) {
            bail!("--account-rate must be 0 or more");
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            bail!("--redis-timeout-ms must be 1..=10000");
        }
        let options = SharedOptions {
            redis: self.redis.as_ref().map(|url| RedisOptions {
                url: url.clone(),
                timeout: Duration::from_millis(self.redis_timeout_ms),
            }),
            account_rate: self.account_rate,
            account_burst: self.account_burst.max(1),
        };
        SharedState::start(&options).map_err(|e| anyhow::anyhow!(e))
    }

    /// The cache key from --cache-key-file or PYLON_CACHE_KEY.
    fn cache_key(&self) -> anyhow::Result<Option<CacheKey>> {
        let material = match (&self.cache_key_file, std::env::var("PYLON_CACHE_KEY")) {
            (Some(path), _) => {
                std::fs::read(path).with_context(|| format!("--cache-key-file {}", path.display()))?
            }
            (None, Ok(text)) => text.into_bytes(),
            (None, Err(_)) => return Ok(None),
        };
        CacheKey::parse(&material)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("cache key: {e}"))
    }
}

/// The admin API's view of quota counters: the data planes' shared state.
struct Usage(Arc<SharedState>);

impl UsageStore for Usage {
    fn used<'a>(
        &'a self,
        cluster: &'a str,
        plan: &'a str,
        key_id: &'a str,
        window: pylon_common::quota::Window,
    ) -> futures::future::BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { self.0.quota_used(&quota_id(cluster, plan, key_id), window).await })
    }

    fn reset<'a>(
        &'a self,
        cluster: &'a str,
        plan: &'a str,
        key_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.0.quota_reset(&quota_id(cluster, plan, key_id)).await })
    }
}

/// A listener's shutdown: resolves once the process stops.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Resolves once, for every listener of the process: on a signal, or when
/// the returned sender says so (one plane of `pylon dev` failed).
fn shared_shutdown() -> (impl Fn() -> Shutdown, Arc<tokio::sync::watch::Sender<bool>>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tx = Arc::new(tx);
    let signalled = tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signalled.send(true);
    });
    let wait = move || -> Shutdown {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };
    (wait, tx)
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    init_logging("info,raft=warn");
    signals();
    if args.admin_listen.port() == 0 {
        bail!("--admin-listen needs a fixed port: the embedded data plane connects to it");
    }
    let shared = args.shared.start()?;
    let config = ControlPlaneConfig {
        node_id: 1,
        listen: args.admin_listen,
        raft_listen: args.raft_listen,
        raft_advertise: None,
        peers: BTreeMap::new(),
        join: false,
        data_dir: args.data_dir.clone(),
        token: None,
        credentials_file: None,
        listen_flag: "--admin-listen",
        open_reflection: true,
        tls: None,
        timers: RaftTimers::default(),
        snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        min_free_space_mb: pylon_control_plane::raft::disk::DEFAULT_MIN_FREE_MB,
        usage: Some(Arc::new(Usage(shared.clone()))),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        console: (!args.no_console).then_some(ConsoleListen {
            address: args.console_listen,
            insecure: false,
        }),
        portal: (!args.no_portal).then(|| PortalListen {
            address: args.portal_listen,
            insecure: false,
            gateway_url: format!(
                "http://{{api}}.{}:{}/{{stage}}",
                args.base_domain,
                args.listen.port()
            ),
        }),
    };
    let mut data_plane = DataPlaneConfig::new(
        args.listen,
        vec![format!("http://{}", args.admin_listen)],
        "dev".into(),
    );
    data_plane.base_domain = args.base_domain.clone();
    data_plane.trusted_proxies = args.trusted_proxies.clone();
    args.connections.apply(&mut data_plane)?;
    data_plane.shared = Some(shared);
    // One process: a key made up now seals what only this process reads.
    // With Redis other nodes may read the entries, so a key made up here
    // would seal what they cannot open: without a given key, encrypted
    // stages are not cached (the cache says so once per stage).
    data_plane.cache_key = match args.shared.cache_key()? {
        Some(key) => Some(key),
        None if args.shared.redis.is_none() => Some(CacheKey::random()),
        None => {
            tracing::warn!(
                "--redis without --cache-key-file (or PYLON_CACHE_KEY): stages with an encrypted cache are not cached"
            );
            None
        }
    };
    // One node serves every endpoint class, PRIVATE APIs included (their
    // resource policies still decide who gets in).
    data_plane.labels.insert(
        pylon_common::snapshot::ENDPOINT_CLASS_LABEL.into(),
        "private".into(),
    );
    data_plane.snapshot_cache = Some(args.data_dir.join("config-snapshot"));
    let port = args.listen.port();
    crate::logging::say(&format!(
        "Pylon dev: control plane + data plane in one process, state in {dir}
  proxy       http://{{api}}.{domain}:{port}/{{stage}}/...   (listening on {listen})
  admin API   http://{admin}  (gRPC, reflection on)
  console     {console}
  portal      {portal}
  try         pylon apply -f examples/petstore.yaml
              pylon deploy petstore --stage prod
              curl http://petstore.{domain}:{port}/prod/pets
  stop        Ctrl-C
",
        dir = args.data_dir.display(),
        domain = args.base_domain,
        listen = args.listen,
        admin = args.admin_listen,
        console = if args.no_console {
            "off".to_owned()
        } else {
            format!("http://{}", args.console_listen)
        },
        portal = if args.no_portal {
            "off".to_owned()
        } else {
            format!("http://{}  (developer portal)", args.portal_listen)
        },
    ));
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let telemetry = Telemetry::init(&args.telemetry, "pylon-dev", "dev", &data_plane.labels)?;
    data_plane.telemetry = telemetry.data_plane_options();
    if let Some(address) = args.telemetry.ops_listen() {
        telemetry.serve_ops(address, data_plane.ready.clone()).await?;
    }
    let (shutdown, stop) = shared_shutdown();
    // A plane that fails (a port in use, an access-log file that cannot be
    // opened) stops the other: the process exits with its error.
    let stop_on_error = |failed: bool| {
        if failed {
            let _ = stop.send(true);
        }
    };
    let control = async {
        let result = pylon_control_plane::serve(config, shutdown()).await;
        stop_on_error(result.is_err());
        result
    };
    let data = async {
        let result = pylon_data_plane::serve(data_plane, shutdown()).await;
        stop_on_error(result.is_err());
        result
    };
    let (control, data) = tokio::join!(control, data);
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    control?;
    data?;
    Ok(())
}

#[derive(clap::Args)]
pub struct DataPlaneArgs {
    /// The proxy's plain-HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Control-plane admin endpoints, comma-separated (http://host:port or https://…).
    #[arg(long = "control-plane", value_delimiter = ',', required = true)]
    control_planes: Vec<String>,
    /// This node's id (default: host name and listen port).
    #[arg(long)]
    node_id: Option<String>,
    /// A label reported to the control plane, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// APIs answer at http://{api}.{base-domain}/{stage}/...
    #[arg(long, default_value = "localhost")]
    base_domain: String,
    /// A TLS listener (HTTP/1.1 and HTTP/2 by ALPN).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Default certificate (PEM) of the TLS listener; custom domains bring their own.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the control plane's bearer token (or PYLON_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA bundle (PEM) for https:// control-plane endpoints.
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with the control plane
    /// (its URI SAN spiffe://pylon/data-plane/NAME names the node); read
    /// again at every reconnect. Instead of --token-file.
    #[arg(long, requires = "control_plane_key")]
    control_plane_cert: Option<PathBuf>,
    /// The key of --control-plane-cert.
    #[arg(long, requires = "control_plane_cert")]
    control_plane_key: Option<PathBuf>,
    /// Keep the last good config snapshot here and serve from it at start.
    #[arg(long)]
    snapshot_cache: Option<PathBuf>,
    /// Serve only the config of this cluster (`pylon cluster status` shows
    /// its id): updates from any other cluster, or from this one gone back
    /// to an older version, are NACKed while the node keeps serving. By
    /// default a node adopts them, with a logged error and a warning in
    /// `pylon nodes`.
    #[arg(long, value_name = "CLUSTER_ID")]
    pin_cluster_id: Option<String>,
    /// Extra CA bundle (PEM) trusted for HTTPS backends.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// A proxy (address or CIDR) whose X-Forwarded-For names the client
    /// (repeatable). Resource policies then judge the forwarded address.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<ipnet::IpNet>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    shared: SharedArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    if key.is_empty() {
        return Err("empty label key".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn default_node_id(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "data-plane".into());
    format!("{host}-{}", listen.port())
}

pub async fn data_plane(args: DataPlaneArgs) -> anyhow::Result<()> {
    init_logging("info");
    signals();
    for endpoint in &args.control_planes {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("--control-plane {endpoint}: expected http://HOST:PORT or https://HOST:PORT");
        }
    }
    let node_id = args.node_id.unwrap_or_else(|| default_node_id(args.listen));
    let mut config = DataPlaneConfig::new(args.listen, args.control_planes, node_id);
    config.labels = args.labels.into_iter().collect();
    config.base_domain = args.base_domain;
    config.tls_listen = args.tls_listen;
    config.tls_cert = args.tls_cert;
    config.tls_key = args.tls_key;
    config.token = load_token(args.token_file.as_ref())?.map(|t| t.reveal().to_owned());
    config.token_file = args.token_file.clone();
    // Nothing to reload on SIGHUP (the token file is read at every
    // connect): say so instead of dying, as the default action would.
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: nothing to reload; --token-file is read again at every connect");
            }
        }
    });
    config.control_plane_ca = args.control_plane_ca;
    config.control_plane_identity = args.control_plane_cert.zip(args.control_plane_key);
    config.snapshot_cache = args.snapshot_cache;
    config.pin_cluster_id = match args.pin_cluster_id {
        Some(id) => {
            let id = id.trim().to_ascii_lowercase();
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "--pin-cluster-id {id}: a cluster id is 32 hex characters (pylon cluster status shows it)"
                );
            }
            Some(id)
        }
        None => None,
    };
    config.upstream_ca = args.upstream_ca;
    config.trusted_proxies = args.trusted_proxies;
    args.connections.apply(&mut config)?;
    config.shared = Some(args.shared.start()?);
    config.cache_key = args.shared.cache_key()?;
    let telemetry = Telemetry::init(
        &args.telemetry,
        "pylon-data-plane",
        &config.node_id,
        &config.labels,
    )?;
    config.telemetry = telemetry.data_plane_options();
    if let Some(address) = args.telemetry.ops_listen() {
        telemetry.serve_ops(address, config.ready.clone()).await?;
    }
    let served = pylon_data_plane::serve(config, shutdown_signal()).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    served?;
    Ok(())
}

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
    /// YAML file with any of the settings below (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's Raft id (1, 2, 3, …).
    #[arg(long)]
    node_id: Option<u64>,
    /// Admin gRPC API address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Raft peer traffic address.
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// Address peers use to reach this node's Raft port (default: --raft-listen).
    #[arg(long)]
    raft_advertise: Option<String>,
    /// A founding member: ID=HOST:PORT (repeat for each, including this node).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
    /// Start empty and wait to be added with `pylon cluster join`.
    #[arg(long)]
    join: bool,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the bearer token for admin and peer calls.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Named credentials with roles (operator, reader, data-plane, peer),
    /// YAML; reloaded on SIGHUP (docs/admin-api.md).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Let gRPC server reflection answer without the token (by default it
    /// needs the token whenever one is set; health is always open).
    #[arg(long)]
    open_reflection: bool,
    /// TLS certificate (PEM) for the admin API and the Raft port.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the admin API and the Raft port.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) peers' certificates must chain to (default: --tls-cert).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: clients (operators, data planes, peers) may show a
    /// certificate chaining to this CA (PEM) instead of a bearer token; its
    /// URI SAN spiffe://TRUST_DOMAIN/ROLE/NAME names the caller. The node
    /// shows its own --tls-cert to its peers, which must then name it a
    /// peer (spiffe://TRUST_DOMAIN/peer/NAME). Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The SPIFFE trust domain of client certificates.
    #[arg(long, default_value = "pylon")]
    tls_client_trust_domain: String,
    /// Take a Raft snapshot and compact the log every N applied entries.
    #[arg(long)]
    snapshot_interval: Option<u64>,
    /// Free space (MiB) kept on the data directory's disk: below it the node
    /// refuses writes (RESOURCE_EXHAUSTED), hands over leadership and stops
    /// appending until space frees; 0 turns the watch off. Default 64.
    #[arg(long)]
    min_free_space_mb: Option<u64>,
    /// Raft tick in milliseconds (election after 10–20 ticks, heartbeat every 2).
    #[arg(long)]
    raft_tick_ms: Option<u64>,
    /// The data planes' Redis, to answer GetUsage/ResetUsage (same URL forms as theirs).
    #[arg(long, env = "PYLON_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// The operator console's address (off by default; docs/console.md).
    /// Off loopback it serves HTTPS with --tls-cert, or needs --console-insecure.
    #[arg(long)]
    console_listen: Option<SocketAddr>,
    /// Serve the console as plain HTTP off loopback (behind a TLS proxy).
    #[arg(long)]
    console_insecure: bool,
    /// The developer portal's address (off by default; docs/portal.md).
    #[arg(long)]
    portal_listen: Option<SocketAddr>,
    /// The gateway's URL for a stage, with {api} and {stage}
    /// (e.g. https://{api}.api.example.com/{stage}), for the portal's
    /// reference and "try it".
    #[arg(long)]
    portal_gateway_url: Option<String>,
    /// Serve the portal as plain HTTP off loopback (behind a TLS proxy).
    #[arg(long)]
    portal_insecure: bool,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// The config-file form of [`ControlPlaneArgs`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct ControlPlaneFile {
    node_id: Option<u64>,
    listen: Option<SocketAddr>,
    raft_listen: Option<SocketAddr>,
    raft_advertise: Option<String>,
    #[serde(default)]
    peers: BTreeMap<u64, String>,
    #[serde(default)]
    join: bool,
    data_dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    open_reflection: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_trust_domain: Option<String>,
    snapshot_interval: Option<u64>,
    min_free_space_mb: Option<u64>,
    raft_tick_ms: Option<u64>,
    redis: Option<String>,
    console_listen: Option<SocketAddr>,
    #[serde(default)]
    console_insecure: bool,
    portal_listen: Option<SocketAddr>,
    portal_gateway_url: Option<String>,
    #[serde(default)]
    portal_insecure: bool,
}

fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, address) = text.split_once('=').ok_or("expected ID=HOST:PORT")?;
    let id: u64 = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    if !address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(format!("{address:?} is not HOST:PORT"));
    }
    Ok((id, address.to_owned()))
}

fn load_token(file: Option<&PathBuf>) -> anyhow::Result<Option<BearerToken>> {
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--token-file {}", path.display()))?;
        return match BearerToken::new(&text) {
            Some(token) => Ok(Some(token)),
            None => bail!("--token-file {} is empty", path.display()),
        };
    }
    Ok(std::env::var("PYLON_ADMIN_TOKEN")
        .ok()
        .and_then(|t| BearerToken::new(&t)))
}

pub async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    init_logging("info");
    signals();
    let file: ControlPlaneFile = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
            serde_norway::from_str(&text).with_context(|| format!("--config {}", path.display()))?
        }
        None => ControlPlaneFile::default(),
    };
    let Some(node_id) = args.node_id.or(file.node_id) else {
        bail!("--node-id is required");
    };
    let mut peers = file.peers;
    peers.extend(args.peers);
    let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: args.tls_ca.or(file.tls_ca),
            client_ca: args.tls_client_ca.or(file.tls_client_ca),
            trust_domain: file
                .tls_client_trust_domain
                .filter(|_| args.tls_client_trust_domain == "pylon")
                .unwrap_or(args.tls_client_trust_domain),
        }),
        (None, None) if args.tls_client_ca.is_some() || file.tls_client_ca.is_some() => {
            bail!("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS first)")
        }
        (None, None) => None,
        _ => bail!("tls_cert and tls_key go together"),
    };
    let usage: Option<Arc<dyn UsageStore>> = match args.redis.or(file.redis) {
        Some(url) => {
            let options = SharedOptions {
                redis: Some(RedisOptions {
                    url,
                    // Admin reads are not on a request path: allow more time.
                    timeout: Duration::from_millis(500),
                }),
                account_rate: 0.0,
                account_burst: 1,
            };
            let shared = SharedState::start(&options).map_err(|e| anyhow::anyhow!(e))?;
            Some(Arc::new(Usage(shared)))
        }
        None => None,
    };
    let tick = args.raft_tick_ms.or(file.raft_tick_ms).unwrap_or(50);
    if !(10..=1000).contains(&tick) {
        bail!("--raft-tick-ms must be 10..=1000");
    }
    let config = ControlPlaneConfig {
        node_id,
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
        raft_listen: args
            .raft_listen
            .or(file.raft_listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7001))),
        raft_advertise: args.raft_advertise.or(file.raft_advertise),
        peers,
        join: args.join || file.join,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("pylon-data-{node_id}"))),
        token: load_token(args.token_file.or(file.token_file).as_ref())?,
        credentials_file: args.credentials_file.or(file.credentials_file),
        listen_flag: "--listen",
        open_reflection: args.open_reflection || file.open_reflection,
        tls,
        timers: RaftTimers {
            tick: Duration::from_millis(tick),
            ..RaftTimers::default()
        },
        snapshot_interval: args
            .snapshot_interval
            .or(file.snapshot_interval)
            .unwrap_or(DEFAULT_SNAPSHOT_INTERVAL),
        min_free_space_mb: args
            .min_free_space_mb
            .or(file.min_free_space_mb)
            .unwrap_or(pylon_control_plane::raft::disk::DEFAULT_MIN_FREE_MB),
        usage,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        console: args
            .console_listen
            .or(file.console_listen)
            .map(|address| ConsoleListen {
                address,
                insecure: args.console_insecure || file.console_insecure,
            }),
        portal: match (
            args.portal_listen.or(file.portal_listen),
            args.portal_gateway_url.or(file.portal_gateway_url),
        ) {
            (Some(address), Some(gateway_url)) => Some(PortalListen {
                address,
                insecure: args.portal_insecure || file.portal_insecure,
                gateway_url,
            }),
            (Some(_), None) => {
                bail!(
                    "portal_listen needs portal_gateway_url (the gateway's URL for a stage, with {{api}} and {{stage}})"
                )
            }
            (None, _) => None,
        },
    };
    let telemetry = Telemetry::init(
        &args.telemetry,
        "pylon-control-plane",
        &format!("node-{node_id}"),
        &BTreeMap::new(),
    )?;
    if let Some(address) = args.telemetry.ops_listen() {
        telemetry.serve_ops(address, config.ready.clone()).await?;
    }
    let served = pylon_control_plane::serve(config, shutdown_signal()).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    served?;
    Ok(())
}
