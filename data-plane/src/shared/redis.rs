//! The link to Redis: a single server, the master a Sentinel group names, or
//! a Redis Cluster, with AUTH/ACL credentials and TLS taken from the URL.
//! Every call is bounded by a short timeout and guarded by a circuit
//! breaker, so no request waits on an unreachable Redis longer than the
//! timeout, and a dead one is not even asked until the breaker half-opens.
//! A background task (re)connects; nothing on the request path dials.
//!
//! URLs:
//! - `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS
//! - `redis-sentinel://[user:password@]host:port[,host:port…]/master-name[?tls=true]`
//! - `redis-cluster://[user:password@]host:port[,host:port…][?tls=true]`

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Consecutive failures that open the breaker.
const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before letting one through.
const BREAKER_OPEN: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub url: String,
    /// Per call, default 50 ms.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected")]
    NotConnected,
    #[error("circuit breaker open")]
    BreakerOpen,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

enum Topology {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// With a plain client per seed node for pub/sub (a message published
    /// on any node of a cluster reaches subscribers on every node).
    Cluster(ClusterClient, Vec<redis::Client>),
}

/// A connection of whichever topology; cheap to clone, multiplexed.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Sentinel(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Redis {
    topology: Topology,
    conn: ArcSwapOption<Conn>,
    timeout: Duration,
    breaker: Breaker,
    reconnect: Notify,
    /// Calls made and calls that failed (timeouts included), for reports.
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Where it points, without credentials, for logs.
    pub describe: String,
}

impl Redis {
    /// Parses the URL and starts connecting in the background; returns at
    /// once even when Redis is down (requests then follow the stages'
    /// failure policy until it is up).
    pub fn start(options: &RedisOptions) -> Result<Arc<Redis>, String> {
        let (topology, describe) = parse(&options.url)?;
        let redis = Arc::new(Redis {
            topology,
            conn: ArcSwapOption::empty(),
            timeout: options.timeout,
            breaker: Breaker::default(),
            reconnect: Notify::new(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            describe,
        });
        tokio::spawn(maintain(Arc::downgrade(&redis)));
        Ok(redis)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(..))
    }

    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Runs `call` on the connection, within the timeout, through the breaker.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allows() {
            return Err(RedisError::BreakerOpen);
        }
        let Some(conn) = self.conn.load_full() else {
            self.reconnect.notify_one();
            return Err(RedisError::NotConnected);
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.timeout, call(Conn::clone(&conn))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisError::Redis(e)),
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        match &result {
            // A script error is Redis answering too; the link is fine.
            Ok(_) => self.succeeded(),
            Err(RedisError::Redis(e)) if !is_link_failure(e) => self.succeeded(),
            Err(_) => self.failed(),
        }
        result
    }

    /// Runs background upkeep (not on any request's path) with its own
    /// `timeout`, outside the breaker: its slow answers neither open the
    /// breaker nor count against the request-path budget.
    pub async fn run_upkeep<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else {
            self.reconnect.notify_one();
            return Err(RedisError::NotConnected);
        };
        match tokio::time::timeout(timeout, call(Conn::clone(&conn))).await {
            Ok(result) => result.map_err(RedisError::Redis),
            Err(_) => Err(RedisError::Timeout(timeout)),
        }
    }

    /// A caller's own deadline ran out around a call: a failure too.
    pub fn note_timeout(&self) {
        self.failed();
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(first) = self.breaker.failed() {
            if first {
                tracing::warn!(redis = %self.describe, "Redis is failing; circuit breaker open");
            }
            if matches!(self.topology, Topology::Sentinel(_)) {
                // The master may have moved: ask the sentinels again.
                self.conn.store(None);
                self.reconnect.notify_one();
            }
        }
    }

    fn succeeded(&self) {
        if self.breaker.succeeded() {
            tracing::info!(redis = %self.describe, "Redis answers again; shared limits and cache resume");
        }
    }

    async fn connect(&self) -> Result<Conn, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.timeout.max(Duration::from_millis(200))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        match &self.topology {
            Topology::Single(client) => Ok(Conn::Single(
                client.get_connection_manager_with_config(config).await?,
            )),
            Topology::Sentinel(client) => {
                let mut client = client.lock().await;
                Ok(Conn::Sentinel(client.get_async_connection().await?))
            }
            Topology::Cluster(client, _) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    /// A dedicated connection for SUBSCRIBE (the master of a Sentinel
    /// group; the first seed of a cluster that answers).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let connect = async {
            match &self.topology {
                Topology::Single(client) => client.get_async_pubsub().await,
                Topology::Sentinel(client) => {
                    let master = client.lock().await.async_get_client().await?;
                    master.get_async_pubsub().await
                }
                Topology::Cluster(_, seeds) => {
                    let mut last = None;
                    for seed in seeds {
                        match seed.get_async_pubsub().await {
                            Ok(pubsub) => return Ok(pubsub),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| {
                        redis::RedisError::from((redis::ErrorKind::Client, "no cluster seed to subscribe on"))
                    }))
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no pub/sub connection within 1 s",
            ))),
        }
    }
}

