//! Raft messages between control-plane nodes, over tonic.
//!
//! Outgoing: one tokio task per peer drains that peer's queue into batches and
//! sends each batch as one unary `Send` call; a failed call reports the peer
//! unreachable and the batch is dropped (Raft retransmits). Incoming: the
//! `RaftTransport` service hands each message to the Raft thread.

use super::node::{NodeMsg, Shared};
use protobuf::Message as _;
use pylon_proto::raft::v1::raft_transport_client::RaftTransportClient;
use pylon_proto::raft::v1::raft_transport_server::RaftTransport;
use pylon_proto::raft::v1::{MessageBatch, NodeStatus, SendAck, StatusRequest};
use raft::eraftpb::{Message, MessageType};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

const QUEUE_DEPTH: usize = 4096;
const MAX_BATCH: usize = 256;
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Where peers are and how to reach them.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    own_address: String,
    /// The node's credentials: it presents the first peer credential,
    /// read at every call so that a reload (SIGHUP) rotates it.
    credentials: crate::access::SharedCredentials,
    runtime: tokio::runtime::Handle,
    addresses: RwLock<BTreeMap<u64, String>>,
    queues: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    node: OnceLock<Sender<NodeMsg>>,
    /// Set when peers serve TLS: how to verify them.
    tls: Option<ClientTlsConfig>,
}

impl Transport {
    pub fn new(
        id: u64,
        own_address: String,
        credentials: crate::access::SharedCredentials,
        tls: Option<ClientTlsConfig>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Transport {
            inner: Arc::new(Inner {
                id,
                own_address,
                credentials,
                tls,
                runtime,
                addresses: RwLock::new(BTreeMap::new()),
                queues: Mutex::new(HashMap::new()),
                node: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn attach(&self, node: Sender<NodeMsg>) {
        let _ = self.inner.node.set(node);
    }

    fn report(&self, msg: NodeMsg) {
        if let Some(node) = self.inner.node.get() {
            let _ = node.send(msg);
        }
    }

    pub fn set_address(&self, id: u64, address: String) {
        if id == self.inner.id {
            return;
        }
        let changed = match self.inner.addresses.write() {
            Ok(mut addresses) => addresses
                .insert(id, address.clone())
                .is_some_and(|old| old != address),
            Err(_) => false,
        };
        if changed {
            // Reconnect to the new address on the next message.
            if let Ok(mut queues) = self.inner.queues.lock() {
                queues.remove(&id);
            }
        }
    }

    /// Takes the address a peer says it has, unless this node already knows
    /// one for it (from `--peer`, a membership change or its own storage):
    /// what a message claims never redirects traffic, and a link configured
    /// through something in between (a proxy, a NAT) stays that way.
    pub fn learn_address(&self, id: u64, address: String) {
        if id == self.inner.id {
            return;
        }
        if let Ok(mut addresses) = self.inner.addresses.write() {
            addresses.entry(id).or_insert(address);
        }
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut addresses) = self.inner.addresses.write() {
            addresses.remove(&id);
        }
        if let Ok(mut queues) = self.inner.queues.lock() {
            queues.remove(&id);
        }
    }

    pub fn addresses(&self) -> BTreeMap<u64, String> {
        let mut all = self.inner.addresses.read().map(|a| a.clone()).unwrap_or_default();
        all.insert(self.inner.id, self.inner.own_address.clone());
        all
    }

    fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|e| e.to_string())?;
        match &self.inner.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| e.to_string()),
            None => Ok(endpoint),
        }
    }

    /// `message` as a request carrying this node's peer credential, if any
    /// (with mutual TLS the node's certificate shows who it is).
    pub fn authorized<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = self.inner.credentials.load().token_for(crate::access::Role::Peer) {
            token.attach(&mut request);
        }
        request
    }

    /// A channel for one quick question to a peer's Raft port (1 s to
    /// answer), for any service served there; send each request through
    /// [`Transport::authorized`].
    ///
    /// # Errors
    /// The address or the connection, as text.
    pub async fn peer_channel(&self, address: &str) -> Result<Channel, String> {
        let endpoint = self
            .endpoint(address)?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        endpoint.connect().await.map_err(|e| e.to_string())
    }

    async fn ask(&self, address: &str) -> Result<RaftTransportClient<Channel>, String> {
        Ok(RaftTransportClient::new(self.peer_channel(address).await?))
    }

    /// Asks one peer for its own Raft status (for the cluster status call).
    pub async fn peer_status(&self, address: &str) -> Result<NodeStatus, String> {
        self.ask(address)
            .await?
            .status(self.authorized(StatusRequest {}))
            .await
            .map(Response::into_inner)
            .map_err(|status| status.message().to_owned())
    }

    /// Queues messages for their peers; never blocks.
    pub(crate) fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let Some(queue) = self.queue(to) else {
                tracing::debug!(to, "no address for peer; message dropped");
                self.report(NodeMsg::Unreachable(to));
                continue;
            };
            if queue.try_send(message).is_err() {
                self.report(NodeMsg::Unreachable(to));
            }
        }
    }

    fn queue(&self, to: u64) -> Option<mpsc::Sender<Message>> {
        let mut queues = self.inner.queues.lock().ok()?;
        if let Some(queue) = queues.get(&to)
            && !queue.is_closed()
        {
            return Some(queue.clone());
        }
        let address = self.inner.addresses.read().ok()?.get(&to)?.clone();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        // Called from the Raft thread: the lazy channel needs the runtime's context.
        let _runtime = self.inner.runtime.enter();
        let endpoint = match self.endpoint(&address) {
            Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true),
            Err(error) => {
                tracing::warn!(to, %address, %error, "cannot reach peer");
                return None;
            }
        };
        let channel = endpoint.connect_lazy();
        let peer = Peer {
            transport: self.clone(),
            to,
            client: RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        };
        self.inner.runtime.spawn(peer.run(rx));
        queues.insert(to, tx.clone());
        Some(tx)
    }
}

