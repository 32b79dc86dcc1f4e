//! Streams versioned config snapshots to data-plane nodes and records, per
//! node, which version it applied or rejected.
//!
//! One task per control-plane node builds a [`ConfigSnapshot`] whenever an
//! applied command may have changed what data planes serve (see
//! [`crate::state::changes_served_config`]), skips it when its content did
//! not change (so long-lived streams see no no-op pushes), and encodes it
//! once; every subscriber's stream shares those bytes ([`service`]). What the
//! nodes answer is kept in the [`registry`]. Nothing here writes to Raft: data
//! planes hold no authoritative state, and their status is per control-plane
//! node (the admin API merges all nodes' views). The same goes for the
//! traffic counts their heartbeats carry ([`traffic`]).

pub mod directory;
pub mod registry;
pub mod service;
pub mod traffic;

use crate::state::{Replica, State};
use pylon_proto::publish::v1::{ConfigSnapshot, ConfigUpdate, StageSnapshot, config_update::Body};
use std::sync::Arc;
use tokio::sync::watch;

pub use registry::Registry;
pub use service::PublishService;

/// One published version, encoded once for every subscriber: in full for
/// nodes of the `private` endpoint class, without PRIVATE APIs for the rest.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub update: ConfigUpdate,
    pub public_update: ConfigUpdate,
}

impl Published {
    pub fn update_for(&self, serves_private: bool) -> &ConfigUpdate {
        if serves_private {
            &self.update
        } else {
            &self.public_update
        }
    }
}

/// Asks the leader whether this node's replica is current (a ReadIndex it
/// reached within the given time): only then may a data plane's newer
/// version mean the cluster went back, not that this node lags.
pub type ConfirmCurrent =
    Arc<dyn Fn(std::time::Duration) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// The latest published version and the data-plane registry.
#[derive(Clone)]
pub struct Publisher {
    current: watch::Receiver<Option<Arc<Published>>>,
    pub registry: Arc<Registry>,
    replica: Arc<Replica>,
    confirm_current: ConfirmCurrent,
}

impl Publisher {
    /// The entries of `traffic` whose stage exists, so a data plane cannot
    /// fill this node's traffic store with stages it made up.
    pub fn existing_stages(
        &self,
        traffic: Vec<pylon_proto::publish::v1::RouteTraffic>,
    ) -> Vec<pylon_proto::publish::v1::RouteTraffic> {
        let state = self.replica.state();
        traffic
            .into_iter()
            .filter(|t| state.stage(&t.api, &t.stage).is_some())
            .collect()
    }
    /// Starts the task that follows the replica's config version, for
    /// control-plane node `node_id`.
    pub fn start(replica: Arc<Replica>, node_id: u64, confirm_current: ConfirmCurrent) -> Publisher {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(replica.clone(), tx));
        Publisher {
            current: rx,
            registry: Arc::new(Registry::new(node_id)),
            replica,
            confirm_current,
        }
    }

    /// The config version this node has applied.
    pub(crate) fn current_version(&self) -> u64 {
        self.replica.state().config_version()
    }

    /// This cluster's id (empty until named).
    pub(crate) fn cluster_id(&self) -> String {
        self.replica.state().cluster_id().to_owned()
    }

    /// See [`ConfirmCurrent`].
    pub(crate) async fn confirmed_current(&self, timeout: std::time::Duration) -> bool {
        (self.confirm_current)(timeout).await
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.current.clone()
    }
}

async fn follow(replica: Arc<Replica>, tx: watch::Sender<Option<Arc<Published>>>) {
    let mut versions = replica.watch_served_version();
    let mut last_digest = None;
    loop {
        // Off the async threads: only what data planes serve is copied, under
        // the read lock (the rest of the state — every API, all deployment
        // history — is not), then digested and, when new, encoded.
        let from = replica.clone();
        let built = tokio::task::spawn_blocking(move || {
            let snapshot = config_snapshot(&from.state());
            let digest = pylon_common::snapshot::content_digest(&snapshot);
            let started = std::time::Instant::now();
            let encoded = (last_digest != Some(digest)).then(|| {
                let public = without_private_apis(&snapshot);
                (
                    pylon_common::snapshot::encode(&snapshot),
                    pylon_common::snapshot::encode(&public),
                )
            });
            (snapshot, digest, encoded, started.elapsed())
        })
        .await;
        match built {
            Ok((snapshot, digest, Some((encoded, public)), took)) => {
                let version = snapshot.version;
                tracing::info!(
                    version,
                    stages = snapshot.stages.len(),
                    bytes = encoded.uncompressed_size,
                    compressed = encoded.payload.len(),
                    took_ms = took.as_millis() as u64,
                    "publishing config snapshot"
                );
                last_digest = Some(digest);
                let update = ConfigUpdate {
                    version,
                    body: Some(Body::Snapshot(encoded)),
                    cluster_id: snapshot.cluster_id.clone(),
                    rewound: false,
                };
                let public_update = ConfigUpdate {
                    version,
                    body: Some(Body::Snapshot(public)),
                    cluster_id: snapshot.cluster_id.clone(),
                    rewound: false,
                };
                tx.send_replace(Some(Arc::new(Published {
                    version,
                    update,
                    public_update,
                })));
            }
            Ok((snapshot, ..)) => tracing::debug!(
                version = snapshot.version,
                "config version changed nothing data planes serve"
            ),
            Err(e) => tracing::error!(error = %e, "building a config snapshot failed"),
        }
        if versions.changed().await.is_err() {
            return;
        }
    }
}

/// What data planes need from `state`: every stage with the deployment it
/// serves (and its canary's), keys (hashes only), usage plans, domains.
pub fn config_snapshot(state: &State) -> ConfigSnapshot {
    let stages = state
        .stages()
        .filter_map(|stage| {
            let deployment = state.deployment(&stage.api, &stage.deployment_id)?;
            let canary_deployment = stage
                .canary
                .as_ref()
                .and_then(|canary| state.deployment(&stage.api, &canary.deployment_id))
                .cloned();
            Some(StageSnapshot {
                stage: Some(stage.clone()),
                deployment: Some(deployment.clone()),
                canary_deployment,
            })
        })
        .collect();
    ConfigSnapshot {
        version: state.config_version(),
        stages,
        api_keys: state.api_keys().cloned().collect(),
        usage_plans: state.usage_plans().cloned().collect(),
        domain_names: state.domain_names().cloned().collect(),
        published_at: Some(crate::clock::now()),
        cluster_id: state.cluster_id().to_owned(),
    }
}

/// `snapshot` without the stages of PRIVATE APIs (main or canary side), for
/// nodes that are not of the private endpoint class.
pub fn without_private_apis(snapshot: &ConfigSnapshot) -> ConfigSnapshot {
    use pylon_proto::config::v1::{Deployment, api::EndpointType};
    let private = |d: &Option<Deployment>| {
        d.as_ref()
            .and_then(|d| d.definition.as_ref())
            .is_some_and(|api| api.endpoint_type() == EndpointType::Private)
    };
    ConfigSnapshot {
        stages: snapshot
            .stages
            .iter()
            .filter(|s| !private(&s.deployment) && !private(&s.canary_deployment))
            .cloned()
            .collect(),
        ..snapshot.clone()
    }
}
