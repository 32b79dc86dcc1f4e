//! Throttling and quotas shared by data-plane nodes through Redis: three
//! real nodes and a `redis-server` of the test's own, all on loopback.

use crate::support::{create_key, deploy, edit_stage, wait_applied};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::stage::SharedStateFailure;
use pylon_proto::config::v1::{Api, ApiStageRef, Quota, ThrottleSettings, UsagePlan, quota};
use pylon_tests::gateway::{DataPlaneNode, HttpClient, Reply};
use pylon_tests::redis::{RedisCluster, RedisSentinel, RedisServer};
use pylon_tests::{Cluster, eventually, free_port, serial, spawn_pylon};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// With a port: every node is addressed as one load balancer's clients
/// would (the cache keys on the authority).
const HOST: &str = "metered.localhost:443";

fn metered_api() -> Api {
    let mock = json!({"type": "MOCK", "mock": {"statusCode": 200, "body": "{\"ok\":true}"}});
    serde_json::from_value(json!({
        "name": "metered",
        "routes": [
            {"method": "GET", "path": "/open", "integration": mock},
            {"method": "GET", "path": "/keyed", "integration": mock, "authorization": {"apiKeyRequired": true}},
            {"method": "GET", "path": "/counted", "integration": mock, "authorization": {"apiKeyRequired": true}},
        ],
    }))
    .expect("API definition")
}

async fn get(client: &HttpClient, node: SocketAddr, path: &str, key: Option<&str>) -> Reply {
    let mut request = Request::get(path).header("host", HOST);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    client.send(node, request).await.expect("reply")
}

/// What a paced load admitted.
struct Load {
    admitted: u64,
    throttled: u64,
    other: u64,
    elapsed: Duration,
}

