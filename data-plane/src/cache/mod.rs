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
//! - A request that carries `Authorization` (or, unless the stage shares
//!   them, a `Cookie`) the key does not tell apart — no Pylon authorizer
//!   verified it and it is no key parameter — is *private*: it is served
//!   only entries whose response allowed a shared cache to (`public`,
//!   `s-maxage`, `must-revalidate`), and stored only when its response does
//!   (RFC 9111 §3.5).
//! - `Vary` is honoured through a variant index: the key of a varying
//!   response holds the names of the request headers that select it, and
//!   each variant is stored under a key made of those headers' values; an
//!   entry also keeps the values that selected it and answers only
//!   requests with the same. `Vary: *` is never stored. With the index
//!   known on a node (it is kept as long as its variants live), a hit costs
//!   one shared-tier read.
//! - A flush is a new generation in the config: every node stops reading the
//!   old entries the moment it applies that version; they expire in Redis.
//! - Concurrent misses for one variant and caller on one node make one
//!   backend call; the others wait for its entry ([`ResponseCache::join`]).
//! - With Redis, a response is kept in-process at most [`LOCAL_TTL`], so a
//!   refresh on another node is seen within that.
//! - Redis trouble makes the cache miss, never fail the request.

pub mod entry;

use crate::config::auth::RouteAuth;
use crate::config::cache::{KeyParameter, MAX_ENTRY_BYTES, RouteCacheSettings, StageCache};
use crate::config::{CompiledStage, Target};
use crate::context::{CacheStatus, RequestContext};
use crate::error::GatewayError;
use crate::integration::http::Forwarding;
use crate::shared::redis::Redis;
use crate::{Body, full_body};
use bytes::{Bytes, BytesMut};
use entry::{CacheKey, Entry, RequestView, Stored, VariantIndex, selecting_value};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use pylon_proto::config::v1::cache_settings::UnauthorizedInvalidation;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
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
    ttl: Duration,
    encrypted: bool,
    /// An authorized `max-age=0`: skip the lookup, store the fresh answer.
    pub refresh: bool,
    /// An unauthorized `max-age=0` that was ignored with a warning.
    pub warning: bool,
    stage: (Arc<str>, Arc<str>),
    capacity: u64,
    /// The request carries credentials the key does not tell apart.
    pub private: bool,
    /// A private request's credentials, hashed: its flights are its own.
    caller: Option<[u8; 32]>,
}

impl Plan {
    /// The Redis key of the record under `digest`.
    fn redis_key_of(&self, digest: &[u8; 32]) -> String {
        format!(
            "pylon:{{c:{}/{}:{}}}",
            self.stage.0,
            self.stage.1,
            hex::encode(digest)
        )
    }
}

/// Decides what the cache does for this request. `auth` is the route's:
/// credentials its authorizer verified are told apart by the key.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    can_encrypt: bool,
    stage: &CompiledStage,
    target: &Target,
    route: Option<&RouteCacheSettings>,
    auth: &RouteAuth,
    parts: &http::request::Parts,
    has_body: bool,
    forwarding: &Forwarding,
    path: &str,
    params: &[(&str, String)],
    ctx: &RequestContext,
) -> Result<Lookup, GatewayError> {
    let Some(cache) = &stage.cache else {
        return Ok(Lookup::Off);
    };
    let invalidate = asks_to_invalidate(&parts.headers);
    let allowed = invalidate && may_invalidate(stage, cache, &parts.headers, ctx);
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
    // A GET with a body: the body is no part of the key, so its answer must
    // not answer plain GETs (nor they it).
    let fat_get = parts.method == Method::GET && has_body;
    if !enabled
        || ttl.is_zero()
        || parts.method == Method::HEAD
        || fat_get
        || backend_judges_conditions(&parts.method, &parts.headers)
    {
        return Ok(Lookup::Bypass { warning });
    }
    if cache.encrypted && !can_encrypt {
        if !cache
            .warned_no_key
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(api = %stage.api, stage = %stage.name, "the stage encrypts its cache but this node has no cache key (--cache-key-file): not caching");
        }
        return Ok(Lookup::Bypass { warning });
    }
    let digest = key(stage, cache, target, route, parts, forwarding, path, params, ctx);
    let private = unaccounted_credentials(&parts.headers, cache, route, auth);
    let plan = Plan {
        digest,
        ttl,
        encrypted: cache.encrypted,
        refresh: allowed,
        warning,
        stage: (stage.api.clone(), stage.name.clone()),
        capacity: cache.capacity_bytes,
        caller: (!private.is_empty()).then(|| {
            let mut hash = Sha256::new();
            for name in &private {
                for value in parts.headers.get_all(*name) {
                    hash.update((value.len() as u64).to_be_bytes());
                    hash.update(value.as_bytes());
                }
            }
            hash.finalize().into()
        }),
        private: !private.is_empty(),
    };
    Ok(Lookup::Use(plan))
}

