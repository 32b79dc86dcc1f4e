//! The data plane end to end: real control-plane and data-plane processes, a
//! real HTTP backend, traffic only on loopback.

use crate::support::{SHOP_HOST as HOST, ServedShop, deploy, shop_api};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{BasePathMapping, CanarySettings, DomainName};
use pylon_proto::publish::v1::data_plane_node::LastResult;
use pylon_tests::gateway::{Backend, DataPlaneNode, HttpClient, Reply, garbage_backend, raw_exchange};
use pylon_tests::{Cluster, eventually, free_port, pylon_cli, self_signed, serial};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn marker(reply: &Reply) -> String {
    reply.json()["marker"].as_str().unwrap_or("").to_owned()
}

async fn serves_marker(client: &HttpClient, node: SocketAddr, expected: &str) -> bool {
    match client.get(node, HOST, "/prod/hello").await {
        Ok(reply) => reply.status == 200 && marker(&reply) == expected,
        Err(_) => false,
    }
}

async fn data_plane_nodes(admin: &mut pylon_tests::Admin) -> Vec<pylon_proto::publish::v1::DataPlaneNode> {
    admin
        .list_data_plane_nodes(ListDataPlaneNodesRequest::default())
        .await
        .map(|r| r.into_inner().nodes)
        .unwrap_or_default()
}