/// Offers `rate_per_node` requests a second to each node for `duration`,
/// without waiting for answers before sending the next (an open-loop load).
async fn offer(
    client: &HttpClient,
    nodes: &[SocketAddr],
    path: &'static str,
    key: Option<&str>,
    rate_per_node: f64,
    duration: Duration,
) -> Load {
    let (admitted, throttled, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let mut senders = Vec::new();
    for &node in nodes {
        let (client, key) = (client.clone(), key.map(str::to_owned));
        let (admitted, throttled, other) = (admitted.clone(), throttled.clone(), other.clone());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_node));
            let mut inflight = Vec::new();
            while start.elapsed() < duration {
                tick.tick().await;
                let (client, key) = (client.clone(), key.clone());
                let (admitted, throttled, other) = (admitted.clone(), throttled.clone(), other.clone());
                inflight.push(tokio::spawn(async move {
                    let reply = get(&client, node, path, key.as_deref()).await;
                    match reply.status.as_u16() {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => {
                            assert!(
                                !reply.header("retry-after").is_empty(),
                                "a 429 says when to retry"
                            );
                            throttled.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }));
            }
            for request in inflight {
                request.await.expect("request task");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    Load {
        admitted: admitted.load(Ordering::Relaxed),
        throttled: throttled.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
        elapsed: duration,
    }
}

fn assert_within_5_percent(what: &str, load: &Load, rate: f64, burst: u32) {
    let expected = f64::from(burst) + rate * load.elapsed.as_secs_f64();
    let error = (load.admitted as f64 - expected) / expected;
    println!(
        "{what}: admitted {} of {} offered; expected {expected:.0} (burst {burst} + {rate} rps × {:.1} s); error {:+.1} %",
        load.admitted,
        load.admitted + load.throttled + load.other,
        load.elapsed.as_secs_f64(),
        error * 100.0
    );
    assert_eq!(load.other, 0, "{what}: every answer is 200 or 429");
    assert!(
        error.abs() <= 0.05,
        "{what}: admitted {} vs expected {expected:.0}",
        load.admitted
    );
}

#[tokio::test]
async fn three_nodes_share_stage_key_and_quota_limits_through_redis() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let redis_flag = format!("--redis={}", redis.url());
    let cluster = Cluster::start_with(1, &[redis_flag.as_str()]).await;
    let endpoint = cluster.nodes[0].endpoint();
    let nodes: Vec<DataPlaneNode> = (1..=3)
        .map(|i| {
            DataPlaneNode::start(
                dir.path(),
                &format!("dp-limits-{i}"),
                std::slice::from_ref(&endpoint),
                &[redis_flag.as_str()],
            )
        })
        .collect();
    let addresses: Vec<SocketAddr> = nodes.iter().map(DataPlaneNode::address).collect();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(&mut admin, metered_api(), "prod", &[])
        .await
        .expect("deploy");

    // The stage: 100 rps, burst 10, on GET /open.
    let (stage_rate, stage_burst) = (100.0, 10);
    edit_stage(&mut admin, "metered", "prod", |stage| {
        stage.route_throttle.insert(
            "GET /open".into(),
            ThrottleSettings {
                rate_limit: stage_rate,
                burst_limit: stage_burst,
            },
        );
    })
    .await
    .expect("stage throttle");
    // A plan throttling its key to 40 rps (burst 5), another with a quota of 200 a day.
    let (gold, metered) = (
        create_key(&mut admin, "gold-key").await,
        create_key(&mut admin, "metered-key").await,
    );
    let plan = |name: &str, key: &str| UsagePlan {
        name: name.into(),
        api_stages: vec![ApiStageRef {
            api: "metered".into(),
            stage: "prod".into(),
            ..Default::default()
        }],
        api_key_ids: vec![key.to_owned()],
        ..Default::default()
    };
    let (key_rate, key_burst) = (40.0, 5);
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                throttle: Some(ThrottleSettings {
                    rate_limit: key_rate,
                    burst_limit: key_burst,
                }),
                ..plan("gold", &gold.0)
            }),
        })
        .await
        .expect("gold plan");
    let applied = admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                quota: Some(Quota {
                    limit: 200,
                    period: quota::Period::Day as i32,
                    offset: 0,
                }),
                ..plan("metered", &metered.0)
            }),
        })
        .await
        .expect("metered plan")
        .into_inner()
        .revision;
    wait_applied(&mut admin, applied, 3).await;
    let client = HttpClient::default();

    // The stage limit, offered 3× over 4 s across the three nodes.
    redis.cli(&["CONFIG", "RESETSTAT"]).expect("resetstat");
    let load = offer(
        &client,
        &addresses,
        "/prod/open",
        None,
        100.0,
        Duration::from_secs(4),
    )
    .await;
    assert_within_5_percent("stage limit over 3 nodes", &load, stage_rate, stage_burst);
    let offered = load.admitted + load.throttled;
    let scripts: u64 = redis
        .command_calls()
        .expect("commandstats")
        .iter()
        .filter(|(name, _)| name.starts_with("eval"))
        .map(|(_, calls)| calls)
        .sum();
    println!(
        "Redis script calls: {scripts} for {offered} requests ({:.3} per request)",
        scripts as f64 / offered as f64
    );
    assert!(scripts < offered, "fewer than one Redis call per request");

    // The key's plan limit, the same way.
    let load = offer(
        &client,
        &addresses,
        "/prod/keyed",
        Some(&gold.1),
        40.0,
        Duration::from_secs(4),
    )
    .await;
    assert_within_5_percent("usage-plan key limit over 3 nodes", &load, key_rate, key_burst);

    // The window refills: after a pause, both are admitted again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (i, node) in addresses.iter().enumerate() {
        assert_eq!(
            get(&client, *node, "/prod/open", None).await.status,
            200,
            "node {i} after refill"
        );
        assert_eq!(
            get(&client, *node, "/prod/keyed", Some(&gold.1)).await.status,
            200
        );
    }

    // The quota: round robin over the nodes until every one refuses; exactly 200 pass.
    let (mut admitted, mut refusals_in_a_row, mut sent) = (0, 0, 0);
    while refusals_in_a_row < 3 && sent < 400 {
        let reply = get(&client, addresses[sent % 3], "/prod/counted", Some(&metered.1)).await;
        sent += 1;
        match reply.status.as_u16() {
            200 => {
                admitted += 1;
                refusals_in_a_row = 0;
            }
            429 => {
                assert_eq!(reply.header("x-pylon-error-type"), "QUOTA_EXCEEDED");
                let retry: u64 = reply.header("retry-after").parse().expect("Retry-After seconds");
                assert!(
                    (1..=86_400).contains(&retry),
                    "retry after the period ends: {retry}"
                );
                refusals_in_a_row += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(admitted, 200, "the quota admits exactly its limit across nodes");
    let usage = admin
        .get_usage(GetUsageRequest {
            usage_plan: "metered".into(),
            api_key_id: String::new(),
        })
        .await
        .expect("GetUsage")
        .into_inner();
    assert_eq!(
        (usage.keys[0].used, usage.keys[0].remaining, usage.limit),
        (200, 0, 200)
    );
    // Reset: the period starts over and every node admits again within a second or so.
    admin
        .reset_usage(ResetUsageRequest {
            usage_plan: "metered".into(),
            api_key_id: metered.0.clone(),
        })
        .await
        .expect("ResetUsage");
    let audit = crate::support::audit_records(&mut admin).await;
    assert_eq!(
        audit.first().map(|r| r.method.as_str()),
        Some("ResetUsage"),
        "audited"
    );
    for node in &addresses {
        eventually("the quota reset seen", Duration::from_secs(5), || async {
            (get(&client, *node, "/prod/counted", Some(&metered.1))
                .await
                .status
                == 200)
                .then_some(())
        })
        .await;
    }
    let usage = admin
        .get_usage(GetUsageRequest {
            usage_plan: "metered".into(),
            api_key_id: metered.0.clone(),
        })
        .await
        .expect("GetUsage")
        .into_inner();
    assert!(
        (3..=3 + 3 * 32).contains(&usage.keys[0].used),
        "after the reset: the three requests, and at most a lease per node: {}",
        usage.keys[0].used
    );
    for node in &nodes {
        assert!(
            !node.log_text().contains("shared limits unavailable"),
            "no node fell back to local limits"
        );
    }
}

#[tokio::test]
async fn a_redis_outage_fails_open_or_closed_per_stage_and_limits_resume() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisServer::start(dir.path()).expect("redis");
    let redis_flag = format!("--redis={}", redis.url());
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let node = DataPlaneNode::start(dir.path(), "dp-outage", &[endpoint], &[redis_flag.as_str()]);
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(&mut admin, metered_api(), "open", &[])
        .await
        .expect("deploy open");
    deploy(&mut admin, metered_api(), "closed", &[])
        .await
        .expect("deploy closed");
    edit_stage(&mut admin, "metered", "open", |stage| {
        stage.throttle = Some(ThrottleSettings {
            rate_limit: 1.0,
            burst_limit: 3,
        });
    })
    .await
    .expect("open stage");
    let applied = edit_stage(&mut admin, "metered", "closed", |stage| {
        stage.throttle = Some(ThrottleSettings {
            rate_limit: 1000.0,
            burst_limit: 1000,
        });
        stage.set_shared_state_failure(SharedStateFailure::FailClosed);
    })
    .await
    .expect("closed stage");
    wait_applied(&mut admin, applied, 1).await;
    let client = HttpClient::default();
    let dp = node.address();
    let statuses = |path: &'static str, n: usize| {
        let client = client.clone();
        async move {
            let mut statuses = Vec::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..n {
                let started = Instant::now();
                statuses.push(get(&client, dp, path, None).await.status.as_u16());
                slowest = slowest.max(started.elapsed());
            }
            (statuses, slowest)
        }
    };

    // Redis up: the shared bucket of "open" admits its burst of 3.
    let (seen, _) = statuses("/open/open", 5).await;
    assert_eq!(seen, [200, 200, 200, 429, 429]);
    assert_eq!(statuses("/closed/open", 3).await.0, [200, 200, 200]);

    // Kill Redis while a load runs on the fail-closed stage: every request
    // still completes promptly (200 before, 503 after), none hangs.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(1500) {
                let sent = Instant::now();
                let status = get(&client, dp, "/closed/open", None).await.status.as_u16();
                seen.push((status, sent.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    let seen = load.await.expect("load");
    let slowest = seen.iter().map(|(_, took)| *took).max().unwrap_or_default();
    assert!(seen.iter().all(|(s, _)| *s == 200 || *s == 503), "{seen:?}");
    assert_eq!(seen.first().map(|(s, _)| *s), Some(200));
    assert_eq!(seen.last().map(|(s, _)| *s), Some(503));
    assert!(
        slowest < Duration::from_millis(500),
        "slowest answer during the outage {slowest:?}"
    );
    // Past the node's own memory of Redis's last "empty" (up to 1 s).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Fail-open: the node enforces the stage's limit alone (a fresh local
    // bucket of 3), and no request waits on the dead Redis.
    let (seen, slowest) = statuses("/open/open", 8).await;
    assert_eq!(seen.iter().filter(|s| **s == 200).count(), 3, "{seen:?}");
    assert!(seen.iter().all(|s| *s == 200 || *s == 429), "{seen:?}");
    assert!(slowest < Duration::from_millis(500), "slowest answer {slowest:?}");
    // Fail-closed: 503, just as fast.
    let (seen, slowest) = statuses("/closed/open", 5).await;
    assert_eq!(seen, [503; 5]);
    assert!(slowest < Duration::from_millis(500), "slowest answer {slowest:?}");
    assert!(
        node.log_text().contains("shared limits unavailable"),
        "the fallback is logged"
    );

    // Redis back (empty): shared limits resume without restarting the node.
    redis.restart().expect("redis restart");
    eventually(
        "fail-closed stage admits again",
        Duration::from_secs(10),
        || async { (get(&client, dp, "/closed/open", None).await.status == 200).then_some(()) },
    )
    .await;
    let keys = redis.cli(&["--scan", "--pattern", "pylon:*"]).expect("scan");
    assert!(
        keys.contains("s:metered/closed:GET /open"),
        "the bucket lives in Redis again: {keys}"
    );
    assert!(
        node.log_text().contains("Redis answers again"),
        "the recovery is logged"
    );
}

#[tokio::test]
async fn quota_periods_are_computed_alike_in_redis_and_in_rust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path()).expect("redis");
    let script = format!(
        "{}\nlocal out = {{}}\nfor day = tonumber(ARGV[1]), tonumber(ARGV[2]) do\n  local s, e = period(day, tonumber(ARGV[3]), tonumber(ARGV[4]))\n  out[#out + 1] = s\n  out[#out + 1] = e\nend\nreturn table.concat(out, ',')",
        pylon_common::quota::PERIOD_LUA
    );
    let (first, last) = (
        pylon_common::quota::days_from_civil(2024, 1, 1),
        pylon_common::quota::days_from_civil(2029, 12, 31),
    );
    use pylon_proto::config::v1::quota::Period;
    for (kind, period) in [(1, Period::Day), (2, Period::Week), (3, Period::Month)] {
        for offset in [0u32, 3, 6, 27] {
            if (period == Period::Week && offset > 6) || (period == Period::Day && offset > 0) {
                continue;
            }
            let answer = redis
                .cli(&[
                    "EVAL",
                    &script,
                    "0",
                    &first.to_string(),
                    &last.to_string(),
                    &kind.to_string(),
                    &offset.to_string(),
                ])
                .expect("EVAL");
            let from_redis: Vec<i64> = answer
                .trim()
                .split(',')
                .map(|n| n.parse().expect("number"))
                .collect();
            let from_rust: Vec<i64> = (first..=last)
                .flat_map(|day| {
                    let w = pylon_common::quota::window(period, offset, day);
                    [w.start, w.end]
                })
                .collect();
            assert_eq!(from_redis, from_rust, "{period:?} offset {offset}");
        }
    }
}

