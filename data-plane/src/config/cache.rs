//! Response-cache settings, compiled once per snapshot: the stage's (enabled,
//! TTL, capacity, encryption, who may invalidate, the generation a flush
//! moves) and each route's override (enable for other methods, TTL, which
//! request parameters make up the key, whether principals share entries).

use pylon_proto::config::v1::cache_settings::UnauthorizedInvalidation;
use pylon_proto::config::v1::{RouteCache, Stage};
use std::collections::HashSet;
use std::time::Duration;

pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Larger responses are passed through, not cached (AWS's limit).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// What a stage caches at most on one node when it names no capacity.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;

#[derive(Debug)]
pub struct StageCache {
    pub ttl: Duration,
    pub capacity_bytes: u64,
    pub encrypted: bool,
    pub unauthorized: UnauthorizedInvalidation,
    pub invalidation_scopes: Vec<String>,
    pub invalidation_keys: HashSet<String>,
    pub generation: u64,
    /// The cluster whose config this is: part of every key, so two
    /// clusters sharing one Redis never read each other's entries.
    pub cluster: String,
    /// The canary reads and fills the stage's entries instead of its own.
    pub canary_uses_stage_cache: bool,
    /// Requests with a Cookie are cached like any other.
    pub share_requests_with_cookies: bool,
    /// Whether this node said it cannot cache the stage (it encrypts and
    /// the node has no cache key): once per stage and snapshot.
    pub warned_no_key: std::sync::atomic::AtomicBool,
}

impl StageCache {
    /// `stage`'s cache in cluster `cluster`; `None` when the stage does not
    /// cache.
    pub fn compile(cluster: &str, stage: &Stage) -> Option<StageCache> {
        let cache = stage.cache.as_ref().filter(|c| c.enabled)?;
        let ttl = cache
            .ttl_seconds
            .map_or(DEFAULT_TTL, |s| Duration::from_secs(u64::from(s)));
        Some(StageCache {
            ttl,
            capacity_bytes: if cache.capacity_bytes == 0 {
                DEFAULT_CAPACITY
            } else {
                cache.capacity_bytes
            },
            encrypted: cache.encrypted,
            unauthorized: cache.unauthorized_invalidation(),
            invalidation_scopes: cache.invalidation_scopes.clone(),
            invalidation_keys: cache.invalidation_api_key_ids.iter().cloned().collect(),
            generation: stage.cache_generation,
            cluster: cluster.to_owned(),
            canary_uses_stage_cache: stage.canary.as_ref().is_some_and(|c| c.use_stage_cache),
            share_requests_with_cookies: cache.share_requests_with_cookies,
            warned_no_key: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// A request parameter that is part of the cache key.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyParameter {
    Path(String),
    Query(String),
    Header(http::HeaderName),
}

/// A route's cache override.
#[derive(Debug, Default)]
pub struct RouteCacheSettings {
    /// `Some(true)` caches a non-GET route; `Some(false)` turns caching off.
    pub enabled: Option<bool>,
    pub ttl: Option<Duration>,
    pub key_parameters: Vec<KeyParameter>,
    /// Entries are shared by every caller instead of kept per principal.
    pub shared: bool,
}

impl RouteCacheSettings {
    pub fn compile(cache: &RouteCache) -> Result<RouteCacheSettings, String> {
        let mut key_parameters = Vec::new();
        for parameter in &cache.key_parameters {
            let p = if let Some(name) = parameter.strip_prefix("path.") {
                KeyParameter::Path(name.to_owned())
            } else if let Some(name) = parameter.strip_prefix("query.") {
                KeyParameter::Query(name.to_owned())
            } else if let Some(name) = parameter.strip_prefix("header.") {
                KeyParameter::Header(
                    http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| format!("cache.key_parameters: {parameter}: {e}"))?,
                )
            } else {
                return Err(format!(
                    "cache.key_parameters: {parameter}: not path., query. or header."
                ));
            };
            key_parameters.push(p);
        }
        Ok(RouteCacheSettings {
            enabled: cache.enabled,
            ttl: cache.ttl_seconds.map(|s| Duration::from_secs(u64::from(s))),
            key_parameters,
            shared: cache.share_across_principals,
        })
    }
}
