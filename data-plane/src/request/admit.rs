//! Limits and well-formedness, checked before anything else (AWS: request
//! line + headers 10,240 bytes; payload 10 MB), and the header hygiene every
//! request gets before any phase reads it:
//!
//! - exactly one Host, and a valid one (RFC 9112 §3.2); an absolute-form
//!   target or HTTP/2 `:authority` wins over it, and an HTTP/2 `host`
//!   field that disagrees with `:authority` is malformed (RFC 9113 §8.3.1);
//! - `Transfer-Encoding` other than one `chunked` is refused with 501
//!   (RFC 9112 §6.1);
//! - several `cookie` fields (HTTP/2 sends one per cookie) become one,
//!   joined with `"; "` (RFC 9113 §8.2.3); several `content-length` fields
//!   become one if they agree, else 400;
//! - client `x-pylon-*` headers are dropped, and header names with
//!   underscores unless the stage allows them (CGI/WSGI backends read
//!   `X_Pylon_Request_Id` as `X-Pylon-Request-Id`); underscore spellings of
//!   `x-pylon-*` always are.

use crate::error::GatewayError;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 10_240,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Size of the request line and headers as sent on HTTP/1.1.
fn header_bytes(parts: &Parts) -> usize {
    let line = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    line + parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum::<usize>()
}

/// The authority a request is routed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Authority {
    /// Lower-cased, without the port or a trailing dot: what routing matches.
    pub host: std::sync::Arc<str>,
    /// As the client addressed it, port included: what `X-Forwarded-Host`
    /// tells the backend.
    pub value: HeaderValue,
}

/// The authority the client addressed: the request target's (HTTP/2
/// `:authority`, or an absolute-form HTTP/1.1 target), else `Host`.
///
/// # Errors
/// [`GatewayError::MalformedRequest`]: no Host on HTTP/1.1, more than one,
/// one that is not a host (userinfo, bad characters), or an HTTP/2 `host`
/// that names another authority than `:authority`.
pub fn authority(parts: &Parts) -> Result<Authority, GatewayError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::MalformedRequest("Multiple Host headers"));
    }
    // The authority and the length of its host (found once: `host()`
    // searches the string on every call).
    let parse = |value: &[u8]| -> Result<(http::uri::Authority, usize), GatewayError> {
        let authority = http::uri::Authority::try_from(value)
            .map_err(|_| GatewayError::MalformedRequest("Invalid Host header"))?;
        // host [":" port], the port digits only (RFC 3986 §3.2.3): what
        // follows the host is the client's to choose, and it reaches
        // backends (X-Forwarded-Host).
        let host_len = authority.host().len();
        let port = &authority.as_str()[host_len..];
        let port_ok = port.is_empty()
            || port.strip_prefix(':').is_some_and(|p| {
                p.is_empty() || (p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
            });
        if authority.as_str().contains('@') || host_len == 0 || !port_ok {
            return Err(GatewayError::MalformedRequest("Invalid Host header"));
        }
        Ok((authority, host_len))
    };
    let (authority, host_len) = match (parts.uri.authority(), host_field) {
        (Some(target), field) => {
            let target = parse(target.as_str().as_bytes())?;
            // The target's authority is routed on (RFC 9112 §3.2.2), but a
            // Host that is not a host is still a 400 (§3.2).
            let field_authority = field.map(|f| parse(f.as_bytes())).transpose()?;
            if parts.version == http::Version::HTTP_2
                && let Some((field, _)) = &field_authority
                && !same_authority(field, &target.0)
            {
                return Err(GatewayError::MalformedRequest(
                    "The host header names another authority than :authority",
                ));
            }
            if parts.version == http::Version::HTTP_11 && field.is_none() {
                return Err(GatewayError::MalformedRequest("Missing Host header"));
            }
            target
        }
        (None, Some(field)) => parse(field.as_bytes())?,
        (None, None) => return Err(GatewayError::MalformedRequest("Missing or invalid Host header")),
    };
    // (No userinfo: `parse` refused it, so the host starts the authority.)
    let host = &authority.as_str()[..host_len];
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(GatewayError::MalformedRequest("Invalid Host header"));
    }
    let host: std::sync::Arc<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    };
    // The client's own field when it is what was parsed (no copy).
    let value = match host_field {
        Some(field) if parts.uri.authority().is_none() => field.clone(),
        _ => HeaderValue::from_str(authority.as_str())
            .map_err(|_| GatewayError::MalformedRequest("Invalid Host header"))?,
    };
    Ok(Authority { host, value })
}

