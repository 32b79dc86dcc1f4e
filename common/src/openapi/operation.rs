//! Paths and operations → routes: methods, `x-amazon-apigateway-integration`
//! (http, http_proxy, mock; Lambda and AWS-service ones only to URLs the
//! user gives), parameter mappings, integration responses, request
//! validation, and OPTIONS mocks folded into the API's CORS policy.

use super::security::{self, Schemes};
use super::{Dialect, Document, Report, template};
use pylon_proto::config::v1::{
    Api, Cors, Integration, IntegrationResponse, MockResponse, RequestValidation, Route, integration,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The operations of a path item that become routes (besides ANY).
pub(crate) const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];
const ANY: &str = "x-amazon-apigateway-any-method";

/// Integration fields read here; anything else in the object is reported.
const INTEGRATION_FIELDS: &[&str] = &[
    "type",
    "uri",
    "httpMethod",
    "timeoutInMillis",
    "requestParameters",
    "requestTemplates",
    "responses",
    "passthroughBehavior",
    "connectionType",
    "connectionId",
    "credentials",
    "payloadFormatVersion",
    "cacheKeyParameters",
    "cacheNamespace",
    "contentHandling",
    "tlsConfig",
    "integrationSubtype",
    "description",
];

/// What [`paths`] found besides the routes it added to the API.
#[derive(Debug, Default)]
pub struct Examined {
    /// For each route added, the operation's place in the document
    /// (`paths./pets.get`).
    pub places: Vec<String>,
    /// Operations refused only for their security (a scheme the importer
    /// could not take), with their places: not imported, but the rest of
    /// each (its integration, parameters) is still judged by the admin
    /// API's rules so that the report names everything to fix at once.
    /// Their authorization is `NONE`.
    pub unsecured: Vec<(Route, String)>,
}

/// Adds a route per importable operation; returns where each came from
/// and the operations refused only for their security.
pub fn paths(
    doc: &Document<'_>,
    schemes: &Schemes,
    api: &mut Api,
    cors: &mut CorsFold,
    report: &mut Report,
) -> Examined {
    let mut examined = Examined::default();
    let Some(paths) = doc.root.get("paths").and_then(Value::as_object) else {
        report.refused("paths", "the document has no paths");
        return examined;
    };
    let validators = Validators::of(doc, report);
    for (path, item) in paths {
        let Some(item) = doc.follow(item).and_then(Value::as_object) else {
            report.refused(format!("paths.{path}"), "not an object");
            continue;
        };
        let shared_parameters = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (key, operation) in item {
            let at = format!("paths.{path}.{key}");
            let method = if key == ANY {
                "ANY".to_owned()
            } else if METHODS.contains(&key.as_str()) {
                key.to_ascii_uppercase()
            } else if key.starts_with("x-amazon-apigateway-") {
                report.refused(&at, "an AWS extension the importer does not know here");
                continue;
            } else if matches!(key.as_str(), "trace" | "connect") {
                report.refused(
                    &at,
                    "Pylon routes GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS and ANY only (a gateway answers TRACE and CONNECT itself)",
                );
                continue;
            } else if matches!(
                key.as_str(),
                "parameters" | "summary" | "description" | "servers" | "$ref"
            ) {
                continue;
            } else {
                report.approximated(&at, "not an operation of a path item: not imported");
                continue;
            };
            let Some(operation) = operation.as_object() else {
                report.refused(&at, "not an object");
                continue;
            };
            match route(
                doc,
                schemes,
                &validators,
                path,
                &method,
                operation,
                &shared_parameters,
                &at,
                cors,
                report,
            ) {
                Some((route, true)) => {
                    api.routes.push(route);
                    examined.places.push(at.clone());
                }
                Some((route, false)) => examined.unsecured.push((route, at.clone())),
                None => {}
            }
        }
    }
    examined
}