/// Whether the request carries conditions that only the backend can judge,
/// so that it passes the cache (neither answered from it nor stored):
/// `If-Match` and `If-Unmodified-Since` on any method (a stored answer
/// cannot say 412 Precondition Failed — RFC 9110 §13.1.1, §13.1.4; whether
/// a date is one the backend reads is the backend's to say: nginx, for one,
/// reads a date whose weekday is wrong), and `If-None-Match` on any method
/// but `GET` (a failed one
/// means 412, RFC 9110 §13.1.2). A `GET` with `If-None-Match` or
/// `If-Modified-Since` is judged by a hit ([`evaluate_conditions`]);
/// `If-Modified-Since` on other methods is ignored (RFC 9110 §13.1.3).
/// `If-Range` never bypasses: a hit ignores `Range` and sends the whole
/// answer, so it ignores `If-Range` too (RFC 9110 §13.1.5, §14.2).
fn backend_judges_conditions(method: &Method, headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_MATCH)
        || headers.contains_key(header::IF_UNMODIFIED_SINCE)
        || (method != Method::GET && headers.contains_key(header::IF_NONE_MATCH))
}

/// The credential headers the request carries that the cache key does not
/// tell callers apart by: `Authorization`, and `Cookie` unless the stage
/// shares such requests — each unless it is a key parameter of the route or
/// the route's Pylon authorizer verified it.
fn unaccounted_credentials(
    headers: &HeaderMap,
    cache: &StageCache,
    route: Option<&RouteCacheSettings>,
    auth: &RouteAuth,
) -> Vec<&'static HeaderName> {
    static CREDENTIALS: [HeaderName; 2] = [header::AUTHORIZATION, header::COOKIE];
    CREDENTIALS
        .iter()
        .filter(|name| headers.contains_key(*name))
        .filter(|name| **name != header::COOKIE || !cache.share_requests_with_cookies)
        .filter(|name| {
            let keyed = route.is_some_and(|r| {
                r.key_parameters
                    .iter()
                    .any(|p| matches!(p, KeyParameter::Header(h) if h == *name))
            });
            !keyed && !auth.verifies(name)
        })
        .collect()
}

fn asks_to_invalidate(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("max-age=0"))
}

/// An API key the stage names, or a JWT with one of its scopes. The key is
/// the one the route's API key check accepted or, on a route that does not
/// require one, an enabled key of the stage's usage plans presented in
/// `x-api-key`.
fn may_invalidate(
    stage: &CompiledStage,
    cache: &StageCache,
    headers: &HeaderMap,
    ctx: &RequestContext,
) -> bool {
    let key_id = match &ctx.identity.api_key_id {
        Some(id) => Some(&**id),
        None => match crate::config::presented_key(headers) {
            crate::config::PresentedKey::One(value) => Some(value),
            _ => None,
        }
        .and_then(|v| stage.api_key_presented(v))
        .filter(|key| key.enabled)
        .map(|key| &*key.id),
    };
    if key_id.is_some_and(|id| cache.invalidation_keys.contains(id)) {
        return true;
    }
    let Some(claims) = &ctx.authorizer.claims else {
        return false;
    };
    crate::context::token_scopes(claims).any(|s| cache.invalidation_scopes.iter().any(|want| want == s))
}

#[allow(clippy::too_many_arguments)]
fn key(
    stage: &CompiledStage,
    cache: &StageCache,
    target: &Target,
    route: Option<&RouteCacheSettings>,
    parts: &http::request::Parts,
    forwarding: &Forwarding,
    path: &str,
    params: &[(&str, String)],
    ctx: &RequestContext,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(cache.cluster.as_bytes());
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
    // The authority and scheme the backend is told (X-Forwarded-Host,
    // -Proto): what it builds links from is never another caller's.
    field(forwarding.host.as_bytes());
    field(forwarding.proto.as_bytes());
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
                // In the client's order: a backend that reads the first
                // (or last) of repeated values answers `id=1&id=2` and
                // `id=2&id=1` differently.
                let values = query_values(query, name);
                // How many, then each on its own: absent, empty and
                // "a\0b" vs "a","b" all differ.
                field(&(values.len() as u64).to_be_bytes());
                for value in &values {
                    field(value);
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
        // Who is asking: the API key, the authorizer's principal and the
        // credential it accepted — an authorizer that names every caller
        // alike ("user") does not make them share.
        field(b"principal");
        field(ctx.identity.api_key_id.as_deref().unwrap_or("").as_bytes());
        field(ctx.authorizer.principal_id.as_deref().unwrap_or("").as_bytes());
        field(ctx.identity.caller.as_ref().map_or(&[][..], |c| &c[..]));
    }
    hash.finalize().into()
}

/// The values of the query parameter `name` in `query`, form-decoded
/// (`+` is a space, `%XX` a byte) to bytes, never to text: `%FF` and
/// `%EF%BF%BD` are different requests to a backend that reads the raw query,
/// so they must not share a cache key (a lossy UTF-8 decoding would make
/// both U+FFFD). A name is compared the same way.
fn query_values(query: &str, name: &str) -> Vec<Vec<u8>> {
    fn decode(part: &str) -> Vec<u8> {
        let bytes: Vec<u8> = part.bytes().map(|b| if b == b'+' { b' ' } else { b }).collect();
        percent_encoding::percent_decode(&bytes).collect()
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(n) == name.as_bytes()).then(|| decode(v))
        })
        .collect()
}

