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
//! Delivery is at most once: a message published while the owner's
//! subscription is being re-established is lost, as a frame to a client
//! whose link just broke would be.

use crate::shared::redis::{Redis, RedisError};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How often an owner re-registers its connections, and how long an entry
/// outlives its owner.
const REFRESH: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(60);
/// Commands queued for one connection before callers are told it is busy.
pub const QUEUE: usize = 1024;

/// What `GET @connections/{id}` answers, and the registry holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
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

/// What a connection's task is asked to do.
#[derive(Debug)]
pub enum Command {
    Send(Bytes),
    Close(String),
}

/// A connection held by this node.
pub struct Local {
    pub info: ConnectionInfo,
    pub last_active: AtomicU64,
    pub commands: mpsc::Sender<Command>,
}

impl Local {
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
        });
        if hub.redis.is_some() {
            tokio::spawn(subscribe(Arc::downgrade(&hub)));
            tokio::spawn(refresh(Arc::downgrade(&hub)));
        }
        hub
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Local>>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let entry = Entry {
            node: self.node.clone(),
            info: local.snapshot(),
        };
        self.map().insert(id.to_owned(), local);
        if let Some(redis) = &self.redis
            && let Err(e) = put(redis, id, &entry).await
        {
            // (Redis's own breaker logs the outage once; this is per connection.)
            tracing::debug!(connection = id, error = %e, "cannot register the WebSocket connection in Redis; other nodes cannot reach it until the next refresh");
        }
    }

    /// Removes a connection that ended.
    pub async fn unregister(&self, id: &str) {
        let empty = {
            let mut map = self.map();
            map.remove(id);
            map.is_empty()
        };
        if empty {
            self.emptied.notify_waiters();
        }
        if let Some(redis) = &self.redis {
            let key = entry_key(id);
            if let Err(e) = redis
                .run(
                    |mut conn| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await },
                )
                .await
            {
                tracing::debug!(connection = id, error = %e, "cannot remove the connection from the registry; its TTL will");
            }
        }
    }

    /// Sends `data` to connection `id` of `api`/`stage`, wherever it is.
    pub async fn post(&self, api: &str, stage: &str, id: &str, data: Bytes) -> Result<(), HubError> {
        self.command(api, stage, id, Command::Send(data)).await
    }

    /// Disconnects connection `id` of `api`/`stage`, wherever it is.
    pub async fn delete(&self, api: &str, stage: &str, id: &str) -> Result<(), HubError> {
        self.command(
            api,
            stage,
            id,
            Command::Close("deleted through @connections".into()),
        )
        .await
    }

    /// What is known of connection `id` of `api`/`stage`.
    pub async fn info(&self, api: &str, stage: &str, id: &str) -> Result<ConnectionInfo, HubError> {
        if let Some(local) = self.find(id) {
            return belongs(&local.info, api, stage)
                .then(|| local.snapshot())
                .ok_or(HubError::Gone);
        }
        let entry = self.lookup(id).await?;
        belongs(&entry.info, api, stage)
            .then_some(entry.info)
            .ok_or(HubError::Gone)
    }

    async fn command(&self, api: &str, stage: &str, id: &str, command: Command) -> Result<(), HubError> {
        if let Some(local) = self.find(id) {
            if !belongs(&local.info, api, stage) {
                return Err(HubError::Gone);
            }
            return local.commands.try_send(command).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => HubError::Busy,
                mpsc::error::TrySendError::Closed(_) => HubError::Gone,
            });
        }
        let entry = self.lookup(id).await?;
        if !belongs(&entry.info, api, stage) {
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
            let key = entry_key(id);
            let _ = redis
                .run(
                    |mut conn| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await },
                )
                .await;
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
        serde_json::from_slice(&stored)
            .map_err(|e| HubError::Unavailable(format!("a registry entry does not parse: {e}")))
    }

    /// Asks the connections `gone` picks to close, with `reason`.
    pub fn close_where(&self, gone: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let locals: Vec<Arc<Local>> = self.map().values().filter(|l| gone(&l.info)).cloned().collect();
        for local in &locals {
            let _ = local.commands.try_send(Command::Close(reason.to_owned()));
        }
        locals.len()
    }

    /// Asks every connection of this node to close (graceful shutdown).
    pub fn close_all(&self, reason: &str) {
        let locals: Vec<Arc<Local>> = self.map().values().cloned().collect();
        for local in locals {
            let _ = local.commands.try_send(Command::Close(reason.to_owned()));
        }
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
        match self.find(&id) {
            Some(local) => {
                if local.commands.try_send(command).is_err() {
                    tracing::debug!(
                        connection = id,
                        "dropping a command for a connection that is busy or closing"
                    );
                }
            }
            None => tracing::debug!(connection = id, "a command for a connection that already ended"),
        }
    }
}

