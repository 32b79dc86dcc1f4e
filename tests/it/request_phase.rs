//! The request phase end to end: API keys, JWT and request authorizers,
//! resource policies and endpoint classes, validation, mappings, templates
//! and CORS — real processes, a real issuer, authorizer and backend, all on
//! loopback.

use crate::support::deploy;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, ApiKey, ApiStageRef, UsagePlan};
use pylon_tests::gateway::{Backend, DataPlaneNode, HttpClient, JsonServer, Reply};
use pylon_tests::jwt::{now, openssl, rsa_signer, sign};
use pylon_tests::{Cluster, eventually, free_port, serial};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "guard-api";

/// Good claims, with `changes` merged in (a null removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "ann", "scope": "pets.read", "exp": now() + 600, "iat": now()});
    if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

async fn call(
    client: &HttpClient,
    dp: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    client.send(dp, request).await.expect("reply")
}

fn error_type(reply: &Reply) -> &str {
    reply.header("x-pylon-error-type")
}

fn api(definition: Value) -> Api {
    serde_json::from_value(definition).expect("API definition")
}

fn proxy(path: &str) -> Value {
    json!({"type": "HTTP_PROXY", "uri": format!("${{stageVariables.backend}}{path}")})
}

#[tokio::test]
async fn api_keys_jwt_and_request_authorizers_guard_routes() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("guarded").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (rsa_signer(dir.path(), "k1"), rsa_signer(dir.path(), "k2"));
    let published = Arc::new(Mutex::new(json!({"keys": [first.jwk.clone()]})));
    let jwks = published.clone();
    let issuer =
        JsonServer::start(move |_, _| (200, jwks.lock().map(|k| k.clone()).unwrap_or_default())).await;
    let authorizer = JsonServer::start(|_, event| match event["identitySource"][0].as_str() {
        Some("let-me-in") => (
            200,
            json!({"isAuthorized": true, "principalId": "user-7", "context": {"tier": "gold"}}),
        ),
        Some("broken") => (200, json!({"nonsense": true})),
        _ => (200, json!({"isAuthorized": false})),
    })
    .await;
    let dead = format!("http://127.0.0.1:{}/decide", free_port());
    let dp = DataPlaneNode::start(dir.path(), "dp-guard", &[cluster.nodes[0].endpoint()], &[]);
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let request_authorizer = |name: &str, uri: &str| json!({"name": name, "request": {"uri": uri, "identitySources": ["$request.header.x-token"], "timeoutMs": 1000}});
    let gate = json!({"type": "REQUEST", "authorizer": "gate"});
    let tier = json!({"overwrite:header.x-tier": "$context.authorizer.tier", "overwrite:header.x-principal": "$context.authorizer.principalId"});
    let definition = api(json!({
        "name": "guard",
        "authorizers": [
            {"name": "oidc", "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "jwksUri": issuer.url("/jwks.json"), "algorithms": ["RS256"]}},
            request_authorizer("gate", &authorizer.url("/decide")),
            request_authorizer("down", &dead),
            {"name": "by-query", "request": {"uri": authorizer.url("/decide"), "identitySources": ["$request.querystring.token"], "timeoutMs": 1000}},
        ],
        "routes": [
            {"method": "GET", "path": "/keyed", "integration": proxy("/keyed"), "authorization": {"apiKeyRequired": true}},
            {"method": "GET", "path": "/jwt", "integration": proxy("/jwt"),
             "authorization": {"type": "JWT", "authorizer": "oidc", "scopes": ["pets.read", "pets.admin"]},
             "requestParameters": {"overwrite:header.x-user": "$context.authorizer.claims.sub"}},
            {"method": "GET", "path": "/gate/a", "integration": proxy("/gate/a"), "authorization": gate, "requestParameters": tier},
            {"method": "GET", "path": "/gate/b", "integration": proxy("/gate/b"), "authorization": gate, "requestParameters": tier},
            {"method": "GET", "path": "/down", "integration": proxy("/down"), "authorization": {"type": "REQUEST", "authorizer": "down"}},
            {"method": "GET", "path": "/gate/q", "integration": proxy("/gate/q"), "authorization": {"type": "REQUEST", "authorizer": "by-query"}},
        ],
    }));
    let backend_url = backend.url();
    deploy(&mut admin, definition, "prod", &[("backend", &backend_url)])
        .await
        .expect("deploy");

    let mut keys = Vec::new();
    for (name, enabled) in [("good", true), ("disabled", false), ("stranger", true)] {
        let created = admin
            .create_api_key(CreateApiKeyRequest {
                api_key: Some(ApiKey {
                    name: name.into(),
                    enabled,
                    ..Default::default()
                }),
                value: String::new(),
            })
            .await
            .expect("create key")
            .into_inner();
        keys.push((created.api_key.expect("key").id, created.value));
    }
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "gold".into(),
                api_stages: vec![ApiStageRef {
                    api: "guard".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                // The stranger's key is in no plan of this stage.
                api_key_ids: vec![keys[0].0.clone(), keys[1].0.clone()],
                ..Default::default()
            }),
        })
        .await
        .expect("usage plan");
    let host = "guard.localhost";
    let (good, disabled, stranger) = (&keys[0].1, &keys[1].1, &keys[2].1);
    eventually("the plan's key admitted", Duration::from_secs(10), || async {
        let reply = call(
            &client,
            dp.address(),
            host,
            "GET",
            "/prod/keyed",
            &[("x-api-key", good)],
            "",
        )
        .await;
        (reply.status == 200).then_some(())
    })
    .await;

    // API keys: only an enabled key of a plan attached to the stage passes.
    for (key, why) in [
        (None, "missing"),
        (Some("not-a-key-at-all-12345"), "wrong"),
        (Some(disabled.as_str()), "disabled"),
        (Some(stranger.as_str()), "not in the stage's plans"),
    ] {
        let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
        let reply = call(&client, dp.address(), host, "GET", "/prod/keyed", &headers, "").await;
        assert_eq!(reply.status, 403, "{why}: {}", reply.body);
        assert_eq!(reply.json()["message"], "Forbidden", "{why}");
        assert_eq!(error_type(&reply), "INVALID_API_KEY", "{why}");
    }

    // JWT: a good token passes and its claims reach the backend.
    let bearer = |token: &str| format!("Bearer {token}");
    let jwt = |token: String| {
        let (client, address) = (&client, dp.address());
        async move {
            let auth = bearer(&token);
            call(
                client,
                address,
                host,
                "GET",
                "/prod/jwt",
                &[("authorization", &auth)],
                "",
            )
            .await
        }
    };
    let reply = jwt(sign(&first, &claims(json!({})))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["headers"]["x-user"], "ann");
    // client_id counts only when there is no aud.
    let reply = jwt(sign(&first, &claims(json!({"aud": null, "client_id": AUDIENCE})))).await;
    assert_eq!(reply.status, 200, "client_id without aud: {}", reply.body);

    let missing = call(&client, dp.address(), host, "GET", "/prod/jwt", &[], "").await;
    assert_eq!(
        (missing.status.as_u16(), error_type(&missing)),
        (401, "UNAUTHORIZED")
    );
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    // A line the authorizer could not read hides nothing: a forged token
    // ending in a byte that is not ASCII, then a good one, is no credential
    // (a backend reading the first line would take the forged one).
    let good = sign(&first, &claims(json!({})));
    let mut forged =
        format!("GET /prod/jwt HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer forged").into_bytes();
    forged.extend_from_slice(b"\xff\r\n");
    forged.extend_from_slice(format!("Authorization: Bearer {good}\r\nConnection: close\r\n\r\n").as_bytes());
    let answer = pylon_tests::gateway::raw_exchange(dp.address(), &forged, Duration::from_secs(5))
        .await
        .expect("raw exchange");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some(first.kid.clone());
    let hs_with_public_key = jsonwebtoken::encode(
        &confused,
        &claims(json!({})),
        &EncodingKey::from_secret(&first.public_pem),
    )
    .expect("hs256");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            sign(&first, &claims(json!({"exp": now() - 120}))),
            403,
            "EXPIRED_TOKEN",
        ),
        (
            "not yet valid",
            sign(&first, &claims(json!({"nbf": now() + 120}))),
            403,
            "EXPIRED_TOKEN",
        ),
        (
            "wrong iss",
            sign(&first, &claims(json!({"iss": "https://evil.test"}))),
            401,
            "UNAUTHORIZED",
        ),
        (
            "wrong aud",
            sign(&first, &claims(json!({"aud": "other-api"}))),
            401,
            "UNAUTHORIZED",
        ),
        (
            "wrong aud, right client_id",
            sign(
                &first,
                &claims(json!({"aud": "other-api", "client_id": AUDIENCE})),
            ),
            401,
            "UNAUTHORIZED",
        ),
        (
            "missing scope",
            sign(&first, &claims(json!({"scope": "pets.write"}))),
            403,
            "ACCESS_DENIED",
        ),
        ("alg none", none_token, 401, "UNAUTHORIZED"),
        (
            "HS256 signed with the RSA public key",
            hs_with_public_key,
            401,
            "UNAUTHORIZED",
        ),
        (
            "unknown kid",
            sign(&second, &claims(json!({}))),
            401,
            "UNAUTHORIZED",
        ),
        ("garbage", "not.a.token".into(), 401, "UNAUTHORIZED"),
    ];
    for (why, token, status, kind) in cases {
        let reply = jwt(token).await;
        assert_eq!(
            (reply.status.as_u16(), error_type(&reply)),
            (status, kind),
            "{why}: {}",
            reply.body
        );
        assert!(
            reply.header("www-authenticate").starts_with("Bearer"),
            "{why}: {:?}",
            reply.headers
        );
    }
    let tampered = {
        let token = sign(&first, &claims(json!({})));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "mallory"})).to_string());
        parts.join(".")
    };
    let reply = jwt(tampered).await;
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (403, "INVALID_SIGNATURE"),
        "{}",
        reply.body
    );

    // Unknown kids do not turn into a flood of JWKS fetches.
    let fetches = issuer.calls();
    for _ in 0..20 {
        assert_eq!(jwt(sign(&second, &claims(json!({})))).await.status, 401);
    }
    assert!(
        issuer.calls() <= fetches + 1,
        "{} fetches for 20 unknown kids",
        issuer.calls() - fetches
    );

    // Key rotation: once the issuer publishes the new key, its tokens pass.
    if let Ok(mut keys) = published.lock() {
        *keys = json!({"keys": [first.jwk.clone(), second.jwk.clone()]});
    }
    eventually("the rotated key accepted", Duration::from_secs(15), || async {
        (jwt(sign(&second, &claims(json!({})))).await.status == 200).then_some(())
    })
    .await;

    // Request authorizer: allow with a context that reaches the backend...
    let gate = |path: &'static str, token: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| vec![("x-token", t)]).unwrap_or_default();
        let client = client.clone();
        let address = dp.address();
        async move { call(&client, address, host, "GET", path, &headers, "").await }
    };
    let reply = gate("/prod/gate/a", Some("let-me-in")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["headers"]["x-tier"], "gold");
    assert_eq!(reply.json()["headers"]["x-principal"], "user-7");
    // ...cached within the TTL for the same route...
    let calls = authorizer.calls();
    for _ in 0..5 {
        assert_eq!(gate("/prod/gate/a", Some("let-me-in")).await.status, 200);
    }
    assert_eq!(
        authorizer.calls(),
        calls,
        "the decision for GET /gate/a is cached"
    );
    // ...but never reused for another route.
    assert_eq!(gate("/prod/gate/b", Some("let-me-in")).await.status, 200);
    assert_eq!(
        authorizer.calls(),
        calls + 1,
        "GET /gate/b asks the authorizer itself"
    );

    let denied = gate("/prod/gate/a", Some("stranger")).await;
    assert_eq!(
        (denied.status.as_u16(), error_type(&denied)),
        (403, "ACCESS_DENIED"),
        "{}",
        denied.body
    );
    let calls = authorizer.calls();
    let anonymous = gate("/prod/gate/a", None).await;
    assert_eq!(
        (anonymous.status.as_u16(), error_type(&anonymous)),
        (401, "UNAUTHORIZED")
    );
    assert_eq!(authorizer.calls(), calls, "no identity source, no call");
    // A credential the backend could read otherwise than the authorizer is
    // none: an HTTP/2 value with spaces around it (HTTP/1 parsing trims
    // them, HTTP/2 keeps them), a query value whose escapes are not UTF-8.
    let (status, _, _) =
        pylon_tests::gateway::h2_request(dp.address(), host, "/prod/gate/a", &[("x-token", " let-me-in ")])
            .await
            .expect("h2 request");
    assert_eq!(status, 401, "a spaced HTTP/2 credential");
    let by_query = |query: &'static str| {
        let client = client.clone();
        let address = dp.address();
        async move {
            call(
                &client,
                address,
                host,
                "GET",
                &format!("/prod/gate/q?{query}"),
                &[],
                "",
            )
            .await
        }
    };
    assert_eq!(
        by_query("token=%ff%fe").await.status,
        401,
        "escapes that are not UTF-8"
    );
    assert_eq!(authorizer.calls(), calls, "no credential, no call");
    let reply = by_query("token=let%2Dme%2Din").await;
    assert_eq!(reply.status, 200, "a query credential, decoded: {}", reply.body);
    let broken = gate("/prod/gate/a", Some("broken")).await;
    assert_eq!(
        (broken.status.as_u16(), error_type(&broken)),
        (500, "AUTHORIZER_CONFIGURATION_ERROR")
    );
    let down = gate("/prod/down", Some("let-me-in")).await;
    assert_eq!(
        (down.status.as_u16(), error_type(&down)),
        (500, "AUTHORIZER_FAILURE"),
        "{}",
        down.body
    );
}

