//! What telemetry costs: the same proxied GET with telemetry off, with
//! metrics and access logs exported over OTLP, with tracing at 1 % and at
//! 100 %, and at 100 % with the collector down — in one run, rounds
//! alternating. An OTLP receiver runs in this process and is drained
//! continuously (a healthy collector). wrk on CPU 0, data planes and the
//! origin on CPU 1, as in [`crate::proxy`].

use crate::proxy::{available, data_plane, median, origin, pin_to_cpu0, wrk_with};
use pylon_proto::admin::v1::*;
use pylon_tests::gateway::HttpClient;
use pylon_tests::{Cluster, cpu_time, eventually, free_port, rss_kib};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const HOST: &str = "bench.localhost";

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") {
        println!("telemetry benchmark skipped: wrk, nginx and taskset are needed");
        return;
    }
    println!(
        "\nTelemetry: telemetry off vs metrics + access logs over OTLP vs tracing 1 % / 100 % vs collector down; {ROUNDS} rounds of {SECONDS}s, alternating"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_port = free_port();
    let _origin = origin(dir.path(), origin_port, r#"{"ok":true}"#, "");
    // This process (the receiver, the load's bookkeeping) stays on CPU 0
    // with wrk; the data planes have CPU 1.
    pin_to_cpu0();
    let (otlp, received) = pylon_tests::otlp_sink::start().await.expect("OTLP receiver");
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let origin = format!("http://127.0.0.1:{origin_port}");
    let api: pylon_proto::config::v1::Api = serde_json::from_value(json!({
        "name": "bench",
        "routes": [{"method": "GET", "path": "/items/{id}", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/items/{{id}}")}}],
    }))
    .expect("API");
    admin
        .create_api(CreateApiRequest { api: Some(api) })
        .await
        .expect("API");
    let deployment = admin
        .create_deployment(CreateDeploymentRequest {
            api: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("deployment")
        .into_inner()
        .id;
    for (stage, tracing, ratio) in [("plain", false, 0.0), ("sampled", true, 0.01), ("all", true, 1.0)] {
        admin
            .create_stage(CreateStageRequest {
                stage: Some(pylon_proto::config::v1::Stage {
                    api: "bench".into(),
                    name: stage.into(),
                    deployment_id: deployment.clone(),
                    tracing_enabled: tracing,
                    tracing_sampling_ratio: ratio,
                    ..Default::default()
                }),
            })
            .await
            .expect("stage");
    }
    let (plain_dp, plain_port) = data_plane(dir.path(), "dp-plain", &endpoint, &["--access-log=off".into()]);
    let (otel_dp, otel_port) = data_plane(
        dir.path(),
        "dp-otel",
        &endpoint,
        &[format!("--otlp-endpoint={otlp}"), "--access-log=otlp".into()],
    );
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (down_dp, down_port) = data_plane(
        dir.path(),
        "dp-down",
        &endpoint,
        &[format!("--otlp-endpoint={nowhere}"), "--access-log=otlp".into()],
    );
    let client = HttpClient::default();
    for port in [plain_port, otel_port, down_port] {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("the data planes serve", Duration::from_secs(20), || async {
            (client.get(address, HOST, "/all/items/1").await.ok()?.status == 200).then_some(())
        })
        .await;
    }
    let configs: [(&str, u16, &str, u32); 5] = [
        ("telemetry off", plain_port, "/plain/items/1", plain_dp.0.id()),
        (
            "metrics + access log",
            otel_port,
            "/plain/items/1",
            otel_dp.0.id(),
        ),
        ("tracing 1 %", otel_port, "/sampled/items/1", otel_dp.0.id()),
        ("tracing 100 %", otel_port, "/all/items/1", otel_dp.0.id()),
        ("100 %, collector down", down_port, "/all/items/1", down_dp.0.id()),
    ];
    for (_, port, path, _) in &configs {
        let _ = wrk_with(&format!("http://127.0.0.1:{port}{path}"), HOST, 64, 2, &[]);
    }
    let n = configs.len();
    let (mut rps, mut p99, mut cpu) = (vec![Vec::new(); n], vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut rss = vec![0u64; n];
    for round in 0..ROUNDS {
        for k in 0..n {
            let i = (k + round) % n;
            let (name, port, path, pid) = configs[i];
            let before = cpu_time(pid);
            let Some(run) = wrk_with(&format!("http://127.0.0.1:{port}{path}"), HOST, 64, SECONDS, &[])
            else {
                println!("    {name}: wrk failed");
                continue;
            };
            let used = cpu_time(pid).saturating_sub(before);
            cpu[i].push(used.as_secs_f64() * 1e6 / run.requests.max(1.0));
            rps[i].push(run.rps);
            p99[i].push(run.p99_ms);
            rss[i] = rss[i].max(rss_kib(pid));
            println!(
                "  round {round} {name:<24} {:>9.0} rps  p99 {:>7.3} ms  pylon {:>5.1} µs/req",
                run.rps,
                run.p99_ms,
                cpu[i].last().copied().unwrap_or(0.0)
            );
        }
    }
    println!("\n  configuration            rps (c64)   p99        pylon CPU/req  max RSS   vs off");
    let (base_rps, base_p99) = (median(&rps[0]), median(&p99[0]));
    for (i, (name, ..)) in configs.iter().enumerate() {
        println!(
            "  {name:<24} {:>10.0}  {:>7.3} ms  {:>8.1} µs  {:>5} MiB  {:.2}× rps, {:.2}× p99",
            median(&rps[i]),
            median(&p99[i]),
            median(&cpu[i]),
            rss[i] / 1024,
            median(&rps[i]) / base_rps,
            median(&p99[i]) / base_p99
        );
    }
    println!(
        "  the receiver got {} spans and {} log records",
        received.spans.load(std::sync::atomic::Ordering::Relaxed),
        received.log_records.load(std::sync::atomic::Ordering::Relaxed)
    );
}
