//! The per-stage response cache: an in-process LRU (moka, weighed in bytes,
//! bounded by the stage's capacity) in front of Redis, shared by every node.
//!
//! - [`plan`] decides, per request, whether the cache is looked at, under
//!   which key, for how long, and whether the caller refreshes the entry
//!   (`Cache-Control: max-age=0`, when allowed to).
//! - The key is a SHA-256 of API, stage, namespace (the canary's own unless
//!   it uses the stage's), the stage's cache generation, method, path below
//!   the stage, the route's key parameters and — unless the route shares
//!   entries — the caller's principal.
//! - A flush is a new generation in the config: every node stops reading the
//!   old entries the moment it applies that version; they expire in Redis.
//! - Concurrent misses for one key on one node make one backend call; the
//!   others wait for its entry ([`ResponseCache::join`]).
//! - With Redis, an entry is kept in-process at most [`LOCAL_TTL`], so a
//!   refresh on another node is seen within that.
//! - Redis trouble makes the cache miss, never fail the request.

pub mod entry;

use crate::config::cache::{KeyParameter, MAX_ENTRY_BYTES, RouteCacheSettings, StageCache};
use crate::config::{CompiledStage, Target};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::shared::redis::Redis;
use crate::{Body, full_body};
use bytes::{Bytes, BytesMut};
use entry::{CacheKey, Entry};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use pylon_proto::config::v1::cache_settings::UnauthorizedInvalidation;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

pub const X_CACHE: &str = "x-cache";
/// How long a node keeps an entry to itself when Redis is the shared tier.
pub const LOCAL_TTL: Duration = Duration::from_secs(1);
const WARNING: &str = r#"199 pylon "Cache-Control: max-age=0 ignored: not authorized to invalidate""#;

/// What the cache does for one request.
#[derive(Debug)]
pub enum Lookup {
    /// The stage does not cache: no `X-Cache` header.
    Off,
    /// The stage caches, but not this request (method, route, TTL 0).
    Bypass {
        warning: bool,
    },
    Use(Plan),
}

#[derive(Debug)]
pub struct Plan {
    digest: [u8; 32],
    redis_key: String,
    ttl: Duration,
    encrypted: bool,
    /// An authorized `max-age=0`: skip the lookup, store the fresh answer.
    pub refresh: bool,
    /// An unauthorized `max-age=0` that was ignored with a warning.
    pub warning: bool,
    stage: (Arc<str>, Arc<str>),
    capacity: u64,
}

/// Decides what the cache does for this request.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    can_encrypt: bool,
    stage: &CompiledStage,
    target: &Target,
    route: Option<&RouteCacheSettings>,
    parts: &http::request::Parts,
    path: &str,
    params: &[(&str, String)],
    ctx: &RequestContext,
) -> Result<Lookup, GatewayError> {
    let Some(cache) = &stage.cache else {
        return Ok(Lookup::Off);
    };
    let invalidate = asks_to_invalidate(&parts.headers);
    let allowed = invalidate && may_invalidate(cache, ctx);
    let mut warning = false;
    if invalidate && !allowed {
        match cache.unauthorized {
            UnauthorizedInvalidation::FailWith403 => return Err(GatewayError::CacheInvalidationDenied),
            UnauthorizedInvalidation::IgnoreWithWarning => warning = true,
            UnauthorizedInvalidation::Ignore => {}
        }
    }
    let enabled = match route.and_then(|r| r.enabled) {
        Some(enabled) => enabled,
        None => parts.method == Method::GET,
    };
    let ttl = route.and_then(|r| r.ttl).unwrap_or(cache.ttl);
    if !enabled || ttl.is_zero() || parts.method == Method::HEAD {
        return Ok(Lookup::Bypass { warning });
    }
    if cache.encrypted && !can_encrypt {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(api = %stage.api, stage = %stage.name, "the stage encrypts its cache but this node has no cache key (--cache-key-file): not caching");
        }
        return Ok(Lookup::Bypass { warning });
    }
    let digest = key(stage, cache, target, route, parts, path, params, ctx);
    Ok(Lookup::Use(Plan {
        redis_key: format!("pylon:{{c:{}/{}:{}}}", stage.api, stage.name, hex::encode(digest)),
        digest,
        ttl,
        encrypted: cache.encrypted,
        refresh: allowed,
        warning,
        stage: (Arc::from(stage.api.as_str()), Arc::from(stage.name.as_str())),
        capacity: cache.capacity_bytes,
    }))
}

