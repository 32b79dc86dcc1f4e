//! The proxied path against nginx, every figure a ratio to a peer measured
//! in the same run (method: docs/performance.md):
//!
//! 1. Layout A — wrk alone on CPU 0; the proxies and the origin (nginx
//!    `return 200`, 96-byte JSON) on CPU 1, so throughput is
//!    1 / (proxy CPU + origin CPU per request). Paths, alternating and
//!    rotating over rounds: the origin direct; nginx as a reverse proxy with
//!    access logs off and with its buffered log to a file; `pylon dev` with
//!    logs off, with the stage's `$context` access-log format written to a
//!    file, the full chain (API key, JWT with cached keys, a route throttle,
//!    metrics and the access log), and a stage-cache hit. Ratios: throughput
//!    and CPU per request against nginx, logs on against logs off, the chain
//!    against bare, the cache hit's CPU against the origin's own
//!    `return 200`; the added latency at one connection; upstream
//!    connection reuse (from the origin's `stub_status`).
//! 2. Layout B — the proxy alone on CPU 1, origin and client on CPU 0, a
//!    fixed 16k rps from `h2load` (32 connections × 500/s): p50/p99.
//! 3. Both cores, nothing pinned, 256 connections: Pylon (one worker per
//!    CPU) vs nginx with `worker_processes 2`.
//!
//! Any answer other than 2xx fails the run (see [`non_2xx_seen`]).

use pylon_proto::admin::v1::{CreateApiRequest, CreateDeploymentRequest};
use pylon_proto::config::v1::Api;
use pylon_tests::{connect, cpu_time, eventually, free_port, pylon_bin};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const BODY: &str =
    r#"{"id":1,"name":"Rex","kind":"dog","tags":["good","boy"],"owner":{"id":7,"name":"Ann"},"ok":true}"#;

/// Whether this run is the training load of a profile-guided build
/// (`PYLON_BENCH_TRAIN` set; scripts/pgo-build): layout A's warm-up (every
/// path for 2 s at 64 connections: Pylon's four and its peers'), the
/// proxied GETs for 2 s at one connection, and no figures.
pub(crate) fn training() -> bool {
    std::env::var_os("PYLON_BENCH_TRAIN").is_some()
}

pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    /// SIGTERM first, so that an nginx master stops its workers (a SIGKILL
    /// would leave them running without it), then SIGKILL after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pylon dev` pinned to CPU 1, logging warnings to `dir/pylon.log`, with
/// access logs and the node-wide account limit off; its process, proxy
/// port and admin client.
pub(crate) async fn start_pylon_dev(dir: &Path) -> (Process, u16, pylon_tests::Admin) {
    start_pylon(dir, "pylon", Some("1"), &["--access-log=off".into()]).await
}

/// `pylon dev` named `name` (its data dir and log in `dir`), on `cpus`
/// (`taskset -c`; `None`: unpinned), with `extra` flags; the node-wide
/// account limit is off, since its 429s would count as requests.
pub(crate) async fn start_pylon(
    dir: &Path,
    name: &str,
    cpus: Option<&str>,
    extra: &[String],
) -> (Process, u16, pylon_tests::Admin) {
    let (listen, admin, raft) = (free_port(), free_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(pylon_bin());
            command
        }
        None => Command::new(pylon_bin()),
    };
    let pylon = Process(
        command
            .args(["dev", "--no-console", "--no-portal"])
            .arg(format!("--data-dir={}", dir.join(name).display()))
            .arg(format!("--listen=127.0.0.1:{listen}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--raft-listen=127.0.0.1:{raft}"))
            .arg("--account-rate=0")
            .args(extra)
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
    nginx_on(dir, name, server, Some("1"), 1)
}

/// nginx named `name` with `server` (http-level config), on `cpus`
/// (`None`: unpinned) with `workers` worker processes.
pub(crate) fn nginx_on(dir: &Path, name: &str, server: &str, cpus: Option<&str>, workers: usize) -> Process {
    let conf = dir.join(format!("{name}.conf"));
    let temp = dir.join(name);
    let _ = std::fs::create_dir_all(&temp);
    let t = temp.display();
    // One worker runs in the master's process (what /proc measures); more
    // need the master.
    let master = if workers > 1 { "on" } else { "off" };
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process {master}; worker_processes {workers}; pid {t}/nginx.pid; error_log stderr error;
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
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus, "nginx"]);
            command
        }
        None => Command::new("nginx"),
    };
    let child = command
        .arg("-p")
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

