//! PEM files to rustls objects: a listener's or a custom domain's
//! certificate chain and key, a mutual-TLS truststore, the CA bundle for
//! HTTPS backends. A leaf: the config compiler and the listener both use
//! it.

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file that cannot be used; `field` names the setting that pointed
/// at it (`certificate_file`, `private_key_file`, `truststore_file`,
/// `--upstream-ca`).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{field} {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{field} {}: no certificate in it", path.display())]
    Empty { field: &'static str, path: PathBuf },
    #[error("{field} {}: {source}", path.display())]
    Rejected {
        field: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("private_key_file {} does not belong to certificate_file {}: {source}", key.display(), cert.display())]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        source: rustls::Error,
    },
    #[error("{0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn certificates(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| PemError::Read {
            field,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            field,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a certificate chain (`cert`) and its private key (`key`).
///
/// # Errors
/// A file that cannot be read or holds no certificate, a key type rustls
/// cannot sign with, or a key that does not match the certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, PemError> {
    let certs = certificates("certificate_file", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| PemError::Read {
        field: "private_key_file",
        path: key.to_owned(),
        source,
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|source| PemError::Rejected {
            field: "private_key_file",
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|source| PemError::Mismatch {
        key: key.to_owned(),
        cert: cert.to_owned(),
        source,
    })?;
    Ok(Arc::new(certified))
}

/// A verifier that requires client certificates chaining to the CAs in
/// `truststore` (PEM).
///
/// # Errors
/// A file that cannot be read, holds no certificate or one that is not a
/// usable trust anchor.
pub fn client_verifier(truststore: &Path) -> Result<Arc<dyn ClientCertVerifier>, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("truststore_file", truststore)? {
        roots.add(cert).map_err(|source| PemError::Rejected {
            field: "truststore_file",
            path: truststore.to_owned(),
            source,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
}

/// The client config for HTTPS backends: the system's roots plus the
/// certificates in `extra_ca` (`--upstream-ca`).
///
/// # Errors
/// `extra_ca` cannot be read or holds a certificate that is not a usable
/// trust anchor.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| PemError::Read {
                field: "--upstream-ca",
                path: path.to_owned(),
                source,
            })?;
        for cert in certs {
            roots.add(cert).map_err(|source| PemError::Rejected {
                field: "--upstream-ca",
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| PemError::Rejected {
            field: "--upstream-ca",
            path: PathBuf::new(),
            source,
        })?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
