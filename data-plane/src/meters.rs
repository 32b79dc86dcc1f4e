//! Per-route request meters: what every finished request adds to its
//! route's counts, bound to the route once per config snapshot
//! ([`Meters::bind`], called by [`crate::config::compile`]) so the hot path
//! does no lookup and hashes no attributes — a few relaxed atomic adds on
//! the recording thread's shard ([`RouteMeter::record`]).
//!
//! Two readers take the counts, neither on the hot path:
//! - OpenTelemetry's observable counters (`pylon.requests`, `…4xx`, cache
//!   hits …; [`crate::telemetry::metrics`]), cumulative, at every export or
//!   scrape ([`Meters::observe`]);
//! - the config stream's heartbeat, every 10 seconds: the counts since the
//!   last heartbeat, with the latency histograms, for the control plane's
//!   console (`GetStageMetrics`; [`Meters::take`]).
//!
//! A series lives as long as the process, as OpenTelemetry's SDK keeps a
//! cumulative histogram's: a route's counters survive redeployments and
//! snapshots, and a route that leaves the config and comes back goes on
//! from its last counts, in step with its histograms. Series are made by
//! the config (its routes, and per stage at most ten for requests that matched
//! no route: one per standard method and `_OTHER`), never by what a client
//! sends.
//!
//! Memory: ~400 bytes per shard per series; a shard per proxy worker, at
//! most [`MAX_SHARDS`].

use crate::context::{CacheStatus, Outcome};
use opentelemetry::KeyValue;
use opentelemetry::metrics::BoundHistogram;
use pylon_common::traffic::{BUCKETS, bucket};
use pylon_proto::publish::v1::{RouteTraffic, TrafficCounts};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The most shards a meter is spread over.
pub const MAX_SHARDS: usize = 8;

/// The method dimension of requests that matched no route: the standard
/// methods, and `_OTHER` for the rest (OpenTelemetry's HTTP conventions),
/// so clients cannot mint series.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

/// The index in [`METHODS`] of `method`'s dimension.
pub fn method_index(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

/// Which count an OpenTelemetry counter reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Requests,
    Errors4xx,
    Errors5xx,
    CacheHits,
    CacheMisses,
    Throttled,
    QuotaExceeded,
}

/// (API, stage, route key, method dimension).
type SeriesKey = (Arc<str>, Arc<str>, Box<str>, Box<str>);
/// (API, stage, route key): what the console counts by.
type RouteId = (Arc<str>, Arc<str>, Box<str>);

struct Series {
    meter: Arc<RouteMeter>,
    /// What the heartbeats have reported so far.
    reported: Totals,
}

/// Every series of the node.
pub struct Meters {
    series: Mutex<HashMap<SeriesKey, Series>>,
    shards: usize,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").field("shards", &self.shards).finish()
    }
}

impl Default for Meters {
    /// One shard per worker of the default count, at most [`MAX_SHARDS`].
    fn default() -> Self {
        Meters::with_shards(crate::workers::default_count())
    }
}

