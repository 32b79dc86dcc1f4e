//! A cached response and its stored form: a small length-prefixed binary
//! layout (status, expiry, headers, body), sealed with AES-256-GCM when the
//! stage encrypts its cache. The Redis key is the associated data, so an
//! entry cannot be moved under another key and still decrypt. Whatever
//! comes back from Redis is parsed defensively: a damaged or undecryptable
//! entry is a miss, never a panic.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};

const PLAIN: u8 = 1;
const SEALED: u8 = 2;
const NONCE_LEN: usize = 12;

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Unix milliseconds after which the entry is stale.
    pub expires_at_ms: u64,
}

impl Entry {
    /// Bytes it holds, for the in-process tier's capacity.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        u32::try_from(self.body.len() + headers + 64).unwrap_or(u32::MAX)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        out.put_u16(self.status.as_u16());
        out.put_u64(self.expires_at_ms);
        out.put_u16(u16::try_from(self.headers.len()).unwrap_or(u16::MAX));
        for (name, value) in self.headers.iter().take(usize::from(u16::MAX)) {
            out.put_u16(u16::try_from(name.as_str().len()).unwrap_or(0));
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(u32::try_from(value.len()).unwrap_or(0));
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    pub fn decode(mut data: &[u8]) -> Option<Entry> {
        let status = StatusCode::from_u16(take_u16(&mut data)?).ok()?;
        let expires_at_ms = take_u64(&mut data)?;
        let count = take_u16(&mut data)?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(take_u16(&mut data)?);
            let name = HeaderName::from_bytes(take(&mut data, len)?).ok()?;
            let len = usize::try_from(take_u32(&mut data)?).ok()?;
            let value = HeaderValue::from_bytes(take(&mut data, len)?).ok()?;
            headers.push((name, value));
        }
        Some(Entry {
            status,
            headers,
            body: Bytes::copy_from_slice(data),
            expires_at_ms,
        })
    }
}

fn take<'a>(data: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if data.len() < len {
        return None;
    }
    let (head, rest) = data.split_at(len);
    *data = rest;
    Some(head)
}

fn take_u16(data: &mut &[u8]) -> Option<u16> {
    (data.remaining() >= 2).then(|| data.get_u16())
}

fn take_u32(data: &mut &[u8]) -> Option<u32> {
    (data.remaining() >= 4).then(|| data.get_u32())
}

fn take_u64(data: &mut &[u8]) -> Option<u64> {
    (data.remaining() >= 8).then(|| data.get_u64())
}

/// The key cached entries of encrypting stages are sealed with.
#[derive(Clone)]
pub struct CacheKey(Aes256Gcm);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

impl CacheKey {
    /// 32 bytes, given raw, as 64 hex digits or as base64.
    pub fn parse(material: &[u8]) -> Result<CacheKey, String> {
        use base64::Engine;
        let text = std::str::from_utf8(material).map(str::trim).ok();
        let bytes = if material.len() == 32 {
            material.to_vec()
        } else if let Some(bytes) = text.and_then(|t| hex::decode(t).ok()) {
            bytes
        } else if let Some(bytes) =
            text.and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        {
            bytes
        } else {
            return Err("the cache encryption key must be 32 bytes: raw, 64 hex digits or base64".into());
        };
        Aes256Gcm::new_from_slice(&bytes)
            .map(CacheKey)
            .map_err(|_| format!("the cache encryption key is {} bytes, not 32", bytes.len()))
    }

    pub fn random() -> CacheKey {
        let bytes: [u8; 32] = rand::random();
        CacheKey(Aes256Gcm::new(&bytes.into()))
    }
}

/// The stored form: a format byte, then the entry (plain) or a nonce and
/// the sealed entry.
pub fn seal(entry: &Entry, key: Option<&CacheKey>, aad: &[u8]) -> Option<Bytes> {
    let plain = entry.encode();
    match key {
        None => {
            let mut out = BytesMut::with_capacity(plain.len() + 1);
            out.put_u8(PLAIN);
            out.put_slice(&plain);
            Some(out.freeze())
        }
        Some(CacheKey(cipher)) => {
            let nonce: [u8; NONCE_LEN] = rand::random();
            let sealed = cipher.encrypt(&nonce.into(), Payload { msg: &plain, aad }).ok()?;
            let mut out = BytesMut::with_capacity(sealed.len() + NONCE_LEN + 1);
            out.put_u8(SEALED);
            out.put_slice(&nonce);
            out.put_slice(&sealed);
            Some(out.freeze())
        }
    }
}

/// Reads a stored entry; `None` when damaged, sealed without a key, sealed
/// under another key or for another Redis key, or plain where the stage
/// wants encryption.
pub fn open(stored: &[u8], key: Option<&CacheKey>, aad: &[u8]) -> Option<Entry> {
    let (&format, rest) = stored.split_first()?;
    match (format, key) {
        (PLAIN, None) => Entry::decode(rest),
        (SEALED, Some(CacheKey(cipher))) => {
            let (nonce, sealed) = (rest.get(..NONCE_LEN)?, rest.get(NONCE_LEN..)?);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
            let plain = cipher.decrypt(&nonce.into(), Payload { msg: sealed, aad }).ok()?;
            Entry::decode(&plain)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from_static(br#"{"secret":"pets"}"#),
            expires_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn entries_round_trip_plain_and_sealed() {
        assert_eq!(
            open(&seal(&entry(), None, b"k").unwrap_or_default(), None, b"k"),
            Some(entry())
        );
        let key = CacheKey::random();
        let sealed = seal(&entry(), Some(&key), b"k").unwrap_or_default();
        assert_eq!(open(&sealed, Some(&key), b"k"), Some(entry()));
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "sealed entries do not show their plaintext"
        );
    }

    #[test]
    fn a_sealed_entry_opens_only_with_its_key_under_its_name() {
        let key = CacheKey::random();
        let sealed = seal(&entry(), Some(&key), b"k").unwrap_or_default();
        assert_eq!(open(&sealed, Some(&CacheKey::random()), b"k"), None);
        assert_eq!(open(&sealed, Some(&key), b"other"), None);
        assert_eq!(open(&sealed, None, b"k"), None);
        let plain = seal(&entry(), None, b"k").unwrap_or_default();
        assert_eq!(
            open(&plain, Some(&key), b"k"),
            None,
            "plaintext is not served to an encrypting stage"
        );
    }

    #[test]
    fn damaged_entries_are_misses() {
        let stored = seal(&entry(), None, b"k").unwrap_or_default();
        for cut in 0..20 {
            assert_eq!(open(&stored[..cut], None, b"k"), None);
        }
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        assert!(CacheKey::parse(&[7u8; 32]).is_ok());
        assert!(CacheKey::parse("ab".repeat(32).as_bytes()).is_ok());
        assert!(CacheKey::parse(b"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=").is_ok());
        assert!(CacheKey::parse(b"short").is_err());
    }
}
