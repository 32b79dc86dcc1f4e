//! Keeps the node's config in step with the control plane.
//!
//! The node subscribes to one control-plane endpoint at a time, failing over
//! among them with exponential backoff (100 ms → 5 s, with jitter) for as long
//! as it takes, and keeps serving its last good config meanwhile. Each update
//! is checked (checksum), compiled off the async threads and swapped in; it
//! is ACKed once serving, NACKed with the reason if it does not compile — the
//! previous config stays. Versions only move forward: an update that is not
//! newer than what the node serves is never applied. The last good snapshot
//! can be kept in a file (`--snapshot-cache`) to serve from at the next start.
//!
//! Each snapshot names its cluster. An update from another cluster than the
//! one served (the control plane was rebuilt, or the node pointed elsewhere),
//! or one the control plane marks `rewound` (the cluster, confirmed current
//! by its leader, has gone back to an older version: restored from a
//! backup), is never mixed in silently: it is logged as an error and, by
//! default, adopted whatever its version, with a warning in the ACKs that
//! `pylon nodes` shows until the node restarts; with `--pin-cluster-id ID` the node serves only
//! cluster ID, never goes back, and NACKs anything else while it keeps
//! serving what it has.

use crate::config::{self, CompiledConfig};
use crate::meters::Meters;
use arc_swap::ArcSwap;
use prost::Message as _;
use pylon_common::snapshot;
use pylon_proto::publish::v1::config_publisher_client::ConfigPublisherClient;
use pylon_proto::publish::v1::{
    Ack, ConfigUpdate, Heartbeat, Hello, Nack, SubscribeRequest, config_update::Body, subscribe_request::Kind,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const HEARTBEAT: Duration = Duration::from_secs(10);
/// Route entries per heartbeat message: a data plane with more traffic
/// entries sends several, each well under the control plane's reading
/// limit (`pylon_common::traffic::MAX_PER_HEARTBEAT`) and gRPC's 4 MiB.
const ENTRIES_PER_HEARTBEAT: usize = 5_000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Large configs arrive as one message.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
const CACHE_MAGIC: &[u8] = b"PYLON-CONFIG-SNAPSHOT-1\n";

#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    /// Read again at every (re)connect, so a rotated token is used from the
    /// next session on; wins over `token`.
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS with the control
    /// plane, read at every (re)connect so a renewed certificate is used
    /// from the next session on.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    pub cache: Option<PathBuf>,
    /// Serve only this cluster's config (`--pin-cluster-id`).
    pub pin_cluster_id: Option<String>,
    /// A pinned cluster that went back: its later versions do not follow
    /// what this node serves, and are refused until the node restarts.
    pub diverged: Arc<std::sync::Mutex<Option<String>>>,
    /// Made once by the node's telemetry.
    pub metrics: crate::telemetry::metrics::SnapshotMetrics,
    /// The routes' meters: configs are compiled with it, and every
    /// heartbeat takes its counts.
    pub meters: Arc<Meters>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Stream(#[from] tonic::Status),
}

/// Runs until `stop` turns true.
pub async fn run(options: SyncOptions, live: Arc<ArcSwap<CompiledConfig>>, mut stop: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut next = 0usize;
    loop {
        let endpoint = &options.endpoints[next % options.endpoints.len()];
        let mut received = false;
        let outcome = tokio::select! {
            outcome = session(&options, endpoint, &live, &mut received) => outcome,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match outcome {
            Ok(()) => tracing::info!(endpoint, "control plane closed the subscription"),
            Err(SessionError::Stream(status))
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) =>
            {
                tracing::error!(
                    endpoint,
                    error = %status.message(),
                    version = live.load().version,
                    "the control plane refused this node's credential (--token-file or --control-plane-cert: it needs the data-plane role); serving the last good config"
                )
            }
            Err(e) => {
                tracing::warn!(endpoint, error = %e, version = live.load().version, "control plane unavailable; serving the last good config")
            }
        }
        if received {
            backoff = MIN_BACKOFF;
        }
        next += 1;
        let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn channel(options: &SyncOptions, endpoint: &str) -> Result<tonic::transport::Channel, SessionError> {
    let mut builder = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| SessionError::Connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &options.ca {
            let pem =
                std::fs::read(ca).map_err(|e| SessionError::Connect(format!("{}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &options.identity {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| SessionError::Connect(format!("{}: {e}", path.display())))
            };
            tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| SessionError::Connect(e.to_string()))?;
    }
    builder
        .connect()
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))
}

async fn session(
    options: &SyncOptions,
    endpoint: &str,
    live: &Arc<ArcSwap<CompiledConfig>>,
    received: &mut bool,
) -> Result<(), SessionError> {
    let channel = channel(options, endpoint).await?;
    let mut client = ConfigPublisherClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(8);
    let hello = SubscribeRequest {
        kind: Some(Kind::Hello(Hello {
            node_id: options.node_id.clone(),
            labels: options.labels.clone(),
            version: live.load().version,
            software_version: env!("CARGO_PKG_VERSION").into(),
            cluster_id: live.load().cluster_id.clone(),
            warning: live.load().warning.clone(),
        })),
    };
    let _ = tx.send(hello).await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let token = match &options.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| SessionError::Connect(format!("--token-file {}: {e}", path.display())))?,
        ),
        None => options.token.clone(),
    };
    if let Some(token) = &token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| SessionError::Connect("the token is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut updates = client.subscribe(request).await?.into_inner();
    tracing::info!(
        endpoint,
        version = live.load().version,
        "subscribed to the control plane"
    );

    let _beats = AbortOnDrop({
        let tx = tx.clone();
        let live = live.clone();
        let meters = options.meters.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(HEARTBEAT);
            interval.tick().await;
            loop {
                interval.tick().await;
                // Counts lost with a stream that broke are not sent again:
                // the console's figures are a best effort, like a scrape.
                let mut traffic = meters.take();
                loop {
                    let rest = traffic.split_off(traffic.len().min(ENTRIES_PER_HEARTBEAT));
                    let beat = SubscribeRequest {
                        kind: Some(Kind::Heartbeat(Heartbeat {
                            version: live.load().version,
                            traffic,
                        })),
                    };
                    if tx.send(beat).await.is_err() {
                        return;
                    }
                    if rest.is_empty() {
                        break;
                    }
                    traffic = rest;
                }
            }
        })
    });
    // The heartbeat guard lives until the stream ends.
    async {
        while let Some(update) = updates.message().await? {
            *received = true;
            if let Some(answer) = apply(
                update,
                live,
                options.cache.as_deref(),
                &Compiling {
                    serves_private: snapshot::serves_private(&options.labels),
                    meters: options.meters.clone(),
                },
                options.pin_cluster_id.as_deref(),
                Some(&options.diverged),
                Some(&options.metrics),
            )
            .await
            {
                let _ = tx.send(answer).await;
            }
        }
        Ok(())
    }
    .await
}

