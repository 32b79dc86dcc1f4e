//! A WEBSOCKET API as compiled with the snapshot: its routes by route key,
//! the route selection expression, who may call `@connections`, and the
//! stage's connection limits (AWS's defaults). Served by
//! [`crate::websocket`].

use crate::config::auth::RouteAuth;
use crate::config::integration::CompiledIntegration;
use foldhash::HashMap;
use pylon_common::model::mapping::Mapping;
use pylon_proto::config::v1::WebSocketSettings;
use std::collections::HashSet;
use std::time::Duration;

/// Largest frame a client may send, bytes (then close 1009).
pub const MAX_FRAME: usize = 32 << 10;
/// Largest message, bytes (then close 1009).
pub const MAX_MESSAGE: usize = 128 << 10;
/// A connection with no message either way for this long is closed.
pub const IDLE: Duration = Duration::from_secs(600);
/// A connection is closed after this long, whatever it does.
pub const MAX_DURATION: Duration = Duration::from_secs(7200);
/// AWS's new-connection rate (per account there; per stage here).
pub const CONNECT_RATE: f64 = 500.0;
/// The burst of the new-connection rate.
pub const CONNECT_BURST: u32 = 500;

/// A WEBSOCKET API, compiled: routes by route key and the selection key.
#[derive(Debug)]
pub struct WebSocketApi {
    /// The body field named by `$request.body.FIELD` (dots: nested).
    pub selection: Vec<String>,
    pub routes: HashMap<String, WebSocketRoute>,
    /// Who may call `@connections`.
    pub access: Access,
}

/// Callers of the `@connections` management API: these API keys (ids), or
/// tokens that a JWT authorizer accepts with one of its scopes. Empty:
/// nobody.
#[derive(Debug, Default)]
pub struct Access {
    pub api_key_ids: HashSet<String>,
    pub jwt: Option<RouteAuth>,
}

#[derive(Debug)]
pub struct WebSocketRoute {
    pub integration: CompiledIntegration,
    pub auth: RouteAuth,
    /// `$connect` only: header and query-string mappings applied to the
    /// client's handshake before its integration gets it.
    pub request_mappings: Vec<Mapping>,
}

/// A stage's connection limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SocketLimits {
    pub max_frame: usize,
    pub max_message: usize,
    pub idle: Duration,
    pub max_duration: Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_frame: MAX_FRAME,
            max_message: MAX_MESSAGE,
            idle: IDLE,
            max_duration: MAX_DURATION,
        }
    }
}

impl SocketLimits {
    pub fn compile(settings: Option<&WebSocketSettings>) -> SocketLimits {
        let default = SocketLimits::default();
        let Some(s) = settings else { return default };
        let or = |value: u32, default: usize| if value == 0 { default } else { value as usize };
        let secs = |value: u32, default: Duration| {
            if value == 0 {
                default
            } else {
                Duration::from_secs(u64::from(value))
            }
        };
        SocketLimits {
            max_frame: or(s.max_frame_bytes, default.max_frame),
            max_message: or(s.max_message_bytes, default.max_message),
            idle: secs(s.idle_timeout_seconds, default.idle),
            max_duration: secs(s.max_duration_seconds, default.max_duration),
        }
    }
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
