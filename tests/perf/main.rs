//! `make bench`: seven benchmarks, each against a peer measured in the same
//! run (`PYLON_BENCH=control-plane,proxy,request-phase,limits,telemetry,propagation,websocket`
//! picks some; default all):
//!
//! - control plane: admin write throughput and latency on a 3-node loopback
//!   cluster (fsync on) vs a 3-node etcd, and leader failover time;
//! - proxy ([`proxy`]): requests through `pylon dev` vs nginx as a reverse
//!   proxy vs the origin direct, with wrk, pinned to the same cores;
//! - request phase ([`request_phase`]): a route with API key + JWT +
//!   validation + a mapping vs the same route with authorization NONE;
//! - limits ([`limits`]): no limit vs a stage limit in process vs in Redis
//!   (1 and 3 data planes), Redis calls per request, accuracy of a shared
//!   limit over 3 nodes at 3 offered loads, cache hits vs the origin direct;
//! - telemetry ([`telemetry`]): telemetry off vs metrics + access logs vs
//!   tracing at 1 % and 100 % vs the collector down;
//! - propagation ([`propagation`]): deploy ACK → every subscriber serves the
//!   new version, with 2 real data planes and with 1,000 simulated ones;
//! - WebSocket ([`websocket`]): messages through a route vs POSTs through
//!   an HTTP route and through nginx, `@connections` delivery across nodes
//!   vs on the holding node, memory of 10,000 idle connections.
//!
//! Method (see docs/performance.md): the same load shape for both systems —
//! concurrent clients, each write a new ~300-byte record, spread over all three
//! nodes — alternating Pylon and etcd rounds, medians over the rounds, CPU per
//! write from /proc.

mod etcd;
mod limits;
mod propagation;
mod proxy;
mod request_phase;
mod telemetry;
mod websocket;

use pylon_proto::admin::v1::{CreateApiRequest, GetClusterStatusRequest};
use pylon_proto::config::v1::{Api, Integration, MockResponse, Route, integration};
use pylon_tests::{Cluster, connect, cpu_time};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const ROUND: Duration = Duration::from_secs(8);
const ROUNDS: usize = 3;
const FAILOVERS: usize = 12;

