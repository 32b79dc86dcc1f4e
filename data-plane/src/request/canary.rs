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
        StickyKey::Query(name) => parts.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        }),
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
