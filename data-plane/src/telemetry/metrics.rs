//! AWS API Gateway's metrics as OpenTelemetry instruments, with the API,
//! stage, route and method as dimensions: request count, 4xx and 5xx
//! counts, latency and integration latency (ms), cache hits and misses,
//! throttled and quota-exceeded requests. The binary exports them (OTLP,
//! and Prometheus on the ops port).
//!
//! The counts are observable counters reading the routes' meters
//! ([`crate::meters`]) at each export: a request adds to atomics and
//! hashes nothing. The two latency histograms are OpenTelemetry's, bound
//! to the route's dimensions at its first request (the SDK's bound
//! instruments, an experimental feature of opentelemetry 0.33: a record
//! takes the bucket's lock, no attribute lookup).

use crate::context::Outcome;
use crate::meters::{Count, Meters, RouteMeter};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, ObservableCounter, UpDownCounter};
use std::sync::Arc;

/// Latency bucket bounds, milliseconds.
const LATENCY_MS: [f64; 16] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 29_000.0,
    60_000.0,
];

pub struct Metrics {
    latency: Histogram<f64>,
    integration_latency: Histogram<f64>,
    /// Requests, errors, cache hits and misses, throttled and over quota:
    /// read from the meters at export.
    _counts: Vec<ObservableCounter<u64>>,
    pub dropped_access_logs: Counter<u64>,
    pub websocket: WebSocketMetrics,
}

/// The config stream's instruments, made once and handed to
/// [`crate::sync`]: the version served and how long a snapshot took to
/// decode and compile.
#[derive(Clone)]
pub struct SnapshotMetrics {
    pub config_version: Gauge<u64>,
    /// Milliseconds.
    pub apply: Histogram<f64>,
}

impl std::fmt::Debug for SnapshotMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotMetrics")
    }
}

impl SnapshotMetrics {
    pub fn new(meter: &Meter) -> SnapshotMetrics {
        SnapshotMetrics {
            config_version: meter
                .u64_gauge("pylon.config.version")
                .with_description(pylon_common::snapshot::VERSION_METRIC_DESCRIPTION)
                .build(),
            apply: meter
                .f64_histogram("pylon.config.apply.duration")
                .with_unit("ms")
                .with_description("Time to decode and compile a config snapshot")
                .with_boundaries(LATENCY_MS.to_vec())
                .build(),
        }
    }
}

/// WebSocket connections, by API and stage (AWS: ConnectCount,
/// MessageCount).
pub struct WebSocketMetrics {
    /// Open on this node.
    pub open: UpDownCounter<i64>,
    pub connects: Counter<u64>,
    pub disconnects: Counter<u64>,
    /// Messages from clients, and frames sent to them (replies and
    /// `@connections` posts).
    pub messages_in: Counter<u64>,
    pub messages_out: Counter<u64>,
}

impl WebSocketMetrics {
    fn new(meter: &Meter) -> WebSocketMetrics {
        let counter = |name: &'static str, description: &'static str| {
            meter.u64_counter(name).with_description(description).build()
        };
        WebSocketMetrics {
            open: meter
                .i64_up_down_counter("pylon.websocket.connections")
                .with_description("WebSocket connections open on this node")
                .build(),
            connects: counter("pylon.websocket.connects", "WebSocket connections accepted"),
            disconnects: counter(
                "pylon.websocket.disconnects",
                "WebSocket connections ended (reason)",
            ),
            messages_in: counter(
                "pylon.websocket.messages.in",
                "Messages received from WebSocket clients",
            ),
            messages_out: counter(
                "pylon.websocket.messages.out",
                "Messages sent to WebSocket clients",
            ),
        }
    }

    /// The dimensions of a stage's connections.
    pub fn attributes(api: &str, stage: &str) -> [KeyValue; 2] {
        [
            KeyValue::new("pylon.api", api.to_owned()),
            KeyValue::new("pylon.stage", stage.to_owned()),
        ]
    }
}

impl Metrics {
    /// The instruments, the counts read from `meters`.
    pub fn new(meter: &Meter, meters: &Arc<Meters>) -> Metrics {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("ms")
                .with_description(description)
                .with_boundaries(LATENCY_MS.to_vec())
                .build()
        };
        let counts = [
            (
                Count::Requests,
                "pylon.requests",
                "Requests to an API stage (AWS: Count)",
            ),
            (
                Count::Errors4xx,
                "pylon.requests.4xx",
                "Requests answered 4xx (AWS: 4XXError)",
            ),
            (
                Count::Errors5xx,
                "pylon.requests.5xx",
                "Requests answered 5xx (AWS: 5XXError)",
            ),
            (
                Count::CacheHits,
                "pylon.cache.hits",
                "Answers from the response cache (AWS: CacheHitCount)",
            ),
            (
                Count::CacheMisses,
                "pylon.cache.misses",
                "Cacheable requests not in the cache (AWS: CacheMissCount)",
            ),
            (
                Count::Throttled,
                "pylon.throttled",
                "Requests refused by a token bucket (429 THROTTLED)",
            ),
            (
                Count::QuotaExceeded,
                "pylon.quota_exceeded",
                "Requests refused by a usage-plan quota",
            ),
        ];
        Metrics {
            latency: histogram(
                "pylon.request.duration",
                "From request to response headers (AWS: Latency)",
            ),
            integration_latency: histogram(
                "pylon.integration.duration",
                "Backend call, request to response headers (AWS: IntegrationLatency)",
            ),
            _counts: counts
                .into_iter()
                .map(|(count, name, description)| {
                    let meters = meters.clone();
                    meter
                        .u64_observable_counter(name)
                        .with_description(description)
                        .with_callback(move |observer| {
                            meters.observe(count, |n, attributes| {
                                // A series made and not yet counted is not a
                                // series yet (as with a counter never added to).
                                if n > 0 {
                                    observer.observe(n, attributes);
                                }
                            });
                        })
                        .build()
                })
                .collect(),
            dropped_access_logs: meter
                .u64_counter("pylon.access_log.dropped")
                .with_description("Access-log lines dropped (queue full)")
                .build(),
            websocket: WebSocketMetrics::new(meter),
        }
    }

    /// Records one finished request's latencies in its route's
    /// histograms, bound to the route's dimensions at its first request
    /// (its counts are in its meter).
    pub fn record(&self, outcome: &Outcome, meter: &RouteMeter) {
        let [latency, integration_latency] = meter.histograms(|attributes| {
            [
                self.latency.bind(attributes),
                self.integration_latency.bind(attributes),
            ]
        });
        latency.record(outcome.latency.as_secs_f64() * 1e3);
        if let Some(integration) = outcome.integration_latency {
            integration_latency.record(integration.as_secs_f64() * 1e3);
        }
    }
}
