//! `pylon import openapi` end to end: a real AWS export imported with the
//! CLI, deployed, and served as AWS would serve it — validation, parameter
//! mappings seen by a raw backend, integration responses chosen by the
//! backend's status, response templates chosen by `Accept`.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{ApiKey, ApiStageRef, UsagePlan};
use pylon_tests::gateway::{DataPlaneNode, HttpClient, RawBackend, Reply, raw_response};
use pylon_tests::{Cluster, eventually, pylon_cli, repo_root, serial};
use std::time::Duration;

async fn call(
    client: &HttpClient,
    dp: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    try_call(client, dp, method, path, headers, body)
        .await
        .expect("reply")
}

async fn try_call(
    client: &HttpClient,
    dp: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Reply> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "reqvalidators-sample.localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned())))?;
    client.send(dp, request).await
}

#[tokio::test]
async fn an_aws_export_imported_with_the_cli_serves_as_aws_would() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    // The backend answers the status the client asked for in x-want-status.
    let backend = RawBackend::start(|request| {
        let status = request
            .values("x-want-status")
            .first()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let body = br#"{"from":"backend"}"#;
        let length = body.len().to_string();
        raw_response(
            status,
            &[("content-type", "application/json"), ("content-length", &length)],
            body,
        )
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The export as AWS wrote it, its backend host pointed at the test's.
    let export = std::fs::read_to_string(
        repo_root().join("tests/data/aws-exports/02-request-validators-sample.swagger2.json"),
    )
    .expect("export");
    let document = export.replace("http://petstore-demo-endpoint.execute-api.com", &backend.url());
    let file = dir.path().join("export.json");
    std::fs::write(&file, document).expect("write");
    let endpoint = cluster.nodes[0].endpoint();
    let file = file.display().to_string();

    // A dry run stores nothing and prints an `apply` file.
    let yaml = pylon_cli(
        &endpoint,
        &["import", "openapi", &file, "--dry-run", "-o", "yaml"],
    )
    .expect("dry run");
    assert!(yaml.contains("name: reqvalidators-sample"), "{yaml}");
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let missing = admin
        .get_api(GetApiRequest {
            name: "reqvalidators-sample".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        missing.map(|_| ()).expect_err("not stored").code(),
        tonic::Code::NotFound
    );

    let out = pylon_cli(
        &endpoint,
        &["import", "openapi", &file, "--stage", "prod", "--deploy"],
    )
    .expect("import");
    assert!(out.contains("API reqvalidators-sample created"), "{out}");
    assert!(out.contains("deployed as"), "{out}");
    // Importing again changes nothing.
    let again = pylon_cli(&endpoint, &["import", "openapi", &file]).expect("import again");
    assert!(again.contains("unchanged"), "{again}");
    // Another definition under the same name replaces it only when asked.
    let changed_file = dir.path().join("changed.json");
    let changed = std::fs::read_to_string(&file)
        .expect("read")
        .replace("/petstore/pets", "/petstore/pets2");
    std::fs::write(&changed_file, changed).expect("write");
    let changed_file = changed_file.display().to_string();
    let refused =
        pylon_cli(&endpoint, &["import", "openapi", &changed_file]).expect_err("not without --overwrite");
    assert!(format!("{refused:#}").contains("--overwrite"), "{refused:#}");
    let out = pylon_cli(&endpoint, &["import", "openapi", &changed_file, "--overwrite"]).expect("overwrite");
    assert!(out.contains("updated"), "{out}");
    pylon_cli(
        &endpoint,
        &[
            "import",
            "openapi",
            &file,
            "--overwrite",
            "--stage",
            "prod",
            "--deploy",
        ],
    )
    .expect("back"); // The export's methods require an API key (its `api_key` security).
    let key = admin
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey {
                name: "importer".into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("key")
        .into_inner();
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "imported".into(),
                api_stages: vec![ApiStageRef {
                    api: "reqvalidators-sample".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                api_key_ids: vec![key.api_key.expect("key").id],
                ..Default::default()
            }),
        })
        .await
        .expect("plan");
    let dp = DataPlaneNode::start(dir.path(), "dp-import", std::slice::from_ref(&endpoint), &[]);
    let client = HttpClient::default();
    let value = key.value.as_str();
    let good = [
        ("x-api-key", value),
        ("h1", "one"),
        ("content-type", "application/json"),
    ];
    let pet = r#"{"type": "dog", "name": "Rex", "price": 30}"#;
    eventually("the imported API served", Duration::from_secs(15), || async {
        let reply = try_call(&client, dp.address(), "POST", "/prod/validation", &good, pet)
            .await
            .ok()?;
        (reply.status == 200).then_some(())
    })
    .await;

    // 2xx from the backend: the "2\d{2}" response, 200, the backend's body;
    // the header mapping `integration.request.header.custom_h1` ← h1.
    let reply = call(&client, dp.address(), "POST", "/prod/validation", &good, pet).await;
    assert_eq!(reply.body, r#"{"from":"backend"}"#);
    let seen = backend.received();
    let last = seen.last().expect("a request reached the backend");
    assert_eq!(last.values("custom_h1"), ["one"]);
    assert_eq!(last.path(), "/petstore/pets");

    // Anything else: the default response, 400, its static header and the
    // template for the client's Accept.
    let failing = [good.as_slice(), &[("x-want-status", "503")]].concat();
    let reply = call(&client, dp.address(), "POST", "/prod/validation", &failing, pet).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body, "json 400 response template");
    assert_eq!(reply.header("test-method-response-header"), "static value");
    let xml = [failing.as_slice(), &[("accept", "application/xml")]].concat();
    let reply = call(&client, dp.address(), "POST", "/prod/validation", &xml, pet).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (400, "xml 400 response template")
    );
    assert_eq!(reply.header("content-type"), "application/xml");

    // The validator "all": a body outside the model, a missing header.
    let cheap = r#"{"type": "dog", "name": "Rex", "price": 10}"#;
    let reply = call(&client, dp.address(), "POST", "/prod/validation", &good, cheap).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let no_h1 = [("x-api-key", value), ("content-type", "application/json")];
    let reply = call(&client, dp.address(), "POST", "/prod/validation", &no_h1, pet).await;
    assert_eq!(reply.status, 400, "{}", reply.body);

    // GET: "params-only" wants q1, which reaches the backend as `type`.
    let keyed = [("x-api-key", value)];
    let reply = call(&client, dp.address(), "GET", "/prod/validation", &keyed, "").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = call(
        &client,
        dp.address(),
        "GET",
        "/prod/validation?q1=cat",
        &keyed,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = backend.received();
    assert!(
        seen.last().expect("request").path().contains("type=cat"),
        "{:?}",
        seen.last().map(|r| r.path().to_owned())
    );

    // Exported from the stage and imported under another name: the same API.
    let exported = pylon_cli(
        &endpoint,
        &["export", "openapi", "reqvalidators-sample", "--stage", "prod"],
    )
    .expect("export");
    assert!(exported.contains("openapi: 3.0.3"), "{exported}");
    let export_file = dir.path().join("exported.yaml");
    std::fs::write(&export_file, &exported).expect("write");
    pylon_cli(
        &endpoint,
        &[
            "import",
            "openapi",
            &export_file.display().to_string(),
            "--api",
            "copy",
        ],
    )
    .expect("import the export");
    let get = |name: &str| GetApiRequest {
        name: name.into(),
        ..Default::default()
    };
    let original = admin
        .get_api(get("reqvalidators-sample"))
        .await
        .expect("original")
        .into_inner();
    let copy = admin.get_api(get("copy")).await.expect("copy").into_inner();
    assert_eq!(copy.routes, original.routes);
    assert_eq!(copy.models, original.models);
}

#[tokio::test]
async fn an_export_with_what_pylon_cannot_express_is_refused_whole_naming_each_construct() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.nodes[0].endpoint();
    let file = repo_root().join("tests/data/aws-exports/04-kinesis-proxy-aws-service.swagger2.json");
    let error =
        pylon_cli(&endpoint, &["import", "openapi", &file.display().to_string()]).expect_err("refused");
    let text = format!("{error:#}");
    assert!(text.contains("--service-url PutRecord=URL"), "{text}");
    assert!(text.contains("--service-url ListStreams=URL"), "{text}");
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let apis = admin
        .list_apis(ListApisRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(apis.apis.is_empty(), "nothing half-imported: {:?}", apis.apis);
}

#[tokio::test]
async fn velocity_templates_of_an_export_render_as_on_aws_including_the_response_override() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    // The backend answers an error document for pet 13, a pet otherwise.
    let backend = RawBackend::start(|request| {
        let body: &[u8] = if request.path().ends_with("/13") {
            br#"{"error": "no such pet"}"#
        } else {
            br#"{"id": 7, "type": "dog"}"#
        };
        let length = body.len().to_string();
        raw_response(
            200,
            &[("content-type", "application/json"), ("content-length", &length)],
            body,
        )
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let export = std::fs::read_to_string(
        repo_root().join("tests/data/aws-exports/06-petstore-response-override-vtl.oas301.json"),
    )
    .expect("export");
    let file = dir.path().join("export.json");
    std::fs::write(
        &file,
        export.replace(
            "http://petstore.execute-api.us-east-1.amazonaws.com",
            &backend.url(),
        ),
    )
    .expect("write");
    let endpoint = cluster.nodes[0].endpoint();
    pylon_cli(
        &endpoint,
        &[
            "import",
            "openapi",
            &file.display().to_string(),
            "--api",
            "pets",
            "--stage",
            "prod",
            "--deploy",
        ],
    )
    .expect("import");
    let dp = DataPlaneNode::start(dir.path(), "dp-velocity", std::slice::from_ref(&endpoint), &[]);
    let client = HttpClient::default();
    let get = |path: &'static str| {
        let client = &client;
        let address = dp.address();
        async move {
            let request = Request::get(path)
                .header("host", "pets.localhost")
                .body(Full::new(Bytes::new()))?;
            client.send(address, request).await
        }
    };
    let reply = eventually("the imported API served", Duration::from_secs(15), || async {
        get("/prod/pets/7").await.ok().filter(|r| r.status == 200)
    })
    .await;
    // `$input.json("$")` of the backend's answer, and no override.
    assert_eq!(reply.body.trim(), r#"{"id":7,"type":"dog"}"#);
    // The template finds "error" and sets $context.responseOverride.status.
    let reply = get("/prod/pets/13").await.expect("reply");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body.trim(), r#"{"error":"no such pet"}"#);
}

#[tokio::test]
async fn an_http_api_export_with_a_lambda_authorizer_and_cors_guards_its_routes_as_on_aws() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = pylon_tests::gateway::Backend::start("pets").await;
    // The Lambda authorizer, at the URL given for its function.
    let authorizer =
        pylon_tests::gateway::JsonServer::start(|_, event| match event["identitySource"][0].as_str() {
            Some("Bearer let-me-in") => (
                200,
                serde_json::json!({"isAuthorized": true, "principalId": "u-1"}),
            ),
            _ => (200, serde_json::json!({"isAuthorized": false})),
        })
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let export = std::fs::read_to_string(
        repo_root().join("tests/data/aws-exports/14-http-api-petstore-cors-ref.oas301.json"),
    )
    .expect("export");
    let file = dir.path().join("export.json");
    std::fs::write(
        &file,
        export.replace(
            "http://petstore.execute-api.us-west-1.amazonaws.com",
            &backend.url(),
        ),
    )
    .expect("write");
    let endpoint = cluster.nodes[0].endpoint();
    let lambda = format!("function-name={}", authorizer.url("/decide"));
    pylon_cli(
        &endpoint,
        &[
            "import",
            "openapi",
            &file.display().to_string(),
            "--api",
            "petstore",
            "--lambda-url",
            &lambda,
            "--stage",
            "prod",
            "--deploy",
        ],
    )
    .expect("import");
    let dp = DataPlaneNode::start(dir.path(), "dp-authorizer", std::slice::from_ref(&endpoint), &[]);
    let client = HttpClient::default();
    let send = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let client = &client;
        let address = dp.address();
        async move {
            let mut request = Request::get(path).header("host", "petstore.localhost");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            client.send(address, request.body(Full::new(Bytes::new()))?).await
        }
    };
    // An open route of the export answers through the backend.
    eventually("the imported API served", Duration::from_secs(15), || async {
        send("/prod/pets", vec![]).await.ok().filter(|r| r.status == 200)
    })
    .await;
    // The authorizer's route: no token 401, a refused one 403, a good one through.
    assert_eq!(send("/prod/pets/7", vec![]).await.expect("reply").status, 401);
    let denied = send("/prod/pets/7", vec![("authorization", "Bearer nope")])
        .await
        .expect("reply");
    assert_eq!(denied.status, 403, "{}", denied.body);
    let allowed = send("/prod/pets/7", vec![("authorization", "Bearer let-me-in")])
        .await
        .expect("reply");
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.json()["path"], "/petstore/pets/7");
    // The export's CORS: a preflight from any origin is answered.
    let preflight = {
        let request = Request::builder()
            .method("OPTIONS")
            .uri("/prod/pets")
            .header("host", "petstore.localhost")
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .body(Full::new(Bytes::new()))
            .expect("request");
        client.send(dp.address(), request).await.expect("preflight")
    };
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(preflight.header("access-control-allow-origin"), "*");
}