#[allow(clippy::too_many_arguments)]
fn route(
    doc: &Document<'_>,
    schemes: &Schemes,
    validators: &Validators,
    path: &str,
    method: &str,
    operation: &Map<String, Value>,
    shared_parameters: &[Value],
    at: &str,
    cors: &mut CorsFold,
    report: &mut Report,
) -> Option<(Route, bool)> {
    for key in operation.keys().filter(|k| k.starts_with("x-amazon-apigateway-")) {
        if !matches!(
            key.as_str(),
            "x-amazon-apigateway-integration"
                | "x-amazon-apigateway-request-validator"
                | "x-amazon-apigateway-auth"
        ) {
            report.refused(
                format!("{at}.{key}"),
                "an AWS extension the importer does not know here",
            );
        }
    }
    if let Some(name) = operation
        .get("x-amazon-apigateway-request-validator")
        .and_then(Value::as_str)
    {
        report.mapped(
            format!("{at}.x-amazon-apigateway-request-validator"),
            format!("request validator {name}"),
        );
    }
    let here = format!("{at}.x-amazon-apigateway-integration");
    let Some(raw) = operation.get("x-amazon-apigateway-integration") else {
        report.refused(
            at,
            "no x-amazon-apigateway-integration: AWS would not import this method either",
        );
        return None;
    };
    let Some(raw) = doc.follow(raw).and_then(Value::as_object) else {
        report.refused(&here, "a $ref that does not resolve");
        return None;
    };
    // OPTIONS mocks that only answer CORS preflights become the API's CORS.
    if method == "OPTIONS" && cors.take(raw, &here) {
        report.mapped(&here, "CORS preflight (folded into the API's CORS policy)");
        return None;
    }
    let mut route = Route {
        method: method.to_owned(),
        path: path.to_owned(),
        ..Default::default()
    };
    let mut secured = true;
    if let Some(auth) = operation.get("x-amazon-apigateway-auth") {
        match auth
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("NONE") | None => {
                report.mapped(format!("{at}.x-amazon-apigateway-auth"), "no authorization")
            }
            Some(other) => {
                report.refused(
                    format!("{at}.x-amazon-apigateway-auth"),
                    format!("{other} authorization has no Pylon equivalent"),
                );
                secured = false;
            }
        }
    }
    // Every part is examined even when one is refused, so that the report
    // names everything to fix at once.
    let requirement = operation.get("security").or_else(|| doc.root.get("security"));
    let authorization = security::authorization(requirement, &format!("{at}.security"), schemes, report);

    let mut parameters: Vec<Value> = shared_parameters.to_vec();
    parameters.extend(
        operation
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    let parameters: Vec<&Value> = parameters
        .iter()
        .filter_map(|p| doc.follow(p))
        .collect::<Vec<_>>();
    let validation = validators.validation(doc, operation, &parameters, at, report);
    let integration = integration(doc, raw, &mut route, &here, report);
    route.validation = validation?;
    route.integration = Some(integration?);
    // A route whose security was refused is returned unsecured, marked
    // incomplete: only for the admin API's rules to judge the rest.
    let complete = secured && authorization.is_some();
    route.authorization = Some(authorization.unwrap_or_default());
    Some((route, complete))
}

