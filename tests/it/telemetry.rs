//! Traces, metrics and access logs over OTLP, received by a real OTLP/gRPC
//! receiver (the opentelemetry-proto services) on loopback, from a real data
//! plane in front of an echo backend that reports the `traceparent` it got.

use crate::support::{deploy, edit_stage, wait_applied};
use bytes::Bytes;
use fake_opentelemetry_collector::{ExportedMetric, ExportedSpan, FakeCollectorServer};
use http::Request;
use http_body_util::Full;
use pylon_proto::config::v1::{Api, CacheSettings, ThrottleSettings};
use pylon_tests::gateway::{Backend, DataPlaneNode, HttpClient, Reply};
use pylon_tests::{Cluster, free_port, rss_kib, serial};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const HOST: &str = "observed.localhost";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SECRET: &str = "s3cr3t-credential-value";

fn observed_api(dead: &str) -> Api {
    let proxy =
        |path: &str| json!({"type": "HTTP_PROXY", "uri": format!("${{stageVariables.backend}}{path}")});
    serde_json::from_value(json!({
        "name": "observed",
        "routes": [
            {"method": "GET", "path": "/items/{id}", "integration": proxy("/items/{id}"),
             "cache": {"keyParameters": ["path.id"]}},
            {"method": "GET", "path": "/limited", "integration": proxy("/limited"), "cache": {"enabled": false}},
            {"method": "GET", "path": "/boom", "integration": {"type": "HTTP_PROXY", "uri": dead}},
        ],
    }))
    .expect("API definition")
}

