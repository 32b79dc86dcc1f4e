//! WebSocket APIs on one node: the `$connect` route runs through the same
//! request phase as HTTP (authorizers, API keys, throttling) and its
//! integration may refuse the connection; each message is routed by the
//! API's route selection expression (`$request.body.action`) to a route key,
//! else to `$default`; a route's integration (HTTP or MOCK) gets the message
//! with the connection's context in `x-pylon-*` headers, and a 2xx answer
//! with a body goes back to the client; `$disconnect` is called (best effort)
//! when the connection ends, with the reason.
//!
//! Limits: frames ≤ 32 KiB, messages ≤ 128 KiB (close 1009 beyond), idle
//! 10 minutes, 2 hours at most. Pings are answered.

use crate::config::integration::CompiledIntegration;
use crate::config::{CompiledStage, Target};
use crate::error::GatewayError;
use crate::{Body, Gateway, full_body};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub const MAX_FRAME: usize = 32 << 10;
pub const MAX_MESSAGE: usize = 128 << 10;
pub const IDLE: Duration = Duration::from_secs(600);
pub const MAX_DURATION: Duration = Duration::from_secs(7200);

pub const CONNECTION_ID: &str = "x-pylon-connection-id";
pub const ROUTE_KEY: &str = "x-pylon-route-key";
pub const DISCONNECT_REASON: &str = "x-pylon-disconnect-reason";

/// A WEBSOCKET API, compiled: routes by route key and the selection key.
#[derive(Debug)]
pub struct WebSocketApi {
    /// The body field named by `$request.body.FIELD` (dots: nested).
    pub selection: Vec<String>,
    pub routes: std::collections::HashMap<String, WebSocketRoute>,
}

#[derive(Debug)]
pub struct WebSocketRoute {
    pub integration: CompiledIntegration,
    pub auth: crate::config::auth::RouteAuth,
}

impl WebSocketApi {
    /// The route a message goes to: the selection expression's value when a
    /// route has that key, else `$default`.
    pub fn select(&self, message: &[u8]) -> Option<(&str, &WebSocketRoute)> {
        let selected = serde_json::from_slice::<serde_json::Value>(message)
            .ok()
            .and_then(|json| {
                let mut value = &json;
                for part in &self.selection {
                    value = value.get(part)?;
                }
                value.as_str().map(str::to_owned)
            })
            .filter(|key| !key.starts_with('$'));
        if let Some(key) = selected
            && let Some((key, route)) = self.routes.get_key_value(&key)
        {
            return Some((key.as_str(), route));
        }
        self.routes
            .get_key_value("$default")
            .map(|(k, r)| (k.as_str(), r))
    }
}

/// Whether the request asks to become a WebSocket.
pub fn is_upgrade(parts: &http::request::Parts) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    parts.method == http::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

/// A new connection id (16 random bytes, URL-safe base64).
pub fn new_connection_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Everything a connection's task needs after the upgrade.
pub struct Session {
    pub gateway: Arc<Gateway>,
    pub stage: Arc<CompiledStage>,
    pub target: Arc<Target>,
    pub api: Arc<WebSocketApi>,
    pub connection_id: String,
    pub principal_id: Option<String>,
    pub host: String,
}

