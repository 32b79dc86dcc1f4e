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

/// Debian's Python, which has python3-selenium (scripts/bootstrap).
fn debian_python() -> Option<&'static str> {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    (ok && std::path::Path::new("/usr/bin/chromedriver").exists()).then_some("/usr/bin/python3")
}

#[tokio::test]
async fn an_operator_releases_from_the_console_and_a_reader_cannot() {
    let Some(python) = debian_python() else {
        panic!("chromium, chromium-driver and python3-selenium are missing: run scripts/bootstrap");
    };
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

    let screenshots = pylon_tests::repo_root()
        .join("target")
        .join("console-screenshots");
    let screenshots = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("console-screenshots"))
        .unwrap_or(screenshots);
    let _ = std::fs::remove_dir_all(&screenshots);
    let config = serde_json::json!({
        "consoles": consoles,
        "operator_token": "console-operator-token",
        "reader_token": "console-reader-token",
        "nacking_node": "dp-pinned",
        "screenshots": screenshots,
    });
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(pylon_tests::repo_root().join("tests/scripts/console_e2e.py"))
            .arg(config.to_string())
            .output()
            .expect("console_e2e.py")
    })
    .await
    .expect("browser");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.ends_with("ok\n"), "{said}");

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
    let audit = admin
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
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
