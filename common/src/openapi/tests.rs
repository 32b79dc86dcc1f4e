//! The importer against real AWS exports (tests/data/aws-exports, with
//! their sources in its README).

use super::*;
use crate::model::ApiDefinition;
use pylon_proto::config::v1::{authorization, authorizer, integration};

macro_rules! export {
    ($name:literal) => {
        include_str!(concat!("../../../tests/data/aws-exports/", $name))
    };
}

fn options(pairs: &[(&str, &str)]) -> ImportOptions {
    let mut options = ImportOptions::default();
    for (k, v) in pairs {
        if let Some(function) = k.strip_prefix("lambda:") {
            options.lambda_urls.insert(function.into(), (*v).into());
        } else if let Some(service) = k.strip_prefix("service:") {
            options.service_urls.insert(service.into(), (*v).into());
        } else {
            options.variables.insert((*k).into(), (*v).into());
        }
    }
    options
}

fn refused(result: Result<Imported, ImportError>) -> Report {
    match result {
        Err(ImportError::Refused(report)) => report,
        Err(other) => panic!("not a refusal: {other}"),
        Ok(imported) => panic!("imported: {:?}\n{}", imported.api.name, imported.report),
    }
}

fn imported(result: Result<Imported, ImportError>) -> Imported {
    match result {
        Ok(imported) => {
            // What the importer makes passes the admin API's own validation.
            if let Err(e) = ApiDefinition::validate(imported.api.clone()) {
                panic!("the imported API does not validate: {e}\n{}", imported.report);
            }
            imported
        }
        Err(e) => panic!("{e}"),
    }
}

fn refused_paths(report: &Report) -> Vec<&str> {
    report.with(Outcome::Refused).map(|n| n.path.as_str()).collect()
}