/// Calls a route's integration with `body`; the status and answer.
pub async fn call(
    gateway: &Gateway,
    session: &Session,
    route_key: &str,
    route: &WebSocketRoute,
    body: Bytes,
    extra: Option<(&'static str, String)>,
) -> Result<(StatusCode, Bytes), String> {
    match &route.integration {
        CompiledIntegration::Mock { status, body, .. } => Ok((*status, Bytes::from(body.clone()))),
        CompiledIntegration::Http { uri, timeout, .. } => {
            let uri = crate::integration::fill(uri, &session.target.variables, &[]);
            let mut request = Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .header(CONNECTION_ID, &session.connection_id)
                .header(ROUTE_KEY, route_key)
                .header("x-pylon-stage", &session.stage.name)
                .header("x-pylon-request-id", new_connection_id())
                .header("x-forwarded-host", &session.host);
            if let Some(principal) = &session.principal_id {
                request = request.header("x-pylon-principal-id", principal);
            }
            if let Some((name, value)) = extra {
                request = request.header(name, value);
            }
            let request = request.body(full_body(body)).map_err(|e| e.to_string())?;
            crate::integration::http::fetch(&gateway.client, request, *timeout, MAX_MESSAGE).await
        }
    }
}

/// The 101 answer to an accepted upgrade.
pub fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(full_body(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Serves one connection until it ends, then calls `$disconnect`.
pub async fn run(mut session: Session, upgrade: hyper::upgrade::OnUpgrade) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let config = WebSocketConfig::default()
        .max_frame_size(Some(MAX_FRAME))
        .max_message_size(Some(MAX_MESSAGE));
    let mut socket =
        WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(upgraded), Role::Server, Some(config))
            .await;
    let started = Instant::now();
    let reason = loop {
        let left = MAX_DURATION.saturating_sub(started.elapsed());
        if left.is_zero() {
            close(&mut socket, CloseCode::Policy, "maximum connection duration").await;
            break "maximum connection duration".to_owned();
        }
        let next = match tokio::time::timeout(IDLE.min(left), socket.next()).await {
            Err(_) if started.elapsed() >= MAX_DURATION => continue,
            Err(_) => {
                close(&mut socket, CloseCode::Away, "idle timeout").await;
                break "idle timeout".to_owned();
            }
            Ok(next) => next,
        };
        let message = match next {
            None | Some(Ok(Message::Close(_))) => break "client closed".to_owned(),
            Some(Err(WsError::Capacity(e))) => {
                close(&mut socket, CloseCode::Size, "message too big").await;
                break format!("message too big: {e}");
            }
            Some(Err(e)) => break format!("connection error: {e}"),
            Some(Ok(Message::Text(text))) => Bytes::copy_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                // Pongs are queued by the protocol; send them now.
                let _ = socket.flush().await;
                continue;
            }
        };
        // Each message follows the config served when it arrives; a
        // connection whose stage is gone is closed.
        let Some((target, api)) = current(&session) else {
            close(&mut socket, CloseCode::Away, "the stage is gone").await;
            break "stage deleted".to_owned();
        };
        session.target = target;
        session.api = api;
        let reply = match session.api.select(&message) {
            None => Some(Bytes::from(
                serde_json::json!({"message": "Forbidden", "connectionId": session.connection_id})
                    .to_string(),
            )),
            Some((key, route)) => match call(&session.gateway, &session, key, route, message, None).await {
                Ok((status, body)) if status.is_success() && !body.is_empty() => Some(body),
                Ok(_) => None,
                Err(why) => {
                    tracing::warn!(connection = %session.connection_id, route = key, error = %why, "WebSocket integration failed");
                    Some(Bytes::from(
                        serde_json::json!({"message": "Internal server error", "connectionId": session.connection_id})
                            .to_string(),
                    ))
                }
            },
        };
        if let Some(reply) = reply {
            let text = String::from_utf8_lossy(&reply).into_owned();
            if socket.send(Message::text(text)).await.is_err() {
                break "client gone".to_owned();
            }
        }
    };
    if let Some(route) = session.api.routes.get("$disconnect") {
        let disconnect = call(
            &session.gateway,
            &session,
            "$disconnect",
            route,
            Bytes::new(),
            Some((DISCONNECT_REASON, reason.clone())),
        )
        .await;
        if let Err(why) = disconnect {
            tracing::debug!(connection = %session.connection_id, error = %why, "$disconnect integration failed");
        }
    }
    tracing::debug!(connection = %session.connection_id, reason, "WebSocket closed");
}

/// The connection's side of its stage (main or canary) in the config served
/// now, and that deployment's routes; `None` when the stage or its
/// WebSocket API is gone.
fn current(session: &Session) -> Option<(Arc<Target>, Arc<WebSocketApi>)> {
    let config = session.gateway.config.load();
    let stage = config.stage(&session.stage.api, &session.stage.name)?;
    let target = match (&stage.canary, session.target.is_canary) {
        (Some(canary), true) => canary.target.clone(),
        _ => stage.main.clone(),
    };
    let api = target.definition.websocket.clone()?;
    Some((target, api))
}

async fn close<S>(socket: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = socket
        .close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .await;
}

/// The `$connect` phase and the upgrade, for a request to a WEBSOCKET API's
/// stage root. Authorization errors refuse the upgrade like HTTP errors.
pub fn refuse_non_upgrade() -> GatewayError {
    GatewayError::BadRequestParameters("This is a WebSocket API: open a WebSocket connection".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> WebSocketApi {
        let route = || WebSocketRoute {
            integration: CompiledIntegration::Mock {
                status: StatusCode::OK,
                headers: Vec::new(),
                body: String::new(),
            },
            auth: Default::default(),
        };
        WebSocketApi {
            selection: vec!["msg".into(), "action".into()],
            routes: [("send".to_owned(), route()), ("$default".to_owned(), route())].into(),
        }
    }

    #[test]
    fn messages_go_to_the_selected_route_else_default() {
        let api = api();
        let key = |m: &str| api.select(m.as_bytes()).map(|(k, _)| k.to_owned());
        assert_eq!(key(r#"{"msg":{"action":"send"}}"#).as_deref(), Some("send"));
        assert_eq!(key(r#"{"msg":{"action":"other"}}"#).as_deref(), Some("$default"));
        assert_eq!(key("not json").as_deref(), Some("$default"));
        // A client cannot pick a special route by naming it.
        assert_eq!(
            key(r#"{"msg":{"action":"$disconnect"}}"#).as_deref(),
            Some("$default")
        );
        let without_default = WebSocketApi {
            routes: [(
                "send".to_owned(),
                api.routes
                    .into_iter()
                    .next()
                    .map(|(_, r)| r)
                    .unwrap_or_else(|| unreachable!()),
            )]
            .into(),
            selection: api.selection.clone(),
        };
        assert!(without_default.select(b"{}").is_none());
    }
}
