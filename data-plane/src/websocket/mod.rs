//! WebSocket APIs. The `$connect` route runs through the same request
//! phase as HTTP (authorizers, API keys, throttling, and the stage's
//! new-connection rate) and its integration may refuse the connection
//! ([`crate::pipeline`]); then [`connection`] serves the socket: each
//! message is routed by the API's route selection expression
//! (`$request.body.action`) to a route key, else to `$default`; a route's
//! integration (HTTP or MOCK) gets the message with the connection's context
//! in `x-pylon-*` headers, and a 2xx answer with a body goes back to the
//! client; `$disconnect` is called (best effort) when the connection ends,
//! with the reason. [`hub`] finds a connection from any node (through
//! Redis) for the `@connections` management API ([`manage`]).
//!
//! Limits per stage (AWS's defaults): frames ≤ 32 KiB, messages ≤ 128 KiB
//! (close 1009 beyond), idle 10 minutes, 2 hours at most, 500 new
//! connections a second. Pings are answered.

pub mod connection;
pub mod hub;
pub mod manage;

use crate::config::integration::CompiledIntegration;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::inputs::Inputs;
use crate::{Body, Gateway, full_body};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};

pub use crate::config::websocket::{
    Access, CONNECT_BURST, CONNECT_RATE, IDLE, MAX_DURATION, MAX_FRAME, MAX_MESSAGE, SocketLimits,
    WebSocketApi, WebSocketRoute,
};

pub const CONNECTION_ID: &str = "x-pylon-connection-id";
pub const ROUTE_KEY: &str = "x-pylon-route-key";
pub const DISCONNECT_REASON: &str = "x-pylon-disconnect-reason";

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

/// The handshake's `Sec-WebSocket-Key` (RFC 6455 §4.2.1): one, the base64
/// of 16 bytes, for version 13.
///
/// # Errors
/// [`GatewayError::UnsupportedWebSocketVersion`] (426) for another version
/// (or several); [`GatewayError::MalformedRequest`] for a missing, repeated
/// or malformed key.
pub fn handshake_key(headers: &http::HeaderMap) -> Result<HeaderValue, GatewayError> {
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(version), None) if version.as_bytes() == b"13" => {}
        _ => return Err(GatewayError::UnsupportedWebSocketVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(GatewayError::MalformedRequest(
            "One Sec-WebSocket-Key is required",
        ));
    };
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if decoded.map_or(true, |nonce| nonce.len() != 16) {
        return Err(GatewayError::MalformedRequest(
            "Sec-WebSocket-Key is not the base64 of 16 bytes",
        ));
    }
    Ok(key.clone())
}

/// A new connection id (16 random bytes, URL-safe base64).
pub fn new_connection_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// What a route's integration answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Calls a message route's (or `$disconnect`'s) integration with `body`:
/// a POST carrying the connection's context in `x-pylon-*` headers.
///
/// # Errors
/// The integration's failure, as [`GatewayError`] (a timeout is
/// [`GatewayError::IntegrationTimeout`]).
pub async fn call(
    gateway: &Gateway,
    session: &connection::Session,
    route_key: &str,
    route: &WebSocketRoute,
    body: Bytes,
    request_id: &str,
    extra: Option<(&'static str, String)>,
) -> Result<Answer, GatewayError> {
    let mut headers = HeaderMap::new();
    if let Some((name, value)) = extra
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        headers.insert(name, value);
    }
    integrate(
        gateway, session, route_key, route, headers, None, body, request_id,
    )
    .await
}

/// The client's handshake, as `$connect`'s integration gets it.
pub struct Handshake<'a> {
    pub inputs: &'a Inputs<'a>,
    pub ctx: &'a RequestContext,
}