/// Keyed by SHA-256 digests, hashed with foldhash (seeded per process):
/// SipHash over the 32 bytes cost ~270 instructions of every hit.
type LocalTier = moka::sync::Cache<[u8; 32], (Stored, u64), foldhash::fast::RandomState>;
/// Per stage: its capacity and its in-process tier (looked up on every
/// request the cache sees: foldhash, as the config's maps).
type LocalTiers = foldhash::HashMap<(Arc<str>, Arc<str>), (u64, LocalTier)>;
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
    /// stages are not cached (and a warning says so once per stage and
    /// snapshot).
    pub fn new(redis: Option<Arc<Redis>>, key: Option<CacheKey>) -> ResponseCache {
        ResponseCache {
            local: Mutex::new(LocalTiers::default()),
            redis,
            key,
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn can_encrypt(&self) -> bool {
        self.key.is_some()
    }

    fn tier(&self, plan: &Plan) -> LocalTier {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = local
            .entry(plan.stage.clone())
            .or_insert_with(|| (plan.capacity, new_tier(plan.capacity)));
        if slot.0 != plan.capacity {
            *slot = (plan.capacity, new_tier(plan.capacity));
        }
        slot.1.clone()
    }

    fn sealing_key(&self, plan: &Plan) -> Result<Option<&CacheKey>, ()> {
        match (plan.encrypted, &self.key) {
            (false, _) => Ok(None),
            (true, Some(key)) => Ok(Some(key)),
            (true, None) => Err(()),
        }
    }

    /// The entry that answers this request (`headers` select among
    /// variants), from this node or from Redis; on a miss, the key its
    /// fetch flies under (the variant, and a private caller's own).
    pub async fn get(&self, plan: &Plan, request: RequestView<'_>) -> Found {
        let now = crate::shared::memory::unix_now_ms();
        let tier = self.tier(plan);
        let mut key = plan.digest;
        let mut found = self.read(&tier, plan, &plan.digest, now).await;
        if let Some(Stored::Variants(index)) = &found {
            key = variant_digest(&plan.digest, &index.vary, request);
            found = self.read(&tier, plan, &key, now).await;
        }
        match found {
            Some(Stored::Response(entry)) if entry.serves(request, plan.private) => Found::Hit(entry),
            _ => Found::Miss {
                flight: flight_key(&key, plan.caller.as_ref()),
            },
        }
    }

    /// The record under `digest`: this node's while fresh, else Redis's.
    async fn read(&self, tier: &LocalTier, plan: &Plan, digest: &[u8; 32], now: u64) -> Option<Stored> {
        if let Some((stored, local_until)) = tier.get(digest) {
            if stored.expires_at_ms() > now && local_until > now {
                return Some(stored);
            }
            tier.invalidate(digest);
        }
        let redis = self.redis.as_ref()?;
        let key = self.sealing_key(plan).ok()?;
        // Made only here: a hit in this node's tier needs no Redis key.
        let redis_key = plan.redis_key_of(digest);
        let redis_key_owned = redis_key.clone();
        let stored: Vec<u8> = redis
            .run(|mut conn| async move {
                redis::cmd("GET")
                    .arg(&redis_key_owned)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(|e| tracing::debug!(error = %e, "cache read from Redis failed; a miss"))
            .ok()
            .flatten()?;
        let stored = entry::open(&stored, key, redis_key.as_bytes())?;
        if stored.expires_at_ms() <= now {
            return None;
        }
        tier.insert(*digest, (stored.clone(), local_until(&stored, now, true)));
        Some(stored)
    }

    /// Leads or follows the fetch of a missing key.
    pub fn join(&self, flight: [u8; 32]) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = flights.get(&flight) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(flight, rx);
        Flight::Leader(FlightGuard {
            digest: flight,
            flights: self.flights.clone(),
            tx,
        })
    }

    /// Stores what the backend answered, when it may be cached, and hands
    /// the response on (its body replayed from the buffer); `true` when it
    /// was stored. `request` is the client's headers (a varying response
    /// is stored under their values).
    ///
    /// # Errors
    /// A backend body that failed while it was read.
    pub async fn fill(
        &self,
        plan: &Plan,
        response: Response<Body>,
        request: RequestView<'_>,
        flight: Option<FlightGuard>,
    ) -> Result<(Response<Body>, bool), GatewayError> {
        let Some(storable) = storable(&response, plan.private) else {
            return Ok((response, false));
        };
        if self.sealing_key(plan).is_err() {
            return Ok((response, false));
        }
        let (parts, body) = response.into_parts();
        let body = match buffer(body, MAX_ENTRY_BYTES).await? {
            Buffered::Whole(bytes) => bytes,
            Buffered::TooLarge(body) => return Ok((Response::from_parts(parts, body), false)),
        };
        let now = crate::shared::memory::unix_now_ms();
        let ttl = storable
            .lifetime
            .map_or(plan.ttl, |lifetime| lifetime.min(plan.ttl));
        let expires_at_ms = now + ttl.as_millis() as u64;
        let entry = Arc::new(Entry {
            status: parts.status,
            headers: {
                let mut headers = parts.headers.clone();
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::AGE);
                headers
            },
            hit_head: entry::HitHead::default(),
            body: body.clone(),
            expires_at_ms,
            stored_at_ms: now,
            initial_age_s: storable.age,
            shareable: storable.shareable,
            selected_by: storable
                .vary
                .iter()
                .map(|name| (name.clone(), selecting_value(request, name)))
                .collect(),
        });
        let mut records = Vec::with_capacity(2);
        if storable.vary.is_empty() {
            records.push((plan.digest, Stored::Response(entry.clone())));
        } else {
            let variant = variant_digest(&plan.digest, &storable.vary, request);
            let index = VariantIndex {
                vary: storable.vary,
                expires_at_ms,
            };
            records.push((plan.digest, Stored::Variants(Arc::new(index))));
            records.push((variant, Stored::Response(entry.clone())));
        }
        let tier = self.tier(plan);
        for (digest, stored) in &records {
            tier.insert(
                *digest,
                (stored.clone(), local_until(stored, now, self.redis.is_some())),
            );
        }
        if let Some(flight) = flight {
            let _ = flight.tx.send(Some(entry.clone()));
        }
        if let (Some(redis), Ok(key)) = (&self.redis, self.sealing_key(plan)) {
            let sealed: Vec<(String, Bytes)> = records
                .iter()
                .filter_map(|(digest, stored)| {
                    let redis_key = plan.redis_key_of(digest);
                    let bytes = entry::seal(stored, key, redis_key.as_bytes())?;
                    Some((redis_key, bytes))
                })
                .collect();
            // Written before the answer leaves (each within the Redis
            // timeout; the variant before its index, so no node finds an
            // index without its variant): once a client has its Miss, every
            // node finds the entry. (Keys of one record may live on
            // different cluster nodes, so no pipeline.)
            let ttl_ms = ttl.as_millis().max(1) as u64;
            for (redis_key, bytes) in sealed.iter().rev() {
                let result = redis
                    .run(|mut conn| async move {
                        redis::cmd("SET")
                            .arg(redis_key)
                            .arg(bytes.as_ref())
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cache write to Redis failed");
                    break;
                }
            }
        }
        Ok((Response::from_parts(parts, full_body(body)), true))
    }
}

/// What a lookup found.
pub enum Found {
    Hit(Arc<Entry>),
    /// Nothing that answers this request; its fetch flies under `flight`.
    Miss {
        flight: [u8; 32],
    },
}

/// The key of the variant of `primary` that `request` selects.
fn variant_digest(primary: &[u8; 32], vary: &[HeaderName], request: RequestView<'_>) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(primary);
    for name in vary {
        hash.update((name.as_str().len() as u64).to_be_bytes());
        hash.update(name.as_str());
        match selecting_value(request, name) {
            None => hash.update([0]),
            Some(value) => {
                hash.update([1]);
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(&value);
            }
        }
    }
    hash.finalize().into()
}

/// A fetch's flight: the key, and a private caller's own.
fn flight_key(key: &[u8; 32], caller: Option<&[u8; 32]>) -> [u8; 32] {
    match caller {
        None => *key,
        Some(caller) => {
            let mut hash = Sha256::new();
            hash.update(key);
            hash.update(caller);
            hash.finalize().into()
        }
    }
}

fn new_tier(capacity: u64) -> LocalTier {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .weigher(|_, (stored, _): &(Stored, u64)| stored.weight())
        .time_to_live(Duration::from_secs(3600))
        .build_with_hasher(foldhash::fast::RandomState::default())
}

/// Until when this node may use a record without asking Redis again: a
/// response at most [`LOCAL_TTL`] (a refresh elsewhere shows within it); a
/// variant index while it lives (a stale one only causes misses).
fn local_until(stored: &Stored, now: u64, shared: bool) -> u64 {
    match stored {
        Stored::Response(entry) if shared => entry.expires_at_ms.min(now + LOCAL_TTL.as_millis() as u64),
        other => other.expires_at_ms(),
    }
}

/// Marks a response that must not be stored (its own cache directives,
/// addressed to this hop, said so and are gone).
#[derive(Clone, Copy, Debug)]
pub struct Uncacheable;

/// How a response may be stored.
#[derive(Debug, PartialEq)]
struct Storable {
    /// It may answer requests that carry credentials (RFC 9111 §3.5).
    shareable: bool,
    /// The request headers its `Vary` names, lower-cased, sorted, unique.
    vary: Vec<HeaderName>,
    /// At most this long (a private request's answer: what is left of its
    /// own freshness), else the stage's or route's TTL.
    lifetime: Option<Duration>,
    /// The `Age` it arrived with, in seconds (RFC 9111 §5.1).
    age: u32,
}

/// A 200 without `Cache-Control: no-store|no-cache|private`, `Set-Cookie` or
/// `Vary: *`, not declared over the entry limit; for a private request,
/// only one that a shared cache may serve to such requests (`public`,
/// `s-maxage`, `must-revalidate`).
fn storable(response: &Response<Body>, private: bool) -> Option<Storable> {
    let headers = response.headers();
    if response.status() != StatusCode::OK
        || headers.contains_key(header::SET_COOKIE)
        || response.extensions().get::<Uncacheable>().is_some()
    {
        return None;
    }
    // A line that is not ASCII text (obs-text in a quoted extension) could
    // hold `private` or `no-store`: such an answer is not stored.
    let mut directives: Vec<String> = Vec::new();
    for line in headers.get_all(header::CACHE_CONTROL) {
        let line = line.to_str().ok()?;
        directives.extend(line.split(',').map(|d| d.trim().to_ascii_lowercase()));
    }
    // (`no-cache="x"` and `private="x"` name fields a cache must not send
    // unrevalidated; Pylon does not revalidate, so it stores nothing.)
    let forbids = directives
        .iter()
        .any(|d| d.starts_with("no-store") || d.starts_with("no-cache") || d.starts_with("private"));
    let shareable = directives
        .iter()
        .any(|d| d == "public" || d == "must-revalidate" || d.starts_with("s-maxage="));
    // How long a shared cache may use it (RFC 9111 §4.2.1): s-maxage, else
    // max-age.
    let seconds = |name: &str| {
        directives
            .iter()
            .find_map(|d| d.strip_prefix(name)?.trim_matches('"').parse::<u64>().ok())
    };
    // An upstream cache already held it this long (RFC 9111 §4.2.3); a
    // malformed Age counts as none.
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let freshness = seconds("s-maxage=")
        .or_else(|| seconds("max-age="))
        .map(|lifetime| Duration::from_secs(lifetime.saturating_sub(age)));
    let too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_ENTRY_BYTES as u64);
    // A private request's answer is shared only while it is fresh: Pylon
    // does not revalidate, and the stage's TTL must not stretch `max-age=0,
    // must-revalidate` into "share with everyone".
    if forbids || too_large || (private && (!shareable || freshness.is_some_and(|f| f.is_zero()))) {
        return None;
    }
    let mut vary = Vec::new();
    for field in headers.get_all(header::VARY) {
        for name in field.to_str().ok()?.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                vary.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
            }
        }
    }
    vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    vary.dedup();
    Some(Storable {
        shareable,
        vary,
        lifetime: if private { freshness } else { None },
        age: u32::try_from(age).unwrap_or(u32::MAX),
    })
}

