//! What throttling and the cache cost, and how exact shared limits are.
//!
//! One control plane, data planes started here (`pylon data-plane`), an
//! nginx origin and a `redis-server`, all on loopback; wrk on CPU 0, the
//! rest on CPU 1 (as in [`crate::proxy`]). The node-wide account limit is
//! off (`--account-rate 0`) so it does not cap the runs.
//!
//! 1. Throughput, rounds alternating: a route with no limit; a stage limit
//!    kept in process; the same limit in Redis through 1 data plane and
//!    through 3 (three wrk runs at once, summed). The limit is far above the
//!    load, so every request is a full decision that admits. Redis commands
//!    per request from `INFO commandstats`.
//! 2. Accuracy: a 1,000 rps limit (burst 100) shared by 3 nodes, offered
//!    1.5×, 3× and 6× for 10 s by an open-loop generator spread over them.
//! 3. The cache hit path (in process, and with Redis) vs the origin direct.

use crate::proxy::{Process, available, data_plane, median, origin, wrk_with};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, CacheSettings, ThrottleSettings};
use pylon_tests::gateway::HttpClient;
use pylon_tests::redis::RedisServer;
use pylon_tests::{Cluster, cpu_time, eventually, free_port};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const CONNECTIONS: usize = 64;
const HOST: &str = "bench.localhost";

struct Sample {
    rps: f64,
    p99_ms: f64,
    cpu_us: f64,
}