struct Peer {
    transport: Transport,
    to: u64,
    client: RaftTransportClient<Channel>,
}

impl Peer {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut failing = false;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let snapshots: Vec<u64> = batch
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            let ok = match self.deliver(&batch).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(to = self.to, "peer reachable again");
                        failing = false;
                    }
                    true
                }
                Err(error) => {
                    // Once per outage, loud enough to see a misconfiguration.
                    if !failing {
                        tracing::warn!(to = self.to, %error, "cannot send raft messages to peer");
                        failing = true;
                    }
                    false
                }
            };
            for to in snapshots {
                self.transport.report(NodeMsg::SnapshotSent { to, ok });
            }
            if !ok {
                self.transport.report(NodeMsg::Unreachable(self.to));
                // Let the peer come back before hammering it again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn deliver(&mut self, batch: &[Message]) -> Result<(), String> {
        let mut messages = Vec::with_capacity(batch.len());
        for message in batch {
            match message.write_to_bytes() {
                Ok(bytes) => messages.push(bytes),
                Err(e) => tracing::error!(error = %e, "could not encode a raft message"),
            }
        }
        let inner = &self.transport.inner;
        let mut request = self.transport.authorized(MessageBatch {
            from_id: inner.id,
            from_address: inner.own_address.clone(),
            messages,
        });
        request.set_timeout(SEND_TIMEOUT);
        match tokio::time::timeout(SEND_TIMEOUT, self.client.send(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status.message().to_owned()),
            Err(_) => Err(format!("no answer within {SEND_TIMEOUT:?}")),
        }
    }
}

/// The `RaftTransport` gRPC service.
pub struct RaftService {
    pub transport: Transport,
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(&self, request: Request<MessageBatch>) -> Result<Response<SendAck>, Status> {
        let batch = request.into_inner();
        if batch.from_id != 0 && !batch.from_address.is_empty() {
            self.transport.learn_address(batch.from_id, batch.from_address);
        }
        for bytes in batch.messages {
            let message = Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            self.transport.report(NodeMsg::Raft(Box::new(message)));
        }
        Ok(Response::new(SendAck {}))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.shared.status()))
    }
}
