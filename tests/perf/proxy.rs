//! Proxy throughput and latency: wrk → `pylon dev` → origin, vs wrk → nginx
//! (reverse proxy, upstream keepalive) → the same origin, vs wrk → origin.
//!
//! Layout (see docs/performance.md): wrk alone on CPU 0; the proxy and the
//! origin (nginx `return 200`, 96-byte JSON) on CPU 1, so proxied throughput
//! is 1 / (proxy CPU + origin CPU per request). Rounds alternate the three
//! paths, rotating the order; medians are quoted. CPU per request comes from
//! /proc for the proxy process alone.

use pylon_proto::admin::v1::{CreateApiRequest, CreateDeploymentRequest};
use pylon_proto::config::v1::{Api, Integration, Route, integration};
use pylon_tests::{connect, cpu_time, eventually, free_port, pylon_bin};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const BODY: &str =
    r#"{"id":1,"name":"Rex","kind":"dog","tags":["good","boy"],"owner":{"id":7,"name":"Ann"},"ok":true}"#;

pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pylon dev` pinned to CPU 1, logging warnings to `dir/pylon.log`, with
/// the node-wide account limit off; its process, proxy port and admin client.
pub(crate) async fn start_pylon_dev(dir: &Path) -> (Process, u16, pylon_tests::Admin) {
    let (listen, admin, raft) = (free_port(), free_port(), free_port());
    let log = std::fs::File::create(dir.join("pylon.log")).expect("log");
    let pylon = Process(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(pylon_bin())
            .arg("dev")
            .arg(format!("--data-dir={}", dir.join("dev").display()))
            .arg(format!("--listen=127.0.0.1:{listen}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--raft-listen=127.0.0.1:{raft}"))
            // nginx, the peer, runs with `access_log off`.
            .arg("--access-log=off")
            // The node-wide account limit (10,000/s) would answer part of a
            // run with 429s, which wrk counts as requests.
            .arg("--account-rate=0")
            .env("PYLON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pylon dev"),
    );
    let client = eventually("pylon dev admin API", Duration::from_secs(20), || async {
        connect(&format!("http://127.0.0.1:{admin}")).await.ok()
    })
    .await;
    (pylon, listen, client)
}

/// A `pylon data-plane` pinned to CPU 1, with the node-wide account limit
/// off (it would cap the runs); its process and proxy port.
pub(crate) fn data_plane(dir: &Path, name: &str, control_plane: &str, extra: &[String]) -> (Process, u16) {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(pylon_bin())
        .arg("data-plane")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--control-plane={control_plane}"))
        .arg(format!("--node-id={name}"))
        .arg("--account-rate=0")
        .args(extra)
        .env("PYLON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start data plane");
    (Process(child), port)
}

pub(crate) fn available(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn nginx(dir: &Path, name: &str, server: &str) -> Process {
    let conf = dir.join(format!("{name}.conf"));
    let temp = dir.join(name);
    let _ = std::fs::create_dir_all(&temp);
    let t = temp.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {t}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  keepalive_requests 1000000;
  {server}
}}"
        ),
    )
    .expect("nginx config");
    let child = Command::new("taskset")
        .args(["-c", "1", "nginx", "-p"])
        .arg(&temp)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .expect("start nginx");
    Process(child)
}

/// An nginx origin on `port` answering `body` (JSON) at every path, with
/// `locations` (nginx `location` blocks) before that.
pub(crate) fn origin(dir: &Path, port: u16, body: &str, locations: &str) -> Process {
    nginx(
        dir,
        "origin",
        &format!(
            "server {{ listen 127.0.0.1:{port} reuseport backlog=4096;
  {locations}
  location / {{ default_type application/json; return 200 '{body}'; }} }}"
        ),
    )
}

/// nginx on `port` as a reverse proxy (keep-alive upstream) to the origin
/// on `origin_port`: the peer of a proxied request.
pub(crate) fn nginx_proxy(dir: &Path, port: u16, origin_port: u16) -> Process {
    nginx(
        dir,
        "proxy",
        &format!(
            "upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    )
}

/// Moves this process (the clients, receivers and bookkeeping of a
/// benchmark) to CPU 0, beside wrk; what is measured has CPU 1.
pub(crate) fn pin_to_cpu0() {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: f64,
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    for (unit, factor) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3)] {
        if let Some(number) = text.strip_suffix(unit) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    None
}

fn wrk(url: &str, host: &str, connections: usize, seconds: u64) -> Option<Wrk> {
    wrk_with(url, host, connections, seconds, &[])
}

/// wrk on CPU 0; `extra` adds arguments (a `-s script.lua`).
pub(crate) fn wrk_with(
    url: &str,
    host: &str,
    connections: usize,
    seconds: u64,
    extra: &[&str],
) -> Option<Wrk> {
    let output = Command::new("taskset")
        .args(["-c", "0", "wrk", "-t1", "--latency"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["-H", &format!("Host: {host}")])
        .args(extra)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = Wrk {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        requests: 0.0,
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            result.rps = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("50%") {
            result.p50_ms = parse_duration_ms(rest).unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("99%") {
            result.p99_ms = parse_duration_ms(rest).unwrap_or(0.0);
        } else if line.contains("requests in") {
            result.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
        }
        if line.starts_with("Non-2xx") {
            println!("    wrk: {line}");
        }
    }
    (result.rps > 0.0).then_some(result)
}

struct Path3 {
    name: &'static str,
    url: String,
    host: String,
    pid: Option<u32>,
}

#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
    idle_p50: Vec<f64>,
    idle_p99: Vec<f64>,
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") {
        println!(
            "proxy benchmark skipped: wrk, nginx and taskset are needed (scripts/bootstrap bench installs them)"
        );
        return;
    }
    println!(
        "\nProxy: wrk -t1 -c64 on CPU 0; proxy + origin on CPU 1; {ROUNDS} rounds of {SECONDS}s, alternating; 96-byte JSON body"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_port = free_port();
    let nginx_port = free_port();
    let _origin = origin(dir.path(), origin_port, BODY, "");
    let nginx_proxy = nginx_proxy(dir.path(), nginx_port, origin_port);

    let (pylon, listen, mut client) = start_pylon_dev(dir.path()).await;
    client
        .create_api(CreateApiRequest {
            api: Some(Api {
                name: "bench".into(),
                routes: vec![Route {
                    method: "GET".into(),
                    path: "/bench".into(),
                    integration: Some(Integration {
                        r#type: integration::Type::HttpProxy as i32,
                        uri: format!("http://127.0.0.1:{origin_port}/bench"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .expect("create bench API");
    client
        .create_deployment(CreateDeploymentRequest {
            api: "bench".into(),
            stage: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("deploy bench API");
    let http = pylon_tests::gateway::HttpClient::default();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    eventually("pylon serves the bench API", Duration::from_secs(10), || async {
        let reply = http.get(address, "bench.localhost", "/prod/bench").await.ok()?;
        (reply.status == 200 && reply.body == BODY).then_some(())
    })
    .await;

    let paths = [
        Path3 {
            name: "direct",
            url: format!("http://127.0.0.1:{origin_port}/bench"),
            host: "origin".into(),
            pid: None,
        },
        Path3 {
            name: "nginx",
            url: format!("http://127.0.0.1:{nginx_port}/bench"),
            host: "origin".into(),
            pid: Some(nginx_proxy.0.id()),
        },
        Path3 {
            name: "pylon",
            url: format!("http://127.0.0.1:{listen}/prod/bench"),
            host: "bench.localhost".into(),
            pid: Some(pylon.0.id()),
        },
    ];
    for path in &paths {
        let _ = wrk(&path.url, &path.host, 64, 2);
    }
    let mut samples: Vec<Samples> = paths.iter().map(|_| Samples::default()).collect();
    for round in 0..ROUNDS {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let path = &paths[i];
            let before = path.pid.map(cpu_time);
            let Some(loaded) = wrk(&path.url, &path.host, 64, SECONDS) else {
                println!("    {}: wrk failed", path.name);
                continue;
            };
            if let (Some(pid), Some(before)) = (path.pid, before) {
                let cpu = cpu_time(pid).saturating_sub(before);
                samples[i]
                    .cpu_us
                    .push(cpu.as_secs_f64() * 1e6 / loaded.requests.max(1.0));
            }
            samples[i].rps.push(loaded.rps);
            samples[i].p50.push(loaded.p50_ms);
            samples[i].p99.push(loaded.p99_ms);
            if let Some(idle) = wrk(&path.url, &path.host, 1, 4) {
                samples[i].idle_p50.push(idle.p50_ms);
                samples[i].idle_p99.push(idle.p99_ms);
            }
            println!(
                "  round {round} {:<6} {:>9.0} rps  p50 {:.3} ms  p99 {:.3} ms",
                path.name, loaded.rps, loaded.p50_ms, loaded.p99_ms
            );
        }
    }
    println!("\n  path     rps (c64)   p50 (c64)  p99 (c64)  p50 (c1)  p99 (c1)  proxy CPU/req");
    for (path, s) in paths.iter().zip(&samples) {
        let cpu = if s.cpu_us.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1} µs", median(&s.cpu_us))
        };
        println!(
            "  {:<7} {:>10.0}  {:>8.3} ms  {:>7.3} ms  {:>6.3} ms  {:>6.3} ms  {cpu}",
            path.name,
            median(&s.rps),
            median(&s.p50),
            median(&s.p99),
            median(&s.idle_p50),
            median(&s.idle_p99),
        );
    }
    let (direct, ngx, py) = (&samples[0], &samples[1], &samples[2]);
    println!(
        "  ratio pylon/nginx: throughput {:.2}×  p50 {:.2}×  p99 {:.2}×  CPU/req {:.2}×  added latency at c1: pylon +{:.0} µs, nginx +{:.0} µs",
        median(&py.rps) / median(&ngx.rps),
        median(&py.p50) / median(&ngx.p50),
        median(&py.p99) / median(&ngx.p99),
        median(&py.cpu_us) / median(&ngx.cpu_us),
        (median(&py.idle_p50) - median(&direct.idle_p50)) * 1e3,
        (median(&ngx.idle_p50) - median(&direct.idle_p50)) * 1e3,
    );
    println!(
        "  ratio pylon/direct: throughput {:.2}×  p50 {:.2}×  p99 {:.2}×",
        median(&py.rps) / median(&direct.rps),
        median(&py.p50) / median(&direct.p50),
        median(&py.p99) / median(&direct.p99),
    );
}
