//! One request, phase by phase, in the order they run:
//!
//! ```text
//! admit → address → canary → policy → [CORS preflight] → route → authorize
//!   → throttle → read body (if needed) → validate → cache lookup
//!   → transform → integration → response transform → cache fill
//!   → finish | rescue
//! ```
//!
//! Each phase returns a [`GatewayError`] to stop the request; only
//! [`crate::response::rescue`] turns one into a response. CORS wraps
//! everything from the route on (tower-http's layer): it answers preflights
//! before any authorizer runs and adds its headers to every answer, errors
//! included.

use crate::cache::{self, Flight, Found, Lookup};
use crate::config::integration::CompiledIntegration;
use crate::config::{CompiledConfig, CompiledStage, GatewayResponses, Target};
use crate::context::{Identity, RequestContext};
use crate::error::GatewayError;
use crate::integration::{self, http::Call};
use crate::request::body::ClientBody;
use crate::request::inputs::Inputs;
use crate::request::{address, admit, authorize, canary, policy, throttle, transform, validate};
use crate::response::{self, rescue};
use crate::telemetry::{self, Record, trace};
use crate::{Body, ConnInfo, Gateway, full_body, websocket};
use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry::trace::SpanKind;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tower::{Layer, ServiceExt};

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let request_id = new_request_id();
    let (started, clock) = (SystemTime::now(), Instant::now());
    let config = gateway.config.load_full();
    let (mut parts, body) = request.into_parts();
    // Observed when the answer is ready — or, if the client leaves first
    // (hyper drops this future), as 499 when the guard drops.
    let mut observed = Abandoned {
        gateway: &gateway,
        observed: None,
        clock,
    };
    let (mut response, served_by) = match front(&gateway, &config, &mut parts, &conn) {
        Err((error, target)) => {
            let responses = target.as_ref().map(|t| &t.definition.responses);
            let response = fail(&error, responses, &request_id, &parts.method, &parts.uri);
            (response, target)
        }
        Ok(mut front) => {
            let record = Record {
                request_id: request_id.clone(),
                api: front.stage.api.clone(),
                stage: front.stage.name.clone(),
                deployment: front.target.deployment_id.clone(),
                canary: front.target.is_canary,
                domain: front.authority.host.clone(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                protocol: protocol(parts.version).to_owned(),
                source_ip: front.source_ip.to_string(),
                user_agent: parts
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
                started: Some(started),
                ..Default::default()
            };
            front.trace = telemetry::trace::start(&gateway.telemetry, &front.stage, &parts.headers, &record);
            front.gateway = Some(gateway.clone());
            observed.observed = Some((record, front.trace.clone(), front.stage.clone()));
            let target = front.target.clone();
            let response = match &target.definition.cors {
                None => back(&gateway, &front, parts, body, &conn, &request_id).await,
                Some(cors) => {
                    // The inner service owns what it uses, so its future is 'static.
                    let (front, conn, request_id) = (Arc::new(front), conn.clone(), request_id.clone());
                    let gateway = gateway.clone();
                    let inner = tower::service_fn(move |request: Request<Incoming>| {
                        let (gateway, front, conn, request_id) =
                            (gateway.clone(), front.clone(), conn.clone(), request_id.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            Ok::<_, Infallible>(back(&gateway, &front, parts, body, &conn, &request_id).await)
                        }
                    });
                    match cors.layer(inner).oneshot(Request::from_parts(parts, body)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            };
            (response, Some(target))
        }
    };
    response::finish(&mut response, &request_id, served_by.as_deref());
    if let Some((record, trace, stage)) = observed.observed.take() {
        observe(&gateway, record, trace, &stage, &mut response, clock.elapsed());
    }
    response
}

type Observed = (Record, Option<opentelemetry::Context>, Arc<CompiledStage>);

/// A request of a stage not yet observed: if its future is dropped before
/// the answer (the client closed the connection or reset the stream while
/// the request was at the backend), it is logged and counted as 499, as
/// nginx does.
struct Abandoned<'a> {
    gateway: &'a Gateway,
    observed: Option<Observed>,
    clock: Instant,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some((mut record, trace, stage)) = self.observed.take() {
            let error = GatewayError::ClientBody(crate::request::body::ClientBodyError::Abandoned(
                "the client left before its answer".into(),
            ));
            let (kind, status) = rescue::classify(&error);
            record.status = status.as_u16();
            record.error_type = Some(kind.as_str());
            record.error_message = Some(error.to_string());
            record.latency = self.clock.elapsed();
            self.gateway.telemetry.observe(&record, trace.as_ref(), &stage);
        }
    }
}

