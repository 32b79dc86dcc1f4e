//! Importing AWS API Gateway exports: OpenAPI 3.0/3.1 and Swagger 2.0
//! documents, JSON or YAML, with their `x-amazon-apigateway-*` extensions,
//! turned into a Pylon [`Api`] and a [`Report`] of what became of every
//! construct (docs/openapi.md has the mapping table).
//!
//! Nothing is dropped silently: a construct is mapped, approximated (the
//! report says how it differs), or refused — and one refusal stops the
//! import, naming every refused construct at once. The importer does no
//! I/O; the control plane runs it for the `ImportApi` call and then stores
//! the API through the same validation as `CreateApi`.

mod cfn;
mod export;
mod operation;
mod report;
mod security;
mod template;

pub use export::{ExportOptions, export};
use pylon_proto::config::v1::{Api, Cors, GatewayResponse, ResourcePolicy, api};
pub use report::{Note, Outcome, Report};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What the importer is told besides the document.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The API's name; default: the document's `info.title` as a DNS label.
    pub api_name: Option<String>,
    /// CloudFormation parameters and placeholders: `Ref X` → `X`,
    /// `Fn::GetAtt [R, A]` → `R.A`, `${X}` → `X`.
    pub variables: BTreeMap<String, String>,
    /// Lambda function name → the URL that serves it (Lambda proxy and
    /// non-proxy integrations, Lambda authorizers).
    pub lambda_urls: BTreeMap<String, String>,
    /// AWS service integration (its URI ARN, or its action name) → the URL
    /// that serves it.
    pub service_urls: BTreeMap<String, String>,
}

/// An imported API and what became of each construct.
#[derive(Clone, Debug)]
pub struct Imported {
    pub api: Api,
    pub report: Report,
}

/// Why a document could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither JSON nor YAML.
    #[error("not a JSON or YAML document: {0}")]
    Unreadable(String),
    /// JSON or YAML, but not an OpenAPI 3.x or Swagger 2.0 definition.
    #[error("not an OpenAPI 3.x or Swagger 2.0 document: {0}")]
    NotOpenApi(String),
    /// Constructs that have no Pylon equivalent (the report names each).
    #[error("{} construct(s) cannot be imported:\n{}", .0.with(Outcome::Refused).count(), refusals(.0))]
    Refused(Report),
}

fn refusals(report: &Report) -> String {
    report
        .with(Outcome::Refused)
        .map(|n| format!("  {}: {}", n.path, n.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which kind of document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Swagger2,
    OpenApi3,
}

/// The whole document, resolved, with what the operations need from it.
pub(crate) struct Document<'a> {
    pub root: &'a Map<String, Value>,
    pub dialect: Dialect,
    pub options: &'a ImportOptions,
}

impl Document<'_> {
    /// Follows a local `$ref` (`#/components/...`, `#/definitions/...`).
    pub fn follow<'v>(&'v self, value: &'v Value) -> Option<&'v Value> {
        let mut current = value;
        for _ in 0..16 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => current = self.pointer(reference)?,
                None => return Some(current),
            }
        }
        None
    }

    pub fn pointer(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        let mut current: Option<&Value> = None;
        for (i, part) in pointer.split('/').skip(1).enumerate() {
            let part = part.replace("~1", "/").replace("~0", "~");
            current = if i == 0 {
                self.root.get(&part)
            } else {
                current?.get(&part)
            };
        }
        current
    }
}

/// AWS extensions at the top of a document that are handled (or knowingly
/// left out) by name.
const ROOT_EXTENSIONS: &[&str] = &[
    "x-amazon-apigateway-request-validators",
    "x-amazon-apigateway-request-validator",
    "x-amazon-apigateway-gateway-responses",
    "x-amazon-apigateway-cors",
    "x-amazon-apigateway-binary-media-types",
    "x-amazon-apigateway-endpoint-configuration",
    "x-amazon-apigateway-policy",
    "x-amazon-apigateway-api-key-source",
    "x-amazon-apigateway-documentation",
    "x-amazon-apigateway-minimum-compression-size",
    "x-amazon-apigateway-importexport-version",
    "x-amazon-apigateway-tag-value",
    "x-amazon-apigateway-disable-execute-api-endpoint",
    "x-amazon-apigateway-route-selection-expression",
];