async fn get(client: &HttpClient, node: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(path).header("host", HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client
        .send(node, request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("reply")
}

fn attribute<'a>(span: &'a ExportedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map(String::as_str).unwrap_or("")
}

/// The data points of metric `name` (all exports), as Debug text per point.
fn points(metrics: &[ExportedMetric], name: &str) -> Vec<String> {
    metrics
        .iter()
        .flat_map(|m| &m.metrics)
        .filter(|m| m.name == name)
        .map(|m| format!("{:?}", m.data))
        .collect()
}

/// The value of counter `name` for `route` in the latest export that has
/// it (exports are cumulative).
fn count(metrics: &[ExportedMetric], name: &str, route: &str) -> Option<i64> {
    let latest = metrics
        .iter()
        .rev()
        .flat_map(|m| &m.metrics)
        .find(|m| m.name == name)?;
    let text = format!("{:?}", latest.data);
    let point = text
        .split("NumberDataPoint {")
        .find(|p| p.contains(&format!("StringValue(\\\"{route}\\\")")))?;
    let value = point.split("AsInt(").nth(1)?.split(')').next()?;
    value.parse().ok()
}

async fn start(dir: &std::path::Path, name: &str, endpoint: &str, extra: &[String]) -> DataPlaneNode {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    DataPlaneNode::start(dir, name, &[endpoint.to_owned()], &extra)
}

#[tokio::test]
async fn requests_export_spans_metrics_and_access_logs_over_otlp() {
    let _serial = serial().await;
    let mut collector = FakeCollectorServer::start().await.expect("OTLP receiver");
    let mut cp_collector = FakeCollectorServer::start().await.expect("OTLP receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let cp_otlp = format!("--otlp-endpoint={}", cp_collector.endpoint());
    let cluster = Cluster::start_with(1, &[cp_otlp.as_str(), "--metrics-interval-s=1"]).await;
    let endpoint = cluster.nodes[0].endpoint();
    let ops = free_port();
    let node = start(
        dir.path(),
        "dp-observed",
        &endpoint,
        &[
            format!("--otlp-endpoint={}", collector.endpoint()),
            "--access-log=both".into(),
            "--metrics-interval-s=1".into(),
            format!("--ops-listen=127.0.0.1:{ops}"),
        ],
    )
    .await;
    let backend = Backend::start("observed").await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let dead = format!("http://127.0.0.1:{}/gone", free_port());
    deploy(
        &mut admin,
        observed_api(&dead),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy");
    let applied = edit_stage(&mut admin, "observed", "prod", |stage| {
        stage.tracing_enabled = true;
        stage.access_log_format =
            r#"{"id":"$context.requestId","route":"$context.routeKey","status":"$context.status","ip":"$context.identity.sourceIp","took":"$context.responseLatency"}"#.into();
        stage.cache = Some(CacheSettings {
            enabled: true,
            ..Default::default()
        });
        stage.route_throttle.insert(
            "GET /limited".into(),
            ThrottleSettings {
                rate_limit: 0.01,
                burst_limit: 1,
            },
        );
    })
    .await
    .expect("stage");
    wait_applied(&mut admin, applied, 1).await;
    let (client, dp) = (HttpClient::default(), node.address());

    // A traced request from a client that is itself traced, carrying secrets
    // (its answer is `public`, so the cache may share it with the next caller).
    let parent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let cookie = format!("session={SECRET}");
    let bearer = format!("Bearer {SECRET}");
    let traced = [
        ("traceparent", parent.as_str()),
        ("authorization", bearer.as_str()),
        ("cookie", cookie.as_str()),
        ("x-api-key", SECRET),
    ];
    let first = get(
        &client,
        dp,
        "/prod/items/7?cc=public&token=s3cr3t-credential-value",
        &traced,
    )
    .await;
    assert_eq!((first.status.as_u16(), first.header("x-cache")), (200, "Miss"));
    let seen_by_backend = first.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        seen_by_backend.starts_with(&format!("00-{TRACE_ID}-")),
        "{seen_by_backend}"
    );
    assert_eq!(
        get(&client, dp, "/prod/items/7", &[]).await.header("x-cache"),
        "Hit"
    );
    assert_eq!(get(&client, dp, "/prod/nothing", &[]).await.status, 403);
    let boom = get(&client, dp, "/prod/boom", &[]).await;
    assert_eq!((boom.status.as_u16(), boom.header("x-cache")), (502, "Miss"));
    assert_eq!(get(&client, dp, "/prod/limited", &[]).await.status, 200);
    assert_eq!(get(&client, dp, "/prod/limited", &[]).await.status, 429);

    // Spans: the server span, its phases, and the client span whose id the backend got.
    let spans = collector.exported_spans(8, Duration::from_secs(15)).await;
    let server = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID && s.kind == "SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("no server span in the client's trace: {spans:#?}"));
    assert_eq!(server.name, "GET /items/{id}");
    assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
    for (key, value) in [
        ("http.request.method", "\"GET\""),
        ("http.route", "\"/items/{id}\""),
        ("url.path", "\"/prod/items/7\""),
        ("http.response.status_code", "200"),
        ("pylon.api", "\"observed\""),
        ("pylon.stage", "\"prod\""),
        ("pylon.cache", "\"miss\""),
        ("pylon.canary", "false"),
        ("server.address", "\"observed.localhost\""),
        ("client.address", "\"127.0.0.1\""),
    ] {
        assert!(
            attribute(server, key).contains(value),
            "{key}: {}",
            attribute(server, key)
        );
    }
    let children: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for phase in ["authorize", "throttle", "cache", "integration"] {
        assert!(names.contains(&phase), "phase {phase} missing: {names:?}");
    }
    let integration = children
        .iter()
        .find(|s| s.name == "integration")
        .expect("integration span");
    assert_eq!(integration.kind, "SPAN_KIND_CLIENT");
    assert_eq!(
        seen_by_backend,
        format!("00-{TRACE_ID}-{}-01", integration.span_id),
        "the backend joins the trace under the client span"
    );
    let failed = spans
        .iter()
        .find(|s| s.name == "GET /boom")
        .expect("the 502's span");
    assert!(attribute(failed, "pylon.error_type").contains("INTEGRATION_FAILURE"));
    assert!(
        failed.status.as_ref().is_some_and(|s| s.code.contains("ERROR")),
        "{:?}",
        failed.status
    );
    let throttled = spans
        .iter()
        .filter(|s| s.name == "GET /limited")
        .find(|s| attribute(s, "pylon.throttled").contains("true"))
        .expect("a throttled span");
    assert!(attribute(throttled, "http.response.status_code").contains("429"));
    let everything = format!("{spans:?}");
    assert!(!everything.contains(SECRET), "a credential reached a span");

    // Metrics with their dimensions, after 6 requests.
    let wanted = [
        "pylon.requests",
        "pylon.requests.4xx",
        "pylon.requests.5xx",
        "pylon.cache.hits",
        "pylon.cache.misses",
        "pylon.throttled",
        "pylon.request.duration",
        "pylon.integration.duration",
    ];
    // The counts after these six requests, per route.
    let expected = [
        ("pylon.requests", "/items/{id}", 2),
        ("pylon.cache.misses", "/items/{id}", 1),
        ("pylon.cache.hits", "/items/{id}", 1),
        ("pylon.requests.5xx", "/boom", 1),
        // A lookup that missed is a miss, though the backend then failed.
        ("pylon.cache.misses", "/boom", 1),
        ("pylon.requests.4xx", "/limited", 1),
        ("pylon.throttled", "/limited", 1),
        ("pylon.requests", "/limited", 2),
    ];
    let mut metrics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(wanted.iter().all(|name| !points(&metrics, name).is_empty())
        && expected
            .iter()
            .all(|(name, route, n)| count(&metrics, name, route) == Some(*n)))
    {
        let seen: Vec<_> = expected
            .iter()
            .map(|(name, route, _)| count(&metrics, name, route))
            .collect();
        assert!(
            Instant::now() < deadline,
            "metrics: expected {expected:?}, saw {seen:?}"
        );
        metrics.extend(collector.exported_metrics(1, Duration::from_secs(2)).await);
    }
    let requests = points(&metrics, "pylon.requests").join(" ");
    for dimension in [
        "pylon.api",
        "observed",
        "pylon.stage",
        "prod",
        "http.route",
        "/items/{id}",
        "http.request.method",
    ] {
        assert!(requests.contains(dimension), "{dimension} missing: {requests}");
    }
    assert!(points(&metrics, "pylon.requests.5xx").join(" ").contains("/boom"));
    assert!(points(&metrics, "pylon.throttled").join(" ").contains("/limited"));
    assert!(!format!("{metrics:?}").contains(SECRET));

    // Access logs: the stage's format, as OTLP log records (and on stdout).
    let logs = collector.exported_logs(6, Duration::from_secs(15)).await;
    let bodies: Vec<String> = logs.iter().filter_map(|l| l.body.clone()).collect();
    let first_line = bodies
        .iter()
        .find(|b| b.contains(first.header("x-pylon-request-id")))
        .unwrap_or_else(|| panic!("no access log for the first request: {bodies:?}"));
    assert!(
        first_line.contains(r#"\"route\":\"GET /items/{id}\""#),
        "{first_line}"
    );
    assert!(first_line.contains(r#"\"status\":\"200\""#), "{first_line}");
    assert!(bodies.iter().any(|b| b.contains(r#"\"status\":\"429\""#)));
    assert!(!format!("{logs:?}").contains(SECRET));
    let stdout = node.log_text();
    assert!(stdout.contains(&format!("\"id\":\"{}\"", first.header("x-pylon-request-id"))));

    // The control plane: a span per admin call, Raft proposals under it, Raft metrics.
    let cp_spans = cp_collector.exported_spans(10, Duration::from_secs(15)).await;
    let create = cp_spans
        .iter()
        .find(|s| s.name == "pylon.admin.v1.AdminService/CreateApi")
        .unwrap_or_else(|| {
            panic!(
                "no CreateApi span: {:?}",
                cp_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(create.kind, "SPAN_KIND_SERVER");
    let propose = cp_spans
        .iter()
        .find(|s| s.name == "raft.propose" && s.parent_span_id == create.span_id)
        .expect("the proposal under the admin call");
    assert!(attribute(propose, "pylon.command").contains("put"));
    assert!(propose.events.iter().any(|e| e.name == "applied"));
    let mut cp_metrics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while [
        "pylon.raft.term",
        "pylon.raft.proposal.duration",
        "pylon.data_planes.connected",
        "pylon.raft.leader",
    ]
    .iter()
    .any(|name| points(&cp_metrics, name).is_empty())
    {
        assert!(Instant::now() < deadline, "control-plane metrics missing");
        cp_metrics.extend(cp_collector.exported_metrics(1, Duration::from_secs(2)).await);
    }

    // The ops endpoint.
    let ops = SocketAddr::from(([127, 0, 0, 1], ops));
    let scraped = client.get(ops, "localhost", "/metrics").await.expect("/metrics");
    assert!(scraped.body.contains("pylon_requests_total"), "{}", scraped.body);
    assert_eq!(
        client
            .get(ops, "localhost", "/readyz")
            .await
            .expect("/readyz")
            .status,
        200
    );
    assert_eq!(
        client
            .get(ops, "localhost", "/healthz")
            .await
            .expect("/healthz")
            .status,
        200
    );
}

/// Median of request round-trip times.
async fn median_latency(client: &HttpClient, node: SocketAddr, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let reply = get(client, node, &format!("/prod/items/{i}"), &[]).await;
        assert_eq!(reply.status, 200);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let down = start(
        dir.path(),
        "dp-collector-down",
        &endpoint,
        &[format!("--otlp-endpoint={nowhere}"), "--access-log=both".into()],
    )
    .await;
    // The same node with a healthy collector, for comparison.
    let (sink, received) = pylon_tests::otlp_sink::start().await.expect("OTLP receiver");
    let plain = start(
        dir.path(),
        "dp-collector-up",
        &endpoint,
        &[format!("--otlp-endpoint={sink}"), "--access-log=both".into()],
    )
    .await;
    let backend = Backend::start("observed").await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        observed_api(&nowhere),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy");
    let applied = edit_stage(&mut admin, "observed", "prod", |stage| {
        stage.tracing_enabled = true
    })
    .await
    .expect("tracing on");
    wait_applied(&mut admin, applied, 2).await;
    let client = HttpClient::default();
    // Warm both, then alternate measurements.
    median_latency(&client, down.address(), 50).await;
    median_latency(&client, plain.address(), 50).await;
    let rss_before = rss_kib(down.pid().unwrap_or(0));
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let with = median_latency(&client, down.address(), 300).await;
        let without = median_latency(&client, plain.address(), 300).await;
        ratios.push(with.as_secs_f64() / without.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let rss_after = rss_kib(down.pid().unwrap_or(0));
    println!(
        "collector down vs up: median latency ratio {:.2} (runs {ratios:?}); RSS {rss_before} → {rss_after} KiB",
        ratios[1]
    );
    assert!(
        ratios[1] < 1.3,
        "latency with the collector down vs up: {ratios:?}"
    );
    assert!(
        received.spans.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the healthy node's spans arrived"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stays bounded: {rss_before} → {rss_after} KiB"
    );
    assert!(
        down.log_text().contains("\"status\":200"),
        "access logs still written to stdout"
    );
}

#[tokio::test]
async fn otlp_over_http_protobuf_carries_spans_logs_and_metrics() {
    let _serial = serial().await;
    let (collector, received) = pylon_tests::otlp_sink::start_http()
        .await
        .expect("OTLP/HTTP receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let node = start(
        dir.path(),
        "dp-otlp-http",
        &endpoint,
        &[
            format!("--otlp-endpoint={collector}"),
            "--otlp-protocol=http/protobuf".into(),
            "--access-log=otlp".into(),
            "--metrics-interval-s=1".into(),
        ],
    )
    .await;
    let backend = Backend::start("observed").await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let dead = format!("http://127.0.0.1:{}/gone", free_port());
    deploy(
        &mut admin,
        observed_api(&dead),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy");
    let applied = edit_stage(&mut admin, "observed", "prod", |stage| {
        stage.tracing_enabled = true
    })
    .await
    .expect("tracing on");
    wait_applied(&mut admin, applied, 1).await;
    let client = HttpClient::default();
    for i in 0..5 {
        assert_eq!(
            get(&client, node.address(), &format!("/prod/items/{i}"), &[])
                .await
                .status,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    use std::sync::atomic::Ordering::Relaxed;
    while received.spans.load(Relaxed) < 10
        || received.log_records.load(Relaxed) < 5
        || received.metric_exports.load(Relaxed) < 1
    {
        assert!(
            Instant::now() < deadline,
            "over OTLP/HTTP: {} spans, {} log records, {} metric exports",
            received.spans.load(Relaxed),
            received.log_records.load(Relaxed),
            received.metric_exports.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