enum Buffered {
    Whole(Bytes),
    /// Over the limit: what was read, then the rest, as one body.
    TooLarge(Body),
}

async fn buffer(mut body: Body, limit: usize) -> Result<Buffered, GatewayError> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::integration::http::body_failed)?;
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
///
/// It carries `Age`: how long the answer has been held, by Pylon and by any
/// cache before it (RFC 9111 §4: a cache MUST generate it when it answers
/// from storage).
pub fn respond(entry: &Entry, warning: bool) -> Response<Body> {
    let mut response = Response::new(full_body(entry.body.clone()));
    *response.status_mut() = entry.status;
    // The prepared head: its values are shared, not copied, and the fields
    // set below replace theirs in place (nothing grows, no name is hashed
    // into a new slot).
    *response.headers_mut() = hit_head(entry).clone();
    match entry.age_s(crate::shared::memory::unix_now_ms()) {
        Some(age) => response.headers_mut().insert(header::AGE, HeaderValue::from(age)),
        None => response.headers_mut().remove(header::AGE),
    };
    if warning {
        response
            .headers_mut()
            .insert(header::WARNING, HeaderValue::from_static(WARNING));
    }
    response
}

/// The head every hit on `entry` starts from: the stored fields, then
/// `Age`, `X-Cache: Hit` and the fields [`crate::response::finish`] sets
/// on every answer, in the order a hit sends them. `Age`, the request id
/// and the deployment hold placeholders that each hit replaces: a map
/// cloned at its exact size grows (a reallocation, its table rebuilt) on
/// the first field added to it.
fn hit_head(entry: &Entry) -> &HeaderMap {
    entry.hit_head.0.get_or_init(|| {
        let mut head = entry.headers.clone();
        head.reserve(4);
        head.insert(header::AGE, HeaderValue::from_static("0"));
        head.insert(X_CACHE, HeaderValue::from_static(CacheStatus::Hit.as_str()));
        for name in [crate::response::REQUEST_ID, crate::response::DEPLOYMENT] {
            head.insert(HeaderName::from_static(name), HeaderValue::from_static(""));
        }
        head
    })
}

