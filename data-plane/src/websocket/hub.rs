//! Where WebSocket connections live, so `@connections` calls reach them from
//! any node.
//!
//! Each node keeps its own connections in a map. With Redis, each one is
//! also registered under `pylon:{ws:ID}` — its owner node and what `GET
//! @connections` shows — with a TTL the owner refreshes, and every node
//! subscribes to its own channel `pylon:ws:node:NODE`. A call for a
//! connection held elsewhere reads the registry and publishes the command
//! to the owner's channel. A connection that is in no registry is gone
//! (410); so is one whose owner no longer listens (PUBLISH reached nobody;
//! on a Redis Cluster, where PUBLISH counts only the receiving shard's
//! subscribers, the registry's TTL tells instead).
//!
//! A connection that ends leaves the registry at once (before its
//! `$disconnect` runs), so calls for it answer 410 from every node; it
//! leaves this node's map after `$disconnect`, so a draining node waits for
//! that call.
//!
//! Delivery is at most once: a message published while the owner's
//! subscription is being re-established is lost, as a frame to a client
//! whose link just broke would be. The subscription is pinged every few
//! seconds, so a link that died silently is noticed and re-established.

use crate::shared::redis::{Redis, RedisError};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How often an owner re-registers its connections, and how long an entry
/// outlives its owner.
const REFRESH: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(60);
/// How often the subscription is pinged.
const PING: Duration = Duration::from_secs(5);
/// Time allowed for background round trips (refreshes, pings, removals).
const UPKEEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages queued for one connection before callers are told it is busy…
pub const QUEUE: usize = 1024;

/// …and bytes: four of the stage's largest messages, at least 1 MiB.
pub fn queue_bytes(max_message: usize) -> usize {
    max_message.saturating_mul(4).max(1 << 20)
}

/// What `GET @connections` answers, and the registry holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    /// The cluster whose config accepted the connection: only callers
    /// served by that cluster's config reach it (clusters may share one
    /// Redis). Never shown by `GET @connections`.
    #[serde(default)]
    pub cluster: String,
    pub api: String,
    pub stage: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
    pub last_active_at: u64,
    pub source_ip: String,
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

/// Whose connections a caller may reach: a stage of an API, in a cluster.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub cluster: &'a str,
    pub api: &'a str,
    pub stage: &'a str,
}

/// What is asked of a connection, as it travels between nodes.
#[derive(Debug)]
enum Command {
    Send(Bytes),
    Close(String),
}

/// A connection held by this node: what the hub sees of it.
pub struct Local {
    pub info: ConnectionInfo,
    pub last_active: AtomicU64,
    /// Messages for the client; closed when the connection ends.
    outbox: mpsc::Sender<Bytes>,
    /// Bytes waiting in `outbox`, and how many may.
    queued: AtomicUsize,
    max_queued: usize,
    /// A request to close (DELETE, shutdown, stage deleted), apart from the
    /// queue so that a client that reads nothing can still be closed.
    close: Notify,
    close_reason: Mutex<Option<String>>,
}

impl Local {
    /// A connection's shared half, and its task's end of the queue.
    pub fn new(info: ConnectionInfo, max_message: usize) -> (Arc<Local>, mpsc::Receiver<Bytes>) {
        let (outbox, inbox) = mpsc::channel(QUEUE);
        let local = Arc::new(Local {
            last_active: AtomicU64::new(info.last_active_at),
            info,
            outbox,
            queued: AtomicUsize::new(0),
            max_queued: queue_bytes(max_message),
            close: Notify::new(),
            close_reason: Mutex::new(None),
        });
        (local, inbox)
    }

    fn snapshot(&self) -> ConnectionInfo {
        ConnectionInfo {
            last_active_at: self.last_active.load(Ordering::Relaxed),
            ..self.info.clone()
        }
    }

    /// Marks the connection active now.
    pub fn touch(&self) {
        self.last_active
            .store(crate::shared::memory::unix_now_ms(), Ordering::Relaxed);
    }

