//! Per-route traffic counts for the control plane's console: every
//! finished request adds to its (API, stage, route key)'s counts, and the
//! config stream's heartbeat takes them every 10 seconds
//! ([`Traffic::take`]) — the numbers behind `GetStageMetrics`, so a
//! cluster without Prometheus still shows what CloudWatch would.
//!
//! Cheap on the hot path: counts go to one of [`SHARDS`] maps chosen by the
//! recording thread (a proxy worker is one thread, so its shard's lock is
//! uncontended), found by `&str` without allocating. At most
//! [`MAX_ENTRIES`] routes per shard between two heartbeats; further ones
//! are counted under their stage's `(other)` route.

use crate::context::{CacheStatus, Outcome};
use pylon_common::traffic::{BUCKETS, bucket};
use pylon_proto::publish::v1::{RouteTraffic, TrafficCounts};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Maps the counts are spread over.
pub const SHARDS: usize = 8;
/// Routes one shard counts between two heartbeats.
pub const MAX_ENTRIES: usize = 5_000;
/// The route key routes beyond [`MAX_ENTRIES`] are counted under.
pub const OTHER: &str = "(other)";

type Routes = HashMap<Box<str>, TrafficCounts>;
type Stages = HashMap<Box<str>, Routes>;
/// (API, stage, route key).
type RouteId = (Box<str>, Box<str>, Box<str>);

#[derive(Default)]
struct Shard {
    apis: HashMap<Box<str>, Stages>,
    entries: usize,
}

/// The counts since the last heartbeat.
pub struct Traffic {
    shards: [Mutex<Shard>; SHARDS],
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traffic")
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

/// This thread's shard (threads are numbered as they first record).
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Traffic {
    /// Counts one finished request of `api`'s `stage` (`route_key` empty
    /// when no route matched).
    pub fn record(&self, api: &str, stage: &str, route_key: &str, outcome: &Outcome) {
        let Ok(mut shard) = self.shards[shard_index()].lock() else {
            return;
        };
        let shard = &mut *shard;
        let full = shard.entries >= MAX_ENTRIES;
        let stages = match shard.apis.get_mut(api) {
            Some(stages) => stages,
            None => shard.apis.entry(api.into()).or_default(),
        };
        let routes = match stages.get_mut(stage) {
            Some(routes) => routes,
            None => stages.entry(stage.into()).or_default(),
        };
        let counts = match routes.contains_key(route_key) {
            true => routes.get_mut(route_key),
            false => {
                let key = if full { OTHER } else { route_key };
                if !routes.contains_key(key) {
                    shard.entries += 1;
                }
                Some(routes.entry(key.into()).or_insert_with(|| TrafficCounts {
                    latency_buckets: vec![0; BUCKETS],
                    integration_buckets: vec![0; BUCKETS],
                    ..Default::default()
                }))
            }
        };
        let Some(counts) = counts else {
            return;
        };
        counts.requests += 1;
        match outcome.status {
            400..=499 => counts.errors_4xx += 1,
            500..=599 => counts.errors_5xx += 1,
            _ => {}
        }
        if outcome.cache == Some(CacheStatus::Hit) {
            counts.cache_hits += 1;
        }
        if outcome.throttled {
            counts.throttled += 1;
        }
        let ms = outcome.latency.as_secs_f64() * 1e3;
        counts.latency_ms_sum += ms;
        if let Some(slot) = counts.latency_buckets.get_mut(bucket(ms)) {
            *slot += 1;
        }
        if let Some(integration) = outcome.integration_latency {
            counts.integrations += 1;
            let ms = integration.as_secs_f64() * 1e3;
            counts.integration_ms_sum += ms;
            if let Some(slot) = counts.integration_buckets.get_mut(bucket(ms)) {
                *slot += 1;
            }
        }
    }

    /// Everything counted since the last call, merged over the shards.
    pub fn take(&self) -> Vec<RouteTraffic> {
        let mut merged: HashMap<RouteId, TrafficCounts> = HashMap::new();
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut shard) => std::mem::take(&mut *shard),
                Err(_) => continue,
            };
            for (api, stages) in taken.apis {
                for (stage, routes) in stages {
                    for (route, counts) in routes {
                        let into = merged.entry((api.clone(), stage.clone(), route)).or_default();
                        pylon_common::traffic::add(into, &counts);
                    }
                }
            }
        }
        merged
            .into_iter()
            .map(|((api, stage, route_key), counts)| RouteTraffic {
                api: api.into(),
                stage: stage.into(),
                route_key: route_key.into(),
                counts: Some(counts),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(status: u16, ms: u64) -> Outcome {
        Outcome {
            status,
            latency: Duration::from_millis(ms),
            ..Outcome::default()
        }
    }

    #[test]
    fn requests_are_counted_per_route_and_taken_once() {
        let traffic = Traffic::default();
        traffic.record("pets", "prod", "GET /pets", &outcome(200, 3));
        traffic.record("pets", "prod", "GET /pets", &outcome(503, 40));
        traffic.record("pets", "prod", "", &outcome(404, 1));
        let mut taken = traffic.take();
        taken.sort_by(|a, b| a.route_key.cmp(&b.route_key));
        assert_eq!(taken.len(), 2);
        let pets = taken[1].counts.as_ref().expect("counts");
        assert_eq!((pets.requests, pets.errors_5xx), (2, 1));
        assert_eq!(pets.latency_buckets.iter().sum::<u64>(), 2);
        assert_eq!(taken[0].counts.as_ref().map(|c| c.errors_4xx), Some(1));
        assert!(traffic.take().is_empty(), "taken once");
    }

    #[test]
    fn routes_beyond_the_limit_count_as_other() {
        let traffic = Traffic::default();
        for i in 0..MAX_ENTRIES + 10 {
            traffic.record("a", "s", &format!("GET /{i}"), &outcome(200, 1));
        }
        let taken = traffic.take();
        assert_eq!(taken.len(), MAX_ENTRIES + 1);
        let other = taken.iter().find(|t| t.route_key == OTHER).expect("other");
        assert_eq!(other.counts.as_ref().map(|c| c.requests), Some(10));
    }
}
