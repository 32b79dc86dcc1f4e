//! Limits and well-formedness, checked before anything else (AWS: request
//! line + headers 10,240 bytes; payload 10 MB).

use crate::error::GatewayError;
use http::request::Parts;
use http::{HeaderMap, header};

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

/// The host the client addressed, lower-cased, without its port or a
/// trailing dot. The request target's authority (HTTP/2 `:authority`, or an
/// absolute-form HTTP/1.1 target) wins over `Host`, as RFC 9112/9113 say.
pub fn host(parts: &Parts) -> Option<String> {
    let authority: http::uri::Authority = match parts.uri.authority() {
        Some(authority) => authority.clone(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?.parse().ok()?,
    };
    let host = authority.host();
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

pub fn check_headers(parts: &Parts, limits: &Limits) -> Result<String, GatewayError> {
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
    host(parts).ok_or(GatewayError::MalformedRequest("Missing or invalid Host header"))
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
        assert_eq!(
            host(&parts(Some("PetStore.localhost:8080"), 0)).as_deref(),
            Some("petstore.localhost")
        );
        assert!(matches!(
            check_headers(&parts(None, 0), &Limits::default()),
            Err(GatewayError::MalformedRequest(_))
        ));
    }

    #[test]
    fn headers_over_the_limit_are_refused() {
        let limits = Limits::default();
        assert!(check_headers(&parts(Some("a.localhost"), 9_000), &limits).is_ok());
        assert!(matches!(
            check_headers(&parts(Some("a.localhost"), 10_300), &limits),
            Err(GatewayError::HeadersTooLarge { .. })
        ));
    }
}