    /// Queues a message for the client.
    fn enqueue(&self, data: Bytes) -> Result<(), HubError> {
        if self.outbox.is_closed() {
            return Err(HubError::Gone);
        }
        let size = data.len();
        if self.queued.fetch_add(size, Ordering::AcqRel) + size > self.max_queued {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(HubError::Busy);
        }
        self.outbox.try_send(data).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => HubError::Busy,
                mpsc::error::TrySendError::Closed(_) => HubError::Gone,
            }
        })
    }

    /// The connection's task took a message of `size` bytes off the queue.
    pub fn dequeued(&self, size: usize) {
        self.queued.fetch_sub(size, Ordering::AcqRel);
    }

    /// Asks the connection to close (the first reason wins).
    pub fn request_close(&self, reason: &str) {
        let mut slot = self.close_reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason.to_owned());
        }
        drop(slot);
        self.close.notify_one();
    }

    /// Resolves once a close was requested; the reason.
    pub async fn close_requested(&self) -> String {
        loop {
            let requested = self
                .close_reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(reason) = requested {
                return reason;
            }
            self.close.notified().await;
        }
    }

    /// The connection is ending: nothing more reaches it.
    pub fn is_ending(&self) -> bool {
        self.outbox.is_closed()
    }
}

/// Why an `@connections` call did not reach its connection.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the connection is gone")]
    Gone,
    #[error("the connection is not reading its messages")]
    Busy,
    #[error("the connection registry is unavailable: {0}")]
    Unavailable(String),
}

impl From<RedisError> for HubError {
    fn from(e: RedisError) -> Self {
        HubError::Unavailable(e.to_string())
    }
}

/// The registry entry: the owner and the connection.
#[derive(Serialize, Deserialize)]
struct Entry {
    node: String,
    #[serde(flatten)]
    info: ConnectionInfo,
}

