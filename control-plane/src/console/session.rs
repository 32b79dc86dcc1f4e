//! Console sessions: a cookie sealed with AES-256-GCM under the cluster's
//! console key (replicated through Raft, so any control-plane node opens a
//! session any other made). It names the credential (and the SHA-256 of
//! its token, so rotating or removing the credential ends the session) and
//! carries the CSRF token every form must echo. Sessions end after
//! [`IDLE_TIMEOUT`] without a request, and [`MAX_AGE`] after login.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cookie's name. `__Host-` (with TLS) binds it to this origin, path `/`.
pub const COOKIE: &str = "pylon_console";
pub const SECURE_COOKIE: &str = "__Host-pylon_console";
/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// And this long after login, whatever happens.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// Cookies longer than this are refused by browsers; so are sessions.
const MAX_COOKIE: usize = 3800;

/// What a session cookie holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// The credential's name (`anonymous` on a node without credentials).
    pub name: String,
    /// SHA-256 of its token, hex (empty without credentials).
    pub token_digest: String,
    /// The token forms echo (32 hex characters).
    pub csrf: String,
    /// Seconds since the epoch: login, and the last request.
    pub issued: u64,
    pub seen: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Session {
    /// A new session for `name`, now.
    pub fn new(name: &str, token_digest: &[u8]) -> Session {
        let mut csrf = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut csrf);
        let at = now();
        Session {
            name: name.to_owned(),
            token_digest: hex::encode(token_digest),
            csrf: hex::encode(csrf),
            issued: at,
            seen: at,
        }
    }

    /// Whether it is still valid now (idle and absolute limits).
    pub fn alive(&self) -> bool {
        let at = now();
        at.saturating_sub(self.seen) < IDLE_TIMEOUT.as_secs()
            && at.saturating_sub(self.issued) < MAX_AGE.as_secs()
    }

    /// The same session, seen now.
    pub fn touched(&self) -> Session {
        Session {
            seen: now(),
            ..self.clone()
        }
    }

    /// Whether a form's `csrf` field is this session's (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.csrf.len() == presented.len() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Why a session could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the console key is not 32 bytes")]
    Key,
    #[error("the session does not fit in a cookie")]
    TooLong,
}

/// The cookie value of `session` under `key`: base64url(nonce ‖ sealed JSON).
///
/// # Errors
/// A key of the wrong length, or a session too long for a cookie.
pub fn seal(key: &[u8], session: &Session) -> Result<String, SealError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Key)?;
    let nonce: [u8; 12] = rand::random();
    let plain = serde_json::to_vec(session).map_err(|_| SealError::TooLong)?;
    let sealed = cipher
        .encrypt(&nonce.into(), plain.as_slice())
        .map_err(|_| SealError::Key)?;
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    if value.len() > MAX_COOKIE {
        return Err(SealError::TooLong);
    }
    Ok(value)
}

/// The session a cookie value seals under `key`, if it is one and alive.
pub fn open(key: &[u8], value: &str) -> Option<Session> {
    if value.len() > MAX_COOKIE {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let plain = cipher.decrypt(&nonce.into(), sealed).ok()?;
    let session: Session = serde_json::from_slice(&plain).ok()?;
    session.alive().then_some(session)
}

/// The value of cookie `name` among a request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console's and portal's cookies: `HttpOnly`,
/// `SameSite=Strict`, path `/`, `Secure` with `tls`; `max_age` 0 deletes.
pub fn set_cookie(name: &str, value: &str, max_age: u64, tls: bool) -> http::HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    http::HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_session_opens_only_under_its_key_and_unaltered() {
        let key = [7u8; 32];
        let session = Session::new("alice", &[1u8; 32]);
        let value = seal(&key, &session).expect("sealed");
        assert_eq!(open(&key, &value), Some(session));
        assert_eq!(open(&[8u8; 32], &value), None, "another cluster's key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(open(&key, &URL_SAFE_NO_PAD.encode(bytes)), None, "tampered");
        assert_eq!(open(&key, "garbage"), None);
    }

    #[test]
    fn an_idle_or_old_session_is_over() {
        let key = [7u8; 32];
        let mut session = Session::new("alice", &[1u8; 32]);
        session.seen -= IDLE_TIMEOUT.as_secs() + 1;
        assert_eq!(open(&key, &seal(&key, &session).expect("sealed")), None);
        let mut session = Session::new("alice", &[1u8; 32]);
        session.issued -= MAX_AGE.as_secs() + 1;
        assert_eq!(open(&key, &seal(&key, &session).expect("sealed")), None);
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let session = Session::new("alice", &[]);
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&session.csrf[1..]));
    }
}