/// Keeps a connection: dials when there is none, with backoff, and logs
/// each change of state once.
async fn maintain(redis: std::sync::Weak<Redis>) {
    let mut backoff = Duration::from_millis(50);
    let mut logged_down = false;
    loop {
        let Some(link) = redis.upgrade() else { return };
        if link.conn.load().is_some() {
            // Wake now and then to notice the link being dropped.
            let _ = tokio::time::timeout(Duration::from_secs(1), link.reconnect.notified()).await;
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, link.connect()).await {
            Ok(Ok(conn)) => {
                link.conn.store(Some(Arc::new(conn)));
                link.breaker.succeeded();
                tracing::info!(redis = %link.describe, "connected to Redis");
                backoff = Duration::from_millis(50);
                logged_down = false;
            }
            failure => {
                if !logged_down {
                    let why = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
                    };
                    tracing::warn!(redis = %link.describe, error = %why, "cannot connect to Redis; retrying");
                    logged_down = true;
                }
                drop(link);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn is_link_failure(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// Closed → (threshold failures) → open for a while → half-open (one probe
/// goes through each pause; its success closes the breaker).
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    /// Opened since the last success.
    tripped: std::sync::atomic::AtomicBool,
    /// Milliseconds since `EPOCH` until which calls are refused.
    open_until: AtomicU64,
}

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl Breaker {
    /// Closed: yes. Open: no, until the pause is over; then one call (the
    /// one that re-arms the pause) goes through as a probe.
    fn allows(&self) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        let now = now_ms();
        if now < until {
            return false;
        }
        if !self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        let pause = now + BREAKER_OPEN.as_millis() as u64;
        self.open_until
            .compare_exchange(until, pause, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether this success closed a breaker that had opened.
    fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        if self.tripped.load(Ordering::Relaxed) && self.tripped.swap(false, Ordering::Relaxed) {
            self.open_until.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// `Some` when this failure opened the breaker (`true`: the first time
    /// since the last success).
    fn failed(&self) -> Option<bool> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD {
            self.open_until
                .store(now_ms() + BREAKER_OPEN.as_millis() as u64, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            return Some(!self.tripped.swap(true, Ordering::Relaxed));
        }
        None
    }
}

/// The topology a URL names, and how to show it in logs.
fn parse(url: &str) -> Result<(Topology, String), String> {
    let bad = |why: &str| format!("--redis {}: {why}", redact(url));
    if let Some(rest) = url.strip_prefix("redis-sentinel://") {
        let (auth, hosts, path, tls) = split(rest).map_err(|e| bad(&e))?;
        let master = path
            .filter(|m| !m.is_empty())
            .ok_or_else(|| bad("name the master: /master-name"))?;
        let mut builder =
            SentinelClientBuilder::new(addrs(&hosts, tls)?, &master, SentinelServerType::Master)
                .map_err(|e| bad(&e.to_string()))?;
        if let Some((user, password)) = &auth {
            if !user.is_empty() {
                builder = builder
                    .set_client_to_redis_username(user)
                    .set_client_to_sentinel_username(user);
            }
            builder = builder
                .set_client_to_redis_password(password)
                .set_client_to_sentinel_password(password);
        }
        if tls {
            builder = builder
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        }
        let client = builder.build().map_err(|e| bad(&e.to_string()))?;
        Ok((
            Topology::Sentinel(tokio::sync::Mutex::new(client)),
            format!("sentinel {} master {master}", hosts.join(",")),
        ))
    } else if let Some(rest) = url.strip_prefix("redis-cluster://") {
        let (auth, hosts, _, tls) = split(rest).map_err(|e| bad(&e))?;
        let seeds = addrs(&hosts, tls)?;
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some((user, password)) = &auth {
            if !user.is_empty() {
                settings = settings.set_username(user);
            }
            settings = settings.set_password(password);
        }
        let seed_clients = seeds
            .iter()
            .map(|addr| {
                let info = redis::IntoConnectionInfo::into_connection_info(addr.clone())?
                    .set_redis_settings(settings.clone());
                redis::Client::open(info)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e.to_string()))?;
        let mut builder = ClusterClient::builder(seeds)
            .connection_timeout(CONNECT_TIMEOUT)
            // A retried script could count (or refund) twice.
            .retries(0);
        if let Some((user, password)) = auth {
            if !user.is_empty() {
                builder = builder.username(user);
            }
            builder = builder.password(password);
        }
        if tls {
            builder = builder.tls(redis::cluster::TlsMode::Secure);
        }
        let client = builder.build().map_err(|e| bad(&e.to_string()))?;
        Ok((
            Topology::Cluster(client, seed_clients),
            format!("cluster {}", hosts.join(",")),
        ))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        let client = redis::Client::open(url).map_err(|e| bad(&e.to_string()))?;
        Ok((Topology::Single(client), redact(url)))
    } else {
        Err(bad(
            "expected redis://, rediss://, redis-sentinel:// or redis-cluster://",
        ))
    }
}

type Auth = Option<(String, String)>;

/// `[user:password@]h1:p1,h2:p2[/path][?tls=true]`
fn split(rest: &str) -> Result<(Auth, Vec<String>, Option<String>, bool), String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let tls = query.split('&').any(|kv| kv == "tls=true");
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            (Some((user.to_owned(), password.to_owned())), rest)
        }
        None => (None, rest),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, Some(path.to_owned())),
        None => (rest, None),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err("no host:port".into());
    }
    Ok((auth, hosts, path, tls))
}

fn addrs(hosts: &[String], tls: bool) -> Result<Vec<ConnectionAddr>, String> {
    hosts
        .iter()
        .map(|h| {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| format!("{h}: expected host:port"))?;
            let port: u16 = port.parse().map_err(|_| format!("{h}: bad port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            Ok(if tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            })
        })
        .collect()
}

/// The URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_topology_and_logs_never_show_the_password() {
        assert_eq!(
            redact("redis://app:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        let (auth, hosts, path, tls) = split("app:pw@a:26379,b:26379/mymaster?tls=true").unwrap_or_default();
        assert_eq!(auth, Some(("app".into(), "pw".into())));
        assert_eq!(hosts, ["a:26379", "b:26379"]);
        assert_eq!(path.as_deref(), Some("mymaster"));
        assert!(tls);
        assert!(parse("memcached://x:1").is_err());
        assert!(
            parse("redis-sentinel://a:26379").is_err(),
            "a sentinel URL names its master"
        );
    }
}