fn api(name: String) -> Api {
    Api {
        name,
        description: "x".repeat(120),
        routes: vec![Route {
            method: "GET".into(),
            path: "/items/{id}".into(),
            integration: Some(Integration {
                r#type: integration::Type::Mock as i32,
                mock: Some(MockResponse {
                    status_code: 200,
                    body: "{\"ok\":true}".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct Outcome {
    writes: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
    fn cpu_per_write(&self) -> Duration {
        self.cpu / self.writes.max(1) as u32
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `CLIENTS` loops of `write(client, sequence)` for `ROUND`.
async fn load<F, Fut>(pids: &[u32], write: F) -> Outcome
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let write = Arc::new(write);
    let sequence = Arc::new(AtomicUsize::new(0));
    let cpu_before: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (write, sequence) = (write.clone(), sequence.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while start.elapsed() < ROUND {
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    if write(client, n).await {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut outcome = Outcome {
        writes: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        cpu: Duration::ZERO,
    };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            outcome.writes += latencies.len();
            outcome.errors += errors;
            outcome.latencies.extend(latencies);
        }
    }
    outcome.elapsed = start.elapsed();
    let cpu_after: Duration = pids.iter().map(|p| cpu_time(*p)).sum();
    outcome.cpu = cpu_after.saturating_sub(cpu_before);
    outcome
}

/// One round of creates; `keyed`: each carries an idempotency key, as the
/// CLI's writes do (the state machine then also remembers its outcome).
async fn pylon_round(cluster: &Cluster, round: usize, keyed: bool) -> Outcome {
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let node = &cluster.nodes[i % cluster.nodes.len()];
        clients.push(node.admin().await.expect("connect"));
    }
    let clients = Arc::new(clients);
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    load(&pids, move |client, n| {
        let mut admin = clients[client].clone();
        async move {
            let name = format!("r{round}-{n}{}", if keyed { "-k" } else { "" });
            let mut request = tonic::Request::new(CreateApiRequest {
                api: Some(api(name.clone())),
            });
            if keyed && let Ok(key) = format!("bench-{name}").parse() {
                request.metadata_mut().insert("idempotency-key", key);
            }
            admin.create_api(request).await.is_ok()
        }
    })
    .await
}

fn report(name: &str, outcomes: &[Outcome]) -> (f64, f64, f64, f64) {
    let mut rates: Vec<f64> = outcomes.iter().map(Outcome::rate).collect();
    let mut p50: Vec<f64> = outcomes
        .iter()
        .map(|o| o.percentile(50.0).as_secs_f64() * 1e3)
        .collect();
    let mut p99: Vec<f64> = outcomes
        .iter()
        .map(|o| o.percentile(99.0).as_secs_f64() * 1e3)
        .collect();
    let mut cpu: Vec<f64> = outcomes
        .iter()
        .map(|o| o.cpu_per_write().as_secs_f64() * 1e6)
        .collect();
    let errors: usize = outcomes.iter().map(|o| o.errors).sum();
    let (rate, p50, p99, cpu) = (
        median(&mut rates),
        median(&mut p50),
        median(&mut p99),
        median(&mut cpu),
    );
    println!(
        "{name:<8} {rate:>9.0} writes/s   p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   cluster CPU {cpu:>7.0} µs/write   errors {errors}"
    );
    (rate, p50, p99, cpu)
}

async fn failover(cluster: &mut Cluster) -> Vec<Duration> {
    let mut samples = Vec::new();
    for kill in 0..FAILOVERS {
        let leader = cluster.wait_for_leader().await;
        cluster.wait_until_caught_up().await;
        let survivors: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.endpoint())
            .collect();
        let mut admins = Vec::new();
        for endpoint in &survivors {
            admins.push(connect(endpoint).await.expect("connect"));
        }
        let start = Instant::now();
        cluster.by_id(leader).kill();
        let mut attempt = 0usize;
        loop {
            let count = admins.len();
            let admin = &mut admins[attempt % count];
            let mut request = tonic::Request::new(CreateApiRequest {
                api: Some(api(format!("failover-{kill}-{attempt}"))),
            });
            request.set_timeout(Duration::from_secs(3));
            if admin.create_api(request).await.is_ok() {
                break;
            }
            attempt += 1;
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no write succeeded 30 s after the kill"
            );
        }
        let took = start.elapsed();
        println!(
            "  kill {:>2}: leader {leader} → next acknowledged write after {:>6.0} ms",
            kill + 1,
            took.as_secs_f64() * 1e3
        );
        samples.push(took);
        cluster.by_id(leader).start().expect("restart");
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wanted = std::env::var("PYLON_BENCH").unwrap_or_else(|_| {
        "control-plane,proxy,request-phase,limits,telemetry,propagation,websocket".into()
    });
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    if wanted.contains(&"proxy") {
        proxy::run().await;
    }
    if wanted.contains(&"request-phase") {
        request_phase::run().await;
    }
    if wanted.contains(&"limits") {
        limits::run().await;
    }
    if wanted.contains(&"telemetry") {
        telemetry::run().await;
    }
    if wanted.contains(&"propagation") {
        propagation::run().await;
    }
    if wanted.contains(&"websocket") {
        websocket::run().await;
    }
    if wanted.contains(&"control-plane") {
        control_plane().await;
    }
    let bad = proxy::non_2xx_seen();
    if bad > 0 {
        eprintln!(
            "\nbenchmark FAILED: {bad} answers other than 2xx (or socket errors) were counted; the figures above are not valid"
        );
        std::process::exit(1);
    }
}

async fn control_plane() {
    println!(
        "Pylon control-plane benchmark: 3 nodes on loopback, fsync on, {CLIENTS} concurrent clients, {ROUNDS} rounds of {}s",
        ROUND.as_secs()
    );
    // The snapshot interval can be set for experiments (default: the CLI's).
    let interval = std::env::var("PYLON_BENCH_SNAPSHOT_INTERVAL")
        .ok()
        .map(|n| format!("--snapshot-interval={n}"));
    let args: Vec<&str> = interval.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(3, &args).await;
    let etcd = etcd::Cluster::start(3).await;
    if etcd.is_none() {
        println!(
            "etcd is not installed (scripts/bootstrap bench installs Debian's etcd-server): Pylon alone"
        );
    }

    // Warm both up, then alternate rounds, rotating which goes first.
    let _ = pylon_round(&cluster, 99, false).await;
    if let Some(etcd) = &etcd {
        let _ = etcd.round(99).await;
    }
    let (mut pylon, mut keyed, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let pylon_first = round % 2 == 0;
        if pylon_first {
            pylon.push(pylon_round(&cluster, round, false).await);
            keyed.push(pylon_round(&cluster, round, true).await);
        }
        if let Some(etcd) = &etcd {
            peer.push(etcd.round(round).await);
        }
        if !pylon_first {
            keyed.push(pylon_round(&cluster, round, true).await);
            pylon.push(pylon_round(&cluster, round, false).await);
        }
    }
    println!("\nCommitted writes (median of {ROUNDS} rounds; every write audited):");
    let (rate, p50, p99, cpu) = report("pylon", &pylon);
    let (keyed_rate, _, keyed_p99, keyed_cpu) = report("keyed", &keyed);
    println!(
        "ratio keyed/plain (idempotency keys remembered): throughput {:.2}×   p99 {:.2}×   CPU per write {:.2}×",
        keyed_rate / rate,
        keyed_p99 / p99,
        keyed_cpu / cpu
    );
    if !peer.is_empty() {
        let (etcd_rate, etcd_p50, etcd_p99, etcd_cpu) = report("etcd", &peer);
        println!(
            "ratio pylon/etcd: throughput {:.2}×   p50 {:.2}×   p99 {:.2}×   CPU per write {:.2}×",
            rate / etcd_rate,
            p50 / etcd_p50,
            p99 / etcd_p99,
            cpu / etcd_cpu
        );
    }
    drop(etcd);

    println!("\nLeader failover: kill -9 of the leader → next acknowledged write, {FAILOVERS} kills");
    let mut cluster = cluster;
    let samples = failover(&mut cluster).await;
    println!(
        "failover p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    // Any node that answers (the last one killed may still be starting).
    let mut final_leader = None;
    for node in &cluster.nodes {
        let Ok(mut admin) = node.admin().await else {
            continue;
        };
        if let Ok(status) = admin.get_cluster_status(GetClusterStatusRequest {}).await {
            final_leader = Some(status.into_inner().leader_id);
            break;
        }
    }
    match final_leader {
        Some(leader) => println!("final leader {leader} after {FAILOVERS} kills"),
        None => println!("no node answered GetClusterStatus after {FAILOVERS} kills"),
    }
}
