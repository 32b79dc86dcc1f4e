//! Small builders shared by the end-to-end tests.

use pylon_proto::config::v1::{Api, Integration, MockResponse, Route, integration};

/// An API with one MOCK route whose body is `body`.
pub fn mock_api(name: &str, body: &str) -> Api {
    Api {
        name: name.into(),
        routes: vec![Route {
            method: "GET".into(),
            path: "/items".into(),
            integration: Some(Integration {
                r#type: integration::Type::Mock as i32,
                mock: Some(MockResponse {
                    status_code: 200,
                    body: body.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn mock_body(api: &Api) -> Option<&str> {
    api.routes
        .first()?
        .integration
        .as_ref()?
        .mock
        .as_ref()
        .map(|m| m.body.as_str())
}

/// The `shop` API used by the data-plane tests: `GET /hello` answers `marker`
/// from a MOCK; `GET /slow/{ms}` goes to the stage's backend with a 1 s
/// timeout; everything else is proxied to `${stageVariables.backend}`.
pub fn shop_api(marker: &str) -> Api {
    let proxy = |method: &str, path: &str, uri: &str, timeout_ms: u32| Route {
        method: method.into(),
        path: path.into(),
        integration: Some(Integration {
            r#type: integration::Type::HttpProxy as i32,
            uri: uri.into(),
            timeout_ms,
            ..Default::default()
        }),
        ..Default::default()
    };
    Api {
        name: "shop".into(),
        routes: vec![
            Route {
                method: "GET".into(),
                path: "/hello".into(),
                integration: Some(Integration {
                    r#type: integration::Type::Mock as i32,
                    mock: Some(MockResponse {
                        status_code: 200,
                        body: format!(r#"{{"marker": "{marker}"}}"#),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            proxy("GET", "/slow/{ms}", "${stageVariables.backend}/slow/{ms}", 1000),
            proxy("ANY", "/{proxy+}", "${stageVariables.backend}/{proxy}", 29_000),
        ],
        ..Default::default()
    }
}

/// Creates or replaces `api`, deploys it and points `stage` (created if
/// missing) at the new deployment with `variables`. Returns the deployment id.
pub async fn deploy(
    admin: &mut pylon_tests::Admin,
    api: Api,
    stage: &str,
    variables: &[(&str, &str)],
) -> anyhow::Result<String> {
    use pylon_proto::admin::v1::*;
    let name = api.name.clone();
    let exists = admin
        .get_api(GetApiRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .is_ok();
    if exists {
        admin
            .update_api(UpdateApiRequest {
                api: Some(api),
                expected_revision: 0,
            })
            .await?;
    } else {
        admin.create_api(CreateApiRequest { api: Some(api) }).await?;
    }
    let variables: std::collections::BTreeMap<String, String> = variables
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let current = admin
        .get_stage(GetStageRequest {
            api: name.clone(),
            name: stage.into(),
            ..Default::default()
        })
        .await
        .ok()
        .map(tonic::Response::into_inner);
    match current {
        Some(current) => {
            if current.variables != variables {
                // Variables first, so the new deployment is served with them.
                admin
                    .update_stage(UpdateStageRequest {
                        stage: Some(pylon_proto::config::v1::Stage { variables, ..current }),
                        expected_revision: 0,
                    })
                    .await?;
            }
            let deployment = admin
                .create_deployment(CreateDeploymentRequest {
                    api: name,
                    stage: stage.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(deployment.id)
        }
        None => {
            // A new stage is created pointing at the deployment, with its variables, in one step.
            let deployment = admin
                .create_deployment(CreateDeploymentRequest {
                    api: name.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            admin
                .create_stage(CreateStageRequest {
                    stage: Some(pylon_proto::config::v1::Stage {
                        api: name,
                        name: stage.into(),
                        deployment_id: deployment.id.clone(),
                        variables,
                        ..Default::default()
                    }),
                })
                .await?;
            Ok(deployment.id)
        }
    }
}

/// The audit log's first page (newest first).
pub async fn audit_records(admin: &mut pylon_tests::Admin) -> Vec<pylon_proto::raft::v1::AuditRecord> {
    use pylon_proto::admin::v1::ListAuditRecordsRequest;
    admin
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records
}

/// The cluster's config version now.
pub async fn config_version(admin: &mut pylon_tests::Admin) -> u64 {
    use pylon_proto::admin::v1::GetConfigVersionRequest;
    admin
        .get_config_version(GetConfigVersionRequest::default())
        .await
        .expect("config version")
        .into_inner()
        .version
}

/// [`deploy`], then waits until `nodes` data planes serve it.
pub async fn deploy_serving(
    admin: &mut pylon_tests::Admin,
    api: Api,
    stage: &str,
    variables: &[(&str, &str)],
    nodes: usize,
) -> String {
    let deployment = deploy(admin, api, stage, variables).await.expect("deploy");
    let version = config_version(admin).await;
    wait_applied(admin, version, nodes).await;
    deployment
}

/// Changes a stage with `edit` and returns the config version that did it.
pub async fn edit_stage(
    admin: &mut pylon_tests::Admin,
    api: &str,
    stage: &str,
    edit: impl FnOnce(&mut pylon_proto::config::v1::Stage),
) -> anyhow::Result<u64> {
    use pylon_proto::admin::v1::*;
    let mut current = admin
        .get_stage(GetStageRequest {
            api: api.into(),
            name: stage.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    edit(&mut current);
    let updated = admin
        .update_stage(UpdateStageRequest {
            expected_revision: current.revision,
            stage: Some(current),
        })
        .await?
        .into_inner();
    Ok(updated.revision)
}

/// Waits until `nodes` data-plane nodes serve config `version` or newer.
pub async fn wait_applied(admin: &mut pylon_tests::Admin, version: u64, nodes: usize) {
    use pylon_proto::admin::v1::*;
    let admin = admin.clone();
    pylon_tests::eventually(
        &format!("{nodes} data planes on version {version}"),
        std::time::Duration::from_secs(15),
        || {
            let mut admin = admin.clone();
            async move {
                let list = admin
                    .list_data_plane_nodes(ListDataPlaneNodesRequest::default())
                    .await
                    .ok()?
                    .into_inner();
                let serving = list
                    .nodes
                    .iter()
                    .filter(|n| n.connected && n.applied_version >= version)
                    .count();
                (serving >= nodes).then_some(())
            }
        },
    )
    .await;
}

/// Creates an enabled API key named `name`: its id and its value.
pub async fn create_key(admin: &mut pylon_tests::Admin, name: &str) -> (String, String) {
    use pylon_proto::admin::v1::CreateApiKeyRequest;
    let created = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(pylon_proto::config::v1::ApiKey {
                name: name.into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("create key")
        .into_inner();
    (created.api_key.expect("key").id, created.value)
}

/// Panics with what to install unless Debian's Python with Selenium and
/// chromedriver are here (scripts/bootstrap installs them).
pub fn require_browser() {
    let selenium = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        selenium && std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromium, chromium-driver and python3-selenium are missing: run scripts/bootstrap"
    );
}

/// An empty directory `name` in the target directory, for a browser
/// test's screenshots.
pub fn screenshots(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| pylon_tests::repo_root().join("target"))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `tests/scripts/SCRIPT` (a Selenium script driving headless
/// Chromium) with `config` as its JSON argument: whether it passed every
/// step (exit 0, last line `ok`), and everything it said.
pub async fn run_browser_script(script: &str, config: serde_json::Value) -> (bool, String) {
    let script = pylon_tests::repo_root().join("tests/scripts").join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(config.to_string())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
    })
    .await
    .expect("browser");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && said.ends_with("ok\n"), said)
}

/// The `Host` the data-plane tests call the `shop` API on.
pub const SHOP_HOST: &str = "shop.localhost";

/// The story most data-plane tests begin with: a one-node control plane, a
/// backend answering as `marker`, and one `pylon data-plane` (node id
/// `dp-{marker}`, with `flags`) serving an API on stage `prod`, with the
/// backend as the stage's `backend` variable. Returned once `GET
/// /prod/hello` answers `marker` (within 10 s).
///
/// Fields drop in order: the data plane first, the control plane last.
pub struct ServedShop {
    pub dp: pylon_tests::gateway::DataPlaneNode,
    pub client: pylon_tests::gateway::HttpClient,
    _backend: pylon_tests::gateway::Backend,
    _cluster: pylon_tests::Cluster,
    _dir: tempfile::TempDir,
}

impl ServedShop {
    /// [`shop_api`]`(marker)`, served.
    pub async fn start(marker: &str) -> ServedShop {
        ServedShop::serving(shop_api(marker), marker, &[]).await
    }

    /// `api` (whose `GET /hello` answers `marker`, as [`shop_api`]'s does),
    /// served by a data plane started with `flags`.
    pub async fn serving(api: Api, marker: &str, flags: &[&str]) -> ServedShop {
        use pylon_tests::gateway::{Backend, DataPlaneNode, HttpClient};
        let cluster = pylon_tests::Cluster::start(1).await;
        let backend = Backend::start(marker).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let dp = DataPlaneNode::start(
            dir.path(),
            &format!("dp-{marker}"),
            &[cluster.nodes[0].endpoint()],
            flags,
        );
        let mut admin = cluster.nodes[0].admin().await.expect("admin");
        deploy(&mut admin, api, "prod", &[("backend", &backend.url())])
            .await
            .expect("deploy");
        let client = HttpClient::default();
        let address = dp.address();
        pylon_tests::eventually("served", std::time::Duration::from_secs(10), || async {
            let reply = client.get(address, SHOP_HOST, "/prod/hello").await.ok()?;
            (reply.status == 200 && reply.json()["marker"] == marker).then_some(())
        })
        .await;
        ServedShop {
            dp,
            client,
            _backend: backend,
            _cluster: cluster,
            _dir: dir,
        }
    }

    /// The data plane's address.
    pub fn address(&self) -> std::net::SocketAddr {
        self.dp.address()
    }
}
