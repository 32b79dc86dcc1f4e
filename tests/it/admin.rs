//! The admin API on a single real node: bad input is refused before it reaches
//! the log, revisions guard concurrent updates, tokens guard access, and
//! health and reflection answer for tools without our .proto files.

use crate::support::mock_api;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Stage, ThrottleSettings, UsagePlan};
use pylon_tests::{Cluster, free_port, pylon_bin, serial};
use tonic::Code;

async fn version(admin: &mut pylon_tests::Admin) -> u64 {
    admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("version")
        .into_inner()
        .version
}

#[tokio::test]
async fn invalid_input_names_every_field_at_fault_and_never_reaches_the_log() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("pets", "[]")),
        })
        .await
        .expect("create");
    let before = cluster.status().await.expect("status").members[0].last_index;
    let version_before = version(&mut admin).await;

    let mut bad = mock_api("Pets!", "[]");
    bad.routes[0].path = "/items/{id".into();
    if let Some(integration) = bad.routes[0].integration.as_mut() {
        integration.timeout_ms = 30_000;
    }
    let err = admin
        .create_api(CreateApiRequest { api: Some(bad) })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let message = err.message();
    assert!(message.contains("name: must be a DNS label"), "{message}");
    assert!(message.contains("routes[0].path:"), "{message}");
    assert!(
        message.contains("routes[0].integration.timeout_ms: must be 50..=29000"),
        "{message}"
    );

    let err = admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("pets", "[]")),
        })
        .await
        .expect_err("dup");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = admin
        .get_api(GetApiRequest {
            name: "cats".into(),
            ..Default::default()
        })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    // Nor are the stages of an API that does not exist an empty list.
    let err = admin
        .list_stages(ListStagesRequest {
            api: "cats".into(),
            ..Default::default()
        })
        .await
        .expect_err("stages of a missing API");
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "API cats not found")
    );
    let stage = Stage {
        api: "pets".into(),
        name: "prod".into(),
        deployment_id: "nope".into(),
        ..Default::default()
    };
    let err = admin
        .create_stage(CreateStageRequest { stage: Some(stage) })
        .await
        .expect_err("no deployment");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("deployment_id"), "{}", err.message());
    let plan = UsagePlan {
        name: "gold".into(),
        throttle: Some(ThrottleSettings {
            rate_limit: -5.0,
            burst_limit: 1,
        }),
        ..Default::default()
    };
    let err = admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(plan),
        })
        .await
        .expect_err("bad rate");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("throttle.rate_limit:"),
        "{}",
        err.message()
    );

    let after = cluster.status().await.expect("status").members[0].last_index;
    assert_eq!(
        after, before,
        "rejected requests appended nothing to the Raft log"
    );
    assert_eq!(version(&mut admin).await, version_before);
}