/// Ends a task when the session that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What to do with an update, given what is served.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Not newer than what is served, from the same cluster.
    Ignore,
    /// NACK with this reason; keep serving.
    Refuse(String),
    /// Compile and serve it; the warning, if any, goes with the ACK.
    Apply { warning: String },
}

fn decide(update: &ConfigUpdate, current: &CompiledConfig, pin: Option<&str>, diverged: bool) -> Decision {
    let (version, cluster) = (update.version, update.cluster_id.as_str());
    if diverged && pin.is_some() {
        return Decision::Refuse(format!(
            "cluster {cluster} went back to an older version earlier: its version {version} does not follow version {} served here; \
             restart the node without its snapshot cache to accept it",
            current.version
        ));
    }
    if let Some(pin) = pin
        && cluster != pin
    {
        return Decision::Refuse(format!(
            "version {version} comes from cluster {cluster:?}, not the pinned {pin:?} (--pin-cluster-id); \
             still serving version {} of cluster {:?}",
            current.version, current.cluster_id
        ));
    }
    if !current.cluster_id.is_empty() && !cluster.is_empty() && current.cluster_id != cluster {
        return Decision::Apply {
            warning: format!(
                "adopted version {version} of cluster {cluster} after serving version {} of cluster {}",
                current.version, current.cluster_id
            ),
        };
    }
    if version > current.version {
        return Decision::Apply {
            warning: String::new(),
        };
    }
    if update.rewound && version < current.version {
        if pin.is_some() {
            return Decision::Refuse(format!(
                "cluster {cluster} went back from version {} to {version} (restored from an older backup?); \
                 a node with --pin-cluster-id never goes back: restart it without its snapshot cache to accept",
                current.version
            ));
        }
        return Decision::Apply {
            warning: format!(
                "cluster {cluster} went back from version {} to {version} (restored from an older backup?); adopted",
                current.version
            ),
        };
    }
    Decision::Ignore
}