#[tokio::test]
async fn pylon_dev_keeps_limits_quotas_and_the_cache_in_process() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin_port, raft) = (free_port(), free_port(), free_port());
    let args = [
        "--no-console".to_owned(),
        "--no-portal".to_owned(),
        format!("--data-dir={}", dir.path().join("dev").display()),
        format!("--listen=127.0.0.1:{listen}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        format!("--raft-listen=127.0.0.1:{raft}"),
    ];
    let mut dev = Some(spawn_pylon("dev", &args, &dir.path().join("dev.log"), "info").expect("pylon dev"));
    let endpoint = format!("http://127.0.0.1:{admin_port}");
    let mut admin = eventually("the admin API answers", Duration::from_secs(20), || async {
        pylon_tests::connect(&endpoint).await.ok()
    })
    .await;
    deploy(&mut admin, metered_api(), "solo", &[])
        .await
        .expect("deploy");
    edit_stage(&mut admin, "metered", "solo", |stage| {
        stage.throttle = Some(ThrottleSettings {
            rate_limit: 1.0,
            burst_limit: 2,
        });
        stage.cache = Some(pylon_proto::config::v1::CacheSettings {
            enabled: true,
            ..Default::default()
        });
    })
    .await
    .expect("stage settings");
    let key = create_key(&mut admin, "solo-key").await;
    let applied = admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "solo".into(),
                api_stages: vec![ApiStageRef {
                    api: "metered".into(),
                    stage: "solo".into(),
                    ..Default::default()
                }],
                api_key_ids: vec![key.0.clone()],
                quota: Some(Quota {
                    limit: 3,
                    period: quota::Period::Month as i32,
                    offset: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("plan")
        .into_inner()
        .revision;
    wait_applied(&mut admin, applied, 1).await;
    let (client, node) = (HttpClient::default(), SocketAddr::from(([127, 0, 0, 1], listen)));

    // The stage's bucket (burst 2), per route: the first answer is cached,
    // but the cache sits behind the throttle, so the third is refused.
    let statuses: Vec<(u16, String)> =
        futures::future::join_all((0..3).map(|_| get(&client, node, "/solo/open", None)))
            .await
            .iter()
            .map(|r| (r.status.as_u16(), r.header("x-cache").to_owned()))
            .collect();
    let admitted = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(admitted, 2, "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&client, node, "/solo/open", None).await.header("x-cache"),
        "Hit"
    );

    // The quota: exactly 3 (each counted route also draws on the stage bucket,
    // so pace them).
    let mut seen = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reply = get(&client, node, "/solo/counted", Some(&key.1)).await;
        seen.push(format!(
            "{} {}",
            reply.status.as_u16(),
            reply.header("x-pylon-error-type")
        ));
    }
    assert_eq!(seen, ["200 ", "200 ", "200 ", "429 QUOTA_EXCEEDED"]);
    let usage = admin
        .get_usage(GetUsageRequest {
            usage_plan: "solo".into(),
            api_key_id: key.0.clone(),
        })
        .await
        .expect("GetUsage in pylon dev")
        .into_inner();
    assert_eq!((usage.keys[0].used, usage.keys[0].remaining), (3, 0));
    pylon_tests::kill(&mut dev);
}

#[tokio::test]
async fn get_usage_needs_the_data_planes_shared_state() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let status = admin
        .get_usage(GetUsageRequest {
            usage_plan: "any".into(),
            api_key_id: String::new(),
        })
        .await
        .expect_err("no shared state");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("--redis"), "{}", status.message());
}

