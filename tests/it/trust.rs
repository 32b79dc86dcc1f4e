//! Control-plane trust: retried writes that cannot double, an audit log that
//! names the caller, and data planes that notice when the cluster behind
//! their endpoint is no longer the one they served.

use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, ApiKey};
use pylon_tests::gateway::{DataPlaneNode, HttpClient};
use pylon_tests::{Cluster, eventually, pylon_cli, serial};
use serde_json::Value;
use std::time::Duration;
use tonic::Code;

/// A request from the caller holding `token`, with an idempotency key.
fn keyed<T>(message: T, token: &str, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    metadata.insert("idempotency-key", key.parse().expect("header"));
    request
}

fn create_api(name: &str, description: &str) -> CreateApiRequest {
    CreateApiRequest {
        api: Some(Api {
            name: name.into(),
            description: description.into(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn a_retried_write_answers_its_first_outcome_and_the_audit_log_names_who_made_it() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (alice, ci) = (file("alice", "op-secret"), file("ci", "ro-secret"));
    let credentials = file(
        "credentials.yaml",
        &format!(
            "- {{name: alice, role: operator, token_file: {}}}\n- {{name: ci, role: reader, token_file: {}}}\n",
            alice.display(),
            ci.display()
        ),
    );
    let cluster = Cluster::start_with_credentials(1, &credentials, "op-secret").await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");

    // A create sent twice with one key is created once and answered twice alike.
    let first = admin
        .create_api(keyed(create_api("pets", "v1"), "op-secret", "create-pets-1"))
        .await
        .expect("created")
        .into_inner();
    let again = admin
        .create_api(keyed(create_api("pets", "v1"), "op-secret", "create-pets-1"))
        .await
        .expect("a retry is no ALREADY_EXISTS")
        .into_inner();
    assert_eq!(again, first);
    // The same key with another request is refused, naming the key.
    let reused = admin
        .create_api(keyed(create_api("cats", "v1"), "op-secret", "create-pets-1"))
        .await
        .expect_err("another request under a used key");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert!(
        reused.message().contains("idempotency-key"),
        "{}",
        reused.message()
    );
    let too_long = admin
        .create_api(keyed(create_api("cats", "v1"), "op-secret", &"k".repeat(129)))
        .await
        .expect_err("a 129-character key");
    assert_eq!(too_long.code(), Code::InvalidArgument);

    // Membership changes keep no outcome: a key on them is refused, not ignored.
    let join = admin
        .add_member(keyed(
            AddMemberRequest {
                node_id: 9,
                raft_address: "127.0.0.1:9".into(),
            },
            "op-secret",
            "join-9",
        ))
        .await
        .expect_err("a key on a membership change");
    assert_eq!(join.code(), Code::InvalidArgument);
    assert!(join.message().contains("idempotency-key"), "{}", join.message());

    // A key created twice is one key; the retry cannot show a value it never had.
    let new_key = || CreateApiKeyRequest {
        api_key: Some(ApiKey {
            name: "partner".into(),
            enabled: true,
            ..Default::default()
        }),
        value: String::new(),
    };
    let created = admin
        .create_api_key(keyed(new_key(), "op-secret", "key-1"))
        .await
        .expect("key")
        .into_inner();
    let retried = admin
        .create_api_key(keyed(new_key(), "op-secret", "key-1"))
        .await
        .expect("key retried")
        .into_inner();
    assert_eq!(created.value.len(), 40);
    assert_eq!(retried.api_key, created.api_key);
    assert_eq!(
        retried.value, "",
        "the first value was shown once and is not kept"
    );
    let keys = admin
        .list_api_keys(keyed(
            ListApiKeysRequest::default(),
            "ro-secret",
            "ignored-on-reads",
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(keys.api_keys.len(), 1);

    // The reader sees who wrote what, newest first; refusals made before
    // the log (the reused key) are not writes and are not there.
    let audit = admin
        .list_audit_records(keyed(ListAuditRecordsRequest::default(), "ro-secret", "r"))
        .await
        .expect("a reader reads the audit log")
        .into_inner();
    let seen: Vec<(String, String, String)> = audit
        .records
        .iter()
        .filter(|r| r.actor.as_ref().is_some_and(|a| a.name != "system"))
        .map(|r| {
            let who = r
                .actor
                .as_ref()
                .map(|a| format!("{} {:?}", a.name, a.roles))
                .unwrap_or_default();
            let what = r.resource.as_ref().map(|t| t.name.clone()).unwrap_or_default();
            (who, r.method.clone(), what)
        })
        .collect();
    let key_id = created.api_key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
    assert_eq!(
        seen,
        vec![
            (
                r#"alice ["operator"]"#.to_owned(),
                "CreateApiKey".to_owned(),
                key_id
            ),
            (
                r#"alice ["operator"]"#.to_owned(),
                "CreateApi".to_owned(),
                "pets".to_owned()
            ),
        ]
    );
    let page = admin
        .list_audit_records(keyed(
            ListAuditRecordsRequest {
                page: Some(Page {
                    page_size: 1,
                    page_token: String::new(),
                }),
                ..Default::default()
            },
            "ro-secret",
            "r",
        ))
        .await
        .expect("one page")
        .into_inner();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.next_page_token, page.records[0].index.to_string());
}

/// `pylon nodes -o json` (protobuf JSON names), by node id.
fn nodes(endpoint: &str) -> std::collections::BTreeMap<String, Value> {
    let text = pylon_cli(endpoint, &["nodes", "-o", "json"]).unwrap_or_default();
    let list: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    list["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (n["nodeId"].as_str().unwrap_or("").to_owned(), n.clone()))
        .collect()
}

async fn cluster_id(admin: &mut pylon_tests::Admin) -> String {
    eventually("the cluster is named", Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move {
            let status = admin.get_cluster_status(GetClusterStatusRequest {}).await.ok()?;
            let id = status.into_inner().cluster_id;
            (!id.is_empty()).then_some(id)
        }
    })
    .await
}

async fn serves(client: &HttpClient, node: &DataPlaneNode, marker: &str) -> bool {
    client
        .get(node.address(), "shop.localhost", "/prod/hello")
        .await
        .is_ok_and(|reply| reply.status == 200 && reply.body.contains(marker))
}

#[tokio::test]
async fn a_data_plane_meeting_a_rebuilt_cluster_adopts_it_with_a_warning_unless_pinned() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let old_cluster = cluster_id(&mut admin).await;
    // Several versions, so the old cluster is ahead of the rebuilt one.
    for marker in ["old-1", "old-2", "old-3"] {
        crate::support::deploy(
            &mut admin,
            crate::support::shop_api(marker),
            "prod",
            &[("backend", "http://127.0.0.1:9")],
        )
        .await
        .expect("deploy");
    }
    let pin = format!("--pin-cluster-id={old_cluster}");
    let free = DataPlaneNode::start(dir.path(), "dp-free", std::slice::from_ref(&endpoint), &[]);
    let pinned = DataPlaneNode::start(dir.path(), "dp-pinned", std::slice::from_ref(&endpoint), &[&pin]);
    let client = HttpClient::default();
    for node in [&free, &pinned] {
        eventually("both serve the old cluster", Duration::from_secs(15), || async {
            serves(&client, node, "old-3").await.then_some(())
        })
        .await;
    }

    // The control plane is rebuilt on the same address with a fresh data dir.
    cluster.nodes[0].kill();
    std::fs::remove_dir_all(&cluster.nodes[0].data_dir).expect("wipe the data dir");
    cluster.nodes[0].start().expect("start afresh");
    cluster.wait_for_leader().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let new_cluster = cluster_id(&mut admin).await;
    assert_ne!(new_cluster, old_cluster);
    crate::support::deploy(
        &mut admin,
        crate::support::shop_api("new-1"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("deploy on the new cluster");

    // The free node adopts the new cluster's lower version and says so.
    eventually(
        "the free node serves the new cluster",
        Duration::from_secs(20),
        || async { serves(&client, &free, "new-1").await.then_some(()) },
    )
    .await;
    let listed = eventually("both nodes reported", Duration::from_secs(10), || async {
        let listed = nodes(&endpoint);
        let reported = listed
            .get("dp-free")
            .is_some_and(|n| n["clusterId"] == new_cluster.as_str())
            && listed.get("dp-pinned").is_some_and(|n| n["lastResult"] == "NACK");
        reported.then_some(listed)
    })
    .await;
    let warning = listed["dp-free"]["warning"].as_str().unwrap_or("");
    assert!(
        warning.contains(&old_cluster) && warning.contains("adopted"),
        "{warning}"
    );
    assert!(free.log_text().contains("serving config from a changed cluster"));
    // The pinned node NACKs, names the pin, keeps serving the old config.
    let error = listed["dp-pinned"]["lastError"].as_str().unwrap_or("");
    assert!(error.contains("--pin-cluster-id"), "{error}");
    assert!(serves(&client, &pinned, "old-3").await);
    let table = pylon_cli(&endpoint, &["nodes"]).expect("nodes table");
    assert!(table.contains("OTHER CLUSTER"), "{table}");
}

#[tokio::test]
async fn a_cluster_restored_from_an_older_backup_is_adopted_as_gone_back() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let id = cluster_id(&mut admin).await;
    crate::support::deploy(
        &mut admin,
        crate::support::shop_api("backed-up"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("deploy");
    // A backup: the stopped node's data dir, copied.
    cluster.nodes[0].kill();
    let data_dir = cluster.nodes[0].data_dir.clone();
    let backup = dir.path().join("backup");
    let copied = std::process::Command::new("cp")
        .args([
            "-a",
            &data_dir.display().to_string(),
            &backup.display().to_string(),
        ])
        .status()
        .expect("cp");
    assert!(copied.success());
    cluster.nodes[0].start().expect("restart");
    cluster.wait_for_leader().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    for marker in ["later-1", "later-2"] {
        crate::support::deploy(
            &mut admin,
            crate::support::shop_api(marker),
            "prod",
            &[("backend", "http://127.0.0.1:9")],
        )
        .await
        .expect("deploy");
    }
    let node = DataPlaneNode::start(dir.path(), "dp", std::slice::from_ref(&endpoint), &[]);
    let client = HttpClient::default();
    eventually("serves the latest", Duration::from_secs(15), || async {
        serves(&client, &node, "later-2").await.then_some(())
    })
    .await;

    // Restore the backup: same cluster, older version.
    cluster.nodes[0].kill();
    std::fs::remove_dir_all(&data_dir).expect("remove");
    std::fs::rename(&backup, &data_dir).expect("restore");
    cluster.nodes[0].start().expect("start the restored node");
    cluster.wait_for_leader().await;
    eventually(
        "the node went back with the cluster",
        Duration::from_secs(20),
        || async { serves(&client, &node, "backed-up").await.then_some(()) },
    )
    .await;
    let listed = nodes(&endpoint);
    assert_eq!(listed["dp"]["clusterId"], id.as_str());
    let warning = listed["dp"]["warning"].as_str().unwrap_or("");
    assert!(warning.contains("went back"), "{warning}");
}

/// `ListApis` on `endpoint` (TLS, trusting `ca`), showing the certificate
/// and key files `identity` if given; a failed connection counts as refused.
async fn list_as(
    endpoint: &str,
    ca: &[u8],
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<(), tonic::Status> {
    let read = |path: &std::path::Path| std::fs::read(path).expect("read");
    let identity = identity.map(|(cert, key)| (read(cert), read(key)));
    let mut admin = pylon_tests::connect_as(endpoint, None, Some(ca), identity.as_ref())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    admin.list_apis(ListApisRequest::default()).await.map(drop)
}

#[tokio::test]
async fn with_mutual_tls_certificates_name_peers_data_planes_and_operators_without_any_token() {
    let _serial = serial().await;
    // Three nodes that reach each other with their certificates only: a
    // leader and a replicated write show the peers accepted each other.
    let cluster = Cluster::start_with_mtls(3).await;
    let endpoint = cluster.nodes[1].endpoint();
    let ca_path = cluster.ca_certificate().expect("a TLS cluster");
    let ca = std::fs::read(&ca_path).expect("CA");
    let mut admin = cluster.nodes[1]
        .admin()
        .await
        .expect("the harness's operator certificate");
    crate::support::deploy(
        &mut admin,
        crate::support::shop_api("mtls"),
        "prod",
        &[("backend", "http://127.0.0.1:9")],
    )
    .await
    .expect("an operator certificate writes");
    cluster.wait_until_caught_up().await;

    // A data plane shows its own certificate and gets its config.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = cluster.issue("dp-1", "spiffe://pylon/data-plane/dp-1");
    let flags = [
        format!("--control-plane-ca={}", ca_path.display()),
        format!("--control-plane-cert={}", cert.display()),
        format!("--control-plane-key={}", key.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = DataPlaneNode::start(dir.path(), "dp-1", std::slice::from_ref(&endpoint), &flags);
    let client = HttpClient::default();
    eventually(
        "the data plane serves with its certificate",
        Duration::from_secs(15),
        || async { serves(&client, &node, "mtls").await.then_some(()) },
    )
    .await;

    // Its certificate is no operator's; no certificate at all, or one that
    // names no role in the trust domain, is nobody.
    let read = |path: &std::path::Path| std::fs::read(path).expect("read");
    let as_data_plane = (read(&cert), read(&key));
    let mut dp_admin = pylon_tests::connect_as(&endpoint, None, Some(&ca), Some(&as_data_plane))
        .await
        .expect("connect");
    let denied = dp_admin
        .create_api(create_api("by-dp", ""))
        .await
        .expect_err("a data plane writes nothing");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("spiffe://pylon/data-plane/dp-1"),
        "{}",
        denied.message()
    );
    let refused = list_as(&endpoint, &ca, None).await.expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let odd = cluster.issue("odd", "spiffe://elsewhere/operator/eve");
    let refused = list_as(&endpoint, &ca, Some(&odd))
        .await
        .expect_err("another trust domain");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("spiffe://pylon/ROLE/NAME"),
        "{}",
        refused.message()
    );
    // A certificate naming two identities names none (an X.509-SVID has one).
    let two = cluster.issue("two", "spiffe://pylon/reader/r,URI:spiffe://pylon/operator/o");
    let refused = list_as(&endpoint, &ca, Some(&two))
        .await
        .expect_err("two URI SANs");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("exactly one"), "{}", refused.message());
    // A certificate from another CA does not get past the handshake.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let rogue =
        pylon_tests::issue_certificate(elsewhere.path(), "rogue", "URI:spiffe://pylon/operator/rogue");
    assert!(
        list_as(&endpoint, &ca, Some(&rogue)).await.is_err(),
        "a certificate of an unknown CA was accepted"
    );

    // The CLI shows an operator certificate too, and the audit log names it.
    let (op_cert, op_key) = cluster.issue("alice", "spiffe://pylon/operator/alice");
    let (ca_flag, cert_flag, key_flag) = (
        format!("--ca-cert={}", ca_path.display()),
        format!("--client-cert={}", op_cert.display()),
        format!("--client-key={}", op_key.display()),
    );
    let with_cert = |args: &[&str]| {
        let mut all = vec![ca_flag.as_str(), cert_flag.as_str(), key_flag.as_str()];
        all.extend_from_slice(args);
        pylon_cli(&endpoint, &all)
    };
    with_cert(&["keys", "create", "partner"]).expect("alice creates a key");
    let audit = with_cert(&["audit", "list"]).expect("audit");
    assert!(
        audit.contains("spiffe://pylon/operator/alice (operator)"),
        "{audit}"
    );
    assert!(
        audit.contains("spiffe://pylon/operator/harness (operator)"),
        "{audit}"
    );
}