/// Imports `text` (an OpenAPI 3.x or Swagger 2.0 document, JSON or YAML).
///
/// # Errors
/// [`ImportError::Unreadable`] / [`ImportError::NotOpenApi`] for a document
/// that is not one; [`ImportError::Refused`] with the whole report when any
/// construct cannot be imported.
pub fn import(text: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    let mut value = parse(text)?;
    let missing = cfn::resolve(&mut value, &options.variables);
    let Value::Object(root) = &value else {
        return Err(ImportError::NotOpenApi("the document is not an object".into()));
    };
    let dialect = match (root.get("swagger"), root.get("openapi")) {
        (Some(v), _) if v.as_str() == Some("2.0") => Dialect::Swagger2,
        (_, Some(v)) if v.as_str().is_some_and(|v| v.starts_with("3.")) => Dialect::OpenApi3,
        _ => {
            return Err(ImportError::NotOpenApi(
                "no `swagger: \"2.0\"` or `openapi: 3.x` field".into(),
            ));
        }
    };
    let mut report = Report::default();
    if let Some(pylon) = root.get("x-pylon-api") {
        return import_exported(root, pylon, dialect, options);
    }
    for (name, places) in &missing {
        let places: Vec<_> = places.iter().map(String::as_str).collect();
        let detail = if name.starts_with("Fn::") {
            format!(
                "the CloudFormation function {name} cannot be resolved here (at {})",
                places.join(", ")
            )
        } else {
            format!(
                "unresolved CloudFormation reference {name}: give --set-var {name}=VALUE (at {})",
                places.join(", ")
            )
        };
        if places.iter().all(|p| p.starts_with("$.info")) {
            if places.iter().any(|p| p.starts_with("$.info.title")) && options.api_name.is_none() {
                report.refused("info.title", format!("{detail}; or give --api NAME"));
            } else {
                report.approximated("info", format!("{detail}; only the title and description use it"));
            }
        } else {
            report.refused(
                places.first().copied().unwrap_or("$").trim_start_matches("$."),
                detail,
            );
        }
    }
    let document = Document {
        root,
        dialect,
        options,
    };

    let mut api = Api {
        protocol: api::Protocol::Http as i32,
        ..Default::default()
    };
    name_and_describe(&document, &mut api, &mut report);
    root_extensions(&document, &mut api, &mut report);
    api.models = models(&document, &mut report);
    let schemes = security::schemes(&document, &mut report);
    api.authorizers = schemes.authorizers.clone();
    let mut cors_from_options = operation::CorsFold::default();
    let examined = operation::paths(&document, &schemes, &mut api, &mut cors_from_options, &mut report);
    let cors_from_extension = api.cors.is_some();
    if api.cors.is_none()
        && let Some(cors) = cors_from_options.finish()
    {
        report.approximated(
            "paths.*.options",
            format!(
                "OPTIONS mock methods answering CORS preflights became the API's CORS policy (origins {:?}, methods {:?}, headers {:?}); \
                 Pylon answers preflights for every path with it",
                cors.allow_origins, cors.allow_methods, cors.allow_headers
            ),
        );
        api.cors = Some(cors);
    }
    // What the admin API would refuse, named by its place in the document;
    // also when something else was refused, so that the report names
    // everything to fix at once: operations refused only for their security
    // are judged too (unsecured, and not kept). An error at a place the
    // importer itself refused, or inside one, adds nothing.
    let mut judged = api.clone();
    let mut route_places = examined.places;
    for (route, at) in examined.unsecured {
        judged.routes.push(route);
        route_places.push(at);
    }
    if let Err(errors) = crate::model::ApiDefinition::validate(judged.clone()) {
        let places = Places {
            dialect: document.dialect,
            routes: &route_places,
            authorizers: &schemes.places,
            cors_from_extension,
            cors_from_options: &cors_from_options,
        };
        let refused_by_importer: Vec<String> = report
            .with(Outcome::Refused)
            .map(|note| note.path.clone())
            .collect();
        for error in errors.errors() {
            let at = places.of(&error.path, &judged);
            let already = refused_by_importer
                .iter()
                .any(|refused| at == *refused || at.starts_with(&format!("{refused}.")));
            if already {
                continue;
            }
            let origin = error
                .path
                .strip_prefix("cors.allow_origins[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| judged.cors.as_ref()?.allow_origins.get(i));
            let detail = match origin {
                Some(origin) => format!("{} ({origin:?}): {}", error.path, error.message),
                None => format!("{}: {}", error.path, error.message),
            };
            report.refused(at, detail);
        }
    }
    if report.has_refusals() {
        return Err(ImportError::Refused(report));
    }
    Ok(Imported { api, report })
}

/// Where in an imported document each part of the API came from, to name
/// what the admin API's validation refuses by its place there.
struct Places<'a> {
    dialect: Dialect,
    /// Route index → its operation (`paths./pets.get`).
    routes: &'a [String],
    /// Authorizer index → its security scheme.
    authorizers: &'a [String],
    /// The CORS policy came from `x-amazon-apigateway-cors`, not from
    /// OPTIONS mocks.
    cors_from_extension: bool,
    cors_from_options: &'a operation::CorsFold,
}

