//! The operator console (`--console-listen`): server-rendered pages over
//! the admin API, in process.
//!
//! Every action is the admin call the CLI makes (`AdminService` on this
//! node, with the logged-in credential as its caller), so roles,
//! validation, revisions and the audit log apply unchanged; a reader sees
//! no write controls, and a write it posts anyway is refused by the same
//! role check as over gRPC. Phases of a request, in order: `guard`
//! (Host check, security headers) → `pages::Page::begin` (session cookie,
//! credential still valid) → the page's admin calls → a template
//! (`templates`), which escapes every value.
//!
//! Security: sessions are sealed cookies ([`session`]) under a key
//! replicated through Raft; `HttpOnly`, `SameSite=Strict`, `Secure` (and
//! the `__Host-` prefix) with TLS; a CSRF token in every form; logins
//! limited per source address ([`LOGIN_RATE`]); a strict Content Security
//! Policy (no inline script or style). Off loopback the console needs TLS
//! (the node's `--tls-cert`) or `--console-insecure`.

mod charts;
mod pages;
pub mod session;
mod templates;

use crate::access::SharedCredentials;
use crate::admin::AdminApi;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Login attempts a source address may make: a burst of 10, then one
/// every 6 seconds (10 a minute).
pub const LOGIN_RATE: (u32, Duration) = (10, Duration::from_secs(6));
/// The largest form a page takes (an API definition in YAML).
const MAX_FORM_BYTES: usize = 4 << 20;
/// A client gets this long to send a request's headers, and a TLS
/// handshake this long to finish.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request, its body included, gets this long (then 408).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection is closed after this long, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Connections open at once on one listener; a newer one is closed.
pub const MAX_CONNECTIONS: usize = 256;

/// The peer address of a request, set by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What every page shares.
pub struct Console {
    admin: Arc<AdminApi>,
    credentials: SharedCredentials,
    templates: minijinja::Environment<'static>,
    /// Served over TLS: cookies are `Secure`.
    tls: bool,
    /// Listening on loopback: only loopback `Host` names are answered (a
    /// page elsewhere cannot rebind a name to 127.0.0.1 and read this one).
    loopback: bool,
    logins: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Console {
    pub fn new(admin: Arc<AdminApi>, credentials: SharedCredentials, tls: bool, loopback: bool) -> Console {
        Console {
            admin,
            credentials,
            templates: templates::environment(),
            tls,
            loopback,
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one login attempt from `ip`'s bucket; false when it is empty.
    fn login_allowed(&self, ip: IpAddr) -> bool {
        let (burst, every) = LOGIN_RATE;
        let Ok(mut buckets) = self.logins.lock() else {
            return false;
        };
        let now = Instant::now();
        // Forget addresses whose bucket has refilled, so the map stays small.
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < every * burst);
        }
        let (tokens, at) = buckets.entry(ip).or_insert((f64::from(burst), now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() / every.as_secs_f64()).min(f64::from(burst));
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Content Security Policy of every console answer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a request's `Host` is a loopback name (`127.0.0.1`,
/// `localhost`, `[::1]`, with any port): what a server listening on
/// loopback answers, so a page elsewhere cannot rebind a name of its own
/// to 127.0.0.1 and read it.
pub fn loopback_host(headers: &axum::http::HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// The security headers every console and portal answer carries: `csp`,
/// no sniffing, no framing, no referrer, no caching unless the answer
/// says otherwise, and HSTS with `tls`.
pub fn security_headers(headers: &mut axum::http::HeaderMap, csp: &str, tls: bool) {
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Whether `request` is a form posted from another origin: a browser
/// names the page's origin in `Origin` on every POST, and it must be this
/// server's (a page elsewhere cannot log a victim in, or post anything).
/// Clients that send no `Origin` are not browsers, and the CSRF token
/// still guards them.
pub fn cross_site(request: &Request, tls: bool) -> bool {
    if request.method() != axum::http::Method::POST {
        return false;
    }
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return false;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let scheme = if tls { "https" } else { "http" };
    origin != format!("{scheme}://{host}")
}

/// The first phase of every request: the Host check on loopback, the
/// cross-site check, then the security headers on whatever answers.
pub async fn guarded(loopback: bool, tls: bool, csp: &str, request: Request, next: Next) -> Response {
    let mut response = if loopback && !loopback_host(request.headers()) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers loopback names only",
        )
            .into_response()
    } else if cross_site(&request, tls) {
        (StatusCode::FORBIDDEN, "a form posted from another origin").into_response()
    } else {
        next.run(request).await
    };
    security_headers(response.headers_mut(), csp, tls);
    response
}

async fn guard(console: axum::extract::State<Arc<Console>>, request: Request, next: Next) -> Response {
    guarded(console.loopback, console.tls, CSP, request, next).await
}

fn router(console: Arc<Console>) -> Router {
    pages::routes()
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// Serves the console on `listener` (through `tls` when set) until `stop`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    console: Arc<Console>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serve_router(listener, tls, router(console), stop).await;
}

/// Serves `router` on `listener` (through `tls` when set) until `stop`,
/// with the peer address of each request as a [`Peer`] extension (the
/// console's and the portal's listener).
pub async fn serve_router(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "console: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Full: the newcomer is closed at once, the others keep going.
            tracing::warn!(%peer, "console/portal: {MAX_CONNECTIONS} connections open, closing a new one");
            continue;
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    let answer = router.clone().oneshot(request);
                    async move {
                        // A request, its body included, gets REQUEST_TIMEOUT.
                        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                            Ok(answer) => answer,
                            Err(_) => Ok(
                                (StatusCode::REQUEST_TIMEOUT, "the request took too long").into_response()
                            ),
                        }
                    }
                });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(32)
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(10));
            // Whatever it does, a connection ends after CONNECTION_LIFETIME
            // (a browser opens another), so an idle HTTP/2 one cannot stay.
            let served = tokio::time::timeout(CONNECTION_LIFETIME, async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), service).await,
                            _ => Ok(()),
                        }
                    }
                    None => builder.serve_connection(TokioIo::new(stream), service).await,
                }
            })
            .await;
            if let Ok(Err(error)) = served {
                tracing::debug!(%error, %peer, "console connection ended");
            }
        });
    }
}

/// A TLS acceptor from PEM files (the node's `--tls-cert`/`--tls-key`).
///
/// # Errors
/// A file that cannot be read or holds no certificate or key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
