//! Validation tests: a good API passes with defaults filled in; each bad input is
//! rejected with the exact path of the field at fault; all errors come at once.

use super::*;
use pylon_proto::config::v1::{
    Api, ApiKey, ApiStageRef, Authorization, Authorizer, BasePathMapping, CanarySettings, Cors, DomainName,
    GatewayResponse, Integration, IntegrationResponse, JwtAuthorizer, MockResponse, Quota, RequestAuthorizer,
    RequestValidation, ResourcePolicy, Route, RouteCache, Stage, ThrottleSettings, UsagePlan, api,
    authorization, authorizer, integration, quota,
};

fn request_authorizer(uri: &str) -> Authorizer {
    Authorizer {
        name: "decide".into(),
        kind: Some(authorizer::Kind::Request(RequestAuthorizer {
            uri: uri.into(),
            identity_sources: vec!["$request.header.x-token".into()],
            ..Default::default()
        })),
    }
}

/// The API allows CORS from this one origin.
fn only_origin(api: &mut Api, origin: &str) {
    api.cors = Some(Cors {
        allow_origins: vec![origin.into()],
        ..Default::default()
    });
}

fn mock_route(method: &str, path: &str) -> Route {
    Route {
        method: method.into(),
        path: path.into(),
        integration: Some(Integration {
            r#type: integration::Type::Mock as i32,
            mock: Some(MockResponse {
                status_code: 200,
                body: "[]".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn proxy_route(method: &str, path: &str, uri: &str) -> Route {
    Route {
        method: method.into(),
        path: path.into(),
        integration: Some(Integration {
            r#type: integration::Type::HttpProxy as i32,
            uri: uri.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn integration(api: &mut Api, route: usize) -> &mut Integration {
    api.routes[route].integration.get_or_insert_default()
}

fn petstore() -> Api {
    Api {
        name: "petstore".into(),
        routes: vec![
            mock_route("GET", "/pets"),
            mock_route("GET", "/pets/{id}"),
            proxy_route("ANY", "/{proxy+}", "${stageVariables.backend}/{proxy}"),
        ],
        ..Default::default()
    }
}

#[test]
fn a_valid_api_passes_with_defaults_filled_in() {
    let api = ApiDefinition::validate(petstore()).expect("petstore is valid");
    let proto = api.as_proto();
    assert_eq!(proto.protocol, api::Protocol::Http as i32);
    for route in &proto.routes {
        let integration = route.integration.as_ref().expect("integration");
        assert_eq!(integration.timeout_ms, DEFAULT_INTEGRATION_TIMEOUT_MS);
    }
}

/// Each case breaks one thing and names the one field that must be reported.
#[test]
fn each_bad_api_is_rejected_naming_the_field_at_fault() {
    type Breaker = fn(&mut Api);
    let cases: Vec<(&str, Breaker)> = vec![
        ("name", |a| a.name = "Pet_Store".into()),
        ("name", |a| a.name = "-pets".into()),
        ("name", |a| a.name = String::new()),
        ("protocol", |a| a.protocol = 9),
        ("routes[1].method", |a| a.routes[1].method = "FETCH".into()),
        ("routes[1].path", |a| a.routes[1].path = "pets/{id}".into()),
        ("routes[1].path", |a| a.routes[1].path = "/pets/{id".into()),
        ("routes[1].path", |a| a.routes[1].path = "/pets//x".into()),
        ("routes[1].path", |a| a.routes[1].path = "/{proxy+}/pets".into()),
        ("routes[1].path", |a| a.routes[1].path = "/pets/{id}/{id}".into()),
        ("routes[1].path", |a| a.routes[1].path = "/pets".into()),
        ("routes[3].path", |a| {
            a.routes.push(mock_route("GET", "/pets/{petId}"))
        }),
        ("routes[2].integration", |a| a.routes[2].integration = None),
        ("routes[2].integration.type", |a| {
            integration(a, 2).r#type = 0;
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = String::new();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "ftp://backend".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://{proxy}.example.com/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "${env.HOME}/x".into();
        }),
        // A port out of range would be read as none: the default port.
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1:99999/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1:+80/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://:80/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://user@/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://[::1/x".into();
        }),
        // A fragment is never sent, and would hide the client's query.
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1/x#part".into();
        }),
        // What the data plane's URI parser refuses is refused here.
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1:80:80/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1%3A8080/x".into();
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1/caf\u{e9}".into();
        }),
        // An authorizer URL is used as written: no placeholders.
        ("authorizers[0].request.uri", |a| {
            a.authorizers = vec![request_authorizer("http://127.0.0.1:8080/${stageVariables.p}")];
        }),
        ("authorizers[0].request.uri", |a| {
            a.authorizers = vec![request_authorizer("http://127.0.0.1:8080:/p")];
        }),
        // An https host TLS could never verify.
        ("authorizers[0].request.uri", |a| {
            a.authorizers = vec![request_authorizer("https://1.2.3.256/p")];
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "https://a!b.example/x".into();
        }),
        ("routes[2].integration.timeout_ms", |a| {
            integration(a, 2).timeout_ms = 30_000;
        }),
        ("routes[2].integration.timeout_ms", |a| {
            integration(a, 2).timeout_ms = 49;
        }),
        ("routes[2].integration.http_method", |a| {
            integration(a, 2).http_method = "BREW".into();
        }),
        ("routes[0].integration.mock.status_code", |a| {
            integration(a, 0).mock.get_or_insert_default().status_code = 700;
        }),
        ("routes[0].integration.uri", |a| {
            integration(a, 0).uri = "http://x".into();
        }),
        ("routes[0].authorization.authorizer", |a| {
            a.routes[0].authorization = Some(Authorization {
                r#type: authorization::Type::Jwt as i32,
                authorizer: "missing".into(),
                ..Default::default()
            })
        }),
        ("routes[0].authorization.scopes", |a| {
            a.routes[0].authorization = Some(Authorization {
                scopes: vec!["read".into()],
                ..Default::default()
            })
        }),
        ("routes[0].validation.body_models[\"application/json\"]", |a| {
            a.routes[0].validation = Some(RequestValidation {
                body_models: [("application/json".to_owned(), "Pet".to_owned())].into(),
                ..Default::default()
            })
        }),
        ("routes[0].request_parameters[\"rewrite:header.x\"]", |a| {
            a.routes[0].request_parameters = [("rewrite:header.x".to_owned(), "1".to_owned())].into()
        }),
        ("routes[0].request_parameters[\"overwrite:header.x\"]", |a| {
            a.routes[0].request_parameters =
                [("overwrite:header.x".to_owned(), "$request.nowhere".to_owned())].into()
        }),
        ("routes[0].response_parameters[\"overwrite:path\"]", |a| {
            a.routes[0].response_parameters = [("overwrite:path".to_owned(), "/x".to_owned())].into()
        }),
        ("routes[0].integration.response_template", |a| {
            integration(a, 0).response_template = "{% if %}".into();
        }),
        // Hostile values and framing headers are refused before they reach
        // a data plane.
        (
            "routes[0].request_parameters[\"overwrite:header.content-length\"]",
            |a| {
                a.routes[0].request_parameters = [(
                    "overwrite:header.content-length".to_owned(),
                    "$request.header.x-cl".to_owned(),
                )]
                .into()
            },
        ),
        (
            "routes[0].response_parameters[\"overwrite:header.transfer-encoding\"]",
            |a| {
                a.routes[0].response_parameters = [(
                    "overwrite:header.transfer-encoding".to_owned(),
                    "chunked".to_owned(),
                )]
                .into()
            },
        ),
        ("routes[0].response_parameters[\"overwrite:header.x-nl\"]", |a| {
            a.routes[0].response_parameters = [(
                "overwrite:header.x-nl".to_owned(),
                "a\r\nSet-Cookie: evil=1".to_owned(),
            )]
            .into()
        }),
        ("routes[2].integration.uri", |a| {
            integration(a, 2).uri = "http://127.0.0.1/x\r\nX-Evil: 1".into();
        }),
        ("routes[0].integration.mock.headers[\"x-a\"]", |a| {
            integration(a, 0)
                .mock
                .get_or_insert_default()
                .headers
                .insert("x-a".into(), "1\n2".into());
        }),
        ("routes[0].integration.mock.headers[\"content-length\"]", |a| {
            integration(a, 0)
                .mock
                .get_or_insert_default()
                .headers
                .insert("content-length".into(), "5".into());
        }),
        // REST-style templates and integration responses: HTTP only.
        ("routes[2].integration.responses", |a| {
            integration(a, 2).responses = vec![IntegrationResponse::default()];
        }),
        ("routes[2].integration.request_templates", |a| {
            integration(a, 2).request_templates = [("application/json".to_owned(), "x".to_owned())].into();
        }),
        ("routes[2].integration.responses[1].selection_pattern", |a| {
            let i = integration(a, 2);
            i.r#type = integration::Type::Http as i32;
            i.responses = vec![
                IntegrationResponse {
                    selection_pattern: "2\\d{2}".into(),
                    ..Default::default()
                },
                IntegrationResponse {
                    selection_pattern: "4(\\d".into(),
                    ..Default::default()
                },
            ];
        }),
        ("routes[2].integration.responses[0].status_code", |a| {
            let i = integration(a, 2);
            i.r#type = integration::Type::Http as i32;
            i.responses = vec![IntegrationResponse {
                status_code: 101,
                ..Default::default()
            }];
        }),
        ("routes[2].integration.responses[1].selection_pattern", |a| {
            let i = integration(a, 2);
            i.r#type = integration::Type::Http as i32;
            i.responses = vec![IntegrationResponse::default(), IntegrationResponse::default()];
        }),
        (
            "routes[2].integration.responses[0].response_templates[\"Application/JSON\"]",
            |a| {
                let i = integration(a, 2);
                i.r#type = integration::Type::Http as i32;
                i.responses = vec![IntegrationResponse {
                    response_templates: [("Application/JSON".to_owned(), "x".to_owned())].into(),
                    ..Default::default()
                }];
            },
        ),
        (
            "routes[2].integration.responses[0].response_parameters[\"overwrite:path\"]",
            |a| {
                let i = integration(a, 2);
                i.r#type = integration::Type::Http as i32;
                i.responses = vec![IntegrationResponse {
                    response_parameters: [("overwrite:path".to_owned(), "/x".to_owned())].into(),
                    ..Default::default()
                }];
            },
        ),
        ("routes[2].integration.request_templates", |a| {
            let i = integration(a, 2);
            i.r#type = integration::Type::Http as i32;
            i.request_template = "a".into();
            i.request_templates = [("application/json".to_owned(), "b".to_owned())].into();
        }),
        ("models[\"Pet\"]", |a| {
            let schema = serde_json::json!({"type": "no-such-type"});
            a.models = [(
                "Pet".to_owned(),
                serde_json::from_value(schema).unwrap_or_default(),
            )]
            .into();
        }),
        ("routes[1].cache.key_parameters[0]", |a| {
            a.routes[1].cache = Some(RouteCache {
                key_parameters: vec!["path.name".into()],
                ..Default::default()
            })
        }),
        ("routes[1].cache.ttl_seconds", |a| {
            a.routes[1].cache = Some(RouteCache {
                ttl_seconds: Some(3601),
                ..Default::default()
            })
        }),
        ("authorizers[0]", |a| {
            a.authorizers = vec![Authorizer {
                name: "jwt".into(),
                kind: None,
            }]
        }),
        ("authorizers[0].jwt.algorithms[0]", |a| {
            a.authorizers = vec![Authorizer {
                name: "jwt".into(),
                kind: Some(authorizer::Kind::Jwt(JwtAuthorizer {
                    issuer: "https://issuer".into(),
                    audiences: vec!["pets".into()],
                    jwks_uri: "https://issuer/jwks".into(),
                    algorithms: vec!["none".into()],
                    ..Default::default()
                })),
            }]
        }),
        ("gateway_responses[0].type", |a| {
            a.gateway_responses = vec![GatewayResponse {
                r#type: "TEAPOT".into(),
                ..Default::default()
            }]
        }),
        ("gateway_responses[0].status_code", |a| {
            a.gateway_responses = vec![GatewayResponse {
                r#type: "THROTTLED".into(),
                status_code: 42,
                ..Default::default()
            }]
        }),
        ("cors.allow_origins[0]", |a| {
            only_origin(a, "https://app.example/")
        }),
        ("cors.allow_origins[0]", |a| {
            only_origin(a, "https://*.example.com")
        }),
        ("cors.allow_origins[0]", |a| only_origin(a, "HTTPS://APP.EXAMPLE")),
        ("cors.allow_origins[0]", |a| {
            only_origin(a, "http://app.example:80")
        }),
        ("cors.allow_origins[0]", |a| only_origin(a, "example.com")),
        ("cors.max_age_seconds", |a| {
            a.cors = Some(Cors {
                max_age_seconds: 100_000,
                ..Default::default()
            })
        }),
        ("resource_policy.deny_cidrs[0]", |a| {
            a.resource_policy = Some(ResourcePolicy {
                deny_cidrs: vec!["10.0.0.0/33".into()],
                ..Default::default()
            })
        }),
        ("route_selection_expression", |a| {
            a.route_selection_expression = "$request.body.action".into()
        }),
    ];
    for (field, breaker) in cases {
        let mut api = petstore();
        breaker(&mut api);
        let errors = ApiDefinition::validate(api).expect_err(field);
        assert!(errors.has(field), "expected an error on {field}, got: {errors}");
        assert_eq!(errors.errors().len(), 1, "only {field} is wrong, got: {errors}");
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let mut api = petstore();
    api.name = "BAD NAME".into();
    api.routes[0].method = "FETCH".into();
    if let Some(i) = api.routes[2].integration.as_mut() {
        i.timeout_ms = 1;
    }
    let errors = ApiDefinition::validate(api).expect_err("three faults");
    let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["name", "routes[0].method", "routes[2].integration.timeout_ms"]
    );
    assert_eq!(
        errors.to_string().split("; ").last(),
        Some("routes[2].integration.timeout_ms: must be 50..=29000")
    );
}

#[test]
fn websocket_apis_use_route_keys_and_a_selection_expression() {
    let mut api = Api {
        name: "chat".into(),
        protocol: api::Protocol::Websocket as i32,
        route_selection_expression: "$request.body.action".into(),
        routes: vec![mock_route("", "$connect"), mock_route("", "sendmessage")],
        ..Default::default()
    };
    assert!(ApiDefinition::validate(api.clone()).is_ok());
    api.routes.push(mock_route("", "$unknown"));
    api.route_selection_expression.clear();
    let errors = ApiDefinition::validate(api).expect_err("two faults");
    assert!(errors.has("routes[2].path"), "{errors}");
    assert!(errors.has("route_selection_expression"), "{errors}");
}

#[test]
fn connections_access_names_a_jwt_authorizer_with_scopes_and_only_on_websocket_apis() {
    let access = |authorizer: &str, scopes: &[&str]| pylon_proto::config::v1::ConnectionsAccess {
        api_key_ids: vec!["k1".into()],
        authorizer: authorizer.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut api = Api {
        name: "chat".into(),
        protocol: api::Protocol::Websocket as i32,
        route_selection_expression: "$request.body.action".into(),
        routes: vec![mock_route("", "$default")],
        connections_access: Some(access("", &[])),
        ..Default::default()
    };
    assert!(ApiDefinition::validate(api.clone()).is_ok(), "API keys alone");
    api.connections_access = Some(access("", &["manage"]));
    let errors = ApiDefinition::validate(api.clone()).expect_err("scopes without an authorizer");
    assert!(errors.has("connections_access.scopes"), "{errors}");
    api.connections_access = Some(access("nobody", &["manage"]));
    let errors = ApiDefinition::validate(api.clone()).expect_err("an unknown authorizer");
    assert!(errors.has("connections_access.authorizer"), "{errors}");
    let http = Api {
        name: "pets".into(),
        routes: vec![mock_route("GET", "/pets")],
        connections_access: Some(access("", &[])),
        ..Default::default()
    };
    let errors = ApiDefinition::validate(http).expect_err("an HTTP API");
    assert!(errors.has("connections_access"), "{errors}");
}

fn stage() -> Stage {
    Stage {
        api: "petstore".into(),
        name: "prod".into(),
        deployment_id: "d1".into(),
        variables: [("backend".to_owned(), "http://127.0.0.1:8081".to_owned())].into(),
        ..Default::default()
    }
}

#[test]
fn each_bad_stage_is_rejected_naming_the_field_at_fault() {
    type Breaker = fn(&mut Stage);
    let cases: Vec<(&str, Breaker)> = vec![
        ("name", |s| s.name = "prod stage".into()),
        ("api", |s| s.api = String::new()),
        ("variables[\"bad-name\"]", |s| {
            s.variables.insert("bad-name".into(), "x".into());
        }),
        ("variables[\"big\"]", |s| {
            s.variables.insert("big".into(), "x".repeat(513));
        }),
        ("variables", |s| {
            for i in 0..100 {
                s.variables.insert(format!("v{i}"), "x".into());
            }
        }),
        ("throttle.rate_limit", |s| {
            s.throttle = Some(ThrottleSettings {
                rate_limit: -1.0,
                burst_limit: 1,
            })
        }),
        ("throttle.burst_limit", |s| {
            s.throttle = Some(ThrottleSettings {
                rate_limit: 10.0,
                burst_limit: 0,
            })
        }),
        ("route_throttle[\"/pets\"]", |s| {
            s.route_throttle.insert(
                "/pets".into(),
                ThrottleSettings {
                    rate_limit: 1.0,
                    burst_limit: 1,
                },
            );
        }),
        ("cache.ttl_seconds", |s| {
            s.cache = Some(pylon_proto::config::v1::CacheSettings {
                enabled: true,
                ttl_seconds: Some(7200),
                ..Default::default()
            })
        }),
        ("canary.percent_traffic", |s| {
            s.canary = Some(CanarySettings {
                deployment_id: "d2".into(),
                percent_traffic: 100.5,
                ..Default::default()
            })
        }),
        ("canary.deployment_id", |s| {
            s.canary = Some(CanarySettings {
                percent_traffic: 10.0,
                ..Default::default()
            })
        }),
        ("websocket.max_message_bytes", |s| {
            s.websocket = Some(pylon_proto::config::v1::WebSocketSettings {
                max_message_bytes: 100,
                ..Default::default()
            })
        }),
        ("websocket.idle_timeout_seconds", |s| {
            s.websocket = Some(pylon_proto::config::v1::WebSocketSettings {
                idle_timeout_seconds: 10_000,
                ..Default::default()
            })
        }),
        ("canary.sticky_key", |s| {
            s.canary = Some(CanarySettings {
                deployment_id: "d2".into(),
                sticky_key: "user".into(),
                ..Default::default()
            })
        }),
    ];
    assert!(StageConfig::validate(stage()).is_ok());
    for (field, breaker) in cases {
        let mut s = stage();
        breaker(&mut s);
        let errors = StageConfig::validate(s).expect_err(field);
        assert!(errors.has(field), "expected an error on {field}, got: {errors}");
        assert_eq!(errors.errors().len(), 1, "only {field} is wrong, got: {errors}");
    }
}

#[test]
fn control_characters_in_stage_variables_are_refused_on_write_but_stored_stages_still_load() {
    let mut stored = stage();
    stored
        .variables
        .insert("split".into(), "a\r\nX-Injected: 1".into());
    // A stage stored before the rule still reaches every node.
    assert!(StageConfig::validate(stored.clone()).is_ok());
    let errors = StageConfig::validate_write(stored).expect_err("CR/LF in a value");
    assert!(errors.has("variables[\"split\"]"), "{errors}");

    let mut overridden = stage();
    overridden.canary = Some(CanarySettings {
        deployment_id: "d-2".into(),
        percent_traffic: 10.0,
        stage_variable_overrides: [("tab".to_owned(), "a\tb".to_owned())].into(),
        ..Default::default()
    });
    let errors = StageConfig::validate_write(overridden).expect_err("a tab in an override");
    assert!(errors.has("canary.stage_variable_overrides[\"tab\"]"), "{errors}");
    assert!(StageConfig::validate_write(stage()).is_ok());
}

#[test]
fn usage_plans_keys_and_domains_name_the_field_at_fault() {
    let plan = UsagePlan {
        name: "gold".into(),
        throttle: Some(ThrottleSettings {
            rate_limit: 100.0,
            burst_limit: 200,
        }),
        quota: Some(Quota {
            limit: 10_000,
            period: quota::Period::Week as i32,
            offset: 7,
        }),
        api_stages: vec![
            ApiStageRef {
                api: "petstore".into(),
                stage: "prod".into(),
                ..Default::default()
            },
            ApiStageRef {
                api: "petstore".into(),
                stage: "prod".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let errors = UsagePlanConfig::validate(plan).expect_err("two faults");
    let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["quota.offset", "api_stages[1]"]);

    assert!(
        ApiKeyConfig::validate(ApiKey {
            name: String::new(),
            ..Default::default()
        })
        .expect_err("no name")
        .has("name")
    );
    assert!(
        validate_api_key_value("short")
            .expect_err("too short")
            .has("value")
    );
    assert!(validate_api_key_value("a-long-enough-key-value-123").is_ok());

    let domain = DomainName {
        name: "api.example.com".into(),
        mappings: vec![
            BasePathMapping {
                base_path: "v1".into(),
                api: "petstore".into(),
                stage: "prod".into(),
            },
            BasePathMapping {
                base_path: "v1".into(),
                api: "petstore".into(),
                stage: "dev".into(),
            },
        ],
        certificate_file: "cert.pem".into(),
        ..Default::default()
    };
    let errors = DomainNameConfig::validate(domain).expect_err("two faults");
    let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["mappings[1].base_path", "private_key_file"]);
}

#[test]
fn yaml_documents_parse_into_resources_in_the_proto_json_mapping() {
    let text = r#"
api:
  name: petstore
  routes:
    - method: GET
      path: /pets
      integration: {type: MOCK, mock: {statusCode: 200, body: "[]"}}
---
stage:
  api: petstore
  name: prod
  variables: {backend: "http://127.0.0.1:8081"}
  canary: {deploymentId: d2, percentTraffic: 10}
"#;
    let resources = parse_documents(text).expect("parses");
    assert_eq!(resources.len(), 2);
    use pylon_proto::config::v1::resource::Kind;
    match &resources[0].kind {
        Some(Kind::Api(api)) => {
            assert_eq!(api.routes[0].integration.as_ref().map(|i| i.r#type), Some(3));
        }
        other => panic!("expected an api, got {other:?}"),
    }
    match &resources[1].kind {
        Some(Kind::Stage(stage)) => {
            assert_eq!(stage.canary.as_ref().map(|c| c.percent_traffic), Some(10.0));
        }
        other => panic!("expected a stage, got {other:?}"),
    }
    let err = parse_documents("api:\n  name: x\n  colour: red\n").expect_err("unknown field");
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn a_backend_authority_needs_a_host_and_a_port_in_range() {
    for good in [
        "127.0.0.1",
        "127.0.0.1:8080",
        "127.0.0.1:027201",
        "[::1]",
        "[::1]:9000",
    ] {
        assert_eq!(super::authority_problem(good, false), None, "{good}");
    }
    for bad in [
        "",
        ":80",
        "user@",
        "user:pw@backend.example:443",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "127.0.0.1:+80",
        "a:b:c",
        "[::1",
        "[::1]x",
        "[]:80",
        "backend.example:",
        "[zz]",
        "[:]:80",
        "[v1.x]",
        "[[::1]:80",
    ] {
        assert!(super::authority_problem(bad, false).is_some(), "{bad}");
    }
    assert_eq!(super::after_http_scheme("HTTPS://x/y"), Some("x/y"));
    assert_eq!(super::after_http_scheme("ftp://x"), None);
}

#[test]
fn an_https_host_is_one_tls_can_verify() {
    for good in [
        "example.com",
        "example.com.",
        "a_b.example",
        "10.0.0.1",
        "[::1]:8443",
        "xn--bcher-kva.example",
    ] {
        assert_eq!(super::authority_problem(good, true), None, "{good}");
    }
    for bad in [
        "1.2.3.256",
        "host.0x1f",
        "a!b.example",
        "example..com",
        "-a.example",
        "example.com..",
    ] {
        assert!(super::authority_problem(bad, true).is_some(), "{bad}");
        assert_eq!(
            super::authority_problem(bad, false),
            None,
            "{bad} is a plain-http host"
        );
    }
}

#[test]
fn an_origin_is_accepted_only_as_browsers_send_it() {
    for good in [
        "https://app.example",
        "http://localhost:8080",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "http://[2001:db8::1]",
        "http://[::ffff:102:304]",
        "https://example.com.",
        "capacitor://localhost",
        "ionic://localhost",
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
        "moz-extension://2c127fa4-62c7-7e4f-90e5-472b45eecfdc",
        "app://My-App",
    ] {
        assert_eq!(super::origin_problem(good), None, "{good}");
    }
    for (bad, why) in [
        ("https://*.example.com", "wildcards"),
        ("*.example.com", "scheme://host"),
        ("null", "null origin"),
        ("example.com", "scheme://host"),
        ("https://app.example/", "without a path"),
        ("HTTPS://app.example", "lower case"),
        ("Capacitor://localhost", "lower case"),
        ("http://App.example", "lower case"),
        ("http://app.example:80", "default port"),
        ("https://app.example:443", "default port"),
        ("http://localhost:08080", "leading zeros"),
        ("capacitor://localhost:0080", "leading zeros"),
        ("http://127.1", "IPv4"),
        ("http://127.0.0.1.", "IPv4"),
        ("http://0x7f.0.0.1", "IPv4"),
        ("http://2130706433", "IPv4"),
        ("http://[0:0:0:0:0:0:0:1]", "IPv6"),
        ("http://[::FFFF:1.2.3.4]", "lower case"),
        ("http://[::ffff:1.2.3.4]", "IPv6"),
        ("capacitor://[0::1]", "IPv6"),
        ("http://ex%41mple.com", "RFC 3986"),
        ("app://a!b", "letters, digits"),
        ("capacitor://", "scheme://host"),
        ("1app://x", "scheme://host"),
        ("http://user@app.example", "userinfo"),
        ("wss://app.example:443", "default port"),
        ("ftp://files.example:21", "default port"),
    ] {
        let problem = super::origin_problem(bad).unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(problem.contains(why), "{bad}: {problem}");
    }
}

#[test]
fn userinfo_in_a_backend_url_is_refused_and_a_stored_one_can_be_stripped() {
    let mut api = petstore();
    api.routes
        .push(proxy_route("GET", "/cats", "http://user:secret@127.0.0.1:9/cats"));
    let err = ApiDefinition::validate(api.clone()).expect_err("userinfo is refused");
    assert!(
        err.to_string().contains("routes[3].integration.uri") && err.to_string().contains("userinfo"),
        "{err}"
    );
    api.authorizers = vec![Authorizer {
        name: "jwt".into(),
        kind: Some(authorizer::Kind::Jwt(JwtAuthorizer {
            issuer: "https://idp.example".into(),
            audiences: vec!["pets".into()],
            jwks_uri: "https://svc:pw@idp.example/jwks".into(),
            algorithms: vec!["RS256".into()],
            ..Default::default()
        })),
    }];
    // A stored API or deployment is served, and restored, without it.
    assert!(drop_stored_userinfo(&mut api));
    assert_eq!(integration(&mut api, 3).uri, "http://127.0.0.1:9/cats");
    ApiDefinition::validate(api.clone()).expect("valid without userinfo");
    assert!(!drop_stored_userinfo(&mut api), "nothing left to drop");
    for (stored, served) in [
        ("https://u@idp.example/jwks", "https://idp.example/jwks"),
        ("http://a@b@127.0.0.1?x=@", "http://127.0.0.1?x=@"),
        ("http://127.0.0.1/a@b", "http://127.0.0.1/a@b"),
        ("${stageVariables.backend}/a@b", "${stageVariables.backend}/a@b"),
        (
            "${stageVariables.base}/cb?next=https://u@x.example/",
            "${stageVariables.base}/cb?next=https://u@x.example/",
        ),
        ("HTTPS://u:p@idp.example", "HTTPS://idp.example"),
    ] {
        let mut url = stored.to_owned();
        assert_eq!(strip_userinfo(&mut url), stored != served, "{stored}");
        assert_eq!(url, served);
    }
}