#[tokio::test]
async fn an_update_with_a_stale_revision_is_aborted_and_changes_nothing() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let created = admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("pets", "v1")),
        })
        .await
        .expect("create")
        .into_inner();
    let updated = admin
        .update_api(UpdateApiRequest {
            api: Some(mock_api("pets", "v2")),
            expected_revision: created.revision,
        })
        .await
        .expect("update at the current revision")
        .into_inner();
    assert!(updated.revision > created.revision);
    assert_eq!(updated.created_at, created.created_at);

    let err = admin
        .update_api(UpdateApiRequest {
            api: Some(mock_api("pets", "v3")),
            expected_revision: created.revision,
        })
        .await
        .expect_err("stale");
    assert_eq!(err.code(), Code::Aborted);
    let current = admin
        .get_api(GetApiRequest {
            name: "pets".into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(crate::support::mock_body(&current), Some("v2"));
    assert_eq!(current.revision, updated.revision);
}

#[tokio::test]
async fn api_keys_are_stored_hashed_and_shown_once() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let created = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(pylon_proto::config::v1::ApiKey {
                name: "ci".into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("create key")
        .into_inner();
    assert_eq!(created.value.len(), 40);
    let key = created.api_key.expect("key");
    let stored = admin
        .get_api_key(GetApiKeyRequest {
            id: key.id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    use reference::sha256_hex;
    assert_eq!(stored.key_hash, sha256_hex(&created.value));
    let json = serde_json::to_string(&stored).expect("json");
    assert!(
        !json.contains(&created.value),
        "the plain key is never returned again"
    );
    let err = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(pylon_proto::config::v1::ApiKey {
                name: "x".into(),
                ..Default::default()
            }),
            value: "short".into(),
        })
        .await
        .expect_err("short value");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("value:"), "{}", err.message());
}

/// SHA-256 via the system's `sha256sum`, so the test does not reuse the code it checks.
mod reference {
    pub fn sha256_hex(value: &str) -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("sha256sum output");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test]
async fn health_and_both_reflection_versions_answer_without_our_proto_files() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "pylon.admin.v1.AdminService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::{v1, v1alpha};
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = stream.message().await.expect("message").expect("a response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"pylon.admin.v1.AdminService".to_owned()),
        "{names:?}"
    );

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "pylon.admin.v1.AdminService".into(),
            ),
        ),
    };
    let mut stream = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = stream.message().await.expect("message").expect("a response");
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test]
async fn a_token_guards_the_admin_api_and_non_loopback_listening_requires_one() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_secured(1, "correct-horse-battery-staple\n").await;
    let endpoint = cluster.nodes[0].endpoint();

    let mut anonymous = pylon_tests::connect(&endpoint).await.expect("connect");
    let err = anonymous
        .list_apis(ListApisRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(ListApisRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().expect("header"));
    assert_eq!(
        anonymous
            .list_apis(request)
            .await
            .expect_err("wrong token")
            .code(),
        Code::Unauthenticated
    );
    let mut request = tonic::Request::new(ListApisRequest::default());
    request.metadata_mut().insert(
        "authorization",
        "Bearer correct-horse-battery-staple".parse().expect("header"),
    );
    anonymous
        .list_apis(request)
        .await
        .expect("the right token is accepted");
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
    let mut request = tonic::Request::new(ListApisRequest::default());
    request.metadata_mut().insert(
        "authorization",
        "bearer correct-horse-battery-staple".parse().expect("header"),
    );
    anonymous
        .list_apis(request)
        .await
        .expect("a lower-case scheme is accepted");

    // Reflection describes the whole API: it needs the token too; health does not.
    use tonic_reflection::pb::v1;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let list = || v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([list()]))
        .await
        .expect_err("reflection without the token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(tokio_stream::iter([list()]));
    request.metadata_mut().insert(
        "authorization",
        "Bearer correct-horse-battery-staple".parse().expect("header"),
    );
    let mut stream = reflection
        .server_reflection_info(request)
        .await
        .expect("reflection with the token")
        .into_inner();
    assert!(stream.message().await.expect("message").is_some());
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "pylon.admin.v1.AdminService".into(),
        })
        .await
        .expect("health answers without a token");

    let output = std::process::Command::new(pylon_bin())
        .args(["control-plane", "--node-id=1"])
        .arg(format!("--listen=0.0.0.0:{}", free_port()))
        .arg(format!("--raft-listen=127.0.0.1:{}", free_port()))
        .arg(format!("--data-dir={}", dir.path().join("open").display()))
        .env_remove("PYLON_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert!(!output.status.success(), "refuses to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn a_node_starts_from_a_config_file_and_reports_itself_leader() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin_port, raft_port) = (free_port(), free_port());
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "node_id: 7\nlisten: 127.0.0.1:{admin_port}\nraft_listen: 127.0.0.1:{raft_port}\npeers:\n  7: 127.0.0.1:{raft_port}\ndata_dir: {}\nsnapshot_interval: 50\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(pylon_bin())
        .args(["control-plane", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let endpoint = format!("http://127.0.0.1:{admin_port}");
    let status = pylon_tests::eventually(
        "the node to lead itself",
        std::time::Duration::from_secs(20),
        || async {
            let mut admin = pylon_tests::connect(&endpoint).await.ok()?;
            let status = admin
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .ok()?
                .into_inner();
            (status.leader_id == 7).then_some(status)
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].role, "LEADER");
    assert_eq!(status.members[0].raft_address, format!("127.0.0.1:{raft_port}"));

    std::fs::write(&config, "node_id: 7\ncolour: blue\n").expect("config");
    let output = std::process::Command::new(pylon_bin())
        .args(["control-plane", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `colour`"));
}

#[tokio::test]
async fn deployment_history_pages_newest_first() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("pets", "[]")),
        })
        .await
        .expect("create");
    let mut created = Vec::new();
    for description in ["one", "two", "three"] {
        let deployment = admin
            .create_deployment(CreateDeploymentRequest {
                api: "pets".into(),
                description: description.into(),
                stage: String::new(),
            })
            .await
            .expect("deploy")
            .into_inner();
        created.push(deployment.id);
    }
    let list = |page_size: u32, page_token: String| ListDeploymentsRequest {
        api: "pets".into(),
        page: Some(Page {
            page_size,
            page_token,
        }),
        ..Default::default()
    };
    let first = admin
        .list_deployments(list(2, String::new()))
        .await
        .expect("page 1")
        .into_inner();
    let ids: Vec<&str> = first.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [created[2].as_str(), created[1].as_str()]);
    assert!(!first.next_page_token.is_empty());
    let second = admin
        .list_deployments(list(2, first.next_page_token))
        .await
        .expect("page 2")
        .into_inner();
    let ids: Vec<&str> = second.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [created[0].as_str()]);
    assert!(second.next_page_token.is_empty());
    let err = admin
        .list_deployments(list(1001, String::new()))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("page.page_size:"), "{}", err.message());
}

