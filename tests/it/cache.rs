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

/// With a port: every node is addressed as one load balancer's clients would.
const HOST: &str = "cached.localhost:443";

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
             "cache": {"keyParameters": ["path.id", "query.v"]}},
            {"method": "GET", "path": "/short", "integration": proxy("/short"), "cache": {"ttlSeconds": 1}},
            {"method": "GET", "path": "/never", "integration": proxy("/never"), "cache": {"ttlSeconds": 0}},
            {"method": "GET", "path": "/fresh", "integration": proxy("/fresh")},
            {"method": "GET", "path": "/slow", "integration": proxy("/slow/400")},
            {"method": "POST", "path": "/search", "integration": proxy("/search"), "cache": {"enabled": true}},
            {"method": "GET", "path": "/me", "integration": proxy("/me"), "authorization": {"apiKeyRequired": true}},
            {"method": "GET", "path": "/gone", "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/gone"},
             "cache": {"ttlSeconds": 0}},
            {"method": "GET", "path": "/typed", "integration": {
                "type": "HTTP", "uri": "${stageVariables.backend}/typed",
                "requestTemplates": {"application/json": "{\"typed\": true}"},
                "passthroughBehavior": "NEVER", "responseTemplate": "{\"status\": {{ response.status }}}"}},
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

