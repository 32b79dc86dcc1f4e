//! The per-stage response cache shared by data-plane nodes through Redis:
//! three real nodes, a `redis-server` and an echo backend of the test's own.

use crate::support::{create_key, deploy, edit_stage, wait_applied};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::cache_settings::UnauthorizedInvalidation;
use pylon_proto::config::v1::{Api, ApiStageRef, CacheSettings, CanarySettings, UsagePlan};
use pylon_tests::gateway::{Backend, DataPlaneNode, HttpClient, JsonServer, Reply};
use pylon_tests::redis::RedisServer;
use pylon_tests::{Cluster, pylon_cli, serial};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

const HOST: &str = "cached.localhost";

fn cached_api(authorizer: &str) -> Api {
    let proxy =
        |path: &str| json!({"type": "HTTP_PROXY", "uri": format!("${{stageVariables.backend}}{path}")});
    serde_json::from_value(json!({
        "name": "cached",
        "authorizers": [{"name": "simple", "request": {"uri": authorizer, "identitySources": ["$request.header.x-token"], "timeoutMs": 1000}}],
        "routes": [
            {"method": "GET", "path": "/guarded", "integration": proxy("/guarded"),
             "authorization": {"type": "REQUEST", "authorizer": "simple"}},
            {"method": "GET", "path": "/items", "integration": proxy("/items")},
            {"method": "GET", "path": "/items/{id}", "integration": proxy("/items/{id}"),
             "cache": {"keyParameters": ["path.id"]}},
            {"method": "GET", "path": "/short", "integration": proxy("/short"), "cache": {"ttlSeconds": 1}},
            {"method": "GET", "path": "/never", "integration": proxy("/never"), "cache": {"ttlSeconds": 0}},
            {"method": "GET", "path": "/fresh", "integration": proxy("/fresh")},
            {"method": "GET", "path": "/slow", "integration": proxy("/slow/400")},
            {"method": "POST", "path": "/search", "integration": proxy("/search"), "cache": {"enabled": true}},
            {"method": "GET", "path": "/me", "integration": proxy("/me"), "authorization": {"apiKeyRequired": true}},
        ],
    }))
    .expect("API definition")
}

async fn send(
    client: &HttpClient,
    node: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path).header("host", HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let reply = client.send(node, request).await.expect("reply");
    assert!(
        reply.status.is_success() || reply.status == 403,
        "{method} {path}: {} {}",
        reply.status,
        reply.body
    );
    reply
}