/// Host (case-insensitive, trailing dot ignored) and port agree.
fn same_authority(a: &http::uri::Authority, b: &http::uri::Authority) -> bool {
    let host = |x: &http::uri::Authority| x.host().trim_end_matches('.').to_ascii_lowercase();
    host(a) == host(b) && a.port_u16() == b.port_u16()
}

/// Size, target, Host and framing, before anything reads the request;
/// joins cookie fields into one. The authority to route on.
///
/// # Errors
/// 431 for headers over the limit, 400 for a malformed request (see
/// [`authority`]), 501 for a transfer coding other than `chunked`.
pub fn check_headers(parts: &mut Parts, limits: &Limits) -> Result<Authority, GatewayError> {
    let size = header_bytes(parts);
    if size > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            size,
            limit: limits.max_header_bytes,
        });
    }
    if !parts.uri.path().starts_with('/') {
        return Err(GatewayError::MalformedRequest(
            "The request target must be a path",
        ));
    }
    check_transfer_coding(&parts.headers)?;
    one_content_length(&mut parts.headers)?;
    let authority = authority(parts)?;
    join_cookies(&mut parts.headers);
    Ok(authority)
}

/// Several `content-length` fields (HTTP/2 lets them through) become one
/// when they agree, and are malformed when they do not (RFC 9110 §8.6).
fn one_content_length(headers: &mut HeaderMap) -> Result<(), GatewayError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return Ok(());
    };
    let first = first.clone();
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| *v != first)
    {
        return Err(GatewayError::BadFraming("Conflicting Content-Length headers"));
    }
    headers.insert(header::CONTENT_LENGTH, first);
    Ok(())
}

/// Only `chunked`, once, is a transfer coding Pylon reads (RFC 9112 §6.1).
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), GatewayError> {
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    let codings = crate::headers::transfer_codings(headers);
    if codings.iter().all(|c| c == "chunked") {
        return if codings.len() == 1 {
            Ok(())
        } else {
            Err(GatewayError::BadFraming("chunked is applied more than once"))
        };
    }
    Err(GatewayError::UnsupportedTransferCoding(codings.join(", ")))
}

/// Several `cookie` fields become one, joined with `"; "`.
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Drops what only the gateway may say — `x-pylon-*` from the client, and
/// any underscore spelling of it — and header names with underscores unless
/// the stage allows them (`allow_underscores`). Even then an underscore
/// spelling of a header the request also has (`x_api_key` beside
/// `x-api-key`) or of one the gateway writes (`x-forwarded-*`) goes:
/// CGI-style backends read both as one, so the one the gateway checked or
/// wrote could be read as the other (mappings drop the twins of what they
/// set, [`crate::request::transform`]). Authorizers, mappings,
/// templates and backends see what is left.
pub fn drop_forbidden_headers(headers: &mut HeaderMap, allow_underscores: bool) {
    let doomed: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            if !name.contains('_') {
                return name.starts_with("x-pylon-");
            }
            let dashed = name.replace('_', "-");
            !allow_underscores
                || dashed.starts_with("x-pylon-")
                || dashed.starts_with("x-forwarded-")
                || headers.contains_key(dashed.as_str())
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Refuses a declared body over the limit; a body without a length is cut
/// while streaming ([`crate::integration`]).
pub fn check_declared_length(headers: &HeaderMap, limits: &Limits) -> Result<(), GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
    match declared {
        Some(None) => Err(GatewayError::MalformedRequest("Invalid Content-Length header")),
        Some(Some(length)) if length > limits.max_body_bytes => Err(GatewayError::BodyTooLarge {
            limit: limits.max_body_bytes,
        }),
        _ => Ok(()),
    }
}

