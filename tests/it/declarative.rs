//! Declarative configuration with the CLI against a real control plane:
//! `diff` shows what `apply` would do and says so in its exit code, `apply`
//! and `sync` change everything in one atomic batch, `dump` writes what
//! `sync --prune` takes back unchanged.

use pylon_proto::admin::v1::*;
use pylon_tests::{Cluster, pylon_bin, pylon_cli, serial};
use std::path::Path;
use std::process::Command;

/// An API with one MOCK route answering `body`, and its `prod` stage.
fn write_api(dir: &Path, name: &str, body: &str) {
    let text = format!(
        "api:\n  name: {name}\n  routes:\n    - method: GET\n      path: /hello\n      integration: {{type: MOCK, mock: {{statusCode: 200, body: '{body}'}}}}\n---\nstage:\n  api: {name}\n  name: prod\n  variables: {{color: blue}}\n"
    );
    std::fs::write(dir.join(format!("{name}.yaml")), text).expect("write");
}

/// `pylon diff`: its output and exit code.
fn diff(endpoint: &str, dir: &Path, prune: bool) -> (String, i32) {
    let mut args = vec!["diff".to_owned(), "-f".to_owned(), dir.display().to_string()];
    if prune {
        args.push("--prune".into());
    }
    let output = Command::new(pylon_bin())
        .args(&args)
        .env("PYLON_ENDPOINT", endpoint)
        .output()
        .expect("pylon diff");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[tokio::test]
async fn diff_apply_sync_and_dump_keep_the_cluster_equal_to_the_files_in_one_batch() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let files = tempfile::tempdir().expect("tempdir");
    write_api(files.path(), "orders", "v1");
    write_api(files.path(), "billing", "v1");
    let dir = files.path().display().to_string();

    // Nothing yet: diff lists the creations and exits 2.
    let (shown, code) = diff(&endpoint, files.path(), false);
    assert_eq!(code, 2, "{shown}");
    assert!(
        shown.contains("+ API orders") && shown.contains("+ stage billing/prod"),
        "{shown}"
    );
    assert!(shown.contains("4 to create, 0 to change, 0 to delete"), "{shown}");

    let applied = pylon_cli(&endpoint, &["apply", "-f", &dir]).expect("apply");
    assert!(
        applied.contains("API orders created") && applied.contains("stage orders/prod created"),
        "{applied}"
    );
    let (shown, code) = diff(&endpoint, files.path(), false);
    assert_eq!(code, 0, "{shown}");

    // A change is shown field by field.
    write_api(files.path(), "orders", "v2");
    let (shown, code) = diff(&endpoint, files.path(), false);
    assert_eq!(code, 2);
    assert!(
        shown.contains(r#"routes[0].integration.mock.body: "v1" → "v2""#),
        "{shown}"
    );

    // One change the control plane refuses (a plan naming a stage that does
    // not exist) and the whole batch is refused: orders keeps v1.
    std::fs::write(
        files.path().join("plan.yaml"),
        "usagePlan:\n  name: gold\n  apiStages: [{api: orders, stage: nope}]\n",
    )
    .expect("write");
    let refused = pylon_cli(&endpoint, &["apply", "-f", &dir]).expect_err("refused");
    assert!(format!("{refused:#}").contains("changes["), "{refused:#}");
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let orders = admin
        .get_api(GetApiRequest {
            name: "orders".into(),
            ..Default::default()
        })
        .await
        .expect("orders")
        .into_inner();
    let body = &orders.routes[0]
        .integration
        .as_ref()
        .expect("integration")
        .mock
        .as_ref()
        .expect("mock")
        .body;
    assert_eq!(body, "v1", "nothing of a refused batch is applied");
    std::fs::remove_file(files.path().join("plan.yaml")).expect("remove");
    pylon_cli(&endpoint, &["apply", "-f", &dir]).expect("apply v2");

    // dump writes what sync --prune takes back unchanged.
    let dumped = tempfile::tempdir().expect("tempdir");
    let out = pylon_cli(&endpoint, &["dump", "-o", &dumped.path().display().to_string()]).expect("dump");
    assert!(out.starts_with("4 resources written"), "{out}");
    let (shown, code) = diff(&endpoint, dumped.path(), true);
    assert_eq!(code, 0, "a dump is what the cluster holds: {shown}");

    // sync --prune deletes what the files no longer describe.
    std::fs::remove_file(files.path().join("billing.yaml")).expect("remove");
    let (shown, code) = diff(&endpoint, files.path(), true);
    assert_eq!(code, 2);
    assert!(shown.contains("- API billing"), "{shown}");
    let synced = pylon_cli(&endpoint, &["sync", "--prune", "-f", &dir]).expect("sync");
    assert!(
        synced.contains("API billing (with its stages and deployments) deleted"),
        "{synced}"
    );
    let apis = admin
        .list_apis(ListApisRequest::default())
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = apis.apis.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["orders"]);

    // API keys are part of the picture: diff shows them, apply writes only
    // what differs, and never a value into files.
    std::fs::write(
        files.path().join("key.yaml"),
        "apiKey:\n  name: ci\n  enabled: true\n",
    )
    .expect("write");
    let (shown, code) = diff(&endpoint, files.path(), false);
    assert_eq!(code, 2);
    assert!(shown.contains("+ API key ci"), "{shown}");
    let out = pylon_cli(&endpoint, &["apply", "-f", &dir]).expect("apply key");
    assert!(out.contains("created; its value is shown only now"), "{out}");
    let again = pylon_cli(&endpoint, &["apply", "-f", &dir]).expect("apply again");
    assert!(
        again.contains("API key ci (") && again.contains(") unchanged"),
        "{again}"
    );

    // A stage described without its API would be deleted with it: refused.
    let lonely = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        lonely.path().join("stage.yaml"),
        "stage:\n  api: orders\n  name: prod\n  variables: {color: blue}\n",
    )
    .expect("write");
    let refused = pylon_cli(
        &endpoint,
        &["sync", "--prune", "-f", &lonely.path().display().to_string()],
    )
    .expect_err("refused");
    assert!(
        format!("{refused:#}").contains("describe the API too"),
        "{refused:#}"
    );
    assert_eq!(
        admin
            .list_apis(ListApisRequest::default())
            .await
            .expect("list")
            .into_inner()
            .apis
            .len(),
        1
    );

    // A dump never mixes with an older one.
    let refused =
        pylon_cli(&endpoint, &["dump", "-o", &dumped.path().display().to_string()]).expect_err("not empty");
    assert!(format!("{refused:#}").contains("not empty"), "{refused:#}");
}
