//! Exporting an API as OpenAPI 3.0.3.
//!
//! The document describes the API for people and tools (paths, methods,
//! path parameters, request bodies from the models, security schemes,
//! servers) and carries Pylon's own definition in extensions —
//! `x-pylon-api` at the top (everything but the routes) and `x-pylon-route`
//! on each operation — so importing an export gives back exactly the API
//! that was exported. With AWS extensions, `x-amazon-apigateway-*` are
//! written too where AWS has an equivalent (integrations, CORS, binary
//! media types are not, …) for taking the API to AWS; the `x-pylon-*` ones
//! stay, and the importer prefers them.

use pylon_proto::config::v1::{Api, Route, authorization, integration};
use serde_json::{Map, Value, json};

/// How to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Also write AWS's `x-amazon-apigateway-*` extensions.
    pub aws_extensions: bool,
    /// The base URL the API is served at (`servers[0].url`), if known.
    pub server_url: Option<String>,
    /// `info.version`: the deployment id, or the API's revision.
    pub version: String,
}

/// The API as an OpenAPI 3.0.3 document.
pub fn export(api: &Api, options: &ExportOptions) -> Value {
    let mut root = Map::new();
    root.insert("openapi".into(), json!("3.0.3"));
    let mut info = Map::new();
    info.insert("title".into(), json!(api.name));
    info.insert("version".into(), json!(options.version));
    if !api.description.is_empty() {
        info.insert("description".into(), json!(api.description));
    }
    root.insert("info".into(), Value::Object(info));
    if let Some(url) = &options.server_url {
        root.insert("servers".into(), json!([{ "url": url }]));
    }

    let mut paths: Map<String, Value> = Map::new();
    for route in &api.routes {
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        let key = if route.method == "ANY" {
            "x-amazon-apigateway-any-method".to_owned()
        } else {
            route.method.to_ascii_lowercase()
        };
        item.insert(key, operation(route, options));
    }
    root.insert("paths".into(), Value::Object(paths));

    let mut components = Map::new();
    if !api.models.is_empty() {
        let schemas: Map<String, Value> = api
            .models
            .iter()
            .map(|(name, schema)| (name.clone(), serde_json::to_value(schema).unwrap_or(Value::Null)))
            .collect();
        components.insert("schemas".into(), Value::Object(schemas));
    }
    let schemes = security_schemes(api, options);
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    if !components.is_empty() {
        root.insert("components".into(), Value::Object(components));
    }

    // Everything but the routes, exactly as Pylon holds it.
    let mut rest = api.clone();
    rest.routes.clear();
    rest.revision = 0;
    rest.created_at = None;
    rest.updated_at = None;
    root.insert(
        "x-pylon-api".into(),
        serde_json::to_value(&rest).unwrap_or(Value::Null),
    );
    if options.aws_extensions
        && let Some(cors) = &api.cors
    {
        root.insert(
            "x-amazon-apigateway-cors".into(),
            json!({
                "allowOrigins": cors.allow_origins,
                "allowMethods": cors.allow_methods,
                "allowHeaders": cors.allow_headers,
                "exposeHeaders": cors.expose_headers,
                "maxAge": cors.max_age_seconds,
                "allowCredentials": cors.allow_credentials,
            }),
        );
    }
    Value::Object(root)
}

fn operation(route: &Route, options: &ExportOptions) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(route)));
    let mut parameters = Vec::new();
    for segment in route.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let name = name.trim_end_matches('+');
            parameters
                .push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        }
    }
    if let Some(validation) = &route.validation {
        for name in &validation.required_query {
            parameters
                .push(json!({"name": name, "in": "query", "required": true, "schema": {"type": "string"}}));
        }
        for name in &validation.required_headers {
            parameters
                .push(json!({"name": name, "in": "header", "required": true, "schema": {"type": "string"}}));
        }
        if !validation.body_models.is_empty() {
            let content: Map<String, Value> = validation
                .body_models
                .iter()
                .map(|(media, model)| {
                    (
                        media.clone(),
                        json!({"schema": {"$ref": format!("#/components/schemas/{model}")}}),
                    )
                })
                .collect();
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(security) = security_of(route) {
        op.insert("security".into(), security);
    }
    op.insert(
        "responses".into(),
        json!({"default": {"description": "the integration's answer"}}),
    );
    op.insert(
        "x-pylon-route".into(),
        serde_json::to_value(route).unwrap_or(Value::Null),
    );
    if options.aws_extensions
        && let Some(integration) = aws_integration(route)
    {
        op.insert("x-amazon-apigateway-integration".into(), integration);
    }
    Value::Object(op)
}

/// The operation's `security` as the route's authorization requires it
/// (`None`: open).
pub(crate) fn security_of(route: &Route) -> Option<Value> {
    let auth = route.authorization.as_ref()?;
    let mut requirement = Map::new();
    if auth.api_key_required {
        requirement.insert("api_key".into(), json!([]));
    }
    if auth.r#type != authorization::Type::None as i32 && !auth.authorizer.is_empty() {
        requirement.insert(auth.authorizer.clone(), json!(auth.scopes));
    }
    (!requirement.is_empty()).then(|| json!([requirement]))
}