/// Calls `$connect`'s integration with the client's handshake: its headers
/// (hop-by-hop and `x-pylon-*` ones removed) and query string, after the
/// route's request mappings, and as the body a JSON event like AWS's
/// `$connect` event (`headers`, `multiValueHeaders`,
/// `queryStringParameters`, `requestContext` with `eventType: CONNECT`).
///
/// # Errors
/// The integration's failure, as [`GatewayError`]; a mapping whose value
/// is not a header value is [`GatewayError::BadRequestParameters`].
pub async fn connect(
    gateway: &Gateway,
    session: &connection::Session,
    route: &WebSocketRoute,
    handshake: Handshake<'_>,
    request_id: &str,
) -> Result<Answer, GatewayError> {
    let Handshake { inputs, ctx } = handshake;
    // The handshake as the event shows it (without hop-by-hop headers, with
    // the forwarding ones a backend is told) and as the request carries it.
    let (single, multi) = inputs.headers_json();
    let mut headers = inputs.parts.headers.clone();
    crate::headers::strip_hop_by_hop(&mut headers);
    for name in [header::HOST, header::CONTENT_LENGTH, header::CONTENT_TYPE] {
        headers.remove(name);
    }
    let mut plan = crate::request::transform::plan(&route.request_mappings, inputs, ctx)?;
    let outgoing = plan.apply(&mut headers);
    let query = outgoing
        .query
        .or_else(|| inputs.parts.uri.query().map(str::to_owned));
    let event = serde_json::json!({
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": inputs.query_json(),
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "connectionId": session.connection_id,
            "requestId": request_id,
            "stage": session.stage.name,
            "apiId": session.stage.api,
            "domainName": session.host,
            "identity": {
                "sourceIp": session.source_ip.to_string(),
                "userAgent": session.user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "authorizer": ctx.authorizer,
        },
        "isBase64Encoded": false,
    });
    let body = Bytes::from(event.to_string());
    integrate(
        gateway,
        session,
        "$connect",
        route,
        headers,
        query.as_deref(),
        body,
        request_id,
    )
    .await
}

/// One integration call: MOCK answers at once; HTTP gets `body` POSTed
/// with `headers`, the connection's context and `query`.
#[allow(clippy::too_many_arguments)]
async fn integrate(
    gateway: &Gateway,
    session: &connection::Session,
    route_key: &str,
    route: &WebSocketRoute,
    mut headers: HeaderMap,
    query: Option<&str>,
    body: Bytes,
    request_id: &str,
) -> Result<Answer, GatewayError> {
    match &route.integration {
        CompiledIntegration::Mock {
            status,
            headers: mock_headers,
            body,
        } => Ok(Answer {
            status: *status,
            headers: mock_headers.iter().cloned().collect(),
            body: Bytes::from(body.clone()),
        }),
        CompiledIntegration::Http { uri, timeout, .. } => {
            let mut uri = crate::integration::fill(&uri.template, &session.target.variables, &[]);
            if let Some(query) = query.filter(|q| !q.is_empty()) {
                uri.push(if uri.contains('?') { '&' } else { '?' });
                uri.push_str(query);
            }
            session.forwarding.apply(&mut headers);
            let context = [
                (header::CONTENT_TYPE, Some("application/json")),
                (
                    HeaderName::from_static(CONNECTION_ID),
                    Some(session.connection_id.as_str()),
                ),
                (HeaderName::from_static(ROUTE_KEY), Some(route_key)),
                (
                    HeaderName::from_static("x-pylon-stage"),
                    Some(&*session.stage.name),
                ),
                (HeaderName::from_static("x-pylon-request-id"), Some(request_id)),
                (
                    HeaderName::from_static("x-pylon-principal-id"),
                    session.principal_id.as_deref(),
                ),
            ];
            for (name, value) in context {
                match value.map(HeaderValue::from_str) {
                    Some(Ok(value)) => {
                        headers.insert(name, value);
                    }
                    _ => {
                        headers.remove(name);
                    }
                }
            }
            // The client's query can make the URI longer than one can be:
            // its fault, not the API's.
            let limit = crate::integration::http::MAX_URI_BYTES;
            if uri.len() > limit {
                return Err(GatewayError::UriTooLong {
                    length: uri.len(),
                    limit,
                });
            }
            let mut request = Request::post(uri)
                .body(full_body(body))
                .map_err(|e| GatewayError::ApiConfiguration(format!("WebSocket integration URI: {e}")))?;
            *request.headers_mut() = headers;
            let limit = session.stage.sockets.max_message;
            let fetched =
                crate::integration::http::fetch(gateway.upstreams.client(), request, *timeout, limit).await?;
            // Only a real answer is relayed (a 101 or a status over 599
            // would break the client's handshake).
            if !(200..=599).contains(&fetched.status.as_u16()) {
                return Err(GatewayError::InvalidIntegrationResponse(
                    format!("the integration answered status {}", fetched.status.as_u16()).into(),
                ));
            }
            Ok(Answer {
                status: fetched.status,
                headers: fetched.headers,
                body: fetched.body,
            })
        }
    }
}