/// Like [`send`], whatever the status.
async fn send_any(client: &HttpClient, node: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(path).header("host", HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    client.send(node, request).await.expect("reply")
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
        // The fields every answer carries are this answer's own, once each.
        for name in ["x-pylon-request-id", "x-pylon-deployment", "x-cache", "age"] {
            assert_eq!(again.headers.get_all(name).iter().count(), 1, "{name}");
        }
        assert_ne!(
            again.header("x-pylon-request-id"),
            first.header("x-pylon-request-id")
        );
        assert_eq!(again.header("x-pylon-request-id").len(), 36);
        assert_eq!(
            again.header("x-pylon-deployment"),
            first.header("x-pylon-deployment")
        );
        assert!(!first.header("x-pylon-deployment").is_empty());
    }
    assert_eq!(calls(), 1);

    // A hit says how long the answer has been held, on every node (RFC 9111 §4).
    assert_eq!(first.header("age"), "", "the backend's own answer has no Age");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let held = send(&client, c, "GET", "/prod/items", &[]).await;
    let age: u64 = held.header("age").parse().expect("a hit carries Age");
    assert!((1..=10).contains(&age), "Age {age} after a second in the cache");

    // Key parameters: each id its own entry.
    let one = send(&client, a, "GET", "/prod/items/1", &[]).await;
    let two = send(&client, b, "GET", "/prod/items/2", &[]).await;
    assert_eq!((one.header("x-cache"), two.header("x-cache")), ("Miss", "Miss"));
    let one_again = send(&client, c, "GET", "/prod/items/1", &[]).await;
    assert_eq!((one_again.header("x-cache"), n(&one_again)), ("Hit", n(&one)));
    // A query key parameter is keyed on the bytes the client sent, in its
    // order: what a backend reading the raw query tells apart, the cache does.
    for (first, other, shared) in [
        ("v=1&v=2", "v=2&v=1", false),
        ("v=%FF", "v=%EF%BF%BD", false),
        ("v=a+b", "v=a%20b", true),
    ] {
        let filled = send(&client, a, "GET", &format!("/prod/items/1?{first}"), &[]).await;
        assert_eq!(filled.header("x-cache"), "Miss", "{first}");
        let then = send(&client, b, "GET", &format!("/prod/items/1?{other}"), &[]).await;
        let expected = if shared { "Hit" } else { "Miss" };
        assert_eq!(then.header("x-cache"), expected, "{first} then {other}");
    }

    // A client that holds the stored answer gets a 304 from the cache
    // (RFC 9111 §4.3.2); the backend hears nothing.
    let tagged = "/prod/items/tagged?etag=%22v1%22&lm=Tue,%2001%20Dec%202026%2010:00:00%20GMT";
    let filled = send(&client, a, "GET", tagged, &[]).await;
    assert_eq!(
        (filled.header("x-cache"), filled.header("etag")),
        ("Miss", "\"v1\"")
    );
    let before = calls();
    let not_modified = send_any(&client, b, tagged, &[("if-none-match", "W/\"v0\", \"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(
        (not_modified.header("x-cache"), not_modified.header("etag")),
        ("Hit", "\"v1\"")
    );
    assert_eq!(
        (not_modified.body.as_str(), not_modified.header("content-type")),
        ("", "")
    );
    let unchanged = send_any(
        &client,
        c,
        tagged,
        &[("if-modified-since", "Tue, 01 Dec 2026 10:00:00 GMT")],
    )
    .await;
    assert_eq!(unchanged.status, 304);
    // Another version held: the whole stored answer.
    let other = send_any(&client, c, tagged, &[("if-none-match", "\"v0\"")]).await;
    assert_eq!((other.status.as_u16(), other.header("x-cache")), (200, "Hit"));
    assert_eq!(n(&other), n(&filled));
    assert_eq!(calls(), before);
    // A precondition only the backend can judge (a 412 is its to say)
    // passes the cache.
    let judged = send_any(&client, a, tagged, &[("if-match", "\"v0\"")]).await;
    assert_eq!(judged.header("x-cache"), "Bypass");
    assert_eq!(calls(), before + 1);

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
    // So is a private hidden in a line that is not ASCII text, which a
    // reader of the line's ASCII alone would skip.
    for directive in ["no-store", "private", "private,ext=%22caf%C3%A9%22"] {
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
    // On a route that asks for no key, the key presented still decides.
    let public = send(&client, a, "GET", "/prod/items", &refresh).await;
    assert_eq!(
        public.header("x-cache"),
        "Miss",
        "the invalidator refreshes a public route"
    );
    let not_allowed = send(&client, a, "GET", "/prod/items", &unauthorized).await;
    assert_eq!(
        (not_allowed.header("x-cache"), n(&not_allowed)),
        ("Hit", n(&public))
    );
    assert!(not_allowed.header("warning").starts_with("199 "));
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

    // Errors after the cache say what it did, warning included; refusals
    // of the request itself come before it, hit or miss alike.
    let gone = send_any(&client, a, "/prod/gone", &unauthorized).await;
    assert_eq!((gone.status.as_u16(), gone.header("x-cache")), (502, "Bypass"));
    assert!(gone.header("warning").starts_with("199 "), "{:?}", gone.headers);
    let json = [("content-type", "application/json")];
    assert_eq!(
        send(&client, a, "GET", "/prod/typed", &json)
            .await
            .header("x-cache"),
        "Miss"
    );
    assert_eq!(
        send(&client, a, "GET", "/prod/typed", &json)
            .await
            .header("x-cache"),
        "Hit"
    );
    let refused = send_any(&client, a, "/prod/typed", &[("content-type", "text/plain")]).await;
    assert_eq!((refused.status.as_u16(), refused.header("x-cache")), (415, ""));
    // Two keys at once are none: no refresh, the stage's warning.
    let both = [
        ("x-api-key", invalidator.1.as_str()),
        ("x-api-key", reader.1.as_str()),
        ("cache-control", "max-age=0"),
    ];
    let ambiguous = send(&client, a, "GET", "/prod/items", &both).await;
    assert_eq!(ambiguous.header("x-cache"), "Hit");
    assert!(ambiguous.header("warning").starts_with("199 "));

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

/// An API whose backend answers per caller by itself (it reads
/// `Authorization`, cookies and `Accept-Encoding`; Pylon does not
/// authenticate `/me`), and routes where a Pylon authorizer verified the
/// `Authorization` header first.
fn private_api(authorizer: &str) -> Api {
    let proxy =
        |path: &str| json!({"type": "HTTP_PROXY", "uri": format!("${{stageVariables.backend}}{path}")});
    let verified = json!({"type": "REQUEST", "authorizer": "bearer"});
    serde_json::from_value(json!({
        "name": "private",
        "authorizers": [{"name": "bearer", "request": {"uri": authorizer, "identitySources": ["$request.header.Authorization"], "timeoutMs": 1000}}],
        "routes": [
            {"method": "GET", "path": "/me", "integration": proxy("/me")},
            {"method": "GET", "path": "/public", "integration": proxy("/public")},
            {"method": "GET", "path": "/vary", "integration": proxy("/vary")},
            {"method": "GET", "path": "/prefs", "integration": proxy("/prefs")},
            {"method": "GET", "path": "/star", "integration": proxy("/star")},
            {"method": "GET", "path": "/stale", "integration": proxy("/stale")},
            {"method": "GET", "path": "/mapped", "integration": proxy("/mapped"),
             "requestParameters": {"overwrite:header.x-lang": "$request.querystring.lang"}},
            {"method": "GET", "path": "/raw-shared", "integration": proxy("/raw-shared"),
             "cache": {"shareAcrossPrincipals": true}},
            {"method": "GET", "path": "/verified-shared", "integration": proxy("/verified-shared"),
             "authorization": verified.clone(), "cache": {"shareAcrossPrincipals": true}},
            {"method": "GET", "path": "/verified", "integration": proxy("/verified"),
             "authorization": verified},
            {"method": "GET", "path": "/echoed", "integration": proxy("/echoed"),
             "responseParameters": {"overwrite:header.x-asked-from": "$request.header.origin",
                                    "overwrite:header.x-rid": "$context.requestId",
                                    "overwrite:header.x-seen-length": "$response.header.content-length",
                                    "overwrite:header.x-seen-cache": "$response.header.x-cache"}},
        ],
    }))
    .expect("API definition")
}

/// Who the backend says asked: the Authorization it received.
fn asked_by(reply: &Reply) -> String {
    reply.json()["headers"]["authorization"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn the_shared_cache_never_serves_one_callers_answer_to_another() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let flags = [format!("--redis={}", redis.url())];
    let [a, b] = ["dp-private-a", "dp-private-b"].map(|id| {
        DataPlaneNode::start(
            dir.path(),
            id,
            std::slice::from_ref(&endpoint),
            &[flags[0].as_str()],
        )
    });
    let (a, b) = (a.address(), b.address());
    let backend = Backend::start("private").await;
    // Allows any bearer and names every caller "user", as AWS's authorizer
    // blueprint does: callers are still told apart by their credential.
    let authorizer =
        JsonServer::start(|_, _| (200, json!({"isAuthorized": true, "principalId": "user"}))).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        private_api(&authorizer.url("/decide")),
        "prod",
        &[("backend", backend.url().as_str())],
    )
    .await
    .expect("deploy");
    let version = edit_stage(&mut admin, "private", "prod", |s| {
        s.cache = Some(CacheSettings {
            enabled: true,
            ..Default::default()
        });
    })
    .await
    .expect("cache on");
    wait_applied(&mut admin, version, 2).await;
    let client = HttpClient::default();
    let get = |node: SocketAddr, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        async move {
            // ("host" in `headers` replaces the usual one.)
            let host = headers
                .iter()
                .find(|(name, _)| *name == "host")
                .map_or("private.localhost:443", |(_, value)| *value);
            let mut request = Request::get(path).header("host", host);
            for (name, value) in headers.into_iter().filter(|(name, _)| *name != "host") {
                request = request.header(name, value);
            }
            let reply = client
                .send(node, request.body(Full::new(Bytes::new())).expect("request"))
                .await
                .expect("reply");
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
            reply
        }
    };
    const ALICE: (&str, &str) = ("authorization", "Bearer alice");
    const BOB: (&str, &str) = ("authorization", "Bearer bob");

    // A backend that authenticates by itself: a request with Authorization
    // is neither served from nor stored in the shared cache (RFC 9111 §3.5).
    let alice = get(a, "/prod/me", vec![ALICE]).await;
    assert_eq!(
        (alice.header("x-cache"), asked_by(&alice).as_str()),
        ("Bypass", "Bearer alice")
    );
    let bob = get(b, "/prod/me", vec![BOB]).await;
    assert_eq!(
        (bob.header("x-cache"), asked_by(&bob).as_str()),
        ("Bypass", "Bearer bob")
    );
    let anonymous = get(a, "/prod/me", vec![]).await;
    assert_eq!(
        (anonymous.header("x-cache"), asked_by(&anonymous).as_str()),
        ("Miss", "")
    );
    let anonymous_again = get(b, "/prod/me", vec![]).await;
    assert_eq!(anonymous_again.header("x-cache"), "Hit");
    // Another authority (a port the client picked) is another entry: what
    // the backend built from X-Forwarded-Host never reaches the others.
    let elsewhere = get(a, "/prod/me", vec![("host", "private.localhost:1337")]).await;
    assert_eq!(elsewhere.header("x-cache"), "Miss");
    assert_eq!(elsewhere.json()["x-forwarded-host"], "private.localhost:1337");
    let usual = get(b, "/prod/me", vec![]).await;
    assert_eq!((usual.header("x-cache"), n(&usual)), ("Hit", n(&anonymous)));
    let alice_again = get(b, "/prod/me", vec![ALICE]).await;
    assert_eq!(
        (alice_again.header("x-cache"), asked_by(&alice_again).as_str()),
        ("Bypass", "Bearer alice"),
        "an authorized caller is not served the anonymous answer either"
    );
    // Cookies likewise, unless the stage says its backends ignore them.
    let cookie = get(a, "/prod/me", vec![("cookie", "session=s1")]).await;
    assert_eq!(cookie.header("x-cache"), "Bypass");
    assert_eq!(cookie.json()["headers"]["cookie"], "session=s1");

    // Unless the answer says it may be shared: `public` (or s-maxage,
    // must-revalidate) stores it, and then serves it to anyone.
    let public = get(a, "/prod/public?cc=public,max-age=60", vec![ALICE]).await;
    assert_eq!(public.header("x-cache"), "Miss");
    let public_again = get(b, "/prod/public?cc=public,max-age=60", vec![BOB]).await;
    assert_eq!(
        (public_again.header("x-cache"), n(&public_again)),
        ("Hit", n(&public))
    );

    // shareAcrossPrincipals never shares across raw Authorization values...
    get(a, "/prod/raw-shared", vec![ALICE]).await;
    let raw = get(b, "/prod/raw-shared", vec![BOB]).await;
    assert_eq!(
        (raw.header("x-cache"), asked_by(&raw).as_str()),
        ("Bypass", "Bearer bob")
    );
    // ...only across identities a Pylon authorizer established.
    let first = get(a, "/prod/verified-shared", vec![ALICE]).await;
    assert_eq!(first.header("x-cache"), "Miss");
    let shared = get(b, "/prod/verified-shared", vec![BOB]).await;
    assert_eq!((shared.header("x-cache"), n(&shared)), ("Hit", n(&first)));
    // Without it, each caller has its own entry — though the authorizer
    // names everyone "user".
    let mine = get(a, "/prod/verified", vec![ALICE]).await;
    let theirs = get(b, "/prod/verified", vec![BOB]).await;
    assert_eq!(
        (mine.header("x-cache"), theirs.header("x-cache")),
        ("Miss", "Miss")
    );
    let mine_again = get(b, "/prod/verified", vec![ALICE]).await;
    assert_eq!(
        (mine_again.header("x-cache"), asked_by(&mine_again).as_str()),
        ("Hit", "Bearer alice")
    );

    // Vary: the listed request headers select the stored variant, on every node.
    let path = "/prod/vary?vary=Accept-Encoding";
    let gzip = get(a, path, vec![("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.header("x-cache"), "Miss");
    let plain = get(b, path, vec![]).await;
    assert_eq!(plain.header("x-cache"), "Miss", "not the gzip variant");
    assert!(plain.json()["headers"]["accept-encoding"].is_null());
    let plain_again = get(a, path, vec![]).await;
    assert_eq!(
        (plain_again.header("x-cache"), n(&plain_again)),
        ("Hit", n(&plain))
    );
    let gzip_again = get(b, path, vec![("accept-encoding", "gzip")]).await;
    assert_eq!((gzip_again.header("x-cache"), n(&gzip_again)), ("Hit", n(&gzip)));
    // Vary: * is never stored.
    for _ in 0..2 {
        let star = get(a, "/prod/star?vary=*", vec![]).await;
        assert_ne!(star.header("x-cache"), "Hit");
    }

    // A header a mapping sets selects the variant by its mapped value: the
    // backend varies on what it was told, not on what the client sent.
    let de = get(a, "/prod/mapped?vary=X-Lang&lang=de", vec![]).await;
    assert_eq!(de.json()["headers"]["x-lang"], "de");
    let fr = get(b, "/prod/mapped?vary=X-Lang&lang=fr", vec![("x-lang", "de")]).await;
    assert_eq!(
        (fr.header("x-cache"), fr.json()["headers"]["x-lang"].as_str()),
        ("Miss", Some("fr"))
    );
    let de_again = get(b, "/prod/mapped?vary=X-Lang&lang=de", vec![]).await;
    assert_eq!((de_again.header("x-cache"), n(&de_again)), ("Hit", n(&de)));

    // An answer that may be shared but is stale at once is not shared.
    let stale = get(a, "/prod/stale?cc=max-age=0,must-revalidate", vec![ALICE]).await;
    assert_eq!(stale.header("x-cache"), "Bypass");

    // A GET with a body is no key's: it neither poisons nor is served.
    let fat = client
        .send(
            a,
            Request::get("/prod/star")
                .header("host", "private.localhost:443")
                .body(Full::new(Bytes::from_static(b"poison=1")))
                .expect("request"),
        )
        .await
        .expect("reply");
    assert_eq!(fat.header("x-cache"), "Bypass");
    let plain = get(b, "/prod/star", vec![]).await;
    assert!(!plain.body.contains("poison"), "{}", plain.body);

    // A stage whose backends do not answer per cookie shares those requests.
    let version = edit_stage(&mut admin, "private", "prod", |s| {
        if let Some(cache) = s.cache.as_mut() {
            cache.share_requests_with_cookies = true;
        }
    })
    .await
    .expect("cookies shared");
    wait_applied(&mut admin, version, 2).await;
    let first = get(a, "/prod/prefs", vec![("cookie", "theme=dark")]).await;
    let second = get(b, "/prod/prefs", vec![("cookie", "theme=light")]).await;
    assert_eq!(
        (first.header("x-cache"), second.header("x-cache")),
        ("Miss", "Hit")
    );

    // What a response mapping reads from the request is each caller's own,
    // on a hit too: the cache holds the backend's answer, not the mapped one.
    let first = get(a, "/prod/echoed", vec![("origin", "https://one.example")]).await;
    assert_eq!(
        (first.header("x-cache"), first.header("x-asked-from")),
        ("Miss", "https://one.example")
    );
    let second = get(b, "/prod/echoed", vec![("origin", "https://two.example")]).await;
    assert_eq!(
        (second.header("x-cache"), second.header("x-asked-from")),
        ("Hit", "https://two.example")
    );
    assert_eq!(n(&second), n(&first), "the backend was asked once");
    assert_eq!(second.header("x-rid"), second.header("x-pylon-request-id"));
    // The mappings see the backend's answer on a hit as on the miss, not
    // what the cache says of it.
    assert_eq!(second.header("x-seen-length"), first.header("x-seen-length"));
    assert!(!second.header("x-seen-length").is_empty());
    assert_eq!(
        (first.header("x-seen-cache"), second.header("x-seen-cache")),
        ("", "")
    );
}

/// Two clusters (staging and production, say) that share one Redis and name
/// everything alike: neither reads the other's cache entries nor draws from
/// the other's throttle buckets.
#[tokio::test]
async fn two_clusters_sharing_one_redis_share_neither_entries_nor_limits() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let flags = [format!("--redis={}", redis.url())];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut sides = Vec::new();
    for name in ["staging", "production"] {
        let cluster = Cluster::start(1).await;
        let endpoint = cluster.nodes[0].endpoint();
        let node = DataPlaneNode::start(
            dir.path(),
            &format!("dp-{name}"),
            std::slice::from_ref(&endpoint),
            &flags,
        );
        let backend = Backend::start(name).await;
        let mut admin = cluster.nodes[0].admin().await.expect("admin");
        let url = backend.url();
        deploy(
            &mut admin,
            cached_api("http://127.0.0.1:9/unused"),
            "prod",
            &[("backend", url.as_str())],
        )
        .await
        .expect("deploy");
        let applied = edit_stage(&mut admin, "cached", "prod", |s| {
            s.cache = Some(CacheSettings {
                enabled: true,
                ..Default::default()
            });
            // Two requests a day per route, whichever node asks.
            s.throttle = Some(pylon_proto::config::v1::ThrottleSettings {
                rate_limit: 0.001,
                burst_limit: 2,
            });
        })
        .await
        .expect("stage settings");
        wait_applied(&mut admin, applied, 1).await;
        let id = admin
            .get_cluster_status(GetClusterStatusRequest::default())
            .await
            .expect("cluster status")
            .into_inner()
            .cluster_id;
        sides.push((cluster, node, backend, id));
    }
    assert_ne!(sides[0].3, sides[1].3, "two clusters, two ids");
    let client = HttpClient::default();
    let (staging, production) = (sides[0].1.address(), sides[1].1.address());

    // Staging fills its entry; production's first request is its own miss.
    let filled = send(&client, staging, "GET", "/prod/items", &[]).await;
    assert_eq!(
        (filled.header("x-cache"), filled.json()["backend"].as_str()),
        ("Miss", Some("staging"))
    );
    let hit = send(&client, staging, "GET", "/prod/items", &[]).await;
    assert_eq!(hit.header("x-cache"), "Hit");
    let own = send(&client, production, "GET", "/prod/items", &[]).await;
    assert_eq!(
        (own.header("x-cache"), own.json()["backend"].as_str()),
        ("Miss", Some("production")),
        "production never sees staging's answer"
    );

    // Staging spends its two requests of /fresh; production still has its own.
    let fresh = |node| {
        let client = client.clone();
        async move {
            let request = Request::get("/prod/fresh")
                .header("host", HOST)
                .body(Full::new(Bytes::new()))
                .expect("request");
            client.send(node, request).await.expect("reply").status.as_u16()
        }
    };
    let spent = [fresh(staging).await, fresh(staging).await, fresh(staging).await];
    assert_eq!(spent, [200, 200, 429], "staging's bucket");
    assert_eq!(fresh(production).await, 200, "production's bucket is its own");
}
