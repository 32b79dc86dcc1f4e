//! Pylon's data plane: a stateless proxy node.
//!
//! [`sync`] subscribes to the control plane and swaps in each config snapshot
//! it compiles ([`config`]); [`server`] accepts HTTP/1.1 and HTTP/2 (cleartext
//! or TLS) and runs every request through [`pipeline`]: the request phase
//! ([`request`]), the integration ([`integration`]) and the response phase
//! ([`response`]). A data plane holds no authoritative state and writes
//! nothing to the control plane but ACK/NACK and heartbeats; what nodes
//! share — limit counters and cached responses — lives in Redis or, for a
//! single node, in process ([`shared`], [`cache`]).

pub mod cache;
pub mod config;
pub mod conn;
pub mod context;
pub mod error;
pub mod headers;
pub mod integration;
pub mod meters;
pub mod pem;
pub mod pipeline;
pub mod request;
pub mod response;
pub mod server;
pub mod shared;
pub mod stall;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod websocket;
pub mod workers;

use arc_swap::ArcSwap;
use bytes::Bytes;
use config::CompiledConfig;
use std::net::SocketAddr;
use std::sync::Arc;

pub use server::{DataPlaneConfig, ServeError, serve};

/// The body of every response the proxy writes and every backend request.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, error::BoxError>;

/// A body that is already in memory.
/// Why [`read_whole`] stopped.
#[derive(Debug)]
pub enum ReadWholeError {
    /// The body itself failed.
    Body(error::BoxError),
    /// It went over the limit (bytes).
    TooLarge(usize),
}

/// The whole of `body`, stopping as soon as it goes over `limit` bytes.
///
/// # Errors
/// [`ReadWholeError`]: the body failed, or was over `limit`.
pub async fn read_whole(mut body: Body, limit: usize) -> Result<Bytes, ReadWholeError> {
    use http_body_util::BodyExt;
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(ReadWholeError::Body)?.into_data() {
            if whole.len() + data.len() > limit {
                return Err(ReadWholeError::TooLarge(limit));
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Where a request came from.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The client's address as a header value (`X-Forwarded-For`), made
    /// once per connection.
    pub client_address: http::HeaderValue,
    pub tls: bool,
    /// The server name the TLS client asked for.
    pub sni: Option<Arc<str>>,
    /// The client's certificate, verified against the truststore of the
    /// custom domain named by `sni` (mutual TLS).
    pub client_cert: Option<Arc<context::ClientCert>>,
}

/// Settings fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// APIs answer at `{api}.{base_domain}`.
    pub base_domain: String,
    pub limits: request::admit::Limits,
    /// Proxies whose `X-Forwarded-For` is believed (resource policies judge
    /// the address they forwarded for).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest wait for the next bytes of a request body.
    pub body_read_timeout: std::time::Duration,
}

/// What every request handler shares: the live config, the upstream client.
pub struct Gateway {
    pub config: Arc<ArcSwap<CompiledConfig>>,
    /// Upstream connection pools, one per proxy worker.
    pub upstreams: integration::http::Upstreams,
    pub options: GatewayOptions,
    pub authorizers: request::authorize::Authorizers,
    /// Limits shared with the other nodes (or kept here).
    pub shared: Arc<shared::SharedState>,
    pub cache: cache::ResponseCache,
    pub telemetry: telemetry::Telemetry,
    /// The WebSocket connections this node holds, and the way to the
    /// other nodes' ones.
    pub sockets: Arc<websocket::hub::Hub>,
    /// Set when the drain timeout ends what is still in flight: such
    /// requests are logged as the node's failure (503), not the client's.
    pub drain_expired: std::sync::atomic::AtomicBool,
}

impl Gateway {
    /// The config version being served (0: none yet).
    pub fn version(&self) -> u64 {
        self.config.load().version
    }
}
