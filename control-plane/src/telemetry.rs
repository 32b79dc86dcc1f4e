//! The control plane's telemetry: a span per Raft proposal (propose →
//! committed and applied here) with its latency, and gauges of Raft state
//! (term, leader, commit and apply index, config version) and connected data
//! planes. The binary exports them; this module only uses the API.

use crate::publish::Registry;
use crate::raft::node::NodeHandle;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Instruments the admin API records into.
pub struct Instruments {
    pub proposal_duration: Histogram<f64>,
    pub leader_changes: Counter<u64>,
    /// Kept so their callbacks stay registered.
    _gauges: Vec<ObservableGauge<u64>>,
}

pub fn instruments(node: &NodeHandle, data_planes: &Arc<Registry>) -> Instruments {
    let meter = opentelemetry::global::meter("pylon-control-plane");
    let gauge = |name: &'static str, description: &'static str, read: Box<dyn Fn() -> u64 + Send + Sync>| {
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| observer.observe(read(), &[]))
            .build()
    };
    let (n1, n2, n3, n4, n5) = (
        node.clone(),
        node.clone(),
        node.clone(),
        node.clone(),
        node.clone(),
    );
    let planes = data_planes.clone();
    let gauges = vec![
        gauge(
            "pylon.raft.term",
            "Current Raft term",
            Box::new(move || n1.status().term),
        ),
        gauge(
            "pylon.raft.leader",
            "1 when this node is the leader",
            Box::new(move || {
                let s = n2.status();
                u64::from(s.leader_id == s.node_id)
            }),
        ),
        gauge(
            "pylon.raft.commit_index",
            "Raft commit index",
            Box::new(move || n3.status().commit_index),
        ),
        gauge(
            "pylon.raft.applied_index",
            "Raft applied index",
            Box::new(move || n4.status().applied_index),
        ),
        gauge(
            "pylon.config.version",
            pylon_common::snapshot::VERSION_METRIC_DESCRIPTION,
            Box::new(move || n5.status().config_version),
        ),
        gauge(
            "pylon.data_planes.connected",
            "Data-plane nodes subscribed to this node",
            Box::new(move || planes.list().iter().filter(|n| n.connected).count() as u64),
        ),
    ];
    Instruments {
        proposal_duration: meter
            .f64_histogram("pylon.raft.proposal.duration")
            .with_unit("ms")
            .with_description("Admin write: propose until applied on the answering node")
            .build(),
        leader_changes: meter
            .u64_counter("pylon.raft.leader_changes")
            .with_description("Leader changes seen by this node")
            .build(),
        _gauges: gauges,
    }
}

/// Keeps `ready` (for `/readyz`) in step with whether a leader is known,
/// and counts leader changes.
pub fn watch_leader(node: NodeHandle, ready: Arc<AtomicBool>, leader_changes: Counter<u64>) {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            let status = node.status();
            ready.store(status.leader_id != 0, Ordering::Relaxed);
            if status.leader_id != last {
                if last != 0 || status.leader_id != 0 {
                    leader_changes.add(1, &[KeyValue::new("leader", status.leader_id.to_string())]);
                }
                last = status.leader_id;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

/// A server span for every admin call (the gRPC method as its name, the
/// caller's `traceparent` as its parent); Raft proposals made while serving
/// it are its children. Other services (the config stream, peers) pass
/// through untraced.
#[derive(Clone)]
pub struct TraceAdmin<S>(pub S);

impl<S, B, R> tower::Service<http::Request<B>> for TraceAdmin<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt as _, Tracer as _};
        let Some(method) = request.uri().path().strip_prefix("/pylon.admin.v1.AdminService/") else {
            return Box::pin(self.0.call(request));
        };
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
        let tracer = opentelemetry::global::tracer("pylon-control-plane");
        let span = tracer
            .span_builder(format!("pylon.admin.v1.AdminService/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "pylon.admin.v1.AdminService"),
                KeyValue::new("rpc.method", method.to_owned()),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let call = self.0.call(request).with_context(cx.clone());
        Box::pin(async move {
            let result = call.await;
            let span = cx.span();
            if let Ok(response) = &result {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
                if code != 0 {
                    span.set_status(opentelemetry::trace::Status::error(format!("gRPC status {code}")));
                }
            }
            span.end();
            result
        })
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
