//! One WebSocket connection, from the upgrade to `$disconnect`: messages
//! from the client are routed, throttled and sent to their route's
//! integration (with a span, metrics and an access-log line each, as HTTP
//! requests get); commands from [`super::hub`] (`@connections` posts and
//! deletes, shutdown) are carried out between messages. Each message
//! follows the config the node serves when it arrives; a connection whose
//! stage was deleted is closed.

use super::hub::Local;
use super::{DISCONNECT_REASON, SocketLimits, WebSocketApi, call};
use crate::Gateway;
use crate::config::{CompiledStage, Target};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::throttle;
use crate::response::rescue;
use crate::telemetry::trace;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Everything a connection's task needs after the upgrade.
pub struct Session {
    pub gateway: Arc<Gateway>,
    /// The cluster whose config accepted the connection: it is served by
    /// that cluster's config only, and closed when the node serves another.
    pub cluster: String,
    pub stage: Arc<CompiledStage>,
    pub target: Arc<Target>,
    pub api: Arc<WebSocketApi>,
    pub connection_id: String,
    pub principal_id: Option<String>,
    /// The SHA-256 of the API key `$connect` accepted: its usage plan's
    /// limits apply to every message.
    pub api_key: Option<[u8; 32]>,
    pub api_key_id: Option<Arc<str>>,
    /// The host the handshake was routed on.
    pub host: Arc<str>,
    /// The `X-Forwarded-*` headers of the handshake: every integration
    /// call of the connection is told them.
    pub forwarding: crate::integration::http::Forwarding,
    pub source_ip: std::net::IpAddr,
    pub user_agent: Option<http::HeaderValue>,
}

const READ_BUFFER: usize = 4 << 10;
/// How long a frame may take to reach a client before the connection is
/// given up as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Serves one connection until it ends, then calls `$disconnect`.
pub async fn run(
    mut session: Session,
    upgrade: hyper::upgrade::OnUpgrade,
    local: Arc<Local>,
    mut inbox: mpsc::Receiver<Bytes>,
) {
    let gateway = session.gateway.clone();
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            // `$connect` accepted it: its backend hears that it ended.
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            disconnect(&gateway, &mut session, format!("upgrade failed: {e}")).await;
            return;
        }
    };
    let limits = session.stage.sockets;
    // A small read buffer that grows with the messages: an idle connection
    // costs a few KiB, not tungstenite's default 128 KiB.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(Some(limits.max_frame))
        .max_message_size(Some(limits.max_message));
    let mut socket =
        WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, Some(config))
            .await;
    let hub = &gateway.sockets;
    let metrics = &gateway.telemetry.metrics.websocket;
    let dimensions =
        crate::telemetry::metrics::WebSocketMetrics::attributes(&session.stage.api, &session.stage.name);
    hub.register(&session.connection_id, local.clone()).await;
    metrics.connects.add(1, &dimensions);
    metrics.open.add(1, &dimensions);

    let reason = serve(&mut session, &mut socket, limits, &local, &mut inbox, &dimensions).await;

    // From now on calls for it answer 410 on every node; it stays in this
    // node's map until `$disconnect` returns, so a draining node waits.
    inbox.close();
    hub.forget(&session.connection_id).await;
    drop(socket);
    metrics.open.add(-1, &dimensions);
    metrics.disconnects.add(1, &dimensions);
    disconnect(&gateway, &mut session, reason.clone()).await;
    hub.unregister(&session.connection_id);
    tracing::debug!(connection = %session.connection_id, reason, "WebSocket closed");
}

/// Calls `$disconnect` (best effort) with the reason; counted and logged as
/// a request (method `DISCONNECT`, route `$disconnect`).
async fn disconnect(gateway: &Gateway, session: &mut Session, reason: String) {
    const KEY: &str = "$disconnect";
    // The config served now, as for a message: a redeploy since the last
    // message changes where `$disconnect` goes (a stage that is gone keeps
    // the connection's last one).
    if let Some((stage, target, api)) = current(session) {
        session.stage = stage;
        session.target = target;
        session.api = api;
    }
    let session = &*session;
    let Some(route) = session.api.routes.get(KEY) else {
        return;
    };
    let clock = Instant::now();
    let mut record = record(session, b"DISCONNECT");
    record.route_key = Some(KEY.into());
    let extra = Some((DISCONNECT_REASON, reason));
    let request_id = record.request_id;
    let phase = trace::phase(
        &gateway.telemetry,
        record.trace.as_ref(),
        "integration",
        opentelemetry::trace::SpanKind::Client,
    );
    let called = call(
        gateway,
        session,
        KEY,
        route,
        Bytes::new(),
        request_id.as_str(),
        extra,
    )
    .await;
    record.outcome.integration_latency = Some(clock.elapsed());
    drop(phase);
    match called {
        Ok(answer) => record.outcome.status = answer.status.as_u16(),
        Err(error) => {
            tracing::debug!(connection = %session.connection_id, error = %error, detail = error.detail(), "$disconnect integration failed");
            rescue::record(&mut record.outcome, &error);
        }
    }
    record.outcome.latency = clock.elapsed();
    gateway.telemetry.observe(&record, &session.stage);
}

