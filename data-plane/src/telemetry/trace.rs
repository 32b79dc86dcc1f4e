//! Traces: one server span per request, named after its route, with child
//! spans for the phases that ran and a client span for the integration.
//! W3C `traceparent`/`tracestate` are read from the client and written to
//! the backend request, so the backend's spans join the trace.
//!
//! Sampling is parent-based and decided here, per stage: a stage with
//! tracing off creates no spans (the client's `traceparent` still passes
//! through to the backend untouched); with tracing on, a sampled parent is
//! followed, an unsampled one too, and a request without a parent is traced
//! with the stage's ratio (or the node's). Headers, cookies, query strings
//! and bodies are never recorded, so credentials cannot leak into a span.

use super::Telemetry;
use crate::config::CompiledStage;
use crate::context::RequestContext;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Starts the request's server span when the stage traces this request.
pub fn start(
    telemetry: &Telemetry,
    stage: &CompiledStage,
    headers: &HeaderMap,
    ctx: &RequestContext,
) -> Option<Context> {
    if !stage.tracing.enabled {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let remote = parent.span().span_context().clone();
    let sampled = if remote.is_valid() {
        remote.is_sampled()
    } else {
        let ratio = stage
            .tracing
            .sample_ratio
            .unwrap_or(telemetry.default_sample_ratio);
        ratio >= 1.0 || rand::random::<f64>() < ratio
    };
    if !sampled {
        return None;
    }
    let text = |s: &std::sync::Arc<str>| opentelemetry::StringValue::from(s.clone());
    let mut attributes = vec![
        KeyValue::new("http.request.method", ctx.http_method.as_str().to_owned()),
        KeyValue::new("url.path", ctx.uri.path().to_owned()),
        KeyValue::new("server.address", text(&ctx.domain_name)),
        KeyValue::new("client.address", ctx.identity.source_ip.to_string()),
        KeyValue::new("network.protocol.version", ctx.protocol),
        KeyValue::new("pylon.api", text(&ctx.api_id)),
        KeyValue::new("pylon.stage", text(&ctx.stage)),
        KeyValue::new("pylon.deployment", text(&ctx.deployment_id)),
        KeyValue::new("pylon.canary", ctx.canary),
        KeyValue::new("pylon.request_id", ctx.request_id.as_str().to_owned()),
    ];
    if let Some(agent) = ctx.identity.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
        attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
    }
    let span = telemetry
        .tracer
        .span_builder(ctx.http_method.as_str().to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(&telemetry.tracer, &parent);
    Some(parent.with_span(span))
}

/// A child span for one phase; ends when dropped.
pub struct Phase(Option<opentelemetry::global::BoxedSpan>);

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}

impl Phase {
    /// Whether the phase has a span (the request is traced).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute);
        }
    }

    /// The context to propagate from (the phase's span), when traced.
    pub fn context(&self, parent: Option<&Context>) -> Option<Context> {
        let span = self.0.as_ref()?;
        Some(parent?.with_remote_span_context(span.span_context().clone()))
    }
}

pub fn phase(telemetry: &Telemetry, parent: Option<&Context>, name: &'static str, kind: SpanKind) -> Phase {
    Phase(parent.map(|cx| {
        telemetry
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&telemetry.tracer, cx)
    }))
}

/// Writes the trace context of `cx` into a backend request's headers.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

/// Names the span after the route, records the outcome and ends it.
pub fn finish(cx: &Context, ctx: &RequestContext) {
    let span = cx.span();
    let record = &ctx.outcome;
    if let Some(route) = &ctx.route_key {
        span.update_name(route.to_string());
        span.set_attribute(KeyValue::new("http.route", ctx.resource_path().to_owned()));
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(record.status),
    ));
    if let Some(cache) = record.cache {
        span.set_attribute(KeyValue::new("pylon.cache", cache.as_str().to_ascii_lowercase()));
    }
    span.set_attribute(KeyValue::new(
        "pylon.throttled",
        record.throttled || record.quota_exceeded,
    ));
    if let Some(kind) = record.error_type {
        span.set_attribute(KeyValue::new("pylon.error_type", kind));
    }
    // 5xx, or an answer whose body the backend broke off after a 1xx–3xx
    // head: the operation failed (a client's 4xx is not the server's error).
    let cut = record.error_type.is_some() && record.status < 400;
    if record.status >= 500 || cut {
        span.set_status(Status::error(record.error_message.clone().unwrap_or_default()));
    }
    span.end();
}
