//! WebSocket APIs on one data plane: `$connect` guarded by an API key,
//! messages routed by the selection expression, `$default`, replies,
//! oversized messages closed with 1009, `$disconnect` reported.

use crate::support::{create_key, deploy, wait_applied};
use futures::{SinkExt, StreamExt};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, ApiStageRef, UsagePlan};
use pylon_tests::gateway::{DataPlaneNode, JsonServer};
use pylon_tests::{Cluster, eventually, serial};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(node: std::net::SocketAddr, key: Option<&str>) -> Result<Socket, WsError> {
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
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_connections_route_messages_and_report_disconnects() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = DataPlaneNode::start(dir.path(), "dp-ws", &[cluster.nodes[0].endpoint()], &[]);
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = calls.clone();
    let backend = JsonServer::start(move |path, body| {
        if let Ok(mut seen) = seen.lock() {
            seen.push(path.to_owned());
        }
        match path {
            "/send" => (200, json!({"echo": body})),
            "/connect" => (200, Value::Null),
            _ => (200, Value::Null),
        }
    })
    .await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let chat = |default_body: &str| -> Api {
        serde_json::from_value(json!({
        "name": "chat",
        "protocol": "WEBSOCKET",
        "routeSelectionExpression": "$request.body.action",
        "routes": [
            {"path": "$connect", "integration": {"type": "HTTP", "uri": backend.url("/connect")},
             "authorization": {"apiKeyRequired": true}},
            {"path": "send", "integration": {"type": "HTTP", "uri": backend.url("/send")}},
            {"path": "$default", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": default_body}}},
            {"path": "$disconnect", "integration": {"type": "HTTP", "uri": backend.url("/disconnect")}},
        ],
        }))
        .expect("API")
    };
    deploy(&mut admin, chat(r#"{"error":"unknown action"}"#), "prod", &[])
        .await
        .expect("deploy");
    let (key_id, key) = create_key(&mut admin, "chatter").await;
    let applied = admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "chat".into(),
                api_stages: vec![ApiStageRef {
                    api: "chat".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                api_key_ids: vec![key_id],
                ..Default::default()
            }),
        })
        .await
        .expect("plan")
        .into_inner()
        .revision;
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

    // A redeploy: the open connection stays and its next message follows the new routes.
    let redeployed = deploy(&mut admin, chat(r#"{"error":"still unknown, v2"}"#), "prod", &[])
        .await
        .expect("redeploy");
    let version = admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("version")
        .into_inner()
        .version;
    wait_applied(&mut admin, version, 1).await;
    let _ = redeployed;
    socket
        .send(Message::text(r#"{"action":"nope"}"#))
        .await
        .expect("send after redeploy");
    let after = next_text(&mut socket).await;
    assert!(after.contains("v2"), "the new deployment's $default: {after}");

    // Over 128 KiB: closed with 1009, and $disconnect is told.
    let _ = socket.send(Message::text("x".repeat(200 * 1024))).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some(CloseCode::Size));
    let disconnects = |calls: &Arc<Mutex<Vec<String>>>| {
        calls
            .lock()
            .map(|c| c.iter().filter(|p| *p == "/disconnect").count())
            .unwrap_or(0)
    };
    eventually("$disconnect after 1009", Duration::from_secs(10), || async {
        (disconnects(&calls) == 1).then_some(())
    })
    .await;

    // A client that closes: $disconnect again.
    let mut socket = open(dp, Some(&key)).await.expect("connect again");
    socket.close(None).await.expect("close");
    eventually("$disconnect after a close", Duration::from_secs(10), || async {
        (disconnects(&calls) == 2).then_some(())
    })
    .await;
    let connects = calls
        .lock()
        .map(|c| c.iter().filter(|p| *p == "/connect").count())
        .unwrap_or(0);
    assert_eq!(
        connects, 2,
        "$connect called for each accepted connection (none for the refused one)"
    );
}
