//! The traffic data planes report in their heartbeats, kept for the last
//! hour on the control-plane node that received it: per stage in
//! 10-second slots ([`SLOT_SECONDS`], the whole `TrafficCounts` with its
//! latency histogram), per route in one-minute slots (requests, 4xx, 5xx,
//! latency sum). `GetStageMetrics` merges every node's (see
//! [`super::directory`]), as the node list is merged.
//!
//! Bounded: at most [`MAX_STAGES`] stages and [`MAX_ROUTES`] routes on a
//! node (about 28 MiB when all are busy every slot); a route beyond them
//! is counted under its stage's `(other)`, a stage beyond them is dropped
//! (and counted in `dropped`). Counts that could not be real (more than a
//! billion requests in a report, outcomes above the requests, a histogram
//! that does not add up) are dropped too, and everything adds saturating:
//! a data-plane credential cannot break the store.

use pylon_common::traffic::{BUCKETS, LATENCY_BOUNDS_MS, add};
use pylon_proto::publish::v1::{RouteTotal, RouteTraffic, StageTraffic, TrafficCounts, TrafficSlot};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// A stage's slots, seconds.
pub const SLOT_SECONDS: i64 = 10;
/// How long counts are kept, seconds.
pub const WINDOW_SECONDS: i64 = 3600;
/// Stages one node keeps.
pub const MAX_STAGES: usize = 500;
/// Routes one node keeps, over every stage.
pub const MAX_ROUTES: usize = 10_000;
/// Entries of one heartbeat taken (a data plane sends at most this many).
pub const MAX_PER_HEARTBEAT: usize = pylon_common::traffic::MAX_PER_HEARTBEAT;
/// Longest API, stage or route name kept, bytes.
const MAX_NAME: usize = 512;

/// A route's counts in one minute.
#[derive(Clone, Copy, Default)]
struct RouteMinute {
    minute: i64,
    requests: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    latency_ms_sum: f64,
}

#[derive(Default)]
struct StageSeries {
    slots: VecDeque<(i64, TrafficCounts)>,
    routes: HashMap<String, VecDeque<RouteMinute>>,
}

#[derive(Default)]
struct Inner {
    stages: HashMap<(String, String), StageSeries>,
    routes: usize,
    dropped: u64,
}

/// This node's share of the cluster's traffic counts.
#[derive(Default)]
pub struct Traffic {
    inner: Mutex<Inner>,
}

impl Traffic {
    /// Adds a heartbeat's counts at `now` (seconds since the epoch).
    pub fn record(&self, reported: &[RouteTraffic], now: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        let slot = now - now.rem_euclid(SLOT_SECONDS);
        let minute = now - now.rem_euclid(60);
        for entry in reported.iter().take(MAX_PER_HEARTBEAT) {
            let Some(counts) = &entry.counts else { continue };
            if !pylon_common::traffic::plausible(counts) {
                inner.dropped = inner.dropped.saturating_add(1);
                continue;
            }
            if entry.api.len() > MAX_NAME || entry.stage.len() > MAX_NAME || entry.route_key.len() > MAX_NAME
            {
                continue;
            }
            let key = (entry.api.clone(), entry.stage.clone());
            if !inner.stages.contains_key(&key) && inner.stages.len() >= MAX_STAGES {
                inner.dropped = inner.dropped.saturating_add(counts.requests);
                continue;
            }
            let series = inner.stages.entry(key).or_default();
            match series.slots.back_mut() {
                Some((at, total)) if *at == slot => add(total, counts),
                _ => {
                    let mut total = TrafficCounts {
                        latency_buckets: vec![0; BUCKETS],
                        ..Default::default()
                    };
                    add(&mut total, counts);
                    series.slots.push_back((slot, total));
                }
            }
            let route = if series.routes.contains_key(&entry.route_key) || inner.routes < MAX_ROUTES {
                entry.route_key.as_str()
            } else {
                "(other)"
            };
            if !series.routes.contains_key(route) {
                inner.routes += 1;
            }
            let minutes = series.routes.entry(route.to_owned()).or_default();
            if minutes.back().is_none_or(|m| m.minute != minute) {
                minutes.push_back(RouteMinute {
                    minute,
                    ..RouteMinute::default()
                });
            }
            if let Some(m) = minutes.back_mut() {
                m.requests = m.requests.saturating_add(counts.requests);
                m.errors_4xx = m.errors_4xx.saturating_add(counts.errors_4xx);
                m.errors_5xx = m.errors_5xx.saturating_add(counts.errors_5xx);
                if counts.latency_ms_sum.is_finite() && counts.latency_ms_sum >= 0.0 {
                    m.latency_ms_sum += counts.latency_ms_sum;
                }
            }
        }
        Self::forget(inner, now);
    }

