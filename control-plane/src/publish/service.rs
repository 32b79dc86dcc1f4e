//! The `ConfigPublisher` gRPC service: one stream per data-plane node.
//!
//! A stream starts with the node's Hello. The current version is sent only if
//! it is newer than what the node holds, then each newer version as it is
//! published; the versions sent on a stream only ever increase — except when
//! the node serves another cluster's config (it gets this cluster's current
//! one), or a version of this cluster newer than this cluster has once the
//! leader confirms this node is current (the cluster went back: it gets the
//! current one marked `rewound`). What the node does then is its policy.
//! ACK, NACK and heartbeats go to the [`Registry`](super::Registry).

use super::Publisher;
use pylon_proto::publish::v1::config_publisher_server::ConfigPublisher;
use pylon_proto::publish::v1::{ConfigUpdate, Hello, SubscribeRequest, subscribe_request::Kind};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a node that meets a data plane ahead of it waits for the
/// leader to confirm this node is current, and how often it asks.
const REWIND_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
const REWIND_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `published` names another cluster than the one a node serves
/// (unnamed ones compare with nothing).
fn other_cluster(serves: &str, published: &str) -> bool {
    !serves.is_empty() && !published.is_empty() && serves != published
}

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct PublishService {
    publisher: Publisher,
    /// Turns true when the node shuts down: streams end so data planes fail
    /// over at once (and the server's graceful shutdown is not held up).
    stopping: watch::Receiver<bool>,
}

impl PublishService {
    pub fn new(publisher: Publisher, stopping: watch::Receiver<bool>) -> Self {
        PublishService { publisher, stopping }
    }
}

fn check_hello(hello: &Hello) -> Result<(), Status> {
    let ok_id = !hello.node_id.is_empty()
        && hello.node_id.len() <= 128
        && hello
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok_id {
        return Err(Status::invalid_argument(
            "hello.node_id: required, 1-128 chars of A-Z a-z 0-9 - _ . :",
        ));
    }
    if hello.labels.len() > 64 {
        return Err(Status::invalid_argument("hello.labels: at most 64 labels"));
    }
    for (key, value) in &hello.labels {
        if key.is_empty() || key.len() > 63 || value.len() > 253 {
            return Err(Status::invalid_argument(format!(
                "hello.labels[{key:?}]: keys are 1-63 chars, values at most 253"
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ConfigPublisher for PublishService {
    type SubscribeStream = ReceiverStream<Result<ConfigUpdate, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let address = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let mut stopping = self.stopping.clone();
        let first = tokio::select! {
            first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => first
                .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))??,
            Ok(()) = stopping.changed() => return Err(Status::unavailable("control-plane node shutting down")),
        };
        let hello = match first {
            Some(SubscribeRequest {
                kind: Some(Kind::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a subscription must be a Hello",
                ));
            }
        };
        check_hello(&hello)?;
        // A node waiting to be joined (or one whose cluster has had no
        // leader yet) has no config to give: the data plane is sent on to
        // another node instead of holding a subscription that stays silent.
        if self.publisher.cluster_id().is_empty() {
            return Err(Status::unavailable(
                "this control-plane node is not part of a cluster yet (waiting to be joined, or no leader has named the cluster): try another",
            ));
        }
        let generation = self.publisher.registry.connect(&hello, address.clone());
        tracing::info!(
            node = %hello.node_id,
            %address,
            version = hello.version,
            labels = ?hello.labels,
            "data plane subscribed"
        );
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(stream(
            self.publisher.clone(),
            hello,
            generation,
            inbound,
            tx,
            self.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn stream(
    publisher: Publisher,
    hello: Hello,
    generation: u64,
    mut inbound: Streaming<SubscribeRequest>,
    tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let registry = publisher.registry.clone();
    let node = hello.node_id.clone();
    let private = pylon_common::snapshot::serves_private(&hello.labels);
    let mut current = publisher.subscribe();
    // What the node serves: a version, of a cluster.
    let (mut sent, mut sent_cluster) = (hello.version, hello.cluster_id.clone());
    // The node may be ahead of this node's state: either this node lags (it
    // catches up, and the usual path sends newer versions) or the cluster
    // went back (only a leader-confirmed read can tell).
    let mut ahead = hello.version > 0;
    let mut rewound = false;
    let mut recheck = tokio::time::interval(REWIND_CHECK_EVERY);
    loop {
        let latest = current.borrow_and_update().clone();
        if let Some(published) = latest
            && (published.version > sent
                || rewound
                || other_cluster(&sent_cluster, &published.update.cluster_id))
        {
            if other_cluster(&sent_cluster, &published.update.cluster_id) {
                tracing::warn!(
                    node = %node,
                    serves = %sent_cluster,
                    cluster = %published.update.cluster_id,
                    "data plane serves another cluster's config; sending this cluster's"
                );
            }
            let mut update = published.update_for(private).clone();
            update.rewound = std::mem::take(&mut rewound);
            sent_cluster = update.cluster_id.clone();
            ahead = false;
            // A slow reader must not keep the stream from seeing shutdown.
            let sent_ok = tokio::select! {
                sent = tx.send(Ok(update)) => sent.is_ok(),
                Ok(()) = stopping.changed() => false,
            };
            if !sent_ok {
                break;
            }
            sent = published.version;
        }
        tokio::select! {
            changed = current.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            message = inbound.message() => match message {
                Ok(Some(SubscribeRequest { kind: Some(kind) })) => match kind {
                    Kind::Ack(ack) => registry.ack(&node, &ack),
                    Kind::Nack(nack) => registry.nack(&node, nack.version, &nack.error),
                    Kind::Heartbeat(beat) => {
                        registry.heartbeat(&node, beat.version);
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        let traffic = publisher.existing_stages(beat.traffic);
                        registry.traffic.record(&traffic, now);
                    }
                    Kind::Hello(_) => {
                        let _ = tx.send(Err(Status::invalid_argument("Hello is only the first message"))).await;
                        break;
                    }
                },
                Ok(Some(SubscribeRequest { kind: None })) => {}
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(node = %node, error = %status, "subscription stream failed");
                    break;
                }
            },
            () = tx.closed() => break,
            Ok(()) = stopping.changed() => {
                let _ = tx.send(Err(Status::unavailable("control-plane node shutting down"))).await;
                break;
            }
            _ = recheck.tick(), if ahead => {
                let cluster = publisher.cluster_id();
                if sent <= publisher.current_version() || cluster.is_empty() || cluster != sent_cluster {
                    // Caught up, or not comparable: the usual path decides.
                    ahead = sent > publisher.current_version();
                } else if publisher.confirmed_current(REWIND_CHECK).await && sent > publisher.current_version() {
                    tracing::warn!(
                        node = %node,
                        serves = sent,
                        cluster_version = publisher.current_version(),
                        "data plane serves a version this cluster does not have: the cluster went back (restored?)"
                    );
                    rewound = true;
                    ahead = false;
                }
            }
        }
    }
    registry.disconnect(&node, generation);
    tracing::info!(node = %node, "data plane unsubscribed");
}
