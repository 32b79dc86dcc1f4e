//! A config snapshot compiled for serving: per API and stage, the deployed
//! (and canary) definitions as route tables, gateway responses, and the
//! custom domains with their base-path mappings and certificates.
//!
//! Compiling validates each definition with the same model the control plane
//! used ([`pylon_common::model`]) and reports every problem; a snapshot that
//! does not compile is rejected whole and the previous one keeps serving. The
//! result is immutable and swapped atomically (readers never lock).

pub mod access_log;
pub mod auth;
pub mod cache;
pub mod integration;
pub mod limits;
pub mod policy;
pub mod routes;
pub mod validation;
pub mod websocket;

use crate::meters::{Meters, RouteMeter};
use foldhash::{HashMap, HashMapExt};
use http::{HeaderName, HeaderValue, StatusCode};
use integration::CompiledIntegration;
use pylon_common::GatewayResponseType;
use pylon_common::model::mapping::{Mapping, Side, compile_mappings};
use pylon_common::model::{ApiDefinition, PathTemplate, StageConfig};
pub use pylon_proto::config::v1::integration::PassthroughBehavior as Passthrough;
use pylon_proto::config::v1::{Deployment, api::Protocol};
use pylon_proto::publish::v1::ConfigSnapshot;
use routes::RouteTable;
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything a node serves, as of one config version. Cloning copies
/// pointers.
#[derive(Clone, Default)]
pub struct CompiledConfig {
    pub version: u64,
    pub digest: [u8; 32],
    /// The cluster that published it (empty: not named, or from before ids).
    pub cluster_id: String,
    /// Why the node serves what it serves against the usual rules (another
    /// cluster's config adopted, a cluster that went back), reported to the
    /// control plane with every ACK until the node restarts; empty normally.
    pub warning: String,
    apis: HashMap<String, CompiledApi>,
    domains: HashMap<String, CompiledDomain>,
    /// Server certificates of custom domains, by host name.
    pub certificates: HashMap<String, Arc<CertifiedKey>>,
    /// Client-certificate verifiers of mutual-TLS custom domains, by host name.
    pub client_verifiers: HashMap<String, Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Every API key, by the SHA-256 of the key (for grants that do not go
    /// through a usage plan, such as `@connections`).
    api_keys: HashMap<[u8; 32], KnownKey>,
}

/// An API key as the whole snapshot knows it.
#[derive(Clone, Debug)]
pub struct KnownKey {
    pub id: Arc<str>,
    pub enabled: bool,
}

impl std::fmt::Debug for CompiledConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledConfig")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct CompiledApi {
    stages: HashMap<String, Arc<CompiledStage>>,
}

pub struct CompiledStage {
    pub api: Arc<str>,
    pub name: Arc<str>,
    pub main: Arc<Target>,
    pub canary: Option<Canary>,
    /// The API keys of the usage plans attached to this stage, by the
    /// SHA-256 of the key.
    pub api_keys: HashMap<[u8; 32], StageKey>,
    pub limits: limits::StageLimits,
    /// `None`: the stage does not cache responses.
    pub cache: Option<cache::StageCache>,
    pub tracing: StageTracing,
    /// Each route's meter (counts and metric dimensions), bound once per
    /// snapshot.
    pub meters: HashMap<String, Arc<RouteMeter>>,
    /// The meters of requests that matched no route, by method dimension
    /// ([`crate::meters::METHODS`]), bound at the first such request.
    pub unmatched: [std::sync::OnceLock<Arc<RouteMeter>>; crate::meters::METHODS.len()],
    /// The stage's access-log line, compiled (the default JSON object when
    /// the stage names no format).
    pub access_log: access_log::AccessLogFormat,
    /// WebSocket stages: the connections' limits.
    pub sockets: websocket::SocketLimits,
    /// Request header names with underscores reach backends.
    pub allow_underscores_in_headers: bool,
}

/// The request header carrying an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What a request presents in [`API_KEY_HEADER`].
#[derive(Clone, Copy, Debug)]
pub enum PresentedKey<'a> {
    /// No such header, or one empty value.
    Absent,
    One(&'a http::HeaderValue),
    /// More than one header line: ambiguous (a backend may read another
    /// line than the gateway did), so never taken as any of them.
    Several,
}