/// Metrics, the span's end and the access-log line for a request of a stage.
fn observe(
    gateway: &Gateway,
    mut record: Record,
    trace: Option<opentelemetry::Context>,
    stage: &CompiledStage,
    response: &mut Response<Body>,
    latency: std::time::Duration,
) {
    if let Some(outcome) = response.extensions_mut().remove::<Outcome>() {
        outcome.fill(&mut record);
    }
    record.status = response.status().as_u16();
    record.latency = latency;
    record.response_length = hyper::body::Body::size_hint(response.body()).exact();
    record.cache = match response.headers().get(cache::X_CACHE).map(|v| v.as_bytes()) {
        Some(b"Hit") => Some("Hit"),
        Some(b"Miss") => Some("Miss"),
        Some(b"Bypass") => Some("Bypass"),
        _ => None,
    };
    gateway.telemetry.observe(&record, trace.as_ref(), stage);
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// What the first phases decided.
struct Front {
    stage: Arc<CompiledStage>,
    target: Arc<Target>,
    /// The path below the stage.
    path: String,
    /// What the request was routed on.
    authority: admit::Authority,
    source_ip: IpAddr,
    /// The request's server span, when traced.
    trace: Option<opentelemetry::Context>,
    /// The gateway itself, for work that outlives the request (WebSockets).
    gateway: Option<Arc<Gateway>>,
}

/// What the phases from the route on learned, for telemetry (carried out in
/// the response's extensions).
#[derive(Clone, Default)]
struct Outcome {
    route_key: Option<String>,
    principal_id: Option<String>,
    api_key_id: Option<String>,
    integration_latency: Option<std::time::Duration>,
    error: Option<(&'static str, String)>,
    throttled: bool,
    quota_exceeded: bool,
}

impl Outcome {
    fn fill(self, record: &mut Record) {
        record.route_key = self.route_key;
        record.principal_id = self.principal_id;
        record.api_key_id = self.api_key_id;
        record.integration_latency = self.integration_latency;
        record.throttled = self.throttled;
        record.quota_exceeded = self.quota_exceeded;
        if let Some((kind, message)) = self.error {
            record.error_type = Some(kind);
            record.error_message = Some(message);
        }
    }
}

/// admit → address → canary → policy. On failure, the target when one was
/// chosen (its API's gateway responses apply). The headers leave here as
/// every later phase and the backend may see them.
fn front(
    gateway: &Gateway,
    config: &CompiledConfig,
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
) -> Result<Front, (GatewayError, Option<Arc<Target>>)> {
    let options = &gateway.options;
    let authority = admit::check_headers(parts, &options.limits).map_err(|e| (e, None))?;
    let host = authority.host.as_str();
    let (stage, path) =
        address::resolve(config, &options.base_domain, host, parts.uri.path()).map_err(|e| (e, None))?;
    admit::drop_forbidden_headers(&mut parts.headers, stage.allow_underscores_in_headers);
    // A mutual-TLS domain is served only on a connection that was verified
    // for that very name (not on plain HTTP, not after SNI for another name).
    if config.requires_client_cert(host) && (conn.client_cert.is_none() || conn.sni.as_deref() != Some(host))
    {
        return Err((
            GatewayError::Forbidden {
                reason: format!("{host} requires a client certificate verified for it"),
                insufficient_scope: false,
            },
            None,
        ));
    }
    let source_ip = policy::source_ip(conn.remote.ip(), &parts.headers, &options.trusted_proxies);
    let target = canary::pick(&stage, parts, source_ip);
    if let Err(error) = policy::check(&target.definition.policy, source_ip) {
        return Err((error, Some(target)));
    }
    Ok(Front {
        path: path.to_owned(),
        stage,
        target,
        authority,
        source_ip,
        trace: None,
        gateway: None,
    })
}

/// Everything from the route on; errors are rescued here so CORS headers
/// reach them too.
async fn back(
    gateway: &Gateway,
    front: &Front,
    parts: http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    request_id: &str,
) -> Response<Body> {
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let mut outcome = Outcome::default();
    let mut response = match serve(gateway, front, parts, body, conn, request_id, &mut outcome).await {
        Ok(response) => response,
        Err(error) => {
            outcome.throttled = matches!(error, GatewayError::Throttled { .. });
            outcome.quota_exceeded = matches!(error, GatewayError::QuotaExceeded { .. });
            outcome.error = Some((rescue::classify(&error).0.as_str(), error.to_string()));
            fail(
                &error,
                Some(&front.target.definition.responses),
                request_id,
                &method,
                &uri,
            )
        }
    };
    response.extensions_mut().insert(outcome);
    response
}

async fn serve(
    gateway: &Gateway,
    front: &Front,
    mut parts: http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    request_id: &str,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let (telemetry, trace) = (&gateway.telemetry, front.trace.as_ref());
    let options = &gateway.options;
    let target = &front.target;
    if let Err(error) = admit::check_declared_length(&parts.headers, &options.limits) {
        admit::linger(body);
        return Err(error);
    }
    let body = ClientBody::new(body, options.body_read_timeout, options.limits.max_body_bytes);
    if let Some(api) = &target.definition.websocket {
        if let Some(id) = front.path.strip_prefix(websocket::manage::PREFIX) {
            outcome.route_key = Some(format!("{} /@connections/{{connectionId}}", parts.method));
            let mut ctx = context(front, &parts, conn, request_id, "@connections");
            // The grant is the stage's own deployment's, whichever side of a
            // canary split this request fell on.
            let main = front.stage.main.definition.websocket.as_ref().unwrap_or(api);
            let response = websocket::manage::serve(
                gateway,
                &front.stage,
                main,
                &parts,
                body.into_inner(),
                &mut ctx,
                id,
            )
            .await;
            outcome.api_key_id = ctx.identity.api_key_id;
            outcome.principal_id = ctx.authorizer.principal_id;
            return response;
        }
        drop(body);
        return connect_websocket(gateway, front, api, parts, conn, request_id, outcome).await;
    }
    let matched = target
        .definition
        .routes
        .find(&parts.method, &front.path)
        .ok_or(GatewayError::NoRoute)?;
    let route = matched.route;
    let settings = &route.settings;
    outcome.route_key = Some(route.key.clone());
    let mut ctx = context(front, &parts, conn, request_id, &route.key);
    let forwarding = integration::http::Forwarding::new(&parts.headers, conn, &front.authority.value);

    // Authenticate before reading a body: strangers cannot make us buffer.
    let inputs =
        Inputs::new(&parts, &front.path, &matched.params, &target.variables, None).forwarded(&forwarding);
    let key = {
        let _phase = trace::phase(telemetry, trace, "authorize", SpanKind::Internal);
        let key = authorize::run(gateway, &front.stage, &settings.auth, &inputs, &mut ctx).await;
        outcome.principal_id = ctx.authorizer.principal_id.clone();
        outcome.api_key_id = ctx.identity.api_key_id.clone();
        key?
    };
    {
        let _phase = trace::phase(telemetry, trace, "throttle", SpanKind::Internal);
        throttle::check(&gateway.shared, &front.stage, &route.key, key).await?;
    }
    // A GET or HEAD body of no declared length is read whole, so it reaches
    // the backend with one (a client would not otherwise send it along).
    let unframed = matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !hyper::body::Body::is_end_stream(&body);
    let (whole, stream) = if settings.reads_body || unframed {
        (Some(body.read_whole().await?), None)
    } else {
        (None, Some(body))
    };
    let has_body = whole.as_ref().map_or_else(
        || {
            stream
                .as_ref()
                .is_some_and(|b| !hyper::body::Body::is_end_stream(b))
        },
        |w| !w.is_empty(),
    );
    let inputs = Inputs::new(
        &parts,
        &front.path,
        &matched.params,
        &target.variables,
        whole.as_ref(),
    )
    .forwarded(&forwarding);
    if let Some(validation) = &settings.validation {
        let _phase = trace::phase(telemetry, trace, "validate", SpanKind::Internal);
        validate::check(validation, &inputs)?;
    }
    // (A span only for stages that cache.)
    let lookup_phase = front
        .stage
        .cache
        .is_some()
        .then(|| trace::phase(telemetry, trace, "cache", SpanKind::Internal));
    // Mappings first: a response varies by the headers the backend is told.
    let mut mapping = transform::plan(&settings.request_mappings, &inputs, &ctx)?;
    let lookup = cache::plan(
        gateway.cache.can_encrypt(),
        &front.stage,
        target,
        settings.cache.as_ref(),
        &settings.auth,
        &parts,
        has_body,
        &forwarding,
        &front.path,
        &matched.params,
        &ctx,
    )?;
    let mut flight = None;
    // A miss that may be stored keeps the client's headers: a varying
    // response is stored under their values.
    let mut request_headers = None;
    if let Lookup::Use(plan) = &lookup {
        let request = cache::entry::RequestView {
            headers: &parts.headers,
            forwarding: &forwarding,
            changes: mapping.header_changes(),
        };
        if !plan.refresh {
            let flight_key = match gateway.cache.get(plan, request).await {
                Found::Hit(entry) => return Ok(cache::respond(&entry, plan.warning)),
                Found::Miss { flight } => flight,
            };
            match gateway.cache.join(flight_key) {
                Flight::Follower(rx) => {
                    let wait = match &route.integration {
                        CompiledIntegration::Http { timeout, .. } => *timeout,
                        CompiledIntegration::Mock { .. } => DEFAULT_FOLLOW,
                    };
                    // (The leader's answer may be another variant.)
                    if let Some(entry) = cache::follow(rx, wait).await
                        && entry.serves(request, plan.private)
                    {
                        return Ok(cache::respond(&entry, plan.warning));
                    }
                }
                Flight::Leader(guard) => flight = Some(guard),
            }
        }
        request_headers = Some(parts.headers.clone());
    }
    drop(lookup_phase);
    let rendered = settings
        .request_template
        .as_deref()
        .map(|name| transform::render(&target.definition, name, &inputs, &ctx))
        .transpose()?;
    // Response mappings may read the request as the client sent it.
    let transforms_response = !settings.response_mappings.is_empty() || settings.response_template.is_some();
    let original = transforms_response.then(|| copy_parts(&parts));
    let mut outgoing = mapping.apply(&mut parts.headers);
    if rendered.is_some() {
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        outgoing.body = rendered;
    }
    let mut integration_phase = trace::phase(telemetry, trace, "integration", SpanKind::Client);
    if let Some(cx) = integration_phase.context(trace) {
        trace::inject(&cx, &mut parts.headers);
    }
    let integration_started = Instant::now();

    let response = match &route.integration {
        CompiledIntegration::Mock {
            status,
            headers,
            body,
        } => integration::mock::respond(*status, headers, body, target, request_id),
        CompiledIntegration::Http { uri, method, timeout } => {
            integration::check_params(&matched.params)?;
            let call = Call {
                uri: integration::fill(uri, &target.variables, &matched.params),
                method: method.as_ref(),
                timeout: *timeout,
                request_id,
                forwarding: &forwarding,
                query: outgoing.query,
                path: outgoing.path,
            };
            let (body, fault) = match (outgoing.body, &whole, stream) {
                (Some(rendered), _, _) => (full_body(rendered), None),
                (None, Some(whole), _) => (full_body(whole.clone()), None),
                (None, None, Some(stream)) => {
                    let fault = stream.fault();
                    (stream.boxed_unsync(), Some(fault))
                }
                (None, None, None) => (full_body(Bytes::new()), None),
            };
            integration_phase.set(opentelemetry::KeyValue::new("server.address", host_of(uri)));
            integration::http::call(&gateway.client, call, parts, body, fault).await?
        }
    };
    outcome.integration_latency = Some(integration_started.elapsed());
    integration_phase.set(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    ));
    drop(integration_phase);

    // Response phase.
    let response = match original {
        None => response,
        Some(original) => {
            let _phase = trace::phase(telemetry, trace, "response", SpanKind::Internal);
            let inputs = Inputs::new(
                &original,
                &front.path,
                &matched.params,
                &target.variables,
                whole.as_ref(),
            );
            response::transform::apply(
                settings,
                &target.definition,
                response,
                &inputs,
                &ctx,
                options.limits.max_body_bytes,
            )
            .await?
        }
    };
    match lookup {
        Lookup::Off => Ok(response),
        Lookup::Bypass { warning } => {
            let mut response = response;
            cache::mark(&mut response, "Bypass", warning);
            Ok(response)
        }
        Lookup::Use(plan) => {
            let request_headers = request_headers.unwrap_or_default();
            let request = cache::entry::RequestView {
                headers: &request_headers,
                forwarding: &forwarding,
                changes: mapping.header_changes(),
            };
            let (mut response, stored) = gateway.cache.fill(&plan, response, request, flight).await?;
            // A private request whose answer may not be shared went around
            // the cache.
            let what = if stored || !plan.private { "Miss" } else { "Bypass" };
            cache::mark(&mut response, what, plan.warning);
            Ok(response)
        }
    }
}

/// How long a request waits for another one fetching the same cache entry
/// of a MOCK route.
const DEFAULT_FOLLOW: std::time::Duration = std::time::Duration::from_secs(29);

/// A WEBSOCKET API's stage root: `$connect` (authorization, throttling
/// with the stage's connection rate, its integration, which may refuse),
/// then the upgrade; the connection runs in [`websocket::connection::run`].
async fn connect_websocket(
    gateway: &Gateway,
    front: &Front,
    api: &Arc<websocket::WebSocketApi>,
    mut parts: http::request::Parts,
    conn: &ConnInfo,
    request_id: &str,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    if !(front.path.is_empty() || front.path == "/") {
        return Err(GatewayError::NoRoute);
    }
    if !websocket::is_upgrade(&parts) {
        return Err(websocket::refuse_non_upgrade());
    }
    let key = websocket::handshake_key(&parts.headers)?;
    let Some(this) = front.gateway.clone() else {
        return Err(GatewayError::ApiConfiguration("no gateway handle".into()));
    };
    outcome.route_key = Some("$connect".into());
    let mut ctx = context(front, &parts, conn, request_id, "$connect");
    let route = api.routes.get("$connect");
    let forwarding = integration::http::Forwarding::new(&parts.headers, conn, &front.authority.value);
    let inputs = Inputs::new(&parts, &front.path, &[], &front.target.variables, None).forwarded(&forwarding);
    let stage_key = match route {
        Some(route) => {
            let key = authorize::run(gateway, &front.stage, &route.auth, &inputs, &mut ctx).await;
            outcome.principal_id = ctx.authorizer.principal_id.clone();
            outcome.api_key_id = ctx.identity.api_key_id.clone();
            key?
        }
        None => None,
    };
    throttle::check(&gateway.shared, &front.stage, "$connect", stage_key).await?;
    let api_key = stage_key.map(|key| key.digest);
    let session = websocket::connection::Session {
        gateway: this,
        stage: front.stage.clone(),
        target: front.target.clone(),
        api: api.clone(),
        connection_id: websocket::new_connection_id(),
        principal_id: ctx.authorizer.principal_id.clone(),
        api_key,
        api_key_id: ctx.identity.api_key_id.clone(),
        host: front.authority.host.clone(),
        forwarding: forwarding.clone(),
        source_ip: front.source_ip.to_string(),
        user_agent: ctx.identity.user_agent.clone(),
    };
    // (Checked before `$connect` runs: a connection that cannot be
    // upgraded is refused before its backend hears of it.)
    if parts.extensions.get::<hyper::upgrade::OnUpgrade>().is_none() {
        return Err(GatewayError::MalformedRequest(
            "this connection cannot be upgraded",
        ));
    }
    let mut protocol = None;
    if let Some(route) = route {
        let started = Instant::now();
        let handshake = websocket::Handshake {
            inputs: &inputs,
            ctx: &ctx,
        };
        let answer = websocket::connect(gateway, &session, route, handshake, request_id).await;
        outcome.integration_latency = Some(started.elapsed());
        let answer = answer?;
        if !answer.status.is_success() {
            // The integration refused the connection: its answer, not 101.
            let mut refused = Response::new(full_body(answer.body));
            *refused.status_mut() = answer.status;
            let mut headers = answer.headers;
            crate::headers::strip_hop_by_hop(&mut headers);
            // Only the gateway frames the body and says what failed.
            for name in [
                http::header::CONTENT_LENGTH,
                http::HeaderName::from_static(response::CANARY),
                http::HeaderName::from_static(response::ERROR_TYPE),
            ] {
                headers.remove(name);
            }
            *refused.headers_mut() = headers;
            return Ok(refused);
        }
        protocol = websocket::subprotocol(&parts.headers, &answer.headers)?;
    }
    drop(inputs);
    let upgrade =
        parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(GatewayError::MalformedRequest(
                "this connection cannot be upgraded",
            ))?;
    let now = crate::shared::memory::unix_now_ms();
    let (local, inbox) = websocket::hub::Local::new(
        websocket::hub::ConnectionInfo {
            api: front.stage.api.clone(),
            stage: front.stage.name.clone(),
            connected_at: now,
            last_active_at: now,
            source_ip: session.source_ip.clone(),
            user_agent: session.user_agent.clone(),
            api_key_id: session.api_key_id.clone(),
            principal_id: session.principal_id.clone(),
        },
        front.stage.sockets.max_message,
    );
    tokio::spawn(websocket::connection::run(session, upgrade, local, inbox));
    Ok(websocket::switching_protocols(&key, protocol))
}

fn context(
    front: &Front,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    request_id: &str,
    route_key: &str,
) -> RequestContext {
    RequestContext {
        request_id: request_id.to_owned(),
        api_id: front.stage.api.clone(),
        stage: front.stage.name.clone(),
        deployment_id: front.target.deployment_id.clone(),
        domain_name: front.authority.host.clone(),
        http_method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        resource_path: route_key.split_once(' ').map_or(route_key, |(_, p)| p).to_owned(),
        route_key: route_key.to_owned(),
        protocol: format!("{:?}", parts.version),
        request_time_epoch: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        identity: Identity {
            source_ip: front.source_ip.to_string(),
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            api_key_id: None,
            client_cert: conn.client_cert.clone(),
            caller: None,
        },
        authorizer: Default::default(),
    }
}

/// Method, target and headers of a request (what response mappings read).
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    copy.into_parts().0
}

/// Logs a failed request and builds its response.
fn fail(
    error: &GatewayError,
    responses: Option<&GatewayResponses>,
    request_id: &str,
    method: &Method,
    uri: &Uri,
) -> Response<Body> {
    let response = rescue::respond(error, responses, request_id);
    let status = response.status().as_u16();
    if response.status().is_server_error() {
        tracing::warn!(request_id, %method, path = uri.path(), status, error = %error, detail = error.detail(), "request failed");
    } else {
        tracing::debug!(request_id, %method, path = uri.path(), status, error = %error, detail = error.detail(), "request refused");
    }
    response
}

/// The host of an integration URI template, for the client span.
fn host_of(uri: &str) -> String {
    uri.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .unwrap_or("")
        .to_owned()
}

/// A random id in UUID form (8-4-4-4-12 hex digits), unique across nodes.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n: u128 = rand::random();
    let mut id = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        let nibble = ((n >> (124 - 4 * i)) & 0xf) as usize;
        id.push(char::from(HEX[nibble]));
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