impl Meters {
    /// A registry whose meters have `shards` shards (1 to [`MAX_SHARDS`]).
    pub fn with_shards(shards: usize) -> Meters {
        Meters {
            series: Mutex::default(),
            shards: shards.clamp(1, MAX_SHARDS),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SeriesKey, Series>> {
        // Critical sections only insert, read and retain; a panic inside
        // one leaves the map usable.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The meter of `api`'s `stage`'s `route_key` with the method
    /// dimension `method` (the route key's method; for requests that
    /// matched no route, route key `""` and one of [`METHODS`]); the same
    /// meter as long as a config holds it.
    pub fn bind(&self, api: &Arc<str>, stage: &Arc<str>, route_key: &str, method: &str) -> Arc<RouteMeter> {
        let key: SeriesKey = (api.clone(), stage.clone(), route_key.into(), method.into());
        let mut series = self.lock();
        let series = series.entry(key).or_insert_with(|| {
            let path = route_key.split_once(' ').map_or(route_key, |(_, path)| path);
            Series {
                meter: Arc::new(RouteMeter {
                    api: api.clone(),
                    stage: stage.clone(),
                    route_key: route_key.into(),
                    attributes: Arc::new([
                        KeyValue::new("pylon.api", opentelemetry::StringValue::from(api.clone())),
                        KeyValue::new("pylon.stage", opentelemetry::StringValue::from(stage.clone())),
                        KeyValue::new("http.route", path.to_owned()),
                        KeyValue::new("http.request.method", method.to_owned()),
                    ]),
                    shards: (0..self.shards).map(|_| Shard::default()).collect(),
                    histograms: OnceLock::new(),
                }),
                reported: Totals::default(),
            }
        });
        series.meter.clone()
    }

    /// Calls `each` with every series' dimensions and its `count` since the
    /// series was made (for OpenTelemetry's observable counters).
    pub fn observe(&self, count: Count, mut each: impl FnMut(u64, &[KeyValue])) {
        for series in self.lock().values() {
            each(series.meter.count(count), &series.meter.attributes);
        }
    }

    /// The counts since the last call, per (API, stage, route key), with
    /// requests that matched no route under the route key `""`.
    pub fn take(&self) -> Vec<RouteTraffic> {
        let mut merged: HashMap<RouteId, TrafficCounts> = HashMap::new();
        for series in self.lock().values_mut() {
            let totals = series.meter.totals();
            let (counts, reported) = totals.since(&series.reported);
            if counts.requests > 0 {
                let meter = &series.meter;
                let id = (meter.api.clone(), meter.stage.clone(), meter.route_key.clone());
                pylon_common::traffic::add(merged.entry(id).or_default(), &counts);
            }
            series.reported = reported;
        }
        merged
            .into_iter()
            .map(|((api, stage, route_key), counts)| RouteTraffic {
                api: api.to_string(),
                stage: stage.to_string(),
                route_key: route_key.into(),
                counts: Some(counts),
            })
            .collect()
    }
}

/// One series' counts, spread over per-thread shards.
pub struct RouteMeter {
    api: Arc<str>,
    stage: Arc<str>,
    route_key: Box<str>,
    attributes: Arc<[KeyValue]>,
    shards: Box<[Shard]>,
    histograms: OnceLock<Histograms>,
}

/// A series' OpenTelemetry latency histograms (request, integration),
/// bound to its dimensions.
pub type Histograms = [BoundHistogram<f64>; 2];

impl std::fmt::Debug for RouteMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMeter")
            .field("api", &self.api)
            .field("stage", &self.stage)
            .field("route_key", &self.route_key)
            .finish()
    }
}

/// A thread's counts of one series, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    errors_4xx: AtomicU64,
    errors_5xx: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    throttled: AtomicU64,
    quota_exceeded: AtomicU64,
    /// Nanoseconds.
    latency_sum: AtomicU64,
    integration_sum: AtomicU64,
    /// Requests by latency bucket (`pylon_common::traffic::bucket`): they
    /// add up to the requests.
    latency: [AtomicU64; BUCKETS],
    /// Integration calls by latency bucket.
    integration: [AtomicU64; BUCKETS],
}

