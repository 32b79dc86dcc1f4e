//! A test token issuer: RSA keys made with `openssl`, their JWKs, and
//! RS256 tokens signed with them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::Path;

pub struct Signer {
    pub kid: String,
    pub private_pem: Vec<u8>,
    pub public_pem: Vec<u8>,
    pub jwk: Value,
}

/// Runs `openssl` and returns its stdout; panics on failure.
pub fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new 2048-bit RSA key in `dir`, published as JWK `kid`.
pub fn rsa_signer(dir: &Path, kid: &str) -> Signer {
    let key = dir.join(format!("{kid}.pem")).display().to_string();
    let public = format!("{key}.pub");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &key,
    ]);
    openssl(&["pkey", "-in", &key, "-pubout", "-out", &public]);
    let modulus = openssl(&["rsa", "-in", &key, "-noout", "-modulus"]);
    let modulus =
        hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap_or_else(|e| panic!("modulus: {e}"));
    Signer {
        kid: kid.into(),
        private_pem: std::fs::read(&key).unwrap_or_else(|e| panic!("{key}: {e}")),
        public_pem: std::fs::read(&public).unwrap_or_else(|e| panic!("{public}: {e}")),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB"}),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An RS256 token with `signer`'s kid.
pub fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(signer.kid.clone());
    let key = EncodingKey::from_rsa_pem(&signer.private_pem).unwrap_or_else(|e| panic!("rsa key: {e}"));
    jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| panic!("sign: {e}"))
}