    /// Drops what is older than the window, and stages left empty.
    fn forget(inner: &mut Inner, now: i64) {
        let oldest = now - WINDOW_SECONDS;
        let mut removed_routes = 0;
        inner.stages.retain(|_, series| {
            while series.slots.front().is_some_and(|(at, _)| *at < oldest) {
                series.slots.pop_front();
            }
            series.routes.retain(|_, minutes| {
                while minutes.front().is_some_and(|m| m.minute < oldest) {
                    minutes.pop_front();
                }
                let keep = !minutes.is_empty();
                if !keep {
                    removed_routes += 1;
                }
                keep
            });
            !series.slots.is_empty()
        });
        inner.routes = inner.routes.saturating_sub(removed_routes);
    }

    /// `api`'s `stage` over the window ending `now`: every slot and every
    /// route (most requested first).
    pub fn stage(&self, api: &str, stage: &str, now: i64) -> StageTraffic {
        let Ok(mut inner) = self.inner.lock() else {
            return StageTraffic::default();
        };
        Self::forget(&mut inner, now);
        let Some(series) = inner.stages.get(&(api.to_owned(), stage.to_owned())) else {
            return empty();
        };
        let mut routes: Vec<RouteTotal> = series
            .routes
            .iter()
            .map(|(key, minutes)| {
                minutes.iter().fold(
                    RouteTotal {
                        route_key: key.clone(),
                        ..RouteTotal::default()
                    },
                    |mut total, m| {
                        total.requests = total.requests.saturating_add(m.requests);
                        total.errors_4xx = total.errors_4xx.saturating_add(m.errors_4xx);
                        total.errors_5xx = total.errors_5xx.saturating_add(m.errors_5xx);
                        total.latency_ms_sum += m.latency_ms_sum;
                        total
                    },
                )
            })
            .collect();
        sort_routes(&mut routes);
        StageTraffic {
            slots: series
                .slots
                .iter()
                .map(|(start, counts)| TrafficSlot {
                    start: *start,
                    counts: Some(counts.clone()),
                })
                .collect(),
            routes,
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        }
    }

    /// Requests of stages beyond [`MAX_STAGES`] not kept.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().map(|i| i.dropped).unwrap_or(0)
    }
}

fn empty() -> StageTraffic {
    StageTraffic {
        latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        ..StageTraffic::default()
    }
}

fn sort_routes(routes: &mut [RouteTotal]) {
    routes.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.route_key.cmp(&b.route_key))
    });
}