/// The stored answer as the integration gave it, `Content-Length`
/// included, for a route's response phase to map as it maps a fresh one;
/// the caller adds `Age` ([`age`]) and marks it afterwards.
pub fn stored(entry: &Entry) -> Response<Body> {
    let mut response = answer(entry);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    response
}

fn answer(entry: &Entry) -> Response<Body> {
    let mut response = Response::new(full_body(entry.body.clone()));
    *response.status_mut() = entry.status;
    // The stored map as it is (its values are shared, not copied): no name
    // is hashed again on a hit.
    *response.headers_mut() = entry.headers.clone();
    response
}

/// Answers a hit `304 Not Modified` when the client already holds what it
/// would send (RFC 9111 §4.3.2: a cache answering from storage evaluates
/// the conditions of RFC 9110 §13.2.2): `If-None-Match` is `*` (whether or
/// not the answer has an `ETag`) or lists the answer's `ETag` (weak
/// comparison); or, without `If-None-Match`, the
/// answer's `Last-Modified` is no later than a valid `If-Modified-Since`
/// (one field line holding one HTTP-date: two lines make it invalid, and it
/// is ignored, RFC 9110 §13.1.3). An answer with more than one `ETag` or
/// `Last-Modified` line has no validator to compare: it is answered whole
/// unless `If-None-Match` is `*`.
/// Only a `200` is turned; the 304 keeps the answer's fields but its body
/// and the representation fields that describe it (`Content-Type`,
/// `Content-Length`, `Content-Encoding`, `Content-Language`, RFC 9110
/// §15.4.5). `method` and `request`: the client's method and fields; only
/// a `GET` is judged (a route may cache other methods, and for those a
/// failed `If-None-Match` means 412, which is the backend's to say, RFC
/// 9110 §13.1.2).
pub fn evaluate_conditions(method: &Method, request: &HeaderMap, response: &mut Response<Body>) {
    if method != Method::GET || response.status() != StatusCode::OK {
        return;
    }
    let not_modified = if request.contains_key(header::IF_NONE_MATCH) {
        // `*` matches any current representation, tagged or not.
        let any = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|value| value.as_bytes().trim_ascii() == b"*");
        any || only(response.headers(), header::ETAG)
            .is_some_and(|etag| none_match_lists(request, etag.as_bytes()))
    } else {
        match (
            only(request, header::IF_MODIFIED_SINCE),
            only(response.headers(), header::LAST_MODIFIED),
        ) {
            (Some(since), Some(modified)) => match (http_date(since), http_date(modified)) {
                (Some(since), Some(modified)) => modified <= since,
                _ => false,
            },
            _ => false,
        }
    };
    if !not_modified {
        return;
    }
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.body_mut() = full_body(Bytes::new());
    let headers = response.headers_mut();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
}