/// The integration; it may also set the route's request and response
/// parameters and rename URI path parameters.
fn integration(
    doc: &Document<'_>,
    raw: &Map<String, Value>,
    route: &mut Route,
    at: &str,
    report: &mut Report,
) -> Option<Integration> {
    for key in raw.keys() {
        if !INTEGRATION_FIELDS.contains(&key.as_str()) {
            report.approximated(format!("{at}.{key}"), "not read by the importer");
        }
    }
    let kind = raw
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let uri = raw.get("uri").and_then(Value::as_str).unwrap_or("").to_owned();
    let http_method = raw
        .get("httpMethod")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase();
    let mut out = Integration {
        timeout_ms: raw
            .get("timeoutInMillis")
            .and_then(Value::as_u64)
            .map_or(0, |t| u32::try_from(t.clamp(50, 29_000)).unwrap_or(29_000)),
        ..Default::default()
    };
    if let Some(t) = raw.get("timeoutInMillis").and_then(Value::as_u64)
        && !(50..=29_000).contains(&t)
    {
        report.approximated(
            format!("{at}.timeoutInMillis"),
            format!("{t} ms clamped to 50..=29000"),
        );
    }
    let mut ok = true;
    let connection = raw
        .get("connectionType")
        .and_then(Value::as_str)
        .unwrap_or("INTERNET");
    if connection.eq_ignore_ascii_case("VPC_LINK") || raw.get("connectionId").is_some() {
        report.approximated(
            format!("{at}.connectionType"),
            "VPC_LINK (and its connectionId): the URI is called directly (Pylon runs in your network; make the backend reachable from the data planes)",
        );
    }
    if raw.get("credentials").is_some() {
        report.approximated(
            format!("{at}.credentials"),
            "the IAM role is not used (no AWS calls are made)",
        );
    }
    if raw.get("cacheKeyParameters").is_some() || raw.get("cacheNamespace").is_some() {
        report.approximated(
            format!("{at}.cacheKeyParameters"),
            "cache key parameters are not imported: set the route's cache.key_parameters in Pylon",
        );
    }
    if let Some(tls) = raw.get("tlsConfig")
        && tls.get("insecureSkipVerification").and_then(Value::as_bool) == Some(true)
    {
        report.approximated(
            format!("{at}.tlsConfig"),
            "Pylon always verifies backend certificates: add the backend's CA with --upstream-ca",
        );
    }
    if let Some(subtype) = raw.get("integrationSubtype") {
        report.refused(
            format!("{at}.integrationSubtype"),
            format!("AWS service integration {subtype}: no Pylon equivalent"),
        );
        return None;
    }
    if let Some(handling) = raw.get("contentHandling") {
        report.approximated(
            format!("{at}.contentHandling"),
            format!("{handling}: bodies pass as bytes"),
        );
    }
    let proxy = matches!(kind.as_str(), "http_proxy" | "aws_proxy");
    // One language per integration: Velocity when any template uses it
    // (static text renders as itself in Velocity too).
    let velocity = velocity_anywhere(raw);
    if velocity && !proxy {
        out.template_language = integration::TemplateLanguage::Velocity as i32;
    }
    match kind.as_str() {
        "http_proxy" => {
            out.r#type = integration::Type::HttpProxy as i32;
            out.uri = backend_uri(raw, &uri, &format!("{at}.uri"), report)?;
            if !http_method.is_empty() && http_method != "ANY" && http_method != route.method {
                // AWS sends the integration's method: that is an HTTP integration in Pylon.
                out.r#type = integration::Type::Http as i32;
                out.http_method = http_method;
            }
            report.mapped(at, format!("HTTP_PROXY to {}", out.uri));
        }
        "http" => {
            out.r#type = integration::Type::Http as i32;
            out.uri = backend_uri(raw, &uri, &format!("{at}.uri"), report)?;
            if http_method != "ANY" {
                out.http_method = http_method;
            }
            report.approximated(
                at,
                format!(
                    "HTTP to {}: besides the mappings, Pylon passes the client's headers and query string to the backend and the backend's headers back (AWS passes only mapped ones for non-proxy integrations)",
                    out.uri
                ),
            );
        }
        "mock" => {
            out.r#type = integration::Type::Mock as i32;
            return mock(raw, out, at, report);
        }
        "aws_proxy" => {
            let function = lambda_function(&uri);
            let url = function.as_ref().and_then(|f| doc.options.lambda_urls.get(f));
            match (function, url) {
                (Some(_), Some(url)) => {
                    out.r#type = integration::Type::HttpProxy as i32;
                    out.uri = url.clone();
                    report.approximated(
                        at,
                        format!("Lambda proxy → HTTP_PROXY to {url}: the function gets the HTTP request itself, not an API Gateway event (a Lambda function URL or an adapter serves it)"),
                    );
                }
                (Some(function), None) => {
                    report.refused(at, format!("Lambda function {function}: give the URL that serves it with --lambda-url {function}=URL"));
                    return None;
                }
                (None, _) => {
                    report.refused(at, format!("aws_proxy URI {uri:?} names no Lambda function"));
                    return None;
                }
            }
        }
        "aws" => {
            let function = lambda_function(&uri);
            let action = uri
                .split("action/")
                .nth(1)
                .map(|a| a.split(['&', '?', '/']).next().unwrap_or(a).to_owned());
            let url = match &function {
                Some(f) => doc.options.lambda_urls.get(f),
                None => doc
                    .options
                    .service_urls
                    .get(&uri)
                    .or_else(|| action.as_ref().and_then(|a| doc.options.service_urls.get(a))),
            };
            out.r#type = integration::Type::Http as i32;
            out.http_method = if http_method.is_empty() || http_method == "ANY" {
                "POST".into()
            } else {
                http_method
            };
            match url {
                Some(url) => {
                    out.uri = url.clone();
                    report.approximated(
                        at,
                        format!("AWS integration → HTTP {} to {url}: that URL gets what the request templates make, as AWS's service would", out.http_method),
                    );
                }
                None => {
                    let detail = match (&function, &action) {
                        (Some(f), _) => format!(
                            "Lambda function {f} (non-proxy): give the URL that serves it with --lambda-url {f}=URL"
                        ),
                        (None, Some(a)) => format!(
                            "AWS service action {a} ({uri}): give the URL that serves it with --service-url {a}=URL"
                        ),
                        (None, None) => format!(
                            "AWS service integration {uri}: give the URL that serves it with --service-url '{uri}'=URL"
                        ),
                    };
                    report.refused(at, detail);
                    // The templates and responses are still examined, so
                    // the report names everything to fix at once.
                    ok = false;
                }
            }
        }
        other => {
            report.refused(at, format!("integration type {other:?} has no Pylon equivalent"));
            return None;
        }
    }

    // Request parameters.
    if let Some(parameters) = raw.get("requestParameters").and_then(Value::as_object) {
        for (target, source) in parameters {
            let here = format!("{at}.requestParameters.{target}");
            let Some(source) = source.as_str() else {
                report.refused(&here, "not a string");
                ok = false;
                continue;
            };
            match request_parameter(target, source, route, &mut out) {
                Ok(Some((key, value))) => {
                    route.request_parameters.insert(key, value);
                    report.mapped(&here, "request parameter mapping");
                }
                Ok(None) => report.mapped(&here, "integration URI path parameter"),
                Err(why) => {
                    report.refused(&here, why);
                    ok = false;
                }
            }
        }
    }
    // Request templates and passthrough.
    if let Some(templates) = raw.get("requestTemplates").and_then(Value::as_object) {
        if proxy {
            report.approximated(
                format!("{at}.requestTemplates"),
                "ignored: proxy integrations pass the request through (as AWS does)",
            );
        } else {
            for (media_type, text) in templates {
                let here = format!("{at}.requestTemplates.{media_type}");
                match text.as_str().map(|t| template::prepare(t, velocity)) {
                    Some(Ok(converted)) => {
                        out.request_templates
                            .insert(media_type.to_ascii_lowercase(), converted);
                        report.mapped(here, "request template");
                    }
                    Some(Err(why)) => {
                        report.refused(here, why);
                        ok = false;
                    }
                    None => {
                        report.refused(here, "not a string");
                        ok = false;
                    }
                }
            }
        }
    }
    if !proxy {
        match raw
            .get("passthroughBehavior")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("when_no_match") => {}
            Some("when_no_templates") => {
                out.passthrough_behavior = integration::PassthroughBehavior::WhenNoTemplates as i32;
            }
            Some("never") => out.passthrough_behavior = integration::PassthroughBehavior::Never as i32,
            Some(other) => {
                report.refused(
                    format!("{at}.passthroughBehavior"),
                    format!("unknown behaviour {other:?}"),
                );
                ok = false;
            }
        }
    }
    // Integration responses.
    if let Some(responses) = raw.get("responses").and_then(Value::as_object) {
        if proxy {
            report.approximated(
                format!("{at}.responses"),
                "ignored: proxy integrations answer with the backend's response (as AWS does)",
            );
        } else {
            match integration_responses(responses, &format!("{at}.responses"), velocity, report) {
                Some(list) => out.responses = list,
                None => ok = false,
            }
        }
    }
    if let Some(parameters) = raw.get("responseParameters").and_then(Value::as_object)
        && !parameters.is_empty()
    {
        report.refused(
            format!("{at}.responseParameters"),
            "HTTP API response parameter mappings by status code are not supported yet",
        );
        ok = false;
    }
    ok.then_some(out)
}

