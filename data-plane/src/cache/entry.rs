//! What a cache key holds — a response, or the variant index of a
//! response that varies — and its stored form: a small length-prefixed
//! binary layout, sealed with AES-256-GCM when the stage encrypts its
//! cache. The Redis key is the associated data, so a record cannot be moved
//! under another key and still decrypt. Whatever comes back from Redis is
//! parsed defensively: a damaged or undecryptable record is a miss, never a
//! panic; records of an older layout are misses too.

use crate::integration::http::Forwarding;
use crate::request::transform::{HeaderChange, changed_values};
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::{Arc, OnceLock};

// Format bytes; 1 and 2 were an older layout without variants.
const PLAIN: u8 = 3;
const SEALED: u8 = 4;
const NONCE_LEN: usize = 12;
/// A response without its age (entries stored before `Age` was kept).
const RESPONSE: u8 = 1;
const VARIANTS: u8 = 2;
/// A response with when it was stored and the age it arrived with.
const AGED_RESPONSE: u8 = 3;

/// What one cache key holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    Response(Arc<Entry>),
    /// The response at this key varies (`Vary`): these request headers
    /// select its variants, each stored under its own key.
    Variants(Arc<VariantIndex>),
}

impl Stored {
    pub fn expires_at_ms(&self) -> u64 {
        match self {
            Stored::Response(entry) => entry.expires_at_ms,
            Stored::Variants(index) => index.expires_at_ms,
        }
    }

    /// Bytes it holds, for the in-process tier's capacity.
    pub fn weight(&self) -> u32 {
        match self {
            Stored::Response(entry) => entry.weight(),
            Stored::Variants(index) => {
                u32::try_from(index.vary.iter().map(|n| n.as_str().len()).sum::<usize>() + 32)
                    .unwrap_or(u32::MAX)
            }
        }
    }

    pub fn encode(&self) -> Bytes {
        match self {
            Stored::Response(entry) => entry.encode(),
            Stored::Variants(index) => {
                let mut out = BytesMut::with_capacity(64);
                out.put_u8(VARIANTS);
                out.put_u64(index.expires_at_ms);
                put_len16(&mut out, index.vary.len());
                for name in &index.vary {
                    put_len16(&mut out, name.as_str().len());
                    out.put_slice(name.as_str().as_bytes());
                }
                out.freeze()
            }
        }
    }

    pub fn decode(data: &[u8]) -> Option<Stored> {
        let (&kind, mut rest) = data.split_first()?;
        match kind {
            RESPONSE => Entry::decode(rest, false).map(|entry| Stored::Response(Arc::new(entry))),
            AGED_RESPONSE => Entry::decode(rest, true).map(|entry| Stored::Response(Arc::new(entry))),
            VARIANTS => {
                let expires_at_ms = take_u64(&mut rest)?;
                let count = take_u16(&mut rest)?;
                let mut vary = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let len = usize::from(take_u16(&mut rest)?);
                    vary.push(HeaderName::from_bytes(take(&mut rest, len)?).ok()?);
                }
                rest.is_empty()
                    .then(|| Stored::Variants(Arc::new(VariantIndex { vary, expires_at_ms })))
            }
            _ => None,
        }
    }
}

/// The request headers a varying response is selected by (its `Vary`,
/// lower-cased, sorted, without duplicates).
#[derive(Clone, Debug, PartialEq)]
pub struct VariantIndex {
    pub vary: Vec<HeaderName>,
    /// Unix milliseconds; as long as the longest-lived variant.
    pub expires_at_ms: u64,
}

/// A request's headers as variants are selected by them (RFC 9111 §4.1:
/// the request the stored response was made for): what the backend is
/// told — the client's headers as the route's mappings change them, and
/// the gateway's forwarding headers in place of the client's.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub forwarding: &'a Forwarding,
    pub changes: &'a [HeaderChange],
}

/// A request header's value as variant selection compares it: every field
/// line, trimmed, joined with ", " (RFC 9111 §4.1 normalisation); `None`
/// when absent.
pub fn selecting_value(request: RequestView<'_>, name: &HeaderName) -> Option<Bytes> {
    if let Some(told) = request.forwarding.told(name) {
        return told.map(|value| Bytes::copy_from_slice(value.as_bytes()));
    }
    let values = changed_values(request.changes, request.headers, name);
    let mut values = values.into_iter();
    let first = values.next()?;
    let mut out = BytesMut::from(first.as_bytes().trim_ascii());
    for value in values {
        out.put_slice(b", ");
        out.put_slice(value.as_bytes().trim_ascii());
    }
    Some(out.freeze())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub status: StatusCode,
    /// Ready to answer with (a hit clones it: values are shared, no
    /// name is hashed again); without `Content-Length` and `Age`.
    pub headers: HeaderMap,
    /// The head a hit answers with, made on the entry's first hit
    /// (`cache::respond`).
    pub hit_head: HitHead,
    pub body: Bytes,
    /// Unix milliseconds after which the entry is stale.
    pub expires_at_ms: u64,
    /// Unix milliseconds when Pylon received the response (0: unknown, an
    /// entry from an older node).
    pub stored_at_ms: u64,
    /// The `Age` the response arrived with, in seconds (an upstream cache
    /// had it that long).
    pub initial_age_s: u32,
    /// The response said a shared cache may serve it to requests that carry
    /// credentials (`public`, `s-maxage`, `must-revalidate`; RFC 9111 §3.5).
    pub shareable: bool,
    /// For a varying response: each header its `Vary` names, with the value
    /// of the request that stored it.
    pub selected_by: Vec<(HeaderName, Option<Bytes>)>,
}

