//! The `@connections` management API of a WebSocket stage, on every node:
//! `POST /{stage}/@connections/{id}` sends the body to the client, `GET`
//! describes the connection, `DELETE` closes it — wherever it is held
//! ([`super::hub`]). A connection that does not exist answers 410.
//!
//! Callers must be granted the right by the API's `connectionsAccess`: an
//! API key listed there, or a token its JWT authorizer accepts with one of
//! its scopes. Without that section nobody may call it.

use super::WebSocketApi;
use super::hub::{ConnectionInfo, HubError};
use crate::config::CompiledStage;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::request::authorize;
use crate::request::body::ClientBody;
use crate::request::inputs::Inputs;
use crate::{Body, Gateway, full_body};
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use hyper::body::Incoming;
use sha2::Digest;

/// The path prefix, below the stage.
pub const PREFIX: &str = "/@connections/";

/// Serves one management call for connection `id`.
pub async fn serve(
    gateway: &Gateway,
    stage: &CompiledStage,
    api: &WebSocketApi,
    parts: &http::request::Parts,
    body: Incoming,
    ctx: &mut RequestContext,
    id: &str,
) -> Result<Response<Body>, GatewayError> {
    if id.is_empty() || id.contains('/') {
        return Err(GatewayError::NoRoute);
    }
    authorize(gateway, stage, api, parts, ctx).await?;
    let hub = &gateway.sockets;
    let cluster = gateway.config.load().cluster_id.clone();
    let scope = crate::websocket::hub::Scope {
        cluster: &cluster,
        api: &stage.api,
        stage: &stage.name,
    };
    match parts.method {
        Method::POST => {
            let limit = stage.sockets.max_message as u64;
            let data = ClientBody::new(body, gateway.options.body_read_timeout, limit)
                .read_whole()
                .await?;
            hub.post(scope, id, data).await.map_err(refused)?;
            Ok(empty(StatusCode::OK))
        }
        Method::GET => {
            let info = hub.info(scope, id).await.map_err(refused)?;
            let mut response = Response::new(full_body(describe(&info)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Method::DELETE => {
            hub.delete(scope, id).await.map_err(refused)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(GatewayError::NoRoute),
    }
}

/// An API key granted the right, else the access's JWT authorizer and
/// scopes; nobody when the API grants nothing.
async fn authorize(
    gateway: &Gateway,
    stage: &CompiledStage,
    api: &WebSocketApi,
    parts: &http::request::Parts,
    ctx: &mut RequestContext,
) -> Result<(), GatewayError> {
    let access = &api.access;
    let presented_key = match crate::config::presented_key(&parts.headers) {
        crate::config::PresentedKey::One(value) => Some(value),
        crate::config::PresentedKey::Absent => None,
        crate::config::PresentedKey::Several => return Err(not_granted()),
    };
    if let Some(presented) = presented_key {
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        let config = gateway.config.load();
        if let Some(key) = config.api_key(&digest)
            && key.enabled
            && access.api_key_ids.contains(&*key.id)
        {
            ctx.identity.api_key_id = Some(key.id.clone());
            return Ok(());
        }
    }
    match &access.jwt {
        Some(auth) => {
            let inputs = Inputs::new(parts, "", &[], &stage.main.variables, None);
            match authorize::run(gateway, stage, auth, &inputs, ctx).await {
                Ok(_) => Ok(()),
                // An API key without the grant, and no token: refused, not
                // asked to authenticate.
                Err(GatewayError::MissingCredential) if presented_key.is_some() => Err(not_granted()),
                Err(e) => Err(e),
            }
        }
        None => Err(not_granted()),
    }
}

fn not_granted() -> GatewayError {
    GatewayError::Forbidden {
        reason: "not granted the @connections management API".into(),
        insufficient_scope: false,
    }
}

fn refused(error: HubError) -> GatewayError {
    match error {
        HubError::Gone => GatewayError::ConnectionGone,
        HubError::Busy => GatewayError::ConnectionBusy,
        HubError::Unavailable(why) => GatewayError::ConnectionRegistryUnavailable(why),
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full_body(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// AWS's answer to GET, in camelCase: times in RFC 3339.
fn describe(info: &ConnectionInfo) -> String {
    let mut identity = serde_json::json!({
        "sourceIp": info.source_ip,
        "userAgent": info.user_agent,
    });
    if let Some(id) = &info.api_key_id {
        identity["apiKeyId"] = id.clone().into();
    }
    if let Some(principal) = &info.principal_id {
        identity["principalId"] = principal.clone().into();
    }
    serde_json::json!({
        "connectedAt": rfc3339(info.connected_at),
        "lastActiveAt": rfc3339(info.last_active_at),
        "identity": identity,
    })
    .to_string()
}

/// Milliseconds since the epoch as `2026-11-24T21:05:00.123Z`.
fn rfc3339(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (year, month, day) = pylon_common::quota::civil_from_days(secs.div_euclid(86_400));
    let in_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_544_395_123), "2026-11-24T18:19:55.123Z");
    }
}