/// The API key `headers` present.
pub fn presented_key(headers: &http::HeaderMap) -> PresentedKey<'_> {
    let mut values = headers.get_all(API_KEY_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => PresentedKey::Absent,
        (Some(_), Some(_)) => PresentedKey::Several,
        (Some(value), None) if value.is_empty() => PresentedKey::Absent,
        (Some(value), None) => PresentedKey::One(value),
    }
}

impl CompiledStage {
    /// The key of this stage's usage plans that `presented` (an
    /// `x-api-key` value) is, enabled or not: hashed with SHA-256 and found
    /// by that digest, so the time taken depends on the digest only.
    pub fn api_key_presented(&self, presented: &http::HeaderValue) -> Option<&StageKey> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        self.api_keys.get(&digest)
    }
}

/// Whether a stage's requests are traced, and how many without a parent.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTracing {
    pub enabled: bool,
    /// `None`: the node's default ratio.
    pub sample_ratio: Option<f64>,
}

/// An API key as a stage sees it.
#[derive(Clone, Debug)]
pub struct StageKey {
    pub id: Arc<str>,
    /// The SHA-256 of the key (its index in [`CompiledStage::api_keys`]).
    pub digest: [u8; 32],
    pub enabled: bool,
    pub usage_plan: String,
    pub limits: Arc<limits::KeyLimits>,
}

pub struct Canary {
    pub target: Arc<Target>,
    /// 0.0..=100.0
    pub percent: f64,
    pub sticky: Option<StickyKey>,
}

/// What keeps one client on one side of a canary split.
#[derive(Debug, PartialEq)]
pub enum StickyKey {
    Header(HeaderName),
    Query(String),
    Cookie(String),
    SourceIp,
}

/// One side of a stage: a deployment with the stage variables it sees.
pub struct Target {
    pub deployment_id: Arc<str>,
    /// `deployment_id` as the `x-pylon-deployment` header value.
    pub deployment_header: HeaderValue,
    pub is_canary: bool,
    pub variables: BTreeMap<String, String>,
    pub definition: Arc<CompiledDefinition>,
}

/// A deployed API definition, compiled once even when several stages serve it.
pub struct CompiledDefinition {
    pub routes: RouteTable,
    pub responses: GatewayResponses,
    pub policy: policy::ApiPolicy,
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// The routes' body templates, named `routes[i].request|response`.
    pub templates: minijinja::Environment<'static>,
    /// The same, for integrations whose templates are Velocity.
    pub velocity: HashMap<String, Arc<Vec<pylon_common::vtl::Node>>>,
    /// A WEBSOCKET API's routes by route key (`$connect`, `sendmessage`, …).
    pub websocket: Option<Arc<websocket::WebSocketApi>>,
}

/// What a route does besides its integration, in request order.
#[derive(Debug, Default)]
pub struct RouteSettings {
    pub auth: auth::RouteAuth,
    pub validation: Option<validation::CompiledValidation>,
    pub request_mappings: Vec<Mapping>,
    pub response_mappings: Vec<Mapping>,
    /// Names in [`CompiledDefinition::templates`].
    pub request_template: Option<String>,
    pub response_template: Option<String>,
    /// Request templates by media type (lowercase), and what a request
    /// whose media type has none gets.
    pub request_templates: Vec<(String, String)>,
    pub passthrough: Passthrough,
    /// How the backend's answer becomes the client's, by its status code.
    pub integration_responses: Vec<integration::CompiledResponse>,
    /// Validation, a mapping or a template needs the whole request body.
    pub reads_body: bool,
    /// A mapping or template needs the whole response body.
    pub reads_response_body: bool,
    pub cache: Option<cache::RouteCacheSettings>,
}

impl RouteSettings {
    /// Whether the response phase changes the integration's answer
    /// (response mappings, a response template or integration responses).
    pub fn transforms_response(&self) -> bool {
        !self.response_mappings.is_empty()
            || self.response_template.is_some()
            || !self.integration_responses.is_empty()
    }
}

/// An API's customised gateway responses.
pub struct GatewayResponses {
    by_type: HashMap<GatewayResponseType, CustomResponse>,
    /// Body templates written in minijinja, named by response type.
    pub templates: minijinja::Environment<'static>,
}