/// The subprotocol `$connect`'s integration chose, which must be one the
/// client offered (RFC 6455 §4.2.2); `None` when it chose none.
///
/// # Errors
/// [`GatewayError::InvalidIntegrationResponse`] for a choice the client did
/// not offer (the client would fail the connection).
pub fn subprotocol(request: &HeaderMap, answer: &HeaderMap) -> Result<Option<HeaderValue>, GatewayError> {
    let mut chosen = answer.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    let Some(chosen) = chosen.next().filter(|_| chosen.next().is_none()) else {
        return match answer.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
            // At most once in a handshake answer (RFC 6455 §11.3.4).
            true => Err(GatewayError::InvalidIntegrationResponse(
                "$connect chose more than one subprotocol".into(),
            )),
            false => Ok(None),
        };
    };
    let chosen_text = chosen.to_str().unwrap_or("").trim();
    let offered = request
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == chosen_text && !chosen_text.is_empty());
    if offered {
        Ok(HeaderValue::from_str(chosen_text).ok())
    } else {
        Err(GatewayError::InvalidIntegrationResponse(
            format!("$connect chose the subprotocol {chosen_text:?}, which the client did not offer").into(),
        ))
    }
}

/// The 101 answer to an accepted upgrade, with the chosen subprotocol.
pub fn switching_protocols(key: &HeaderValue, protocol: Option<HeaderValue>) -> Response<Body> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(full_body(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// A plain request to a WEBSOCKET API's stage root.
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
            request_mappings: Vec::new(),
        };
        WebSocketApi {
            selection: vec!["msg".into(), "action".into()],
            routes: [("send".to_owned(), route()), ("$default".to_owned(), route())]
                .into_iter()
                .collect(),
            access: Access::default(),
        }
    }

    #[test]
    fn a_handshake_has_one_valid_key_for_version_13() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_static(value));
            }
            map
        };
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let v13 = ("sec-websocket-version", "13");
        assert!(handshake_key(&headers(&[key, v13])).is_ok());
        assert!(matches!(
            handshake_key(&headers(&[key, ("sec-websocket-version", "8")])),
            Err(GatewayError::UnsupportedWebSocketVersion)
        ));
        assert!(matches!(
            handshake_key(&headers(&[key, v13, ("sec-websocket-version", "8")])),
            Err(GatewayError::UnsupportedWebSocketVersion)
        ));
        for bad in [
            vec![v13],
            vec![key, key, v13],
            vec![("sec-websocket-key", "short"), v13],
        ] {
            assert!(matches!(
                handshake_key(&headers(&bad)),
                Err(GatewayError::MalformedRequest(_))
            ));
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
            .into_iter()
            .collect(),
            selection: api.selection.clone(),
            access: Access::default(),
        };
        assert!(without_default.select(b"{}").is_none());
    }
}
