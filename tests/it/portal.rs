//! The developer portal in a real headless browser (Chromium through
//! Selenium, `tests/scripts/portal_e2e.py`) against a real `pylon dev`:
//! a developer signs up, an operator approves in the console, the
//! developer makes a key, calls the API with it (from the portal's "try it"
//! through the stage's CORS, and directly), sees the usage count move,
//! rotates and revokes; a second consumer cannot touch the first's keys.

use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{Api, ApiStageRef, Publication, Quota, UsagePlan, quota};
use pylon_tests::{eventually, free_port, serial, spawn_pylon};
use std::time::Duration;

#[tokio::test]
async fn a_developer_signs_up_gets_a_key_and_calls_the_api_and_others_cannot_touch_it() {
    crate::support::require_browser();
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin_port, raft, console, portal) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let args = [
        format!("--data-dir={}", dir.path().join("dev").display()),
        format!("--listen=127.0.0.1:{listen}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        format!("--raft-listen=127.0.0.1:{raft}"),
        format!("--console-listen=127.0.0.1:{console}"),
        format!("--portal-listen=127.0.0.1:{portal}"),
    ];
    // Stopped when the test ends, however it ends.
    struct Stop(Option<std::process::Child>);
    impl Drop for Stop {
        fn drop(&mut self) {
            pylon_tests::kill(&mut self.0);
        }
    }
    let _dev = Stop(Some(
        spawn_pylon("dev", &args, &dir.path().join("dev.log"), "info").expect("pylon dev"),
    ));
    let endpoint = format!("http://127.0.0.1:{admin_port}");
    let mut admin = eventually("the admin API answers", Duration::from_secs(20), || async {
        pylon_tests::connect(&endpoint).await.ok()
    })
    .await;

    // The weather API: keyed, its CORS open to the portal's origin, and
    // its prod stage published with the free plan (100 calls a day).
    let portal_origin = format!("http://127.0.0.1:{portal}");
    let api: Api = serde_json::from_value(serde_json::json!({
        "name": "weather",
        "description": "Forecasts. <b>today</b> and tomorrow.<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script>",
        "routes": [{
            "method": "GET", "path": "/today",
            "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": "{\"sky\": \"sunny\"}"}},
            "authorization": {"apiKeyRequired": true}
        }],
        "cors": {"allowOrigins": [portal_origin], "allowMethods": ["GET"], "allowHeaders": ["x-api-key"]}
    }))
    .expect("API");
    crate::support::deploy(&mut admin, api, "prod", &[])
        .await
        .expect("deploy");
    admin
        .create_usage_plan(CreateUsagePlanRequest {
            usage_plan: Some(UsagePlan {
                name: "free".into(),
                api_stages: vec![ApiStageRef {
                    api: "weather".into(),
                    stage: "prod".into(),
                    ..Default::default()
                }],
                quota: Some(Quota {
                    limit: 100,
                    period: quota::Period::Day as i32,
                    offset: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("plan");
    // A publication must name a plan that offers the stage.
    let refused = crate::support::edit_stage(&mut admin, "weather", "prod", |stage| {
        stage.publication = Some(Publication {
            published: true,
            usage_plan: "gold".into(),
        });
    })
    .await
    .expect_err("no such plan");
    assert!(
        format!("{refused:#}").contains("publication.usage_plan"),
        "{refused:#}"
    );
    crate::support::edit_stage(&mut admin, "weather", "prod", |stage| {
        stage.publication = Some(Publication {
            published: true,
            usage_plan: "free".into(),
        });
    })
    .await
    .expect("publish");

    let screenshots = crate::support::screenshots("portal-screenshots");
    let config = serde_json::json!({
        "portal": portal_origin,
        "console": format!("http://127.0.0.1:{console}"),
        "gateway": format!("http://127.0.0.1:{listen}"),
        "host": "weather.localhost",
        "screenshots": screenshots,
    });
    let (passed, said) = crate::support::run_browser_script("portal_e2e.py", config).await;
    let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
    assert!(
        passed,
        "{said}\n--- dev log ---\n{}",
        &log[log.len().saturating_sub(6000)..]
    );

    // The audit log names the consumer for what it did on the portal, and
    // the listing never shows a password hash.
    let audit = crate::support::audit_records(&mut admin).await;
    for method in [
        "SignUpConsumer",
        "IssueConsumerKey",
        "RotateConsumerKey",
        "RevokeConsumerKey",
    ] {
        assert!(
            audit.iter().any(|r| r.method == method
                && r.actor
                    .as_ref()
                    .is_some_and(|a| a.name == "portal:dev@example.com")),
            "{method} by the consumer is audited"
        );
    }
    let consumers = admin
        .list_consumers(ListConsumersRequest::default())
        .await
        .expect("consumers")
        .into_inner()
        .consumers;
    assert_eq!(consumers.len(), 2);
    assert!(consumers.iter().all(|c| c.password_hash.is_empty()));
}