/// Writes a frame, or gives up on a client that does not read.
async fn write(socket: &mut Socket, message: Message) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("client gone: {e}")),
        Err(_) => Err("client not reading".to_owned()),
    }
}

/// The connection's life; why it ended.
async fn serve(
    session: &mut Session,
    socket: &mut Socket,
    limits: SocketLimits,
    local: &Local,
    inbox: &mut mpsc::Receiver<Bytes>,
    dimensions: &[KeyValue],
) -> String {
    let metrics = &session.gateway.telemetry.metrics.websocket;
    let started = Instant::now();
    let mut active = Instant::now();
    loop {
        let left = limits.max_duration.saturating_sub(started.elapsed());
        if left.is_zero() {
            close(socket, CloseCode::Policy, "maximum connection duration").await;
            return "maximum connection duration".to_owned();
        }
        let idle_left = limits.idle.saturating_sub(active.elapsed());
        if idle_left.is_zero() {
            close(socket, CloseCode::Away, "idle timeout").await;
            return "idle timeout".to_owned();
        }
        // (Unbiased: neither the client's messages nor `@connections` posts
        // can starve the other; a close request waits one turn at most.)
        let message = tokio::select! {
            reason = local.close_requested() => {
                let code = if reason.starts_with("deleted") { CloseCode::Normal } else { CloseCode::Away };
                close(socket, code, reason.clone()).await;
                return reason;
            }
            next = socket.next() => next,
            data = inbox.recv() => {
                let Some(data) = data else { return "closed".to_owned() };
                local.dequeued(data.len());
                if let Err(why) = write(socket, frame(data)).await {
                    return why;
                }
                metrics.messages_out.add(1, dimensions);
                active = Instant::now();
                local.touch();
                continue;
            }
            _ = tokio::time::sleep(left.min(idle_left)) => continue,
        };
        let message = match message {
            None => return "client closed".to_owned(),
            Some(Ok(Message::Close(_))) => {
                // Send the protocol's answer to the client's close frame.
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.flush()).await;
                return "client closed".to_owned();
            }
            Some(Err(WsError::Capacity(e))) => {
                close(socket, CloseCode::Size, "message too big").await;
                return format!("message too big: {e}");
            }
            Some(Err(e)) => return format!("connection error: {e}"),
            Some(Ok(Message::Text(text))) => Bytes::copy_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                // Pongs are queued by the protocol; send them now.
                if tokio::time::timeout(WRITE_TIMEOUT, socket.flush()).await.is_err() {
                    return "client not reading".to_owned();
                }
                active = Instant::now();
                local.touch();
                continue;
            }
        };
        active = Instant::now();
        local.touch();
        metrics.messages_in.add(1, dimensions);
        // Each message follows the config served when it arrives; a
        // connection whose stage is gone is closed.
        if session.gateway.config.load().cluster_id != session.cluster {
            close(socket, CloseCode::Away, "the node serves another cluster").await;
            return "cluster changed".to_owned();
        }
        let Some((stage, target, api)) = current(session) else {
            close(socket, CloseCode::Away, "the stage is gone").await;
            return "stage deleted".to_owned();
        };
        session.stage = stage;
        session.target = target;
        session.api = api;
        // The usage plan's limits follow the key: one that left its plan or
        // was disabled ends the connection.
        if let Some(digest) = &session.api_key
            && !session.stage.api_keys.get(digest).is_some_and(|k| k.enabled)
        {
            close(socket, CloseCode::Policy, "API key revoked").await;
            return "API key revoked".to_owned();
        }
        if let Some(reply) = on_message(session, message).await {
            if let Err(why) = write(socket, frame(reply)).await {
                return why;
            }
            metrics.messages_out.add(1, dimensions);
        }
    }
}

