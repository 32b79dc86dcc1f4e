//! TLS for the proxy's listener: certificates (read by [`crate::pem`]),
//! chosen per connection by SNI — a custom domain's own certificate when the current
//! config has one, else the listener's default. ALPN offers h2 and http/1.1.
//!
//! Mutual TLS: a custom domain with a truststore gets a handshake that
//! requires a client certificate chaining to it ([`Listener::accept`] reads
//! the ClientHello first to pick the domain's verifier). The verified
//! certificate's subject, issuer, serial and fingerprint travel with the
//! connection into `$context.identity.clientCert`.

use crate::config::CompiledConfig;
use crate::context::ClientCert;
use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// Picks a certificate by SNI from the live config.
#[derive(Debug)]
struct SniResolver {
    config: Arc<ArcSwap<CompiledConfig>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let config = self.config.load();
            if let Some(key) = config.certificates.get(&name.to_ascii_lowercase()) {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

/// The TLS listener's handshakes.
#[derive(Clone)]
pub struct Listener {
    live: Arc<ArcSwap<CompiledConfig>>,
    resolver: Arc<SniResolver>,
    /// For every name without mutual TLS.
    plain: Arc<rustls::ServerConfig>,
}

/// A finished handshake: the stream, the name the client asked for, and its
/// verified certificate (mutual TLS only).
pub type Accepted<IO> = (
    tokio_rustls::server::TlsStream<IO>,
    Option<Arc<str>>,
    Option<Arc<ClientCert>>,
);

impl Listener {
    pub fn new(
        live: Arc<ArcSwap<CompiledConfig>>,
        default: Option<Arc<CertifiedKey>>,
    ) -> Result<Listener, String> {
        let resolver = Arc::new(SniResolver {
            config: live.clone(),
            default,
        });
        let plain = Arc::new(server_config(None, resolver.clone())?);
        Ok(Listener {
            live,
            resolver,
            plain,
        })
    }

    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<Accepted<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let sni: Option<Arc<str>> = start
            .client_hello()
            .server_name()
            .map(|n| Arc::from(n.to_ascii_lowercase()));
        let verifier = sni
            .as_deref()
            .and_then(|name| self.live.load().client_verifiers.get(name).cloned());
        let config = match verifier {
            // Built per handshake: mutual-TLS domains follow the live config.
            Some(verifier) => {
                Arc::new(server_config(Some(verifier), self.resolver.clone()).map_err(std::io::Error::other)?)
            }
            None => self.plain.clone(),
        };
        let mutual = !Arc::ptr_eq(&config, &self.plain);
        let stream = start.into_stream(config).await?;
        let client_cert = if mutual {
            let der = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
            der.map(|der| Arc::new(describe(der)))
        } else {
            None
        };
        Ok((stream, sni, client_cert))
    }
}

/// What `$context.identity.clientCert` shows of a verified certificate.
fn describe(der: &CertificateDer<'_>) -> ClientCert {
    use sha2::{Digest, Sha256};
    let fingerprint = hex::encode(Sha256::digest(der.as_ref()));
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => ClientCert {
            subject_dn: cert.subject().to_string(),
            issuer_dn: cert.issuer().to_string(),
            serial_number: cert.raw_serial_as_string(),
            fingerprint,
        },
        // rustls verified it, so this does not happen; keep the fingerprint.
        Err(_) => ClientCert {
            fingerprint,
            ..Default::default()
        },
    }
}

fn server_config(
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    resolver: Arc<SniResolver>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(resolver);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}