/// curl's status code; async, so the test's own backend keeps running.
async fn curl_status(args: &[&str]) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .args(args)
        .output()
        .await
        .expect("curl");
    let status = String::from_utf8_lossy(&output.stdout).into_owned();
    if status == "000" {
        return format!("000 ({})", String::from_utf8_lossy(&output.stderr).trim());
    }
    status
}

#[tokio::test]
async fn policies_validation_mappings_templates_and_cors_shape_requests() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("shaped").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = cluster.nodes[0].endpoint();
    let public = DataPlaneNode::start(dir.path(), "dp-public", std::slice::from_ref(&endpoint), &[]);
    let private = DataPlaneNode::start(
        dir.path(),
        "dp-private",
        std::slice::from_ref(&endpoint),
        &[
            "--label",
            "endpoint-class=private",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
    );
    let client = HttpClient::default();
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let backend_url = backend.url();
    let shapes = api(json!({
        "name": "shapes",
        "cors": {"allowOrigins": ["https://app.example"], "allowMethods": ["GET", "POST"], "allowHeaders": ["content-type", "x-client"], "maxAgeSeconds": 600},
        "models": {"Pet": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}},
        "routes": [
            {"method": "POST", "path": "/pets", "integration": proxy("/pets"),
             "validation": {"bodyModels": {"application/json": "Pet"}, "requiredQuery": ["dry"], "requiredHeaders": ["x-client"]}},
            {"method": "POST", "path": "/map/{id}", "integration": proxy("/original"),
             "requestParameters": {
                "append:header.x-literal": "static value",
                "overwrite:header.x-id": "$request.path.id",
                "overwrite:header.x-greeting": "hello ${request.body.name} via ${context.stage}",
                "remove:header.x-remove": "",
                "overwrite:querystring.q": "$request.body.name",
                "remove:querystring.drop": "",
                "overwrite:path": "/rewritten/${request.path.id}"},
             "responseParameters": {"overwrite:header.x-backend-type": "$response.header.content-type", "overwrite:statuscode": "201", "remove:header.x-internal": ""}},
            {"method": "POST", "path": "/template", "integration": {"type": "HTTP", "uri": "${stageVariables.backend}/template",
             "requestTemplate": "{\"who\": {{ request.body.name | tojson }}, \"stage\": \"{{ context.stage }}\"}",
             "responseTemplate": "{\"wrapped\": {{ response.body | tojson }}, \"status\": {{ response.status }}}"}},
            {"method": "GET", "path": "/mock", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "headers": {"content-type": "text/plain"}},
             "responseTemplate": "hello {{ request.querystring.name }} from {{ stageVariables.color }}"}},
            {"method": "GET", "path": "/plain", "integration": proxy("/plain")},
            {"method": "POST", "path": "/named", "integration": proxy("/original"),
             "requestParameters": {"overwrite:path": "/named/${request.body.name}"}},
        ],
    }));
    deploy(
        &mut admin,
        shapes,
        "prod",
        &[("backend", &backend_url), ("color", "blue")],
    )
    .await
    .expect("deploy shapes");
    let fenced = api(json!({
        "name": "fenced",
        "resourcePolicy": {"allowCidrs": ["127.0.0.2/32", "10.9.0.0/16"], "denyCidrs": ["10.9.9.0/24"]},
        "routes": [{"method": "GET", "path": "/x", "integration": proxy("/x")}],
    }));
    deploy(&mut admin, fenced, "prod", &[("backend", &backend_url)])
        .await
        .expect("deploy fenced");
    let inside = api(json!({
        "name": "inside",
        "endpointType": "PRIVATE",
        "resourcePolicy": {"allowCidrs": ["127.0.0.0/8"]},
        "routes": [{"method": "GET", "path": "/x", "integration": proxy("/x")}],
    }));
    deploy(&mut admin, inside, "prod", &[("backend", &backend_url)])
        .await
        .expect("deploy inside");
    let host = "shapes.localhost";
    eventually("both nodes serve", Duration::from_secs(10), || async {
        let a = client.get(public.address(), host, "/prod/plain").await.ok()?;
        let b = client
            .get(private.address(), "inside.localhost", "/prod/x")
            .await
            .ok()?;
        (a.status == 200 && b.status == 200).then_some(())
    })
    .await;
    let dp = public.address();

    // Endpoint classes: a PRIVATE API is not even known to a public-class node.
    let reply = client
        .get(public.address(), "inside.localhost", "/prod/x")
        .await
        .expect("public");
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (404, "RESOURCE_NOT_FOUND")
    );

    // Resource policy by source address (127.0.0.2 is loopback too).
    let fenced_url = format!("http://127.0.0.1:{}/prod/x", dp.port());
    assert_eq!(
        curl_status(&["-H", "Host: fenced.localhost", &fenced_url]).await,
        "403"
    );
    assert_eq!(
        curl_status(&[
            "--interface",
            "127.0.0.2",
            "-H",
            "Host: fenced.localhost",
            &fenced_url
        ])
        .await,
        "200"
    );
    let reply = client
        .get(dp, "fenced.localhost", "/prod/x")
        .await
        .expect("fenced");
    assert_eq!(error_type(&reply), "ACCESS_DENIED");
    // X-Forwarded-For counts only from a trusted proxy.
    let forwarded = |node: SocketAddr, xff: &'static str| {
        let client = client.clone();
        async move {
            call(
                &client,
                node,
                "fenced.localhost",
                "GET",
                "/prod/x",
                &[("x-forwarded-for", xff)],
                "",
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(
        forwarded(private.address(), "10.9.1.1").await,
        200,
        "allowed range via a trusted proxy"
    );
    assert_eq!(
        forwarded(private.address(), "10.9.9.9").await,
        403,
        "denied range via a trusted proxy"
    );
    assert_eq!(
        forwarded(dp, "10.9.1.1").await,
        403,
        "an untrusted peer cannot claim an address"
    );

    // Validation: parameters first, each missing one named; then the body.
    let pets = |query: &'static str, headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let client = client.clone();
        async move {
            call(
                &client,
                dp,
                host,
                "POST",
                &format!("/prod/pets{query}"),
                &headers,
                body,
            )
            .await
        }
    };
    let reply = pets("", vec![], r#"{"name":"rex"}"#).await;
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (400, "BAD_REQUEST_PARAMETERS")
    );
    assert_eq!(
        reply.json()["message"],
        "Missing required request parameters: [dry, x-client]"
    );
    let json_type = ("content-type", "application/json");
    let reply = pets(
        "?dry=1",
        vec![("x-client", "t"), json_type],
        r#"{"name": 5, "age": -1}"#,
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (400, "BAD_REQUEST_BODY")
    );
    let message = reply.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(
        message.starts_with("Invalid request body: ")
            && message.contains("/name")
            && message.contains("/age"),
        "{message}"
    );
    let reply = pets("?dry=1", vec![("x-client", "t"), json_type], "{not json").await;
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("not JSON"),
        "{}",
        reply.body
    );
    let reply = pets(
        "?dry=1",
        vec![("x-client", "t"), ("content-type", "text/plain")],
        "rex",
    )
    .await;
    assert_eq!(error_type(&reply), "BAD_REQUEST_BODY", "{}", reply.body);
    // A body is checked against the model of its one media type: two
    // Content-Type lines (a backend may read the other) or an empty one are
    // no media type, never the JSON default.
    for content_type in [
        vec![json_type, ("content-type", "text/plain")],
        vec![("content-type", "")],
    ] {
        let mut headers = vec![("x-client", "t")];
        headers.extend(content_type.iter().copied());
        let reply = pets("?dry=1", headers, r#"{"name": "rex"}"#).await;
        assert_eq!(
            (reply.status.as_u16(), error_type(&reply)),
            (400, "BAD_REQUEST_BODY"),
            "{content_type:?}: {}",
            reply.body
        );
    }
    let reply = pets(
        "?dry=1",
        vec![("x-client", "t"), json_type],
        r#"{"name": "rex", "age": 3}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Mappings, each seen by the backend.
    let reply = call(
        &client,
        dp,
        host,
        "POST",
        "/prod/map/42?drop=1&keep=2&flag&sp=a%20b&%64rop=3&q=old",
        &[("x-remove", "secret"), json_type, ("x-pylon-principal", "forged")],
        r#"{"name": "rex"}"#,
    )
    .await;
    assert_eq!(reply.status, 201, "overwrite:statuscode: {}", reply.body);
    assert_eq!(reply.header("x-backend-type"), "application/json");
    let seen = reply.json();
    assert_eq!(seen["path"], "/rewritten/42");
    // The parameters no mapping names go as the client wrote them; a
    // removed one goes in every spelling; a set one comes last.
    assert_eq!(seen["query"], "keep=2&flag&sp=a%20b&q=rex");
    assert_eq!(seen["headers"]["x-literal"], "static value");
    assert_eq!(seen["headers"]["x-id"], "42");
    assert_eq!(seen["headers"]["x-greeting"], "hello rex via prod");
    assert_eq!(seen["headers"]["x-remove"], Value::Null);
    assert_eq!(
        seen["headers"]["x-pylon-principal"],
        Value::Null,
        "client x-pylon-* headers never reach the backend"
    );
    // A path mapped from client values leaves as a valid path: what is not
    // a path character is percent-encoded, escapes already there are kept.
    let reply = call(
        &client,
        dp,
        host,
        "POST",
        "/prod/named",
        &[json_type],
        r#"{"name": "a<b> 100%{x}|caf\u00e9%41"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["path"],
        "/named/a%3Cb%3E%20100%25%7Bx%7D%7Ccaf%C3%A9%41"
    );
    // A mapping cannot smuggle a header through CR/LF.
    let reply = call(
        &client,
        dp,
        host,
        "POST",
        "/prod/map/42",
        &[json_type],
        r#"{"name": "rex\r\nx-evil: 1"}"#,
    )
    .await;
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (400, "BAD_REQUEST_PARAMETERS"),
        "{}",
        reply.body
    );

    // Body templates on an HTTP integration, both ways, and on a MOCK.
    let reply = call(
        &client,
        dp,
        host,
        "POST",
        "/prod/template",
        &[json_type],
        r#"{"name": "rex", "extra": true}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let wrapped = reply.json();
    assert_eq!(wrapped["status"], 200);
    let sent: Value =
        serde_json::from_str(wrapped["wrapped"]["body"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(sent, json!({"who": "rex", "stage": "prod"}));
    let reply = client.get(dp, host, "/prod/mock?name=ann").await.expect("mock");
    assert_eq!(reply.body, "hello ann from blue");

    // CORS: the gateway answers preflights itself and marks real answers.
    let before = backend.requests.load(std::sync::atomic::Ordering::Relaxed);
    let preflight = call(
        &client,
        dp,
        host,
        "OPTIONS",
        "/prod/pets",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-client"),
        ],
        "",
    )
    .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert!(preflight.header("access-control-allow-methods").contains("POST"));
    assert_eq!(preflight.header("access-control-max-age"), "600");
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::Relaxed),
        before,
        "no backend call for a preflight"
    );
    let evil = call(
        &client,
        dp,
        host,
        "OPTIONS",
        "/prod/pets",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(evil.header("access-control-allow-origin"), "");
    let reply = call(
        &client,
        dp,
        host,
        "GET",
        "/prod/plain",
        &[("origin", "https://app.example")],
        "",
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), "https://app.example");
}