/// A call's outcome as its status code.
fn code<T>(result: Result<T, tonic::Status>) -> Result<(), Code> {
    result.map(|_| ()).map_err(|s| s.code())
}

/// A request carrying `token` as its bearer credential.
fn as_caller<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

#[tokio::test]
async fn each_credential_reaches_only_what_its_role_allows_and_sighup_rotates_them() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = |name: &str, token: &str| {
        let path = dir.path().join(format!("{name}.token"));
        std::fs::write(&path, token).expect("token file");
        path
    };
    let entries = [
        ("alice", "operator", token_file("alice", "op-secret")),
        ("ci", "reader", token_file("ci", "ro-secret")),
        ("dp-eu", "data-plane", token_file("dp-eu", "dp-secret")),
        ("cp", "peer", token_file("cp", "peer-secret")),
    ];
    let yaml: String = entries
        .iter()
        .map(|(name, role, file)| {
            format!(
                "- {{name: {name}, role: {role}, token_file: {}}}\n",
                file.display()
            )
        })
        .collect();
    let credentials = dir.path().join("credentials.yaml");
    std::fs::write(&credentials, yaml).expect("credentials file");
    // Three nodes: their Raft traffic (and forwarded writes) uses the peer credential.
    let cluster = Cluster::start_with_credentials(3, &credentials, "op-secret").await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = pylon_tests::connect(&endpoint).await.expect("connect");

    // The operator writes; the reader reads but cannot write.
    let api = |name: &str| CreateApiRequest {
        api: Some(pylon_proto::config::v1::Api {
            name: name.into(),
            ..Default::default()
        }),
    };
    code(admin.create_api(as_caller(api("by-alice"), "op-secret")).await).expect("operator writes");
    code(
        admin
            .list_apis(as_caller(ListApisRequest::default(), "ro-secret"))
            .await,
    )
    .expect("reader reads");
    assert_eq!(
        code(admin.create_api(as_caller(api("by-ci"), "ro-secret")).await),
        Err(Code::PermissionDenied)
    );
    // A backup holds every key's digest: operators only.
    assert_eq!(
        code(
            admin
                .export_backup(as_caller(ExportBackupRequest {}, "ro-secret"))
                .await
        ),
        Err(Code::PermissionDenied)
    );
    // A data plane's or a peer's credential is no admin credential.
    for token in ["dp-secret", "peer-secret"] {
        let delete = DeleteUsagePlanRequest {
            name: "any".into(),
            ..Default::default()
        };
        assert_eq!(
            code(admin.delete_usage_plan(as_caller(delete, token)).await),
            Err(Code::PermissionDenied)
        );
        assert_eq!(
            code(
                admin
                    .list_apis(as_caller(ListApisRequest::default(), token))
                    .await
            ),
            Err(Code::PermissionDenied)
        );
    }
    // Only peers reach the Raft port.
    let raft = format!("http://{}", cluster.nodes[0].raft_address());
    let mut peer_port = pylon_proto::raft::v1::raft_transport_client::RaftTransportClient::connect(raft)
        .await
        .expect("raft port");
    let status = || pylon_proto::raft::v1::StatusRequest {};
    assert_eq!(
        code(peer_port.status(as_caller(status(), "op-secret")).await),
        Err(Code::PermissionDenied)
    );
    code(peer_port.status(as_caller(status(), "peer-secret")).await).expect("a peer reaches the Raft port");

    // A data plane subscribes with its own credential and serves.
    let backend = pylon_tests::gateway::Backend::start("roles").await;
    let mut operator = cluster.nodes[0].admin().await.expect("operator");
    crate::support::deploy(
        &mut operator,
        crate::support::shop_api("roles"),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy");
    let dp_token = entries[2].2.display().to_string();
    let dp = pylon_tests::gateway::DataPlaneNode::start(
        dir.path(),
        "dp-eu",
        std::slice::from_ref(&endpoint),
        &[&format!("--token-file={dp_token}")],
    );
    let client = pylon_tests::gateway::HttpClient::default();
    pylon_tests::eventually(
        "the data plane serves",
        std::time::Duration::from_secs(15),
        || async {
            let reply = client
                .get(dp.address(), "shop.localhost", "/prod/hello")
                .await
                .ok()?;
            (reply.status == 200).then_some(())
        },
    )
    .await;

    // SIGHUP reloads the file: the reader's rotated token works, the old one does not.
    std::fs::write(&entries[1].2, "ro-rotated").expect("rotate");
    for node in &cluster.nodes {
        let pid = node.pid().expect("running").to_string();
        let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
    }
    pylon_tests::eventually(
        "the rotated token is accepted",
        std::time::Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move {
                admin
                    .list_apis(as_caller(ListApisRequest::default(), "ro-rotated"))
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(
        code(
            admin
                .list_apis(as_caller(ListApisRequest::default(), "ro-secret"))
                .await
        ),
        Err(Code::Unauthenticated)
    );

    // The peer token rotates the same way: nodes present what they reloaded,
    // and writes sent to any node (followers forward them) still commit.
    std::fs::write(&entries[3].2, "peer-rotated").expect("rotate");
    for node in &cluster.nodes {
        let pid = node.pid().expect("running").to_string();
        let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let admin = pylon_tests::connect(&node.endpoint()).await.expect("connect");
        pylon_tests::eventually(
            "writes commit after the peer token rotated",
            std::time::Duration::from_secs(15),
            || {
                let mut admin = admin.clone();
                let request = as_caller(api(&format!("after-rotation-{i}")), "op-secret");
                async move { admin.create_api(request).await.ok() }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_data_plane_uses_its_rotated_token_when_it_reconnects_and_survives_sighup() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let operator = write("op.token", "op-secret");
    let (old, new) = (
        write("old.token", "dp-old-token"),
        write("new.token", "dp-new-token"),
    );
    let both = format!(
        "- {{name: alice, role: operator, token_file: {}}}\n- {{name: dp-old, role: data-plane, token_file: {}}}\n- {{name: dp-new, role: data-plane, token_file: {}}}\n",
        operator.display(),
        old.display(),
        new.display()
    );
    let credentials = write("credentials.yaml", &both);
    let mut cluster = Cluster::start_with_credentials(1, &credentials, "op-secret").await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let backend = pylon_tests::gateway::Backend::start("rotated").await;
    crate::support::deploy(
        &mut admin,
        crate::support::shop_api("v1"),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy");
    let dp_token = write("dp.token", "dp-old-token");
    let dp = pylon_tests::gateway::DataPlaneNode::start(
        dir.path(),
        "dp",
        std::slice::from_ref(&endpoint),
        &[&format!("--token-file={}", dp_token.display())],
    );
    let client = pylon_tests::gateway::HttpClient::default();
    let marker = |expected: &'static str| {
        let (client, address) = (client.clone(), dp.address());
        async move {
            let reply = client.get(address, "shop.localhost", "/prod/hello").await.ok()?;
            (reply.status == 200 && reply.body.contains(expected)).then_some(())
        }
    };
    pylon_tests::eventually(
        "served with the old token",
        std::time::Duration::from_secs(15),
        || marker("v1"),
    )
    .await;

    // Rotate: the data plane's file gets the new token, the old one is
    // withdrawn, and the control plane restarts (every data plane reconnects).
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &dp.pid().expect("running").to_string()])
        .status();
    std::fs::write(&dp_token, "dp-new-token").expect("rotate");
    std::fs::write(
        &credentials,
        format!(
            "- {{name: alice, role: operator, token_file: {}}}\n- {{name: dp-new, role: data-plane, token_file: {}}}\n",
            operator.display(),
            new.display()
        ),
    )
    .expect("withdraw the old token");
    cluster.nodes[0].kill();
    cluster.nodes[0].start().expect("restart");
    cluster.wait_for_leader().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    crate::support::deploy(
        &mut admin,
        crate::support::shop_api("v2"),
        "prod",
        &[("backend", &backend.url())],
    )
    .await
    .expect("deploy v2");
    pylon_tests::eventually(
        "the data plane reconnected with the rotated token and serves v2",
        std::time::Duration::from_secs(20),
        || marker("v2"),
    )
    .await;
    // Serving v2 also shows the SIGHUP before the rotation did not end it.
}