/// Answers other than 2xx (and socket errors) wrk saw in this run.
static NON_2XX: AtomicU64 = AtomicU64::new(0);

/// How many answers other than 2xx (or socket errors) any wrk or h2load
/// run of this process saw: a run that saw one fails, since a cheap 429 or
/// 502 inflates throughput.
pub(crate) fn non_2xx_seen() -> u64 {
    NON_2XX.load(Ordering::Relaxed)
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

/// wrk on CPU 0; `extra` adds arguments (a `-s script.lua`).
pub(crate) fn wrk_with(
    url: &str,
    host: &str,
    connections: usize,
    seconds: u64,
    extra: &[&str],
) -> Option<Wrk> {
    wrk_on(url, host, connections, seconds, extra, Some("0"), 1)
}

/// wrk with `threads` threads on `cpus` (`None`: unpinned).
pub(crate) fn wrk_on(
    url: &str,
    host: &str,
    connections: usize,
    seconds: u64,
    extra: &[&str],
    cpus: Option<&str>,
    threads: usize,
) -> Option<Wrk> {
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus, "wrk"]);
            command
        }
        None => Command::new("wrk"),
    };
    let output = command
        .arg(format!("-t{threads}"))
        .arg("--latency")
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
        if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            println!("    wrk {url}: {line}");
            let count: u64 = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
            NON_2XX.fetch_add(count.max(1), Ordering::Relaxed);
        }
    }
    (result.rps > 0.0).then_some(result)
}

/// A path wrk loads: where, with which `Host`, whose CPU is measured, and
/// an optional wrk script (headers).
struct Load {
    name: &'static str,
    url: String,
    host: &'static str,
    pid: u32,
    script: Option<String>,
    /// Also measured at one connection (added latency).
    idle: bool,
    /// Upstream reuse is reported (the request reaches the origin).
    upstream: bool,
}

#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
    idle_p50: Vec<f64>,
    idle_p99: Vec<f64>,
    reuse: Vec<f64>,
}

impl Samples {
    fn get(&self, what: fn(&Samples) -> &Vec<f64>) -> f64 {
        median(what(self))
    }
}

/// The origin's `stub_status`: (connections accepted, requests) so far.
async fn origin_counters(port: u16) -> Option<(f64, f64)> {
    let http = pylon_tests::gateway::HttpClient::default();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let reply = http.get(address, "origin", "/status").await.ok()?;
    let line = reply.body.lines().nth(2)?;
    let numbers: Vec<f64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    Some((*numbers.first()?, *numbers.get(2)?))
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// The stage access-log format of the logged Pylon: AWS's documented JSON
/// example (`$context` variables).
const ACCESS_LOG_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.requestTime","httpMethod":"$context.httpMethod","routeKey":"$context.routeKey","status":"$context.status","protocol":"$context.protocol","responseLength":"$context.responseLength"}"#;

/// Creates the API `bench` (GET /bench, and GET /chain behind an API key
/// and a JWT authorizer whose keys the origin serves) and deploys it to
/// `stages` (name, stage settings as JSON); returns the API key's value.
async fn bench_api(
    admin: &mut pylon_tests::Admin,
    origin_port: u16,
    stages: &[(&str, serde_json::Value)],
) -> String {
    use pylon_proto::admin::v1::{CreateApiKeyRequest, CreateStageRequest, CreateUsagePlanRequest};
    use pylon_proto::config::v1::{ApiKey, ApiStageRef, Stage, UsagePlan};
    use serde_json::json;
    let origin = format!("http://127.0.0.1:{origin_port}");
    let api: Api = serde_json::from_value(json!({
        "name": "bench",
        "authorizers": [{"name": "oidc", "jwt": {"issuer": "https://issuer.bench", "audiences": ["bench"],
                         "jwksUri": format!("{origin}/jwks.json"), "algorithms": ["RS256"]}}],
        "routes": [
            {"method": "GET", "path": "/bench", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/bench")}},
            {"method": "GET", "path": "/chain", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/chain")},
             "authorization": {"type": "JWT", "authorizer": "oidc", "scopes": ["pets.read"], "apiKeyRequired": true}},
        ],
    }))
    .expect("bench API");
    admin
        .create_api(CreateApiRequest { api: Some(api) })
        .await
        .expect("create bench API");
    let deployment = admin
        .create_deployment(CreateDeploymentRequest {
            api: "bench".into(),
            ..Default::default()
        })
        .await
        .expect("deploy bench API")
        .into_inner();
    let mut refs = Vec::new();
    for (name, settings) in stages {
        let mut stage: Stage = serde_json::from_value(settings.clone()).expect("stage settings");
        stage.api = "bench".into();
        stage.name = (*name).into();
        stage.deployment_id = deployment.id.clone();
        admin
            .create_stage(CreateStageRequest { stage: Some(stage) })
            .await
            .expect("create stage");
        refs.push(ApiStageRef {
            api: "bench".into(),
            stage: (*name).into(),
            ..Default::default()
        });
    }
    let key = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey {
                name: "bench".into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("API key")
        .into_inner();
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "bench".into(),
                api_stages: refs,
                api_key_ids: vec![key.api_key.map(|k| k.id).unwrap_or_default()],
                ..Default::default()
            }),
        })
        .await
        .expect("usage plan");
    key.value
}