impl Places<'_> {
    /// The place of the field at `path` (a validation error's field path,
    /// `routes[2].integration.uri`) of `api`; `(the API as a whole)` for a
    /// field no single place gave.
    fn of(&self, path: &str, api: &Api) -> String {
        let index = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(i, _)| i.parse::<usize>().ok())
        };
        let field = path.split(['.', '[']).next().unwrap_or(path);
        let place = match field {
            "name" => Some("info.title".to_owned()),
            "description" => Some("info.description".to_owned()),
            "routes" => match index("routes[") {
                Some(i) => self.routes.get(i).cloned(),
                None => Some("paths".to_owned()),
            },
            "authorizers" => index("authorizers[").and_then(|i| self.authorizers.get(i).cloned()),
            "models" => {
                let name = path
                    .strip_prefix("models[")
                    .and_then(|rest| rest.split_once(']'))
                    .and_then(|(name, _)| serde_json::from_str::<String>(name).ok());
                let at = match self.dialect {
                    Dialect::Swagger2 => "definitions",
                    Dialect::OpenApi3 => "components.schemas",
                };
                name.map(|name| format!("{at}.{name}"))
            }
            "gateway_responses" => index("gateway_responses[")
                .and_then(|i| api.gateway_responses.get(i))
                .map(|response| format!("x-amazon-apigateway-gateway-responses.{}", response.r#type)),
            "resource_policy" => Some("x-amazon-apigateway-policy".to_owned()),
            "endpoint_type" => Some("x-amazon-apigateway-endpoint-configuration".to_owned()),
            "cors" => Some(self.cors(path, api)),
            _ => None,
        };
        place.unwrap_or_else(|| "(the API as a whole)".to_owned())
    }

    /// A `cors.*` field's place: the extension's field, or the OPTIONS
    /// method that allowed an origin.
    fn cors(&self, path: &str, api: &Api) -> String {
        let field = path
            .strip_prefix("cors.")
            .and_then(|rest| rest.split('[').next())
            .unwrap_or("");
        if self.cors_from_extension {
            let name = match field {
                "allow_origins" => "allowOrigins",
                "allow_methods" => "allowMethods",
                "allow_headers" => "allowHeaders",
                "expose_headers" => "exposeHeaders",
                "max_age_seconds" => "maxAge",
                "allow_credentials" => "allowCredentials",
                _ => return "x-amazon-apigateway-cors".to_owned(),
            };
            return format!("x-amazon-apigateway-cors.{name}");
        }
        path.strip_prefix("cors.allow_origins[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| api.cors.as_ref()?.allow_origins.get(i))
            .and_then(|origin| self.cors_from_options.place_of_origin(origin))
            .map_or_else(|| "paths.*.options".to_owned(), str::to_owned)
    }
}

/// A document Pylon exported: the definition it carries in `x-pylon-api`
/// and each operation's `x-pylon-route`, taken as they are (the rest of the
/// document describes them for other tools).
fn import_exported(
    root: &Map<String, Value>,
    pylon: &Value,
    dialect: Dialect,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut report = Report::default();
    let mut api: Api = match serde_json::from_value(pylon.clone()) {
        Ok(api) => api,
        Err(e) => {
            report.refused("x-pylon-api", format!("not a Pylon API definition: {e}"));
            return Err(ImportError::Refused(report));
        }
    };
    if !api.routes.is_empty() {
        report.refused(
            "x-pylon-api.routes",
            "routes travel on their operations (x-pylon-route), not in x-pylon-api: the document was edited",
        );
    }
    api.routes.clear();
    if let Some(name) = &options.api_name {
        api.name = name.clone();
    }
    report.mapped("x-pylon-api", "the API's definition as Pylon exported it");
    if dialect != Dialect::OpenApi3 {
        report.approximated("swagger", "a Pylon export is OpenAPI 3");
    }
    let mut places = Vec::new();
    if let Some(paths) = root.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (key, operation) in item {
                let method = if key == "x-amazon-apigateway-any-method" {
                    "ANY".to_owned()
                } else if operation::METHODS.contains(&key.as_str()) {
                    key.to_ascii_uppercase()
                } else {
                    continue;
                };
                let at = format!("paths.{path}.{key}");
                match operation.get("x-pylon-route").map(|r| serde_json::from_value::<pylon_proto::config::v1::Route>(r.clone())) {
                    Some(Ok(route)) if route.path == *path && route.method == method => {
                        // The readable parts must say what the route does:
                        // a reviewer reads them, the import takes the route.
                        let claimed = operation.get("security").filter(|s| !s.as_array().is_some_and(Vec::is_empty));
                        if claimed != export::security_of(&route).as_ref() {
                            report.refused(
                                format!("{at}.security"),
                                "does not match the authorization in x-pylon-route: the document was edited",
                            );
                            continue;
                        }
                        if let Some(aws) = operation.get("x-amazon-apigateway-integration") {
                            let uri = route.integration.as_ref().map(|i| i.uri.as_str()).unwrap_or("");
                            if aws.get("uri").and_then(Value::as_str).is_some_and(|u| u != uri) {
                                report.refused(
                                    format!("{at}.x-amazon-apigateway-integration.uri"),
                                    "does not match the integration in x-pylon-route: the document was edited",
                                );
                                continue;
                            }
                            report.approximated(
                                format!("{at}.x-amazon-apigateway-integration"),
                                "not read: x-pylon-route is what is imported",
                            );
                        }
                        report.mapped(format!("{at}.x-pylon-route"), "the route as Pylon exported it");
                        api.routes.push(route);
                        places.push(at);
                    }
                    Some(Ok(route)) => report.refused(
                        format!("{at}.x-pylon-route"),
                        format!("is the route {} {}, not {method} {path}: the document was edited", route.method, route.path),
                    ),
                    Some(Err(e)) => report.refused(format!("{at}.x-pylon-route"), format!("not a Pylon route: {e}")),
                    None => report.refused(
                        &at,
                        "an operation without x-pylon-route in a document with x-pylon-api: export it again from Pylon, or remove x-pylon-api to import the AWS extensions",
                    ),
                }
            }
        }
    }
    if report.has_refusals() {
        return Err(ImportError::Refused(report));
    }
    match crate::model::ApiDefinition::validate(api) {
        Ok(valid) => Ok(Imported {
            api: valid.into_proto(),
            report,
        }),
        Err(errors) => {
            for error in errors.errors() {
                report.refused("x-pylon-api", format!("{}: {}", error.path, error.message));
            }
            Err(ImportError::Refused(report))
        }
    }
}