/// Whether any request or response template of the integration uses
/// Velocity.
fn velocity_anywhere(raw: &Map<String, Value>) -> bool {
    let uses = |templates: Option<&Value>| {
        templates.and_then(Value::as_object).is_some_and(|t| {
            t.values()
                .filter_map(Value::as_str)
                .any(|t| template::first_velocity(t).is_some())
        })
    };
    uses(raw.get("requestTemplates"))
        || raw
            .get("responses")
            .and_then(Value::as_object)
            .is_some_and(|r| r.values().any(|r| uses(r.get("responseTemplates"))))
}

/// A backend URI: an absolute http(s) URL once placeholders are filled. (A
/// CloudFormation function left unresolved was reported already.)
fn backend_uri(raw: &Map<String, Value>, uri: &str, at: &str, report: &mut Report) -> Option<String> {
    if raw.get("uri").is_some_and(Value::is_object) {
        return None;
    }
    let placeholders = super::cfn::placeholders(uri);
    if !placeholders.is_empty() {
        report.refused(
            at,
            format!(
                "{uri:?} holds unresolved placeholders {}: give --set-var {}=VALUE",
                placeholders
                    .iter()
                    .map(|p| format!("${{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                placeholders[0]
            ),
        );
        return None;
    }
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        report.refused(at, format!("{uri:?} is not an http(s) URL"));
        return None;
    }
    Some(uri.to_owned())
}

/// The Lambda function an integration or authorizer URI names:
/// `arn:aws:apigateway:R:lambda:path/2015-03-31/functions/arn:aws:lambda:R:A:function:NAME/invocations`
/// or `arn:aws:lambda:R:A:function:NAME[:ALIAS]`.
pub fn lambda_function(uri: &str) -> Option<String> {
    let after = uri.split(":function:").nth(1)?;
    let name = after.split(['/', ':']).next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// `integration.request.header.x` ← `method.request.querystring.y` (REST)
/// or `append:header.x` ← `$request.header.y` (HTTP APIs) → Pylon's
/// `overwrite:header.x` ← `$request.querystring.y`. A path parameter under
/// another name renames the URI's placeholder (`Ok(None)`).
fn request_parameter(
    target: &str,
    source: &str,
    route: &Route,
    integration: &mut Integration,
) -> Result<Option<(String, String)>, String> {
    if target.contains(':') {
        // HTTP APIs: Pylon's own syntax.
        return Ok(Some((target.to_owned(), source.to_owned())));
    }
    let value = rest_source(source, "method.request.")?;
    if let Some(name) = target.strip_prefix("integration.request.header.") {
        return Ok(Some((format!("overwrite:header.{name}"), value)));
    }
    if let Some(name) = target.strip_prefix("integration.request.querystring.") {
        return Ok(Some((format!("overwrite:querystring.{name}"), value)));
    }
    if let Some(name) = target.strip_prefix("integration.request.path.") {
        let Some(param) = value.strip_prefix("$request.path.") else {
            return Err("a URI path parameter can only come from a path parameter of the method".into());
        };
        let placeholder = format!("{{{name}}}");
        if !integration.uri.contains(&placeholder) {
            return Err(format!("the integration URI has no {placeholder}"));
        }
        let greedy = route.path.contains(&format!("{{{param}+}}"));
        integration.uri = integration.uri.replace(&placeholder, &format!("{{{param}}}"));
        if greedy {
            // `{proxy+}` in the route; Pylon fills `{proxy}` with the rest of the path.
            integration.uri = integration
                .uri
                .replace(&format!("{{{param}+}}"), &format!("{{{param}}}"));
        }
        return Ok(None);
    }
    Err(format!(
        "target {target:?}: only integration.request.header/querystring/path are supported"
    ))
}

/// An AWS mapping source → a Pylon mapping value. `prefix` is
/// `method.request.` (requests) or `integration.response.` (responses).
fn rest_source(source: &str, prefix: &str) -> Result<String, String> {
    if let Some(literal) = template::literal(source) {
        return Ok(literal);
    }
    let side = if prefix == "method.request." {
        "request"
    } else {
        "response"
    };
    if let Some(rest) = source.strip_prefix(prefix) {
        for (aws, pylon) in [
            ("header.", "header."),
            ("querystring.", "querystring."),
            ("path.", "path."),
            ("multivalueheader.", "header."),
            ("multivaluequerystring.", "querystring."),
        ] {
            if let Some(name) = rest.strip_prefix(aws) {
                if side == "response" && pylon != "header." {
                    break;
                }
                return Ok(format!("${side}.{pylon}{name}"));
            }
        }
        if rest == "body" {
            return Ok(format!("${side}.body"));
        }
        if let Some(path) = rest.strip_prefix("body.") {
            let path = path.trim_start_matches('$').trim_start_matches('.');
            return Ok(format!("${side}.body.{path}"));
        }
    }
    if let Some(name) = source.strip_prefix("context.") {
        return Ok(format!("$context.{name}"));
    }
    if let Some(name) = source.strip_prefix("stageVariables.") {
        return Ok(format!("$stageVariables.{name}"));
    }
    Err(format!("source {source:?} has no Pylon equivalent"))
}

/// `responses` of a non-proxy integration: selection pattern → status,
/// response parameters and templates.
fn integration_responses(
    responses: &Map<String, Value>,
    at: &str,
    velocity: bool,
    report: &mut Report,
) -> Option<Vec<IntegrationResponse>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (pattern, response) in responses {
        let here = format!("{at}.{pattern}");
        let Some(status_code) = status_of(response.get("statusCode")) else {
            report.refused(
                format!("{here}.statusCode"),
                format!(
                    "{}: a method response status (200..=599) is required",
                    short_value(response.get("statusCode"))
                ),
            );
            ok = false;
            continue;
        };
        let mut compiled = IntegrationResponse {
            selection_pattern: if pattern == "default" {
                String::new()
            } else {
                pattern.clone()
            },
            status_code,
            ..Default::default()
        };
        if let Some(parameters) = response.get("responseParameters").and_then(Value::as_object) {
            for (target, source) in parameters {
                let Some(name) = target.strip_prefix("method.response.header.") else {
                    report.refused(
                        format!("{here}.responseParameters.{target}"),
                        "only method.response.header.NAME targets exist",
                    );
                    ok = false;
                    continue;
                };
                match source.as_str().map(|s| rest_source(s, "integration.response.")) {
                    Some(Ok(value)) => {
                        compiled
                            .response_parameters
                            .insert(format!("overwrite:header.{name}"), value);
                    }
                    Some(Err(why)) => {
                        report.refused(format!("{here}.responseParameters.{target}"), why);
                        ok = false;
                    }
                    None => {
                        report.refused(format!("{here}.responseParameters.{target}"), "not a string");
                        ok = false;
                    }
                }
            }
        }
        if let Some(templates) = response.get("responseTemplates").and_then(Value::as_object) {
            for (media_type, text) in templates {
                let t = format!("{here}.responseTemplates.{media_type}");
                match text.as_str().map(|t| template::prepare(t, velocity)) {
                    Some(Ok(converted)) => {
                        compiled
                            .response_templates
                            .insert(media_type.to_ascii_lowercase(), converted);
                    }
                    Some(Err(why)) => {
                        report.refused(t, why);
                        ok = false;
                    }
                    None => {
                        report.refused(t, "not a string");
                        ok = false;
                    }
                }
            }
        }
        if response.get("contentHandling").is_some() {
            report.approximated(format!("{here}.contentHandling"), "bodies pass as bytes");
        }
        report.mapped(&here, "integration response");
        out.push(compiled);
    }
    ok.then_some(out)
}

/// A status code as AWS writes it (`"200"` or `200`): three digits,
/// 200..=599.
fn status_of(value: Option<&Value>) -> Option<u32> {
    let status = match value? {
        Value::String(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok()?,
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok())?,
        _ => return None,
    };
    (200..=599).contains(&status).then_some(status)
}

fn short_value(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(v) => v.to_string().chars().take(40).collect(),
    }
}

