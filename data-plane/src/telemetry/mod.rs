//! What a data plane tells the outside about its requests: OpenTelemetry
//! traces ([`trace`]), metrics ([`metrics`]), access logs
//! ([`access_log`]), and the per-route counts its heartbeats carry to the
//! control plane ([`traffic`]). The phases fill the request's one
//! [`RequestContext`]; the pipeline hands it here when the answer is ready.
//!
//! Nothing here blocks or fails a request: spans and metrics go to the
//! SDK's bounded batch processors (set up by the binary), access-log lines
//! to a bounded buffer; what does not fit is dropped and counted.

pub mod access_log;
pub mod metrics;
pub mod trace;
pub mod traffic;

use crate::context::RequestContext;

/// Node-wide telemetry settings (the binary sets up the exporters).
#[derive(Clone, Debug)]
pub struct TelemetryOptions {
    /// Share of requests traced on stages with tracing on, when the caller
    /// sent no sampled parent and the stage names no ratio.
    pub default_sample_ratio: f64,
    /// Where access-log lines go.
    pub access_log: access_log::LineSink,
    /// Access-log lines also go out as OTLP log records.
    pub access_log_otlp: Option<opentelemetry_sdk::logs::SdkLogger>,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            default_sample_ratio: 1.0,
            access_log: access_log::LineSink::Off,
            access_log_otlp: None,
        }
    }
}

pub struct Telemetry {
    pub tracer: opentelemetry::global::BoxedTracer,
    pub metrics: metrics::Metrics,
    pub access_log: access_log::AccessLog,
    pub default_sample_ratio: f64,
    /// Counts per route for the control plane's console (sent with the
    /// config stream's heartbeats).
    pub traffic: std::sync::Arc<traffic::Traffic>,
}

impl Telemetry {
    /// # Errors
    /// The access-log file cannot be opened (or its writer started).
    pub fn new(options: TelemetryOptions) -> std::io::Result<Telemetry> {
        Ok(Telemetry {
            tracer: opentelemetry::global::tracer("pylon-data-plane"),
            metrics: metrics::Metrics::new(&opentelemetry::global::meter("pylon-data-plane")),
            access_log: access_log::AccessLog::start(&options.access_log, options.access_log_otlp)?,
            default_sample_ratio: options.default_sample_ratio.clamp(0.0, 1.0),
            traffic: std::sync::Arc::default(),
        })
    }

    /// Metrics, the span's end and the access-log line of a finished
    /// request (or WebSocket message) of `stage`.
    pub fn observe(&self, ctx: &RequestContext, stage: &crate::config::CompiledStage) {
        match ctx
            .route_key
            .as_ref()
            .and_then(|key| stage.metric_attributes.get(&**key))
        {
            Some(attributes) => self.metrics.record(ctx, attributes),
            None => self.metrics.record(ctx, &metrics::Metrics::attributes(ctx)),
        }
        self.traffic.record(
            &ctx.api_id,
            &ctx.stage,
            ctx.route_key.as_deref().unwrap_or(""),
            &ctx.outcome,
        );
        if let Some(cx) = &ctx.trace {
            trace::finish(cx, ctx);
        }
        if self.access_log.is_on() {
            let lost = self.access_log.write(&stage.access_log, ctx);
            if lost > 0 {
                self.metrics.dropped_access_logs.add(lost, &[]);
            }
        }
    }
}
