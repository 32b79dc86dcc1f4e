//! A 3-node control plane survives leader crashes, full restarts and
//! membership changes without losing an acknowledged write.

use crate::support::{mock_api, mock_body};
use pylon_proto::admin::v1::*;
use pylon_tests::{Cluster, eventually, serial};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::Code;

const WRITES: usize = 200;

/// Every API on one node, read locally (no ReadIndex), so each node is
/// checked on its own.
async fn local_apis(endpoint: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut admin = pylon_tests::connect(endpoint).await?;
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_apis(ListApisRequest {
                page: Some(Page {
                    page_size: 1000,
                    page_token: token,
                }),
                consistency: ReadConsistency::Stale as i32,
            })
            .await?
            .into_inner();
        for api in &page.apis {
            out.insert(api.name.clone(), mock_body(api).unwrap_or_default().to_owned());
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Writes API `i` through whichever node answers, starting at node `i % 3`,
/// retrying until it is acknowledged. Returns the body it was acknowledged with.
async fn write_until_acknowledged(endpoints: &[String], i: usize) -> String {
    let name = format!("api-{i:03}");
    let body = format!("body-{i}");
    for attempt in 0..200 {
        let endpoint = &endpoints[(i + attempt) % endpoints.len()];
        let Ok(mut admin) = pylon_tests::connect(endpoint).await else {
            continue;
        };
        match admin
            .create_api(CreateApiRequest {
                api: Some(mock_api(&name, &body)),
            })
            .await
        {
            Ok(_) => return body,
            // An earlier attempt that timed out did commit.
            Err(status) if status.code() == Code::AlreadyExists => return body,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{name} was never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_two_leader_crashes_and_match_on_every_node() {
    let _serial = serial().await;
    let cluster = Arc::new(Mutex::new(Cluster::start(3).await));
    let endpoints: Vec<String> = cluster.lock().await.nodes.iter().map(|n| n.endpoint()).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));

    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (endpoints, next, acknowledged) = (endpoints.clone(), next.clone(), acknowledged.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= WRITES {
                        return;
                    }
                    let body = write_until_acknowledged(&endpoints, i).await;
                    acknowledged.lock().await.insert(format!("api-{i:03}"), body);
                }
            })
        })
        .collect();

    let mut killed = Vec::new();
    for round in 1..=2 {
        let threshold = round * WRITES / 3;
        eventually("writes to make progress", Duration::from_secs(60), || async {
            (acknowledged.lock().await.len() >= threshold).then_some(())
        })
        .await;
        let mut guard = cluster.lock().await;
        let leader = guard.wait_for_leader().await;
        guard.by_id(leader).kill();
        killed.push(leader);
        drop(guard);
        // Writes go on against the two survivors, then the crashed node returns.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut guard = cluster.lock().await;
        guard.by_id(leader).start().expect("restart");
    }
    for client in clients {
        client.await.expect("client task");
    }

    let guard = cluster.lock().await;
    guard.wait_for_leader().await;
    guard.wait_until_caught_up().await;
    let acknowledged = acknowledged.lock().await.clone();
    assert_eq!(acknowledged.len(), WRITES);
    assert_eq!(killed.len(), 2, "the leader was killed twice");
    let mut views = Vec::new();
    for node in guard.running() {
        let apis = local_apis(&node.endpoint()).await.expect("list");
        for (name, body) in &acknowledged {
            assert_eq!(
                apis.get(name),
                Some(body),
                "node {} lost or changed acknowledged {name}",
                node.id
            );
        }
        views.push(apis);
    }
    assert_eq!(views.len(), 3);
    assert!(views.windows(2).all(|w| w[0] == w[1]), "nodes disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stopped_entirely_restarts_with_its_state_from_disk() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(3).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    for i in 0..10 {
        admin
            .create_api(CreateApiRequest {
                api: Some(mock_api(&format!("pets-{i}"), &format!("v{i}"))),
            })
            .await
            .expect("create");
    }
    let deployment = admin
        .create_deployment(CreateDeploymentRequest {
            api: "pets-0".into(),
            description: "first".into(),
            stage: "prod".into(),
        })
        .await
        .expect("deploy")
        .into_inner();
    let version_before = admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("version")
        .into_inner()
        .version;

    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start().expect("restart");
    }
    cluster.wait_for_leader().await;

    for node in &cluster.nodes {
        let apis = local_apis(&node.endpoint()).await.expect("list");
        assert_eq!(apis.len(), 10, "node {} after restart", node.id);
        assert_eq!(apis.get("pets-7").map(String::as_str), Some("v7"));
    }
    let mut admin = cluster.nodes[2].admin().await.expect("admin");
    let stage = admin
        .get_stage(GetStageRequest {
            api: "pets-0".into(),
            name: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("stage")
        .into_inner();
    assert_eq!(stage.deployment_id, deployment.id);
    let version_after = admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("version")
        .into_inner()
        .version;
    assert_eq!(
        version_after, version_before,
        "no config change happened across the restart"
    );
    admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("after-restart", "ok")),
        })
        .await
        .expect("the restarted cluster takes writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_through_a_snapshot_and_a_node_can_be_removed() {
    let _serial = serial().await;
    let mut cluster = Cluster::start_with(3, &["--snapshot-interval=20"]).await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    for i in 0..50 {
        admin
            .create_api(CreateApiRequest {
                api: Some(mock_api(&format!("svc-{i:02}"), "x")),
            })
            .await
            .expect("create");
    }
    cluster.wait_until_caught_up().await;
    let status = cluster.status().await.expect("status");
    assert!(
        status.members.iter().all(|m| m.first_index > 20),
        "every node compacted its log: {:?}",
        status
            .members
            .iter()
            .map(|m| (m.node_id, m.first_index))
            .collect::<Vec<_>>()
    );

    let joiner = cluster.start_joiner(4);
    let (joiner_endpoint, joiner_raft) = (joiner.endpoint(), joiner.raft_address());
    let after = admin
        .add_member(AddMemberRequest {
            node_id: 4,
            raft_address: joiner_raft,
        })
        .await
        .expect("add member")
        .into_inner();
    assert!(after.members.iter().any(|m| m.node_id == 4 && m.voter));

    let apis = eventually("node 4 to hold all 50 APIs", Duration::from_secs(20), || async {
        let apis = local_apis(&joiner_endpoint).await.ok()?;
        (apis.len() == 50).then_some(apis)
    })
    .await;
    assert!(apis.contains_key("svc-49"));
    let joined = cluster.status().await.expect("status");
    let four = joined
        .members
        .iter()
        .find(|m| m.node_id == 4)
        .expect("node 4 listed");
    assert!(
        four.snapshot_index > 20,
        "node 4 caught up from a snapshot, not from index 1: {four:?}"
    );

    // Remove a follower; the other three go on taking writes.
    let leader = cluster.wait_for_leader().await;
    let victim = [1, 2, 3, 4]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut admin = cluster.by_id(leader).admin().await.expect("admin");
    let after = admin
        .remove_member(RemoveMemberRequest { node_id: victim })
        .await
        .expect("remove")
        .into_inner();
    let ids: BTreeSet<u64> = after.members.iter().map(|m| m.node_id).collect();
    assert!(!ids.contains(&victim), "{victim} is gone from {ids:?}");
    assert_eq!(ids.len(), 3);
    cluster.by_id(victim).kill();
    admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("after-removal", "ok")),
        })
        .await
        .expect("writes go on without the removed node");
    let err = admin
        .remove_member(RemoveMemberRequest { node_id: victim })
        .await
        .expect_err("already gone");
    assert_eq!(err.code(), Code::NotFound);
    // Both membership changes are in the audit log.
    let audit = crate::support::audit_records(&mut admin).await;
    let methods: Vec<&str> = audit.iter().map(|r| r.method.as_str()).collect();
    assert!(
        methods.contains(&"AddMember") && methods.contains(&"RemoveMember"),
        "{methods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_admin_api_and_raft_peers_talk_only_over_tls() {
    let _serial = serial().await;
    let cluster = Cluster::start_with_tls(3).await;
    cluster.wait_until_caught_up().await;
    let status = cluster.status().await.expect("status over TLS");
    assert!(
        status
            .members
            .iter()
            .all(|m| m.role != "UNREACHABLE" && m.error.is_empty()),
        "every peer answered over TLS: {:?}",
        status.members
    );

    let leader = cluster.wait_for_leader().await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).expect("a follower");
    let mut admin = follower.admin().await.expect("https admin");
    admin
        .create_api(CreateApiRequest {
            api: Some(mock_api("secure", "ok")),
        })
        .await
        .expect("a write through a follower is replicated over TLS");

    let plain = follower.endpoint().replacen("https://", "http://", 1);
    let refused = match pylon_tests::connect(&plain).await {
        Err(_) => true,
        Ok(mut admin) => admin.list_apis(ListApisRequest::default()).await.is_err(),
    };
    assert!(refused, "plaintext gRPC is not served on a TLS port");

    let certificate = cluster.ca_certificate().expect("CA certificate");
    let listed = pylon_tests::pylon_cli(
        &follower.endpoint(),
        &[
            "--ca-cert",
            certificate.to_str().expect("utf-8"),
            "apis",
            "list",
            "-o",
            "json",
        ],
    )
    .expect("the CLI speaks TLS with --ca-cert");
    assert!(listed.contains("\"secure\""), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_node_cluster_keeps_taking_writes_with_two_nodes_down() {
    let _serial = serial().await;
    let mut cluster = Cluster::start(5).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = (1..=5).filter(|id| *id != leader).collect();
    // Lose the leader and one follower: three of five is still a quorum.
    cluster.by_id(leader).kill();
    cluster.by_id(followers[0]).kill();
    let survivor = cluster.by_id(followers[1]).endpoint();
    let mut admin = pylon_tests::connect(&survivor).await.expect("admin");
    let created = eventually(
        "a write on the surviving majority",
        Duration::from_secs(20),
        || {
            let mut admin = admin.clone();
            async move {
                admin
                    .create_api(CreateApiRequest {
                        api: Some(mock_api("majority", "ok")),
                    })
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(created.into_inner().name, "majority");
    let read = admin
        .get_api(GetApiRequest {
            name: "majority".into(),
            ..Default::default()
        })
        .await
        .expect("a linearizable read on the majority");
    assert_eq!(mock_body(read.get_ref()), Some("ok"));
    cluster.by_id(followers[2]).kill();
    let err = admin
        .get_api(GetApiRequest {
            name: "majority".into(),
            ..Default::default()
        })
        .await
        .expect_err("two of five cannot confirm a read index");
    assert_eq!(err.code(), Code::Unavailable);
    let stale = admin
        .get_api(GetApiRequest {
            name: "majority".into(),
            consistency: ReadConsistency::Stale as i32,
        })
        .await
        .expect("a stale read is answered locally");
    assert_eq!(mock_body(stale.get_ref()), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_leadership_over_and_writes_go_on() {
    let _serial = serial().await;
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("another node");
    let mut admin = other.admin().await.expect("admin");
    let after = admin
        .remove_member(RemoveMemberRequest { node_id: leader })
        .await
        .expect("remove the leader")
        .into_inner();
    assert!(
        after.members.iter().all(|m| m.node_id != leader),
        "{:?}",
        after.members
    );
    assert_ne!(after.leader_id, leader);
    let mut request = tonic::Request::new(CreateApiRequest {
        api: Some(mock_api("after-leader-left", "ok")),
    });
    request.set_timeout(Duration::from_secs(5));
    admin
        .create_api(request)
        .await
        .expect("the two remaining nodes take writes at once");
}

/// Whether this process may make mount namespaces (root, with `unshare`).
fn can_mount() -> bool {
    std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_node_short_of_disk_refuses_writes_naming_its_directory_keeps_reading_and_resumes() {
    if !can_mount() {
        eprintln!("SKIPPED: needs root (unshare --mount) to give a node a small disk of its own");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Confined::start(dir.path(), 1, &pylon_tests::Cluster::ports(1));
    let mut admin = pylon_tests::eventually("the node answers", Duration::from_secs(20), || async {
        let mut admin = pylon_tests::connect(&node.endpoint).await.ok()?;
        let api = pylon_proto::config::v1::Api {
            name: "before".into(),
            ..Default::default()
        };
        admin.create_api(CreateApiRequest { api: Some(api) }).await.ok()?;
        Some(admin)
    })
    .await;

    node.fill();
    let create = |name: &str| CreateApiRequest {
        api: Some(pylon_proto::config::v1::Api {
            name: name.into(),
            ..Default::default()
        }),
    };
    // (The watch measures once a second: the first tries may still pass.)
    let tries = AtomicUsize::new(0);
    let refused = pylon_tests::eventually("writes are refused", Duration::from_secs(10), || {
        let mut admin = admin.clone();
        let request = create(&format!("during-{}", tries.fetch_add(1, Ordering::Relaxed)));
        async move { admin.create_api(request).await.err() }
    })
    .await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains(&node.data_dir().display().to_string()),
        "{}",
        refused.message()
    );
    // Reads go on, and the node is still there.
    let read = admin
        .get_api(GetApiRequest {
            name: "before".into(),
            ..Default::default()
        })
        .await
        .expect("a linearizable read on a node short of disk");
    assert_eq!(read.into_inner().name, "before");
    assert!(
        std::path::Path::new(&format!("/proc/{}", node.child.id())).exists(),
        "the node exited"
    );

    // Space frees: writes resume without a restart.
    node.free();
    pylon_tests::eventually("writes resume", Duration::from_secs(10), || {
        let mut admin = admin.clone();
        let request = create("after");
        async move { admin.create_api(request).await.ok() }
    })
    .await;
    let logged = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap_or_default();
    assert!(
        logged.contains("disk almost full") && logged.contains("disk space is back"),
        "{logged}"
    );
}

/// A control-plane node in its own mount namespace on a 160 MiB tmpfs of its
/// own, keeping 48 MiB free (`--min-free-space-mb`).
struct Confined {
    child: std::process::Child,
    mount: std::path::PathBuf,
    endpoint: String,
}

impl Confined {
    fn start(dir: &std::path::Path, id: u64, ports: &[(u16, u16)]) -> Confined {
        let mount = dir.join(format!("disk-{id}"));
        std::fs::create_dir_all(&mount).expect("mount point");
        let (admin, raft) = ports[id as usize - 1];
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, (_, raft))| format!("--peer={}=127.0.0.1:{raft}", i + 1));
        let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).expect("log");
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o size=160m pylon-test \"$0\" && exec \"$@\"")
            .arg(&mount)
            .arg(pylon_tests::pylon_bin())
            .args([
                "control-plane".to_owned(),
                format!("--node-id={id}"),
                format!("--listen=127.0.0.1:{admin}"),
                format!("--raft-listen=127.0.0.1:{raft}"),
                format!("--data-dir={}", mount.join("data").display()),
                "--min-free-space-mb=48".to_owned(),
            ])
            .args(peers)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("unshare");
        Confined {
            child,
            mount,
            endpoint: format!("http://127.0.0.1:{admin}"),
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.mount.join("data")
    }

    fn ballast(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!(
            "/proc/{}/root{}/ballast",
            self.child.id(),
            self.mount.display()
        ))
    }

    /// Fills the node's disk, leaving it 20 MiB (below its 48 MiB reserve).
    fn fill(&self) {
        let mut ballast = std::fs::File::create(self.ballast()).expect("ballast");
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while std::io::Write::write_all(&mut ballast, &chunk).is_ok() {
            written += chunk.len() as u64;
        }
        ballast
            .set_len(written.saturating_sub(20 << 20))
            .expect("leave 20 MiB");
    }

    fn free(&self) {
        std::fs::remove_file(self.ballast()).expect("remove the ballast");
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn leader_of(endpoint: &str) -> Option<u64> {
    let mut admin = pylon_tests::connect(endpoint).await.ok()?;
    let status = admin.get_cluster_status(GetClusterStatusRequest {}).await.ok()?;
    Some(status.into_inner().leader_id).filter(|id| *id != 0)
}

#[tokio::test]
async fn a_leader_and_a_follower_short_of_disk_leave_leadership_to_the_healthy_node_and_no_write_is_taken() {
    if !can_mount() {
        eprintln!("SKIPPED: needs root (unshare --mount) to give nodes small disks of their own");
        return;
    }
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = pylon_tests::Cluster::ports(3);
    let nodes: Vec<Confined> = (1..=3)
        .map(|id| Confined::start(dir.path(), id, &ports))
        .collect();
    let leader = eventually("a leader", Duration::from_secs(20), || {
        leader_of(&nodes[0].endpoint)
    })
    .await;
    let follower = if leader == 1 { 2 } else { 1 };
    let healthy = 6 - leader - follower;
    let node = |id: u64| &nodes[id as usize - 1];

    // The follower's disk fills first, then the leader's.
    node(follower).fill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    node(leader).fill();
    // Leadership ends up with the only node that has space, never a full one.
    eventually("the healthy node leads", Duration::from_secs(20), || async {
        (leader_of(&node(healthy).endpoint).await == Some(healthy)).then_some(())
    })
    .await;
    // With two of three voters full, no write is taken.
    let mut admin = pylon_tests::connect(&node(healthy).endpoint)
        .await
        .expect("admin");
    let api = |name: &str| CreateApiRequest {
        api: Some(pylon_proto::config::v1::Api {
            name: name.into(),
            ..Default::default()
        }),
    };
    let refused = admin
        .create_api(api("while-full"))
        .await
        .expect_err("no quorum with space");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for full in [leader, follower] {
        assert_ne!(
            leader_of(&node(full).endpoint).await,
            Some(full),
            "a full node leads"
        );
    }

    // Space frees: the cluster takes writes again.
    node(leader).free();
    node(follower).free();
    eventually("writes resume", Duration::from_secs(20), || {
        let mut admin = admin.clone();
        async move { admin.create_api(api("after")).await.ok() }
    })
    .await;
}

/// The keyed `vault` API: `GET /secret` answers `body` to callers with an
/// API key of a plan that offers the stage.
fn vault_api(body: &str) -> pylon_proto::config::v1::Api {
    let mut api = mock_api("vault", body);
    api.routes[0].path = "/secret".into();
    api.routes[0].authorization = Some(pylon_proto::config::v1::Authorization {
        api_key_required: true,
        ..Default::default()
    });
    api
}

#[tokio::test]
async fn a_backup_restores_on_a_new_cluster_with_its_history_and_the_same_api_keys() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.backup");
    let file_arg = file.display().to_string();

    // The old cluster: two deployments of the vault, a key and its plan.
    let (history, key) = {
        let old = Cluster::start(1).await;
        let mut admin = old.nodes[0].admin().await.expect("admin");
        crate::support::deploy(&mut admin, vault_api("v1"), "prod", &[])
            .await
            .expect("v1");
        crate::support::deploy(&mut admin, vault_api("v2"), "prod", &[])
            .await
            .expect("v2");
        // A large API deployed twice: the backup is over the 4 MiB of one
        // ordinary admin message (its limit is the restore's, 64 MiB).
        let large = mock_api("large", &"x".repeat(1_500_000));
        crate::support::deploy(&mut admin, large.clone(), "prod", &[])
            .await
            .expect("large");
        crate::support::deploy(&mut admin, large, "prod", &[])
            .await
            .expect("large again");
        let (key_id, key) = crate::support::create_key(&mut admin, "client").await;
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(pylon_proto::config::v1::UsagePlan {
                    name: "gold".into(),
                    api_stages: vec![pylon_proto::config::v1::ApiStageRef {
                        api: "vault".into(),
                        stage: "prod".into(),
                        ..Default::default()
                    }],
                    api_key_ids: vec![key_id],
                    ..Default::default()
                }),
            })
            .await
            .expect("plan");
        let taken =
            pylon_tests::pylon_cli(&old.nodes[0].endpoint(), &["backup", "-o", &file_arg]).expect("backup");
        assert!(
            taken.contains("2 APIs, 4 deployments, 2 stages, 1 API keys, 1 usage plans"),
            "{taken}"
        );
        let history = admin
            .list_deployments(ListDeploymentsRequest {
                api: "vault".into(),
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner()
            .deployments;
        (history, key)
        // The old cluster is gone here.
    };
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).expect("file").permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "only the owner reads a backup (it holds key digests)"
    );

    let new = Cluster::start(1).await;
    let endpoint = new.nodes[0].endpoint();
    let mut admin = new.nodes[0].admin().await.expect("admin");
    // A file that is not a backup is refused before any call.
    let yaml = dir.path().join("not-a-backup.yaml");
    std::fs::write(&yaml, "api: {name: x}\n").expect("yaml");
    let refused = pylon_tests::pylon_cli(&endpoint, &["restore", &yaml.display().to_string()])
        .expect_err("not a backup");
    assert!(
        format!("{refused:#}").contains("is not a Pylon backup"),
        "{refused:#}"
    );
    // A damaged backup is refused naming the field, and changes nothing.
    let mut damaged = admin
        .export_backup(ExportBackupRequest {})
        .await
        .expect("empty")
        .into_inner();
    damaged.api_keys.push(pylon_proto::config::v1::ApiKey {
        id: "k1".into(),
        name: "forged".into(),
        key_hash: "not-a-digest".into(),
        ..Default::default()
    });
    let status = admin
        .restore_backup(RestoreBackupRequest {
            backup: Some(damaged),
            replace: false,
        })
        .await
        .expect_err("damaged");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("backup.api_keys[0].key_hash"),
        "{}",
        status.message()
    );

    let restored = pylon_tests::pylon_cli(&endpoint, &["restore", &file_arg]).expect("restore");
    assert!(restored.contains("restored 2 APIs, 4 deployments"), "{restored}");
    // Restoring over what the cluster now holds needs --replace.
    let again = pylon_tests::pylon_cli(&endpoint, &["restore", &file_arg]).expect_err("not empty");
    assert!(
        format!("{again:#}").contains("restore into an empty cluster"),
        "{again:#}"
    );
    pylon_tests::pylon_cli(&endpoint, &["restore", &file_arg, "--replace"]).expect("replace");

    // The deployment history reads the same, and a data plane of the new
    // cluster serves v2 to the key the old cluster issued.
    let restored_history = admin
        .list_deployments(ListDeploymentsRequest {
            api: "vault".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .deployments;
    // Kept as they were but for the revision, which is the restore's: a
    // deployment made after it is the newest whatever the old cluster's
    // numbers were.
    let ids =
        |list: &[pylon_proto::config::v1::Deployment]| list.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&restored_history), ids(&history));
    for (restored, old) in restored_history.iter().zip(&history) {
        assert_eq!(
            (&restored.definition, restored.created_at),
            (&old.definition, old.created_at)
        );
    }
    let newest = crate::support::deploy(&mut admin, vault_api("v2"), "prod", &[])
        .await
        .expect("deploy after the restore");
    let listed = admin
        .list_deployments(ListDeploymentsRequest {
            api: "vault".into(),
            page: Some(Page {
                page_size: 1,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(ids(&listed.deployments), vec![newest]);
    assert!(!listed.next_page_token.is_empty(), "the restored ones follow");
    let dp =
        pylon_tests::gateway::DataPlaneNode::start(dir.path(), "dp", std::slice::from_ref(&endpoint), &[]);
    let client = pylon_tests::gateway::HttpClient::default();
    let with_key = |key: Option<&str>| {
        let mut request = http::Request::get("/prod/secret").header("host", "vault.localhost");
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    let body = eventually(
        "the restored vault is served",
        Duration::from_secs(15),
        || async {
            let reply = client.send(dp.address(), with_key(Some(&key))).await.ok()?;
            (reply.status == 200).then_some(reply.body)
        },
    )
    .await;
    assert_eq!(body, "v2");
    let without = client.send(dp.address(), with_key(None)).await.expect("reply");
    assert_eq!(without.status, 403);
    // The audit log says who restored what.
    let audit = crate::support::audit_records(&mut admin).await;
    assert!(
        audit.iter().any(|r| r.method == "RestoreBackup"
            && r.resource.as_ref().is_some_and(|t| t.name.contains("replacing")))
    );
}