/// wrk against each port at once (CONNECTIONS split among them); summed
/// throughput, worst p99, pylon CPU per request over `pids`.
fn run_wrk(ports: &[u16], path: &str, pids: &[u32], seconds: u64) -> Option<Sample> {
    let before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let connections = CONNECTIONS / ports.len();
    let runs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = ports
            .iter()
            .map(|port| {
                let url = format!("http://127.0.0.1:{port}{path}");
                scope.spawn(move || wrk_with(&url, HOST, connections, seconds, &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    let used: Duration = pids
        .iter()
        .map(|p| cpu_time(*p))
        .sum::<Duration>()
        .saturating_sub(before);
    let runs: Vec<_> = runs.into_iter().collect::<Option<Vec<_>>>()?;
    let requests: f64 = runs.iter().map(|r| r.requests).sum();
    Some(Sample {
        rps: runs.iter().map(|r| r.rps).sum(),
        p99_ms: runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        cpu_us: used.as_secs_f64() * 1e6 / requests.max(1.0),
    })
}

fn script_calls(redis: &RedisServer) -> u64 {
    redis
        .command_calls()
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| name.starts_with("eval") || name == "get" || name == "set")
        .map(|(_, calls)| calls)
        .sum()
}

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") || !available("redis-server") {
        println!("limits benchmark skipped: wrk, nginx, taskset and redis-server are needed");
        return;
    }
    println!(
        "\nLimits and cache: stage limits in process and in Redis (1 and 3 data planes), accuracy over 3 nodes, cache hits vs the origin"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_port = free_port();
    let _origin = origin(dir.path(), origin_port, r#"{"ok":true}"#, "");
    let redis = RedisServer::start(dir.path()).expect("redis-server");
    let redis_pid = redis_pid(&redis);
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let origin = format!("http://127.0.0.1:{origin_port}");
    let proxy = |path: &str| json!({"type": "HTTP_PROXY", "uri": format!("{origin}{path}")});
    let api: Api = serde_json::from_value(json!({
        "name": "bench",
        "routes": [
            {"method": "GET", "path": "/open", "integration": proxy("/open"), "cache": {"enabled": false}},
            {"method": "GET", "path": "/limited", "integration": proxy("/limited"), "cache": {"enabled": false}},
            {"method": "GET", "path": "/accuracy", "integration": proxy("/accuracy"), "cache": {"enabled": false}},
            {"method": "GET", "path": "/cached", "integration": proxy("/cached")},
        ],
    }))
    .expect("bench API");
    admin
        .create_api(CreateApiRequest { api: Some(api) })
        .await
        .expect("create API");
    let deployment = admin
        .create_deployment(CreateDeploymentRequest {
            api: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("deployment")
        .into_inner();
    let throttle = |rate: f64, burst: u32| ThrottleSettings {
        rate_limit: rate,
        burst_limit: burst,
    };
    let (accuracy_rate, accuracy_burst) = (1000.0, 100);
    admin
        .create_stage(CreateStageRequest {
            stage: Some(pylon_proto::config::v1::Stage {
                api: "bench".into(),
                name: "prod".into(),
                deployment_id: deployment.id,
                route_throttle: [
                    ("GET /limited".to_owned(), throttle(1e7, 1_000_000)),
                    (
                        "GET /accuracy".to_owned(),
                        throttle(accuracy_rate, accuracy_burst),
                    ),
                ]
                .into(),
                cache: Some(CacheSettings {
                    enabled: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("stage");

    let redis_flag = vec![format!("--redis={}", redis.url())];
    let (memory_dp, memory_port) = data_plane(dir.path(), "dp-memory", &endpoint, &[]);
    let (redis_dp, redis_port) = data_plane(dir.path(), "dp-redis", &endpoint, &redis_flag);
    let trio: Vec<(Process, u16)> = (1..=3)
        .map(|i| data_plane(dir.path(), &format!("dp-redis-{i}"), &endpoint, &redis_flag))
        .collect();
    let trio_ports: Vec<u16> = trio.iter().map(|(_, port)| *port).collect();
    let trio_pids: Vec<u32> = trio.iter().map(|(p, _)| p.0.id()).collect();
    let client = HttpClient::default();
    let all_ports: Vec<u16> = [memory_port, redis_port]
        .into_iter()
        .chain(trio_ports.iter().copied())
        .collect();
    for port in &all_ports {
        let address = SocketAddr::from(([127, 0, 0, 1], *port));
        eventually("the data planes serve", Duration::from_secs(20), || async {
            (client.get(address, HOST, "/prod/open").await.ok()?.status == 200).then_some(())
        })
        .await;
    }

    // 1. Throughput.
    let configs: [(&str, Vec<u16>, &str, Vec<u32>); 4] = [
        (
            "no limit",
            vec![memory_port],
            "/prod/open",
            vec![memory_dp.0.id()],
        ),
        (
            "limit, in process",
            vec![memory_port],
            "/prod/limited",
            vec![memory_dp.0.id()],
        ),
        (
            "limit, Redis, 1 node",
            vec![redis_port],
            "/prod/limited",
            vec![redis_dp.0.id()],
        ),
        (
            "limit, Redis, 3 nodes",
            trio_ports.clone(),
            "/prod/limited",
            trio_pids.clone(),
        ),
    ];
    for (_, ports, path, pids) in &configs {
        let _ = run_wrk(ports, path, pids, 2);
    }
    let mut samples: Vec<Vec<Sample>> = (0..configs.len()).map(|_| Vec::new()).collect();
    let mut per_request: Vec<Vec<f64>> = (0..configs.len()).map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let (name, ports, path, pids) = &configs[i];
            let _ = redis.cli(&["CONFIG", "RESETSTAT"]);
            let redis_cpu = cpu_time(redis_pid);
            let Some(sample) = run_wrk(ports, path, pids, SECONDS) else {
                println!("    {name}: wrk failed");
                continue;
            };
            let calls = script_calls(&redis) as f64 / (sample.rps * SECONDS as f64).max(1.0);
            let redis_us = cpu_time(redis_pid).saturating_sub(redis_cpu).as_secs_f64() * 1e6
                / (sample.rps * SECONDS as f64).max(1.0);
            println!(
                "  round {round} {name:<22} {:>9.0} rps  p99 {:>7.3} ms  pylon {:>5.1} µs/req  Redis {calls:.4} calls/req, {redis_us:.2} µs/req",
                sample.rps, sample.p99_ms, sample.cpu_us
            );
            per_request[i].push(calls);
            samples[i].push(sample);
        }
    }
    println!(
        "\n  configuration            rps (c{CONNECTIONS})   p99        pylon CPU/req  Redis calls/req  vs no limit"
    );
    let base = median(&samples[0].iter().map(|s| s.rps).collect::<Vec<_>>());
    let base_p99 = median(&samples[0].iter().map(|s| s.p99_ms).collect::<Vec<_>>());
    for (i, (name, ..)) in configs.iter().enumerate() {
        let rps = median(&samples[i].iter().map(|s| s.rps).collect::<Vec<_>>());
        let p99 = median(&samples[i].iter().map(|s| s.p99_ms).collect::<Vec<_>>());
        let cpu = median(&samples[i].iter().map(|s| s.cpu_us).collect::<Vec<_>>());
        println!(
            "  {name:<24} {rps:>10.0}  {p99:>7.3} ms  {cpu:>8.1} µs  {:>14.4}   {:.2}× rps, {:.2}× p99",
            median(&per_request[i]),
            rps / base,
            p99 / base_p99
        );
    }

    // 2. Accuracy over 3 nodes.
    println!(
        "\n  accuracy: stage limit {accuracy_rate} rps, burst {accuracy_burst}, 3 nodes, 10 s per offered load"
    );
    println!("  offered      admitted   expected   error    Redis calls/req");
    let addresses: Vec<SocketAddr> = trio_ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    for factor in [1.5, 3.0, 6.0] {
        // Let the bucket refill and leases go back between loads.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = redis.cli(&["CONFIG", "RESETSTAT"]);
        let duration = Duration::from_secs(10);
        let (admitted, offered) = open_loop(&client, &addresses, accuracy_rate * factor, duration).await;
        let expected = f64::from(accuracy_burst) + accuracy_rate * duration.as_secs_f64();
        println!(
            "  {:>5.0} rps  {admitted:>9}  {expected:>9.0}  {:>+6.2} %  {:.4}",
            accuracy_rate * factor,
            (admitted as f64 - expected) / expected * 100.0,
            script_calls(&redis) as f64 / offered.max(1) as f64
        );
    }

    // 3. The cache hit path.
    let warm = |port: u16| {
        let client = client.clone();
        async move {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let reply = client.get(address, HOST, "/prod/cached").await.expect("cached");
            let reply = if reply.header("x-cache") == "Hit" {
                reply
            } else {
                client.get(address, HOST, "/prod/cached").await.expect("cached")
            };
            assert_eq!(reply.header("x-cache"), "Hit", "the bench reads hits");
        }
    };
    warm(memory_port).await;
    warm(redis_port).await;
    let origin_url = format!("http://127.0.0.1:{origin_port}/cached");
    let hit_paths: [(&str, String, Option<u32>); 3] = [
        ("origin direct", origin_url, None),
        (
            "cache hit, in process",
            format!("http://127.0.0.1:{memory_port}/prod/cached"),
            Some(memory_dp.0.id()),
        ),
        (
            "cache hit, Redis tier",
            format!("http://127.0.0.1:{redis_port}/prod/cached"),
            Some(redis_dp.0.id()),
        ),
    ];
    let mut hit_rps: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut hit_p99: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..ROUNDS {
        for k in 0..3 {
            let i = (k + round) % 3;
            let (_, url, _) = &hit_paths[i];
            if let Some(run) = wrk_with(url, HOST, CONNECTIONS, SECONDS, &[]) {
                hit_rps[i].push(run.rps);
                hit_p99[i].push(run.p99_ms);
            }
        }
    }
    println!("\n  cache                    rps (c{CONNECTIONS})   p99        vs origin direct");
    let origin_rps = median(&hit_rps[0]);
    for (i, (name, ..)) in hit_paths.iter().enumerate() {
        println!(
            "  {name:<24} {:>10.0}  {:>7.3} ms  {:.2}×",
            median(&hit_rps[i]),
            median(&hit_p99[i]),
            median(&hit_rps[i]) / origin_rps
        );
    }
    drop(trio);
}

/// The PID of the test's redis-server (for its CPU time).
fn redis_pid(redis: &RedisServer) -> u32 {
    redis
        .cli(&["INFO", "server"])
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|p| p.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Offers `rate` requests a second spread over `nodes` for `duration`
/// without waiting for answers; returns (admitted, offered).
async fn open_loop(client: &HttpClient, nodes: &[SocketAddr], rate: f64, duration: Duration) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let offered = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_node = rate / nodes.len() as f64;
    let mut senders = Vec::new();
    for &node in nodes {
        let (client, admitted, offered) = (client.clone(), admitted.clone(), offered.clone());
        senders.push(tokio::spawn(async move {
            let mut inflight = Vec::new();
            let mut sent = 0u64;
            while start.elapsed() < duration {
                // Catch up to the schedule, then sleep a millisecond.
                let due = (start.elapsed().as_secs_f64() * per_node) as u64;
                while sent < due {
                    sent += 1;
                    let (client, admitted) = (client.clone(), admitted.clone());
                    offered.fetch_add(1, Ordering::Relaxed);
                    inflight.push(tokio::spawn(async move {
                        let request = Request::get("/prod/accuracy")
                            .header("host", HOST)
                            .body(Full::new(Bytes::new()))
                            .expect("request");
                        if client.send(node, request).await.is_ok_and(|r| r.status == 200) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for request in inflight {
                let _ = request.await;
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    (admitted.load(Ordering::Relaxed), offered.load(Ordering::Relaxed))
}