/// Waits until `path` answers 200 with the bench body (and, for `hit`,
/// from the cache).
async fn serves(port: u16, path: &str, headers: &[(&str, &str)], hit: bool) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eventually(
        &format!("{path} answers 200"),
        Duration::from_secs(20),
        || async {
            let mut command = Command::new("curl");
            command.args(["-s", "-D", "-", "-H", "Host: bench.localhost"]);
            for (name, value) in headers {
                command.args(["-H", &format!("{name}: {value}")]);
            }
            let output = command.arg(format!("http://{address}{path}")).output().ok()?;
            let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
            let ok = text.starts_with("http/1.1 200") && text.ends_with(&BODY.to_ascii_lowercase());
            (ok && (!hit || text.contains("x-cache: hit"))).then_some(())
        },
    )
    .await;
}

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") || !available("openssl") {
        println!(
            "proxy benchmark skipped: wrk, nginx, taskset and openssl are needed (scripts/bootstrap bench installs them)"
        );
        return;
    }
    if training() {
        println!("\nProxy, training load only (PYLON_BENCH_TRAIN is set): no figures");
    } else {
        println!(
            "\nProxy, layout A: wrk -t1 -c64 on CPU 0; proxies + origin on CPU 1; {ROUNDS} rounds of {SECONDS}s, alternating; 96-byte JSON body"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = pylon_tests::jwt::rsa_signer(dir.path(), "bench-key");
    let jwks = serde_json::json!({"keys": [signer.jwk]}).to_string();
    let token = pylon_tests::jwt::sign(
        &signer,
        &serde_json::json!({"iss": "https://issuer.bench", "aud": "bench", "sub": "ann",
                            "scope": "pets.read", "exp": pylon_tests::jwt::now() + 3600}),
    );
    let origin_port = free_port();
    let origin_process = origin(
        dir.path(),
        origin_port,
        BODY,
        &format!(
            "location = /jwks.json {{ default_type application/json; return 200 '{jwks}'; }}
  location = /status {{ stub_status; }}"
        ),
    );
    let nginx_port = free_port();
    let nginx_plain = nginx_proxy(dir.path(), nginx_port, origin_port);
    let nginx_log_port = free_port();
    let nginx_logged = nginx(
        dir.path(),
        "proxy-log",
        &format!(
            "upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{nginx_log_port} backlog=4096;
    access_log {} combined buffer=64k flush=1s;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}",
            dir.path().join("nginx-access.log").display()
        ),
    );

    let (bare, bare_port, mut bare_admin) =
        start_pylon(dir.path(), "pylon", Some("1"), &["--access-log=off".into()]).await;
    let access_log = dir.path().join("pylon-access.log");
    let (logged, logged_port, mut logged_admin) = start_pylon(
        dir.path(),
        "pylon-log",
        Some("1"),
        &[
            "--access-log=file".into(),
            format!("--access-log-file={}", access_log.display()),
        ],
    )
    .await;
    let no_cache = serde_json::json!({});
    bench_api(
        &mut bare_admin,
        origin_port,
        &[
            ("prod", no_cache),
            ("cached", serde_json::json!({"cache": {"enabled": true}})),
        ],
    )
    .await;
    let key = bench_api(
        &mut logged_admin,
        origin_port,
        &[(
            "prod",
            serde_json::json!({
                "accessLogFormat": ACCESS_LOG_FORMAT,
                "routeThrottle": {"GET /chain": {"rateLimit": 1e7, "burstLimit": 1000000}},
            }),
        )],
    )
    .await;
    let bearer = format!("Bearer {token}");
    let chain_headers = [("Authorization", bearer.as_str()), ("x-api-key", key.as_str())];
    serves(bare_port, "/prod/bench", &[], false).await;
    serves(bare_port, "/cached/bench", &[], true).await;
    serves(logged_port, "/prod/bench", &[], false).await;
    serves(logged_port, "/prod/chain", &chain_headers, false).await;
    let script = dir.path().join("chain.lua");
    std::fs::write(
        &script,
        format!("wrk.headers[\"Authorization\"] = \"{bearer}\"\nwrk.headers[\"x-api-key\"] = \"{key}\"\n"),
    )
    .expect("wrk script");

    let pylon_url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    let path = |name, url, host, pid, idle, upstream| Load {
        name,
        url,
        host,
        pid,
        script: None,
        idle,
        upstream,
    };
    let paths = [
        path(
            "direct",
            pylon_url(origin_port, "/bench"),
            "origin",
            origin_process.0.id(),
            true,
            false,
        ),
        path(
            "nginx",
            pylon_url(nginx_port, "/bench"),
            "origin",
            nginx_plain.0.id(),
            true,
            true,
        ),
        path(
            "nginx+log",
            pylon_url(nginx_log_port, "/bench"),
            "origin",
            nginx_logged.0.id(),
            false,
            false,
        ),
        path(
            "pylon",
            pylon_url(bare_port, "/prod/bench"),
            "bench.localhost",
            bare.0.id(),
            true,
            true,
        ),
        path(
            "pylon+log",
            pylon_url(logged_port, "/prod/bench"),
            "bench.localhost",
            logged.0.id(),
            false,
            false,
        ),
        Load {
            script: Some(script.display().to_string()),
            ..path(
                "chain",
                pylon_url(logged_port, "/prod/chain"),
                "bench.localhost",
                logged.0.id(),
                false,
                false,
            )
        },
        path(
            "cache hit",
            pylon_url(bare_port, "/cached/bench"),
            "bench.localhost",
            bare.0.id(),
            false,
            false,
        ),
    ];
    let extra = |p: &Load| -> Vec<String> {
        p.script
            .iter()
            .flat_map(|s| ["-s".to_owned(), s.clone()])
            .collect()
    };
    for p in &paths {
        let args = extra(p);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = wrk_with(&p.url, p.host, 64, 2, &args);
    }
    if training() {
        // One connection too: there every request parks the worker twice.
        for p in paths.iter().filter(|p| p.idle) {
            let _ = wrk_with(&p.url, p.host, 1, 2, &[]);
        }
        println!("  training load done; the Pylon processes exit and write their profiles");
        return;
    }
    let mut samples: Vec<Samples> = paths.iter().map(|_| Samples::default()).collect();
    for round in 0..ROUNDS {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let p = &paths[i];
            let args = extra(p);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let counters = origin_counters(origin_port).await;
            let before = cpu_time(p.pid);
            let Some(loaded) = wrk_with(&p.url, p.host, 64, SECONDS, &args) else {
                println!("    {}: wrk failed", p.name);
                continue;
            };
            let cpu = cpu_time(p.pid).saturating_sub(before);
            let s = &mut samples[i];
            s.cpu_us.push(cpu.as_secs_f64() * 1e6 / loaded.requests.max(1.0));
            if let (true, Some((a0, r0)), Some((a1, r1))) =
                (p.upstream, counters, origin_counters(origin_port).await)
            {
                // Each status read is one connection and one request of its own.
                let (accepted, requests) = (a1 - a0 - 1.0, r1 - r0 - 1.0);
                s.reuse
                    .push(100.0 * (1.0 - accepted.max(0.0) / requests.max(1.0)));
            }
            s.rps.push(loaded.rps);
            s.p50.push(loaded.p50_ms);
            s.p99.push(loaded.p99_ms);
            if p.idle
                && let Some(idle) = wrk_with(&p.url, p.host, 1, 4, &args)
            {
                s.idle_p50.push(idle.p50_ms);
                s.idle_p99.push(idle.p99_ms);
            }
            println!(
                "  round {round} {:<10} {:>9.0} rps  p50 {:.3} ms  p99 {:.3} ms  CPU/req {:.1} µs",
                p.name,
                loaded.rps,
                loaded.p50_ms,
                loaded.p99_ms,
                cpu.as_secs_f64() * 1e6 / loaded.requests.max(1.0)
            );
        }
    }
    println!(
        "\n  path        rps (c64)   p50 (c64)  p99 (c64)  p50 (c1)  p99 (c1)  CPU/req   upstream reuse"
    );
    for (p, s) in paths.iter().zip(&samples) {
        let idle = |v: &Vec<f64>| {
            if v.is_empty() {
                "     -   ".to_owned()
            } else {
                format!("{:>6.3} ms", median(v))
            }
        };
        let reuse = if s.reuse.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2} %", median(&s.reuse))
        };
        println!(
            "  {:<10} {:>10.0}  {:>8.3} ms  {:>7.3} ms  {}  {}  {:>5.1} µs  {reuse}",
            p.name,
            s.get(|s| &s.rps),
            s.get(|s| &s.p50),
            s.get(|s| &s.p99),
            idle(&s.idle_p50),
            idle(&s.idle_p99),
            s.get(|s| &s.cpu_us),
        );
    }
    let by = |name: &str| &samples[paths.iter().position(|p| p.name == name).unwrap_or(0)];
    let (direct, ngx, ngx_log, py, py_log, chain, hit) = (
        by("direct"),
        by("nginx"),
        by("nginx+log"),
        by("pylon"),
        by("pylon+log"),
        by("chain"),
        by("cache hit"),
    );
    let rps = |s: &Samples| s.get(|s| &s.rps);
    let cpu = |s: &Samples| s.get(|s| &s.cpu_us);
    println!("\n  ratios (goal in brackets):");
    println!(
        "  proxied, logs off   pylon/nginx  throughput {:.2}× [≥ 1.0]  CPU/req {:.2}× [≤ 1.0]",
        rps(py) / rps(ngx),
        cpu(py) / cpu(ngx)
    );
    println!(
        "  proxied, logs on    pylon+log/pylon {:.2}× [≥ 0.95]  pylon+log/nginx+log {:.2}× [≥ 1.0]  (log line {:.1} µs CPU)",
        rps(py_log) / rps(py),
        rps(py_log) / rps(ngx_log),
        cpu(py_log) - cpu(py)
    );
    println!(
        "  full chain          chain/pylon {:.2}× [≥ 0.8]  (chain {:.1} µs CPU/req)",
        rps(chain) / rps(py),
        cpu(chain)
    );
    println!(
        "  cache hit           CPU/req pylon {:.1} µs vs origin return 200 {:.1} µs: {:.2}× [≤ 1.0]",
        cpu(hit),
        cpu(direct),
        cpu(hit) / cpu(direct)
    );
    let added = |s: &Samples| (s.get(|s| &s.idle_p50) - direct.get(|s| &s.idle_p50)) * 1e3;
    println!(
        "  added latency, c1   pylon +{:.0} µs  nginx +{:.0} µs [pylon ≤ nginx]",
        added(py),
        added(ngx)
    );

    if available("h2load") {
        layout_b(&paths[1], &paths[3], &origin_process).await;
    } else {
        println!("\nLayout B skipped: h2load is needed (scripts/bootstrap bench installs nghttp2-client)");
    }
    drop((bare, logged, nginx_plain, nginx_logged));
    both_cores(dir.path()).await;
}