/// A map derived from the entry's own fields once, on its first hit: it
/// takes no part in comparing entries and is never stored.
#[derive(Clone, Debug, Default)]
pub struct HitHead(pub OnceLock<HeaderMap>);

impl PartialEq for HitHead {
    fn eq(&self, _: &HitHead) -> bool {
        true
    }
}

impl Entry {
    /// Its current age in seconds at `now_ms` (RFC 9111 §4.2.3: the age it
    /// arrived with plus the time it has been stored); `None` for an entry
    /// whose storing time is unknown.
    pub fn age_s(&self, now_ms: u64) -> Option<u64> {
        (self.stored_at_ms > 0)
            .then(|| u64::from(self.initial_age_s) + now_ms.saturating_sub(self.stored_at_ms) / 1000)
    }

    /// Bytes it holds, for the in-process tier's capacity.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        u32::try_from(self.body.len() + headers + 64).unwrap_or(u32::MAX)
    }

    /// Whether this entry answers a request with `headers`: its variant's
    /// selecting headers match, and — for a request carrying credentials
    /// the key does not tell apart (`private`) — the response allowed it.
    pub fn serves(&self, request: RequestView<'_>, private: bool) -> bool {
        (self.shareable || !private)
            && self
                .selected_by
                .iter()
                .all(|(name, value)| selecting_value(request, name) == *value)
    }

    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        out.put_u8(AGED_RESPONSE);
        out.put_u16(self.status.as_u16());
        out.put_u64(self.expires_at_ms);
        out.put_u64(self.stored_at_ms);
        out.put_u32(self.initial_age_s);
        out.put_u8(u8::from(self.shareable));
        put_len16(&mut out, self.selected_by.len());
        for (name, value) in &self.selected_by {
            put_len16(&mut out, name.as_str().len());
            out.put_slice(name.as_str().as_bytes());
            match value {
                None => out.put_u8(0),
                Some(value) => {
                    out.put_u8(1);
                    out.put_u32(u32::try_from(value.len()).unwrap_or(0));
                    out.put_slice(value);
                }
            }
        }
        put_len16(&mut out, self.headers.len());
        for (name, value) in self.headers.iter().take(usize::from(u16::MAX)) {
            put_len16(&mut out, name.as_str().len());
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(u32::try_from(value.len()).unwrap_or(0));
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    fn decode(mut data: &[u8], aged: bool) -> Option<Entry> {
        let status = StatusCode::from_u16(take_u16(&mut data)?).ok()?;
        let expires_at_ms = take_u64(&mut data)?;
        let (stored_at_ms, initial_age_s) = if aged {
            (take_u64(&mut data)?, take_u32(&mut data)?)
        } else {
            (0, 0)
        };
        let shareable = match take(&mut data, 1)? {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        let count = take_u16(&mut data)?;
        let mut selected_by = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(take_u16(&mut data)?);
            let name = HeaderName::from_bytes(take(&mut data, len)?).ok()?;
            let value = match take(&mut data, 1)? {
                [0] => None,
                [1] => {
                    let len = usize::try_from(take_u32(&mut data)?).ok()?;
                    Some(Bytes::copy_from_slice(take(&mut data, len)?))
                }
                _ => return None,
            };
            selected_by.push((name, value));
        }
        let count = take_u16(&mut data)?;
        let mut headers = HeaderMap::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(take_u16(&mut data)?);
            let name = HeaderName::from_bytes(take(&mut data, len)?).ok()?;
            let len = usize::try_from(take_u32(&mut data)?).ok()?;
            let value = HeaderValue::from_bytes(take(&mut data, len)?).ok()?;
            headers.append(name, value);
        }
        Some(Entry {
            status,
            headers,
            hit_head: HitHead::default(),
            body: Bytes::copy_from_slice(data),
            expires_at_ms,
            stored_at_ms,
            initial_age_s,
            shareable,
            selected_by,
        })
    }
}