/// This thread's shard among `n`: a proxy worker's own when there are as
/// many shards as workers ([`crate::workers::current`]); threads outside
/// the workers share the last worker's.
fn shard_index(n: usize) -> usize {
    crate::workers::current() % n
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RouteMeter {
    /// The series' histograms, bound by `bind` at its first request (so
    /// only routes with traffic count against the SDK's cardinality
    /// limit, as with unbound recordings).
    pub fn histograms(&self, bind: impl FnOnce(&[KeyValue]) -> Histograms) -> &Histograms {
        self.histograms.get_or_init(|| bind(&self.attributes))
    }

    /// Counts one finished request (or WebSocket message).
    pub fn record(&self, outcome: &Outcome) {
        let Some(shard) = self.shards.get(shard_index(self.shards.len())) else {
            return;
        };
        let add = |counter: &AtomicU64, n: u64| {
            counter.fetch_add(n, Relaxed);
        };
        // One duration into its histogram: its bucket and the sum.
        let time = |buckets: &[AtomicU64; BUCKETS], sum: &AtomicU64, took: std::time::Duration| {
            if let Some(slot) = buckets.get(bucket(took.as_secs_f64() * 1e3)) {
                add(slot, 1);
            }
            add(sum, nanos(took));
        };
        time(&shard.latency, &shard.latency_sum, outcome.latency);
        match outcome.status {
            400..=499 => add(&shard.errors_4xx, 1),
            500..=599 => add(&shard.errors_5xx, 1),
            _ => {}
        }
        match outcome.cache {
            Some(CacheStatus::Hit) => add(&shard.cache_hits, 1),
            Some(CacheStatus::Miss) => add(&shard.cache_misses, 1),
            _ => {}
        }
        if outcome.throttled {
            add(&shard.throttled, 1);
        }
        if outcome.quota_exceeded {
            add(&shard.quota_exceeded, 1);
        }
        if let Some(integration) = outcome.integration_latency {
            time(&shard.integration, &shard.integration_sum, integration);
        }
    }

    /// One count, summed over the shards.
    fn count(&self, count: Count) -> u64 {
        fn load(c: &AtomicU64) -> u64 {
            c.load(Relaxed)
        }
        let sum = |pick: fn(&Shard) -> u64| self.shards.iter().map(pick).fold(0u64, u64::wrapping_add);
        match count {
            Count::Requests => sum(|s| s.latency.iter().map(load).fold(0, u64::wrapping_add)),
            Count::Errors4xx => sum(|s| load(&s.errors_4xx)),
            Count::Errors5xx => sum(|s| load(&s.errors_5xx)),
            Count::CacheHits => sum(|s| load(&s.cache_hits)),
            Count::CacheMisses => sum(|s| load(&s.cache_misses)),
            Count::Throttled => sum(|s| load(&s.throttled)),
            Count::QuotaExceeded => sum(|s| load(&s.quota_exceeded)),
        }
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in &self.shards {
            let load = |c: &AtomicU64| c.load(Relaxed);
            totals.errors_4xx = totals.errors_4xx.wrapping_add(load(&shard.errors_4xx));
            totals.errors_5xx = totals.errors_5xx.wrapping_add(load(&shard.errors_5xx));
            totals.cache_hits = totals.cache_hits.wrapping_add(load(&shard.cache_hits));
            totals.throttled = totals.throttled.wrapping_add(load(&shard.throttled));
            totals.latency_sum = totals.latency_sum.wrapping_add(load(&shard.latency_sum));
            totals.integration_sum = totals.integration_sum.wrapping_add(load(&shard.integration_sum));
            for (total, slot) in totals.latency.iter_mut().zip(&shard.latency) {
                *total = total.wrapping_add(load(slot));
            }
            for (total, slot) in totals.integration.iter_mut().zip(&shard.integration) {
                *total = total.wrapping_add(load(slot));
            }
        }
        totals
    }
}

/// A series' cumulative counts, as the heartbeats report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Totals {
    errors_4xx: u64,
    errors_5xx: u64,
    cache_hits: u64,
    throttled: u64,
    /// Nanoseconds.
    latency_sum: u64,
    integration_sum: u64,
    latency: [u64; BUCKETS],
    integration: [u64; BUCKETS],
}