#[test]
fn the_request_validator_sample_imports_with_its_validation_mappings_and_integration_responses() {
    let imported = imported(import(
        export!("02-request-validators-sample.swagger2.json"),
        &options(&[]),
    ));
    let api = &imported.api;
    assert_eq!(api.name, "reqvalidators-sample");
    assert_eq!(api.models.len(), 2);
    let post = api
        .routes
        .iter()
        .find(|r| r.method == "POST")
        .expect("POST /validation");
    assert_eq!(post.path, "/validation");
    let validation = post.validation.as_ref().expect("validated");
    assert_eq!(validation.required_headers, ["h1"]);
    assert_eq!(
        validation.body_models.get("application/json").map(String::as_str),
        Some("RequestBodyModel")
    );
    assert_eq!(
        post.request_parameters
            .get("overwrite:header.custom_h1")
            .map(String::as_str),
        Some("$request.header.h1")
    );
    assert!(post.authorization.as_ref().is_some_and(|a| a.api_key_required));
    let integration = post.integration.as_ref().expect("integration");
    assert_eq!(integration.r#type, integration::Type::Http as i32);
    assert_eq!(integration.http_method, "POST");
    let default = integration
        .responses
        .iter()
        .find(|r| r.selection_pattern.is_empty())
        .expect("default");
    assert_eq!(default.status_code, 400);
    assert_eq!(
        default
            .response_templates
            .get("application/xml")
            .map(String::as_str),
        Some("xml 400 response template")
    );
    assert_eq!(
        default
            .response_parameters
            .get("overwrite:header.test-method-response-header")
            .map(String::as_str),
        Some("static value")
    );
    let ok = integration
        .responses
        .iter()
        .find(|r| r.selection_pattern == "2\\d{2}")
        .expect("2xx");
    assert_eq!(ok.status_code, 200);
    // The GET uses the params-only validator: its query parameter, no body.
    let get = api
        .routes
        .iter()
        .find(|r| r.method == "GET")
        .expect("GET /validation");
    let validation = get.validation.as_ref().expect("validated");
    assert_eq!(validation.required_query, ["q1"]);
    assert!(validation.body_models.is_empty());
    assert!(!imported.report.has_refusals());
}

#[test]
fn an_http_api_export_imports_with_cors_a_referenced_integration_and_a_lambda_authorizer_at_a_given_url() {
    let document = export!("14-http-api-petstore-cors-ref.oas301.json");
    // Without the authorizer's URL: refused, naming the function and the flag.
    let report = refused(import(document, &options(&[])));
    let note = report.with(Outcome::Refused).next().expect("one refusal");
    assert!(note.detail.contains("--lambda-url function-name=URL"), "{note}");

    let imported = imported(import(
        document,
        &options(&[("lambda:function-name", "http://127.0.0.1:9/authorize")]),
    ));
    let api = &imported.api;
    let cors = api.cors.as_ref().expect("cors");
    assert_eq!(cors.allow_origins, ["*"]);
    assert!(cors.allow_headers.iter().any(|h| h == "x-api-key"));
    let post = api
        .routes
        .iter()
        .find(|r| r.method == "POST")
        .expect("POST /pets");
    let integration = post.integration.as_ref().expect("integration");
    assert_eq!(integration.r#type, integration::Type::HttpProxy as i32);
    assert_eq!(
        integration.uri,
        "http://petstore.execute-api.us-west-1.amazonaws.com/petstore/pets"
    );
    let get_one = api
        .routes
        .iter()
        .find(|r| r.path == "/pets/{petId}")
        .expect("GET /pets/{petId}");
    let auth = get_one.authorization.as_ref().expect("authorization");
    assert_eq!(auth.r#type, authorization::Type::Request as i32);
    let authorizer = api
        .authorizers
        .iter()
        .find(|a| a.name == auth.authorizer)
        .expect("authorizer");
    let Some(authorizer::Kind::Request(request)) = &authorizer.kind else {
        panic!("a request authorizer: {authorizer:?}");
    };
    assert_eq!(request.uri, "http://127.0.0.1:9/authorize");
    assert_eq!(request.identity_sources, ["$request.header.Authorization"]);
    assert_eq!(request.result_ttl_seconds, Some(300));
    // Models with references are inlined.
    let pets = serde_json::to_value(&api.models["Pets"]).expect("json");
    assert_eq!(pets["items"]["properties"]["price"]["type"], "number");
}

#[test]
fn velocity_templates_are_kept_and_unfilled_placeholders_are_named_with_their_flag() {
    let document = export!("01-petstore-example-token-authorizer.swagger2.json");
    let report = refused(import(document, &options(&[])));
    let text = report.to_string();
    assert!(text.contains("--set-var uri=VALUE"), "{text}");
    assert!(text.contains("--lambda-url function-name=URL"), "{text}");
    let imported = imported(import(
        document,
        &options(&[
            ("uri", "http://127.0.0.1:9/petstore"),
            ("lambda:function-name", "http://127.0.0.1:9/auth"),
        ]),
    ));
    // The welcome page is a mock whose body is Velocity ($context.stage).
    let page = imported.api.routes.iter().find(|r| r.path == "/").expect("GET /");
    let integration = page.integration.as_ref().expect("integration");
    assert_eq!(
        integration.template_language,
        integration::TemplateLanguage::Velocity as i32
    );
    assert!(integration.response_template.contains("$context.stage"));
}

#[test]
fn velocity_outside_the_subset_is_refused_with_its_line() {
    let document = r##"{"swagger": "2.0", "info": {"title": "T"}, "paths": {"/a": {"post": {"x-amazon-apigateway-integration": {"type": "http", "httpMethod": "POST", "uri": "http://127.0.0.1:9/a", "requestTemplates": {"application/json": "#set($a = 1)\n#macro(x)y#end"}}}}}}"##;
    let report = refused(import(document, &options(&[])));
    let note = report.with(Outcome::Refused).next().expect("refused");
    assert_eq!(
        note.path,
        "paths./a.post.x-amazon-apigateway-integration.requestTemplates.application/json"
    );
    assert!(
        note.detail.contains("line 2") && note.detail.contains("#macro"),
        "{note}"
    );
}
#[test]
fn lambda_and_service_integrations_are_refused_one_by_one_until_given_urls() {
    let report = refused(import(
        export!("04-kinesis-proxy-aws-service.swagger2.json"),
        &options(&[]),
    ));
    let actions: Vec<_> = report
        .with(Outcome::Refused)
        .filter(|n| n.detail.contains("--service-url"))
        .collect();
    assert_eq!(actions.len(), 8, "{report}");
    assert!(
        actions
            .iter()
            .any(|n| n.detail.contains("--service-url ListStreams=URL")),
        "{report}"
    );

    let report = refused(import(
        export!("03-lambdacalc-aws-lambda-vtl.swagger2.json"),
        &options(&[]),
    ));
    assert!(report.to_string().contains("--lambda-url Calc=URL"), "{report}");
    // Given the URL, the API imports with its Velocity templates.
    let imported = imported(import(
        export!("03-lambdacalc-aws-lambda-vtl.swagger2.json"),
        &options(&[("lambda:Calc", "http://127.0.0.1:9/calc")]),
    ));
    assert!(imported.api.routes.iter().all(|r| {
        r.integration
            .as_ref()
            .is_some_and(|i| i.template_language == integration::TemplateLanguage::Velocity as i32)
    }));
}

#[test]
fn options_mocks_answering_preflights_become_the_apis_cors_policy() {
    let document = export!("01-petstore-example-token-authorizer.swagger2.json");
    let report = imported(import(
        document,
        &options(&[
            ("uri", "http://127.0.0.1:9/petstore"),
            ("lambda:function-name", "http://127.0.0.1:9/auth"),
        ]),
    ))
    .report;
    assert!(
        report.with(Outcome::Mapped).any(
            |n| n.path == "paths./pets.options.x-amazon-apigateway-integration" && n.detail.contains("CORS")
        ),
        "{report}"
    );
}

#[test]
fn unknown_aws_extensions_are_refused_and_other_extensions_reported() {
    let document = r#"{"swagger": "2.0", "info": {"title": "X"}, "x-amazon-apigateway-future-thing": 1, "x-internal": true,
      "paths": {"/x": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "ANY", "uri": "http://127.0.0.1:9/"}}}}}"#;
    let report = refused(import(document, &options(&[])));
    assert_eq!(refused_paths(&report), ["x-amazon-apigateway-future-thing"]);
    assert!(
        report.with(Outcome::Approximated).any(|n| n.path == "x-internal"),
        "{report}"
    );
}

