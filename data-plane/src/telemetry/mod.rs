//! What a data plane tells the outside about its requests: OpenTelemetry
//! traces ([`trace`]), metrics ([`metrics`]), access logs
//! ([`access_log`]), and the per-route counts ([`crate::meters`]) that its
//! metrics and its heartbeats to the control plane read. The phases fill
//! the request's one [`RequestContext`]; the pipeline hands it here when
//! the answer is ready.
//!
//! Nothing here blocks or fails a request: spans and metrics go to the
//! SDK's bounded batch processors (set up by the binary), access-log lines
//! to a bounded buffer; what does not fit is dropped and counted.

pub mod access_log;
pub mod metrics;
pub mod trace;

use crate::context::RequestContext;
use crate::meters::Meters;
use std::sync::Arc;

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
    /// Every route's counts, for the metrics and the control plane's
    /// console (sent with the config stream's heartbeats).
    pub meters: Arc<Meters>,
}

impl Telemetry {
    /// The node's telemetry; its metrics read the counts in `meters` (the
    /// registry the node's configs are compiled with).
    ///
    /// # Errors
    /// The access-log file cannot be opened (or its writer started).
    pub fn new(options: TelemetryOptions, meters: Arc<Meters>) -> std::io::Result<Telemetry> {
        Ok(Telemetry {
            tracer: opentelemetry::global::tracer("pylon-data-plane"),
            metrics: metrics::Metrics::new(&opentelemetry::global::meter("pylon-data-plane"), &meters),
            access_log: access_log::AccessLog::start(&options.access_log, options.access_log_otlp)?,
            default_sample_ratio: options.default_sample_ratio.clamp(0.0, 1.0),
            meters,
        })
    }

    /// Metrics, the span's end and the access-log line of a finished
    /// request (or WebSocket message) of `stage`.
    pub fn observe(&self, ctx: &RequestContext, stage: &crate::config::CompiledStage) {
        self.observe_head(ctx, stage);
        self.observe_end(ctx, stage);
    }

    /// The metrics of a request of `stage` whose answer's head is ready
    /// (the first half of [`Telemetry::observe`]).
    pub fn observe_head(&self, ctx: &RequestContext, stage: &crate::config::CompiledStage) {
        let meter = match ctx.route_key.as_deref().and_then(|key| stage.meters.get(key)) {
            Some(meter) => meter,
            None => {
                let method = crate::meters::method_index(ctx.http_method.as_str());
                stage.unmatched[method].get_or_init(|| {
                    self.meters
                        .bind(&stage.api, &stage.name, "", crate::meters::METHODS[method])
                })
            }
        };
        meter.record(&ctx.outcome);
        self.metrics.record(&ctx.outcome, meter);
    }

    /// The span's end and the access-log line of a finished request of
    /// `stage` (the second half of [`Telemetry::observe`]: an answer that
    /// streams has its metrics counted at its head, and these at its end).
    pub fn observe_end(&self, ctx: &RequestContext, stage: &crate::config::CompiledStage) {
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
