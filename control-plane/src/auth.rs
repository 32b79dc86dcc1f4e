//! Bearer-token authentication for the admin API and peer traffic.
//!
//! There is no default credential: a token is configured from a file or the
//! environment, and is required whenever a port listens beyond loopback.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

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

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }

    /// Adds `authorization: Bearer …` to an outgoing request.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        if let Ok(value) = format!("Bearer {}", self.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }

    /// Checks an incoming request's `authorization` header (`Bearer`, in
    /// any case: RFC 9110 §11.1 makes the scheme case-insensitive).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the header is missing, not a bearer
    /// credential, or holds another token.
    pub fn verify<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::access::bearer);
        match presented {
            Some(token) if self.matches(token) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated("missing `authorization: Bearer <token>`")),
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
            token.verify(&request).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        token.attach(&mut request);
        assert!(token.verify(&request).is_ok());
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    fn call(authorization: &str) -> Result<(), Status> {
        let token = BearerToken::new("s3cret").unwrap_or_else(|| unreachable!());
        let mut request = Request::new(());
        if let Ok(value) = authorization.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        token.verify(&request)
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        for accepted in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert!(call(accepted).is_ok(), "{accepted}");
        }
        for refused in [
            "Bearer S3CRET",
            "Basic s3cret",
            "Bearer",
            "Bearer ",
            "Bearers3cret",
            "",
        ] {
            assert!(call(refused).is_err(), "{refused}");
        }
    }
}
