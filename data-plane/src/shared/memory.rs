//! Limits kept in this process: the backend of `pylon dev` and single-node
//! use, and the per-node fallback while Redis is unreachable (fail-open).
//!
//! The arithmetic is the Redis script's: a token bucket refilled by elapsed
//! time and capped at its burst, and a quota counter per calendar period. A
//! decision takes one token from *every* limit that applies or from none, so
//! a request refused by the stage does not use up its key's allowance.

use super::Decision;
use crate::config::limits::{Limit, LimitKind};
use pylon_common::quota::{Window, window_at};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How many decisions between sweeps of idle counters.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
enum Counter {
    /// `full_at`: when the refill will have filled it (then it equals a new one).
    Bucket {
        tokens: f64,
        at: Instant,
        full_at: Instant,
    },
    Quota {
        start: i64,
        used: u64,
    },
}

#[derive(Default)]
pub struct MemoryLimits {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    counters: HashMap<Arc<str>, Counter>,
    decisions: u64,
}

impl MemoryLimits {
    pub fn decide(&self, limits: &[&Limit]) -> Decision {
        let now = Instant::now();
        let today = unix_now();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.decisions += 1;
        if table.decisions.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut table.counters, now, today);
        }
        let mut refusal: Option<Decision> = None;
        for limit in limits {
            let counter = table
                .counters
                .entry(limit.id.clone())
                .or_insert_with(|| new_counter(limit.kind, now));
            match (limit.kind, counter) {
                (LimitKind::Rate { rate, burst }, Counter::Bucket { tokens, at, full_at }) => {
                    refill(tokens, at, now, rate, burst);
                    // (After this request takes its token, at worst.)
                    *full_at = now + seconds((f64::from(burst) - (*tokens - 1.0).max(0.0)) / rate);
                    if *tokens < 1.0 {
                        let wait = seconds((1.0 - *tokens) / rate);
                        refusal = refusal.or(Some(Decision::Throttled { retry_after: wait }));
                    }
                }
                (
                    LimitKind::Quota {
                        limit: max,
                        period,
                        offset,
                    },
                    Counter::Quota { start, used },
                ) => {
                    let window = window_at(period, offset, today);
                    if *start != window.start {
                        (*start, *used) = (window.start, 0);
                    }
                    if *used >= max {
                        let wait = Duration::from_secs(window.end_secs().saturating_sub(today).max(1) as u64);
                        // A quota refusal says more than a throttle: report it.
                        refusal = Some(Decision::QuotaExceeded { retry_after: wait });
                    }
                }
                (kind, counter) => *counter = new_counter(kind, now),
            }
        }
        if let Some(refusal) = refusal {
            return refusal;
        }
        for limit in limits {
            match table.counters.get_mut(&limit.id) {
                Some(Counter::Bucket { tokens, .. }) => *tokens -= 1.0,
                Some(Counter::Quota { used, .. }) => *used += 1,
                None => {}
            }
        }
        Decision::Admit
    }

    /// Requests counted against quota `id` in `window`.
    pub fn used(&self, id: &str, window: Window) -> u64 {
        match self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters
            .get(id)
        {
            Some(Counter::Quota { start, used }) if *start == window.start => *used,
            _ => 0,
        }
    }

    pub fn reset(&self, id: &str) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters
            .remove(id);
    }
}

fn new_counter(kind: LimitKind, now: Instant) -> Counter {
    match kind {
        LimitKind::Rate { burst, .. } => Counter::Bucket {
            tokens: f64::from(burst),
            at: now,
            full_at: now,
        },
        LimitKind::Quota { .. } => Counter::Quota {
            start: i64::MIN,
            used: 0,
        },
    }
}

fn refill(tokens: &mut f64, at: &mut Instant, now: Instant, rate: f64, burst: u32) {
    let elapsed = now.saturating_duration_since(*at).as_secs_f64();
    *tokens = (*tokens + elapsed * rate).min(f64::from(burst));
    *at = now;
}

/// Drops buckets that have been full again for a minute (indistinguishable
/// from new ones) and quota counters of periods long gone.
fn sweep(counters: &mut HashMap<Arc<str>, Counter>, now: Instant, today: i64) {
    counters.retain(|_, counter| match counter {
        Counter::Bucket { full_at, .. } => now < *full_at + Duration::from_secs(60),
        Counter::Quota { start, .. } => today / 86_400 - *start < 40,
    });
}

/// A wait in seconds as a Duration (absurd ones capped at a day).
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(86_400))
}

pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One token bucket of this node alone (the node-wide account limit).
pub struct LocalBucket {
    rate: f64,
    burst: u32,
    state: Mutex<(f64, Instant)>,
}

impl LocalBucket {
    pub fn new(rate: f64, burst: u32) -> LocalBucket {
        LocalBucket {
            rate,
            burst,
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token, or says how long until there is one.
    pub fn take(&self) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, at) = &mut *state;
        refill(tokens, at, Instant::now(), self.rate, self.burst);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(seconds((1.0 - *tokens) / self.rate))
        }
    }

    /// Gives back a token taken for a request that was then refused.
    pub fn give_back(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = (state.0 + 1.0).min(f64::from(self.burst));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::config::v1::quota::Period;

    fn rate(id: &str, rate: f64, burst: u32) -> Limit {
        Limit {
            id: id.into(),
            kind: LimitKind::Rate { rate, burst },
        }
    }

    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_the_wait() {
        let limits = MemoryLimits::default();
        let stage = rate("s", 1.0, 3);
        let admitted = (0..10)
            .filter(|_| limits.decide(&[&stage]) == Decision::Admit)
            .count();
        assert_eq!(admitted, 3);
        match limits.decide(&[&stage]) {
            Decision::Throttled { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
            other => panic!("expected a throttle, got {other:?}"),
        }
    }

    #[test]
    fn a_request_refused_by_one_limit_takes_nothing_from_the_others() {
        let limits = MemoryLimits::default();
        let (key, stage) = (rate("key", 0.001, 5), rate("stage", 0.001, 2));
        let admitted = (0..5)
            .filter(|_| limits.decide(&[&key, &stage]) == Decision::Admit)
            .count();
        assert_eq!(admitted, 2, "the stage allows 2");
        // The key still has 3 of its 5 tokens.
        let admitted = (0..5)
            .filter(|_| limits.decide(&[&key]) == Decision::Admit)
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn a_quota_stops_at_its_limit_until_reset() {
        let limits = MemoryLimits::default();
        let quota = Limit {
            id: "q".into(),
            kind: LimitKind::Quota {
                limit: 4,
                period: Period::Day,
                offset: 0,
            },
        };
        let admitted = (0..10)
            .filter(|_| limits.decide(&[&quota]) == Decision::Admit)
            .count();
        assert_eq!(admitted, 4);
        assert!(matches!(limits.decide(&[&quota]), Decision::QuotaExceeded { .. }));
        let window = window_at(Period::Day, 0, unix_now());
        assert_eq!(limits.used("q", window), 4);
        limits.reset("q");
        assert_eq!(limits.used("q", window), 0);
        assert_eq!(limits.decide(&[&quota]), Decision::Admit);
    }
}