impl Default for GatewayResponses {
    fn default() -> Self {
        GatewayResponses {
            by_type: HashMap::new(),
            templates: pylon_common::model::template::environment(),
        }
    }
}

impl std::fmt::Debug for GatewayResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayResponses")
            .field("by_type", &self.by_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct CustomResponse {
    pub status: Option<StatusCode>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<ResponseBody>,
}

/// A gateway response's body template: AWS-style text with
/// `$context.error.message` / `$context.requestId`, or a minijinja template
/// (when it contains `{{` or `{%`), named in [`GatewayResponses::templates`].
#[derive(Debug)]
pub enum ResponseBody {
    Text(String),
    Template(String),
}

impl GatewayResponses {
    /// The customisation for `kind`, else DEFAULT_4XX / DEFAULT_5XX by status
    /// class, as AWS falls back.
    pub fn lookup(&self, kind: GatewayResponseType, status: StatusCode) -> Option<&CustomResponse> {
        self.by_type.get(&kind).or_else(|| {
            if status.is_client_error() {
                self.by_type.get(&GatewayResponseType::Default4xx)
            } else if status.is_server_error() {
                self.by_type.get(&GatewayResponseType::Default5xx)
            } else {
                None
            }
        })
    }
}

#[derive(Clone)]
pub struct CompiledDomain {
    /// (base path without slashes, "" for the root mapping; api; stage),
    /// longest base path first.
    mappings: Vec<(String, String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("config version {version} does not compile: {}", .errors.join("; "))]
pub struct CompileError {
    pub version: u64,
    pub errors: Vec<String>,
}

impl CompiledConfig {
    pub fn stage(&self, api: &str, stage: &str) -> Option<&Arc<CompiledStage>> {
        self.apis.get(api)?.stages.get(stage)
    }

    /// The API key whose SHA-256 is `digest`.
    pub fn api_key(&self, digest: &[u8; 32]) -> Option<&KnownKey> {
        self.api_keys.get(digest)
    }

    pub fn has_api(&self, api: &str) -> bool {
        self.apis.contains_key(api)
    }

    pub fn stage_count(&self) -> usize {
        self.apis.values().map(|a| a.stages.len()).sum()
    }

    /// The API stage a custom domain maps `path` to, and the rest of the path.
    pub fn domain_stage<'a>(&self, host: &str, path: &'a str) -> Option<(&Arc<CompiledStage>, &'a str)> {
        let domain = self.domains.get(host)?;
        for (base, api, stage) in &domain.mappings {
            let rest = if base.is_empty() {
                Some(path)
            } else {
                path.strip_prefix('/')
                    .and_then(|p| p.strip_prefix(base.as_str()))
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            if let Some(rest) = rest {
                return Some((self.stage(api, stage)?, rest));
            }
        }
        None
    }

    /// Whether `host` is a custom domain that requires mutual TLS.
    pub fn requires_client_cert(&self, host: &str) -> bool {
        self.client_verifiers.contains_key(host)
    }

    pub fn has_domain(&self, host: &str) -> bool {
        self.domains.contains_key(host)
    }
}

/// Compiles a snapshot; every problem is reported, prefixed with where it is.
/// A node serves PRIVATE APIs only when `serves_private` (its
/// `endpoint-class` label is `private`); other nodes leave them out.
pub fn compile(
    snapshot: &ConfigSnapshot,
    digest: [u8; 32],
    serves_private: bool,
    meters: &Meters,
) -> Result<CompiledConfig, CompileError> {
    let mut errors = Vec::new();
    let mut config = CompiledConfig {
        version: snapshot.version,
        digest,
        cluster_id: snapshot.cluster_id.clone(),
        ..Default::default()
    };
    let mut definitions: HashMap<(String, String), Arc<CompiledDefinition>> = HashMap::new();
    let mut definition_of = |deployment: &Deployment, errors: &mut Vec<String>| {
        let key = (deployment.api.clone(), deployment.id.clone());
        if let Some(done) = definitions.get(&key) {
            return Some(done.clone());
        }
        match compile_definition(deployment) {
            Ok(definition) => {
                let definition = Arc::new(definition);
                definitions.insert(key, definition.clone());
                Some(definition)
            }
            Err(why) => {
                errors.push(format!("deployment {}/{}: {why}", deployment.api, deployment.id));
                None
            }
        }
    };

    for entry in &snapshot.stages {
        let (Some(stage), Some(deployment)) = (&entry.stage, &entry.deployment) else {
            errors.push("a stage entry without its stage or deployment".into());
            continue;
        };
        let place = format!("stage {}/{}", stage.api, stage.name);
        if let Err(e) = StageConfig::validate(stage.clone()) {
            errors.push(format!("{place}: {e}"));
            continue;
        }
        let Some(definition) = definition_of(deployment, &mut errors) else {
            continue;
        };
        if definition.policy.private && !serves_private {
            continue;
        }
        let main = Arc::new(Target {
            deployment_id: deployment.id.as_str().into(),
            deployment_header: HeaderValue::from_str(&deployment.id)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            is_canary: false,
            variables: stage.variables.clone(),
            definition,
        });
        let canary = match (&stage.canary, &entry.canary_deployment) {
            (Some(settings), Some(canary_deployment)) if settings.percent_traffic > 0.0 => {
                let Some(definition) = definition_of(canary_deployment, &mut errors) else {
                    continue;
                };
                let mut variables = stage.variables.clone();
                variables.extend(settings.stage_variable_overrides.clone());
                Some(Canary {
                    target: Arc::new(Target {
                        deployment_id: canary_deployment.id.as_str().into(),
                        deployment_header: HeaderValue::from_str(&canary_deployment.id)
                            .unwrap_or_else(|_| HeaderValue::from_static("")),
                        is_canary: true,
                        variables,
                        definition,
                    }),
                    percent: settings.percent_traffic,
                    sticky: match sticky_key(&settings.sticky_key) {
                        Ok(sticky) => sticky,
                        Err(why) => {
                            errors.push(format!("{place}: canary.sticky_key: {why}"));
                            continue;
                        }
                    },
                })
            }
            (Some(settings), None) if settings.percent_traffic > 0.0 => {
                errors.push(format!(
                    "{place}: canary deployment {} is missing",
                    settings.deployment_id
                ));
                continue;
            }
            _ => None,
        };
        let stage_route_keys: Vec<String> = route_keys(deployment)
            .chain(entry.canary_deployment.iter().flat_map(route_keys))
            .collect();
        config
            .apis
            .entry(stage.api.clone())
            .or_insert_with(|| CompiledApi {
                stages: HashMap::new(),
            })
            .stages
            .insert(stage.name.clone(), {
                let (api, name): (Arc<str>, Arc<str>) =
                    (stage.api.as_str().into(), stage.name.as_str().into());
                let websocket = main.definition.websocket.is_some();
                Arc::new(CompiledStage {
                    meters: stage_route_keys
                        .iter()
                        .map(String::as_str)
                        .chain(websocket.then_some(WEBSOCKET_REQUESTS).into_iter().flatten())
                        .map(|key| {
                            let method = key.split_once(' ').map_or("", |(method, _)| method);
                            (key.to_owned(), meters.bind(&api, &name, key, method))
                        })
                        .collect(),
                    unmatched: Default::default(),
                    api,
                    name,
                    main,
                    limits: limits::StageLimits::compile(&snapshot.cluster_id, stage, &stage_route_keys),
                    cache: cache::StageCache::compile(&snapshot.cluster_id, stage),
                    tracing: StageTracing {
                        enabled: stage.tracing_enabled,
                        sample_ratio: (stage.tracing_sampling_ratio > 0.0)
                            .then_some(stage.tracing_sampling_ratio),
                    },
                    access_log: access_log::AccessLogFormat::compile(&stage.access_log_format),
                    sockets: websocket::SocketLimits::compile(stage.websocket.as_ref()),
                    allow_underscores_in_headers: stage.allow_underscores_in_headers,
                    canary,
                    api_keys: stage_keys(snapshot, &stage.api, &stage.name),
                })
            });
    }

    for key in &snapshot.api_keys {
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&key.key_hash, &mut hash).is_ok() {
            config.api_keys.insert(
                hash,
                KnownKey {
                    id: key.id.as_str().into(),
                    enabled: key.enabled,
                },
            );
        }
    }

    for domain in &snapshot.domain_names {
        let host = domain.name.to_ascii_lowercase();
        let mut mappings: Vec<(String, String, String)> = domain
            .mappings
            .iter()
            .map(|m| {
                let base = m.base_path.trim_matches('/');
                let base = if base == "(none)" { "" } else { base };
                (base.to_owned(), m.api.clone(), m.stage.clone())
            })
            .collect();
        mappings.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        if !domain.certificate_file.is_empty() {
            match crate::pem::load_certified_key(
                domain.certificate_file.as_ref(),
                domain.private_key_file.as_ref(),
            ) {
                Ok(key) => {
                    config.certificates.insert(host.clone(), key);
                }
                Err(why) => errors.push(format!("domain {}: {why}", domain.name)),
            }
        }
        if !domain.truststore_file.is_empty() {
            match crate::pem::client_verifier(domain.truststore_file.as_ref()) {
                Ok(verifier) => {
                    config.client_verifiers.insert(host.clone(), verifier);
                }
                Err(why) => errors.push(format!("domain {}: {why}", domain.name)),
            }
        }
        config.domains.insert(host, CompiledDomain { mappings });
    }

    if errors.is_empty() {
        Ok(config)
    } else {
        Err(CompileError {
            version: snapshot.version,
            errors,
        })
    }
}

fn compile_definition(deployment: &Deployment) -> Result<CompiledDefinition, String> {
    let mut api = deployment.definition.clone().ok_or("no API definition")?;
    if pylon_common::model::drop_stored_userinfo(&mut api) {
        tracing::warn!(
            api = %deployment.api,
            deployment = %deployment.id,
            "a backend or authorizer URL of this deployment holds userinfo (user:password@), \
             which is never sent and which the admin API now refuses: served without it; \
             redeploy with the credentials in a header mapping"
        );
    }
    let definition = ApiDefinition::validate(api).map_err(|e| e.to_string())?;
    let api = definition.as_proto();
    let authorizers = auth::compile_authorizers(&api.authorizers)?;
    let models = validation::compile_models(api)?;
    let mut templates = pylon_common::model::template::environment();
    let mut velocity_templates = HashMap::new();
    let mut routes = Vec::new();
    if api.protocol() != Protocol::Websocket {
        for (i, route) in api.routes.iter().enumerate() {
            let at = |e: String| format!("routes[{i}].{e}");
            let template = PathTemplate::parse(&route.path).map_err(|e| at(format!("path: {e}")))?;
            let integration = route
                .integration
                .as_ref()
                .ok_or_else(|| at("integration: missing".into()))?;
            let compiled =
                CompiledIntegration::compile(integration).map_err(|e| at(format!("integration.{e}")))?;
            let velocity = integration.template_language
                == pylon_proto::config::v1::integration::TemplateLanguage::Velocity as i32;
            // Every template of the route, by name, in its language.
            let mut add = |name: String, field: String, source: &str| -> Result<String, String> {
                if velocity {
                    let nodes = pylon_common::vtl::parse(source)
                        .map_err(|e| at(format!("{field}: Velocity: {e}")))?;
                    velocity_templates.insert(name.clone(), Arc::new(nodes));
                } else {
                    templates
                        .add_template_owned(name.clone(), source.to_owned())
                        .map_err(|e| at(format!("{field}: {e}")))?;
                }
                Ok(name)
            };
            let mut optional = |kind: &str, source: &str| -> Result<Option<String>, String> {
                if source.is_empty() {
                    return Ok(None);
                }
                add(
                    format!("routes[{i}].{kind}"),
                    format!("integration.{kind}_template"),
                    source,
                )
                .map(Some)
            };
            let request_template = optional("request", &integration.request_template)?;
            let response_template = optional("response", &integration.response_template)?;
            let mut request_templates = Vec::new();
            for (media_type, source) in &integration.request_templates {
                let name = add(
                    format!("routes[{i}].request_templates[{media_type}]"),
                    format!("integration.request_templates[{media_type:?}]"),
                    source,
                )?;
                request_templates.push((media_type.clone(), name));
            }
            let mut integration_responses = Vec::new();
            for (j, response) in integration.responses.iter().enumerate() {
                let mut names = Vec::new();
                for (media_type, source) in &response.response_templates {
                    let name = add(
                        format!("routes[{i}].responses[{j}][{media_type}]"),
                        format!("integration.responses[{j}].response_templates[{media_type:?}]"),
                        source,
                    )?;
                    names.push((media_type.clone(), name));
                }
                integration_responses.push(
                    integration::CompiledResponse::compile(response, names)
                        .map_err(|e| at(format!("integration.responses[{j}].{e}")))?,
                );
            }
            let passthrough =
                Passthrough::try_from(integration.passthrough_behavior).unwrap_or(Passthrough::WhenNoMatch);
            let request_mappings = compile_mappings(&route.request_parameters, Side::Request)
                .map_err(|e| at(format!("request_parameters: {e}")))?;
            let response_mappings = compile_mappings(&route.response_parameters, Side::Response)
                .map_err(|e| at(format!("response_parameters: {e}")))?;
            let validation =
                validation::compile_validation(route.validation.as_ref(), &models).map_err(at)?;
            let reads_body = validation.as_ref().is_some_and(|v| !v.body_models.is_empty())
                || request_mappings.iter().any(Mapping::reads_request_body)
                || request_template.is_some()
                || !request_templates.is_empty();
            let reads_response_body = response_mappings.iter().any(Mapping::reads_response_body)
                || (response_template.is_some() && matches!(compiled, CompiledIntegration::Http { .. }))
                || integration_responses
                    .iter()
                    .any(integration::CompiledResponse::reads_body);
            let settings = RouteSettings {
                auth: auth::compile_route_auth(route.authorization.as_ref(), &authorizers).map_err(at)?,
                validation,
                request_mappings,
                response_mappings,
                request_template,
                response_template,
                request_templates,
                passthrough,
                integration_responses,
                reads_body,
                reads_response_body,
                cache: route
                    .cache
                    .as_ref()
                    .map(cache::RouteCacheSettings::compile)
                    .transpose()
                    .map_err(at)?,
            };
            routes.push((route.method.clone(), template, compiled, settings));
        }
    }
    let routes = RouteTable::build(routes)?;
    let mut responses = GatewayResponses::default();
    for (i, custom) in api.gateway_responses.iter().enumerate() {
        let kind = GatewayResponseType::parse(&custom.r#type)
            .ok_or_else(|| format!("gateway_responses[{i}].type: unknown {}", custom.r#type))?;
        let status = match custom.status_code {
            0 => None,
            code => Some(
                StatusCode::from_u16(code as u16)
                    .map_err(|e| format!("gateway_responses[{i}].status_code: {e}"))?,
            ),
        };
        let mut headers = Vec::new();
        for (name, value) in &custom.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("gateway_responses[{i}].headers: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("gateway_responses[{i}].headers: {e}"))?;
            headers.push((name, value));
        }
        let body = if custom.body_template.is_empty() {
            None
        } else if pylon_common::model::template::is_template(&custom.body_template) {
            let name = kind.as_str().to_owned();
            responses
                .templates
                .add_template_owned(name.clone(), custom.body_template.clone())
                .map_err(|e| format!("gateway_responses[{i}].body_template: {e}"))?;
            Some(ResponseBody::Template(name))
        } else {
            Some(ResponseBody::Text(custom.body_template.clone()))
        };
        responses.by_type.insert(
            kind,
            CustomResponse {
                status,
                headers,
                body,
            },
        );
    }
    let websocket = if api.protocol() == Protocol::Websocket {
        let mut ws_routes = HashMap::new();
        for (i, route) in api.routes.iter().enumerate() {
            let at = |e: String| format!("routes[{i}].{e}");
            let integration = route
                .integration
                .as_ref()
                .ok_or_else(|| at("integration: missing".into()))?;
            let integration =
                CompiledIntegration::compile(integration).map_err(|e| at(format!("integration.{e}")))?;
            let auth = auth::compile_route_auth(route.authorization.as_ref(), &authorizers).map_err(at)?;
            let request_mappings = compile_mappings(&route.request_parameters, Side::Request)
                .map_err(|e| at(format!("request_parameters: {e}")))?;
            ws_routes.insert(
                route.path.clone(),
                websocket::WebSocketRoute {
                    integration,
                    auth,
                    request_mappings,
                },
            );
        }
        let selection = api
            .route_selection_expression
            .strip_prefix("$request.body.")
            .unwrap_or("action")
            .split('.')
            .map(str::to_owned)
            .collect();
        let access = match &api.connections_access {
            None => websocket::Access::default(),
            Some(access) => websocket::Access {
                api_key_ids: access.api_key_ids.iter().cloned().collect(),
                jwt: if access.authorizer.is_empty() {
                    None
                } else {
                    let grant = pylon_proto::config::v1::Authorization {
                        r#type: pylon_proto::config::v1::authorization::Type::Jwt as i32,
                        authorizer: access.authorizer.clone(),
                        scopes: access.scopes.clone(),
                        api_key_required: false,
                    };
                    Some(
                        auth::compile_route_auth(Some(&grant), &authorizers)
                            .map_err(|e| format!("connections_access: {e}"))?,
                    )
                },
            },
        };
        Some(Arc::new(websocket::WebSocketApi {
            selection,
            routes: ws_routes,
            access,
        }))
    } else {
        None
    };
    Ok(CompiledDefinition {
        routes,
        responses,
        policy: policy::ApiPolicy::compile(api)?,
        cors: api.cors.as_ref().map(policy::cors_layer).transpose()?,
        templates,
        velocity: velocity_templates,
        websocket,
    })
}

/// The route keys ("GET /pets/{id}", or a WebSocket route key) a
/// deployment defines, spelled as the route table spells them.
/// Requests to a WebSocket API's stage that its routes need not name, by
/// the route key they are counted under: the upgrade (an API may have no
/// `$connect` route) and the `@connections` API.
const WEBSOCKET_REQUESTS: [&str; 4] = [
    "$connect",
    "GET /@connections/{connectionId}",
    "POST /@connections/{connectionId}",
    "DELETE /@connections/{connectionId}",
];

fn route_keys(deployment: &Deployment) -> impl Iterator<Item = String> + '_ {
    deployment
        .definition
        .iter()
        .flat_map(|api| {
            let websocket = api.protocol() == Protocol::Websocket;
            api.routes.iter().map(move |route| (websocket, route))
        })
        .filter_map(|(websocket, route)| {
            if websocket {
                // WebSocket routes are known by their route key.
                return Some(route.path.clone());
            }
            let template = PathTemplate::parse(&route.path).ok()?;
            Some(format!("{} {template}", route.method))
        })
}

/// The keys of every usage plan attached to `api`/`stage`.
fn stage_keys(snapshot: &ConfigSnapshot, api: &str, stage: &str) -> HashMap<[u8; 32], StageKey> {
    let mut keys = HashMap::new();
    for plan in &snapshot.usage_plans {
        if !plan.api_stages.iter().any(|s| s.api == api && s.stage == stage) {
            continue;
        }
        for key_id in &plan.api_key_ids {
            let Some(key) = snapshot.api_keys.iter().find(|k| &k.id == key_id) else {
                continue;
            };
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&key.key_hash, &mut hash).is_ok() {
                keys.insert(
                    hash,
                    StageKey {
                        id: key.id.as_str().into(),
                        digest: hash,
                        enabled: key.enabled,
                        usage_plan: plan.name.clone(),
                        limits: Arc::new(limits::KeyLimits::compile(
                            &snapshot.cluster_id,
                            plan,
                            &key.id,
                            api,
                            stage,
                        )),
                    },
                );
            }
        }
    }
    keys
}

fn sticky_key(key: &str) -> Result<Option<StickyKey>, String> {
    if key.is_empty() {
        return Ok(None);
    }
    if key == "$context.identity.sourceIp" {
        return Ok(Some(StickyKey::SourceIp));
    }
    if let Some(name) = key.strip_prefix("$request.header.") {
        return HeaderName::from_bytes(name.as_bytes())
            .map(|h| Some(StickyKey::Header(h)))
            .map_err(|e| e.to_string());
    }
    if let Some(name) = key.strip_prefix("$request.querystring.") {
        return Ok(Some(StickyKey::Query(name.to_owned())));
    }
    if let Some(name) = key.strip_prefix("$request.cookie.") {
        return Ok(Some(StickyKey::Cookie(name.to_owned())));
    }
    Err(format!("unsupported key {key}"))
}