/// The value of `name` when it has exactly one field line.
fn only(headers: &HeaderMap, name: HeaderName) -> Option<&HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether the client's `If-None-Match` fields are `*` or list an entity
/// tag that weakly matches `etag` (RFC 9110 §8.8.3.2: the opaque tags are
/// equal, `W/` aside). A malformed tag matches nothing.
fn none_match_lists(request: &HeaderMap, etag: &[u8]) -> bool {
    let Some(stored) = opaque_tag(etag.trim_ascii()) else {
        return false;
    };
    request.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        let value = value.as_bytes().trim_ascii();
        value == b"*" || entity_tags(value).any(|tag| opaque_tag(tag) == Some(stored))
    })
}

/// An entity tag's opaque part, quotes included, `W/` left out; `None`
/// when it is not an entity tag.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'"')).then_some(tag)
}

/// The entity tags of a list (`"a", W/"b"`): split at commas outside the
/// quotes (an opaque tag may hold a comma).
fn entity_tags(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_ascii_start();
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let end = rest
                .iter()
                .position(|&b| {
                    if b == b'"' {
                        quoted = !quoted;
                    }
                    b == b',' && !quoted
                })
                .unwrap_or(rest.len());
            let tag = rest[..end].trim_ascii();
            rest = rest.get(end + 1..).unwrap_or(&[]);
            if !tag.is_empty() {
                return Some(tag);
            }
        }
    })
}

/// An HTTP-date (RFC 9110 §5.6.7, the three formats); `None` when it is
/// not one (a recipient ignores a condition it cannot read).
fn http_date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// Says how long the answer has been held (RFC 9111 §4.2.3).
pub fn age(response: &mut Response<Body>, entry: &Entry) {
    if let Some(age) = entry.age_s(crate::shared::memory::unix_now_ms()) {
        response.headers_mut().insert(header::AGE, HeaderValue::from(age));
    }
}

