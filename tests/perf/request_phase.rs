//! What the request phase costs: the same POST through `pylon dev` to the
//! same origin, once on a route with authorization NONE and once on a route
//! with an API key + a JWT (RS256, JWKS cached) + JSON Schema body
//! validation + a header mapping from a claim. Both requests carry the same
//! headers and body, so only the work differs. Layout as in [`crate::proxy`]:
//! wrk on CPU 0, pylon and the origin on CPU 1, rounds alternating.

use crate::proxy::{available, median, origin, start_pylon_dev, wrk_with};
use pylon_proto::admin::v1::{
    CreateApiKeyRequest, CreateApiRequest, CreateDeploymentRequest, CreateUsagePlanRequest,
};
use pylon_proto::config::v1::{Api, ApiKey, ApiStageRef, UsagePlan};
use pylon_tests::jwt::{now, rsa_signer, sign};
use pylon_tests::{cpu_time, eventually, free_port};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const ROUNDS: usize = 3;
const SECONDS: u64 = 8;
const BODY: &str = r#"{"name":"rex","age":3,"tags":["good","boy"]}"#;

pub async fn run() {
    if !available("wrk") || !available("nginx") || !available("taskset") || !available("openssl") {
        println!("request-phase benchmark skipped: wrk, nginx, taskset and openssl are needed");
        return;
    }
    println!(
        "\nRequest phase: POST through pylon, route with authorization NONE vs API key + JWT + validation + header mapping; {ROUNDS} rounds of {SECONDS}s, alternating"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = rsa_signer(dir.path(), "bench-key");
    let jwks = json!({"keys": [signer.jwk]}).to_string();
    let origin_port = free_port();
    let _origin = origin(
        dir.path(),
        origin_port,
        r#"{"ok":true}"#,
        &format!("location = /jwks.json {{ default_type application/json; return 200 '{jwks}'; }}"),
    );
    let (pylon, listen, mut client) = start_pylon_dev(dir.path()).await;
    let origin = format!("http://127.0.0.1:{origin_port}");
    let api: Api = serde_json::from_value(json!({
        "name": "bench",
        "authorizers": [{"name": "oidc", "jwt": {"issuer": "https://issuer.bench", "audiences": ["bench"],
                         "jwksUri": format!("{origin}/jwks.json"), "algorithms": ["RS256"]}}],
        "models": {"Pet": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}},
        "routes": [
            {"method": "POST", "path": "/open", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/open")}},
            {"method": "POST", "path": "/guarded", "integration": {"type": "HTTP_PROXY", "uri": format!("{origin}/guarded")},
             "authorization": {"type": "JWT", "authorizer": "oidc", "scopes": ["pets.write"], "apiKeyRequired": true},
             "validation": {"bodyModels": {"application/json": "Pet"}},
             "requestParameters": {"overwrite:header.x-user": "$context.authorizer.claims.sub"}},
        ],
    }))
    .expect("bench API");
    client
        .create_api(CreateApiRequest { api: Some(api) })
        .await
        .expect("create API");
    client
        .create_deployment(CreateDeploymentRequest {
            api: "bench".into(),
            stage: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("deploy");
    let key = client
        .create_api_key(CreateApiKeyRequest {
            api_key: Some(ApiKey {
                name: "bench".into(),
                enabled: true,
                ..Default::default()
            }),
            value: String::new(),
        })
        .await
        .expect("key")
        .into_inner();
    client
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "bench".into(),
                api_stages: vec![ApiStageRef {
                    api: "bench".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                api_key_ids: vec![key.api_key.map(|k| k.id).unwrap_or_default()],
                ..Default::default()
            }),
        })
        .await
        .expect("plan");
    let token = sign(
        &signer,
        &json!({"iss": "https://issuer.bench", "aud": "bench", "sub": "ann", "scope": "pets.write", "exp": now() + 3600}),
    );
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.headers[\"x-api-key\"] = \"{}\"\n",
            key.value
        ),
    )
    .expect("wrk script");
    let script = script.display().to_string();
    let base = format!("http://127.0.0.1:{listen}/prod");
    // Both routes answer 200 before measuring (the guarded one proves the key,
    // token and body pass).
    eventually("both routes serve", Duration::from_secs(15), || async {
        let ok = |path: &str| {
            Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "-d",
                    BODY,
                ])
                .args([
                    "-H",
                    "Host: bench.localhost",
                    "-H",
                    "Content-Type: application/json",
                ])
                .args([
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    "-H",
                    &format!("x-api-key: {}", key.value),
                ])
                .arg(format!("{base}{path}"))
                .output()
                .map(|o| o.stdout == b"200")
                .unwrap_or(false)
        };
        (ok("/open") && ok("/guarded")).then_some(())
    })
    .await;

    let paths = [
        ("none", format!("{base}/open")),
        ("guarded", format!("{base}/guarded")),
    ];
    let extra = ["-s", script.as_str()];
    for (_, url) in &paths {
        let _ = wrk_with(url, "bench.localhost", 64, 2, &extra);
    }
    let mut rps = [Vec::new(), Vec::new()];
    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for k in 0..2 {
            let i = (k + round) % 2;
            let (name, url) = &paths[i];
            let before = cpu_time(pylon.0.id());
            let Some(run) = wrk_with(url, "bench.localhost", 64, SECONDS, &extra) else {
                println!("    {name}: wrk failed");
                continue;
            };
            let used = cpu_time(pylon.0.id()).saturating_sub(before);
            cpu[i].push(used.as_secs_f64() * 1e6 / run.requests.max(1.0));
            rps[i].push(run.rps);
            p50[i].push(run.p50_ms);
            p99[i].push(run.p99_ms);
            println!(
                "  round {round} {name:<8} {:>9.0} rps  p50 {:.3} ms  p99 {:.3} ms",
                run.rps, run.p50_ms, run.p99_ms
            );
        }
    }
    println!("\n  route     rps (c64)   p50        p99        pylon CPU/req");
    for (i, (name, _)) in paths.iter().enumerate() {
        println!(
            "  {name:<8} {:>10.0}  {:>7.3} ms  {:>7.3} ms  {:.1} µs",
            median(&rps[i]),
            median(&p50[i]),
            median(&p99[i]),
            median(&cpu[i])
        );
    }
    println!(
        "  ratio guarded/none: throughput {:.2}×  p50 {:.2}×  p99 {:.2}×  CPU/req {:.2}×",
        median(&rps[1]) / median(&rps[0]),
        median(&p50[1]) / median(&p50[0]),
        median(&p99[1]) / median(&p99[0]),
        median(&cpu[1]) / median(&cpu[0]),
    );
}