#[test]
fn what_is_not_openapi_says_so() {
    assert!(matches!(
        import("{\"a\": 1}", &options(&[])),
        Err(ImportError::NotOpenApi(_))
    ));
    assert!(matches!(
        import("a: [", &options(&[])),
        Err(ImportError::Unreadable(_))
    ));
}

#[test]
fn titles_become_dns_labels() {
    assert_eq!(dns_label("Pet Store (v2)"), "pet-store-v2");
    assert_eq!(dns_label("  --x--"), "x");
    assert_eq!(dns_label("ÄÖ"), "");
}

#[test]
fn a_yaml_alias_bomb_is_refused_not_expanded() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let previous = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        bomb.push_str(&format!("{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"));
    }
    bomb.push_str("openapi: 3.0.1\ninfo: {title: bomb}\npaths: {}\n");
    let started = std::time::Instant::now();
    let result = import(&bomb, &options(&[]));
    assert!(
        matches!(result, Err(ImportError::Unreadable(_))),
        "{:?}",
        result.map(|i| i.api.name)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

fn minimal(extra_operation: &str) -> String {
    format!(
        r#"{{"swagger": "2.0", "info": {{"title": "T"}}, "paths": {{"/a": {{"get": {{"x-amazon-apigateway-integration": {{"type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:9/a"}}}}{extra_operation}}}}}}}"#
    )
}

#[test]
fn deep_nesting_is_refused_at_once_in_yaml_and_json() {
    for document in [
        format!(
            "swagger: \"2.0\"\ninfo: {{title: t}}\npaths: {{}}\nx-deep: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "{{\"swagger\": \"2.0\", \"x\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    ] {
        let started = std::time::Instant::now();
        assert!(matches!(
            import(&document, &options(&[])),
            Err(ImportError::Unreadable(_))
        ));
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_key_given_twice_is_refused_rather_than_the_last_one_winning() {
    let document = minimal(
        r#", "get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:9/b"}}"#,
    );
    assert!(matches!(
        import(&document, &options(&[])),
        Err(ImportError::Unreadable(_))
    ));
}

#[test]
fn trace_operations_and_statuses_that_are_not_statuses_are_refused_by_name() {
    let report = refused(import(&minimal(r#", "trace": {}"#), &options(&[])));
    assert_eq!(refused_paths(&report), ["paths./a.trace"]);
    for status in [r#""abc""#, r#""2e2""#, r#"" 200 ""#, "99"] {
        let document = format!(
            r#"{{"swagger": "2.0", "info": {{"title": "T"}}, "paths": {{"/a": {{"get": {{"x-amazon-apigateway-integration": {{"type": "http", "httpMethod": "GET", "uri": "http://127.0.0.1:9/a", "responses": {{"default": {{"statusCode": {status}}}}}}}}}}}}}}}"#
        );
        let report = refused(import(&document, &options(&[])));
        assert_eq!(
            refused_paths(&report),
            ["paths./a.get.x-amazon-apigateway-integration.responses.default.statusCode"],
            "{status}"
        );
    }
}

#[test]
fn what_the_admin_api_would_refuse_is_named_by_its_place_in_the_document() {
    let document = r#"{"swagger": "2.0", "info": {"title": "T"}, "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"type": "http", "httpMethod": "GET", "uri": "http://127.0.0.1:9/a", "responses": {"[": {"statusCode": "400"}}}}}}}"#;
    let report = refused(import(document, &options(&[])));
    let note = report.with(Outcome::Refused).next().expect("a refusal");
    assert_eq!(note.path, "paths./a.get");
    assert!(note.detail.contains("selection_pattern"), "{note}");
}

#[test]
fn every_refusal_is_reported_at_once_at_its_place_in_the_document() {
    // Two origins the admin API refuses, a Lambda authorizer without its
    // URL, and a port out of range behind that authorizer.
    let mut document: serde_json::Value =
        serde_json::from_str(export!("14-http-api-petstore-cors-ref.oas301.json")).expect("json");
    document["x-amazon-apigateway-cors"]["allowOrigins"] = serde_json::json!([
        "https://app.example/",
        "https://ok.example",
        "https://Other.example"
    ]);
    document["paths"]["/pets/{petId}"]["get"]["x-amazon-apigateway-integration"]["uri"] =
        serde_json::json!("http://127.0.0.1:99999/pets/{petId}");
    let report = refused(import(&document.to_string(), &options(&[])));
    let paths = refused_paths(&report);
    assert!(
        paths.contains(&"x-amazon-apigateway-cors.allowOrigins"),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("\"https://app.example/\"") && text.contains("\"https://Other.example\""),
        "each bad origin is named: {report}"
    );
    assert!(!text.contains("\"https://ok.example\""), "{report}");
    assert!(
        report
            .with(Outcome::Refused)
            .any(|n| n.path == "paths./pets/{petId}.get" && n.detail.contains("port must be")),
        "the operation refused for its authorizer is still judged: {report}"
    );
    assert!(
        report
            .with(Outcome::Refused)
            .any(|n| n.detail.contains("--lambda-url")),
        "{report}"
    );

    // An origin from an OPTIONS mock is named by that method.
    let document = r#"{"swagger": "2.0", "info": {"title": "T"}, "paths": {"/a": {
      "get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:9/a"}},
      "options": {"x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200",
        "responseParameters": {"method.response.header.Access-Control-Allow-Origin": "'https://App.example'"}}}}}}}}"#;
    let report = refused(import(document, &options(&[])));
    assert_eq!(
        refused_paths(&report),
        ["paths./a.options.x-amazon-apigateway-integration"]
    );
}

#[test]
fn a_title_with_unfilled_placeholders_does_not_name_the_api() {
    let document = minimal("").replace("\"T\"", "\"${Name} API\"");
    let report = refused(import(&document, &options(&[])));
    assert!(report.to_string().contains("--api NAME"), "{report}");
    let imported = imported(import(&document, &options(&[("Name", "Orders")])));
    assert_eq!(imported.api.name, "orders-api");
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;
    use pylon_proto::config::v1::{
        Authorization, Cors, Integration, IntegrationResponse, MockResponse, RequestValidation, Route,
    };

    fn integration_strategy() -> impl Strategy<Value = Integration> {
        prop_oneof![
            ("[a-z]{1,8}", 50u32..29_000).prop_map(|(p, t)| Integration {
                r#type: integration::Type::HttpProxy as i32,
                uri: format!("http://127.0.0.1:9/{p}"),
                timeout_ms: t,
                ..Default::default()
            }),
            ("[a-z]{1,8}", "[ -~]{0,40}", any::<bool>()).prop_map(|(p, template, responses)| Integration {
                r#type: integration::Type::Http as i32,
                uri: format!("https://backend.test/{p}"),
                http_method: "POST".into(),
                request_templates: [("application/json".to_owned(), template.replace('{', "("))].into(),
                responses: if responses {
                    vec![
                        IntegrationResponse {
                            selection_pattern: "2\\d{2}".into(),
                            status_code: 200,
                            ..Default::default()
                        },
                        IntegrationResponse {
                            status_code: 502,
                            response_parameters: [("overwrite:header.x-failed".to_owned(), "yes".to_owned())]
                                .into(),
                            ..Default::default()
                        },
                    ]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }),
            (200u32..599, "[ -~]{0,40}").prop_map(|(status, body)| Integration {
                r#type: integration::Type::Mock as i32,
                mock: Some(MockResponse {
                    status_code: status,
                    headers: [("x-mock".to_owned(), "1".to_owned())].into(),
                    body: body.replace('{', "("),
                }),
                ..Default::default()
            }),
        ]
    }

    fn route_strategy(i: usize) -> impl Strategy<Value = Route> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "ANY"]),
            any::<bool>(),
            any::<bool>(),
            integration_strategy(),
        )
            .prop_map(move |(method, keyed, mapped, integration)| Route {
                method: method.into(),
                path: format!("/r{i}/{{id}}"),
                integration: Some(integration),
                authorization: Some(Authorization {
                    api_key_required: keyed,
                    ..Default::default()
                }),
                validation: keyed.then(|| RequestValidation {
                    required_query: vec!["q".into()],
                    ..Default::default()
                }),
                request_parameters: if mapped {
                    [(
                        "overwrite:header.x-user".to_owned(),
                        "$request.header.x-who".to_owned(),
                    )]
                    .into()
                } else {
                    Default::default()
                },
                ..Default::default()
            })
    }

    fn api_strategy() -> impl Strategy<Value = Api> {
        (1usize..6, "[ -~]{0,60}", any::<bool>())
            .prop_flat_map(|(n, description, cors)| {
                let routes: Vec<_> = (0..n).map(route_strategy).collect();
                (routes, Just(description), Just(cors))
            })
            .prop_map(|(routes, description, cors)| Api {
                name: "generated".into(),
                description,
                routes,
                cors: cors.then(|| Cors {
                    allow_origins: vec!["https://app.test".into()],
                    allow_methods: vec!["GET".into()],
                    ..Default::default()
                }),
                ..Default::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Export, as YAML or JSON, then import: the same API.
        #[test]
        fn an_exported_api_imports_as_itself(api in api_strategy(), yaml in any::<bool>(), aws in any::<bool>()) {
            let valid = ApiDefinition::validate(api).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let valid = valid.into_proto();
            let document = export(&valid, &ExportOptions { aws_extensions: aws, version: "1".into(), ..Default::default() });
            let text = if yaml {
                serde_norway::to_string(&document).expect("yaml")
            } else {
                serde_json::to_string_pretty(&document).expect("json")
            };
            let imported = import(&text, &ImportOptions::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(imported.api, valid);
        }
    }
}

#[test]
fn an_export_whose_readable_parts_disagree_with_its_routes_is_refused() {
    let api = imported(import(
        export!("02-request-validators-sample.swagger2.json"),
        &options(&[]),
    ))
    .api;
    let document = export(&api, &ExportOptions::default());
    // The route opened up, the document still showing it keyed.
    let mut tampered = document.clone();
    tampered["paths"]["/validation"]["post"]["x-pylon-route"]["authorization"] = serde_json::json!({});
    let report = refused(import(&tampered.to_string(), &options(&[])));
    assert_eq!(refused_paths(&report), ["paths./validation.post.security"]);
    // A route smuggled in x-pylon-api.
    let mut smuggled = document;
    smuggled["x-pylon-api"]["routes"] = serde_json::json!([{"method": "GET", "path": "/hidden"}]);
    let report = refused(import(&smuggled.to_string(), &options(&[])));
    assert_eq!(refused_paths(&report), ["x-pylon-api.routes"]);
}