/// JSON is read as YAML (a superset), so a key given twice is refused in
/// both rather than the last one silently winning.
fn parse(text: &str) -> Result<Value, ImportError> {
    crate::model::check_nesting(text).map_err(ImportError::Unreadable)?;
    let yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| ImportError::Unreadable(e.to_string()))?;
    Ok(cfn::from_yaml(yaml))
}

/// `info.title` as a DNS label: `Pet Store (v2)` → `pet-store-v2`.
pub fn dns_label(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn name_and_describe(doc: &Document<'_>, api: &mut Api, report: &mut Report) {
    let info = doc.root.get("info");
    let title = info
        .and_then(|i| i.get("title"))
        .and_then(Value::as_str)
        .unwrap_or("");
    api.name = match &doc.options.api_name {
        Some(name) => name.clone(),
        None => dns_label(title),
    };
    let unresolved = cfn::placeholders(title);
    // A CloudFormation function left in the title was reported already.
    let wrapped = info.and_then(|i| i.get("title")).is_some_and(Value::is_object);
    if doc.options.api_name.is_none() && wrapped {
        api.name.clear();
    } else if doc.options.api_name.is_none() && !unresolved.is_empty() {
        api.name.clear();
        report.refused(
            "info.title",
            format!(
                "the title {title:?} holds unresolved placeholders{}: give --api NAME, or --set-var for them",
                unresolved
                    .iter()
                    .map(|p| format!(" ${{{p}}}"))
                    .collect::<String>()
            ),
        );
    } else if api.name.is_empty() {
        report.refused("info.title", "no title to name the API after: give --api NAME");
    } else if doc.options.api_name.is_none() {
        report.mapped("info.title", format!("API name {:?}", api.name));
    }
    if let Some(description) = info.and_then(|i| i.get("description")).and_then(Value::as_str) {
        if description.chars().count() > 1024 {
            api.description = description.chars().take(1024).collect();
            report.approximated("info.description", "cut to 1024 characters");
        } else {
            api.description = description.to_owned();
            report.mapped("info.description", "description");
        }
    }
    match doc.dialect {
        Dialect::Swagger2 => {
            if let Some(base) = doc.root.get("basePath").and_then(Value::as_str)
                && base != "/"
            {
                report.approximated(
                    "basePath",
                    format!("{base:?} is not part of the routes (AWS's default, basepath=ignore); map it with a domain's base path"),
                );
            }
        }
        Dialect::OpenApi3 => {
            if doc.root.get("servers").is_some() {
                report.approximated(
                    "servers",
                    "server URLs are not part of the routes (AWS's default, basepath=ignore); map a base path with a domain",
                );
            }
        }
    }
    if doc
        .root
        .get("x-amazon-apigateway-route-selection-expression")
        .is_some()
    {
        report.refused(
            "x-amazon-apigateway-route-selection-expression",
            "WebSocket API import is not supported yet: define the routes in Pylon's YAML",
        );
    }
}

fn root_extensions(doc: &Document<'_>, api: &mut Api, report: &mut Report) {
    for (key, value) in doc.root {
        if !key.starts_with("x-") {
            continue;
        }
        if !ROOT_EXTENSIONS.contains(&key.as_str()) {
            if key.starts_with("x-amazon-apigateway-") {
                report.refused(key.as_str(), "an AWS extension the importer does not know");
            } else {
                report.approximated(key.as_str(), "not an AWS extension: not imported");
            }
            continue;
        }
        match key.trim_start_matches("x-amazon-apigateway-") {
            "gateway-responses" => api.gateway_responses = gateway_responses(value, report),
            "cors" => api.cors = Some(cors(value, report)),
            "binary-media-types" => report.approximated(
                key.as_str(),
                "Pylon passes bodies through as bytes whatever their media type; templates and mappings read bodies as UTF-8 text",
            ),
            "endpoint-configuration" => endpoint_configuration(key, value, api, report),
            "policy" => api.resource_policy = policy(value, report),
            "api-key-source" => match value.as_str() {
                Some("HEADER") | None => report.mapped(key.as_str(), "API keys are read from X-API-Key"),
                Some(other) => report.refused(
                    key.as_str(),
                    format!("API keys from {other} (an authorizer's usageIdentifierKey) are not supported: only the X-API-Key header"),
                ),
            },
            "documentation" => report.approximated(key.as_str(), "documentation parts are not imported"),
            "minimum-compression-size" => report.approximated(key.as_str(), "Pylon does not compress responses"),
            "importexport-version" | "tag-value" => report.approximated(key.as_str(), "not needed by Pylon"),
            "disable-execute-api-endpoint" => report.approximated(
                key.as_str(),
                "Pylon serves every API on its base domain and on mapped domains; restrict with a resource policy",
            ),
            // Read by the operations and the WebSocket check.
            _ => {}
        }
    }
    if doc.dialect == Dialect::OpenApi3
        && let Some(servers) = doc.root.get("servers").and_then(Value::as_array)
    {
        for (i, server) in servers.iter().enumerate() {
            if let Some(configuration) = server.get("x-amazon-apigateway-endpoint-configuration") {
                endpoint_configuration(
                    &format!("servers[{i}].x-amazon-apigateway-endpoint-configuration"),
                    configuration,
                    api,
                    report,
                );
            }
        }
    }
}

fn endpoint_configuration(at: &str, value: &Value, api: &mut Api, report: &mut Report) {
    if let Some(types) = value.get("types").and_then(Value::as_array) {
        let first = types.first().and_then(Value::as_str).unwrap_or("");
        let kind = match first {
            "PRIVATE" => Some(api::EndpointType::Private),
            "EDGE" => Some(api::EndpointType::Edge),
            "REGIONAL" => Some(api::EndpointType::Regional),
            _ => None,
        };
        match kind {
            Some(kind) => {
                api.endpoint_type = kind as i32;
                report.mapped(format!("{at}.types"), format!("endpoint type {first}"));
            }
            None => report.refused(format!("{at}.types"), format!("unknown endpoint type {first:?}")),
        }
    }
    if value.get("vpcEndpointIds").is_some() {
        report.approximated(
            format!("{at}.vpcEndpointIds"),
            "VPC endpoints are an AWS network construct: reach Pylon's listener through your own network instead",
        );
    }
    if value.get("disableExecuteApiEndpoint").is_some() {
        report.approximated(format!("{at}.disableExecuteApiEndpoint"), "not needed by Pylon");
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn cors(value: &Value, report: &mut Report) -> Cors {
    let at = "x-amazon-apigateway-cors";
    let cors = Cors {
        allow_origins: strings(value.get("allowOrigins")),
        allow_methods: strings(value.get("allowMethods")),
        allow_headers: strings(value.get("allowHeaders")),
        expose_headers: strings(value.get("exposeHeaders")),
        max_age_seconds: value
            .get("maxAge")
            .and_then(Value::as_u64)
            .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
        allow_credentials: value
            .get("allowCredentials")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    report.mapped(at, "the API's CORS policy");
    cors
}

fn gateway_responses(value: &Value, report: &mut Report) -> Vec<GatewayResponse> {
    let mut out = Vec::new();
    let Some(map) = value.as_object() else {
        return out;
    };
    for (kind, response) in map {
        let at = format!("x-amazon-apigateway-gateway-responses.{kind}");
        if crate::GatewayResponseType::parse(kind).is_none() {
            report.refused(&at, format!("Pylon has no gateway response type {kind}"));
            continue;
        }
        let mut headers = BTreeMap::new();
        let mut ok = true;
        if let Some(parameters) = response.get("responseParameters").and_then(Value::as_object) {
            for (target, source) in parameters {
                let name = target.strip_prefix("gatewayresponse.header.");
                let literal = source.as_str().and_then(template::literal);
                match (name, literal) {
                    (Some(name), Some(literal)) => {
                        headers.insert(name.to_owned(), literal);
                    }
                    _ => {
                        ok = false;
                        report.refused(
                            format!("{at}.responseParameters.{target}"),
                            "only static header values ('value') are supported in gateway responses",
                        );
                    }
                }
            }
        }
        let mut body_template = String::new();
        if let Some(templates) = response.get("responseTemplates").and_then(Value::as_object) {
            match template::pick_one(&format!("{at}.responseTemplates"), templates, report) {
                Some(text) => match template::gateway_response(&text) {
                    Ok(converted) => body_template = converted,
                    Err(why) => {
                        ok = false;
                        report.refused(format!("{at}.responseTemplates"), why);
                    }
                },
                None => ok = false,
            }
        }
        let status_code = response
            .get("statusCode")
            .and_then(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .or_else(|| s.as_u64().map(|n| n.to_string()))
            })
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if ok {
            report.mapped(&at, "gateway response");
            out.push(GatewayResponse {
                r#type: kind.clone(),
                status_code,
                headers: headers.into_iter().collect(),
                body_template,
            });
        }
    }
    out
}

/// `x-amazon-apigateway-policy`: source-IP conditions become the API's
/// resource policy; anything else is refused (dropping a condition would
/// open the API wider than AWS did).
fn policy(value: &Value, report: &mut Report) -> Option<ResourcePolicy> {
    let at = "x-amazon-apigateway-policy";
    let statements = match value.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => {
            report.refused(at, "no Statement");
            return None;
        }
    };
    let mut policy = ResourcePolicy::default();
    let mut ok = true;
    for (i, statement) in statements.iter().enumerate() {
        let here = format!("{at}.Statement[{i}]");
        let effect = statement.get("Effect").and_then(Value::as_str).unwrap_or("");
        let principal_any = match statement.get("Principal") {
            Some(Value::String(s)) => s == "*",
            Some(Value::Object(p)) => p.get("AWS").and_then(Value::as_str) == Some("*"),
            _ => false,
        };
        if !principal_any {
            ok = false;
            report.refused(
                format!("{here}.Principal"),
                "only Principal \"*\" can be expressed (Pylon has no AWS principals)",
            );
            continue;
        }
        let resources = strings(statement.get("Resource"));
        if resources
            .iter()
            .any(|r| !(r.ends_with("/*") && r.matches('/').count() <= 1 || r == "*"))
        {
            ok = false;
            report.refused(
                format!("{here}.Resource"),
                format!("{resources:?}: only a whole-API resource (execute-api:/*) can be expressed"),
            );
            continue;
        }
        let Some(conditions) = statement.get("Condition").and_then(Value::as_object) else {
            if effect == "Deny" {
                ok = false;
                report.refused(&here, "an unconditional Deny would refuse every caller");
            }
            continue;
        };
        for (operator, condition) in conditions {
            let ips = condition.get("aws:SourceIp").map(|v| strings(Some(v)));
            match (effect, operator.as_str(), ips) {
                ("Allow", "IpAddress", Some(ips)) | ("Deny", "NotIpAddress", Some(ips)) => {
                    policy.allow_cidrs.extend(ips.into_iter().map(cidr));
                }
                ("Deny", "IpAddress", Some(ips)) => policy.deny_cidrs.extend(ips.into_iter().map(cidr)),
                _ => {
                    ok = false;
                    report.refused(
                        format!("{here}.Condition.{operator}"),
                        "only aws:SourceIp conditions (IpAddress, NotIpAddress) have a Pylon equivalent; remove the condition or express it as addresses",
                    );
                }
            }
        }
    }
    if !ok {
        return None;
    }
    report.mapped(at, "resource policy (source addresses)");
    Some(policy)
}

/// `10.0.0.1` → `10.0.0.1/32`.
fn cidr(address: String) -> String {
    if address.contains('/') {
        address
    } else if address.contains(':') {
        format!("{address}/128")
    } else {
        format!("{address}/32")
    }
}

/// `definitions` (Swagger 2) or `components.schemas` (OpenAPI 3) as the
/// API's models, with local `$ref`s inlined.
fn models(doc: &Document<'_>, report: &mut Report) -> BTreeMap<String, pbjson_types::Struct> {
    let (at, schemas) = match doc.dialect {
        Dialect::Swagger2 => ("definitions", doc.root.get("definitions")),
        Dialect::OpenApi3 => (
            "components.schemas",
            doc.root.get("components").and_then(|c| c.get("schemas")),
        ),
    };
    let mut out = BTreeMap::new();
    let Some(schemas) = schemas.and_then(Value::as_object) else {
        return out;
    };
    for (name, schema) in schemas {
        let here = format!("{at}.{name}");
        match inline(doc, schema, &mut BTreeSet::new()) {
            Ok(schema) => match serde_json::from_value::<pbjson_types::Struct>(schema) {
                Ok(schema) => {
                    out.insert(name.clone(), schema);
                    report.mapped(here, format!("model {name}"));
                }
                Err(e) => report.refused(here, format!("not a JSON object schema: {e}")),
            },
            Err(why) => report.refused(here, why),
        }
    }
    out
}

/// A schema with its local `$ref`s replaced by what they point at.
pub(crate) fn inline(
    doc: &Document<'_>,
    schema: &Value,
    seen: &mut BTreeSet<String>,
) -> Result<Value, String> {
    match schema {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                if !reference.starts_with('#') {
                    // AWS's own model URLs (https://apigateway.amazonaws.com/restapis/ID/models/NAME).
                    let name = reference.rsplit('/').next().unwrap_or("");
                    let local = match doc.dialect {
                        Dialect::Swagger2 => format!("#/definitions/{name}"),
                        Dialect::OpenApi3 => format!("#/components/schemas/{name}"),
                    };
                    if doc.pointer(&local).is_none() {
                        return Err(format!("$ref {reference:?}: not in this document"));
                    }
                    return inline(doc, &serde_json::json!({"$ref": local}), seen);
                }
                if !seen.insert(reference.to_owned()) {
                    return Err(format!(
                        "$ref {reference:?} refers to itself: recursive models cannot be inlined"
                    ));
                }
                let target = doc
                    .pointer(reference)
                    .ok_or_else(|| format!("$ref {reference:?}: not in this document"))?;
                let result = inline(doc, target, seen);
                seen.remove(reference);
                return result;
            }
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), inline(doc, v, seen)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| inline(doc, v, seen))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests;