pub struct Hub {
    /// This process's name among the nodes (its channel's suffix).
    node: String,
    local: Mutex<HashMap<String, Arc<Local>>>,
    redis: Option<Arc<Redis>>,
    emptied: Notify,
    /// The node is shutting down: connections registering now are asked to
    /// close at once.
    closing: AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn entry_key(id: &str) -> String {
    format!("pylon:{{ws:{id}}}")
}

fn channel(node: &str) -> String {
    format!("pylon:ws:node:{node}")
}

impl Hub {
    /// A hub for this node; with Redis, starts the subscription and the
    /// registry refresher (inside a Tokio runtime).
    pub fn start(node_id: &str, redis: Option<Arc<Redis>>) -> Arc<Hub> {
        // Unique per process, even if two nodes were given one id.
        let suffix: u32 = rand::random();
        let hub = Arc::new(Hub {
            node: format!("{node_id}-{suffix:08x}"),
            local: Mutex::new(HashMap::new()),
            redis,
            emptied: Notify::new(),
            closing: AtomicBool::new(false),
        });
        if hub.redis.is_some() {
            tokio::spawn(subscribe(Arc::downgrade(&hub)));
            tokio::spawn(refresh(Arc::downgrade(&hub)));
        }
        hub
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Local>>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection's registry entry, encoded.
    fn entry(&self, local: &Local) -> Vec<u8> {
        let entry = Entry {
            node: self.node.clone(),
            info: local.snapshot(),
        };
        serde_json::to_vec(&entry).unwrap_or_default()
    }

    fn find(&self, id: &str) -> Option<Arc<Local>> {
        self.map().get(id).cloned()
    }

    /// Connections this node holds.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a connection of this node (and registers it in Redis).
    pub async fn register(&self, id: &str, local: Arc<Local>) {
        let entry = self.entry(&local);
        self.map().insert(id.to_owned(), local.clone());
        if self.closing.load(Ordering::Acquire) {
            local.request_close("server shutting down");
            return;
        }
        let set = set_entry(id, &entry, false);
        if let Some(redis) = &self.redis
            && let Err(e) = redis
                .run(|mut conn| async move { set.query_async::<()>(&mut conn).await })
                .await
        {
            // (Redis's own breaker logs an outage once; this is per connection.)
            tracing::debug!(connection = id, error = %e, "cannot register the WebSocket connection in Redis; other nodes cannot reach it until the next refresh");
        }
    }

    /// A connection is ending: other nodes stop finding it.
    pub async fn forget(&self, id: &str) {
        let Some(redis) = &self.redis else { return };
        let key = entry_key(id);
        let removed = redis
            .run_upkeep(UPKEEP_TIMEOUT, |mut conn| async move {
                redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await
            })
            .await;
        if let Err(e) = removed {
            tracing::debug!(connection = id, error = %e, "cannot remove the connection from the registry; its TTL will");
        }
    }

    /// A connection ended (after its `$disconnect`): this node lets it go.
    pub fn unregister(&self, id: &str) {
        let empty = {
            let mut map = self.map();
            map.remove(id);
            map.is_empty()
        };
        if empty {
            self.emptied.notify_waiters();
        }
    }

    /// Sends `data` to connection `id` of `scope`, wherever it is.
    ///
    /// # Errors
    /// [`HubError::Gone`] for a connection that is not `scope`'s (or no
    /// longer open), [`HubError::Busy`] when its queue is full, and
    /// [`HubError::Unavailable`] when Redis cannot be asked.
    pub async fn post(&self, scope: Scope<'_>, id: &str, data: Bytes) -> Result<(), HubError> {
        self.command(scope, id, Command::Send(data)).await
    }

    /// Disconnects connection `id` of `scope`, wherever it is.
    ///
    /// # Errors
    /// As [`Hub::post`].
    pub async fn delete(&self, scope: Scope<'_>, id: &str) -> Result<(), HubError> {
        let close = Command::Close("deleted through @connections".into());
        self.command(scope, id, close).await
    }

    /// What is known of connection `id` of `scope`.
    ///
    /// # Errors
    /// As [`Hub::post`].
    pub async fn info(&self, scope: Scope<'_>, id: &str) -> Result<ConnectionInfo, HubError> {
        if let Some(local) = self.find(id) {
            let live = belongs(&local.info, scope) && !local.is_ending();
            return live.then(|| local.snapshot()).ok_or(HubError::Gone);
        }
        let entry = self.lookup(id).await?;
        belongs(&entry.info, scope)
            .then_some(entry.info)
            .ok_or(HubError::Gone)
    }

    async fn command(&self, scope: Scope<'_>, id: &str, command: Command) -> Result<(), HubError> {
        if let Some(local) = self.find(id) {
            if !belongs(&local.info, scope) || local.is_ending() {
                return Err(HubError::Gone);
            }
            return match command {
                Command::Send(data) => local.enqueue(data),
                Command::Close(reason) => {
                    local.request_close(&reason);
                    Ok(())
                }
            };
        }
        let entry = self.lookup(id).await?;
        if !belongs(&entry.info, scope) {
            return Err(HubError::Gone);
        }
        let Some(redis) = &self.redis else {
            return Err(HubError::Gone);
        };
        let (channel, message) = (channel(&entry.node), encode(id, &command));
        let receivers: i64 = redis
            .run(|mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&message)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if receivers == 0 && !redis.is_cluster() {
            // Its owner is gone without unregistering (crashed, killed).
            self.forget(id).await;
            return Err(HubError::Gone);
        }
        Ok(())
    }

    async fn lookup(&self, id: &str) -> Result<Entry, HubError> {
        let Some(redis) = &self.redis else {
            return Err(HubError::Gone);
        };
        let key = entry_key(id);
        let stored: Option<Vec<u8>> = redis
            .run(|mut conn| async move { redis::cmd("GET").arg(&key).query_async(&mut conn).await })
            .await?;
        let stored = stored.ok_or(HubError::Gone)?;
        let entry: Entry = serde_json::from_slice(&stored)
            .map_err(|e| HubError::Unavailable(format!("a registry entry does not parse: {e}")))?;
        if entry.node == self.node {
            // Ours, yet not in the map: left over by a connection that ended.
            self.forget(id).await;
            return Err(HubError::Gone);
        }
        Ok(entry)
    }

    /// Asks the connections `gone` picks to close, with `reason`; how many.
    pub fn close_where(&self, gone: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let locals: Vec<Arc<Local>> = self
            .map()
            .values()
            .filter(|l| !l.is_ending() && gone(&l.info))
            .cloned()
            .collect();
        for local in &locals {
            local.request_close(reason);
        }
        locals.len()
    }

    /// Asks every connection of this node to close, and those that register
    /// from now on (graceful shutdown).
    pub fn close_all(&self, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.close_where(|_| true, reason);
    }

    /// Waits until this node holds no connection, at most `timeout`;
    /// whether it got there.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.is_empty();
            }
        }
    }

    fn deliver(&self, payload: &[u8]) {
        let Some((id, command)) = decode(payload) else {
            tracing::warn!("ignoring a malformed WebSocket command from Redis");
            return;
        };
        match (self.find(&id), command) {
            (Some(local), Command::Send(data)) => {
                if let Err(e) = local.enqueue(data) {
                    tracing::debug!(connection = id, error = %e, "dropping a message for a connection");
                }
            }
            (Some(local), Command::Close(reason)) => local.request_close(&reason),
            (None, _) => tracing::debug!(connection = id, "a command for a connection that already ended"),
        }
    }

    /// Refreshes the registry entries of this node's live connections (TTL
    /// and lastActiveAt), pipelined. Periodic refreshes only update entries
    /// that exist (`XX`), so one that races a connection's end cannot bring
    /// its entry back; after the subscription was lost (`recreate`) entries
    /// are written again, then those of connections that ended meanwhile
    /// are removed.
    async fn refresh_all(&self, recreate: bool) {
        let Some(redis) = &self.redis else { return };
        let entries: Vec<(String, Vec<u8>)> = self
            .map()
            .iter()
            .filter(|(_, local)| !local.is_ending())
            .map(|(id, local)| (id.clone(), self.entry(local)))
            .collect();
        let mut failed = 0;
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for (id, value) in chunk {
                pipe.add_command(set_entry(id, value, !recreate)).ignore();
            }
            let written = redis
                .run_upkeep(UPKEEP_TIMEOUT, |mut conn| async move {
                    pipe.query_async::<()>(&mut conn).await
                })
                .await;
            if let Err(e) = written {
                failed += chunk.len();
                tracing::debug!(error = %e, "a registry refresh failed");
            }
        }
        if failed > 0 {
            tracing::warn!(
                connections = failed,
                of = entries.len(),
                "cannot refresh this node's WebSocket connections in Redis; other nodes may not reach them"
            );
        }
        if recreate {
            for (id, _) in &entries {
                if self.find(id).is_none_or(|l| l.is_ending()) {
                    self.forget(id).await;
                }
            }
        }
    }
}

