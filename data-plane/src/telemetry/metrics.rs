//! AWS API Gateway's metrics as OpenTelemetry instruments, with the API,
//! stage, route and method as dimensions: request count, 4xx and 5xx
//! counts, latency and integration latency (ms), cache hits and misses,
//! throttled and quota-exceeded requests. The binary exports them (OTLP,
//! and Prometheus on the ops port).

use crate::context::{CacheStatus, RequestContext};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// Latency bucket bounds, milliseconds.
const LATENCY_MS: [f64; 16] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 29_000.0,
    60_000.0,
];

pub struct Metrics {
    requests: Counter<u64>,
    errors_4xx: Counter<u64>,
    errors_5xx: Counter<u64>,
    latency: Histogram<f64>,
    integration_latency: Histogram<f64>,
    cache_hits: Counter<u64>,
    cache_misses: Counter<u64>,
    throttled: Counter<u64>,
    quota_exceeded: Counter<u64>,
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
                .with_description("Config version this node serves")
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
    pub fn new(meter: &Meter) -> Metrics {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("ms")
                .with_description(description)
                .with_boundaries(LATENCY_MS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter.u64_counter(name).with_description(description).build()
        };
        Metrics {
            requests: counter("pylon.requests", "Requests to an API stage (AWS: Count)"),
            errors_4xx: counter("pylon.requests.4xx", "Requests answered 4xx (AWS: 4XXError)"),
            errors_5xx: counter("pylon.requests.5xx", "Requests answered 5xx (AWS: 5XXError)"),
            latency: histogram(
                "pylon.request.duration",
                "From request to response headers (AWS: Latency)",
            ),
            integration_latency: histogram(
                "pylon.integration.duration",
                "Backend call, request to response headers (AWS: IntegrationLatency)",
            ),
            cache_hits: counter(
                "pylon.cache.hits",
                "Answers from the response cache (AWS: CacheHitCount)",
            ),
            cache_misses: counter(
                "pylon.cache.misses",
                "Cacheable requests not in the cache (AWS: CacheMissCount)",
            ),
            throttled: counter(
                "pylon.throttled",
                "Requests refused by a token bucket (429 THROTTLED)",
            ),
            quota_exceeded: counter("pylon.quota_exceeded", "Requests refused by a usage-plan quota"),
            dropped_access_logs: counter(
                "pylon.access_log.dropped",
                "Access-log lines dropped (queue full)",
            ),
            websocket: WebSocketMetrics::new(meter),
        }
    }

    /// The dimensions of a request that matched no route. The method is
    /// the client's only when it is a standard one (else `_OTHER`, as the
    /// OpenTelemetry conventions say): clients must not mint series.
    pub fn attributes(ctx: &RequestContext) -> [KeyValue; 4] {
        const STANDARD: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
        ];
        let method = STANDARD
            .iter()
            .find(|m| **m == ctx.http_method.as_str())
            .copied()
            .unwrap_or("_OTHER");
        [
            KeyValue::new("pylon.api", opentelemetry::StringValue::from(ctx.api_id.clone())),
            KeyValue::new("pylon.stage", opentelemetry::StringValue::from(ctx.stage.clone())),
            KeyValue::new("http.route", ctx.resource_path().to_owned()),
            KeyValue::new("http.request.method", method),
        ]
    }

    /// Records one finished request of an API stage, with its dimensions.
    pub fn record(&self, ctx: &RequestContext, attributes: &[KeyValue]) {
        let record = &ctx.outcome;
        self.requests.add(1, attributes);
        match record.status {
            400..=499 => self.errors_4xx.add(1, attributes),
            500..=599 => self.errors_5xx.add(1, attributes),
            _ => {}
        }
        self.latency
            .record(record.latency.as_secs_f64() * 1e3, attributes);
        if let Some(integration) = record.integration_latency {
            self.integration_latency
                .record(integration.as_secs_f64() * 1e3, attributes);
        }
        match record.cache {
            Some(CacheStatus::Hit) => self.cache_hits.add(1, attributes),
            Some(CacheStatus::Miss) => self.cache_misses.add(1, attributes),
            _ => {}
        }
        if record.throttled {
            self.throttled.add(1, attributes);
        }
        if record.quota_exceeded {
            self.quota_exceeded.add(1, attributes);
        }
    }
}