/// `GET /pets/{id}` → `get-pets-id`.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.to_ascii_lowercase();
    for part in route
        .path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        id.push('-');
        id.push_str(part);
    }
    id
}

fn security_schemes(api: &Api, options: &ExportOptions) -> Map<String, Value> {
    let mut schemes = Map::new();
    let keyed = api
        .routes
        .iter()
        .any(|r| r.authorization.as_ref().is_some_and(|a| a.api_key_required));
    if keyed {
        schemes.insert(
            "api_key".into(),
            json!({"type": "apiKey", "name": "x-api-key", "in": "header"}),
        );
    }
    for authorizer in &api.authorizers {
        use pylon_proto::config::v1::authorizer::Kind;
        let scheme = match &authorizer.kind {
            Some(Kind::Jwt(jwt)) => {
                let mut scheme = json!({"type": "openIdConnect", "openIdConnectUrl": if jwt.discovery_url.is_empty() {
                    format!("{}/.well-known/openid-configuration", jwt.issuer.trim_end_matches('/'))
                } else {
                    jwt.discovery_url.clone()
                }});
                if options.aws_extensions
                    && let Some(map) = scheme.as_object_mut()
                {
                    map.insert(
                        "x-amazon-apigateway-authorizer".into(),
                        json!({
                            "type": "jwt",
                            "jwtConfiguration": {"issuer": jwt.issuer, "audience": jwt.audiences},
                            "identitySource": if jwt.identity_source.is_empty() { "$request.header.Authorization".to_owned() } else { jwt.identity_source.clone() },
                        }),
                    );
                }
                scheme
            }
            Some(Kind::Request(request)) => {
                let header = request
                    .identity_sources
                    .iter()
                    .find_map(|s| s.strip_prefix("$request.header."))
                    .unwrap_or("Authorization");
                json!({"type": "apiKey", "name": header, "in": "header", "description": format!("checked by the request authorizer {}", authorizer.name)})
            }
            None => continue,
        };
        schemes.insert(authorizer.name.clone(), scheme);
    }
    schemes
}

/// The AWS integration a Pylon integration corresponds to, where there is one.
fn aws_integration(route: &Route) -> Option<Value> {
    let integration = route.integration.as_ref()?;
    let kind = integration::Type::try_from(integration.r#type).ok()?;
    let mut out = Map::new();
    match kind {
        integration::Type::HttpProxy => {
            out.insert("type".into(), json!("http_proxy"));
            out.insert("httpMethod".into(), json!("ANY"));
            out.insert("uri".into(), json!(integration.uri));
        }
        integration::Type::Http => {
            out.insert("type".into(), json!("http"));
            let method = if integration.http_method.is_empty() {
                &route.method
            } else {
                &integration.http_method
            };
            out.insert("httpMethod".into(), json!(method));
            out.insert("uri".into(), json!(integration.uri));
        }
        integration::Type::Mock => {
            let mock = integration.mock.clone().unwrap_or_default();
            out.insert("type".into(), json!("mock"));
            out.insert(
                "requestTemplates".into(),
                json!({"application/json": format!("{{\"statusCode\": {}}}", mock.status_code)}),
            );
            let headers: Map<String, Value> = mock
                .headers
                .iter()
                .map(|(k, v)| (format!("method.response.header.{k}"), json!(format!("'{v}'"))))
                .collect();
            out.insert(
                "responses".into(),
                json!({"default": {"statusCode": mock.status_code.to_string(), "responseParameters": headers, "responseTemplates": {"application/json": mock.body}}}),
            );
        }
        integration::Type::Unspecified => return None,
    }
    out.insert("timeoutInMillis".into(), json!(integration.timeout_ms));
    Some(Value::Object(out))
}
