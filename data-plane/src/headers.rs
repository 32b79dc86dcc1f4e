//! Header rules both directions share (a leaf: it depends on nothing of
//! the data plane): hop-by-hop headers (RFC 9110 §7.6.1), transfer
//! codings (RFC 9112 §6.1) and a body's media type (RFC 9110 §8.3).

use http::header::{self, HeaderMap, HeaderName};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The media type of a message's body: its `Content-Type` without
/// parameters, lower-case; `Ok(None)` without the field.
///
/// # Errors
/// The field is on more than one line (it is a singleton, RFC 9110 §8.3),
/// is not ASCII text or names no media type: the body's type is unknown, and nothing may be
/// chosen by one reading of it while the backend makes another.
pub fn media_type(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let mut lines = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(line) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err("several Content-Type lines");
    }
    let text = line
        .to_str()
        .map_err(|_| "a Content-Type that is not ASCII text")?;
    let media_type = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media_type.is_empty() {
        return Err("a Content-Type without a media type");
    }
    Ok(Some(media_type))
}

/// The header names the Connection header lists (hop-by-hop for this
/// hop), as written (compare them case-insensitively).
pub fn names_in_connection(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// Whether `name` is a hop-by-hop field (RFC 9110 §7.6.1) or `Upgrade`,
/// which [`strip_hop_by_hop`] removes (the names `Connection` lists aside).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || *name == header::UPGRADE
}

/// Removes hop-by-hop headers, including those the Connection header names.
/// `Upgrade` goes too: WebSockets are a separate API type.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present finds the few to remove (most
    // messages carry none, or only `Connection`); removing each of the nine
    // blindly would hash every name.
    let present: smallvec::SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    // The Connection fields leave first; each name they list goes after
    // (removal by name needs no copy of it).
    if let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        let listed: smallvec::SmallVec<[http::HeaderValue; 2]> = entry.remove_entry_mult().1.collect();
        for value in &listed {
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',') {
                headers.remove(name.trim());
            }
        }
    }
    for name in present.iter().filter(|name| **name != header::CONNECTION) {
        headers.remove(name);
    }
}

/// The transfer codings of a message, lower-cased, in order.
pub fn transfer_codings(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, keep-alive"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn transfer_codings_are_read_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("GZip ,"));
        headers.append(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(transfer_codings(&headers), ["gzip", "chunked"]);
    }
}
