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

/// Token buckets by source address (logins, sign-ups): each address may
/// take a burst, then one token every interval.
#[derive(Default)]
pub struct Buckets(Mutex<HashMap<IpAddr, (f64, Instant)>>);

impl Buckets {
    /// Takes a token from `ip`'s bucket of `(burst, every)`; false when
    /// it is empty.
    pub fn take(&self, ip: IpAddr, (burst, every): (u32, Duration)) -> bool {
        let Ok(mut buckets) = self.0.lock() else {
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
    logins: Buckets,
    /// With mutual TLS: client certificates name operators and readers in
    /// this SPIFFE trust domain.
    trust_domain: Option<String>,
}

impl Console {
    pub fn new(
        admin: Arc<AdminApi>,
        credentials: SharedCredentials,
        tls: bool,
        loopback: bool,
        trust_domain: Option<String>,
    ) -> Console {
        Console {
            admin,
            credentials,
            templates: templates::environment(),
            tls,
            loopback,
            logins: Buckets::default(),
            trust_domain,
        }
    }

    /// Whether the node checks no caller at all (no credentials, no mutual
    /// TLS: a loopback development node), so anyone may enter.
    fn open(&self) -> bool {
        self.credentials.load().is_empty() && self.trust_domain.is_none()
    }

    /// Takes one login attempt from `ip`'s bucket; false when it is empty.
    fn login_allowed(&self, ip: IpAddr) -> bool {
        self.logins.take(ip, LOGIN_RATE)
    }
}

/// The Content Security Policy of every console answer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The authority a request names: its `Host` header (HTTP/1.1), else the
/// `:authority` HTTP/2 carries in the URI.
fn host_of(request: &Request) -> &str {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// Whether a request's `Host` is a loopback name (`127.0.0.1`,
/// `localhost`, `[::1]`, with any port): what a server listening on
/// loopback answers, so a page elsewhere cannot rebind a name of its own
/// to 127.0.0.1 and read it.
pub fn loopback_host(request: &Request) -> bool {
    let host = host_of(request);
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
    let host = host_of(request);
    let scheme = if tls { "https" } else { "http" };
    origin != format!("{scheme}://{host}")
}

/// The first phase of every request: the Host check on loopback, the
/// cross-site check, then the security headers on whatever answers.
pub async fn guarded(loopback: bool, tls: bool, csp: &str, request: Request, next: Next) -> Response {
    let mut response = if loopback && !loopback_host(&request) {
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
            // The service for a connection that showed `certificate`: each
            // request is handled with it as CLIENT_CERTIFICATE (scoped on the
            // request's own future, which HTTP/2 runs as a task of its own).
            let service_for = |certificate: Option<Arc<Vec<u8>>>| {
                hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    let answer =
                        CLIENT_CERTIFICATE.scope(certificate.clone(), router.clone().oneshot(request));
                    async move {
                        // A request, its body included, gets REQUEST_TIMEOUT.
                        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                            Ok(answer) => answer,
                            Err(_) => Ok(
                                (StatusCode::REQUEST_TIMEOUT, "the request took too long").into_response()
                            ),
                        }
                    }
                })
            };
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
                            Ok(Ok(stream)) => {
                                let certificate = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|der| Arc::new(der.as_ref().to_vec()));
                                builder
                                    .serve_connection(TokioIo::new(stream), service_for(certificate))
                                    .await
                            }
                            _ => Ok(()),
                        }
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service_for(None))
                            .await
                    }
                }
            })
            .await;
            if let Ok(Err(error)) = served {
                tracing::debug!(%error, %peer, "console connection ended");
            }
        });
    }
}

/// A TLS acceptor from PEM files (the node's `--tls-cert`/`--tls-key`);
/// with `client_ca` (the node's `--tls-client-ca`), browsers may show a
/// client certificate chaining to it (optional: tokens still log in).
///
/// # Errors
/// A file that cannot be read or holds no certificate or key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
                roots
                    .add(ca.map_err(|e| format!("{}: {e}", path.display()))?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

tokio::task_local! {
    /// The client certificate (DER) of the connection a request came on,
    /// while the request is handled.
    pub static CLIENT_CERTIFICATE: Option<Arc<Vec<u8>>>;
}