/// A MOCK integration: the request template names the status
/// (`{"statusCode": 200}`), the integration response it selects gives the
/// headers and body.
fn mock(
    raw: &Map<String, Value>,
    mut out: Integration,
    at: &str,
    report: &mut Report,
) -> Option<Integration> {
    let mut status = 200;
    if let Some(templates) = raw.get("requestTemplates").and_then(Value::as_object) {
        let text = template::pick_one(&format!("{at}.requestTemplates"), templates, report)?;
        if let Some((line, construct)) = template::first_velocity(&text) {
            report.refused(
                format!("{at}.requestTemplates"),
                format!("a Velocity (VTL) template choosing the mock's status (line {line}: `{construct}`)"),
            );
            return None;
        }
        if !text.trim().is_empty() {
            let named = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("statusCode").cloned());
            match (&named, status_of(named.as_ref())) {
                (_, Some(s)) => status = s,
                (None, _) => {
                    report.approximated(format!("{at}.requestTemplates"), "names no statusCode: 200")
                }
                (Some(other), None) => {
                    report.refused(
                        format!("{at}.requestTemplates"),
                        format!("statusCode {other} is not a status (200..=599)"),
                    );
                    return None;
                }
            }
        }
    }
    let mut mock = MockResponse {
        status_code: status,
        ..Default::default()
    };
    if let Some(responses) = raw.get("responses").and_then(Value::as_object) {
        let selected = responses
            .iter()
            .find(|(pattern, _)| {
                pattern.as_str() != "default" && regex_full_match(pattern, &status.to_string())
            })
            .or_else(|| responses.iter().find(|(p, _)| p.as_str() == "default"));
        if let Some((pattern, response)) = selected {
            let here = format!("{at}.responses.{pattern}");
            match status_of(response.get("statusCode")) {
                Some(code) => mock.status_code = code,
                None => {
                    report.refused(
                        format!("{here}.statusCode"),
                        format!(
                            "{}: a method response status (200..=599) is required",
                            short_value(response.get("statusCode"))
                        ),
                    );
                    return None;
                }
            }
            if let Some(parameters) = response.get("responseParameters").and_then(Value::as_object) {
                for (target, source) in parameters {
                    let name = target.strip_prefix("method.response.header.");
                    let literal = source.as_str().and_then(template::literal);
                    match (name, literal) {
                        (Some(name), Some(literal)) => {
                            mock.headers.insert(name.to_owned(), literal);
                        }
                        _ => {
                            report.refused(
                                format!("{here}.responseParameters.{target}"),
                                "a mock's response headers must be static values ('value')",
                            );
                            return None;
                        }
                    }
                }
            }
            if let Some(templates) = response.get("responseTemplates").and_then(Value::as_object) {
                let text = template::pick_one(&format!("{here}.responseTemplates"), templates, report)?;
                if template::first_velocity(&text).is_some() {
                    // Rendered per request, as a Velocity response template.
                    match template::prepare(&text, true) {
                        Ok(text) => {
                            out.response_template = text;
                            out.template_language = integration::TemplateLanguage::Velocity as i32;
                        }
                        Err(why) => {
                            report.refused(format!("{here}.responseTemplates"), why);
                            return None;
                        }
                    }
                } else {
                    mock.body = text;
                }
            }
            if responses.len() > 1 {
                report.approximated(
                    format!("{at}.responses"),
                    format!(
                        "the mock always answers {status}: only the response it selects ({pattern}) is kept"
                    ),
                );
            }
        }
    }
    report.mapped(at, format!("MOCK answering {}", mock.status_code));
    out.mock = Some(mock);
    Some(out)
}