#[tokio::test]
async fn redis_cluster_sentinel_and_an_acl_user_carry_the_shared_limits_and_cache() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_cluster = RedisCluster::start(dir.path()).expect("redis cluster");
    let guarded = RedisServer::start_with_user(dir.path(), "pylon", "s3cret-pass").expect("redis with ACL");
    let master = RedisServer::start(dir.path()).expect("redis master");
    let sentinel = RedisSentinel::start(dir.path(), &master).expect("sentinel");
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(&mut admin, metered_api(), "edge", &[])
        .await
        .expect("deploy");
    let applied = edit_stage(&mut admin, "metered", "edge", |stage| {
        // Five requests, then (nearly) nothing: 0.01 rps.
        stage.throttle = Some(ThrottleSettings {
            rate_limit: 0.01,
            burst_limit: 5,
        });
        stage.cache = Some(pylon_proto::config::v1::CacheSettings {
            enabled: true,
            ..Default::default()
        });
    })
    .await
    .expect("stage settings");
    let client = HttpClient::default();
    let acl_url = format!("redis://pylon:s3cret-pass@127.0.0.1:{}", guarded.port);
    for (topology, url) in [
        ("cluster", redis_cluster.url()),
        ("sentinel", sentinel.url()),
        ("acl", acl_url),
    ] {
        let flag = format!("--redis={url}");
        let pair: Vec<DataPlaneNode> = (1..=2)
            .map(|i| {
                DataPlaneNode::start(
                    dir.path(),
                    &format!("dp-{topology}-{i}"),
                    std::slice::from_ref(&endpoint),
                    &[flag.as_str()],
                )
            })
            .collect();
        wait_applied(&mut admin, applied, 2).await;
        let mut seen = Vec::new();
        for i in 0..8 {
            let reply = get(&client, pair[i % 2].address(), "/edge/open", None).await;
            seen.push(format!("{} {}", reply.status.as_u16(), reply.header("x-cache")));
        }
        assert_eq!(
            seen,
            [
                "200 Miss", "200 Hit", "200 Hit", "200 Hit", "200 Hit", "429 ", "429 ", "429 "
            ],
            "{topology}: one bucket and one cache for both nodes"
        );
        for node in &pair {
            assert!(
                !node.log_text().contains("shared limits unavailable"),
                "{topology}: no fallback"
            );
        }
    }
    let in_cluster: usize = redis_cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "pylon:*"])
                .unwrap_or_default()
                .lines()
                .count()
        })
        .sum();
    assert!(in_cluster >= 2, "the bucket and the entry live in the cluster");
    let on_master = master
        .cli(&["--scan", "--pattern", "pylon:*"])
        .unwrap_or_default();
    assert!(
        on_master.lines().count() >= 2,
        "and on the sentinel's master: {on_master}"
    );
    let guarded_keys = guarded
        .cli(&["--scan", "--pattern", "pylon:*"])
        .unwrap_or_default();
    assert!(
        guarded_keys.lines().count() >= 2,
        "and behind the ACL user: {guarded_keys}"
    );
}
