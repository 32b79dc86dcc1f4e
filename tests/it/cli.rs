//! The `pylon` CLI drives a real node through a release: apply → deploy →
//! canary → promote → rollback, checked with `deployments list` and
//! `stages get` at each step.

use pylon_tests::{Cluster, pylon_cli, repo_root, serial};
use serde_json::Value;

/// Runs a CLI command that prints JSON and parses what it printed.
fn cli_json(endpoint: &str, args: &[&str]) -> Value {
    let text = pylon_cli(endpoint, args).unwrap_or_else(|e| panic!("{e:#}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn deployment_ids(endpoint: &str) -> Vec<String> {
    let list = cli_json(endpoint, &["deployments", "list", "petstore", "-o", "json"]);
    list.as_array()
        .expect("an array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

fn stage(endpoint: &str) -> Value {
    cli_json(endpoint, &["stages", "get", "petstore", "prod", "-o", "json"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_goes_apply_deploy_canary_promote_rollback() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let petstore = repo_root().join("examples/petstore.yaml");
    let petstore = petstore.to_str().expect("utf-8 path");

    let applied = pylon_cli(&endpoint, &["apply", "-f", petstore]).expect("apply");
    assert_eq!(applied, "API petstore created\nstage petstore/prod created\n");
    let again = pylon_cli(&endpoint, &["apply", "-f", petstore]).expect("apply again");
    assert_eq!(
        again, "API petstore unchanged\nstage petstore/prod unchanged\n",
        "apply is idempotent"
    );

    let deploy = [
        "deploy",
        "petstore",
        "--stage",
        "prod",
        "--description",
        "v1",
        "-o",
        "json",
    ];
    let first = cli_json(&endpoint, &deploy);
    let d1 = first["id"].as_str().expect("id").to_owned();
    assert_eq!(first["definition"]["routes"].as_array().map(Vec::len), Some(3));
    assert_eq!(deployment_ids(&endpoint), std::slice::from_ref(&d1));
    assert_eq!(stage(&endpoint)["deploymentId"], d1.as_str());

    let canary = [
        "deploy",
        "petstore",
        "--stage",
        "prod",
        "--canary-percent",
        "10",
        "-o",
        "json",
    ];
    let second = cli_json(&endpoint, &canary);
    let d2 = second["id"].as_str().expect("id").to_owned();
    assert_eq!(
        deployment_ids(&endpoint),
        [d2.clone(), d1.clone()],
        "newest first"
    );
    let prod = stage(&endpoint);
    assert_eq!(
        prod["deploymentId"],
        d1.as_str(),
        "a canary deploy leaves the stage where it was"
    );
    assert_eq!(prod["canary"]["deploymentId"], d2.as_str());
    assert_eq!(prod["canary"]["percentTraffic"].as_f64(), Some(10.0));

    pylon_cli(
        &endpoint,
        &[
            "canary",
            "set",
            "petstore",
            "prod",
            "--deployment",
            &d2,
            "--percent",
            "25",
            "--override",
            "backend=http://127.0.0.1:9999",
        ],
    )
    .expect("canary set");
    let prod = stage(&endpoint);
    assert_eq!(prod["canary"]["percentTraffic"].as_f64(), Some(25.0));
    assert_eq!(
        prod["canary"]["stageVariableOverrides"]["backend"],
        "http://127.0.0.1:9999"
    );
    assert_eq!(prod["variables"]["backend"], "http://127.0.0.1:8081");

    pylon_cli(&endpoint, &["canary", "promote", "petstore", "prod"]).expect("promote");
    let prod = stage(&endpoint);
    assert_eq!(prod["deploymentId"], d2.as_str());
    assert_eq!(
        prod["variables"]["backend"], "http://127.0.0.1:9999",
        "overrides copied into the stage"
    );
    assert_eq!(prod["canary"]["percentTraffic"].as_f64().unwrap_or(0.0), 0.0);

    pylon_cli(
        &endpoint,
        &["rollback", "petstore", "--stage", "prod", "--to", &d1],
    )
    .expect("rollback");
    assert_eq!(stage(&endpoint)["deploymentId"], d1.as_str());
    assert_eq!(
        deployment_ids(&endpoint),
        [d2.clone(), d1.clone()],
        "rollback adds no deployment"
    );

    let local = cli_json(
        &endpoint,
        &["stages", "get", "petstore", "prod", "--stale", "-o", "json"],
    );
    assert_eq!(
        local["deploymentId"],
        d1.as_str(),
        "a stale read on the only node is current"
    );

    pylon_cli(&endpoint, &["canary", "clear", "petstore", "prod"]).expect("clear");
    assert!(stage(&endpoint).get("canary").is_none());

    let err = pylon_cli(
        &endpoint,
        &["rollback", "petstore", "--stage", "prod", "--to", "nope"],
    )
    .expect_err("unknown deployment");
    assert!(err.to_string().contains("NotFound"), "{err}");
    let table = pylon_cli(&endpoint, &["cluster", "status"]).expect("cluster status");
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("cluster ") && l.len() == 40),
        "{table}"
    );
    assert!(lines.next().is_some_and(|l| l.starts_with("NODE")), "{table}");
    assert!(table.contains("LEADER"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_everything_unless_paged_by_hand() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    // More than one page of 1,000.
    let admin = cluster.nodes[0].admin().await.expect("admin");
    let creates: Vec<_> = (0..1_005)
        .map(|i| {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                let api = pylon_proto::config::v1::Api {
                    name: format!("api-{i:04}"),
                    ..Default::default()
                };
                admin
                    .create_api(pylon_proto::admin::v1::CreateApiRequest { api: Some(api) })
                    .await
            })
        })
        .collect();
    for create in creates {
        create.await.expect("join").expect("create");
    }
    let all = cli_json(&endpoint, &["apis", "list", "-o", "json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1_005));

    let output = std::process::Command::new(pylon_tests::pylon_bin())
        .args(["apis", "list", "-o", "json", "--limit", "2"])
        .env("PYLON_ENDPOINT", &endpoint)
        .output()
        .expect("pylon");
    let page: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(page.as_array().map(Vec::len), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let token = stderr
        .trim()
        .strip_prefix("more: --page-token ")
        .unwrap_or_else(|| panic!("the next page's token: {stderr}"));
    let next = cli_json(
        &endpoint,
        &[
            "apis",
            "list",
            "-o",
            "json",
            "--limit",
            "2",
            "--page-token",
            token,
        ],
    );
    assert_ne!(next[0]["name"], page[0]["name"], "the next page");
    assert_eq!(next.as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_have_their_own_noun_and_the_value_is_shown_once() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let created = pylon_cli(
        &endpoint,
        &["keys", "create", "partner", "--value", "imported-key-0123456789"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(created.contains("value: imported-key-0123456789"), "{created}");
    let list = cli_json(&endpoint, &["keys", "list", "-o", "json"]);
    let key = &list[0];
    assert_eq!(
        (key["name"].as_str(), key["enabled"].as_bool()),
        (Some("partner"), Some(true))
    );
    assert!(
        !list.to_string().contains("imported-key-0123456789"),
        "no value in listings"
    );
    let id = key["id"].as_str().expect("id").to_owned();

    pylon_cli(
        &endpoint,
        &["keys", "update", &id, "--disable", "--description", "paused"],
    )
    .expect("update");
    let got = cli_json(&endpoint, &["keys", "get", &id, "-o", "json"]);
    assert_eq!(
        (got["enabled"].as_bool(), got["description"].as_str()),
        (None, Some("paused"))
    );

    // A second key of the same name is reported, never merged.
    pylon_cli(&endpoint, &["keys", "create", "partner"]).expect("second");
    let output = std::process::Command::new(pylon_tests::pylon_bin())
        .args(["keys", "list"])
        .env("PYLON_ENDPOINT", &endpoint)
        .output()
        .expect("pylon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 keys are named \"partner\""), "{stderr}");
    let refused = pylon_cli(&endpoint, &["keys", "create", "short", "--value", "tiny"]);
    assert!(
        refused.is_err_and(|e| e.to_string().contains("20-128 printable ASCII characters")),
        "a value outside 20-128 characters is refused"
    );

    pylon_cli(&endpoint, &["keys", "delete", &id]).expect("delete");
    let list = cli_json(&endpoint, &["keys", "list", "-o", "json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_plans_and_domains_are_listed_read_and_deleted_by_name() {
    use pylon_proto::admin::v1::{CreateDomainNameRequest, CreateUsagePlanRequest};
    use pylon_proto::config::v1::{DomainName, UsagePlan};
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    for name in ["gold", "silver"] {
        let plan = UsagePlan {
            name: name.into(),
            ..Default::default()
        };
        admin
            .create_usage_plan(CreateUsagePlanRequest {
                usage_plan: Some(plan),
            })
            .await
            .expect("plan");
    }
    let domain = DomainName {
        name: "api.example.test".into(),
        ..Default::default()
    };
    admin
        .create_domain_name(CreateDomainNameRequest {
            domain_name: Some(domain),
        })
        .await
        .expect("domain");

    let plans = cli_json(&endpoint, &["usage-plans", "list", "-o", "json"]);
    assert_eq!(plans.as_array().map(Vec::len), Some(2));
    let gold = cli_json(&endpoint, &["usage-plans", "get", "gold", "-o", "json"]);
    assert_eq!(gold["name"], "gold");
    pylon_cli(&endpoint, &["usage-plans", "delete", "gold"]).expect("delete plan");
    let plans = cli_json(&endpoint, &["usage-plans", "list", "-o", "json"]);
    assert_eq!(plans[0]["name"], "silver");
    assert_eq!(plans.as_array().map(Vec::len), Some(1));

    let table = pylon_cli(&endpoint, &["domains", "list"]).expect("domains");
    assert!(table.contains("api.example.test"), "{table}");
    pylon_cli(&endpoint, &["domains", "delete", "api.example.test"]).expect("delete domain");
    let missing = pylon_cli(&endpoint, &["domains", "get", "api.example.test"]);
    assert!(missing.is_err_and(|e| e.to_string().contains("not found")));
}

#[tokio::test]
async fn usage_plans_and_domains_are_created_and_updated_from_flags() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    crate::support::deploy(&mut admin, crate::support::mock_api("shop", "hi"), "prod", &[])
        .await
        .expect("deploy");
    pylon_cli(&endpoint, &["keys", "create", "partner"]).expect("key");
    let keys = cli_json(&endpoint, &["keys", "list", "-o", "json"]);
    let key_id = keys[0]["id"].as_str().expect("key id").to_owned();

    let plan = cli_json(
        &endpoint,
        &[
            "usage-plans",
            "create",
            "gold",
            "--rate",
            "50",
            "--burst",
            "100",
            "--quota-limit",
            "1000",
            "--quota-period",
            "month",
            "--stage",
            "shop/prod",
            "--key",
            &key_id,
            "-o",
            "json",
        ],
    );
    assert_eq!(plan["throttle"]["rateLimit"], 50.0);
    assert_eq!(plan["quota"]["period"], "MONTH");
    assert_eq!(plan["apiStages"][0]["stage"], "prod");
    assert_eq!(plan["apiKeyIds"][0], key_id.as_str());
    let plan = cli_json(
        &endpoint,
        &[
            "usage-plans",
            "update",
            "gold",
            "--remove-key",
            &key_id,
            "--no-quota",
            "-o",
            "json",
        ],
    );
    assert!(
        plan.get("apiKeyIds").is_none() && plan.get("quota").is_none(),
        "{plan}"
    );
    assert_eq!(
        plan["throttle"]["burstLimit"], 100,
        "fields not named keep their value"
    );
    let refused = pylon_cli(&endpoint, &["usage-plans", "create", "bad", "--stage", "shop"]);
    assert!(refused.is_err_and(|e| e.to_string().contains("expected API/STAGE")));
    let refused = pylon_cli(
        &endpoint,
        &["usage-plans", "create", "silver", "--stage", "shop/nope"],
    );
    assert!(refused.is_err_and(|e| e.to_string().contains("api_stages[0]")));

    let domain = cli_json(
        &endpoint,
        &[
            "domains",
            "create",
            "api.example.test",
            "--mapping",
            "v1=shop/prod",
            "-o",
            "json",
        ],
    );
    assert_eq!(domain["mappings"][0]["basePath"], "v1");
    let domain = cli_json(
        &endpoint,
        &[
            "domains",
            "update",
            "api.example.test",
            "--mapping",
            "=shop/prod",
            "-o",
            "json",
        ],
    );
    assert_eq!(domain["mappings"].as_array().map(Vec::len), Some(1));
    assert!(domain["mappings"][0].get("basePath").is_none(), "{domain}");
}

#[tokio::test]
async fn an_apis_authorizers_are_listed_and_removed_by_name_but_not_while_a_route_uses_one() {
    use pylon_proto::config::v1::{Authorization, Authorizer, JwtAuthorizer, authorization, authorizer};
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let jwt = |name: &str| Authorizer {
        name: name.into(),
        kind: Some(authorizer::Kind::Jwt(JwtAuthorizer {
            issuer: format!("https://{name}.example.test"),
            audiences: vec!["shop".into()],
            jwks_uri: format!("https://{name}.example.test/jwks"),
            algorithms: vec!["RS256".into()],
            ..Default::default()
        })),
    };
    let mut api = crate::support::mock_api("shop", "hi");
    api.authorizers = vec![jwt("users"), jwt("unused")];
    api.routes[0].authorization = Some(Authorization {
        r#type: authorization::Type::Jwt as i32,
        authorizer: "users".into(),
        ..Default::default()
    });
    admin
        .create_api(pylon_proto::admin::v1::CreateApiRequest { api: Some(api) })
        .await
        .expect("api");

    let table = pylon_cli(&endpoint, &["authorizers", "list", "shop"]).expect("list");
    assert!(
        table.contains("users") && table.contains("https://users.example.test"),
        "{table}"
    );
    pylon_cli(&endpoint, &["authorizers", "delete", "shop", "unused"]).expect("an unused one goes");
    let refused = pylon_cli(&endpoint, &["authorizers", "delete", "shop", "users"]);
    assert!(
        refused.is_err_and(|e| e.to_string().contains("InvalidArgument")),
        "a route still uses it"
    );
    let left = cli_json(&endpoint, &["authorizers", "list", "shop", "-o", "json"]);
    assert_eq!(left.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn servers_take_every_flag_from_pylon_variables_and_a_settings_file() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, ops) = (pylon_tests::free_port(), pylon_tests::free_port());
    let settings = dir.path().join("dev.yaml");
    std::fs::write(
        &settings,
        format!(
            "data_dir: {}\nlisten: 127.0.0.1:{}\nraft-listen: 127.0.0.1:{}\nops-listen: 127.0.0.1:{ops}\n",
            dir.path().join("data").display(),
            pylon_tests::free_port(),
            pylon_tests::free_port(),
        ),
    )
    .expect("write");
    // The admin address from the environment, the rest from the file.
    let mut child = std::process::Command::new(pylon_tests::pylon_bin())
        .args([
            "dev",
            "--no-console",
            "--no-portal",
            "--config",
            &settings.display().to_string(),
        ])
        .env("PYLON_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pylon dev");
    let endpoint = format!("http://127.0.0.1:{admin}");
    let listed = pylon_tests::eventually("pylon dev up", std::time::Duration::from_secs(20), || async {
        pylon_cli(&endpoint, &["apis", "list"]).ok()
    })
    .await;
    assert!(listed.starts_with("NAME"), "{listed}");
    // Ready once its data plane has the cluster's config.
    let ready = pylon_tests::eventually("ready", std::time::Duration::from_secs(10), || async {
        let answer = raw_get(ops, "/readyz").await;
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // A setting the server does not have is an error naming it.
    std::fs::write(&settings, "lisen: 127.0.0.1:1\n").expect("write");
    let output = std::process::Command::new(pylon_tests::pylon_bin())
        .args(["dev", "--config", &settings.display().to_string()])
        .output()
        .expect("pylon dev");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"lisen\" is not a setting of `pylon dev`"));

    // The admin commands' flags are refused on a server, not ignored.
    let output = std::process::Command::new(pylon_tests::pylon_bin())
        .args([
            "data-plane",
            "--control-plane",
            "http://127.0.0.1:9",
            "--token",
            "secret",
        ])
        .output()
        .expect("pylon data-plane");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token is for the admin commands"));
}

/// A GET on loopback over a raw socket: the status line and the rest.
async fn raw_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}
