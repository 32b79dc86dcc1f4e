//! What a data plane tells the outside about its requests: OpenTelemetry
//! traces ([`trace`]), metrics ([`metrics`]) and access logs
//! ([`access_log`]). The phases fill one [`Record`] per request; the
//! pipeline hands it here when the response is ready.
//!
//! Nothing here blocks or fails a request: spans and metrics go to the
//! SDK's bounded batch processors (set up by the binary), access-log lines
//! to a bounded queue; what does not fit is dropped and counted.

pub mod access_log;
pub mod metrics;
pub mod trace;

use std::time::{Duration, SystemTime};

/// Node-wide telemetry settings (the binary sets up the exporters).
#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    /// Share of requests traced on stages with tracing on, when the caller
    /// sent no sampled parent and the stage names no ratio.
    pub default_sample_ratio: f64,
    pub access_log_stdout: bool,
    /// Access-log lines also go out as OTLP log records.
    pub access_log_otlp: Option<opentelemetry_sdk::logs::SdkLogger>,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            default_sample_ratio: 1.0,
            access_log_stdout: false,
            access_log_otlp: None,
        }
    }
}

pub struct Telemetry {
    pub tracer: opentelemetry::global::BoxedTracer,
    pub metrics: metrics::Metrics,
    pub access_log: access_log::AccessLog,
    pub default_sample_ratio: f64,
}

impl Telemetry {
    pub fn new(options: TelemetryOptions) -> Telemetry {
        Telemetry {
            tracer: opentelemetry::global::tracer("pylon-data-plane"),
            metrics: metrics::Metrics::new(&opentelemetry::global::meter("pylon-data-plane")),
            access_log: access_log::AccessLog::start(options.access_log_stdout, options.access_log_otlp),
            default_sample_ratio: options.default_sample_ratio.clamp(0.0, 1.0),
        }
    }
}

impl Telemetry {
    /// Metrics, the span's end and the access-log line of a finished
    /// request (or WebSocket message) of `stage`.
    pub fn observe(
        &self,
        record: &Record,
        trace: Option<&opentelemetry::Context>,
        stage: &crate::config::CompiledStage,
    ) {
        let attributes = record
            .route_key
            .as_ref()
            .and_then(|key| stage.metric_attributes.get(key))
            .cloned()
            .unwrap_or_else(|| metrics::Metrics::attributes(record));
        self.metrics.record(record, &attributes);
        if let Some(cx) = trace {
            trace::finish(cx, record);
        }
        if !self
            .access_log
            .write(stage.access_log_format.as_deref(), record, trace)
        {
            self.metrics.dropped_access_logs.add(1, &[]);
        }
    }
}

/// What one request did, as its phases learn it: the fields of access logs,
/// span attributes and metric dimensions.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub request_id: String,
    pub api: String,
    pub stage: String,
    pub deployment: String,
    pub canary: bool,
    pub domain: String,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub source_ip: String,
    pub user_agent: String,
    /// `GET /pets/{id}` once a route matched.
    pub route_key: Option<String>,
    pub principal_id: Option<String>,
    pub api_key_id: Option<String>,
    pub started: Option<SystemTime>,
    pub integration_latency: Option<Duration>,
    /// Hit, Miss or Bypass.
    pub cache: Option<&'static str>,
    pub throttled: bool,
    pub quota_exceeded: bool,
    /// Set when the request failed: the gateway-response type and message.
    pub error_type: Option<&'static str>,
    pub error_message: Option<String>,
    pub status: u16,
    /// Bytes in the response body when known.
    pub response_length: Option<u64>,
    pub latency: Duration,
}

impl Record {
    /// The route's path part (`/pets/{id}`; a WebSocket route key as it
    /// is), or "" before a route matched.
    pub fn resource_path(&self) -> &str {
        self.route_key
            .as_deref()
            .map(|k| k.split_once(' ').map_or(k, |(_, p)| p))
            .unwrap_or("")
    }
}