/// How this node compiles snapshots.
#[derive(Clone, Debug)]
struct Compiling {
    /// PRIVATE APIs are served (the node's `endpoint-class` label).
    serves_private: bool,
    /// The routes' meters are bound here.
    meters: Arc<Meters>,
}

/// Applies one update; returns the ACK or NACK to send (none for an update
/// that is not newer than what is served).
async fn apply(
    update: ConfigUpdate,
    live: &Arc<ArcSwap<CompiledConfig>>,
    cache: Option<&Path>,
    compiling: &Compiling,
    pin: Option<&str>,
    diverged: Option<&std::sync::Mutex<Option<String>>>,
    metrics: Option<&crate::telemetry::metrics::SnapshotMetrics>,
) -> Option<SubscribeRequest> {
    let version = update.version;
    let serving = live.load().version;
    let lock = |d: &std::sync::Mutex<Option<String>>| {
        d.lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    };
    let has_diverged = diverged
        .map(lock)
        .is_some_and(|d| d.as_deref() == Some(update.cluster_id.as_str()));
    let mut fresh_warning = false;
    let warning = match decide(&update, &live.load(), pin, has_diverged) {
        Decision::Ignore => {
            tracing::info!(
                version,
                serving,
                "ignoring a config version that is not newer than the one served"
            );
            return None;
        }
        Decision::Refuse(error) => {
            if update.rewound
                && let Some(diverged) = diverged
                && let Ok(mut diverged) = diverged.lock()
            {
                *diverged = Some(update.cluster_id.clone());
            }
            tracing::error!(version, serving, error, "refused a config version");
            return Some(SubscribeRequest {
                kind: Some(Kind::Nack(Nack { version, error })),
            });
        }
        // A warning stays with the node until it restarts, so whoever
        // looks at `pylon nodes` later still sees what happened.
        Decision::Apply { warning } if warning.is_empty() => live.load().warning.clone(),
        Decision::Apply { warning } => {
            fresh_warning = true;
            warning
        }
    };
    if fresh_warning {
        tracing::error!(version, serving, warning, "serving config from a changed cluster");
    }
    let started = std::time::Instant::now();
    let update = Arc::new(update);
    let compiled = {
        let update = update.clone();
        let current = live.load_full();
        let compiling = compiling.clone();
        tokio::task::spawn_blocking(move || compile_update(&update, Some(&current), &compiling))
            .await
            .unwrap_or_else(|e| Err(format!("compiling panicked: {e}")))
    };
    match compiled {
        Ok(mut compiled) => {
            compiled.warning = warning.clone();
            let cluster_id = compiled.cluster_id.clone();
            let stages = compiled.stage_count();
            live.store(Arc::new(compiled));
            if let Some(metrics) = metrics {
                metrics.config_version.record(version, &[]);
                metrics.apply.record(started.elapsed().as_secs_f64() * 1e3, &[]);
            }
            tracing::info!(
                version,
                previous = serving,
                stages,
                took_ms = started.elapsed().as_millis() as u64,
                "serving config version"
            );
            if let Some(path) = cache {
                let path = path.to_owned();
                let update = update.clone();
                let written = tokio::task::spawn_blocking(move || store_cache(&path, &update)).await;
                if let Ok(Err(e)) | Err(e) = written.map_err(|e| std::io::Error::other(e.to_string())) {
                    tracing::warn!(error = %e, "could not write the snapshot cache");
                }
            }
            Some(SubscribeRequest {
                kind: Some(Kind::Ack(Ack {
                    version,
                    cluster_id,
                    warning,
                })),
            })
        }
        Err(error) => {
            tracing::error!(
                version,
                serving,
                error,
                "rejected a config version; the previous one stays in force"
            );
            Some(SubscribeRequest {
                kind: Some(Kind::Nack(Nack { version, error })),
            })
        }
    }
}