fn belongs(info: &ConnectionInfo, api: &str, stage: &str) -> bool {
    info.api == api && info.stage == stage
}

async fn put(redis: &Redis, id: &str, entry: &Entry) -> Result<(), RedisError> {
    let key = entry_key(id);
    let value = serde_json::to_vec(entry).unwrap_or_default();
    redis
        .run(|mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("PX")
                .arg(TTL.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
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

/// Keeps this node subscribed to its channel, re-subscribing after a
/// broken link.
async fn subscribe(hub: std::sync::Weak<Hub>) {
    let mut backoff = Duration::from_millis(50);
    let mut logged_down = false;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let Some(redis) = strong.redis.clone() else { return };
        let name = channel(&strong.node);
        drop(strong);
        let pubsub = match redis.pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&name).await {
                Ok(()) => Some(pubsub),
                Err(e) => {
                    if !logged_down {
                        tracing::warn!(error = %e, "cannot subscribe to this node's WebSocket channel; retrying");
                        logged_down = true;
                    }
                    None
                }
            },
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = %e, "no Redis connection for WebSocket commands; retrying");
                    logged_down = true;
                }
                None
            }
        };
        let Some(pubsub) = pubsub else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        tracing::info!(channel = %name, "subscribed to this node's WebSocket channel");
        backoff = Duration::from_millis(50);
        logged_down = false;
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Some(hub) = hub.upgrade() else { return };
            hub.deliver(message.get_payload_bytes());
        }
        tracing::warn!(channel = %name, "the WebSocket channel's subscription ended; subscribing again");
        if let Some(hub) = hub.upgrade() {
            // Entries may have expired while the link was down.
            hub.refresh_all().await;
        }
    }
}

impl Hub {
    /// Re-registers every connection of this node (refreshing the TTLs and
    /// lastActiveAt), pipelined.
    async fn refresh_all(&self) {
        let Some(redis) = &self.redis else { return };
        let entries: Vec<(String, Vec<u8>)> = self
            .map()
            .iter()
            .map(|(id, local)| {
                let entry = Entry {
                    node: self.node.clone(),
                    info: local.snapshot(),
                };
                (entry_key(id), serde_json::to_vec(&entry).unwrap_or_default())
            })
            .collect();
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for (key, value) in chunk {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .ignore();
            }
            if let Err(e) = redis
                .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await
            {
                tracing::warn!(error = %e, connections = entries.len(), "cannot refresh this node's WebSocket connections in Redis");
                return;
            }
        }
    }
}

async fn refresh(hub: std::sync::Weak<Hub>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        hub.refresh_all().await;
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

    #[tokio::test]
    async fn without_redis_a_connection_is_reached_on_its_own_node_only() {
        let hub = Hub::start("n1", None);
        let (tx, mut rx) = mpsc::channel(4);
        let info = ConnectionInfo {
            api: "chat".into(),
            stage: "prod".into(),
            connected_at: 1,
            last_active_at: 1,
            source_ip: "127.0.0.1".into(),
            user_agent: String::new(),
            api_key_id: None,
            principal_id: None,
        };
        let local = Arc::new(Local {
            info,
            last_active: AtomicU64::new(5),
            commands: tx,
        });
        hub.register("c1", local).await;
        assert!(
            hub.post("chat", "prod", "c1", Bytes::from_static(b"hi"))
                .await
                .is_ok()
        );
        assert!(matches!(rx.recv().await, Some(Command::Send(b)) if &b[..] == b"hi"));
        assert_eq!(
            hub.info("chat", "prod", "c1")
                .await
                .map(|i| i.last_active_at)
                .ok(),
            Some(5)
        );
        assert!(
            matches!(
                hub.post("chat", "dev", "c1", Bytes::new()).await,
                Err(HubError::Gone)
            ),
            "another stage's id"
        );
        assert!(matches!(
            hub.delete("chat", "prod", "nope").await,
            Err(HubError::Gone)
        ));
        hub.unregister("c1").await;
        assert!(hub.wait_empty(Duration::from_millis(10)).await);
        assert!(matches!(
            hub.info("chat", "prod", "c1").await,
            Err(HubError::Gone)
        ));
    }
}