/// Says what the cache did.
pub fn mark(response: &mut Response<Body>, what: CacheStatus, warning: bool) {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(what.as_str()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_key_values_are_the_bytes_the_client_sent_form_decoded() {
        assert_eq!(query_values("id=%FF", "id"), [vec![0xFF]]);
        assert_eq!(
            query_values("id=%EF%BF%BD", "id"),
            ["\u{FFFD}".as_bytes().to_vec()]
        );
        assert_ne!(query_values("id=%FF", "id"), query_values("id=%EF%BF%BD", "id"));
        assert_eq!(query_values("id=a+b", "id"), query_values("id=a%20b", "id"));
        assert_eq!(
            query_values("%69d=1&id=2&idx=3&id", "id"),
            [b"1".to_vec(), b"2".to_vec(), Vec::new()]
        );
        assert!(query_values("&&x=1", "id").is_empty());
    }

    /// What a hit whose stored answer has these fields answers a client
    /// that sends those with a `GET`.
    fn conditional_hit(
        stored: &[(HeaderName, &'static str)],
        client: &[(HeaderName, &'static str)],
    ) -> Response<Body> {
        conditional_hit_to(&Method::GET, stored, client)
    }

    /// The same with any method.
    fn conditional_hit_to(
        method: &Method,
        stored: &[(HeaderName, &'static str)],
        client: &[(HeaderName, &'static str)],
    ) -> Response<Body> {
        let mut response = Response::new(full_body(Bytes::from_static(b"stored")));
        for (name, value) in stored {
            response
                .headers_mut()
                .append(name, HeaderValue::from_static(value));
        }
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        let request = client
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect();
        evaluate_conditions(method, &request, &mut response);
        response
    }

    #[test]
    fn a_hit_answers_304_to_a_client_that_holds_its_etag() {
        let tagged = [(header::ETAG, "W/\"v1\""), (header::CONTENT_TYPE, "text/plain")];
        for (if_none_match, expected) in [
            ("\"v1\"", 304),
            ("W/\"v1\"", 304),
            ("\"v0\", W/\"v1\"", 304),
            ("*", 304),
            ("\"v0\"", 200),
            ("\"v1", 200),
            ("v1", 200),
            ("\"a,\"v1\"\"", 200),
        ] {
            let response = conditional_hit(&tagged, &[(header::IF_NONE_MATCH, if_none_match)]);
            assert_eq!(
                response.status().as_u16(),
                expected,
                "If-None-Match: {if_none_match}"
            );
        }
        let response = conditional_hit(&tagged, &[(header::IF_NONE_MATCH, "\"v1\"")]);
        let headers = response.headers();
        assert_eq!(
            headers.get(header::ETAG).map(HeaderValue::as_bytes),
            Some(&b"W/\"v1\""[..])
        );
        assert!(headers.get(header::CONTENT_TYPE).is_none() && headers.get(header::CONTENT_LENGTH).is_none());
        // A route that caches a POST: its conditions are the backend's.
        let post = conditional_hit_to(&Method::POST, &tagged, &[(header::IF_NONE_MATCH, "\"v1\"")]);
        assert_eq!(post.status(), 200);
        // An answer with two ETag lines has no validator to compare.
        let twice = [(header::ETAG, "\"v1\""), (header::ETAG, "\"v2\"")];
        assert_eq!(
            conditional_hit(&twice, &[(header::IF_NONE_MATCH, "\"v1\"")]).status(),
            200
        );
        // Without an ETag, If-None-Match matches nothing but `*`, which
        // matches any stored answer (two ETag lines too).
        let untagged = [(header::CONTENT_TYPE, "text/plain")];
        assert_eq!(
            conditional_hit(&untagged, &[(header::IF_NONE_MATCH, "\"v1\"")]).status(),
            200
        );
        assert_eq!(
            conditional_hit(&untagged, &[(header::IF_NONE_MATCH, "*")]).status(),
            304
        );
        assert_eq!(
            conditional_hit(&twice, &[(header::IF_NONE_MATCH, " * ")]).status(),
            304
        );
    }

    #[test]
    fn conditions_a_stored_answer_cannot_settle_pass_the_cache() {
        let judged_with = |method: Method, name: HeaderName, value: &'static str| {
            let headers = HeaderMap::from_iter([(name, HeaderValue::from_static(value))]);
            backend_judges_conditions(&method, &headers)
        };
        let judged = |method: Method, name: HeaderName| judged_with(method, name, "\"v1\"");
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        for method in [Method::GET, Method::POST] {
            assert!(judged(method.clone(), header::IF_MATCH));
            assert!(judged_with(method.clone(), header::IF_MATCH, "*"));
            assert!(judged_with(method.clone(), header::IF_UNMODIFIED_SINCE, date));
            // A wrong weekday: a backend may well read it (nginx does).
            let friday = "Thu, 01 Jan 2021 00:00:00 GMT";
            assert!(judged_with(method.clone(), header::IF_UNMODIFIED_SINCE, friday));
            // A hit ignores Range, so it ignores If-Range (§13.1.5).
            assert!(!judged(method.clone(), header::IF_RANGE));
        }
        assert!(judged(Method::POST, header::IF_NONE_MATCH));
        assert!(!judged(Method::GET, header::IF_NONE_MATCH));
        assert!(!judged(Method::GET, header::IF_MODIFIED_SINCE));
        assert!(!judged(Method::POST, header::IF_MODIFIED_SINCE));
        assert!(!backend_judges_conditions(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn a_hit_answers_304_when_not_modified_since_and_if_none_match_wins() {
        let dated = [
            (header::LAST_MODIFIED, "Tue, 01 Dec 2026 10:00:00 GMT"),
            (header::ETAG, "\"v1\""),
        ];
        for (since, expected) in [
            ("Tue, 01 Dec 2026 10:00:00 GMT", 304),
            ("Tue, 01 Dec 2026 11:00:00 GMT", 304),
            ("Tuesday, 01-Dec-26 10:00:00 GMT", 304),
            ("Tue, 01 Dec 2026 09:59:59 GMT", 200),
            ("yesterday", 200),
        ] {
            let response = conditional_hit(&dated, &[(header::IF_MODIFIED_SINCE, since)]);
            assert_eq!(response.status().as_u16(), expected, "If-Modified-Since: {since}");
        }
        // Two If-Modified-Since lines make it invalid: ignored.
        let response = conditional_hit(
            &dated,
            &[
                (header::IF_MODIFIED_SINCE, "Tue, 01 Dec 2026 11:00:00 GMT"),
                (header::IF_MODIFIED_SINCE, "Tue, 01 Dec 2026 11:00:00 GMT"),
            ],
        );
        assert_eq!(response.status(), 200);
        // If-None-Match present: If-Modified-Since is ignored (RFC 9110 §13.1.3).
        let response = conditional_hit(
            &dated,
            &[
                (header::IF_NONE_MATCH, "\"v0\""),
                (header::IF_MODIFIED_SINCE, "Tue, 01 Dec 2026 11:00:00 GMT"),
            ],
        );
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn a_hit_sets_its_own_fields_in_a_head_that_never_grows() {
        let entry = Entry {
            status: StatusCode::OK,
            headers: HeaderMap::from_iter([
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::ETAG, HeaderValue::from_static("\"v1\"")),
            ]),
            hit_head: entry::HitHead::default(),
            body: Bytes::from_static(b"stored"),
            expires_at_ms: u64::MAX,
            stored_at_ms: crate::shared::memory::unix_now_ms() - 3_000,
            initial_age_s: 4,
            shareable: false,
            selected_by: Vec::new(),
        };
        for request_id in ["first", "second"] {
            let mut response = respond(&entry, false);
            let (len, capacity) = (response.headers().len(), response.headers().capacity());
            // What `response::finish` does to every answer.
            let headers = response.headers_mut();
            headers.insert(crate::response::REQUEST_ID, HeaderValue::from_static(request_id));
            headers.insert(crate::response::DEPLOYMENT, HeaderValue::from_static("d-1"));
            assert_eq!((headers.len(), headers.capacity()), (len, capacity));
            let sent: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("?")))
                .collect();
            assert_eq!(
                sent,
                [
                    ("content-type", "text/plain"),
                    ("etag", "\"v1\""),
                    ("age", "7"),
                    ("x-cache", "Hit"),
                    ("x-pylon-request-id", request_id),
                    ("x-pylon-deployment", "d-1"),
                ]
            );
        }
        // An entry whose storing time is unknown says no age at all.
        let unknown = Entry {
            stored_at_ms: 0,
            hit_head: entry::HitHead::default(),
            ..entry.clone()
        };
        let response = respond(&unknown, true);
        assert!(response.headers().get(header::AGE).is_none());
        assert_eq!(response.headers()[header::WARNING], WARNING);
    }

    fn response(headers: &[(&'static str, &'static str)]) -> Response<Body> {
        let mut response = Response::new(full_body("{}"));
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        response
    }

    #[test]
    fn an_answer_that_aged_in_an_upstream_cache_keeps_only_the_freshness_it_has_left() {
        let aged = |age: &'static str| {
            storable(
                &response(&[("cache-control", "public, max-age=60"), ("age", age)]),
                true,
            )
            .map(|s| (s.lifetime, s.age))
        };
        assert_eq!(aged("50"), Some((Some(Duration::from_secs(10)), 50)));
        assert_eq!(
            aged("60"),
            None,
            "already stale: a private request's answer is not shared"
        );
        assert_eq!(
            aged("soon"),
            Some((Some(Duration::from_secs(60)), 0)),
            "a malformed Age counts as none"
        );
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        let plain = storable(&response(&[]), false).map(|s| s.shareable);
        assert_eq!(plain, Some(false));
        for forbidden in [
            "no-store",
            "no-store=\"x\"",
            "no-cache",
            "no-cache=\"x-secret\"",
            "private",
        ] {
            assert_eq!(
                storable(&response(&[("cache-control", forbidden)]), false),
                None,
                "{forbidden}"
            );
        }
        assert_eq!(storable(&response(&[("vary", "*")]), false), None);
        // A line a cache cannot read may forbid storing: nothing is stored.
        let mut unreadable = response(&[]);
        unreadable.headers_mut().append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"private, no-store, ext=\"caf\xc3\xa9\"").expect("obs-text"),
        );
        assert_eq!(storable(&unreadable, false), None);
        let varying = storable(
            &response(&[
                ("vary", "Accept-Encoding, accept-language"),
                ("vary", "accept-encoding"),
            ]),
            false,
        )
        .map(|s| s.vary);
        assert_eq!(
            varying,
            Some(vec![header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]),
            "sorted, without duplicates"
        );
        // Directives that were addressed to this hop still count.
        let mut hop = response(&[]);
        hop.extensions_mut().insert(Uncacheable);
        assert_eq!(storable(&hop, false), None);
    }

    #[test]
    fn a_private_request_stores_only_what_may_be_shared_while_fresh() {
        assert_eq!(storable(&response(&[]), true), None);
        let public = storable(&response(&[("cache-control", "public, max-age=60")]), true);
        assert_eq!(
            public.map(|s| (s.shareable, s.lifetime)),
            Some((true, Some(Duration::from_secs(60))))
        );
        let shared_max = storable(&response(&[("cache-control", "s-maxage=5, max-age=60")]), true);
        assert_eq!(shared_max.and_then(|s| s.lifetime), Some(Duration::from_secs(5)));
        for stale in ["max-age=0, must-revalidate", "s-maxage=0", "public, max-age=0"] {
            assert_eq!(
                storable(&response(&[("cache-control", stale)]), true),
                None,
                "{stale}"
            );
        }
    }
}