/// Decodes and compiles an update. When its content equals what `current`
/// serves, only the version moves.
fn compile_update(
    update: &ConfigUpdate,
    current: Option<&CompiledConfig>,
    compiling: &Compiling,
) -> Result<CompiledConfig, String> {
    let Some(Body::Snapshot(encoded)) = &update.body else {
        return Err("update without a snapshot body".into());
    };
    let snapshot = snapshot::decode(encoded).map_err(|e| e.to_string())?;
    if snapshot.version != update.version {
        return Err(format!(
            "snapshot says version {} but the update says {}",
            snapshot.version, update.version
        ));
    }
    let digest = snapshot::content_digest(&snapshot);
    if let Some(current) = current.filter(|c| c.digest == digest && c.version > 0) {
        let mut same = current.clone();
        same.version = update.version;
        same.cluster_id = snapshot.cluster_id;
        return Ok(same);
    }
    config::compile(&snapshot, digest, compiling.serves_private, &compiling.meters).map_err(|e| e.to_string())
}

fn store_cache(path: &Path, update: &ConfigUpdate) -> std::io::Result<()> {
    let mut bytes = CACHE_MAGIC.to_vec();
    bytes.extend_from_slice(&update.encode_to_vec());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads and compiles the snapshot cache (its routes' meters bound in
/// `meters`); `Ok(None)` when there is none. With a pinned cluster id, a
/// cache from another cluster is refused.
pub fn load_cache(
    path: &Path,
    serves_private: bool,
    meters: &Arc<Meters>,
    pin: Option<&str>,
) -> Result<Option<CompiledConfig>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let body = bytes
        .strip_prefix(CACHE_MAGIC)
        .ok_or("not a Pylon config snapshot cache")?;
    let update = ConfigUpdate::decode(body).map_err(|e| format!("damaged: {e}"))?;
    let compiling = Compiling {
        serves_private,
        meters: meters.clone(),
    };
    let compiled = compile_update(&update, None, &compiling)?;
    if let Some(pin) = pin
        && compiled.cluster_id != pin
    {
        return Err(format!(
            "it holds cluster {:?}, not the pinned {pin:?} (--pin-cluster-id)",
            compiled.cluster_id
        ));
    }
    Ok(Some(compiled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::publish::v1::ConfigSnapshot;

    fn public() -> Compiling {
        Compiling {
            serves_private: false,
            meters: Arc::default(),
        }
    }

    fn update_of(cluster: &str, version: u64) -> ConfigUpdate {
        let snapshot = ConfigSnapshot {
            version,
            cluster_id: cluster.into(),
            ..Default::default()
        };
        ConfigUpdate {
            version,
            body: Some(Body::Snapshot(snapshot::encode(&snapshot))),
            cluster_id: cluster.into(),
            rewound: false,
        }
    }

    fn update(version: u64) -> ConfigUpdate {
        update_of("c1", version)
    }

    fn acked(answer: &Option<SubscribeRequest>) -> Option<&Ack> {
        match answer {
            Some(SubscribeRequest {
                kind: Some(Kind::Ack(ack)),
            }) => Some(ack),
            _ => None,
        }
    }

    fn nacked(answer: &Option<SubscribeRequest>) -> Option<&Nack> {
        match answer {
            Some(SubscribeRequest {
                kind: Some(Kind::Nack(nack)),
            }) => Some(nack),
            _ => None,
        }
    }

    fn serving(cluster: &str, version: u64) -> Arc<ArcSwap<CompiledConfig>> {
        let mut config = CompiledConfig::default();
        config.version = version;
        config.cluster_id = cluster.into();
        Arc::new(ArcSwap::from_pointee(config))
    }

    #[tokio::test]
    async fn only_newer_versions_are_applied_and_acked() {
        let live = Arc::new(ArcSwap::from_pointee(CompiledConfig::default()));
        let answer = apply(update(5), &live, None, &public(), None, None, None).await;
        assert_eq!(
            acked(&answer).map(|a| (a.version, a.cluster_id.as_str())),
            Some((5, "c1"))
        );
        assert_eq!(live.load().version, 5);
        assert!(
            apply(update(5), &live, None, &public(), None, None, None)
                .await
                .is_none()
        );
        assert!(
            apply(update(3), &live, None, &public(), None, None, None)
                .await
                .is_none()
        );
        assert_eq!(live.load().version, 5);
    }

    #[tokio::test]
    async fn another_clusters_older_version_is_adopted_with_a_warning_by_default() {
        let live = serving("old-cluster", 30);
        let answer = apply(
            update_of("new-cluster", 5),
            &live,
            None,
            &public(),
            None,
            None,
            None,
        )
        .await;
        let ack = acked(&answer).unwrap_or_else(|| panic!("not acked: {answer:?}"));
        assert_eq!(ack.version, 5);
        assert!(ack.warning.contains("old-cluster"), "{}", ack.warning);
        assert_eq!(live.load().cluster_id, "new-cluster");
        assert_eq!(live.load().warning, ack.warning);
    }

    #[tokio::test]
    async fn a_pinned_node_nacks_another_cluster_and_keeps_serving() {
        let live = serving("old-cluster", 30);
        let answer = apply(
            update_of("new-cluster", 40),
            &live,
            None,
            &public(),
            Some("old-cluster"),
            None,
            None,
        )
        .await;
        let nack = nacked(&answer).unwrap_or_else(|| panic!("not nacked: {answer:?}"));
        assert!(nack.error.contains("--pin-cluster-id"), "{}", nack.error);
        assert_eq!(
            (live.load().version, live.load().cluster_id.as_str()),
            (30, "old-cluster")
        );
    }

    #[tokio::test]
    async fn a_rewound_cluster_is_adopted_unless_pinned_and_a_lagging_one_is_ignored() {
        let mut rewound = update(5);
        rewound.rewound = true;
        let pinned = serving("c1", 30);
        let answer = apply(rewound.clone(), &pinned, None, &public(), Some("c1"), None, None).await;
        assert!(nacked(&answer).is_some_and(|n| n.error.contains("went back")));
        assert_eq!(pinned.load().version, 30);

        let lagging = serving("c1", 30);
        assert!(
            apply(update(5), &lagging, None, &public(), None, None, None)
                .await
                .is_none()
        );
        let answer = apply(rewound, &lagging, None, &public(), None, None, None).await;
        assert!(acked(&answer).is_some_and(|a| a.version == 5 && a.warning.contains("went back")));
        assert_eq!(lagging.load().version, 5);
    }

    #[tokio::test]
    async fn a_damaged_update_is_nacked_and_the_old_config_stays() {
        let live = Arc::new(ArcSwap::from_pointee(CompiledConfig::default()));
        let _ = apply(update(5), &live, None, &public(), None, None, None).await;
        let mut bad = update(6);
        if let Some(Body::Snapshot(encoded)) = &mut bad.body {
            encoded.sha256 = vec![0; 32];
        }
        let answer = apply(bad, &live, None, &public(), None, None, None).await;
        assert_eq!(nacked(&answer).map(|n| n.version), Some(6));
        assert_eq!(live.load().version, 5);
    }

    #[tokio::test]
    async fn the_cache_round_trips_and_refuses_a_damaged_file_or_another_pinned_cluster() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("snapshot");
        assert!(matches!(
            load_cache(&path, false, &Arc::default(), None),
            Ok(None)
        ));
        store_cache(&path, &update(9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            load_cache(&path, false, &Arc::default(), None)
                .ok()
                .flatten()
                .map(|c| c.version),
            Some(9)
        );
        assert!(load_cache(&path, false, &Arc::default(), Some("c1")).is_ok());
        assert!(load_cache(&path, false, &Arc::default(), Some("c2")).is_err());
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(load_cache(&path, false, &Arc::default(), None).is_err());
    }

    #[tokio::test]
    async fn a_pinned_node_refuses_every_later_version_of_a_cluster_that_went_back() {
        let diverged = std::sync::Mutex::new(None);
        let live = serving("c1", 9);
        let mut rewound = update(6);
        rewound.rewound = true;
        let answer = apply(rewound, &live, None, &public(), Some("c1"), Some(&diverged), None).await;
        assert!(nacked(&answer).is_some());
        for version in [9, 10] {
            let answer = apply(
                update(version),
                &live,
                None,
                &public(),
                Some("c1"),
                Some(&diverged),
                None,
            )
            .await;
            assert!(
                nacked(&answer).is_some_and(|n| n.error.contains("went back")),
                "version {version}: {answer:?}"
            );
        }
        assert_eq!(live.load().version, 9);
    }
}