impl Totals {
    /// The counts from `reported` to `self`, and what is reported after
    /// them. The counters of one request are separate atomics, so a
    /// request being recorded may show in some and not yet in others: the
    /// counts are cut to what the requests counted (the histogram's) can
    /// hold, and the rest waits for the next heartbeat, so every report is
    /// consistent (`pylon_common::traffic::plausible`).
    fn since(&self, reported: &Totals) -> (TrafficCounts, Totals) {
        let delta = |now: u64, then: u64| now.wrapping_sub(then);
        let buckets = |now: &[u64; BUCKETS], then: &[u64; BUCKETS]| -> [u64; BUCKETS] {
            std::array::from_fn(|i| delta(now[i], then[i]))
        };
        let latency = buckets(&self.latency, &reported.latency);
        let requests = latency.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let mut integration = buckets(&self.integration, &reported.integration);
        let mut integration_sum = delta(self.integration_sum, reported.integration_sum);
        if integration.iter().fold(0u64, |a, b| a.saturating_add(*b)) > requests {
            integration = [0; BUCKETS];
            integration_sum = 0;
        }
        let errors_4xx = delta(self.errors_4xx, reported.errors_4xx).min(requests);
        let errors_5xx = delta(self.errors_5xx, reported.errors_5xx).min(requests - errors_4xx);
        let cache_hits = delta(self.cache_hits, reported.cache_hits).min(requests);
        let throttled = delta(self.throttled, reported.throttled).min(requests);
        let latency_sum = delta(self.latency_sum, reported.latency_sum);
        let next = Totals {
            errors_4xx: reported.errors_4xx.wrapping_add(errors_4xx),
            errors_5xx: reported.errors_5xx.wrapping_add(errors_5xx),
            cache_hits: reported.cache_hits.wrapping_add(cache_hits),
            throttled: reported.throttled.wrapping_add(throttled),
            latency_sum: self.latency_sum,
            integration_sum: reported.integration_sum.wrapping_add(integration_sum),
            latency: self.latency,
            integration: std::array::from_fn(|i| reported.integration[i].wrapping_add(integration[i])),
        };
        let counts = TrafficCounts {
            requests,
            errors_4xx,
            errors_5xx,
            cache_hits,
            throttled,
            latency_ms_sum: latency_sum as f64 / 1e6,
            latency_buckets: latency.to_vec(),
            integrations: integration.iter().sum(),
            integration_ms_sum: integration_sum as f64 / 1e6,
            integration_buckets: integration.to_vec(),
        };
        (counts, next)
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

    fn names() -> (Arc<str>, Arc<str>) {
        ("pets".into(), "prod".into())
    }

    #[test]
    fn requests_are_counted_per_route_and_taken_once() {
        let meters = Meters::with_shards(2);
        let (api, stage) = names();
        let pets = meters.bind(&api, &stage, "GET /pets", "GET");
        pets.record(&outcome(200, 3));
        pets.record(&Outcome {
            integration_latency: Some(Duration::from_millis(30)),
            ..outcome(503, 40)
        });
        meters.bind(&api, &stage, "", "GET").record(&outcome(404, 1));
        meters.bind(&api, &stage, "", "_OTHER").record(&outcome(405, 1));
        let mut taken = meters.take();
        taken.sort_by(|a, b| a.route_key.cmp(&b.route_key));
        assert_eq!(taken.len(), 2, "no route's methods merge in the console");
        let counts = taken[1].counts.as_ref().expect("counts");
        assert_eq!(
            (counts.requests, counts.errors_5xx, counts.integrations),
            (2, 1, 1)
        );
        assert_eq!(counts.latency_buckets.iter().sum::<u64>(), 2);
        assert!((counts.latency_ms_sum - 43.0).abs() < 1e-6);
        assert!(pylon_common::traffic::plausible(counts));
        assert_eq!(
            taken[0].counts.as_ref().map(|c| (c.requests, c.errors_4xx)),
            Some((2, 2))
        );
        assert!(meters.take().is_empty(), "taken once");
        pets.record(&outcome(200, 1));
        assert_eq!(meters.take().len(), 1, "then counted again");
    }

    #[test]
    fn a_route_keeps_its_counters_across_snapshots_and_after_it_leaves_the_config() {
        let meters = Meters::with_shards(1);
        let (api, stage) = names();
        let first = meters.bind(&api, &stage, "GET /pets", "GET");
        first.record(&outcome(200, 1));
        let second = meters.bind(&api, &stage, "GET /pets", "GET");
        assert!(
            Arc::ptr_eq(&first, &second),
            "a new snapshot binds the same meter"
        );
        second.record(&outcome(500, 1));
        let requests = || {
            let mut requests = Vec::new();
            meters.observe(Count::Requests, |n, _| requests.push(n));
            requests
        };
        assert_eq!(requests(), [2]);
        drop((first, second));
        assert_eq!(meters.take().len(), 1, "its last counts are reported");
        assert_eq!(requests(), [2], "and it is still exported");
        meters
            .bind(&api, &stage, "GET /pets", "GET")
            .record(&outcome(200, 1));
        assert_eq!(requests(), [3], "back in a config, it goes on from there");
    }

    #[test]
    fn counts_without_their_request_wait_for_the_next_heartbeat() {
        let meters = Meters::with_shards(1);
        let (api, stage) = names();
        let meter = meters.bind(&api, &stage, "GET /", "GET");
        // A request half recorded: its status and backend call counted,
        // not yet its latency.
        meter.shards[0].errors_5xx.fetch_add(1, Relaxed);
        meter.shards[0].integration[0].fetch_add(1, Relaxed);
        assert!(meters.take().is_empty(), "no request counted yet");
        meter.shards[0].latency[0].fetch_add(1, Relaxed);
        let taken = meters.take();
        let counts = taken[0].counts.as_ref().expect("counts");
        assert_eq!(
            (counts.requests, counts.errors_5xx, counts.integrations),
            (1, 1, 1)
        );
        assert!(pylon_common::traffic::plausible(counts));
    }

    #[test]
    fn clients_cannot_mint_series() {
        assert_eq!(METHODS[method_index("GET")], "GET");
        assert_eq!(METHODS[method_index("BREW")], "_OTHER");
        assert_eq!(METHODS[method_index("get")], "_OTHER");
    }
}