fn asks_to_invalidate(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("max-age=0"))
}

/// An API key the stage names, or a JWT with one of its scopes.
fn may_invalidate(cache: &StageCache, ctx: &RequestContext) -> bool {
    if ctx
        .identity
        .api_key_id
        .as_ref()
        .is_some_and(|id| cache.invalidation_keys.contains(id))
    {
        return true;
    }
    let Some(claims) = &ctx.authorizer.claims else {
        return false;
    };
    let scopes = ["scope", "scp"]
        .iter()
        .filter_map(|name| claims.get(*name))
        .flat_map(|v| match v {
            serde_json::Value::String(s) => s.split(' ').map(str::to_owned).collect::<Vec<_>>(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        });
    scopes.into_iter().any(|s| cache.invalidation_scopes.contains(&s))
}

#[allow(clippy::too_many_arguments)]
fn key(
    stage: &CompiledStage,
    cache: &StageCache,
    target: &Target,
    route: Option<&RouteCacheSettings>,
    parts: &http::request::Parts,
    path: &str,
    params: &[(&str, String)],
    ctx: &RequestContext,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(stage.api.as_bytes());
    field(stage.name.as_bytes());
    let namespace: &[u8] = if target.is_canary && !cache.canary_uses_stage_cache {
        b"canary"
    } else {
        b"stage"
    };
    field(namespace);
    field(&cache.generation.to_be_bytes());
    field(parts.method.as_str().as_bytes());
    field(path.as_bytes());
    let query = parts.uri.query().unwrap_or("");
    for parameter in route.map(|r| r.key_parameters.as_slice()).unwrap_or_default() {
        match parameter {
            KeyParameter::Path(name) => {
                field(b"p");
                field(
                    params
                        .iter()
                        .find(|(n, _)| *n == name.as_str())
                        .map_or(&b""[..], |(_, v)| v.as_bytes()),
                );
            }
            KeyParameter::Query(name) => {
                field(b"q");
                let mut values: Vec<String> = form_urlencoded::parse(query.as_bytes())
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.into_owned())
                    .collect();
                values.sort();
                // How many, then each on its own: absent, empty and
                // "a\0b" vs "a","b" all differ.
                field(&(values.len() as u64).to_be_bytes());
                for value in &values {
                    field(value.as_bytes());
                }
            }
            KeyParameter::Header(name) => {
                field(b"h");
                let values: Vec<&[u8]> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                field(&(values.len() as u64).to_be_bytes());
                for value in values {
                    field(value);
                }
            }
        }
    }
    if !route.is_some_and(|r| r.shared) {
        // Who is asking: the API key, and the authorizer's principal — or,
        // when it names none, the credential it accepted.
        field(b"principal");
        field(ctx.identity.api_key_id.as_deref().unwrap_or("").as_bytes());
        match (&ctx.authorizer.principal_id, &ctx.identity.caller) {
            (Some(principal), _) => field(principal.as_bytes()),
            (None, Some(caller)) => field(caller),
            (None, None) => field(b""),
        }
    }
    hash.finalize().into()
}

type LocalTier = moka::sync::Cache<[u8; 32], (Arc<Entry>, u64)>;
/// Per stage: its capacity and its in-process tier.
type LocalTiers = HashMap<(Arc<str>, Arc<str>), (u64, LocalTier)>;
type Flights = Arc<Mutex<HashMap<[u8; 32], watch::Receiver<Option<Arc<Entry>>>>>>;

