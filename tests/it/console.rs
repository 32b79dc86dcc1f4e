//! The operator console in a real headless browser (Chromium through
//! Selenium, `tests/scripts/console_e2e.py`) against a real 2-node control
//! plane with credentials by role and a data plane that NACKs: log in,
//! create an API from YAML (and see a field error), deploy, set a 25 %
//! canary, promote, roll back after seeing the diff, see the NACK, reuse
//! the session on the other node, and be refused without a CSRF token or
//! as a reader. Screenshots of the main pages land in the target
//! directory (`console-screenshots/`).

use pylon_proto::admin::v1::*;
use pylon_tests::{Cluster, serial};
use std::process::Command;

#[tokio::test]
async fn an_operator_releases_from_the_console_and_a_reader_cannot() {
    crate::support::require_browser();
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = |name: &str, value: &str| {
        let path = dir.path().join(format!("{name}.token"));
        std::fs::write(&path, value).expect("token");
        path
    };
    let credentials = dir.path().join("credentials.yaml");
    let entries = [
        ("alice", "operator", token("alice", "console-operator-token")),
        ("ci", "reader", token("ci", "console-reader-token")),
        ("dp", "data-plane", token("dp", "console-dp-token")),
        ("cp", "peer", token("cp", "console-peer-token")),
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
    std::fs::write(&credentials, yaml).expect("credentials");
    let cluster = Cluster::start_with_consoles(2, &credentials, "console-operator-token").await;
    let consoles: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("http://127.0.0.1:{}", n.console_port.expect("console")))
        .collect();

    // A data plane pinned to another cluster NACKs every version of this one.
    let endpoint = cluster.nodes[0].endpoint();
    let _pinned = pylon_tests::gateway::DataPlaneNode::start(
        dir.path(),
        "dp-pinned",
        std::slice::from_ref(&endpoint),
        &[
            &format!("--token-file={}", entries[2].2.display()),
            "--pin-cluster-id=00000000000000000000000000000000",
        ],
    );

    // Traffic through a data plane connected to node 1, shown by node 2's
    // console: the heartbeats' counts, merged across control-plane nodes.
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    crate::support::deploy(&mut admin, crate::support::mock_api("traffic", "ok"), "prod", &[])
        .await
        .expect("deploy");
    let serving = pylon_tests::gateway::DataPlaneNode::start(
        dir.path(),
        "dp-serving",
        std::slice::from_ref(&endpoint),
        &[&format!("--token-file={}", entries[2].2.display())],
    );
    let client = pylon_tests::gateway::HttpClient::default();
    pylon_tests::eventually(
        "the data plane serves",
        std::time::Duration::from_secs(15),
        || async {
            let reply = client
                .get(serving.address(), "traffic.localhost", "/prod/items")
                .await
                .ok()?;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    for path in std::iter::repeat_n("/prod/items", 19).chain(std::iter::repeat_n("/prod/missing", 5)) {
        client
            .get(serving.address(), "traffic.localhost", path)
            .await
            .expect("reply");
    }
    let mut other = cluster.nodes[1].admin().await.expect("admin");
    let metrics = pylon_tests::eventually(
        "the heartbeat carries the counts",
        std::time::Duration::from_secs(30),
        || {
            let mut other = other.clone();
            async move {
                let traffic = other
                    .get_stage_metrics(GetStageMetricsRequest {
                        api: "traffic".into(),
                        stage: "prod".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                let requests: u64 = traffic
                    .slots
                    .iter()
                    .filter_map(|s| s.counts.as_ref())
                    .map(|c| c.requests)
                    .sum();
                (requests >= 25).then_some(traffic)
            }
        },
    )
    .await;
    let routes: Vec<(&str, u64, u64)> = metrics
        .routes
        .iter()
        .map(|r| (r.route_key.as_str(), r.requests, r.errors_4xx))
        .collect();
    assert_eq!(routes, vec![("GET /items", 20, 0), ("", 5, 5)]);
    for counts in metrics.slots.iter().filter_map(|s| s.counts.as_ref()) {
        let timed: u64 = counts.integration_buckets.iter().sum();
        assert_eq!(
            timed, counts.integrations,
            "every integration call is in a bucket"
        );
    }
    let missing = other
        .get_stage_metrics(GetStageMetricsRequest {
            api: "traffic".into(),
            stage: "nope".into(),
        })
        .await
        .expect_err("no such stage");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    drop(other.clone());

    let screenshots = crate::support::screenshots("console-screenshots");
    let config = serde_json::json!({
        "consoles": consoles,
        "operator_token": "console-operator-token",
        "reader_token": "console-reader-token",
        "nacking_node": "dp-pinned",
        "screenshots": screenshots,
    });
    let (passed, said) = crate::support::run_browser_script("console_e2e.py", config).await;
    assert!(passed, "{said}");

    // What the browser did is what the admin API holds, and the audit log
    // names the operator for every write.
    let mut admin = cluster.nodes[1].admin().await.expect("admin");
    let stage = admin
        .get_stage(GetStageRequest {
            api: "shop".into(),
            name: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("stage")
        .into_inner();
    let history = admin
        .list_deployments(ListDeploymentsRequest {
            api: "shop".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .deployments;
    // Rolled back to the first deployment; the promoted canary has no traffic.
    assert_eq!(Some(&stage.deployment_id), history.last().map(|d| &d.id));
    assert_eq!(stage.canary.map(|c| c.percent_traffic), Some(0.0));
    let audit = crate::support::audit_records(&mut admin).await;
    for method in [
        "CreateApi",
        "UpdateApi",
        "CreateDeployment",
        "UpdateStage",
        "PromoteCanary",
        "RollbackStage",
    ] {
        assert!(
            audit
                .iter()
                .any(|r| r.method == method && r.actor.as_ref().is_some_and(|a| a.name == "alice")),
            "{method} by alice is in the audit log"
        );
    }
    assert!(
        !audit
            .iter()
            .any(|r| r.actor.as_ref().is_some_and(|a| a.name == "ci") && r.error_code.is_empty()),
        "the reader wrote nothing"
    );
}

/// `curl` against the console over HTTPS with `identity` (certificate,
/// key) when given: the status and the body. `jar` keeps cookies.
fn curl(
    url: &str,
    ca: &std::path::Path,
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    jar: &std::path::Path,
    form: Option<&[(&str, &str)]>,
) -> (String, String) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar);
    if let Some((cert, key)) = identity {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    for (name, value) in form.unwrap_or_default() {
        command.arg("--data-urlencode").arg(format!("{name}={value}"));
    }
    let output = command.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), body.to_owned())
}

#[tokio::test]
async fn with_mutual_tls_a_client_certificate_logs_in_with_its_role_and_nothing_else_does() {
    let _serial = serial().await;
    let cluster = Cluster::start_with_mtls_consoles(1).await;
    let ca = cluster.ca_certificate().expect("ca");
    let console = format!(
        "https://127.0.0.1:{}",
        cluster.nodes[0].console_port.expect("console")
    );
    let operator = cluster.issue("alice", "spiffe://pylon/operator/alice");
    let reader = cluster.issue("bob", "spiffe://pylon/reader/bob");
    let data_plane = cluster.issue("dp", "spiffe://pylon/data-plane/dp");
    let dir = tempfile::tempdir().expect("tempdir");
    let jar = |name: &str| dir.path().join(name);

    // No certificate, or a data plane's: sent to log in, and no "Enter":
    // a node with mutual TLS and no token is not an open node.
    let (status, _) = curl(&format!("{console}/apis"), &ca, None, &jar("none"), None);
    assert_eq!(status, "303");
    let (_, login) = curl(&format!("{console}/login"), &ca, None, &jar("none"), None);
    assert!(
        login.contains("id=\"token\"") && !login.contains("Enter"),
        "{login}"
    );
    let (status, _) = curl(
        &format!("{console}/apis"),
        &ca,
        Some(&data_plane),
        &jar("dp"),
        None,
    );
    assert_eq!(status, "303");

    // The operator's certificate logs in by itself and writes as itself.
    let (status, page) = curl(
        &format!("{console}/apis/new"),
        &ca,
        Some(&operator),
        &jar("alice"),
        None,
    );
    assert_eq!(status, "200");
    assert!(page.contains("operator&#x2f;alice (operator)"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf")
        .to_owned();
    let definition = "api:\n  name: certified\n  routes:\n    - method: GET\n      path: /x\n      integration: {type: MOCK, mock: {statusCode: 200, body: x}}\n";
    let form = [
        ("csrf", csrf.as_str()),
        ("revision", "0"),
        ("definition", definition),
    ];
    let (status, _) = curl(
        &format!("{console}/apis/new"),
        &ca,
        Some(&operator),
        &jar("alice"),
        Some(&form),
    );
    assert_eq!(status, "303");
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let audit = crate::support::audit_records(&mut admin).await;
    assert!(audit.iter().any(|r| {
        r.method == "CreateApi"
            && r.actor
                .as_ref()
                .is_some_and(|a| a.name == "spiffe://pylon/operator/alice")
    }));

    // The operator's session cookie on a connection showing the reader's
    // certificate is worth nothing; the reader gets its own, read-only.
    let stolen = std::fs::read_to_string(jar("alice")).expect("jar");
    std::fs::write(jar("bob"), stolen).expect("jar");
    let (status, page) = curl(&format!("{console}/apis"), &ca, Some(&reader), &jar("bob"), None);
    assert_eq!(status, "303", "{page}");
    std::fs::remove_file(jar("bob")).expect("jar");
    let (status, page) = curl(&format!("{console}/apis"), &ca, Some(&reader), &jar("bob"), None);
    assert_eq!(status, "200");
    assert!(page.contains("reader&#x2f;bob (reader)") && !page.contains("id=\"new-api\""));
}