fn belongs(info: &ConnectionInfo, scope: Scope<'_>) -> bool {
    info.cluster == scope.cluster && info.api == scope.api && info.stage == scope.stage
}

/// The `SET` of a registry entry with its TTL; `existing`: only if the
/// entry is still there (`XX`).
fn set_entry(id: &str, value: &[u8], existing: bool) -> redis::Cmd {
    let mut set = redis::cmd("SET");
    set.arg(entry_key(id))
        .arg(value)
        .arg("PX")
        .arg(TTL.as_millis() as u64);
    if existing {
        set.arg("XX");
    }
    set
}

/// `S` or `C`, the id's length (one byte), the id, then the message or the
/// close reason.
fn encode(id: &str, command: &Command) -> Vec<u8> {
    let (op, body): (u8, &[u8]) = match command {
        Command::Send(data) => (b'S', data),
        Command::Close(reason) => (b'C', reason.as_bytes()),
    };
    let mut out = Vec::with_capacity(2 + id.len() + body.len());
    out.push(op);
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&id.as_bytes()[..id.len().min(255)]);
    out.extend_from_slice(body);
    out
}

fn decode(payload: &[u8]) -> Option<(String, Command)> {
    let (&op, rest) = payload.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let id = std::str::from_utf8(rest.get(..usize::from(len))?)
        .ok()?
        .to_owned();
    let body = &rest[usize::from(len)..];
    let command = match op {
        b'S' => Command::Send(Bytes::copy_from_slice(body)),
        b'C' => Command::Close(String::from_utf8_lossy(body).into_owned()),
        _ => return None,
    };
    Some((id, command))
}