/// Whether `pattern` (AWS's selection pattern, a regular expression)
/// matches all of `text`, as the data plane will decide it.
fn regex_full_match(pattern: &str, text: &str) -> bool {
    crate::model::selection_pattern(pattern).is_ok_and(|re| re.is_match(text))
}

/// Request validators: the document's named set, the default, and per
/// operation overrides.
struct Validators {
    named: BTreeMap<String, (bool, bool)>,
    default: Option<String>,
}

impl Validators {
    fn of(doc: &Document<'_>, report: &mut Report) -> Validators {
        let mut named = BTreeMap::new();
        if let Some(map) = doc
            .root
            .get("x-amazon-apigateway-request-validators")
            .and_then(Value::as_object)
        {
            for (name, validator) in map {
                let body = validator
                    .get("validateRequestBody")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let parameters = validator
                    .get("validateRequestParameters")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                named.insert(name.clone(), (body, parameters));
                report.mapped(
                    format!("x-amazon-apigateway-request-validators.{name}"),
                    "request validator",
                );
            }
        }
        let default = doc
            .root
            .get("x-amazon-apigateway-request-validator")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Validators { named, default }
    }

    /// What the operation's validator checks, as the route's validation.
    fn validation(
        &self,
        doc: &Document<'_>,
        operation: &Map<String, Value>,
        parameters: &[&Value],
        at: &str,
        report: &mut Report,
    ) -> Option<Option<RequestValidation>> {
        let name = operation
            .get("x-amazon-apigateway-request-validator")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.default.clone());
        let Some(name) = name else {
            return Some(None);
        };
        let Some(&(body, params)) = self.named.get(&name) else {
            report.refused(
                format!("{at}.x-amazon-apigateway-request-validator"),
                format!("names the validator {name:?}, which is not defined"),
            );
            return None;
        };
        let mut validation = RequestValidation::default();
        if params {
            for parameter in parameters {
                if parameter.get("required").and_then(Value::as_bool) != Some(true) {
                    continue;
                }
                let pname = parameter
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match parameter.get("in").and_then(Value::as_str) {
                    Some("query") => validation.required_query.push(pname),
                    Some("header") => validation.required_headers.push(pname),
                    Some("cookie") => report.approximated(
                        format!("{at}.parameters"),
                        format!("required cookie {pname}: cookies are not validated (AWS does not validate them either)"),
                    ),
                    _ => {}
                }
            }
        }
        if body {
            for (media_type, schema) in body_schemas(doc, operation, parameters) {
                match model_name(&schema) {
                    Some(model) => {
                        validation.body_models.insert(media_type, model);
                    }
                    None => report.approximated(
                        format!("{at}.{}", if doc.dialect == Dialect::Swagger2 { "parameters" } else { "requestBody" }),"an inline body schema (not a named model) is not validated: name it under definitions/components.schemas",
                    ),
                }
            }
        }
        if validation == RequestValidation::default() {
            return Some(None);
        }
        Some(Some(validation))
    }
}