/// Both tiers and the in-flight misses of this node.
pub struct ResponseCache {
    local: Mutex<LocalTiers>,
    redis: Option<Arc<Redis>>,
    key: Option<CacheKey>,
    flights: Flights,
}

/// A miss that is being fetched: the first request for a key leads, the
/// others follow (wait for its entry).
pub enum Flight {
    Leader(FlightGuard),
    Follower(watch::Receiver<Option<Arc<Entry>>>),
}

/// Held by the request fetching a key; dropping it without an entry lets
/// the followers fetch for themselves.
pub struct FlightGuard {
    digest: [u8; 32],
    flights: Flights,
    tx: watch::Sender<Option<Arc<Entry>>>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.digest);
    }
}

impl ResponseCache {
    /// `key` seals the entries of stages that encrypt; without one those
    /// stages are not cached (and a warning says so once per snapshot).
    pub fn new(redis: Option<Arc<Redis>>, key: Option<CacheKey>) -> ResponseCache {
        ResponseCache {
            local: Mutex::new(HashMap::new()),
            redis,
            key,
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn can_encrypt(&self) -> bool {
        self.key.is_some()
    }

    fn tier(&self, plan: &Plan) -> Option<LocalTier> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = local
            .entry(plan.stage.clone())
            .or_insert_with(|| (plan.capacity, new_tier(plan.capacity)));
        if slot.0 != plan.capacity {
            *slot = (plan.capacity, new_tier(plan.capacity));
        }
        Some(slot.1.clone())
    }

    fn sealing_key(&self, plan: &Plan) -> Result<Option<&CacheKey>, ()> {
        match (plan.encrypted, &self.key) {
            (false, _) => Ok(None),
            (true, Some(key)) => Ok(Some(key)),
            (true, None) => Err(()),
        }
    }

    /// The entry for `plan`, from this node or from Redis.
    pub async fn get(&self, plan: &Plan) -> Option<Arc<Entry>> {
        let now = crate::shared::memory::unix_now_ms();
        let tier = self.tier(plan)?;
        if let Some((entry, local_until)) = tier.get(&plan.digest) {
            if entry.expires_at_ms > now && local_until > now {
                return Some(entry);
            }
            tier.invalidate(&plan.digest);
        }
        let redis = self.redis.as_ref()?;
        let key = self.sealing_key(plan).ok()?;
        let redis_key = plan.redis_key.clone();
        let stored: Vec<u8> = redis
            .run(|mut conn| async move { redis::cmd("GET").arg(&redis_key).query_async(&mut conn).await })
            .await
            .map_err(|e| tracing::debug!(error = %e, "cache read from Redis failed; a miss"))
            .ok()
            .flatten()?;
        let entry = Arc::new(entry::open(&stored, key, plan.redis_key.as_bytes())?);
        if entry.expires_at_ms <= now {
            return None;
        }
        tier.insert(
            plan.digest,
            (entry.clone(), local_until(entry.expires_at_ms, now, true)),
        );
        Some(entry)
    }

    /// Leads or follows the fetch of a missing key.
    pub fn join(&self, plan: &Plan) -> Option<Flight> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = flights.get(&plan.digest) {
            return Some(Flight::Follower(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(plan.digest, rx);
        Some(Flight::Leader(FlightGuard {
            digest: plan.digest,
            flights: self.flights.clone(),
            tx,
        }))
    }

    /// Stores what the backend answered, when it may be cached, and hands
    /// the response on (its body replayed from the buffer).
    pub async fn fill(
        &self,
        plan: &Plan,
        response: Response<Body>,
        flight: Option<FlightGuard>,
    ) -> Result<Response<Body>, GatewayError> {
        if !cacheable(&response) || self.sealing_key(plan).is_err() {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let body = match buffer(body, MAX_ENTRY_BYTES).await? {
            Buffered::Whole(bytes) => bytes,
            Buffered::TooLarge(body) => return Ok(Response::from_parts(parts, body)),
        };
        let now = crate::shared::memory::unix_now_ms();
        let entry = Arc::new(Entry {
            status: parts.status,
            headers: parts
                .headers
                .iter()
                .filter(|(name, _)| *name != header::CONTENT_LENGTH)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            body: body.clone(),
            expires_at_ms: now + plan.ttl.as_millis() as u64,
        });
        if let Some(tier) = self.tier(plan) {
            tier.insert(
                plan.digest,
                (
                    entry.clone(),
                    local_until(entry.expires_at_ms, now, self.redis.is_some()),
                ),
            );
        }
        if let Some(flight) = flight {
            let _ = flight.tx.send(Some(entry.clone()));
        }
        if let (Some(redis), Ok(key)) = (&self.redis, self.sealing_key(plan))
            && let Some(stored) = entry::seal(&entry, key, plan.redis_key.as_bytes())
        {
            // Written in the background: the client does not wait for it.
            let (redis, redis_key, ttl_ms) =
                (redis.clone(), plan.redis_key.clone(), plan.ttl.as_millis() as u64);
            tokio::spawn(async move {
                let result = redis
                    .run(|mut conn| async move {
                        redis::cmd("SET")
                            .arg(&redis_key)
                            .arg(stored.as_ref())
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cache write to Redis failed");
                }
            });
        }
        Ok(Response::from_parts(parts, full_body(body)))
    }
}

fn new_tier(capacity: u64) -> LocalTier {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .weigher(|_, (entry, _): &(Arc<Entry>, u64)| entry.weight())
        .time_to_live(Duration::from_secs(3600))
        .build()
}

/// Until when this node may serve an entry without asking Redis again.
fn local_until(expires_at_ms: u64, now: u64, shared: bool) -> u64 {
    if shared {
        expires_at_ms.min(now + LOCAL_TTL.as_millis() as u64)
    } else {
        expires_at_ms
    }
}

/// 200s without `Cache-Control: no-store|private`, `Set-Cookie` or `Vary: *`,
/// not declared over the entry limit.
fn cacheable(response: &Response<Body>) -> bool {
    let headers = response.headers();
    let forbids = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-store" || d == "private" || d.starts_with("private="));
    let too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_ENTRY_BYTES as u64);
    response.status() == StatusCode::OK
        && !forbids
        && !too_large
        && !headers.contains_key(header::SET_COOKIE)
        && headers.get(header::VARY).is_none_or(|v| v.as_bytes() != b"*")
}

enum Buffered {
    Whole(Bytes),
    /// Over the limit: what was read, then the rest, as one body.
    TooLarge(Body),
}

async fn buffer(mut body: Body, limit: usize) -> Result<Buffered, GatewayError> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(GatewayError::InvalidIntegrationResponse)?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > limit {
                let head = futures::stream::once(futures::future::ready(Ok::<_, crate::error::BoxError>(
                    hyper::body::Frame::data(bytes.freeze()),
                )));
                let rest = http_body_util::BodyStream::new(body);
                let stream = futures::StreamExt::chain(head, rest);
                return Ok(Buffered::TooLarge(
                    http_body_util::StreamBody::new(stream).boxed_unsync(),
                ));
            }
        }
    }
    Ok(Buffered::Whole(bytes.freeze()))
}

/// A response served from the cache.
pub fn respond(entry: &Entry, warning: bool) -> Response<Body> {
    let mut response = Response::new(full_body(entry.body.clone()));
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    for (name, value) in &entry.headers {
        headers.append(name.clone(), value.clone());
    }
    mark(&mut response, "Hit", warning);
    response
}

/// Says what the cache did.
pub fn mark(response: &mut Response<Body>, what: &'static str, warning: bool) {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(what));
    if warning {
        headers.insert(header::WARNING, HeaderValue::from_static(WARNING));
    }
}

/// Waits for the leader's entry; `None` when it produced none in time.
pub async fn follow(mut rx: watch::Receiver<Option<Arc<Entry>>>, timeout: Duration) -> Option<Arc<Entry>> {
    let wait = rx.wait_for(Option::is_some);
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(entry)) => entry.clone(),
        _ => None,
    }
}