/// Reads and discards a refused request's body for a while in the background,
/// so a client still sending it gets to read our answer instead of a reset
/// (nginx's lingering close). The connection closes afterwards.
pub fn linger(body: hyper::body::Incoming) {
    use http_body_util::BodyExt;
    const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
    const MAX_DISCARD: usize = 64 << 20;
    tokio::spawn(async move {
        let mut body = body;
        let mut discarded = 0usize;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(frame)) = body.frame().await {
                discarded += frame.data_ref().map_or(0, |d| d.len());
                if discarded > MAX_DISCARD {
                    break;
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(host: Option<&str>, extra: usize) -> Parts {
        let mut builder = http::Request::get("/prod/pets");
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        builder = builder.header("x-padding", "a".repeat(extra));
        let (parts, ()) = builder
            .body(())
            .map(http::Request::into_parts)
            .unwrap_or_else(|e| panic!("{e}"));
        parts
    }

    #[test]
    fn the_host_is_lower_cased_without_its_port() {
        let authority = check_headers(&mut parts(Some("PetStore.localhost:8080"), 0), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*authority.host, "petstore.localhost");
        assert_eq!(authority.value, "PetStore.localhost:8080");
        assert!(matches!(
            check_headers(&mut parts(None, 0), &Limits::default()),
            Err(GatewayError::MalformedRequest(_))
        ));
    }

    #[test]
    fn one_host_that_is_a_host() {
        for bad in [
            "a.localhost, b.localhost",
            "user@a.localhost",
            "a b",
            "",
            "a.localhost:evil.com",
            "a.localhost:99999",
            "a.localhost:[x]",
            "a.localhost:1:2",
            "a.localhost:+1",
            "a.localhost:-0",
        ] {
            assert!(authority(&parts(Some(bad), 0)).is_err(), "{bad:?}");
        }
        for good in [
            "a.localhost",
            "a.localhost:8080",
            "a.localhost:",
            "[::1]:80",
            "a.localhost:028080",
        ] {
            assert!(authority(&parts(Some(good), 0)).is_ok(), "{good:?}");
        }
        let mut two = parts(Some("a.localhost"), 0);
        two.headers
            .append(header::HOST, HeaderValue::from_static("b.localhost"));
        assert!(authority(&two).is_err());
    }

    #[test]
    fn beside_an_absolute_target_a_valid_host_is_ignored_and_an_invalid_one_refused() {
        let absolute = |host: &str| {
            let mut parts = parts(Some(host), 0);
            parts.uri = http::Uri::from_static("http://a.localhost/prod/pets");
            authority(&parts).map(|a| a.host)
        };
        assert_eq!(absolute("b.localhost:9").ok().as_deref(), Some("a.localhost"));
        for bad in ["a b", "user@b.localhost", "b.localhost:x", ""] {
            assert!(
                matches!(absolute(bad), Err(GatewayError::MalformedRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_one_chunked_is_a_transfer_coding() {
        let te = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            check_transfer_coding(&headers)
        };
        assert!(te("chunked").is_ok());
        assert!(te("Chunked").is_ok());
        assert!(matches!(
            te("gzip, chunked"),
            Err(GatewayError::UnsupportedTransferCoding(_))
        ));
        assert!(matches!(te("chunked, chunked"), Err(GatewayError::BadFraming(_))));
        assert!(check_transfer_coding(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn content_lengths_that_agree_become_one() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(one_content_length(&mut headers).is_ok());
        assert_eq!(headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(matches!(
            one_content_length(&mut headers),
            Err(GatewayError::BadFraming(_))
        ));
    }

    #[test]
    fn cookie_fields_join_and_underscores_go() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        headers.insert("x_pylon_request_id", HeaderValue::from_static("forged"));
        headers.insert("x_custom", HeaderValue::from_static("1"));
        join_cookies(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
        headers.insert("x-pylon-principal-id", HeaderValue::from_static("admin"));
        drop_forbidden_headers(&mut headers, true);
        assert!(!headers.contains_key("x-pylon-principal-id"));
        assert!(!headers.contains_key("x_pylon_request_id"));
        assert!(headers.contains_key("x_custom"));
        // Allowed, but not beside the header a backend would read it as.
        headers.insert("x-api-key", HeaderValue::from_static("checked"));
        headers.insert("x_api_key", HeaderValue::from_static("smuggled"));
        drop_forbidden_headers(&mut headers, true);
        assert!(!headers.contains_key("x_api_key"));
        assert_eq!(headers["x-api-key"], "checked");
        headers.insert("x_forwarded_host", HeaderValue::from_static("evil.example"));
        drop_forbidden_headers(&mut headers, true);
        assert!(!headers.contains_key("x_forwarded_host"), "the gateway writes it");
        drop_forbidden_headers(&mut headers, false);
        assert!(!headers.contains_key("x_custom"));
    }

    #[test]
    fn headers_over_the_limit_are_refused() {
        let limits = Limits::default();
        assert!(check_headers(&mut parts(Some("a.localhost"), 9_000), &limits).is_ok());
        assert!(matches!(
            check_headers(&mut parts(Some("a.localhost"), 10_300), &limits),
            Err(GatewayError::HeadersTooLarge { .. })
        ));
    }
}