/// The operation's body schemas by media type.
fn body_schemas(
    doc: &Document<'_>,
    operation: &Map<String, Value>,
    parameters: &[&Value],
) -> Vec<(String, Value)> {
    match doc.dialect {
        Dialect::Swagger2 => {
            let consumes = super::strings(operation.get("consumes").or_else(|| doc.root.get("consumes")));
            let consumes = if consumes.is_empty() {
                vec!["application/json".to_owned()]
            } else {
                consumes
            };
            parameters
                .iter()
                .filter(|p| p.get("in").and_then(Value::as_str) == Some("body"))
                .filter_map(|p| p.get("schema").cloned())
                .flat_map(|schema| {
                    consumes
                        .iter()
                        .map(move |c| (c.to_ascii_lowercase(), schema.clone()))
                })
                .collect()
        }
        Dialect::OpenApi3 => operation
            .get("requestBody")
            .and_then(|b| doc.follow(b))
            .and_then(|b| b.get("content"))
            .and_then(Value::as_object)
            .map(|content| {
                content
                    .iter()
                    .filter_map(|(media, m)| Some((media.to_ascii_lowercase(), m.get("schema")?.clone())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `{"$ref": "#/definitions/Pet"}` (or AWS's model URL) → `Pet`.
fn model_name(schema: &Value) -> Option<String> {
    let reference = schema.get("$ref")?.as_str()?;
    reference.rsplit('/').next().map(str::to_owned)
}

/// REST APIs answer CORS preflights with an OPTIONS mock per resource; Pylon
/// has one CORS policy per API. The mocks are folded into it: origins,
/// methods and headers united.
#[derive(Default)]
pub struct CorsFold {
    origins: BTreeSet<String>,
    /// Each origin → the first OPTIONS integration that allowed it.
    origin_places: BTreeMap<String, String>,
    methods: BTreeSet<String>,
    headers: BTreeSet<String>,
    expose: BTreeSet<String>,
    max_age: Option<u32>,
    credentials: bool,
    seen: bool,
}

impl CorsFold {
    /// Takes an OPTIONS integration (at `here` in the document) if it is a
    /// mock whose responses only set `Access-Control-*` headers.
    fn take(&mut self, raw: &Map<String, Value>, here: &str) -> bool {
        if raw
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some("mock")
        {
            return false;
        }
        let Some(responses) = raw.get("responses").and_then(Value::as_object) else {
            return false;
        };
        let Some(default) = responses.get("default").or_else(|| responses.values().next()) else {
            return false;
        };
        let Some(parameters) = default.get("responseParameters").and_then(Value::as_object) else {
            return false;
        };
        let mut values = BTreeMap::new();
        for (target, source) in parameters {
            let Some(name) = target.strip_prefix("method.response.header.") else {
                return false;
            };
            let Some(literal) = source.as_str().and_then(template::literal) else {
                return false;
            };
            if !name.to_ascii_lowercase().starts_with("access-control-") {
                return false;
            }
            values.insert(name.to_ascii_lowercase(), literal);
        }
        if !values.contains_key("access-control-allow-origin") {
            return false;
        }
        let split = |v: &str| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        for (name, value) in values {
            match name.as_str() {
                "access-control-allow-origin" => {
                    for origin in split(&value) {
                        self.origin_places
                            .entry(origin.clone())
                            .or_insert_with(|| here.to_owned());
                        self.origins.insert(origin);
                    }
                }
                "access-control-allow-methods" => self
                    .methods
                    .extend(split(&value).into_iter().map(|m| m.to_ascii_uppercase())),
                "access-control-allow-headers" => self.headers.extend(split(&value)),
                "access-control-expose-headers" => self.expose.extend(split(&value)),
                "access-control-max-age" => self.max_age = value.trim().parse().ok(),
                "access-control-allow-credentials" => self.credentials = value.trim() == "true",
                _ => {}
            }
        }
        self.seen = true;
        true
    }

    /// The CORS policy the OPTIONS methods taken add up to; `None` if none
    /// was taken. (The places of the origins stay, for [`Self::place_of_origin`].)
    pub fn finish(&mut self) -> Option<Cors> {
        self.seen.then(|| Cors {
            allow_origins: std::mem::take(&mut self.origins).into_iter().collect(),
            allow_methods: std::mem::take(&mut self.methods).into_iter().collect(),
            allow_headers: std::mem::take(&mut self.headers).into_iter().collect(),
            expose_headers: std::mem::take(&mut self.expose).into_iter().collect(),
            max_age_seconds: self.max_age.unwrap_or(0),
            allow_credentials: self.credentials,
        })
    }

    /// The first OPTIONS integration that allowed `origin`.
    pub fn place_of_origin(&self, origin: &str) -> Option<&str> {
        self.origin_places.get(origin).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_patterns_match_whole_status_codes() {
        assert!(regex_full_match("2\\d{2}", "204"));
        assert!(!regex_full_match("2\\d{2}", "404"));
        assert!(regex_full_match("4\\d{2}|5\\d{2}", "503"));
        assert!(regex_full_match("40[0-4]", "403"));
        assert!(!regex_full_match("40[0-4]", "405"));
        assert!(regex_full_match("500", "500"));
        assert!(!regex_full_match("50", "500"));
    }

    #[test]
    fn lambda_functions_are_named_from_either_uri_form() {
        let invocation = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:Calc/invocations";
        assert_eq!(lambda_function(invocation).as_deref(), Some("Calc"));
        assert_eq!(
            lambda_function("arn:aws:lambda:eu-west-1:1:function:Auth:live").as_deref(),
            Some("Auth")
        );
        assert_eq!(lambda_function("https://example.test/"), None);
    }

    #[test]
    fn rest_sources_become_pylon_references() {
        assert_eq!(
            rest_source("method.request.header.h1", "method.request.").as_deref(),
            Ok("$request.header.h1")
        );
        assert_eq!(
            rest_source("'static'", "method.request.").as_deref(),
            Ok("static")
        );
        assert_eq!(
            rest_source("integration.response.body.op", "integration.response.").as_deref(),
            Ok("$response.body.op")
        );
        assert_eq!(
            rest_source("context.requestId", "method.request.").as_deref(),
            Ok("$context.requestId")
        );
        assert!(rest_source("integration.response.querystring.x", "integration.response.").is_err());
    }
}