/// `(status, body)` from curl; status "000" when there was no HTTP answer.
async fn curl_exchange(args: &[&str]) -> (String, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_owned(), body.to_owned())
}

/// A CA, and a client certificate it signed for `subject`.
fn client_ca(dir: &Path, name: &str, subject: &str) -> (String, String, String) {
    let path = |file: &str| dir.join(format!("{name}-{file}")).display().to_string();
    let (ca, ca_key, key, csr, cert, ext) = (
        path("ca.pem"),
        path("ca.key"),
        path("client.key"),
        path("client.csr"),
        path("client.pem"),
        path("ext.cnf"),
    );
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca_subject = format!("/CN={name} CA");
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "1",
                "-subj",
                &ca_subject,
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"],
            &ec[..],
            &["-subj", subject, "-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").expect("ext file");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}

/// A self-signed certificate for `name`, as path strings.
fn server_cert(dir: &Path, name: &str) -> (String, String) {
    let (cert, key) = pylon_tests::self_signed(dir, name);
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn mutual_tls_domains_admit_only_clients_with_a_trusted_certificate() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let backend = Backend::start("vault").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, client_cert, client_key) = client_ca(dir.path(), "trusted", "/CN=alice/O=Pylon Tests");
    let (_, rogue_cert, rogue_key) = client_ca(dir.path(), "rogue", "/CN=mallory");
    let (domain_cert, domain_key) = server_cert(dir.path(), "secure.shop.test");
    let (default_cert, default_key) = server_cert(dir.path(), "default.test");
    let tls_port = free_port();
    let dp = DataPlaneNode::start(
        dir.path(),
        "dp-mtls",
        &[cluster.nodes[0].endpoint()],
        &[
            &format!("--tls-listen=127.0.0.1:{tls_port}"),
            &format!("--tls-cert={default_cert}"),
            &format!("--tls-key={default_key}"),
        ],
    );
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    let vault = api(json!({
        "name": "vault",
        "routes": [{"method": "GET", "path": "/whoami", "integration": proxy("/whoami"),
                    "requestParameters": {"overwrite:header.x-client-subject": "$context.identity.clientCert.subjectDN",
                                          "overwrite:header.x-client-fingerprint": "$context.identity.clientCert.fingerprint"}}],
    }));
    let backend_url = backend.url();
    deploy(&mut admin, vault, "prod", &[("backend", &backend_url)])
        .await
        .expect("deploy");
    admin
        .create_domain_name(CreateDomainNameRequest {
            domain_name: Some(
                serde_json::from_value(json!({
                    "name": "secure.shop.test",
                    "mappings": [{"basePath": "", "api": "vault", "stage": "prod"}],
                    "certificateFile": domain_cert, "privateKeyFile": domain_key, "truststoreFile": ca,
                }))
                .expect("domain"),
            ),
        })
        .await
        .expect("create domain");

    let resolve = format!("secure.shop.test:{tls_port}:127.0.0.1");
    let url = format!("https://secure.shop.test:{tls_port}/whoami");
    let with = |cert: &str, key: &str| {
        let (resolve, url, domain_cert) = (resolve.clone(), url.clone(), domain_cert.clone());
        let (cert, key) = (cert.to_owned(), key.to_owned());
        async move {
            curl_exchange(&[
                "--resolve",
                &resolve,
                "--cacert",
                &domain_cert,
                "--cert",
                &cert,
                "--key",
                &key,
                &url,
            ])
            .await
        }
    };
    let (status, body) = eventually(
        "the mutual-TLS domain serves",
        Duration::from_secs(10),
        || async {
            let (status, body) = with(&client_cert, &client_key).await;
            (status == "200").then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, "200");
    let seen: Value = serde_json::from_str(&body).expect("backend JSON");
    let subject = seen["headers"]["x-client-subject"].as_str().unwrap_or("");
    assert!(
        subject.contains("CN=alice") && subject.contains("O=Pylon Tests"),
        "{subject}"
    );
    let expected = openssl(&["x509", "-in", &client_cert, "-noout", "-fingerprint", "-sha256"]);
    let expected = expected
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(seen["headers"]["x-client-fingerprint"], expected.as_str());

    // No certificate, or one from another CA: the handshake fails.
    let (status, _) = curl_exchange(&["--resolve", &resolve, "--cacert", &domain_cert, &url]).await;
    assert_eq!(status, "000", "without a client certificate");
    let (status, _) = with(&rogue_cert, &rogue_key).await;
    assert_eq!(status, "000", "with a certificate from an untrusted CA");

    // The domain is not reachable around the handshake: over plain HTTP, or
    // on a TLS connection opened for another name.
    let client = HttpClient::default();
    let reply = client
        .get(dp.address(), "secure.shop.test", "/whoami")
        .await
        .expect("plain");
    assert_eq!(
        (reply.status.as_u16(), error_type(&reply)),
        (403, "ACCESS_DENIED")
    );
    let other = format!("default.test:{tls_port}:127.0.0.1");
    let (status, _) = curl_exchange(&[
        "--resolve",
        &other,
        "--cacert",
        &default_cert,
        "-H",
        "Host: secure.shop.test",
        &format!("https://default.test:{tls_port}/whoami"),
    ])
    .await;
    assert_eq!(status, "403", "SNI for another name");
}