#[tokio::test]
async fn three_control_planes_feed_two_data_planes_and_a_bad_snapshot_is_nacked_while_traffic_flows() {
    let _serial = serial().await;
    let cluster = Cluster::start(3).await;
    let backend = Backend::start("orders").await;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let reversed: Vec<String> = endpoints.iter().rev().cloned().collect();
    let dp1 = DataPlaneNode::start(dir.path(), "dp-1", &endpoints, &["--label=region=test-a"]);
    let dp2 = DataPlaneNode::start(dir.path(), "dp-2", &reversed, &["--label=region=test-b"]);
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");

    // Apply + deploy: both data planes serve it within a second of the ACK.
    let backend_url = backend.url();
    deploy(&mut admin, shop_api("v1"), "prod", &[("backend", &backend_url)])
        .await
        .expect("deploy v1");
    eventually("both data planes serve v1", Duration::from_secs(10), || async {
        (serves_marker(&client, dp1.address(), "v1").await
            && serves_marker(&client, dp2.address(), "v1").await)
            .then_some(())
    })
    .await;
    let mut next = shop_api("v2");
    next.description = "second".into();
    admin
        .update_api(UpdateApiRequest {
            api: Some(next),
            expected_revision: 0,
        })
        .await
        .expect("update");
    admin
        .create_deployment(CreateDeploymentRequest {
            api: "shop".into(),
            stage: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("deploy v2");
    let acked = Instant::now();
    eventually("both data planes serve v2", Duration::from_secs(5), || async {
        (serves_marker(&client, dp1.address(), "v2").await
            && serves_marker(&client, dp2.address(), "v2").await)
            .then_some(())
    })
    .await;
    let propagation = acked.elapsed();
    assert!(
        propagation < Duration::from_secs(1),
        "propagation took {propagation:?}"
    );

    // The proxied route reaches the backend with forwarding headers.
    let reply = client
        .get(dp1.address(), HOST, "/prod/orders/7?verbose=1")
        .await
        .expect("proxy");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = reply.json();
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["query"], "verbose=1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], format!("{HOST}:{}", dp1.port));
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-pylon-request-id"], reply.header("x-pylon-request-id"));
    assert!(!reply.header("x-pylon-deployment").is_empty());

    // A bad config is refused by the admin API and never published.
    let mut bad = shop_api("v3");
    bad.routes[0].path = "/hello/{".into();
    let err = admin
        .update_api(UpdateApiRequest {
            api: Some(bad),
            expected_revision: 0,
        })
        .await
        .expect_err("invalid API");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("routes[0].path"), "{}", err.message());

    // A config the data planes cannot compile (a certificate file they do not
    // have) is NACKed by both, shown by `pylon nodes`, and the old version serves.
    // Each node's version (two control-plane nodes may number the same content differently).
    let served_before: std::collections::BTreeMap<String, u64> =
        eventually("both ACKs are recorded", Duration::from_secs(10), || {
            let mut admin = admin.clone();
            async move {
                let nodes = data_plane_nodes(&mut admin).await;
                let acked: std::collections::BTreeMap<String, u64> = nodes
                    .iter()
                    .filter(|n| n.last_result == LastResult::Ack as i32 && n.applied_version > 0)
                    .map(|n| (n.node_id.clone(), n.applied_version))
                    .collect();
                (acked.len() == 2).then_some(acked)
            }
        })
        .await;
    admin
        .create_domain_name(CreateDomainNameRequest {
            domain_name: Some(DomainName {
                name: "api.shop.test".into(),
                mappings: vec![BasePathMapping {
                    base_path: "v1".into(),
                    api: "shop".into(),
                    stage: "prod".into(),
                }],
                certificate_file: "/nonexistent/shop.pem".into(),
                private_key_file: "/nonexistent/shop.key".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("domain name accepted by the control plane");
    let nodes = eventually("both data planes NACK", Duration::from_secs(10), || async {
        let mut admin = cluster.nodes[1].admin().await.ok()?;
        let nodes = data_plane_nodes(&mut admin).await;
        let nacked = nodes
            .iter()
            .filter(|n| {
                n.last_result == LastResult::Nack as i32 && n.last_error.contains("/nonexistent/shop.pem")
            })
            .count();
        (nacked == 2).then_some(nodes)
    })
    .await;
    for node in &nodes {
        assert!(node.connected, "{node:?}");
        assert_eq!(
            Some(&node.applied_version),
            served_before.get(&node.node_id),
            "{node:?}"
        );
    }
    let labels: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.labels.get("region").map(String::as_str))
        .collect();
    assert_eq!(labels, ["test-a", "test-b"]);
    let table = pylon_cli(&endpoints[2], &["nodes"]).expect("pylon nodes");
    assert!(table.contains("NACK"), "{table}");
    assert!(table.contains("/nonexistent/shop.pem"), "{table}");
    for _ in 0..50 {
        assert!(serves_marker(&client, dp1.address(), "v2").await);
        assert!(serves_marker(&client, dp2.address(), "v2").await);
    }

    // Fixing the config moves both forward again.
    admin
        .delete_domain_name(DeleteDomainNameRequest {
            name: "api.shop.test".into(),
            expected_revision: 0,
        })
        .await
        .expect("delete domain");
    eventually("both data planes ACK again", Duration::from_secs(10), || async {
        let nodes = data_plane_nodes(&mut cluster.nodes[0].admin().await.ok()?).await;
        nodes
            .iter()
            .all(|n| {
                n.last_result == LastResult::Ack as i32
                    && served_before
                        .get(&n.node_id)
                        .is_some_and(|before| n.applied_version > *before)
            })
            .then_some(())
    })
    .await;
    drop((dp1, dp2));
}

async fn applied_version(admin: &mut pylon_tests::Admin, node: &str) -> u64 {
    data_plane_nodes(admin)
        .await
        .iter()
        .find(|n| n.node_id == node)
        .map(|n| n.applied_version)
        .unwrap_or(0)
}

/// Counts, over `n` requests with the given `x-user`, how many the canary served.
async fn canary_share(client: &HttpClient, node: SocketAddr, n: usize, user: Option<&str>) -> usize {
    let mut canary = 0;
    for _ in 0..n {
        let mut request = http::Request::get("/prod/hello").header("host", HOST);
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        let request = request.body(Default::default()).expect("request");
        let reply = client.send(node, request).await.expect("canary request");
        assert_eq!(reply.status, 200);
        if reply.header("x-pylon-canary") == "true" {
            assert_eq!(marker(&reply), "v2");
            canary += 1;
        } else {
            assert_eq!(marker(&reply), "v1");
        }
    }
    canary
}

#[tokio::test]
async fn a_canary_takes_its_share_sticks_to_clients_and_promote_and_rollback_reach_the_data_plane() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = vec![cluster.nodes[0].endpoint()];
    let dp = DataPlaneNode::start(dir.path(), "dp-canary", &endpoints, &[]);
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let v1 = deploy(
        &mut admin,
        shop_api("v1"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("v1");
    admin
        .update_api(UpdateApiRequest {
            api: Some(shop_api("v2")),
            expected_revision: 0,
        })
        .await
        .expect("v2 definition");
    let v2 = admin
        .create_deployment(CreateDeploymentRequest {
            api: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("v2 deployment")
        .into_inner()
        .id;
    let stage = admin
        .get_stage(GetStageRequest {
            api: "shop".into(),
            name: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("stage")
        .into_inner();
    let with_canary = |sticky: &str| pylon_proto::config::v1::Stage {
        canary: Some(CanarySettings {
            deployment_id: v2.clone(),
            percent_traffic: 10.0,
            sticky_key: sticky.into(),
            ..Default::default()
        }),
        ..stage.clone()
    };
    admin
        .update_stage(UpdateStageRequest {
            stage: Some(with_canary("")),
            expected_revision: 0,
        })
        .await
        .expect("canary");
    eventually(
        "the data plane serves the stage",
        Duration::from_secs(10),
        || async {
            let reply = client.get(dp.address(), HOST, "/prod/hello").await.ok()?;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    eventually(
        "the data plane serves the canary config",
        Duration::from_secs(10),
        || async { (canary_share(&client, dp.address(), 60, None).await > 0).then_some(()) },
    )
    .await;

    // 10 % of 2,000: mean 200, σ ≈ 13.4; ±4σ.
    let share = canary_share(&client, dp.address(), 2000, None).await;
    assert!((146..=254).contains(&share), "canary served {share} of 2000");

    // Sticky by header: each client always on one side; about 10 % of clients on the canary.
    admin
        .update_stage(UpdateStageRequest {
            stage: Some(with_canary("$request.header.x-user")),
            expected_revision: 0,
        })
        .await
        .expect("sticky canary");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut canary_users = 0;
    for user in 0..200 {
        let user = format!("user-{user}");
        let hits = canary_share(&client, dp.address(), 5, Some(&user)).await;
        assert!(
            hits == 0 || hits == 5,
            "{user} was split: {hits} of 5 on the canary"
        );
        if hits == 5 {
            canary_users += 1;
        }
    }
    assert!(
        (5..=45).contains(&canary_users),
        "{canary_users} of 200 users on the canary"
    );

    // Sticky by query value, read decoded: `%75ser-7` is `user-7`.
    let revision = admin
        .update_stage(UpdateStageRequest {
            stage: Some(with_canary("$request.querystring.user")),
            expected_revision: 0,
        })
        .await
        .expect("sticky by query")
        .into_inner()
        .revision;
    crate::support::wait_applied(&mut admin, revision, 1).await;
    let on_canary = |path: String| {
        let client = client.clone();
        let address = dp.address();
        async move {
            let request = http::Request::get(path).header("host", HOST);
            let reply = client
                .send(address, request.body(Default::default()).expect("request"))
                .await
                .expect("sticky request");
            assert_eq!(reply.status, 200);
            reply.header("x-pylon-canary") == "true"
        }
    };
    let mut canary_users = 0;
    for user in 0..100 {
        let plain = on_canary(format!("/prod/hello?user=user-{user}")).await;
        let escaped = on_canary(format!("/prod/hello?user=%75ser-{user}")).await;
        assert_eq!(plain, escaped, "user-{user} and %75ser-{user} are one client");
        canary_users += usize::from(plain);
    }
    assert!(
        (1..=30).contains(&canary_users),
        "{canary_users} of 100 users on the canary"
    );

    // Promote: everything on v2, no canary left.
    admin
        .promote_canary(PromoteCanaryRequest {
            api: "shop".into(),
            stage: "prod".into(),
            expected_revision: 0,
        })
        .await
        .expect("promote");
    eventually(
        "promotion reaches the data plane",
        Duration::from_secs(5),
        || async {
            // v2 from the stage itself (not a canary hit, which answered v2 before).
            let reply = client.get(dp.address(), HOST, "/prod/hello").await.ok()?;
            (marker(&reply) == "v2" && reply.header("x-pylon-canary").is_empty()).then_some(())
        },
    )
    .await;
    for _ in 0..100 {
        let reply = client
            .get(dp.address(), HOST, "/prod/hello")
            .await
            .expect("after promote");
        assert_eq!(marker(&reply), "v2");
        assert_eq!(reply.header("x-pylon-deployment"), v2);
        assert_eq!(reply.header("x-pylon-canary"), "");
    }

    // Rollback: v1 again.
    admin
        .rollback_stage(RollbackStageRequest {
            api: "shop".into(),
            stage: "prod".into(),
            deployment_id: v1.clone(),
            expected_revision: 0,
        })
        .await
        .expect("rollback");
    eventually(
        "rollback reaches the data plane",
        Duration::from_secs(5),
        || async { serves_marker(&client, dp.address(), "v1").await.then_some(()) },
    )
    .await;
    let reply = client
        .get(dp.address(), HOST, "/prod/hello")
        .await
        .expect("after rollback");
    assert_eq!(reply.header("x-pylon-deployment"), v1);
}

#[tokio::test]
async fn data_planes_serve_through_a_control_plane_outage_and_restart_from_their_cache() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let mut dp1 = DataPlaneNode::start(dir.path(), "dp-1", &endpoints, &[]);
    let dp2 = DataPlaneNode::start(dir.path(), "dp-2", &endpoints, &[]);
    let client = HttpClient::default();
    {
        let mut admin = cluster.nodes[0].admin().await.expect("admin");
        deploy(
            &mut admin,
            shop_api("before-outage"),
            "prod",
            &[("backend", "http://127.0.0.1:9")],
        )
        .await
        .expect("deploy");
    }
    eventually("both serve", Duration::from_secs(10), || async {
        (serves_marker(&client, dp1.address(), "before-outage").await
            && serves_marker(&client, dp2.address(), "before-outage").await)
            .then_some(())
    })
    .await;

    for node in &mut cluster.nodes {
        node.kill();
    }
    // Every request keeps being answered correctly while the control plane is gone.
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        for dp in [&dp1, &dp2] {
            let reply = client
                .get(dp.address(), HOST, "/prod/hello")
                .await
                .expect("during outage");
            assert_eq!(reply.status, 200);
            assert_eq!(marker(&reply), "before-outage");
            answered += 1;
        }
    }
    assert!(answered > 100, "only {answered} requests in 3 s");

    // A restarted data plane serves from its snapshot cache with no control plane.
    dp1.kill();
    dp1.restart().expect("restart dp-1");
    eventually("dp-1 serves from its cache", Duration::from_secs(10), || async {
        serves_marker(&client, dp1.address(), "before-outage")
            .await
            .then_some(())
    })
    .await;
    assert!(dp1.log_text().contains("serving the cached config snapshot"));

    // The control plane returns; a new deployment reaches both.
    for node in &mut cluster.nodes {
        node.start().expect("restart control plane");
    }
    cluster.wait_for_leader().await;
    let mut admin = eventually("admin answers", Duration::from_secs(10), || async {
        cluster.nodes[0].admin().await.ok()
    })
    .await;
    deploy(
        &mut admin,
        shop_api("after-outage"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("deploy after outage");
    eventually(
        "both serve the new deployment",
        Duration::from_secs(20),
        || async {
            (serves_marker(&client, dp1.address(), "after-outage").await
                && serves_marker(&client, dp2.address(), "after-outage").await)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_data_plane_never_goes_back_to_an_older_version_from_a_lagging_control_plane() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        shop_api("old"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("old");
    cluster.wait_until_caught_up().await;

    // Node 3 stops at the old version; the others move on.
    cluster.by_id(3).kill();
    deploy(
        &mut admin,
        shop_api("new"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("new");
    let lagging = cluster.by_id(3).endpoint();
    let dp = DataPlaneNode::start(
        dir.path(),
        "dp-mono",
        &[cluster.nodes[0].endpoint(), lagging.clone()],
        &[],
    );
    eventually(
        "the data plane serves the new version",
        Duration::from_secs(10),
        || async { serves_marker(&client, dp.address(), "new").await.then_some(()) },
    )
    .await;
    // The ACK follows the swap: wait for the control plane to record it.
    let new_version = eventually(
        "the data plane's ACK is recorded",
        Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move {
                let version = applied_version(&mut admin, "dp-mono").await;
                (version > 0).then_some(version)
            }
        },
    )
    .await;

    // Only the lagging node is left (no quorum: it cannot catch up).
    cluster.by_id(1).kill();
    cluster.by_id(2).kill();
    cluster.by_id(3).start().expect("start lagging node");
    let mut lagging_admin = eventually("lagging node answers", Duration::from_secs(10), || async {
        pylon_tests::connect(&lagging).await.ok()
    })
    .await;
    eventually(
        "the data plane fails over to the lagging node",
        Duration::from_secs(20),
        || {
            let mut lagging_admin = lagging_admin.clone();
            async move {
                let nodes = lagging_admin
                    .list_data_plane_nodes(ListDataPlaneNodesRequest { local_only: true })
                    .await
                    .ok()?
                    .into_inner()
                    .nodes;
                nodes
                    .iter()
                    .find(|n| n.node_id == "dp-mono" && n.connected)
                    .cloned()
            }
        },
    )
    .await;
    let lagging_version = lagging_admin
        .get_config_version(GetConfigVersionRequest {
            consistency: ReadConsistency::Stale as i32,
        })
        .await
        .expect("version")
        .into_inner()
        .version;
    assert!(
        lagging_version < new_version,
        "node 3 at {lagging_version}, data plane at {new_version}"
    );
    for _ in 0..50 {
        assert!(serves_marker(&client, dp.address(), "new").await);
    }
    let nodes = lagging_admin
        .list_data_plane_nodes(ListDataPlaneNodesRequest { local_only: true })
        .await
        .expect("nodes")
        .into_inner()
        .nodes;
    assert_eq!(nodes[0].applied_version, new_version);
    assert!(!dp.log_text().contains("serving config version version=1 "));
}

#[tokio::test]
async fn errors_have_aws_statuses_json_bodies_and_request_ids() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("errors").await;
    let (garbage, _garbage_task) = garbage_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dp = DataPlaneNode::start(dir.path(), "dp-errors", &[cluster.nodes[0].endpoint()], &[]);
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let backend_url = backend.url();
    deploy(
        &mut admin,
        shop_api("errors"),
        "prod",
        &[("backend", &backend_url)],
    )
    .await
    .expect("deploy");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let garbage_url = format!("http://{garbage}");
    deploy(&mut admin, shop_api("errors"), "dead", &[("backend", &dead)])
        .await
        .expect("dead stage");
    deploy(
        &mut admin,
        shop_api("errors"),
        "garbage",
        &[("backend", &garbage_url)],
    )
    .await
    .expect("garbage stage");
    eventually("served", Duration::from_secs(10), || async {
        let reply = client.get(dp.address(), HOST, "/prod/hello").await.ok()?;
        let dead = client.get(dp.address(), HOST, "/dead/hello").await.ok()?;
        let garbage = client.get(dp.address(), HOST, "/garbage/hello").await.ok()?;
        (reply.status == 200 && dead.status == 200 && garbage.status == 200).then_some(())
    })
    .await;

    let check = |reply: &Reply, status: u16, message: &str| {
        assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
        assert_eq!(reply.json()["message"], message, "{}", reply.body);
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(
            reply.header("x-pylon-request-id").len(),
            36,
            "{:?}",
            reply.headers
        );
    };

    // Slow backend → 504 at the route's 1 s timeout (±10 %).
    let started = Instant::now();
    let reply = client
        .get(dp.address(), HOST, "/prod/slow/3000")
        .await
        .expect("slow");
    let took = started.elapsed();
    check(&reply, 504, "Endpoint request timed out");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(1100),
        "timed out after {took:?}"
    );
    let reply = client
        .get(dp.address(), HOST, "/prod/slow/10")
        .await
        .expect("fast enough");
    assert_eq!(reply.status, 200);

    // A path parameter that would climb out of the integration's path → 400.
    for path in [
        "/prod/files/..%2F..%2Fetc",
        "/prod/a/%2e%2e/admin",
        "/prod/a/../admin",
    ] {
        check(
            &client.get(dp.address(), HOST, path).await.expect("traversal"),
            400,
            "Invalid path",
        );
    }

    // Backend down, or answering garbage → 502.
    check(
        &client
            .get(dp.address(), HOST, "/dead/anything")
            .await
            .expect("dead"),
        502,
        "Internal server error",
    );
    check(
        &client
            .get(dp.address(), HOST, "/garbage/anything")
            .await
            .expect("garbage"),
        502,
        "Internal server error",
    );

    // No such route or stage → 403 as AWS; no such API → 404.
    check(
        &client
            .get(dp.address(), HOST, "/nostage/hello")
            .await
            .expect("stage"),
        403,
        "Missing Authentication Token",
    );
    check(
        &client
            .get(dp.address(), "nope.localhost", "/prod/hello")
            .await
            .expect("api"),
        404,
        "Not Found",
    );

    // Oversized body: declared → 413 before the backend sees anything; streamed
    // without a length → cut at 10 MB, 413.
    let seen_before = backend.requests.load(std::sync::atomic::Ordering::Relaxed);
    let request = http::Request::post("/prod/upload")
        .header("host", HOST)
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            10 * 1024
                * 1024
                + 1
        ])))
        .expect("request");
    check(
        &client.send(dp.address(), request).await.expect("413"),
        413,
        "Request Too Long",
    );
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::Relaxed),
        seen_before
    );
    let chunked = streamed_upload(dp.address(), 11 * 1024 * 1024).await;
    assert!(
        chunked.starts_with("HTTP/1.1 413"),
        "{}",
        &chunked[..chunked.len().min(300)]
    );
    let ok = client
        .send(
            dp.address(),
            http::Request::post("/prod/upload")
                .header("host", HOST)
                .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                    b'x';
                    1024 * 1024
                ])))
                .expect("request"),
        )
        .await
        .expect("1 MB upload");
    assert_eq!(ok.json()["body_bytes"], 1024 * 1024);

    // Oversized headers → 431.
    let request = http::Request::get("/prod/hello")
        .header("host", HOST)
        .header("x-big", "a".repeat(11_000))
        .body(Default::default())
        .expect("request");
    check(
        &client.send(dp.address(), request).await.expect("431"),
        431,
        "Request Header Fields Too Large",
    );

    // Malformed → 400 (HTTP/1.1 without a Host).
    let raw = raw_exchange(
        dp.address(),
        b"GET /prod/hello HTTP/1.1\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .expect("raw");
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("x-pylon-request-id: "), "{raw}");
    assert!(
        raw.contains(r#"{"message":"Missing or invalid Host header"}"#),
        "{raw}"
    );

    // HTTP/2 (h2c, prior knowledge) gets the same answers.
    let h2 = HttpClient::new(true);
    let reply = h2.get(dp.address(), HOST, "/prod/hello").await.expect("h2c");
    assert_eq!(reply.status, 200);
    assert_eq!(marker(&reply), "errors");
    check(
        &h2.get(dp.address(), HOST, "/dead/x").await.expect("h2c 502"),
        502,
        "Internal server error",
    );
}

/// Streams `size` bytes with chunked encoding and returns the raw answer.
async fn streamed_upload(address: SocketAddr, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /prod/upload HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let _serial = serial().await;
    let mut shop = ServedShop::start("drain").await;
    let address = shop.address();
    let slow = tokio::spawn({
        let client = shop.client.clone();
        async move { client.get(address, HOST, "/prod/slow/700").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(shop.dp.pid().expect("running"));
    let reply = slow
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["path"], "/slow/700");
    eventually("new connections are refused", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(address)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(shop.dp.log_text().contains("draining in-flight requests"));
    shop.dp.kill();
}

#[tokio::test]
async fn a_request_the_drain_timeout_ends_is_the_nodes_failure_not_the_clients() {
    let _serial = serial().await;
    // A backend call longer than the drain, within its route's timeout.
    let mut api = shop_api("cut");
    api.routes.push(pylon_proto::config::v1::Route {
        method: "GET".into(),
        path: "/long".into(),
        integration: Some(pylon_proto::config::v1::Integration {
            r#type: pylon_proto::config::v1::integration::Type::HttpProxy as i32,
            uri: "${stageVariables.backend}/slow/6000".into(),
            timeout_ms: 29_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    // Access lines go to stdout, which the harness writes to the node's log.
    let mut shop = ServedShop::serving(api, "cut", &[]).await;
    let address = shop.address();
    let slow = tokio::spawn({
        let client = shop.client.clone();
        async move { client.get(address, HOST, "/prod/long").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(shop.dp.pid().expect("running"));
    let cut = slow.await.expect("join");
    assert!(cut.is_err(), "cut off after the 2 s drain: {cut:?}");
    let line = eventually(
        "the cut request's access line",
        Duration::from_secs(10),
        || async {
            shop.dp
                .access_lines()
                .into_iter()
                .find(|l| l["path"] == "/prod/long")
        },
    )
    .await;
    assert_eq!(
        (line["status"].clone(), line["errorType"].clone()),
        (503.into(), "DEFAULT_5XX".into()),
        "{line}"
    );
    shop.dp.kill();
}

#[tokio::test]
async fn a_second_signal_exits_at_once_but_writes_the_buffered_access_lines_first() {
    let _serial = serial().await;
    // Access lines go to stdout, which the harness writes to the node's log;
    // they are written once a second, or at an orderly shutdown.
    let mut shop = ServedShop::start("exit").await;
    let address = shop.address();
    // An answer that keeps the drain going past the second signal.
    let slow = tokio::spawn({
        let client = shop.client.clone();
        async move { client.get(address, HOST, "/prod/slow/900").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 1..=3 {
        let reply = shop
            .client
            .get(address, HOST, &format!("/prod/answered/{n}"))
            .await
            .expect("answered");
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let pid = shop.dp.pid().expect("running");
    sigterm(pid);
    tokio::time::sleep(Duration::from_millis(50)).await;
    sigterm(pid);
    let status = shop.dp.wait_exit(Duration::from_secs(5)).expect("exits at once");
    assert_eq!(status.code(), Some(130));
    let _ = slow.await;
    let log = shop.dp.log_text();
    assert!(log.contains("second signal: exiting"), "{log}");
    let logged: Vec<String> = shop
        .dp
        .access_lines()
        .iter()
        .filter_map(|l| l["path"].as_str().map(str::to_owned))
        .filter(|path| path.starts_with("/prod/answered/"))
        .collect();
    assert_eq!(
        logged,
        ["/prod/answered/1", "/prod/answered/2", "/prod/answered/3"],
        "{log}"
    );
}

#[tokio::test]
async fn a_client_that_half_closes_with_its_request_is_logged_as_499_like_nginx_does() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = serial().await;
    // Access lines go to stdout, which the harness writes to the node's log.
    let mut shop = ServedShop::start("half").await;
    let address = shop.address();
    // The request and the end of the client's sending, together (`nc -N`).
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(format!("GET /prod/slow/300 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    stream.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let lines = || -> Vec<serde_json::Value> {
        let mut lines = shop.dp.access_lines();
        lines.retain(|l| l["path"] == "/prod/slow/300");
        lines
    };
    eventually("the request's access line", Duration::from_secs(10), || async {
        (!lines().is_empty()).then_some(())
    })
    .await;
    // One line: the request is recorded once, whichever path saw the close.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lines = lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 499, "{}", lines[0]);
    shop.dp.kill();
}

/// A `pylon data-plane` (node id `dp-{marker}`, with `flags` and `PYLON_LOG`
/// set to `log`) whose stdout
/// and stderr go where the test says, serving [`shop_api`]`(marker)` with
/// `backend` on `prod`; killed when dropped.
struct PipedNode {
    child: Option<std::process::Child>,
    address: SocketAddr,
    /// The read end of a pipe the node writes to, kept open and never read.
    _unread: Option<std::io::PipeReader>,
}

impl PipedNode {
    /// Started and deployed; returned once `/prod/hello` answers `marker`.
    async fn start(
        cluster: &Cluster,
        backend: &Backend,
        marker: &str,
        flags: &[&str],
        log: &str,
        (stdout, stderr): (std::process::Stdio, std::process::Stdio),
        unread: Option<std::io::PipeReader>,
    ) -> PipedNode {
        let port = free_port();
        let child = std::process::Command::new(pylon_tests::pylon_bin())
            .arg("data-plane")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--control-plane={}", cluster.nodes[0].endpoint()))
            .arg(format!("--node-id=dp-{marker}"))
            .args(flags)
            .env("PYLON_LOG", log)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the data plane");
        let node = PipedNode {
            child: Some(child),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _unread: unread,
        };
        let mut admin = cluster.nodes[0].admin().await.expect("admin");
        deploy(
            &mut admin,
            shop_api(marker),
            "prod",
            &[("backend", &backend.url())],
        )
        .await
        .expect("deploy");
        let client = HttpClient::default();
        eventually("served", Duration::from_secs(10), || async {
            serves_marker(&client, node.address, marker).await.then_some(())
        })
        .await;
        node
    }

    /// The read end of the pipe the test left unread, to read it now.
    fn take_unread(&mut self) -> Option<std::io::PipeReader> {
        self._unread.take()
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        sigterm(self.child.as_ref().map(std::process::Child::id).expect("running"));
    }

    /// How the node exited, `what` within `timeout` or the test fails.
    async fn exit(&mut self, what: &str, timeout: Duration) -> std::process::ExitStatus {
        eventually(what, timeout, || {
            let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            async move { status }
        })
        .await
    }

    /// `n` requests to `/prod/hello`, each answered 200.
    async fn answer(&self, n: usize) {
        let client = HttpClient::default();
        for _ in 0..n {
            let reply = client
                .get(self.address, HOST, "/prod/hello")
                .await
                .expect("answered");
            assert_eq!(reply.status, 200);
        }
    }
}

impl Drop for PipedNode {
    fn drop(&mut self) {
        pylon_tests::kill(&mut self.child);
    }
}

#[tokio::test]
async fn a_node_whose_access_log_nobody_reads_keeps_serving_and_still_stops() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("unread").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (unread, stdout) = std::io::pipe().expect("pipe");
    let log = std::fs::File::create(dir.path().join("dp.log")).expect("log");
    let mut node = PipedNode::start(
        &cluster,
        &backend,
        "unread",
        &["--access-log=stdout", "--drain-timeout-s=1"],
        "info",
        (stdout.into(), log.into()),
        Some(unread),
    )
    .await;
    // Far more lines than the pipe holds: requests never wait for the log.
    node.answer(800).await;
    let signalled = Instant::now();
    node.terminate();
    node.exit(
        "the node exits despite its blocked log writer",
        Duration::from_secs(15),
    )
    .await;
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "drain (1 s) + the last lines' 2 s, not more: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_node_whose_stdout_and_stderr_nobody_reads_still_exits_at_a_second_signal() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("blocked").await;
    // One pipe for both, never read: once it is full, the thread writing a
    // log line blocks, the node's "shutting down" line included.
    let (unread, writer) = std::io::pipe().expect("pipe");
    let mut node = PipedNode::start(
        &cluster,
        &backend,
        "blocked",
        &["--access-log=stdout", "--drain-timeout-s=30"],
        "info",
        (writer.try_clone().expect("pipe").into(), writer.into()),
        Some(unread),
    )
    .await;
    // Far more access lines than the pipe holds, and a second for the log
    // writer to fill it.
    node.answer(800).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    node.terminate();
    let exited = node
        .exit("the node exits at the second signal", Duration::from_secs(10))
        .await;
    assert_eq!(exited.code(), Some(130));
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "the buffered lines' 1 s, not more: {:?}",
        second.elapsed()
    );
}

#[tokio::test]
async fn a_node_whose_stdout_and_stderr_nobody_reads_drains_and_exits_at_one_signal() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("stalled").await;
    // As an orchestrator stops a node whose log pipe stalled: one SIGTERM.
    let (unread, writer) = std::io::pipe().expect("pipe");
    let mut node = PipedNode::start(
        &cluster,
        &backend,
        "stalled",
        &["--access-log=stdout", "--drain-timeout-s=30"],
        "info",
        (writer.try_clone().expect("pipe").into(), writer.into()),
        Some(unread),
    )
    .await;
    node.answer(800).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signalled = Instant::now();
    node.terminate();
    let exited = node
        .exit("the node drains and exits", Duration::from_secs(15))
        .await;
    assert_eq!(exited.code(), Some(0), "an orderly exit");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "the access log's 2 s and the node log's 2 s, not more: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_node_whose_stderr_stalls_keeps_its_last_log_lines_and_says_how_many_it_dropped() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("stall").await;
    let (unread, stderr) = std::io::pipe().expect("pipe");
    let mut node = PipedNode::start(
        &cluster,
        &backend,
        "stall",
        &["--access-log=off"],
        "info,pylon_data_plane=debug",
        (std::process::Stdio::null(), stderr.into()),
        Some(unread),
    )
    .await;
    // Each refusal logs its 4 KiB path: about 6 MiB of lines while nobody
    // reads, more than the 4 MiB the node holds for stderr.
    let client = HttpClient::default();
    let path = format!("/{}", "a".repeat(4096));
    for _ in 0..1500 {
        let reply = client
            .get(node.address, "nobody.localhost", &path)
            .await
            .expect("answered");
        assert_eq!(reply.status, 404);
    }
    node.terminate();
    let mut stderr = node.take_unread().expect("the read end");
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut bytes).map(|_| bytes)
    });
    let exited = node
        .exit("the node drains and exits", Duration::from_secs(15))
        .await;
    assert_eq!(exited.code(), Some(0));
    let log = String::from_utf8_lossy(&read.await.expect("reader").expect("read")).into_owned();
    let gap = log
        .find("log lines dropped")
        .expect("a warning where lines went missing");
    let stopped = log.rfind("data plane stopped").expect("the node's last line");
    assert!(gap < stopped, "the oldest lines make room, not the last ones");
}

#[tokio::test]
async fn a_node_whose_stderr_reader_is_gone_still_serves_and_drains_at_a_signal() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("gone").await;
    // The reader goes away at once: every log line fails with EPIPE.
    let (reader, stderr) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut node = PipedNode::start(
        &cluster,
        &backend,
        "gone",
        &["--access-log=off"],
        "info",
        (std::process::Stdio::null(), stderr.into()),
        None,
    )
    .await;
    node.terminate();
    let exited = node
        .exit("the node drains and exits", Duration::from_secs(10))
        .await;
    assert_eq!(exited.code(), Some(0), "an orderly exit, not a panic");
}

/// A self-signed certificate for `name`, made with openssl.
fn curl(args: &[&str]) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn tls_with_alpn_and_custom_domains_with_their_own_certificates_and_base_paths() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, default_cert, default_key) = pylon_tests::test_certificates(dir.path());
    let (domain_cert, domain_key) = self_signed(dir.path(), "api.shop.test");
    let tls_port = free_port();
    // HTTPS backends (openssl's test server answers any GET with a status
    // page): one with a certificate from the test CA, one self-signed.
    let https_server = |cert: &std::path::Path, key: &std::path::Path| {
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        (port, child)
    };
    let (backend_port, mut https_backend) = https_server(&default_cert, &default_key);
    let (self_signed_cert, self_signed_key) = self_signed(dir.path(), "localhost");
    let (untrusted_port, mut untrusted_backend) = https_server(&self_signed_cert, &self_signed_key);
    let dp = DataPlaneNode::start(
        dir.path(),
        "dp-tls",
        &[cluster.nodes[0].endpoint()],
        &[
            &format!("--tls-listen=127.0.0.1:{tls_port}"),
            &format!("--tls-cert={}", default_cert.display()),
            &format!("--tls-key={}", default_key.display()),
            &format!("--upstream-ca={}", ca.display()),
        ],
    );
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        shop_api("tls"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("deploy");
    admin
        .create_domain_name(CreateDomainNameRequest {
            domain_name: Some(DomainName {
                name: "api.shop.test".into(),
                mappings: vec![BasePathMapping {
                    base_path: "shop".into(),
                    api: "shop".into(),
                    stage: "prod".into(),
                }],
                certificate_file: domain_cert.display().to_string(),
                private_key_file: domain_key.display().to_string(),
                ..Default::default()
            }),
        })
        .await
        .expect("domain");
    eventually(
        "the domain is served over plain HTTP",
        Duration::from_secs(10),
        || async {
            let reply = client
                .get(dp.address(), "api.shop.test", "/shop/hello")
                .await
                .ok()?;
            (reply.status == 200 && marker(&reply) == "tls").then_some(())
        },
    )
    .await;
    let reply = client
        .get(dp.address(), "api.shop.test", "/other/hello")
        .await
        .expect("unmapped");
    assert_eq!(reply.status, 403);

    // The custom domain's own certificate is chosen by SNI (curl verifies it
    // against that certificate alone), and HTTP/2 is negotiated by ALPN.
    let resolve = format!("api.shop.test:{tls_port}:127.0.0.1");
    let url = format!("https://api.shop.test:{tls_port}/shop/hello");
    let cacert = domain_cert.display().to_string();
    let out = curl(&[
        "--http2",
        "--resolve",
        &resolve,
        "--cacert",
        &cacert,
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert!(out.ends_with("\n2 200"), "{out}");
    assert!(out.contains(r#""marker": "tls""#), "{out}");
    // HTTP/1.1 over TLS, and the listener's default certificate for API hosts.
    let out = curl(&[
        "--http1.1",
        "-k",
        "-H",
        &format!("host: {HOST}"),
        "-w",
        "\n%{http_version} %{http_code}",
        &format!("https://127.0.0.1:{tls_port}/prod/hello"),
    ]);
    assert!(out.ends_with("\n1.1 200"), "{out}");

    // An HTTPS backend, verified against --upstream-ca.
    let backend_url = format!("https://localhost:{backend_port}");
    deploy(
        &mut admin,
        shop_api("tls"),
        "secure",
        &[("backend", &backend_url)],
    )
    .await
    .expect("deploy secure stage");
    let reply = eventually(
        "the HTTPS backend answers through the proxy",
        Duration::from_secs(10),
        || async {
            let reply = client.get(dp.address(), HOST, "/secure/status").await.ok()?;
            (reply.status == 200).then_some(reply)
        },
    )
    .await;
    assert!(reply.body.contains("<HTML>"), "{}", reply.body);
    // A backend whose certificate is not trusted is an integration failure.
    let untrusted = format!("https://localhost:{untrusted_port}");
    deploy(
        &mut admin,
        shop_api("tls"),
        "untrusted",
        &[("backend", &untrusted)],
    )
    .await
    .expect("deploy untrusted stage");
    let reply = eventually(
        "the untrusted stage is served",
        Duration::from_secs(10),
        || async {
            let reply = client.get(dp.address(), HOST, "/untrusted/status").await.ok()?;
            (reply.status != 403).then_some(reply)
        },
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    for server in [&mut https_backend, &mut untrusted_backend] {
        let _ = server.kill();
        let _ = server.wait();
    }
}

/// Runs `pylon dev` with `args` on free ports (`admin` for the admin API)
/// and waits up to 20 s for it to exit; its status and stderr.
async fn pylon_dev_exit(
    dir: &std::path::Path,
    admin: u16,
    args: &[String],
) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(pylon_tests::pylon_bin())
        .args(["dev", "--no-console", "--no-portal"])
        .arg(format!("--data-dir={}", dir.join("dev").display()))
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .arg(format!("--raft-listen=127.0.0.1:{}", free_port()))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pylon dev");
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pylon dev kept running with one of its planes down");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

#[tokio::test]
async fn pylon_dev_whose_access_log_cannot_open_exits_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir/access.log");
    let args = [
        "--access-log=file".to_owned(),
        format!("--access-log-file={}", missing.display()),
    ];
    let (status, stderr) = pylon_dev_exit(dir.path(), free_port(), &args).await;
    assert!(!status.success());
    let reason = format!(
        "error: access log file {}: No such file or directory",
        missing.display()
    );
    assert!(stderr.contains(&reason), "{stderr}");
}

#[tokio::test]
async fn pylon_dev_whose_admin_port_is_taken_exits_at_once_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().expect("address").port();
    let (status, stderr) = pylon_dev_exit(dir.path(), port, &[]).await;
    assert!(!status.success());
    let reason = format!("error: --admin-listen 127.0.0.1:{port}: cannot listen: Address already in use");
    assert!(stderr.contains(&reason), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "said once: {stderr}"
    );
}

#[tokio::test]
async fn pylon_dev_serves_the_readme_tour_and_stops_cleanly() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin, raft, ops) = (free_port(), free_port(), free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("dev.log")).expect("log");
    let mut child = std::process::Command::new(pylon_tests::pylon_bin())
        .args(["dev", "--no-console", "--no-portal"])
        .arg(format!("--data-dir={}", dir.path().join("dev").display()))
        .arg(format!("--listen=127.0.0.1:{listen}"))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .arg(format!("--raft-listen=127.0.0.1:{raft}"))
        .arg(format!("--ops-listen=127.0.0.1:{ops}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("pylon dev");
    let endpoint = format!("http://127.0.0.1:{admin}");
    eventually("the admin API answers", Duration::from_secs(20), || async {
        pylon_tests::connect(&endpoint).await.ok()
    })
    .await;
    let petstore = pylon_tests::repo_root().join("examples/petstore.yaml");
    pylon_cli(&endpoint, &["apply", "-f", &petstore.display().to_string()]).expect("apply");
    pylon_cli(&endpoint, &["deploy", "petstore", "--stage", "prod"]).expect("deploy");
    let client = HttpClient::default();
    let address = SocketAddr::from(([127, 0, 0, 1], listen));
    let reply = eventually("petstore is served", Duration::from_secs(10), || async {
        let reply = client
            .get(address, "petstore.localhost", "/prod/pets")
            .await
            .ok()?;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(reply.json()[0]["name"], "Rex");
    let nodes = pylon_cli(&endpoint, &["nodes"]).expect("nodes");
    assert!(
        nodes.contains("dev") && nodes.contains("connected") && nodes.contains("ACK"),
        "{nodes}"
    );
    // The tour's metrics step.
    let ops = SocketAddr::from(([127, 0, 0, 1], ops));
    let metrics = client.get(ops, "localhost", "/metrics").await.expect("/metrics");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("pylon_requests_total") && l.contains("pylon_api=\"petstore\"")),
        "{}",
        metrics.body
    );
    // Ready soon after the first version is served (the flag is polled).
    eventually("/readyz", Duration::from_secs(5), || async {
        (client.get(ops, "localhost", "/readyz").await.ok()?.status == 200).then_some(())
    })
    .await;
    // The tour's throttling and cache step.
    let limits = pylon_tests::repo_root().join("examples/petstore-limits.yaml");
    let applied =
        pylon_cli(&endpoint, &["apply", "-f", &limits.display().to_string()]).expect("apply limits");
    assert!(applied.contains("configured"), "{applied}");
    let first = eventually("the stage caches", Duration::from_secs(10), || async {
        let reply = client
            .get(address, "petstore.localhost", "/prod/pets")
            .await
            .ok()?;
        (!reply.header("x-cache").is_empty()).then_some(reply)
    })
    .await;
    let mut seen = vec![format!("{} {}", first.status.as_u16(), first.header("x-cache"))];
    for _ in 0..5 {
        let reply = client
            .get(address, "petstore.localhost", "/prod/pets")
            .await
            .expect("reply");
        seen.push(format!("{} {}", reply.status.as_u16(), reply.header("x-cache")));
    }
    assert_eq!(
        seen[..4],
        ["200 Miss", "200 Hit", "200 Hit", "200 Hit"],
        "{seen:?}"
    );
    assert!(seen[4..].iter().all(|s| s.starts_with("429")), "{seen:?}");
    let flushed = pylon_cli(&endpoint, &["cache", "flush", "petstore", "--stage", "prod"]).expect("flush");
    assert!(flushed.contains("flushed"), "{flushed}");

    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pylon dev did not exit within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stopped.success(), "{stopped:?}");
}

#[tokio::test]
async fn a_data_plane_is_sent_on_by_a_control_plane_node_still_waiting_to_be_joined() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy(
        &mut admin,
        shop_api("joined"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("deploy");
    // Node 2 started with --join and was never added: it has no config.
    let waiting = cluster.start_joiner(2).endpoint();
    let founder = cluster.nodes[0].endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    // The waiting node is listed first: the data plane must move on.
    let dp = DataPlaneNode::start(dir.path(), "dp-skip", &[waiting, founder], &[]);
    let client = HttpClient::default();
    let reply = eventually(
        "served from the cluster's member",
        Duration::from_secs(15),
        || async {
            let reply = client
                .get(dp.address(), "shop.localhost", "/prod/hello")
                .await
                .ok()?;
            (reply.status == 200).then_some(reply)
        },
    )
    .await;
    assert!(reply.body.contains("joined"), "{}", reply.body);
}
