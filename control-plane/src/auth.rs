//! Bearer tokens: kept as SHA-256 digests, compared in constant time (the
//! roles they carry are [`crate::access`]'s).
//!
//! There is no default credential: a token is configured from a file or the
//! environment, and is required whenever a port listens beyond loopback.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::Request;

/// A shared secret, compared in constant time (digests are compared, so not
/// even the length leaks).
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<str>,
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// A token from its text (surrounding whitespace trimmed). Empty → `None`.
    pub fn new(text: &str) -> Option<BearerToken> {
        let token = text.trim();
        if token.is_empty() {
            return None;
        }
        Some(BearerToken {
            token: Arc::from(token),
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The secret itself, for a client that must present it.
    pub fn reveal(&self) -> &str {
        &self.token
    }

    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_digest(&BearerToken::digest_of(presented))
    }

    /// The SHA-256 of a presented token: computed once when it is compared
    /// with several credentials ([`BearerToken::matches_digest`]).
    pub fn digest_of(presented: &str) -> [u8; 32] {
        Sha256::digest(presented.as_bytes()).into()
    }

    /// Whether the token whose digest is `digest` is this one (constant time).
    pub fn matches_digest(&self, digest: &[u8; 32]) -> bool {
        self.digest.ct_eq(digest).into()
    }

    /// Whether `other` holds the same secret.
    pub fn same_secret(&self, other: &BearerToken) -> bool {
        self.matches_digest(&other.digest)
    }

    /// Adds `authorization: Bearer …` to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        if let Ok(value) = format!("Bearer {}", self.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = BearerToken::new(" s3cret\n").expect("non-empty");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret "));
        assert!(BearerToken::new("  ").is_none());
        let mut request = Request::new(());
        assert_eq!(
            call(&token, request.metadata()),
            Err(tonic::Code::Unauthenticated)
        );
        token.attach(&mut request);
        assert_eq!(call(&token, request.metadata()), Ok(()));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    /// A call presenting `metadata` to a node whose only credential is `token`.
    fn call(token: &BearerToken, metadata: &tonic::metadata::MetadataMap) -> Result<(), tonic::Code> {
        let credentials = crate::access::Credentials::single(Some(token.clone()));
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let presented = crate::access::Presented {
            authorization,
            certificate: None,
        };
        crate::access::authorize(&credentials, None, crate::access::Port::Peer, "/any", presented)
            .map(drop)
            .map_err(|s| s.code())
    }

    fn call_with(authorization: &str) -> Result<(), tonic::Code> {
        let token = BearerToken::new("s3cret").unwrap_or_else(|| unreachable!());
        let mut request = Request::new(());
        if let Ok(value) = authorization.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        call(&token, request.metadata())
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        for accepted in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert!(call_with(accepted).is_ok(), "{accepted}");
        }
        for refused in [
            "Bearer S3CRET",
            "Basic s3cret",
            "Bearer",
            "Bearer ",
            "Bearers3cret",
            "",
        ] {
            assert!(call_with(refused).is_err(), "{refused}");
        }
    }
}