/// A text frame when the bytes are UTF-8, else a binary one.
fn frame(data: Bytes) -> Message {
    match String::from_utf8(data.to_vec()) {
        Ok(text) => Message::text(text),
        Err(_) => Message::binary(data),
    }
}

/// The telemetry record of one event of the connection (`MESSAGE` or
/// `DISCONNECT`), traced as the stage says.
fn record(session: &Session, method: &'static [u8]) -> RequestContext {
    let telemetry = &session.gateway.telemetry;
    let mut record = RequestContext::new(
        session.stage.api.clone(),
        session.stage.name.clone(),
        session.target.deployment_id.clone(),
        session.source_ip,
    );
    record.canary = session.target.is_canary;
    record.domain_name = session.host.clone();
    record.http_method = http::Method::from_bytes(method).unwrap_or(http::Method::POST);
    record.uri = http::Uri::try_from(format!("/{}", session.stage.name))
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    record.protocol = "WebSocket";
    record.identity.user_agent = session.user_agent.clone();
    record.identity.api_key_id = session.api_key_id.clone();
    record.authorizer.principal_id = session.principal_id.clone();
    record.trace = trace::start(telemetry, &session.stage, &http::HeaderMap::new(), &record);
    record
}

/// Routes, throttles and integrates one message; the reply to send, if any.
async fn on_message(session: &Session, message: Bytes) -> Option<Bytes> {
    let gateway = &session.gateway;
    let telemetry = &gateway.telemetry;
    let clock = Instant::now();
    let mut record = record(session, b"MESSAGE");
    let request_id = record.request_id;
    // Errors are classified by the one table HTTP uses; the client gets
    // AWS's `{"message", "connectionId", "requestId"}`.
    let refuse = |error: GatewayError, record: &mut RequestContext| {
        if rescue::record(&mut record.outcome, &error).is_server_error() {
            tracing::warn!(connection = %session.connection_id, route = ?record.route_key, error = %error, detail = error.detail(), "WebSocket message failed");
        }
        Some(Bytes::from(
            serde_json::json!({
                "message": error.to_string(),
                "connectionId": session.connection_id,
                "requestId": request_id.as_str(),
            })
            .to_string(),
        ))
    };
    let reply = match session.api.select(&message) {
        None => refuse(GatewayError::NoRouteForMessage, &mut record),
        Some((key, route)) => {
            record.route_key = Some(key.into());
            let stage_key = session
                .api_key
                .as_ref()
                .and_then(|digest| session.stage.api_keys.get(digest));
            match throttle::check(&gateway.shared, &session.stage, key, stage_key).await {
                Err(refused) => refuse(refused, &mut record),
                Ok(()) => {
                    let phase = trace::phase(
                        telemetry,
                        record.trace.as_ref(),
                        "integration",
                        opentelemetry::trace::SpanKind::Client,
                    );
                    let called = Instant::now();
                    let answer = call(gateway, session, key, route, message, request_id.as_str(), None).await;
                    record.outcome.integration_latency = Some(called.elapsed());
                    drop(phase);
                    match answer {
                        Ok(answer) => {
                            record.outcome.status = answer.status.as_u16();
                            (answer.status.is_success() && !answer.body.is_empty()).then_some(answer.body)
                        }
                        Err(error) => refuse(error, &mut record),
                    }
                }
            }
        }
    };
    record.outcome.response_length = reply.as_ref().map(|r| r.len() as u64);
    record.outcome.latency = clock.elapsed();
    telemetry.observe(&record, &session.stage);
    reply
}

/// The connection's stage and side (main or canary) in the config served
/// now, and that deployment's routes; `None` when the stage or its
/// WebSocket API is gone, or the node serves another cluster's config.
fn current(session: &Session) -> Option<(Arc<CompiledStage>, Arc<Target>, Arc<WebSocketApi>)> {
    let config = session.gateway.config.load();
    if config.cluster_id != session.cluster {
        return None;
    }
    let stage = config.stage(&session.stage.api, &session.stage.name)?;
    let target = match (&stage.canary, session.target.is_canary) {
        (Some(canary), true) => canary.target.clone(),
        _ => stage.main.clone(),
    };
    let api = target.definition.websocket.clone()?;
    Some((stage.clone(), target, api))
}

async fn close(socket: &mut Socket, code: CloseCode, reason: impl Into<String>) {
    let frame = CloseFrame {
        code,
        reason: reason.into().into(),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.close(Some(frame))).await;
}