/// Keeps this node subscribed to its channel: re-subscribes after a broken
/// link, and pings the subscription so a link that died silently is
/// noticed too.
async fn subscribe(hub: std::sync::Weak<Hub>) {
    let mut backoff = Duration::from_millis(50);
    let mut logged_down = false;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let Some(redis) = strong.redis.clone() else { return };
        let name = channel(&strong.node);
        drop(strong);
        let subscribed = match redis.pubsub().await {
            Ok(mut pubsub) => pubsub.subscribe(&name).await.map(|()| pubsub),
            Err(e) => Err(e),
        };
        let pubsub = match subscribed {
            Ok(pubsub) => pubsub,
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = %e, "cannot subscribe to this node's WebSocket channel; retrying");
                    logged_down = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::info!(channel = %name, "subscribed to this node's WebSocket channel");
        backoff = Duration::from_millis(50);
        logged_down = false;
        if let Some(hub) = hub.upgrade() {
            // Entries may have expired while there was no subscription.
            hub.refresh_all(true).await;
        }
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    let Some(hub) = hub.upgrade() else { return };
                    hub.deliver(message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(UPKEEP_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!(channel = %name, "the WebSocket channel's subscription ended; subscribing again");
    }
}

async fn refresh(hub: std::sync::Weak<Hub>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.refresh_all(false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_their_encoding() {
        let encoded = encode("abc", &Command::Send(Bytes::from_static(b"{\"x\":1}")));
        match decode(&encoded) {
            Some((id, Command::Send(data))) => {
                assert_eq!(id, "abc");
                assert_eq!(&data[..], b"{\"x\":1}");
            }
            other => panic!("decoded {other:?}"),
        }
        match decode(&encode("id", &Command::Close("bye".into()))) {
            Some((id, Command::Close(reason))) => assert_eq!((id.as_str(), reason.as_str()), ("id", "bye")),
            other => panic!("decoded {other:?}"),
        }
        assert!(decode(b"S\x09short").is_none(), "a length beyond the payload");
        assert!(decode(b"X\x00").is_none(), "an unknown command");
    }

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            cluster: "c0ffee".into(),
            api: "chat".into(),
            stage: "prod".into(),
            connected_at: 1,
            last_active_at: 5,
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
            api_key_id: None,
            principal_id: None,
        }
    }

    const PROD: Scope<'static> = Scope {
        cluster: "c0ffee",
        api: "chat",
        stage: "prod",
    };

    #[tokio::test]
    async fn without_redis_a_connection_is_reached_on_its_own_node_only() {
        let hub = Hub::start("n1", None);
        let (local, mut inbox) = Local::new(info(), 1024);
        hub.register("c1", local.clone()).await;
        assert!(hub.post(PROD, "c1", Bytes::from_static(b"hi")).await.is_ok());
        assert!(matches!(inbox.recv().await, Some(b) if &b[..] == b"hi"));
        local.dequeued(2);
        assert_eq!(hub.info(PROD, "c1").await.map(|i| i.last_active_at).ok(), Some(5));
        assert!(
            matches!(
                hub.post(Scope { stage: "dev", ..PROD }, "c1", Bytes::new()).await,
                Err(HubError::Gone)
            ),
            "another stage's id"
        );
        assert!(
            matches!(
                hub.post(
                    Scope {
                        cluster: "other",
                        ..PROD
                    },
                    "c1",
                    Bytes::new()
                )
                .await,
                Err(HubError::Gone)
            ),
            "another cluster's stage of the same name"
        );
        // At most 1 MiB waits for a client that does not read.
        let big = Bytes::from(vec![b'x'; 600 << 10]);
        assert!(hub.post(PROD, "c1", big.clone()).await.is_ok());
        assert!(matches!(hub.post(PROD, "c1", big).await, Err(HubError::Busy)));
        // A close request does not queue behind the messages.
        assert!(hub.delete(PROD, "c1").await.is_ok());
        assert_eq!(local.close_requested().await, "deleted through @connections");
        assert!(matches!(hub.delete(PROD, "nope").await, Err(HubError::Gone)));
        inbox.close();
        assert!(
            matches!(hub.info(PROD, "c1").await, Err(HubError::Gone)),
            "an ending connection"
        );
        hub.unregister("c1");
        assert!(hub.wait_empty(Duration::from_millis(10)).await);
        // A node that is shutting down closes connections that register late.
        hub.close_all("server shutting down");
        let (late, _inbox) = Local::new(info(), 1024);
        hub.register("c2", late.clone()).await;
        assert_eq!(late.close_requested().await, "server shutting down");
    }
}
