//! What data-plane nodes must agree on — how much of each limit is used,
//! and (in [`crate::cache`]) what is cached — kept either in this process
//! (`memory`, the default, for `pylon dev` and single nodes) or in Redis
//! (single server, Sentinel or Cluster), shared by every node.
//!
//! With Redis, a stage whose limits cannot be consulted (Redis down, slow,
//! breaker open) follows its policy: fail open — this node enforces the
//! same limits on its own until Redis is back — or fail closed (503). Both
//! are counted and logged, never silent.

pub mod lease;
pub mod memory;
pub mod redis;

use crate::config::limits::Limit;
use lease::Leases;
use memory::{LocalBucket, MemoryLimits};
use pylon_common::quota::Window;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// AWS's account-level default, applied per node.
pub const DEFAULT_ACCOUNT_RATE: f64 = 10_000.0;
pub const DEFAULT_ACCOUNT_BURST: u32 = 5_000;
/// Fallback decisions between two log lines about them.
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Admit,
    Throttled { retry_after: Duration },
    QuotaExceeded { retry_after: Duration },
}

#[derive(Clone, Debug)]
pub struct SharedOptions {
    /// `None`: in-process.
    pub redis: Option<redis::RedisOptions>,
    /// The node-wide limit every request draws on (0: none).
    pub account_rate: f64,
    pub account_burst: u32,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions {
            redis: None,
            account_rate: DEFAULT_ACCOUNT_RATE,
            account_burst: DEFAULT_ACCOUNT_BURST,
        }
    }
}

/// Decisions taken while the shared backend could not be asked.
#[derive(Default, Debug)]
pub struct FallbackCounts {
    /// Decided by this node alone (fail-open).
    pub open: AtomicU64,
    /// Refused with 503 (fail-closed).
    pub closed: AtomicU64,
}

pub struct SharedState {
    /// The backend of `memory` mode, and the per-node fallback of `redis`.
    pub memory: MemoryLimits,
    pub leases: Option<Arc<Leases>>,
    account: LocalBucket,
    pub fallbacks: FallbackCounts,
    /// The same counts, exported (`pylon.shared.fallbacks{policy}`).
    fallback_metric: opentelemetry::metrics::Counter<u64>,
    last_log: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("redis", &self.redis().map(|r| r.describe.as_str()))
            .field("fallbacks", &self.fallbacks)
            .finish_non_exhaustive()
    }
}

/// The shared limits could not be consulted in time.
#[derive(Debug, thiserror::Error)]
#[error("shared limits unavailable: {0}")]
pub struct Unavailable(pub String);

impl SharedState {
    /// Starts the backend (must run inside a Tokio runtime). A Redis that
    /// is down is not an error: the node connects when it comes up.
    pub fn start(options: &SharedOptions) -> Result<Arc<SharedState>, String> {
        let leases = match &options.redis {
            Some(redis) => Some(Leases::start(redis::Redis::start(redis)?)),
            None => None,
        };
        Ok(Arc::new(SharedState {
            memory: MemoryLimits::default(),
            leases,
            account: LocalBucket::new(options.account_rate, options.account_burst),
            fallbacks: FallbackCounts::default(),
            fallback_metric: opentelemetry::global::meter("pylon-data-plane")
                .u64_counter("pylon.shared.fallbacks")
                .with_description("Limit decisions made without Redis (policy=fail_open|fail_closed)")
                .build(),
            last_log: std::sync::Mutex::new(None),
        }))
    }

    pub fn redis(&self) -> Option<&Arc<redis::Redis>> {
        self.leases.as_ref().map(|l| l.redis())
    }

    /// Admits or refuses a request that draws on `limits` (and on the
    /// node-wide account limit).
    pub async fn decide(&self, limits: &[&Arc<Limit>], fail_closed: bool) -> Result<Decision, Unavailable> {
        if let Some(leases) = &self.leases
            && !limits.is_empty()
        {
            // One deadline for the whole decision, however many leases it
            // tops up and whoever it waits behind.
            let redis = leases.redis();
            return match tokio::time::timeout(redis.timeout(), leases.decide(limits, &self.account)).await {
                Ok(Ok(decision)) => Ok(decision),
                Ok(Err(e)) => self.fall_back(limits, fail_closed, &e.to_string()),
                Err(_) => {
                    redis.note_timeout();
                    let why = redis::RedisError::Timeout(redis.timeout()).to_string();
                    self.fall_back(limits, fail_closed, &why)
                }
            };
        }
        Ok(self.decide_here(limits))
    }

    fn decide_here(&self, limits: &[&Arc<Limit>]) -> Decision {
        if let Err(wait) = self.account.take() {
            return Decision::Throttled { retry_after: wait };
        }
        let limits: smallvec::SmallVec<[&Limit; 5]> = limits.iter().map(|l| l.as_ref()).collect();
        let decision = self.memory.decide(&limits);
        if decision != Decision::Admit {
            self.account.give_back();
        }
        decision
    }

    fn fall_back(
        &self,
        limits: &[&Arc<Limit>],
        fail_closed: bool,
        why: &str,
    ) -> Result<Decision, Unavailable> {
        let counter = if fail_closed {
            &self.fallbacks.closed
        } else {
            &self.fallbacks.open
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let policy = if fail_closed { "fail_closed" } else { "fail_open" };
        self.fallback_metric
            .add(1, &[opentelemetry::KeyValue::new("policy", policy)]);
        self.log_fallback(why);
        if fail_closed {
            Err(Unavailable(why.to_owned()))
        } else {
            Ok(self.decide_here(limits))
        }
    }

    /// One warning per few seconds while decisions fall back, with counts.
    fn log_fallback(&self, why: &str) {
        let mut last = self
            .last_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            error = why,
            fail_open_total = self.fallbacks.open.load(Ordering::Relaxed),
            fail_closed_total = self.fallbacks.closed.load(Ordering::Relaxed),
            "shared limits unavailable: stages decide on this node alone (fail-open) or refuse with 503 (fail-closed)"
        );
    }

    /// Quota used by `id` in `window`.
    pub async fn quota_used(&self, id: &str, window: Window) -> Result<u64, String> {
        match self.redis() {
            Some(redis) => lease::quota_used(redis, id, window.start)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(self.memory.used(id, window)),
        }
    }

    pub async fn quota_reset(&self, id: &str) -> Result<(), String> {
        self.memory.reset(id);
        match self.redis() {
            Some(redis) => lease::quota_reset(redis, id).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}