/// Several nodes' views of one stage as one: slots and routes summed,
/// the `top` most requested routes kept.
pub fn merge(views: Vec<StageTraffic>, top: usize) -> StageTraffic {
    let mut slots: BTreeMap<i64, TrafficCounts> = BTreeMap::new();
    let mut routes: HashMap<String, RouteTotal> = HashMap::new();
    for view in views {
        for slot in view.slots {
            let into = slots.entry(slot.start).or_insert_with(|| TrafficCounts {
                latency_buckets: vec![0; BUCKETS],
                ..Default::default()
            });
            if let Some(counts) = &slot.counts {
                add(into, counts);
            }
        }
        for route in view.routes {
            let into = routes
                .entry(route.route_key.clone())
                .or_insert_with(|| RouteTotal {
                    route_key: route.route_key.clone(),
                    ..RouteTotal::default()
                });
            into.requests = into.requests.saturating_add(route.requests);
            into.errors_4xx = into.errors_4xx.saturating_add(route.errors_4xx);
            into.errors_5xx = into.errors_5xx.saturating_add(route.errors_5xx);
            if route.latency_ms_sum.is_finite() && route.latency_ms_sum >= 0.0 {
                into.latency_ms_sum += route.latency_ms_sum;
            }
        }
    }
    let mut routes: Vec<RouteTotal> = routes.into_values().collect();
    sort_routes(&mut routes);
    routes.truncate(top);
    StageTraffic {
        slots: slots
            .into_iter()
            .map(|(start, counts)| TrafficSlot {
                start,
                counts: Some(counts),
            })
            .collect(),
        routes,
        latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(route: &str, requests: u64, errors_5xx: u64) -> RouteTraffic {
        RouteTraffic {
            api: "pets".into(),
            stage: "prod".into(),
            route_key: route.into(),
            counts: Some(TrafficCounts {
                requests,
                errors_5xx,
                latency_buckets: {
                    let mut buckets = vec![0; BUCKETS];
                    buckets[3] = requests;
                    buckets
                },
                ..Default::default()
            }),
        }
    }

    #[test]
    fn counts_that_could_not_be_real_are_dropped_and_nothing_overflows() {
        let traffic = Traffic::default();
        let lie = |f: &dyn Fn(&mut TrafficCounts)| {
            let mut entry = report("GET /", 5, 0);
            if let Some(counts) = entry.counts.as_mut() {
                f(counts);
            }
            entry
        };
        traffic.record(
            &[
                lie(&|c| c.requests = u64::MAX),
                lie(&|c| c.errors_5xx = 6),
                lie(&|c| c.latency_buckets = vec![u64::MAX; BUCKETS]),
                lie(&|c| c.latency_ms_sum = f64::NAN),
            ],
            4_000_000,
        );
        assert_eq!(traffic.dropped(), 4);
        assert!(traffic.stage("pets", "prod", 4_000_000).slots.is_empty());
        // Many real reports add up without overflowing.
        for _ in 0..3 {
            traffic.record(
                &[report("GET /", pylon_common::traffic::MAX_REPORTED, 0)],
                4_000_001,
            );
        }
        let seen = traffic.stage("pets", "prod", 4_000_001);
        assert_eq!(seen.routes[0].requests, 3 * pylon_common::traffic::MAX_REPORTED);
    }

    #[test]
    fn heartbeats_add_into_ten_second_slots_and_an_hour_is_kept() {
        let traffic = Traffic::default();
        traffic.record(&[report("GET /pets", 3, 1)], 1_000_003);
        traffic.record(
            &[report("GET /pets", 2, 0), report("POST /pets", 7, 0)],
            1_000_009,
        );
        traffic.record(&[report("GET /pets", 1, 0)], 1_000_011);
        let seen = traffic.stage("pets", "prod", 1_000_011);
        let slots: Vec<(i64, u64)> = seen
            .slots
            .iter()
            .map(|s| (s.start, s.counts.as_ref().map_or(0, |c| c.requests)))
            .collect();
        assert_eq!(slots, vec![(1_000_000, 12), (1_000_010, 1)]);
        assert_eq!(seen.routes[0].route_key, "POST /pets");
        assert_eq!((seen.routes[1].requests, seen.routes[1].errors_5xx), (6, 1));
        // An hour later it is gone.
        assert!(
            traffic
                .stage("pets", "prod", 1_000_011 + WINDOW_SECONDS + 60)
                .slots
                .is_empty()
        );
    }

    #[test]
    fn nodes_views_merge_by_slot_and_route_and_keep_the_top_routes() {
        let (a, b) = (Traffic::default(), Traffic::default());
        a.record(&[report("GET /a", 5, 0), report("GET /b", 1, 0)], 2_000_000);
        b.record(&[report("GET /a", 4, 2), report("GET /c", 2, 0)], 2_000_004);
        let merged = merge(
            vec![
                a.stage("pets", "prod", 2_000_005),
                b.stage("pets", "prod", 2_000_005),
            ],
            2,
        );
        assert_eq!(merged.slots.len(), 1);
        assert_eq!(merged.slots[0].counts.as_ref().map(|c| c.requests), Some(12));
        let top: Vec<(&str, u64)> = merged
            .routes
            .iter()
            .map(|r| (r.route_key.as_str(), r.requests))
            .collect();
        assert_eq!(top, vec![("GET /a", 9), ("GET /c", 2)]);
    }

    #[test]
    fn stages_and_routes_beyond_the_bounds_are_not_kept() {
        let traffic = Traffic::default();
        let many: Vec<RouteTraffic> = (0..MAX_STAGES + 3)
            .map(|i| RouteTraffic {
                stage: format!("s{i}"),
                ..report("GET /", 1, 0)
            })
            .collect();
        traffic.record(&many, 3_000_000);
        assert_eq!(traffic.dropped(), 3);
        let odd = RouteTraffic {
            route_key: "x".repeat(MAX_NAME + 1),
            ..report("", 1, 0)
        };
        traffic.record(&[odd], 3_000_001);
        assert!(
            traffic
                .stage("pets", "prod", 3_000_001)
                .routes
                .iter()
                .all(|r| r.route_key.len() <= MAX_NAME)
        );
    }
}
