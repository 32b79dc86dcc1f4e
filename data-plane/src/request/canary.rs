//! Canary split: `percent` of a stage's requests go to the canary deployment.
//! With a sticky key the side is a stable hash of the client's key, so one
//! client stays on one side on every node; without one (or when the request
//! lacks the key) each request is drawn at random.

use crate::config::{CompiledStage, StickyKey, Target};
use http::request::Parts;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;

pub fn pick(stage: &CompiledStage, parts: &Parts, client: IpAddr) -> Arc<Target> {
    let Some(canary) = &stage.canary else {
        return stage.main.clone();
    };
    // Basis points, so 0.01 % steps are honoured.
    let threshold = (canary.percent * 100.0).round() as u64;
    let bucket = canary
        .sticky
        .as_ref()
        .and_then(|key| sticky_value(key, parts, client))
        .map(|value| {
            let digest = Sha256::new()
                .chain_update(stage.api.as_bytes())
                .chain_update([0])
                .chain_update(stage.name.as_bytes())
                .chain_update([0])
                .chain_update(value.as_bytes())
                .finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(first) % 10_000
        })
        .unwrap_or_else(|| rand::random_range(0..10_000));
    if bucket < threshold {
        canary.target.clone()
    } else {
        stage.main.clone()
    }
}

fn sticky_value(key: &StickyKey, parts: &Parts, client: IpAddr) -> Option<String> {
    match key {
        StickyKey::SourceIp => Some(client.to_string()),
        // The bytes as they are (UTF-8 or not): any value keeps its side.
        StickyKey::Header(name) => {
            Some(String::from_utf8_lossy(parts.headers.get(name)?.as_bytes()).into_owned())
        }
        // Decoded, as `$request.querystring.NAME` reads it: `al%69ce` is
        // `alice`.
        StickyKey::Query(name) => form_urlencoded::parse(parts.uri.query()?.as_bytes())
            .find_map(|(k, v)| (k == name.as_str()).then(|| v.into_owned())),
        StickyKey::Cookie(name) => parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .flat_map(|v| v.split(';').map(str::to_owned).collect::<Vec<_>>())
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.to_owned())
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut request = http::Request::builder().uri(uri);
        for (name, value) in headers {
            let value = http::HeaderValue::from_bytes(value).expect("a header value");
            request = request.header(*name, value);
        }
        request.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn a_sticky_key_reads_the_value_as_the_mappings_do() {
        let client = IpAddr::from([127, 0, 0, 1]);
        let query = StickyKey::Query("u".into());
        assert_eq!(
            sticky_value(&query, &parts("/?u=al%69ce", &[]), client),
            sticky_value(&query, &parts("/?u=alice", &[]), client),
            "one client however it encodes its key"
        );
        let header = StickyKey::Header(http::HeaderName::from_static("x-user"));
        let jose = parts("/", &[("x-user", "José".as_bytes())]);
        assert_eq!(sticky_value(&header, &jose, client).as_deref(), Some("José"));
        let cookie = StickyKey::Cookie("sid".into());
        let cookies = parts("/", &[("cookie", "name=José; sid=abc".as_bytes())]);
        assert_eq!(sticky_value(&cookie, &cookies, client).as_deref(), Some("abc"));
    }
}
