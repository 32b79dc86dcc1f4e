//! WebSocket APIs: `$connect` guarded by an API key, messages routed by the
//! selection expression, `$default`, replies, oversized messages closed with
//! 1009, idle timeouts, `$disconnect` with its reason; the `@connections`
//! management API on the node holding the connection and, through Redis, on
//! another node; 100 connections kept through a redeploy and closed when
//! their stage is deleted; a connection drained at shutdown; an outside
//! client (Python `websockets`) over ws:// and wss://, with a span per message.

use crate::support::{create_key, deploy, edit_stage, wait_applied};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, ApiStageRef, ThrottleSettings, UsagePlan, WebSocketSettings};
use pylon_tests::gateway::{DataPlaneNode, HttpClient, Reply};
use pylon_tests::jwt::{now, rsa_signer, sign};
use pylon_tests::redis::RedisServer;
use pylon_tests::{Cluster, eventually, serial};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One integration call as the backend saw it.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    connection_id: String,
    reason: String,
    body: String,
}

/// The chat backend: `/send` echoes the message, `/whoami` answers the
/// connection id, `/connect` and `/disconnect` record; every call is kept.
struct Backend {
    address: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let header = |name: &str| {
                                    parts
                                        .headers
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_owned()
                                };
                                let call = Call {
                                    path: parts.uri.path().to_owned(),
                                    connection_id: header("x-pylon-connection-id"),
                                    reason: header("x-pylon-disconnect-reason"),
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let reply = match call.path.as_str() {
                                "/send" => json!({"echo": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)})
                                    .to_string(),
                                "/whoami" => json!({"connectionId": call.connection_id}).to_string(),
                                _ => String::new(),
                            };
                                if let Ok(mut seen) = seen.lock() {
                                    seen.push(call);
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(reply))))
                            }
                        },
                    );
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                });
            }
        });
        Backend { address, calls, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Waits (up to `within`) for the `$disconnect` of connection `id`.
    async fn disconnect_of(&self, id: &str, within: Duration) -> Call {
        eventually(&format!("$disconnect of {id}"), within, || async {
            self.calls_to("/disconnect")
                .into_iter()
                .find(|c| c.connection_id == id)
        })
        .await
    }

    fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .map(|calls| calls.iter().filter(|c| c.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ISSUER: &str = "https://issuer.test";

/// The `chat` API: `$connect` needs an API key when `key_required`;
/// `send` and `whoami` go to the backend; `$default` is a MOCK answering
/// `default_body`; `@connections` is granted to the API key `ops_key` and
/// to tokens with the scope `connections.manage` (keys from `jwks`).
fn chat(backend: &Backend, default_body: &str, key_required: bool, ops_key: &str) -> Api {
    chat_with_jwks(
        backend,
        default_body,
        key_required,
        ops_key,
        &backend.url("/jwks.json"),
    )
}

fn chat_with_jwks(
    backend: &Backend,
    default_body: &str,
    key_required: bool,
    ops_key: &str,
    jwks: &str,
) -> Api {
    serde_json::from_value(json!({
        "name": "chat",
        "protocol": "WEBSOCKET",
        "routeSelectionExpression": "$request.body.action",
        "authorizers": [{"name": "ops", "jwt": {"issuer": ISSUER, "audiences": ["chat"], "jwksUri": jwks, "algorithms": ["RS256"]}}],
        "connectionsAccess": {"apiKeyIds": [ops_key], "authorizer": "ops", "scopes": ["connections.manage"]},
        "routes": [
            {"path": "$connect", "integration": {"type": "HTTP", "uri": backend.url("/connect")},
             "authorization": {"apiKeyRequired": key_required}},
            {"path": "send", "integration": {"type": "HTTP", "uri": backend.url("/send")}},
            {"path": "whoami", "integration": {"type": "HTTP", "uri": backend.url("/whoami")}},
            {"path": "$default", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": default_body}}},
            {"path": "$disconnect", "integration": {"type": "HTTP", "uri": backend.url("/disconnect")}},
        ],
    }))
    .expect("API")
}

/// `api` with its `$disconnect` integration sent to `uri`.
fn disconnecting_to(mut api: Api, uri: &str) -> Api {
    for route in &mut api.routes {
        if route.path == "$disconnect"
            && let Some(integration) = &mut route.integration
        {
            integration.uri = uri.to_owned();
        }
    }
    api
}

async fn open(node: SocketAddr, key: Option<&str>) -> Result<Socket, WsError> {
    let mut request = format!("ws://{node}/prod").into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("host", http::HeaderValue::from_static("chat.localhost"));
    if let Some(key) = key {
        headers.insert("x-api-key", http::HeaderValue::from_str(key).expect("key header"));
    }
    let stream = tokio::net::TcpStream::connect(node).await.map_err(WsError::Io)?;
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits for the server's close frame; its code.
async fn closed(socket: &mut Socket) -> Option<CloseCode> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time")
}

/// Asks the gateway (through the backend) for this socket's connection id.
async fn whoami(socket: &mut Socket) -> String {
    socket
        .send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .expect("send whoami");
    let reply: Value = serde_json::from_str(&next_text(socket).await).expect("JSON");
    reply["connectionId"].as_str().expect("connection id").to_owned()
}

/// `METHOD /prod/@connections/{id}` on `node`, with `key` as `x-api-key`
/// (or, when it starts with `Bearer `, as `Authorization`).
async fn manage(node: SocketAddr, method: &str, id: &str, key: Option<&str>, body: &str) -> Reply {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("/prod/@connections/{id}"))
        .header("host", "chat.localhost");
    match key {
        Some(token) if token.starts_with("Bearer ") => request = request.header("authorization", token),
        Some(key) => request = request.header("x-api-key", key),
        None => {}
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    HttpClient::new(false)
        .send(node, request)
        .await
        .expect("management call")
}

async fn attach_plan(admin: &mut pylon_tests::Admin, key_id: &str) -> u64 {
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "chat".into(),
                api_stages: vec![ApiStageRef {
                    api: "chat".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                api_key_ids: vec![key_id.to_owned()],
                ..Default::default()
            }),
        })
        .await
        .expect("plan")
        .into_inner()
        .revision
}

async fn version(admin: &mut pylon_tests::Admin) -> u64 {
    crate::support::config_version(admin).await
}

#[tokio::test]
async fn websocket_connections_route_messages_and_report_disconnects() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ops_port = pylon_tests::free_port();
    let ops_flag = format!("--ops-listen=127.0.0.1:{ops_port}");
    let node = DataPlaneNode::start(dir.path(), "dp-ws", &[cluster.nodes[0].endpoint()], &[&ops_flag]);
    let backend = Backend::start().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let (key_id, key) = create_key(&mut admin, "chatter").await;
    let (ops_id, ops_key) = create_key(&mut admin, "ops").await;
    deploy(
        &mut admin,
        chat(&backend, r#"{"error":"unknown action"}"#, true, &ops_id),
        "prod",
        &[],
    )
    .await
    .expect("deploy");
    let applied = attach_plan(&mut admin, &key_id).await;
    wait_applied(&mut admin, applied, 1).await;
    let dp = node.address();

    // Without a key, $connect refuses the upgrade.
    match open(dp, None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let mut socket = open(dp, Some(&key)).await.expect("connect with a key");
    socket
        .send(Message::text(r#"{"action":"send","text":"hi"}"#))
        .await
        .expect("send");
    let reply: Value = serde_json::from_str(&next_text(&mut socket).await).expect("JSON reply");
    assert_eq!(
        reply["echo"]["text"], "hi",
        "routed to send and answered: {reply}"
    );
    socket
        .send(Message::text(r#"{"action":"nope"}"#))
        .await
        .expect("send");
    assert!(
        next_text(&mut socket).await.contains("unknown action"),
        "$default"
    );
    socket.send(Message::text("not json")).await.expect("send");
    assert!(
        next_text(&mut socket).await.contains("unknown action"),
        "$default for non-JSON"
    );

    // @connections on the node that holds the connection (no Redis).
    let id = whoami(&mut socket).await;
    let refused = manage(dp, "POST", &id, None, "{}").await;
    assert_eq!(
        refused.status, 401,
        "no credential (a token would do): {}",
        refused.body
    );
    let refused = manage(dp, "POST", &id, Some(&key), "{}").await;
    assert_eq!(
        refused.status, 403,
        "a key not granted @connections: {}",
        refused.body
    );
    let posted = manage(dp, "POST", &id, Some(&ops_key), r#"{"note":"from the server"}"#).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(next_text(&mut socket).await, r#"{"note":"from the server"}"#);
    let info = manage(dp, "GET", &id, Some(&ops_key), "").await;
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1", "{info}");
    assert_eq!(info["identity"]["apiKeyId"], key_id.as_str(), "{info}");
    assert!(
        info["connectedAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{info}"
    );
    let missing = manage(dp, "GET", "no-such-connection", Some(&ops_key), "").await;
    assert_eq!(missing.status, 410, "{}", missing.body);

    // A redeploy: the open connection stays and its next message follows the new routes.
    deploy(
        &mut admin,
        chat(&backend, r#"{"error":"still unknown, v2"}"#, true, &ops_id),
        "prod",
        &[],
    )
    .await
    .expect("redeploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 1).await;
    socket
        .send(Message::text(r#"{"action":"nope"}"#))
        .await
        .expect("send after redeploy");
    let after = next_text(&mut socket).await;
    assert!(after.contains("v2"), "the new deployment's $default: {after}");

    // Over 128 KiB: closed with 1009, and $disconnect is told why.
    let _ = socket.send(Message::text("x".repeat(200 * 1024))).await;
    assert_eq!(closed(&mut socket).await, Some(CloseCode::Size));
    eventually("$disconnect after 1009", Duration::from_secs(10), || async {
        (backend.calls_to("/disconnect").len() == 1).then_some(())
    })
    .await;
    let disconnect = &backend.calls_to("/disconnect")[0];
    assert_eq!(disconnect.connection_id, id);
    assert!(disconnect.reason.starts_with("message too big"), "{disconnect:?}");
    let gone = manage(dp, "POST", &id, Some(&ops_key), "{}").await;
    assert_eq!(gone.status, 410, "a closed connection: {}", gone.body);

    // A client that closes: $disconnect again.
    let mut socket = open(dp, Some(&key)).await.expect("connect again");
    socket.close(None).await.expect("close");
    eventually("$disconnect after a close", Duration::from_secs(10), || async {
        (backend.calls_to("/disconnect").len() == 2).then_some(())
    })
    .await;
    assert_eq!(backend.calls_to("/disconnect")[1].reason, "client closed");

    // The stage's idle timeout (1 s here): closed with 1001, $disconnect told.
    let v = edit_stage(&mut admin, "chat", "prod", |stage| {
        stage.websocket = Some(WebSocketSettings {
            idle_timeout_seconds: 1,
            ..Default::default()
        })
    })
    .await
    .expect("idle timeout");
    wait_applied(&mut admin, v, 1).await;
    let mut socket = open(dp, Some(&key)).await.expect("connect once more");
    let started = std::time::Instant::now();
    assert_eq!(closed(&mut socket).await, Some(CloseCode::Away));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eventually(
        "$disconnect after the idle timeout",
        Duration::from_secs(10),
        || async { (backend.calls_to("/disconnect").len() == 3).then_some(()) },
    )
    .await;
    assert_eq!(backend.calls_to("/disconnect")[2].reason, "idle timeout");
    assert_eq!(
        backend.calls_to("/connect").len(),
        3,
        "$connect called for each accepted connection (none for the refused one)"
    );

    // Route throttles apply to messages; the stage's connection rate to upgrades.
    let v = edit_stage(&mut admin, "chat", "prod", |stage| {
        stage.websocket = Some(WebSocketSettings {
            connect_throttle: Some(ThrottleSettings {
                rate_limit: 0.2,
                burst_limit: 1,
            }),
            ..Default::default()
        });
        stage.route_throttle.insert(
            "send".into(),
            ThrottleSettings {
                rate_limit: 0.2,
                burst_limit: 1,
            },
        );
    })
    .await
    .expect("throttles");
    wait_applied(&mut admin, v, 1).await;
    let mut socket = open(dp, Some(&key))
        .await
        .expect("the first connection of the second");
    match open(dp, Some(&key)).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429 for a second connection at once, got {other:?}"),
    }
    let send = r#"{"action":"send","text":"again"}"#;
    socket.send(Message::text(send)).await.expect("send");
    assert!(next_text(&mut socket).await.contains("echo"));
    socket.send(Message::text(send)).await.expect("send");
    let throttled: Value = serde_json::from_str(&next_text(&mut socket).await).expect("JSON");
    assert_eq!(throttled["message"], "Too Many Requests", "{throttled}");

    // Connection and message metrics.
    let ops = SocketAddr::from(([127, 0, 0, 1], ops_port));
    let metrics = HttpClient::new(false)
        .get(ops, "localhost", "/metrics")
        .await
        .expect("metrics")
        .body;
    for name in [
        "pylon_websocket_connections",
        "pylon_websocket_connects_total",
        "pylon_websocket_disconnects_total",
        "pylon_websocket_messages_in_total",
        "pylon_websocket_messages_out_total",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics:\n{metrics}");
    }
    let open_now = metrics
        .lines()
        .find(|l| l.starts_with("pylon_websocket_connections{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(open_now, Some(1.0), "one connection open:\n{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pylon_requests_total{") && l.contains("http_route=\"send\"")),
        "messages are counted per route:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pylon_requests_total{") && l.contains("http_route=\"$disconnect\"")),
        "$disconnect calls are counted:\n{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("pylon_requests_total{")
            && l.contains("http_route=\"/@connections/{connectionId}\"")
            && l.contains("http_request_method=\"POST\"")),
        "@connections calls are counted as such:\n{metrics}"
    );
}

#[tokio::test]
async fn connections_are_managed_from_another_node_through_redis() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let redis_flag = format!("--redis={}", redis.url());
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut a = DataPlaneNode::start(
        dir.path(),
        "dp-ws-a",
        std::slice::from_ref(&endpoint),
        &[&redis_flag],
    );
    let b = DataPlaneNode::start(
        dir.path(),
        "dp-ws-b",
        std::slice::from_ref(&endpoint),
        &[&redis_flag],
    );
    let backend = Backend::start().await;
    let signer = rsa_signer(dir.path(), "ops-key");
    let jwks = json!({"keys": [signer.jwk.clone()]});
    let issuer = pylon_tests::gateway::JsonServer::start(move |_, _| (200, jwks.clone())).await;
    let token = |scope: &str| {
        let claims =
            json!({"iss": ISSUER, "aud": "chat", "sub": "operator", "scope": scope, "exp": now() + 600});
        format!("Bearer {}", sign(&signer, &claims))
    };
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let (ops_id, ops_key) = create_key(&mut admin, "ops").await;
    let (_, stranger) = create_key(&mut admin, "stranger").await;
    let api = chat_with_jwks(&backend, "{}", false, &ops_id, &issuer.url("/jwks.json"));
    deploy(&mut admin, api, "prod", &[]).await.expect("deploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 2).await;

    let mut socket = open(a.address(), None).await.expect("connect to A");
    let id = whoami(&mut socket).await;
    // A message POSTed on B reaches the client on A.
    let posted = manage(b.address(), "POST", &id, Some(&ops_key), "hello from B").await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(next_text(&mut socket).await, "hello from B");
    let info = manage(b.address(), "GET", &id, Some(&ops_key), "").await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["identity"]["sourceIp"], "127.0.0.1");
    // A token with the granted scope may; unauthorized callers, on either node, may not.
    let granted = manage(
        b.address(),
        "POST",
        &id,
        Some(&token("connections.manage")),
        "by token",
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert_eq!(next_text(&mut socket).await, "by token");
    let wrong_scope = token("chat.read");
    for (node, key, status) in [
        (b.address(), None, 401),
        (b.address(), Some(stranger.as_str()), 403),
        (b.address(), Some(wrong_scope.as_str()), 403),
        (a.address(), None, 401),
    ] {
        let refused = manage(node, "POST", &id, key, "x").await;
        assert_eq!(refused.status, status, "{key:?}: {}", refused.body);
    }
    // DELETE on B closes it on A; then it is gone everywhere.
    let deleted = manage(b.address(), "DELETE", &id, Some(&ops_key), "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(closed(&mut socket).await, Some(CloseCode::Normal));
    backend.disconnect_of(&id, Duration::from_secs(10)).await;
    for node in [b.address(), a.address()] {
        let gone = manage(node, "POST", &id, Some(&ops_key), "late").await;
        assert_eq!(gone.status, 410, "{}", gone.body);
        let gone = manage(node, "GET", &id, Some(&ops_key), "").await;
        assert_eq!(gone.status, 410, "{}", gone.body);
    }

    // A client that reads nothing: at most 1 MiB waits for it (then 429),
    // and a frame it does not take within 5 s ends the connection.
    let silent = open(a.address(), None)
        .await
        .expect("a client that will not read");
    let mut silent = Some(silent);
    let silent_id = {
        let socket = silent.as_mut().expect("socket");
        whoami(socket).await
    };
    let chunk = "x".repeat(100 << 10);
    let mut statuses = Vec::new();
    for _ in 0..400 {
        let status = manage(a.address(), "POST", &silent_id, Some(&ops_key), &chunk)
            .await
            .status;
        statuses.push(status);
        if status != 200 {
            break;
        }
    }
    assert!(
        statuses.last().is_some_and(|s| *s == 429 || *s == 410),
        "the queue is bounded: {statuses:?}"
    );
    let gave_up = backend.disconnect_of(&silent_id, Duration::from_secs(20)).await;
    assert_eq!(gave_up.reason, "client not reading");
    let gone = manage(b.address(), "POST", &silent_id, Some(&ops_key), "late").await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    drop(silent.take());

    // A node that stops drains its connections: 1001 and $disconnect.
    let mut socket = open(a.address(), None).await.expect("connect to A again");
    let id = whoami(&mut socket).await;
    let pid = a.pid().expect("pid").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    assert_eq!(closed(&mut socket).await, Some(CloseCode::Away));
    let drained = backend.disconnect_of(&id, Duration::from_secs(10)).await;
    assert_eq!(drained.reason, "server shutting down");
    let gone = manage(b.address(), "POST", &id, Some(&ops_key), "late").await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    a.kill();
}

#[tokio::test]
async fn a_redeploy_keeps_a_hundred_connections_open_and_rerouted() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = DataPlaneNode::start(dir.path(), "dp-ws-100", &[cluster.nodes[0].endpoint()], &[]);
    let backend = Backend::start().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        chat(&backend, r#"{"v":1}"#, false, "none"),
        "prod",
        &[],
    )
    .await
    .expect("deploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 1).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(open(node.address(), None).await.expect("connect"));
    }
    for socket in &mut sockets {
        socket
            .send(Message::text(r#"{"action":"x"}"#))
            .await
            .expect("send");
        assert_eq!(next_text(socket).await, r#"{"v":1}"#);
    }
    // One more that stays silent through the redeploy.
    let mut quiet = open(node.address(), None).await.expect("connect");
    let v2 = disconnecting_to(
        chat(&backend, r#"{"v":2}"#, false, "none"),
        &backend.url("/disconnect-v2"),
    );
    deploy(&mut admin, v2, "prod", &[]).await.expect("redeploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 1).await;
    for socket in &mut sockets {
        socket
            .send(Message::text(r#"{"action":"x"}"#))
            .await
            .expect("still open");
        assert_eq!(next_text(socket).await, r#"{"v":2}"#, "the new routes");
    }
    assert!(
        backend.calls_to("/disconnect-v2").is_empty(),
        "no connection ended"
    );
    assert_eq!(backend.calls_to("/connect").len(), 101);
    // The silent one's $disconnect follows the redeploy too.
    quiet.close(None).await.expect("close");
    let ended = eventually(
        "the silent one's $disconnect",
        Duration::from_secs(10),
        || async { backend.calls_to("/disconnect-v2").first().cloned() },
    )
    .await;
    assert_eq!(ended.reason, "client closed");
    assert!(backend.calls_to("/disconnect").is_empty(), "not the old route's");

    // Deleting the stage closes them (1001), without waiting for a message.
    admin
        .delete_stage(DeleteStageRequest {
            api: "chat".into(),
            name: "prod".into(),
            expected_revision: 0,
        })
        .await
        .expect("delete the stage");
    for socket in &mut sockets {
        assert_eq!(closed(socket).await, Some(CloseCode::Away));
    }
    eventually("100 more $disconnects", Duration::from_secs(10), || async {
        (backend.calls_to("/disconnect-v2").len() == 101).then_some(())
    })
    .await;
    assert!(
        backend.calls_to("/disconnect-v2")[1..]
            .iter()
            .all(|c| c.reason == "stage deleted"),
        "{:?}",
        backend.calls_to("/disconnect-v2").get(1)
    );
}

#[tokio::test]
async fn a_node_that_adopts_another_cluster_closes_what_the_former_one_accepted() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = DataPlaneNode::start(dir.path(), "dp-ws-adopt", std::slice::from_ref(&endpoint), &[]);
    let backend = Backend::start().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        chat(&backend, r#"{"v":1}"#, false, "none"),
        "prod",
        &[],
    )
    .await
    .expect("deploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 1).await;
    let mut socket = open(node.address(), None).await.expect("connect");
    socket
        .send(Message::text(r#"{"action":"x"}"#))
        .await
        .expect("send");
    assert_eq!(next_text(&mut socket).await, r#"{"v":1}"#);

    // The control plane is rebuilt with a fresh data dir: another cluster,
    // with the same API and stage names.
    cluster.nodes[0].kill();
    std::fs::remove_dir_all(&cluster.nodes[0].data_dir).expect("wipe the data dir");
    cluster.nodes[0].start().expect("start afresh");
    cluster.wait_for_leader().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let rebuilt = disconnecting_to(
        chat(&backend, r#"{"v":2}"#, false, "none"),
        &backend.url("/disconnect-rebuilt"),
    );
    deploy(&mut admin, rebuilt, "prod", &[])
        .await
        .expect("deploy on the rebuilt cluster");

    // The connection the former cluster accepted ends once the node adopts
    // the new one; the former cluster's integration hears of it.
    let ended = eventually(
        "the former cluster's $disconnect",
        Duration::from_secs(30),
        || async { backend.calls_to("/disconnect").first().cloned() },
    )
    .await;
    assert_eq!(ended.reason, "cluster changed");
    assert_eq!(closed(&mut socket).await, Some(CloseCode::Away));
    assert!(backend.calls_to("/disconnect-rebuilt").is_empty());
}

#[tokio::test]
async fn an_outside_client_talks_to_a_websocket_api_over_ws_and_wss() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Traced: a span per message.
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start()
        .await
        .expect("OTLP receiver");
    let otlp = format!("--otlp-endpoint={}", collector.endpoint());
    let (cert, key) = pylon_tests::self_signed(dir.path(), "chat.localhost");
    let tls_port = pylon_tests::free_port();
    let node = DataPlaneNode::start(
        dir.path(),
        "dp-ws-py",
        &[cluster.nodes[0].endpoint()],
        &[
            &otlp,
            &format!("--tls-listen=127.0.0.1:{tls_port}"),
            &format!("--tls-cert={}", cert.display()),
            &format!("--tls-key={}", key.display()),
        ],
    );
    let backend = Backend::start().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        chat(&backend, r#"{"fallback":true}"#, false, "none"),
        "prod",
        &[],
    )
    .await
    .expect("deploy");
    let v = edit_stage(&mut admin, "chat", "prod", |stage| stage.tracing_enabled = true)
        .await
        .expect("tracing on");
    wait_applied(&mut admin, v, 1).await;
    // Debian's interpreter, where scripts/bootstrap installs `websockets`.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import websockets"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("python3 with the websockets module (scripts/bootstrap installs it)");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ws-client.py");
    // ws:// on the plain listener, then wss:// on the TLS one (the client
    // verifies the certificate for chat.localhost).
    let ca = cert.display().to_string();
    let runs: [(u16, Option<&str>); 2] = [(node.address().port(), None), (tls_port, Some(&ca))];
    for (i, (port, ca)) in runs.into_iter().enumerate() {
        let mut args = vec![script.to_owned(), port.to_string(), "chat.localhost".to_owned()];
        args.extend(ca.map(str::to_owned));
        let output = tokio::process::Command::new(python)
            .args(&args)
            .output()
            .await
            .expect("run the client");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "client failed ({args:?}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[0]["echo"]["text"], "from python", "{stdout}");
        assert_eq!(lines[1]["fallback"], true, "{stdout}");
        eventually(
            "$disconnect of the outside client",
            Duration::from_secs(10),
            || async { (backend.calls_to("/disconnect").len() == i + 1).then_some(()) },
        )
        .await;
        assert_eq!(backend.calls_to("/disconnect")[i].reason, "client closed");
    }
    let sent = &backend.calls_to("/send")[0];
    assert!(sent.body.contains("from python"), "{sent:?}");

    // The upgrade and each message are server spans named by route key; the
    // routed message has its integration as a child.
    let spans = collector.exported_spans(4, Duration::from_secs(15)).await;
    let server = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.kind == "SPAN_KIND_SERVER")
            .unwrap_or_else(|| panic!("no server span {name}: {spans:#?}"))
    };
    let message = server("send");
    let attribute = |key: &str| message.attributes.get(key).cloned().unwrap_or_default();
    assert!(attribute("pylon.api").contains("\"chat\""), "{message:#?}");
    assert!(
        attribute("http.request.method").contains("\"MESSAGE\""),
        "{message:#?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.name == "integration" && s.parent_span_id == message.span_id),
        "{spans:#?}"
    );
    server("$default");
    server("$connect");
}

/// The `hand` API: `$connect` goes to a raw backend that picks the
/// subprotocol named by the `pick` query parameter (none for `none`), with
/// a mapping that copies the `room` query parameter into `x-room`.
fn handshake_api(backend: &pylon_tests::gateway::RawBackend) -> Api {
    serde_json::from_value(json!({
        "name": "hand",
        "protocol": "WEBSOCKET",
        "routeSelectionExpression": "$request.body.action",
        "routes": [
            {"path": "$connect", "integration": {"type": "HTTP", "uri": format!("{}/connect", backend.url())},
             "requestParameters": {"overwrite:header.x-room": "$request.querystring.room"}},
            {"path": "$default", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": "hi"}}},
        ],
    }))
    .expect("API")
}

/// Opens `ws://hand.localhost/prod?QUERY` offering `protocols`.
async fn handshake(
    node: SocketAddr,
    host: &str,
    query: &str,
    protocols: &str,
) -> Result<(Socket, http::Response<Option<Vec<u8>>>), WsError> {
    let mut request = format!("ws://{node}/prod?{query}").into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("host", http::HeaderValue::from_str(host).expect("host"));
    headers.insert("x-client", http::HeaderValue::from_static("yes"));
    headers.insert("x-forwarded-host", http::HeaderValue::from_static("evil.example"));
    headers.insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_str(protocols).expect("protocols"),
    );
    let stream = tokio::net::TcpStream::connect(node).await.map_err(WsError::Io)?;
    tokio_tungstenite::client_async(request, stream).await
}

#[tokio::test]
async fn connect_sees_the_handshake_and_its_subprotocol_choice_reaches_the_client() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = DataPlaneNode::start(dir.path(), "dp-ws-hand", &[cluster.nodes[0].endpoint()], &[]);
    let backend = pylon_tests::gateway::RawBackend::start(|request| {
        let query = request.path().split_once('?').map(|(_, q)| q).unwrap_or("");
        let pick = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "pick")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let mut headers = vec![("Content-Length", "0")];
        if pick != "none" {
            headers.push(("Sec-WebSocket-Protocol", pick.as_str()));
        }
        // `pick=switch`: a backend that answers 101 itself.
        let status = if pick == "switch" { 101 } else { 200 };
        pylon_tests::gateway::raw_response(status, &headers, b"")
    })
    .await;
    // A $connect backend that never answers.
    let silent = pylon_tests::gateway::SilentBackend::start().await;
    let silent_url = silent.url();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(&mut admin, handshake_api(&backend), "prod", &[])
        .await
        .expect("deploy");
    let stuck: Api = serde_json::from_value(json!({
        "name": "stuck",
        "protocol": "WEBSOCKET",
        "routeSelectionExpression": "$request.body.action",
        "routes": [{"path": "$connect", "integration": {"type": "HTTP", "uri": silent_url, "timeoutMs": 300}}],
    }))
    .expect("API");
    deploy(&mut admin, stuck, "prod", &[]).await.expect("deploy");
    let v = version(&mut admin).await;
    wait_applied(&mut admin, v, 1).await;

    // The integration's pick, one the client offered, is in the 101.
    let (mut socket, response) = handshake(
        node.address(),
        "hand.localhost",
        "room=7&pick=chat",
        "chat, superchat",
    )
    .await
    .expect("connected");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat"[..])
    );
    socket.send(Message::text("hello")).await.expect("send");
    assert_eq!(next_text(&mut socket).await, "hi");
    // $connect's backend heard the client's handshake: headers, query
    // string (on its URI and in the JSON event), the mapping's header.
    let seen = backend
        .received()
        .into_iter()
        .find(|r| r.path().starts_with("/connect?"))
        .expect("$connect call");
    assert!(seen.path().contains("room=7"), "{}", seen.line);
    assert_eq!(seen.values("x-client"), ["yes"]);
    assert_eq!(seen.values("x-room"), ["7"]);
    assert_eq!(seen.values("sec-websocket-protocol"), ["chat, superchat"]);
    let event: Value = serde_json::from_slice(&seen.body).expect("JSON event");
    assert_eq!(event["headers"]["x-client"], "yes", "{event}");
    // The event, like the request, shows the forwarding headers Pylon sets.
    assert_eq!(event["headers"]["x-forwarded-host"], "hand.localhost", "{event}");
    assert_eq!(seen.values("x-forwarded-host"), ["hand.localhost"]);
    assert_eq!(event["queryStringParameters"]["room"], "7", "{event}");
    assert_eq!(event["requestContext"]["eventType"], "CONNECT", "{event}");

    // A version other than 13 is told which one to use (RFC 6455 §4.4).
    let answer = pylon_tests::gateway::raw_exchange(
        node.address(),
        b"GET /prod HTTP/1.1\r\nHost: hand.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await
    .expect("exchange");
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-version: 13") && lower.contains("upgrade: websocket"),
        "{answer}"
    );
    // Only a real answer of $connect's integration is relayed.
    match handshake(node.address(), "hand.localhost", "pick=switch", "switch").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 502),
        other => panic!("expected 502, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A pick the client never offered would break the browser: 502.
    match handshake(node.address(), "hand.localhost", "pick=other", "chat").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 502),
        other => panic!("expected 502, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A $connect integration that times out answers 504, as HTTP does.
    match handshake(node.address(), "stuck.localhost", "", "chat").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 504),
        other => panic!("expected 504, got {:?}", other.map(|(_, r)| r.status())),
    }
    drop(silent);

    // Fields a WebSocket route would ignore are refused with their path.
    let mut ignored = handshake_api(&backend);
    ignored.name = "ignored".into();
    ignored.routes[1].cache = Some(Default::default());
    ignored.routes[1].request_parameters = [("overwrite:header.x".to_owned(), "y".to_owned())].into();
    let refused = admin
        .create_api(CreateApiRequest { api: Some(ignored) })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    for field in ["routes[1].cache", "routes[1].request_parameters"] {
        assert!(
            refused.message().contains(field),
            "{field}: {}",
            refused.message()
        );
    }
    // So are connection limits on a stage of an HTTP API.
    deploy(&mut admin, crate::support::mock_api("plain", "{}"), "prod", &[])
        .await
        .expect("deploy");
    let refused = edit_stage(&mut admin, "plain", "prod", |s| {
        s.websocket = Some(WebSocketSettings::default());
    })
    .await
    .expect_err("refused");
    assert!(refused.to_string().contains("websocket:"), "{refused}");
}