fn put_len16(out: &mut BytesMut, len: usize) {
    out.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
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

/// The stored form: a format byte, then the record (plain) or a nonce and
/// the sealed record.
pub fn seal(stored: &Stored, key: Option<&CacheKey>, aad: &[u8]) -> Option<Bytes> {
    let plain = stored.encode();
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

/// Reads a stored record; `None` when damaged, of an older layout, sealed
/// without a key, sealed under another key or for another Redis key, or
/// plain where the stage wants encryption.
pub fn open(stored: &[u8], key: Option<&CacheKey>, aad: &[u8]) -> Option<Stored> {
    let (&format, rest) = stored.split_first()?;
    match (format, key) {
        (PLAIN, None) => Stored::decode(rest),
        (SEALED, Some(CacheKey(cipher))) => {
            let (nonce, sealed) = (rest.get(..NONCE_LEN)?, rest.get(NONCE_LEN..)?);
            let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
            let plain = cipher.decrypt(&nonce.into(), Payload { msg: sealed, aad }).ok()?;
            Stored::decode(&plain)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Stored {
        Stored::Response(Arc::new(Entry {
            status: StatusCode::OK,
            headers: HeaderMap::from_iter([(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )]),
            hit_head: HitHead::default(),
            body: Bytes::from_static(br#"{"secret":"pets"}"#),
            expires_at_ms: 1_700_000_000_000,
            stored_at_ms: 1_699_999_700_000,
            initial_age_s: 7,
            shareable: true,
            selected_by: vec![
                (http::header::ACCEPT_ENCODING, Some(Bytes::from_static(b"gzip"))),
                (http::header::ACCEPT_LANGUAGE, None),
            ],
        }))
    }

    #[test]
    fn an_entry_keeps_its_age_across_nodes_and_an_older_one_has_none() {
        let stored = seal(&entry(), None, b"k").unwrap_or_default();
        let Some(Stored::Response(read)) = open(&stored, None, b"k") else {
            panic!("the entry reads back");
        };
        assert_eq!(
            read.age_s(1_699_999_700_000 + 2_500),
            Some(9),
            "7 s on arrival + 2.5 s stored"
        );
        let Stored::Response(original) = entry() else {
            unreachable!()
        };
        let mut older = original.encode().to_vec();
        older[0] = RESPONSE;
        older.drain(11..23);
        let Some(Stored::Response(older)) = Stored::decode(&older) else {
            panic!("an entry of the layout without age still reads");
        };
        assert_eq!(
            (older.body.clone(), older.age_s(u64::MAX)),
            (original.body.clone(), None)
        );
    }

    #[test]
    fn variant_indexes_round_trip_and_variants_select_by_their_headers() {
        let index = Stored::Variants(Arc::new(VariantIndex {
            vary: vec![http::header::ACCEPT_ENCODING, http::header::ACCEPT_LANGUAGE],
            expires_at_ms: 9,
        }));
        assert_eq!(
            open(&seal(&index, None, b"k").unwrap_or_default(), None, b"k"),
            Some(index)
        );
        let Stored::Response(entry) = entry() else {
            unreachable!()
        };
        let forwarding = Forwarding {
            forwarded_for: Some(HeaderValue::from_static("10.0.0.1")),
            proto: HeaderValue::from_static("https"),
            host: HeaderValue::from_static("a.example"),
        };
        fn view<'a>(headers: &'a HeaderMap, forwarding: &'a Forwarding) -> RequestView<'a> {
            RequestView {
                headers,
                forwarding,
                changes: &[],
            }
        }
        let mut headers = HeaderMap::new();
        assert!(
            !entry.serves(view(&headers, &forwarding), false),
            "no Accept-Encoding: another variant"
        );
        headers.insert(http::header::ACCEPT_ENCODING, HeaderValue::from_static(" gzip "));
        assert!(entry.serves(view(&headers, &forwarding), false));
        assert!(
            entry.serves(view(&headers, &forwarding), true),
            "shareable: served to credentialed requests"
        );
        let mut other = headers.clone();
        other.insert(http::header::ACCEPT_LANGUAGE, HeaderValue::from_static("de"));
        assert!(
            !entry.serves(view(&other, &forwarding), false),
            "a language it was not selected by"
        );
        // Forwarding headers are selected by what the backend was told...
        other.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        let host = HeaderName::from_static("x-forwarded-host");
        assert_eq!(
            selecting_value(view(&other, &forwarding), &host).as_deref(),
            Some(&b"a.example"[..])
        );
        // ...and so are headers the route's mappings set.
        let changes = [(
            pylon_common::model::mapping::Action::Overwrite,
            http::header::ACCEPT_LANGUAGE,
            Some(HeaderValue::from_static("fr")),
        )];
        let mapped = RequestView {
            headers: &other,
            forwarding: &forwarding,
            changes: &changes,
        };
        assert_eq!(
            selecting_value(mapped, &http::header::ACCEPT_LANGUAGE).as_deref(),
            Some(&b"fr"[..])
        );
    }

    #[test]
    fn records_of_the_older_layout_are_misses() {
        let stored = seal(&entry(), None, b"k").unwrap_or_default();
        let mut old = stored.to_vec();
        old[0] = 1;
        assert_eq!(open(&old, None, b"k"), None);
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
