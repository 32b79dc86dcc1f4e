//! `pylon dev` and `pylon control-plane`: flags and config file → a running node.

use anyhow::{Context as _, bail};
use pylon_control_plane::auth::BearerToken;
use pylon_control_plane::raft::node::RaftTimers;
use pylon_control_plane::{ControlPlaneConfig, TlsFiles};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Applied entries between Raft snapshots. Each snapshot encodes the whole
/// state on the Raft thread (see docs/control-plane.md), so not too often.
const DEFAULT_SNAPSHOT_INTERVAL: u64 = 10_000;

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PYLON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("PYLON_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the embedded single-node cluster keeps its state.
    #[arg(long, default_value = ".pylon/dev")]
    data_dir: PathBuf,
    /// Admin gRPC API.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Raft port of the embedded node.
    #[arg(long, default_value = "127.0.0.1:7000")]
    raft_listen: SocketAddr,
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    init_logging("info,raft=warn");
    let config = ControlPlaneConfig {
        node_id: 1,
        listen: args.listen,
        raft_listen: args.raft_listen,
        raft_advertise: None,
        peers: BTreeMap::new(),
        join: false,
        data_dir: args.data_dir.clone(),
        token: None,
        tls: None,
        timers: RaftTimers::default(),
        snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
    };
    eprintln!(
        "Pylon dev: single-node control plane, state in {}\n  admin API   http://{}  (gRPC, reflection on)\n  try         pylon apply -f examples/petstore.yaml && pylon deploy petstore --stage prod\n  stop        Ctrl-C",
        args.data_dir.display(),
        args.listen
    );
    pylon_control_plane::serve(config, shutdown_signal()).await?;
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
    /// TLS certificate (PEM) for the admin API and the Raft port.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the admin API and the Raft port.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) peers' certificates must chain to (default: --tls-cert).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Take a Raft snapshot and compact the log every N applied entries.
    #[arg(long)]
    snapshot_interval: Option<u64>,
    /// Raft tick in milliseconds (election after 10–20 ticks, heartbeat every 2).
    #[arg(long)]
    raft_tick_ms: Option<u64>,
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
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    snapshot_interval: Option<u64>,
    raft_tick_ms: Option<u64>,
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
        }),
        (None, None) => None,
        _ => bail!("tls_cert and tls_key go together"),
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
        tls,
        timers: RaftTimers {
            tick: Duration::from_millis(tick),
            ..RaftTimers::default()
        },
        snapshot_interval: args
            .snapshot_interval
            .or(file.snapshot_interval)
            .unwrap_or(DEFAULT_SNAPSHOT_INTERVAL),
    };
    pylon_control_plane::serve(config, shutdown_signal()).await?;
    Ok(())
}