/// Layout B: the proxy alone on CPU 1 (the origin moves to CPU 0, beside
/// h2load), a fixed 16k rps (32 connections × 500/s) for 10 s; p50/p99
/// from h2load's per-request log.
async fn layout_b(nginx: &Load, pylon: &Load, origin: &Process) {
    println!(
        "\nLayout B: proxy alone on CPU 1; origin + h2load --h1 -c32 --rps=500 (16k rps) on CPU 0; {ROUNDS} rounds of 10 s"
    );
    let pin = |pid: u32, cpu: &str| {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &pid.to_string()])
            .stdout(Stdio::null())
            .status();
    };
    pin(origin.0.id(), "0");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..ROUNDS {
        for k in 0..2 {
            let i = (k + round) % 2;
            let p = [nginx, pylon][i];
            let log = dir.path().join("h2load.log");
            let _ = std::fs::remove_file(&log);
            let _ = Command::new("taskset")
                .args(["-c", "0", "h2load", "--h1", "-c32", "--rps=500", "-D", "10"])
                .args(["-H", &format!(":authority: {}", p.host)])
                .arg(format!("--log-file={}", log.display()))
                .arg(&p.url)
                .stdout(Stdio::null())
                .status();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut latencies = Vec::new();
            let mut bad = 0u64;
            for line in text.lines() {
                let fields: Vec<&str> = line.split('\t').collect();
                let (Some(status), Some(micros)) = (fields.get(1), fields.get(2)) else {
                    continue;
                };
                if !status.starts_with('2') {
                    bad += 1;
                }
                if let Ok(micros) = micros.trim().parse::<f64>() {
                    latencies.push(micros / 1e3);
                }
            }
            if bad > 0 || latencies.is_empty() {
                println!(
                    "    h2load {}: {bad} answers other than 2xx of {}",
                    p.url,
                    latencies.len()
                );
                NON_2XX.fetch_add(bad.max(1), Ordering::Relaxed);
            }
            latencies.sort_by(|a, b| a.total_cmp(b));
            let at = |q: f64| {
                latencies
                    .get(((latencies.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            println!(
                "  round {round} {:<6} {} requests  p50 {:.3} ms  p99 {:.3} ms",
                p.name,
                latencies.len(),
                at(0.5),
                at(0.99)
            );
            results[i].0.push(at(0.5));
            results[i].1.push(at(0.99));
        }
    }
    pin(origin.0.id(), "1");
    println!(
        "  p50 nginx {:.3} ms, pylon {:.3} ms;  p99 nginx {:.3} ms, pylon {:.3} ms: {:.2}× [≤ 1.0]",
        median(&results[0].0),
        median(&results[1].0),
        median(&results[0].1),
        median(&results[1].1),
        median(&results[1].1) / median(&results[0].1)
    );
}

/// Both cores, nothing pinned, wrk -t2 -c256: Pylon with its default
/// workers (one per CPU) vs nginx with `worker_processes 2`, to an origin
/// with two workers.
async fn both_cores(dir: &Path) {
    println!(
        "\nBoth cores, nothing pinned: wrk -t2 -c256; pylon (a worker per CPU) vs nginx worker_processes 2; {ROUNDS} rounds of {SECONDS}s"
    );
    let origin_port = free_port();
    let _origin = nginx_on(
        dir,
        "origin-2",
        &format!(
            "server {{ listen 127.0.0.1:{origin_port} reuseport backlog=4096;
  location / {{ default_type application/json; return 200 '{BODY}'; }} }}"
        ),
        None,
        2,
    );
    let nginx_port = free_port();
    let _nginx = nginx_on(
        dir,
        "proxy-2",
        &format!(
            "upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 256; }}
  server {{ listen 127.0.0.1:{nginx_port} reuseport backlog=4096; location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
        None,
        2,
    );
    let (_pylon, pylon_port, mut admin) =
        start_pylon(dir, "pylon-2", None, &["--access-log=off".into()]).await;
    bench_api(&mut admin, origin_port, &[("prod", serde_json::json!({}))]).await;
    serves(pylon_port, "/prod/bench", &[], false).await;
    let targets = [
        ("nginx", format!("http://127.0.0.1:{nginx_port}/bench"), "origin"),
        (
            "pylon",
            format!("http://127.0.0.1:{pylon_port}/prod/bench"),
            "bench.localhost",
        ),
    ];
    for (_, url, host) in &targets {
        let _ = wrk_on(url, host, 256, 2, &[], None, 2);
    }
    let mut rps: [Vec<f64>; 2] = Default::default();
    for round in 0..ROUNDS {
        for k in 0..2 {
            let i = (k + round) % 2;
            let (name, url, host) = &targets[i];
            if let Some(run) = wrk_on(url, host, 256, SECONDS, &[], None, 2) {
                println!(
                    "  round {round} {name:<6} {:>9.0} rps  p99 {:.3} ms",
                    run.rps, run.p99_ms
                );
                rps[i].push(run.rps);
            }
        }
    }
    println!(
        "  nginx {:.0} rps, pylon {:.0} rps: pylon/nginx {:.2}×",
        median(&rps[0]),
        median(&rps[1]),
        median(&rps[1]) / median(&rps[0])
    );
}