/// The backend's request count in the answer: which call produced it.
fn n(reply: &Reply) -> u64 {
    reply.json()["n"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn nodes_share_one_cache_with_ttls_keys_invalidation_flush_canaries_and_encryption() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let key_file = dir.path().join("cache.key");
    std::fs::write(&key_file, "6b".repeat(32)).expect("key file");
    let flags = [
        format!("--redis={}", redis.url()),
        format!("--cache-key-file={}", key_file.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let nodes: Vec<DataPlaneNode> = (1..=3)
        .map(|i| {
            DataPlaneNode::start(
                dir.path(),
                &format!("dp-cache-{i}"),
                std::slice::from_ref(&endpoint),
                &flags,
            )
        })
        .collect();
    let [a, b, c] = [nodes[0].address(), nodes[1].address(), nodes[2].address()];
    let backend = Backend::start("cached").await;
    // A "simple" request authorizer: allows anyone, names no principal.
    let authorizer = JsonServer::start(|_, _| (200, json!({"isAuthorized": true}))).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let url = backend.url();
    let invalidator = create_key(&mut admin, "invalidator").await;
    let reader = create_key(&mut admin, "reader").await;
    let stages = [
        ("prod", UnauthorizedInvalidation::IgnoreWithWarning, false),
        ("strict", UnauthorizedInvalidation::FailWith403, false),
        ("quiet", UnauthorizedInvalidation::Ignore, false),
        ("sealed", UnauthorizedInvalidation::IgnoreWithWarning, true),
    ];
    let mut applied = 0;
    for (stage, strategy, encrypted) in stages {
        deploy(
            &mut admin,
            cached_api(&authorizer.url("/decide")),
            stage,
            &[("backend", url.as_str())],
        )
        .await
        .expect("deploy");
        applied = edit_stage(&mut admin, "cached", stage, |s| {
            s.cache = Some(CacheSettings {
                enabled: true,
                encrypted,
                unauthorized_invalidation: strategy as i32,
                invalidation_api_key_ids: vec![invalidator.0.clone()],
                ..Default::default()
            });
        })
        .await
        .expect("cache settings");
    }
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "cache-readers".into(),
                api_stages: ["prod", "strict", "quiet"]
                    .iter()
                    .map(|s| ApiStageRef {
                        api: "cached".into(),
                        stage: (*s).into(),
                        ..Default::default()
                    })
                    .collect(),
                api_key_ids: vec![invalidator.0.clone(), reader.0.clone()],
                ..Default::default()
            }),
        })
        .await
        .expect("plan");
    wait_applied(&mut admin, applied, 3).await;
    let client = HttpClient::default();
    let calls = || backend.requests.load(Ordering::Relaxed);

    // Filled by one node, served by the others.
    let first = send(&client, a, "GET", "/prod/items", &[]).await;
    assert_eq!(first.header("x-cache"), "Miss");
    for node in [b, c, a] {
        let again = send(&client, node, "GET", "/prod/items", &[]).await;
        assert_eq!(again.header("x-cache"), "Hit");
        assert_eq!(n(&again), n(&first), "the same stored answer");
    }
    assert_eq!(calls(), 1);

    // Key parameters: each id its own entry.
    let one = send(&client, a, "GET", "/prod/items/1", &[]).await;
    let two = send(&client, b, "GET", "/prod/items/2", &[]).await;
    assert_eq!((one.header("x-cache"), two.header("x-cache")), ("Miss", "Miss"));
    let one_again = send(&client, c, "GET", "/prod/items/1", &[]).await;
    assert_eq!((one_again.header("x-cache"), n(&one_again)), ("Hit", n(&one)));

    // A route's TTL: 1 s, then the backend again.
    assert_eq!(
        send(&client, a, "GET", "/prod/short", &[])
            .await
            .header("x-cache"),
        "Miss"
    );
    assert_eq!(
        send(&client, b, "GET", "/prod/short", &[])
            .await
            .header("x-cache"),
        "Hit"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        send(&client, b, "GET", "/prod/short", &[])
            .await
            .header("x-cache"),
        "Miss"
    );
    // TTL 0 disables caching for the route.
    let before = calls();
    for _ in 0..2 {
        assert_eq!(
            send(&client, a, "GET", "/prod/never", &[])
                .await
                .header("x-cache"),
            "Bypass"
        );
    }
    assert_eq!(calls() - before, 2);
    // The backend's no-store and private are respected.
    for directive in ["no-store", "private"] {
        let path = format!("/prod/fresh?cc={directive}");
        for _ in 0..2 {
            let reply = send(&client, a, "GET", &path, &[]).await;
            assert_eq!(reply.header("x-cache"), "Miss", "{directive} is never stored");
        }
    }
    // A non-GET route cached because it says so.
    assert_eq!(
        send(&client, a, "POST", "/prod/search", &[])
            .await
            .header("x-cache"),
        "Miss"
    );
    assert_eq!(
        send(&client, b, "POST", "/prod/search", &[])
            .await
            .header("x-cache"),
        "Hit"
    );

    // Principals do not share entries.
    let mine = send(&client, a, "GET", "/prod/me", &[("x-api-key", &invalidator.1)]).await;
    let theirs = send(&client, a, "GET", "/prod/me", &[("x-api-key", &reader.1)]).await;
    assert_eq!(
        (mine.header("x-cache"), theirs.header("x-cache")),
        ("Miss", "Miss")
    );
    let mine_again = send(&client, b, "GET", "/prod/me", &[("x-api-key", &invalidator.1)]).await;
    assert_eq!((mine_again.header("x-cache"), n(&mine_again)), ("Hit", n(&mine)));

    // An authorizer that names no principal: callers are told apart by the
    // credential it accepted.
    let ann = send(&client, a, "GET", "/prod/guarded", &[("x-token", "ann")]).await;
    let bob = send(&client, a, "GET", "/prod/guarded", &[("x-token", "bob")]).await;
    assert_eq!((ann.header("x-cache"), bob.header("x-cache")), ("Miss", "Miss"));
    let ann_again = send(&client, b, "GET", "/prod/guarded", &[("x-token", "ann")]).await;
    assert_eq!((ann_again.header("x-cache"), n(&ann_again)), ("Hit", n(&ann)));

    // An authorized max-age=0 refreshes the entry for every node.
    let refresh = [
        ("x-api-key", invalidator.1.as_str()),
        ("cache-control", "max-age=0"),
    ];
    let refreshed = send(&client, a, "GET", "/prod/me", &refresh).await;
    assert_eq!(refreshed.header("x-cache"), "Miss");
    assert!(n(&refreshed) > n(&mine));
    // Other nodes keep an entry in process for at most a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = send(&client, c, "GET", "/prod/me", &[("x-api-key", &invalidator.1)]).await;
    assert_eq!((seen.header("x-cache"), n(&seen)), ("Hit", n(&refreshed)));

    // An unauthorized one: the stage's strategy.
    let unauthorized = [("x-api-key", reader.1.as_str()), ("cache-control", "max-age=0")];
    let warned = send(&client, a, "GET", "/prod/me", &unauthorized).await;
    assert_eq!((warned.header("x-cache"), n(&warned)), ("Hit", n(&theirs)));
    assert!(
        warned.header("warning").starts_with("199 "),
        "{:?}",
        warned.headers
    );
    for stage in ["strict", "quiet"] {
        send(
            &client,
            a,
            "GET",
            &format!("/{stage}/me"),
            &[("x-api-key", &reader.1)],
        )
        .await;
    }
    let refused = send(&client, a, "GET", "/strict/me", &unauthorized).await;
    assert_eq!(refused.status, 403);
    let ignored = send(&client, a, "GET", "/quiet/me", &unauthorized).await;
    assert_eq!(
        (ignored.header("x-cache"), ignored.header("warning")),
        ("Hit", "")
    );

    // 50 concurrent misses for one key: one backend call.
    let before = calls();
    let replies =
        futures::future::join_all((0..50).map(|_| send(&client, b, "GET", "/prod/slow", &[]))).await;
    assert_eq!(calls() - before, 1, "one backend call for 50 concurrent misses");
    let misses = replies.iter().filter(|r| r.header("x-cache") == "Miss").count();
    assert_eq!(misses, 1);
    assert!(replies.iter().all(|r| n(r) == n(&replies[0])));

    // A flush empties the stage's cache on every node at once.
    let flushed =
        pylon_cli(&endpoint, &["cache", "flush", "cached", "--stage", "prod"]).expect("pylon cache flush");
    assert!(flushed.contains("flushed"), "{flushed}");
    let version = admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("config version")
        .into_inner()
        .version;
    wait_applied(&mut admin, version, 3).await;
    let after_flush = send(&client, c, "GET", "/prod/items", &[]).await;
    assert_eq!(
        after_flush.header("x-cache"),
        "Miss",
        "node C forgot the old entry"
    );
    assert!(n(&after_flush) > n(&first));
    for node in [a, b] {
        let reply = send(&client, node, "GET", "/prod/items", &[]).await;
        assert_eq!((reply.header("x-cache"), n(&reply)), ("Hit", n(&after_flush)));
    }

    // Encrypted entries: served by another node, unreadable in Redis.
    let sealed = send(&client, a, "GET", "/sealed/items", &[]).await;
    assert_eq!(sealed.header("x-cache"), "Miss");
    let sealed_again = send(&client, b, "GET", "/sealed/items", &[]).await;
    assert_eq!(
        (sealed_again.header("x-cache"), n(&sealed_again)),
        ("Hit", n(&sealed))
    );
    let stored = |pattern: &str| {
        let keys = redis.cli(&["--scan", "--pattern", pattern]).expect("scan");
        let key = keys
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no {pattern} in Redis"))
            .to_owned();
        redis.cli(&["GET", &key]).expect("GET")
    };
    let sealed_bytes = stored("pylon:{c:cached/sealed:*");
    assert!(
        !sealed_bytes.contains("\"backend\""),
        "sealed entries hide the body"
    );
    assert!(!sealed_bytes.contains("application/json"), "and the headers");
    assert!(
        stored("pylon:{c:cached/prod:*").contains("\"backend\""),
        "plain entries do not"
    );

    // A canary has its own cache namespace unless it uses the stage's.
    let canary = admin
        .create_deployment(CreateDeploymentRequest {
            api: "cached".into(),
            ..Default::default()
        })
        .await
        .expect("canary deployment")
        .into_inner()
        .id;
    for use_stage_cache in [false, true] {
        let applied = edit_stage(&mut admin, "cached", "prod", |s| {
            s.canary = Some(CanarySettings {
                deployment_id: canary.clone(),
                percent_traffic: 100.0,
                use_stage_cache,
                ..Default::default()
            });
        })
        .await
        .expect("canary");
        wait_applied(&mut admin, applied, 3).await;
        let reply = send(&client, a, "GET", "/prod/items", &[]).await;
        assert_eq!(reply.header("x-pylon-canary"), "true");
        if use_stage_cache {
            assert_eq!((reply.header("x-cache"), n(&reply)), ("Hit", n(&after_flush)));
        } else {
            assert_eq!(reply.header("x-cache"), "Miss", "the canary's own namespace");
            let again = send(&client, b, "GET", "/prod/items", &[]).await;
            assert_eq!((again.header("x-cache"), n(&again)), ("Hit", n(&reply)));
        }
    }
}
