//! Validation of an [`Api`] definition.

use super::mapping::{Side, compile_mappings};
use super::template::{check_template, compile_schema};
use super::{
    Checker, HTTP_METHODS, PathTemplate, ValidationErrors, at, check_http_url, check_origin, idx,
    is_dns_label, is_name, key,
};
use crate::GatewayResponseType;
use pylon_proto::config::v1::{
    Api, Authorization, Authorizer, ConnectionsAccess, Cors, Integration, ResourcePolicy, Route, api,
    authorization, authorizer, integration,
};
use std::collections::{BTreeMap, BTreeSet};

/// AWS's default and maximum integration timeout.
pub const DEFAULT_INTEGRATION_TIMEOUT_MS: u32 = 29_000;
const MIN_INTEGRATION_TIMEOUT_MS: u32 = 50;
const MAX_ROUTES: usize = 300;
const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
    "EdDSA",
];

/// A route's identity within an API: `GET /pets/{id}`, or a WebSocket route key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey(String);

impl RouteKey {
    pub fn of(route: &Route) -> RouteKey {
        if route.method.is_empty() {
            RouteKey(route.path.clone())
        } else {
            RouteKey(format!("{} {}", route.method, route.path))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API definition that passed validation, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiDefinition {
    api: Api,
}

impl ApiDefinition {
    /// Checks everything about `api` that does not depend on other resources,
    /// returning every problem at once. Defaults (protocol HTTP, integration
    /// timeout 29 s, mock status 200) are written into the result.
    pub fn validate(mut api: Api) -> Result<ApiDefinition, ValidationErrors> {
        let mut c = Checker::default();
        normalize(&mut api);
        check_api(&mut c, &api);
        c.finish(ApiDefinition { api })
    }

    pub fn name(&self) -> &str {
        &self.api.name
    }

    pub fn as_proto(&self) -> &Api {
        &self.api
    }

    pub fn into_proto(self) -> Api {
        self.api
    }
}

fn normalize(api: &mut Api) {
    if api.protocol == api::Protocol::Unspecified as i32 {
        api.protocol = api::Protocol::Http as i32;
    }
    for route in &mut api.routes {
        route.method = route.method.to_ascii_uppercase();
        if let Some(integration) = route.integration.as_mut() {
            if integration.timeout_ms == 0 {
                integration.timeout_ms = DEFAULT_INTEGRATION_TIMEOUT_MS;
            }
            integration.http_method = integration.http_method.to_ascii_uppercase();
            if let Some(mock) = integration.mock.as_mut()
                && mock.status_code == 0
            {
                mock.status_code = 200;
            }
        }
    }
}

fn check_api(c: &mut Checker, api: &Api) {
    c.check(
        is_dns_label(&api.name),
        "name",
        "must be a DNS label: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
    );
    let websocket = api.protocol == api::Protocol::Websocket as i32;
    c.check(
        api::Protocol::try_from(api.protocol).is_ok(),
        "protocol",
        "must be HTTP or WEBSOCKET",
    );
    c.check(
        api.description.len() <= 1024,
        "description",
        "must be at most 1024 characters",
    );
    c.check(
        api::EndpointType::try_from(api.endpoint_type).is_ok(),
        "endpoint_type",
        "must be REGIONAL, EDGE or PRIVATE",
    );
    if websocket {
        c.check(
            api.route_selection_expression.starts_with("$request.body.")
                && api.route_selection_expression.len() > "$request.body.".len(),
            "route_selection_expression",
            "WEBSOCKET APIs need one, e.g. \"$request.body.action\"",
        );
    } else {
        c.check(
            api.route_selection_expression.is_empty(),
            "route_selection_expression",
            "only WEBSOCKET APIs have one",
        );
    }
    c.check(
        api.routes.len() <= MAX_ROUTES,
        "routes",
        format!("at most {MAX_ROUTES} routes per API"),
    );

    let authorizers = check_authorizers(c, &api.authorizers);
    if let Some(access) = &api.connections_access {
        check_connections_access(c, websocket, access, &authorizers);
    }
    for name in api.models.keys() {
        c.check(
            is_name(name, 128, b"_-."),
            key("models", name),
            "model names are 1-128 chars of A-Z a-z 0-9 _ - .",
        );
    }
    for (name, schema) in &api.models {
        let compiled = serde_json::to_value(schema)
            .map_err(|e| e.to_string())
            .and_then(|schema| compile_schema(&schema));
        if let Err(why) = compiled {
            c.fail(key("models", name), format!("not a valid JSON Schema: {why}"));
        }
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, route) in api.routes.iter().enumerate() {
        let p = idx("routes", i);
        let identity = if websocket {
            check_websocket_route(c, &p, route)
        } else {
            check_http_route(c, &p, route)
        };
        if let Some(first) = identity.and_then(|identity| seen.insert(identity, i)) {
            c.fail(
                at(&p, "path"),
                format!("conflicts with routes[{first}]: same method and path shape"),
            );
        }
        check_integration(c, &at(&p, "integration"), route.integration.as_ref());
        if let Some(integration) = &route.integration {
            check_uri_params(c, &at(&p, "integration.uri"), &integration.uri, route, websocket);
        }
        check_authorization(
            c,
            &at(&p, "authorization"),
            route.authorization.as_ref(),
            &authorizers,
        );
        check_validation(c, &p, route, api);
        check_mappings(c, &p, route);
        check_route_cache(c, &p, route);
        if websocket {
            check_websocket_route_fields(c, &p, route);
        }
    }

    let mut types = BTreeSet::new();
    for (i, response) in api.gateway_responses.iter().enumerate() {
        let p = idx("gateway_responses", i);
        if GatewayResponseType::parse(&response.r#type).is_none() {
            c.fail(
                at(&p, "type"),
                "unknown gateway response type (ACCESS_DENIED, THROTTLED, DEFAULT_4XX, ...)",
            );
        } else if !types.insert(response.r#type.as_str()) {
            c.fail(at(&p, "type"), "appears twice");
        }
        c.check(
            response.status_code == 0 || (200..=599).contains(&response.status_code),
            at(&p, "status_code"),
            "must be 200..=599 (or 0 for the type's default)",
        );
        check_static_headers(c, &at(&p, "headers"), &response.headers);
        c.check(
            response.body_template.len() <= 8192,
            at(&p, "body_template"),
            "must be at most 8192 bytes",
        );
        if super::template::is_template(&response.body_template)
            && let Err(why) = check_template(&response.body_template)
        {
            c.fail(at(&p, "body_template"), why);
        }
    }

    if let Some(cors) = &api.cors {
        c.check(
            !websocket,
            "cors",
            "WEBSOCKET APIs have no CORS (browsers do not preflight WebSocket handshakes)",
        );
        check_cors(c, cors);
    }
    c.check(
        !websocket || api.models.is_empty(),
        "models",
        "WEBSOCKET APIs validate no requests: they have no models",
    );
    if let Some(policy) = &api.resource_policy {
        check_policy(c, policy);
    }
}

/// Returns the kind of each well-formed authorizer by name.
fn check_authorizers(c: &mut Checker, authorizers: &[Authorizer]) -> BTreeMap<String, bool> {
    let mut kinds = BTreeMap::new();
    for (i, authorizer) in authorizers.iter().enumerate() {
        let p = idx("authorizers", i);
        if !is_name(&authorizer.name, 128, b"_-") {
            c.fail(at(&p, "name"), "must be 1-128 chars of A-Z a-z 0-9 _ -");
        } else if kinds.contains_key(&authorizer.name) {
            c.fail(at(&p, "name"), "appears twice");
        }
        match &authorizer.kind {
            None => c.fail(&p, "must have a `jwt` or a `request` section"),
            Some(authorizer::Kind::Jwt(jwt)) => {
                let p = at(&p, "jwt");
                c.check(!jwt.issuer.is_empty(), at(&p, "issuer"), "required");
                c.check(
                    !jwt.audiences.is_empty(),
                    at(&p, "audiences"),
                    "at least one audience",
                );
                match (jwt.jwks_uri.is_empty(), jwt.discovery_url.is_empty()) {
                    (true, true) => c.fail(&p, "needs `jwks_uri` or `discovery_url`"),
                    (false, false) => c.fail(&p, "give `jwks_uri` or `discovery_url`, not both"),
                    (false, true) => check_http_url(c, &at(&p, "jwks_uri"), &jwt.jwks_uri),
                    (true, false) => check_http_url(c, &at(&p, "discovery_url"), &jwt.discovery_url),
                }
                c.check(
                    !jwt.algorithms.is_empty(),
                    at(&p, "algorithms"),
                    "pin at least one algorithm",
                );
                for (j, alg) in jwt.algorithms.iter().enumerate() {
                    c.check(
                        JWT_ALGORITHMS.contains(&alg.as_str()),
                        idx(&at(&p, "algorithms"), j),
                        format!("must be one of {}", JWT_ALGORITHMS.join(", ")),
                    );
                }
                if !jwt.identity_source.is_empty() {
                    check_identity_source(c, &at(&p, "identity_source"), &jwt.identity_source);
                }
            }
            Some(authorizer::Kind::Request(request)) => {
                let p = at(&p, "request");
                check_http_url(c, &at(&p, "uri"), &request.uri);
                c.check(
                    !request.identity_sources.is_empty(),
                    at(&p, "identity_sources"),
                    "at least one identity source",
                );
                for (j, source) in request.identity_sources.iter().enumerate() {
                    check_identity_source(c, &idx(&at(&p, "identity_sources"), j), source);
                }
                if let Some(ttl) = request.result_ttl_seconds {
                    c.check(ttl <= 3600, at(&p, "result_ttl_seconds"), "must be 0..=3600");
                }
                c.check(
                    request.timeout_ms == 0 || (50..=10_000).contains(&request.timeout_ms),
                    at(&p, "timeout_ms"),
                    "must be 50..=10000",
                );
            }
        }
        if let Some(kind) = &authorizer.kind {
            kinds.insert(authorizer.name.clone(), matches!(kind, authorizer::Kind::Jwt(_)));
        }
    }
    kinds
}

fn check_identity_source(c: &mut Checker, path: &str, source: &str) {
    let ok = [
        "$request.header.",
        "$request.querystring.",
        "$context.",
        "$stageVariables.",
    ]
    .iter()
    .any(|prefix| source.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty()));
    c.check(
        ok,
        path,
        "must be $request.header.NAME, $request.querystring.NAME, $context.NAME or $stageVariables.NAME",
    );
}

/// Returns the route's identity for the duplicate check.
fn check_http_route(c: &mut Checker, p: &str, route: &Route) -> Option<String> {
    let method_ok = route.method == "ANY" || HTTP_METHODS.contains(&route.method.as_str());
    c.check(
        method_ok,
        at(p, "method"),
        "must be GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or ANY",
    );
    match PathTemplate::parse(&route.path) {
        Ok(template) => Some(format!("{} {}", route.method, template.shape())),
        Err(message) => {
            c.fail(at(p, "path"), message);
            None
        }
    }
}

/// Who may call `@connections`: API key ids and/or a JWT authorizer with
/// scopes.
fn check_connections_access(
    c: &mut Checker,
    websocket: bool,
    access: &ConnectionsAccess,
    authorizers: &BTreeMap<String, bool>,
) {
    let p = "connections_access";
    c.check(websocket, p, "only WEBSOCKET APIs have one");
    for (i, id) in access.api_key_ids.iter().enumerate() {
        c.check(
            !id.is_empty() && id.len() <= 128,
            idx(&at(p, "api_key_ids"), i),
            "an API key id",
        );
    }
    if access.authorizer.is_empty() {
        c.check(
            access.scopes.is_empty(),
            at(p, "scopes"),
            "scopes need an `authorizer` (a JWT authorizer of the API)",
        );
    } else {
        c.check(
            authorizers.get(&access.authorizer) == Some(&true),
            at(p, "authorizer"),
            "must name a JWT authorizer of the API",
        );
        c.check(
            !access.scopes.is_empty(),
            at(p, "scopes"),
            "name at least one scope that grants the management API",
        );
    }
}

fn check_websocket_route(c: &mut Checker, p: &str, route: &Route) -> Option<String> {
    c.check(
        route.method.is_empty(),
        at(p, "method"),
        "WEBSOCKET routes have no method",
    );
    let ok = !route.path.is_empty()
        && route.path.len() <= 128
        && (!route.path.starts_with('$')
            || ["$connect", "$disconnect", "$default"].contains(&route.path.as_str()));
    c.check(
        ok,
        at(p, "path"),
        "a route key: $connect, $disconnect, $default or a name of at most 128 characters",
    );
    ok.then(|| route.path.clone())
}

/// What a WebSocket route would ignore is refused: only `$connect` is
/// authorized and takes header/query-string mappings of the handshake;
/// messages have no validation, cache, response mappings or templates;
/// integrations are POSTs, and only `$connect`'s answer has headers that
/// matter (its subprotocol; a refusal's headers).
fn check_websocket_route_fields(c: &mut Checker, p: &str, route: &Route) {
    let connect = route.path == "$connect";
    let none = "WEBSOCKET routes have none";
    c.check(route.validation.is_none(), at(p, "validation"), none);
    c.check(route.cache.is_none(), at(p, "cache"), none);
    c.check(
        route.response_parameters.is_empty(),
        at(p, "response_parameters"),
        none,
    );
    c.check(
        connect || route.authorization.is_none(),
        at(p, "authorization"),
        "only $connect is authorized (once per connection)",
    );
    c.check(
        connect || route.request_parameters.is_empty(),
        at(p, "request_parameters"),
        "only $connect takes request_parameters (mappings of the handshake)",
    );
    for target in route.request_parameters.keys() {
        let handshake = target
            .split_once(':')
            .is_some_and(|(_, rest)| rest.starts_with("header.") || rest.starts_with("querystring."));
        c.check(
            handshake,
            key(&at(p, "request_parameters"), target),
            "$connect maps headers and query-string parameters only",
        );
    }
    if let Some(integration) = &route.integration {
        let p = at(p, "integration");
        c.check(
            integration.request_template.is_empty(),
            at(&p, "request_template"),
            none,
        );
        c.check(
            integration.response_template.is_empty(),
            at(&p, "response_template"),
            none,
        );
        c.check(
            integration.request_templates.is_empty(),
            at(&p, "request_templates"),
            none,
        );
        c.check(integration.responses.is_empty(), at(&p, "responses"), none);
        c.check(
            integration.http_method.is_empty() || integration.http_method == "POST",
            at(&p, "http_method"),
            "WebSocket integrations are called with POST",
        );
        if let Some(mock) = &integration.mock {
            c.check(
                connect || mock.headers.is_empty(),
                at(&at(&p, "mock"), "headers"),
                "only $connect's answer has headers (a message's reply is a frame)",
            );
        }
    }
}

fn check_integration(c: &mut Checker, p: &str, integration: Option<&Integration>) {
    let Some(integration) = integration else {
        c.fail(p, "required");
        return;
    };
    let kind = integration::Type::try_from(integration.r#type).unwrap_or(integration::Type::Unspecified);
    match kind {
        integration::Type::Unspecified => c.fail(at(p, "type"), "must be HTTP, HTTP_PROXY or MOCK"),
        integration::Type::Http | integration::Type::HttpProxy => {
            check_integration_uri(c, &at(p, "uri"), &integration.uri);
            c.check(
                integration.mock.is_none(),
                at(p, "mock"),
                "only MOCK integrations have one",
            );
        }
        integration::Type::Mock => {
            c.check(
                integration.uri.is_empty(),
                at(p, "uri"),
                "MOCK integrations have no uri",
            );
            if let Some(mock) = &integration.mock {
                check_static_headers(c, &at(&at(p, "mock"), "headers"), &mock.headers);
                // 1xx would leave the client waiting for a real answer.
                c.check(
                    (200..=599).contains(&mock.status_code),
                    at(&at(p, "mock"), "status_code"),
                    "must be 200..=599",
                );
            }
            c.check(
                integration.http_method.is_empty(),
                at(p, "http_method"),
                "only HTTP and HTTP_PROXY integrations have one",
            );
            // (Validation fills in the default, so that one is accepted.)
            c.check(
                integration.timeout_ms == DEFAULT_INTEGRATION_TIMEOUT_MS,
                at(p, "timeout_ms"),
                "MOCK integrations answer at once: they have no timeout",
            );
        }
    }
    if kind == integration::Type::HttpProxy {
        c.check(
            integration.request_template.is_empty() && integration.response_template.is_empty(),
            p,
            "HTTP_PROXY passes requests through: use HTTP for mapping templates",
        );
    }
    c.check(
        integration.http_method.is_empty() || HTTP_METHODS.contains(&integration.http_method.as_str()),
        at(p, "http_method"),
        "must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
    );
    c.check(
        (MIN_INTEGRATION_TIMEOUT_MS..=DEFAULT_INTEGRATION_TIMEOUT_MS).contains(&integration.timeout_ms),
        at(p, "timeout_ms"),
        "must be 50..=29000",
    );
}

/// Every `{name}` an integration URI fills must be a parameter of the
/// route's path (WebSocket routes have none): one that is not would be
/// sent literally.
fn check_uri_params(c: &mut Checker, p: &str, uri: &str, route: &Route, websocket: bool) {
    let params: Vec<String> = if websocket {
        Vec::new()
    } else {
        PathTemplate::parse(&route.path)
            .map(|t| t.params().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    // Where the path ends: `{name}` fills the path only (a value is
    // inserted as the client sent it, so in a query it could add
    // parameters).
    let path_end = uri.find(['?', '#']).unwrap_or(uri.len());
    let mut offset = 0;
    while let Some(start) = uri[offset..].find('{').map(|i| i + offset) {
        let after = &uri[start + 1..];
        let Some(end) = after.find('}') else { break };
        // `${stageVariables.NAME}` is not a path parameter.
        let is_variable = uri[..start].ends_with('$');
        let name = &after[..end];
        if !is_variable {
            if start > path_end {
                c.fail(p, format!("{{{name}}}: path parameters may fill the path only"));
            } else if !params.iter().any(|p| p == name) {
                c.fail(p, format!("{{{name}}} is not a parameter of the route's path"));
            }
        }
        offset = start + 1 + end + 1;
    }
}

/// An http(s) URL, where `${stageVariables.NAME}` may stand for any part.
fn check_integration_uri(c: &mut Checker, p: &str, uri: &str) {
    if uri.is_empty() {
        c.fail(p, "required for HTTP and HTTP_PROXY integrations");
        return;
    }
    if uri.chars().any(|ch| ch.is_control() || ch == ' ') {
        c.fail(p, "must not contain spaces or control characters");
        return;
    }
    let mut rest = uri;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            c.fail(p, "unterminated ${...}");
            return;
        };
        let reference = &after[..end];
        let ok = reference
            .strip_prefix("stageVariables.")
            .is_some_and(|name| is_name(name, 64, b"_"));
        if !ok {
            c.fail(
                p,
                format!("${{{reference}}}: only ${{stageVariables.NAME}} may be used here"),
            );
            return;
        }
        rest = &after[end + 1..];
    }
    if !uri.starts_with("${")
        && let Err(problem) = super::http_url_problem(uri)
    {
        c.fail(p, problem);
        return;
    }
    // Path parameters ({name}) may fill the path only: a client must never
    // choose the backend's host.
    let rest = super::after_http_scheme(uri).unwrap_or(uri);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.replace("${", "").contains('{') {
        c.fail(p, "path parameters ({name}) may only appear in the path");
    }
}

fn check_authorization(
    c: &mut Checker,
    p: &str,
    authorization: Option<&Authorization>,
    authorizers: &BTreeMap<String, bool>,
) {
    let Some(authorization) = authorization else {
        return;
    };
    match authorization::Type::try_from(authorization.r#type) {
        Err(_) => c.fail(at(p, "type"), "must be NONE, JWT or REQUEST"),
        Ok(authorization::Type::None) => {
            c.check(
                authorization.authorizer.is_empty(),
                at(p, "authorizer"),
                "type NONE takes no authorizer",
            );
        }
        Ok(kind) => {
            let want_jwt = kind == authorization::Type::Jwt;
            match authorizers.get(&authorization.authorizer) {
                None => c.fail(at(p, "authorizer"), "must name one of the API's authorizers"),
                Some(&is_jwt) if is_jwt != want_jwt => c.fail(
                    at(p, "authorizer"),
                    format!("is not a {} authorizer", if want_jwt { "JWT" } else { "REQUEST" }),
                ),
                Some(_) => {}
            }
        }
    }
    c.check(
        authorization.scopes.is_empty() || authorization.r#type == authorization::Type::Jwt as i32,
        at(p, "scopes"),
        "only JWT authorization has scopes",
    );
}

fn check_validation(c: &mut Checker, p: &str, route: &Route, api: &Api) {
    let Some(validation) = &route.validation else {
        return;
    };
    let p = at(p, "validation");
    for (content_type, model) in &validation.body_models {
        c.check(
            api.models.contains_key(model),
            key(&at(&p, "body_models"), content_type),
            format!("model {model:?} is not in the API's models"),
        );
    }
    for (i, name) in validation.required_query.iter().enumerate() {
        c.check(
            !name.is_empty(),
            idx(&at(&p, "required_query"), i),
            "must not be empty",
        );
    }
    for (i, name) in validation.required_headers.iter().enumerate() {
        c.check(
            is_name(name, 256, b"-_"),
            idx(&at(&p, "required_headers"), i),
            "must be a header name",
        );
    }
}

fn check_mappings(c: &mut Checker, p: &str, route: &Route) {
    for (field, map, side) in [
        ("request_parameters", &route.request_parameters, Side::Request),
        ("response_parameters", &route.response_parameters, Side::Response),
    ] {
        for (target, source) in map {
            if let Err(why) = compile_mappings([(target, source)], side) {
                c.fail(key(&at(p, field), target), why);
            }
        }
    }
    if let Some(integration) = &route.integration {
        let velocity = integration.template_language == integration::TemplateLanguage::Velocity as i32;
        c.check(
            integration::TemplateLanguage::try_from(integration.template_language).is_ok(),
            at(&at(p, "integration"), "template_language"),
            "must be MINIJINJA or VELOCITY",
        );
        for (field, source, side) in [
            (
                "request_template",
                &integration.request_template,
                TemplateSide::Request,
            ),
            (
                "response_template",
                &integration.response_template,
                TemplateSide::Response,
            ),
        ] {
            if !source.is_empty() {
                check_template_source(c, &at(&at(p, "integration"), field), source, velocity, side);
            }
        }
        c.check(
            integration.request_template.is_empty() || integration.r#type != integration::Type::Mock as i32,
            at(&at(p, "integration"), "request_template"),
            "MOCK integrations take a response_template only",
        );
        check_rest_templates(c, &at(p, "integration"), integration);
    }
}

/// Templates by media type, passthrough behaviour and integration
/// responses: HTTP integrations only, one style of template at a time.
fn check_rest_templates(c: &mut Checker, p: &str, integration: &Integration) {
    let http = integration.r#type == integration::Type::Http as i32;
    let velocity = integration.template_language == integration::TemplateLanguage::Velocity as i32;
    c.check(
        integration.request_templates.is_empty() || http,
        at(p, "request_templates"),
        "only HTTP integrations have them",
    );
    c.check(
        integration.request_templates.is_empty() || integration.request_template.is_empty(),
        at(p, "request_templates"),
        "give request_template or request_templates, not both",
    );
    c.check(
        integration::PassthroughBehavior::try_from(integration.passthrough_behavior).is_ok(),
        at(p, "passthrough_behavior"),
        "must be WHEN_NO_MATCH, WHEN_NO_TEMPLATES or NEVER",
    );
    c.check(
        integration.passthrough_behavior == 0 || http,
        at(p, "passthrough_behavior"),
        "only HTTP integrations have one",
    );
    for (media_type, source) in &integration.request_templates {
        let f = key(&at(p, "request_templates"), media_type);
        check_media_type(c, &f, media_type);
        check_template_source(c, &f, source, velocity, TemplateSide::Request);
    }
    c.check(
        integration.responses.is_empty() || http,
        at(p, "responses"),
        "only HTTP integrations have them (HTTP_PROXY answers with the backend's response)",
    );
    c.check(
        integration.responses.is_empty() || integration.response_template.is_empty(),
        at(p, "responses"),
        "give response_template or responses, not both",
    );
    c.check(
        integration.responses.len() <= 32,
        at(p, "responses"),
        "at most 32 integration responses",
    );
    let mut defaults = 0;
    let mut patterns = BTreeSet::new();
    for (i, response) in integration.responses.iter().enumerate() {
        let r = idx(&at(p, "responses"), i);
        if response.selection_pattern.is_empty() {
            defaults += 1;
            c.check(
                defaults == 1,
                at(&r, "selection_pattern"),
                "only one default response (empty pattern)",
            );
        } else {
            c.check(
                patterns.insert(response.selection_pattern.as_str()),
                at(&r, "selection_pattern"),
                "appears twice",
            );
            c.check(
                response.selection_pattern.len() <= 256,
                at(&r, "selection_pattern"),
                "must be at most 256 characters",
            );
            if let Err(e) = super::selection_pattern(&response.selection_pattern) {
                c.fail(
                    at(&r, "selection_pattern"),
                    format!("not a regular expression: {e}"),
                );
            }
        }
        c.check(
            response.status_code == 0 || (200..=599).contains(&response.status_code),
            at(&r, "status_code"),
            "must be 200..=599 (or 0 for the backend's)",
        );
        for (target, source) in &response.response_parameters {
            if let Err(why) = compile_mappings([(target, source)], Side::Response) {
                c.fail(key(&at(&r, "response_parameters"), target), why);
            }
        }
        for (media_type, source) in &response.response_templates {
            let f = key(&at(&r, "response_templates"), media_type);
            check_media_type(c, &f, media_type);
            check_template_source(c, &f, source, velocity, TemplateSide::Response);
        }
    }
}

/// Fixed response headers (a mock's, a gateway response's): valid names and
/// values, and none of the headers the gateway frames the message with.
fn check_static_headers(c: &mut Checker, p: &str, headers: &BTreeMap<String, String>) {
    for (name, value) in headers {
        let f = key(p, name);
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Err(_) => c.fail(&f, "not a header name"),
            Ok(parsed) if super::mapping::is_gateway_owned(parsed.as_str()) => c.fail(
                &f,
                "the gateway sets this header (message framing and the connection)",
            ),
            Ok(_) => {}
        }
        c.check(
            http::HeaderValue::from_str(value).is_ok(),
            &f,
            "not a header field value (control characters such as CR and LF are not allowed)",
        );
    }
}

fn check_media_type(c: &mut Checker, p: &str, media_type: &str) {
    let ok = media_type
        .split_once('/')
        .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !media_type.contains([';', ' ', ',']))
        && media_type == media_type.to_ascii_lowercase();
    c.check(
        ok,
        p,
        "must be a lowercase media type without parameters (application/json)",
    );
}

/// Which body a template writes.
#[derive(Clone, Copy, PartialEq)]
enum TemplateSide {
    Request,
    Response,
}

/// A template in its integration's language. Velocity's
/// `$context.requestOverride` is not supported, and `responseOverride`
/// only means something in response templates: both are refused where
/// they would be ignored.
fn check_template_source(c: &mut Checker, p: &str, source: &str, velocity: bool, side: TemplateSide) {
    c.check(source.len() <= 64 * 1024, p, "must be at most 65536 bytes");
    if !velocity {
        if let Err(why) = check_template(source) {
            c.fail(p, why);
        }
        return;
    }
    if let Err(why) = crate::vtl::check(source) {
        c.fail(p, format!("Velocity: {why}"));
    }
    let line_of = |needle: &str| {
        source
            .find(needle)
            .map(|at| source[..at].matches('\n').count() + 1)
    };
    if let Some(line) = line_of("requestOverride") {
        c.fail(
            p,
            format!(
                "line {line}: $context.requestOverride is not supported: use request_parameters mappings"
            ),
        );
    }
    if side == TemplateSide::Request
        && let Some(line) = line_of("responseOverride")
    {
        c.fail(
            p,
            format!("line {line}: $context.responseOverride only takes effect in response templates"),
        );
    }
}

fn check_route_cache(c: &mut Checker, p: &str, route: &Route) {
    let Some(cache) = &route.cache else {
        return;
    };
    let p = at(p, "cache");
    if let Some(ttl) = cache.ttl_seconds {
        c.check(ttl <= 3600, at(&p, "ttl_seconds"), "must be 0..=3600");
    }
    let params: Vec<String> = PathTemplate::parse(&route.path)
        .map(|t| t.params().map(str::to_owned).collect())
        .unwrap_or_default();
    for (i, parameter) in cache.key_parameters.iter().enumerate() {
        let path = idx(&at(&p, "key_parameters"), i);
        if let Some(name) = parameter.strip_prefix("path.") {
            c.check(
                params.iter().any(|p| p == name),
                path,
                format!("the route's path has no parameter {name:?}"),
            );
        } else if let Some(name) = parameter.strip_prefix("header.") {
            c.check(
                http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                path,
                "header.NAME must name a valid header",
            );
        } else {
            let ok = parameter.strip_prefix("query.").is_some_and(|n| !n.is_empty());
            c.check(ok, path, "must be path.NAME, query.NAME or header.NAME");
        }
    }
}

fn check_cors(c: &mut Checker, cors: &Cors) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        if origin != "*" {
            check_origin(c, &idx("cors.allow_origins", i), origin);
        }
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        let m = method.to_ascii_uppercase();
        c.check(
            m == "*" || HTTP_METHODS.contains(&m.as_str()),
            idx("cors.allow_methods", i),
            "must be an HTTP method or *",
        );
    }
    c.check(
        cors.max_age_seconds <= 86_400,
        "cors.max_age_seconds",
        "must be 0..=86400",
    );
    c.check(
        !(cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*")),
        "cors.allow_credentials",
        "cannot be combined with allow_origins \"*\"",
    );
}

fn check_policy(c: &mut Checker, policy: &ResourcePolicy) {
    for (field, list) in [
        ("allow_cidrs", &policy.allow_cidrs),
        ("deny_cidrs", &policy.deny_cidrs),
    ] {
        for (i, cidr) in list.iter().enumerate() {
            let ok = cidr.parse::<ipnet::IpNet>().is_ok() || cidr.parse::<std::net::IpAddr>().is_ok();
            c.check(
                ok,
                idx(&at("resource_policy", field), i),
                "must be an IP address or CIDR (10.0.0.0/8, 2001:db8::/32)",
            );
        }
    }
}
