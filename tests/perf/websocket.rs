//! WebSocket APIs: messages a second through a route to an HTTP backend
//! (64 connections, each sending its next message when the reply came) vs
//! the same backend behind an HTTP route of Pylon and behind nginx (wrk,
//! 64 connections, POSTs of the same body) — CPU per message or request of
//! the proxy from /proc; the latency of an `@connections` POST on another
//! node (through Redis) until the client has the frame, vs on the node that
//! holds the connection; and the memory of 10,000 idle connections on one
//! node. The bench process and wrk run on CPU 0, the proxies and the origin
//! on CPU 1.

use crate::proxy::{available, data_plane, median, nginx_proxy, origin, pin_to_cpu0, wrk_with};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use pylon_proto::admin::v1::*;
use pylon_tests::gateway::HttpClient;
use pylon_tests::redis::RedisServer;
use pylon_tests::{Cluster, cpu_time, eventually, free_port, rss_kib};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const CONNECTIONS: usize = 64;
const IDLE: usize = 10_000;
const DELIVERIES: usize = 2_000;
const HOST: &str = "chat.localhost";
const MESSAGE: &str =
    r#"{"action":"send","text":"hello, this is a chat message of about a hundred bytes!!"}"#;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(port: u16) -> Option<Socket> {
    let mut request = format!("ws://127.0.0.1:{port}/prod").into_client_request().ok()?;
    request
        .headers_mut()
        .insert("host", http::HeaderValue::from_static(HOST));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tokio_tungstenite::client_async(request, stream)
        .await
        .ok()
        .map(|(socket, _)| socket)
}

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") {
        println!("WebSocket benchmark skipped: wrk, nginx and taskset are needed");
        return;
    }
    println!(
        "\nWebSocket: {CONNECTIONS} connections sending messages through a route to an HTTP origin vs POSTs through an HTTP route and through nginx; @connections delivery across nodes; {IDLE} idle connections. {ROUNDS} rounds of {SECONDS}s, alternating"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_port = free_port();
    let nginx_port = free_port();
    // `whoami` answers the connection id the gateway sends to integrations.
    let _origin = origin(
        dir.path(),
        origin_port,
        r#"{"ok":true}"#,
        r#"location /whoami { default_type application/json; return 200 '{"connectionId":"$http_x_pylon_connection_id"}'; }"#,
    );
    let nginx_proxy = nginx_proxy(dir.path(), nginx_port, origin_port);
    pin_to_cpu0();
    let redis = RedisServer::start(dir.path()).expect("redis");
    let redis_flag = format!("--redis={}", redis.url());
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let ops = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(pylon_proto::config::v1::ApiKey {
                name: "ops".into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("key")
        .into_inner();
    let (ops_id, ops_key) = (ops.api_key.map(|k| k.id).unwrap_or_default(), ops.value);
    let origin = format!("http://127.0.0.1:{origin_port}");
    let chat: pylon_proto::config::v1::Api = serde_json::from_value(json!({
        "name": "chat",
        "protocol": "WEBSOCKET",
        "routeSelectionExpression": "$request.body.action",
        "connectionsAccess": {"apiKeyIds": [ops_id]},
        "routes": [
            {"path": "send", "integration": {"type": "HTTP", "uri": format!("{origin}/send")}},
            {"path": "whoami", "integration": {"type": "HTTP", "uri": format!("{origin}/whoami")}},
            {"path": "$default", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": "{}"}}},
        ],
    }))
    .expect("chat API");
    let http: pylon_proto::config::v1::Api = serde_json::from_value(json!({
        "name": "rest",
        "routes": [{"method": "POST", "path": "/send", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/send")}}],
    }))
    .expect("HTTP API");
    for api in [chat, http] {
        let name = api.name.clone();
        admin
            .create_api(CreateApiRequest { api: Some(api) })
            .await
            .expect("API");
        let deployment = admin
            .create_deployment(CreateDeploymentRequest {
                api: name.clone(),
                ..Default::default()
            })
            .await
            .expect("deployment")
            .into_inner()
            .id;
        let stage: pylon_proto::config::v1::Stage = serde_json::from_value(json!({
            "api": name, "name": "prod", "deploymentId": deployment,
            // Opening 10,000 connections quickly is the point here.
            "websocket": {"connectThrottle": {"rateLimit": 100000.0, "burstLimit": 20000}},
        }))
        .expect("stage");
        admin
            .create_stage(CreateStageRequest { stage: Some(stage) })
            .await
            .expect("stage");
    }
    let quiet = ["--access-log=off".to_owned(), redis_flag.clone()];
    let (a, a_port) = data_plane(dir.path(), "dp-a", &endpoint, &quiet);
    let (_b, b_port) = data_plane(dir.path(), "dp-b", &endpoint, &quiet);
    let client = HttpClient::default();
    for port in [a_port, b_port] {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("the data planes serve", Duration::from_secs(20), || async {
            let request = http::Request::post("/prod/send")
                .header("host", "rest.localhost")
                .body(Full::new(Bytes::from_static(b"{}")))
                .ok()?;
            (client.send(address, request).await.ok()?.status == 200).then_some(())
        })
        .await;
    }
    let a_pid = a.0.id();

    // 1. Messages a second vs POSTs.
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{MESSAGE}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .expect("wrk script");
    let script = script.display().to_string();
    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS {
        sockets.push(open(a_port).await.expect("connect"));
    }
    let names = ["WebSocket message", "HTTP POST via Pylon", "HTTP POST via nginx"];
    let (mut rate, mut cpu) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
    let nginx_pid = nginx_proxy.0.id();
    for round in 0..ROUNDS {
        for k in 0..3 {
            let i = (k + round) % 3;
            let (pid, done, elapsed) = match i {
                0 => {
                    let before = cpu_time(a_pid);
                    let started = Instant::now();
                    let (done, back) =
                        messages(std::mem::take(&mut sockets), Duration::from_secs(SECONDS)).await;
                    sockets = back;
                    (cpu_time(a_pid).saturating_sub(before), done, started.elapsed())
                }
                _ => {
                    let (pid, port, host) = if i == 1 {
                        (a_pid, a_port, "rest.localhost")
                    } else {
                        (nginx_pid, nginx_port, "rest.localhost")
                    };
                    let before = cpu_time(pid);
                    let Some(run) = wrk_with(
                        &format!("http://127.0.0.1:{port}/prod/send"),
                        host,
                        CONNECTIONS,
                        SECONDS,
                        &["-s", &script],
                    ) else {
                        println!("    {}: wrk failed", names[i]);
                        continue;
                    };
                    (
                        cpu_time(pid).saturating_sub(before),
                        run.requests as u64,
                        Duration::from_secs(SECONDS),
                    )
                }
            };
            let per_second = done as f64 / elapsed.as_secs_f64();
            let us = pid.as_secs_f64() * 1e6 / done.max(1) as f64;
            rate[i].push(per_second);
            cpu[i].push(us);
            println!(
                "  round {round} {:<22} {:>9.0} /s  proxy {:>6.1} µs CPU each",
                names[i], per_second, us
            );
        }
    }
    let (ws_rate, ws_cpu) = (median(&rate[0]), median(&cpu[0]));
    for i in 0..3 {
        println!(
            "  {:<22} median {:>9.0} /s  {:>6.1} µs CPU each   message vs this: {:.2}× rate, {:.2}× CPU",
            names[i],
            median(&rate[i]),
            median(&cpu[i]),
            ws_rate / median(&rate[i]).max(1.0),
            ws_cpu / median(&cpu[i]).max(0.001),
        );
    }
    drop(sockets);

    // 2. @connections delivery: POST on B (through Redis) vs on A, until
    // the client on A has the frame.
    let mut socket = open(a_port).await.expect("connect");
    socket
        .send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .expect("send");
    let id = match socket.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["connectionId"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        other => panic!("no whoami reply: {other:?}"),
    };
    println!("  @connections delivery, {DELIVERIES} POSTs each, one at a time:");
    let mut results = Vec::new();
    for (name, port) in [
        ("on the holding node", a_port),
        ("on another node (Redis)", b_port),
    ] {
        let mut latencies = Vec::with_capacity(DELIVERIES);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        for i in 0..DELIVERIES + 100 {
            let request = http::Request::post(format!("/prod/@connections/{id}"))
                .header("host", HOST)
                .header("x-api-key", &ops_key)
                .body(Full::new(Bytes::from(format!("{{\"n\":{i}}}"))))
                .expect("request");
            let started = Instant::now();
            let reply = client.send(address, request).await.expect("POST");
            assert_eq!(reply.status, 200, "{}", reply.body);
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => {}
                other => panic!("no frame: {other:?}"),
            }
            if i >= 100 {
                latencies.push(started.elapsed());
            }
        }
        latencies.sort();
        let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "    {name:<26} p50 {:>7.3} ms  p99 {:>7.3} ms",
            p(0.5).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3
        );
        results.push((p(0.5), p(0.99)));
    }
    println!(
        "    another node vs the holding node: p50 {:.2}×, p99 {:.2}×",
        results[1].0.as_secs_f64() / results[0].0.as_secs_f64(),
        results[1].1.as_secs_f64() / results[0].1.as_secs_f64()
    );
    drop(socket);

    // 3. Idle connections held by one node.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(a_pid);
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        let batch: Vec<_> = (0..200.min(IDLE - idle.len()))
            .map(|_| tokio::spawn(open(a_port)))
            .collect();
        for task in batch {
            if let Ok(Some(socket)) = task.await {
                idle.push(socket);
            }
        }
        if opened.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_time(a_pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = cpu_time(a_pid).saturating_sub(cpu_before);
    let rss_after = rss_kib(a_pid);
    // They are all alive: each answers a ping.
    let mut alive = 0;
    for socket in idle.iter_mut().step_by(100) {
        if socket.send(Message::Ping(Bytes::new())).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), socket.next()).await,
                Ok(Some(Ok(Message::Pong(_))))
            )
        {
            alive += 1;
        }
    }
    println!(
        "  {} idle connections on one node (opened in {:.1} s, {:.0}/s): RSS {} → {} KiB, {:.1} KiB per connection; {:.1} % of a core while idle; {alive}/{} sampled answer pings",
        idle.len(),
        open_time.as_secs_f64(),
        idle.len() as f64 / open_time.as_secs_f64(),
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before) as f64 / idle.len().max(1) as f64,
        idle_cpu.as_secs_f64() / 5.0 * 100.0,
        idle.len().div_ceil(100),
    );
}

/// Each connection sends a message and waits for its reply, for `length`;
/// the number of replies, and the sockets back.
async fn messages(sockets: Vec<Socket>, length: Duration) -> (u64, Vec<Socket>) {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if socket.send(Message::text(MESSAGE)).await.is_err() {
                        break;
                    }
                    match socket.next().await {
                        Some(Ok(Message::Text(_))) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                socket
            })
        })
        .collect();
    let mut back = Vec::new();
    for task in tasks {
        if let Ok(socket) = task.await {
            back.push(socket);
        }
    }
    (done.load(Ordering::Relaxed), back)
}
