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
use crate::context::{CacheStatus, Identity, RequestContext, RequestId};
use crate::error::GatewayError;
use crate::integration::{self, http::BackendUri, http::Call};
use crate::request::body::ClientBody;
use crate::request::inputs::Inputs;
use crate::request::{address, admit, authorize, canary, policy, throttle, transform, validate};
use crate::response::{self, rescue};
use crate::telemetry::trace;
use crate::{Body, ConnInfo, Gateway, full_body, websocket};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry::trace::SpanKind;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tower::{Layer, ServiceExt};

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let clock = Instant::now();
    let config = gateway.config.load_full();
    let (mut parts, body) = request.into_parts();
    let front = match front(&gateway, &config, &mut parts, &conn) {
        Ok(front) => front,
        Err((error, target)) => {
            let request_id = RequestId::new();
            let responses = target.as_ref().map(|t| &t.definition.responses);
            let mut response = fail(&error, responses, &request_id, &parts.method, &parts.uri);
            response::finish(&mut response, &request_id.header_value(), target.as_deref());
            return response;
        }
    };
    let mut context = context(&front, &parts, &conn);
    context.trace = trace::start(&gateway.telemetry, &front.stage, &parts.headers, &context);
    let request_id = context.request_id.header_value();
    // Observed when the answer is ready (or, when it streams from the
    // backend, when its body ends) — or, if the client leaves first (hyper
    // drops this future), as 499 when the guard drops.
    let mut observed = Observed {
        gateway: &gateway,
        stage: &front.stage,
        ctx: &mut context,
        clock,
        done: false,
    };
    let ctx = &mut *observed.ctx;
    let mut response = match &front.target.definition.cors {
        None => back(&gateway, &front, parts, body, &conn, &request_id, ctx).await,
        Some(cors) => {
            let inner = Once(Some(Back {
                gateway: &gateway,
                front: &front,
                conn: &conn,
                request_id: &request_id,
                ctx,
            }));
            match cors.layer(inner).oneshot(Request::from_parts(parts, body)).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    response::finish(&mut response, &request_id, Some(&front.target));
    if observed.finish(&response) {
        drop(observed);
        let stage = front.stage.clone();
        return response.map(|body| Body::new(ObservedBody::new(body, gateway, stage, context)));
    }
    response
}

/// The context of a request the first phases placed: nothing learnt yet.
fn context(front: &Front, parts: &http::request::Parts, conn: &ConnInfo) -> RequestContext {
    RequestContext {
        request_id: RequestId::new(),
        api_id: front.stage.api.clone(),
        stage: front.stage.name.clone(),
        deployment_id: front.target.deployment_id.clone(),
        canary: front.target.is_canary,
        domain_name: front.host.clone(),
        http_method: parts.method.clone(),
        uri: parts.uri.clone(),
        protocol: protocol(parts.version),
        request_time: SystemTime::now(),
        route_key: None,
        identity: Identity {
            source_ip: front.source_ip,
            user_agent: parts.headers.get(http::header::USER_AGENT).cloned(),
            api_key_id: None,
            client_cert: conn.client_cert.clone(),
            caller: None,
        },
        authorizer: Default::default(),
        trace: None,
        outcome: Default::default(),
    }
}

/// A request whose client left before [`handle`] began: hyper reads the
/// connection once more right after a request's head, and a client that
/// closed — or half-closed together with its request, as `printf … | nc
/// -N` does — ends the connection there. Logged and counted as the
/// client's 499 with its stage, as [`Observed`] does for a client that
/// leaves later and as nginx logs a client that closes while its request
/// waits (neither answers it); as 503 when the node's drain timeout ended
/// it. A request the first phases refuse (an unknown host, a resource
/// policy) is not recorded, as when it is answered. No span is started for
/// it, and its `requestTime` is when the close was seen (the same moment,
/// unless a pipelining client left answers unread).
pub(crate) fn abandoned(gateway: &Gateway, request: Request<Incoming>, conn: &ConnInfo) {
    let config = gateway.config.load();
    let (mut parts, _body) = request.into_parts();
    let Ok(front) = front(gateway, &config, &mut parts, conn) else {
        return;
    };
    let mut context = context(&front, &parts, conn);
    // (As in [`Observed`]'s drop: the node's drain timeout, not the client.)
    let error = if gateway.drain_expired.load(std::sync::atomic::Ordering::Relaxed) {
        GatewayError::ShutDown
    } else {
        GatewayError::ClientBody(crate::request::body::ClientBodyError::Abandoned(
            "the client left before its request was served".into(),
        ))
    };
    rescue::record(&mut context.outcome, &error);
    gateway.telemetry.observe(&context, &front.stage);
}

/// The request's telemetry, owed once: when its answer is ready
/// ([`Observed::finish`]) — or, if its future is dropped first (the client
/// closed the connection or reset the stream while the request was at the
/// backend), as 499 when the guard drops, as nginx does.
struct Observed<'a> {
    gateway: &'a Gateway,
    stage: &'a CompiledStage,
    ctx: &'a mut RequestContext,
    clock: Instant,
    done: bool,
}

impl Observed<'_> {
    /// The answer's status, latency (to its head: AWS's `Latency`) and
    /// length; its metrics; then the span's end and the access-log line —
    /// or, when the body streams from the backend and an access log or a
    /// span will show it, `true`: [`ObservedBody`] gives those two when the
    /// body ends.
    fn finish(&mut self, response: &Response<Body>) -> bool {
        let outcome = &mut self.ctx.outcome;
        outcome.status = response.status().as_u16();
        outcome.latency = self.clock.elapsed();
        let body = response.body();
        outcome.response_length = hyper::body::Body::size_hint(body).exact();
        self.done = true;
        // Metrics count heads. Only the line and the span show what the
        // body's end adds: without them, nothing waits for it.
        let telemetry = &self.gateway.telemetry;
        telemetry.observe_head(self.ctx, self.stage);
        let shown = telemetry.access_log.is_on() || self.ctx.trace.is_some();
        let streams =
            self.ctx.outcome.integration_latency.is_some() && !hyper::body::Body::is_end_stream(body);
        if shown && streams {
            return true;
        }
        telemetry.observe_end(self.ctx, self.stage);
        false
    }
}

/// An answer streaming from a backend, which owes its request's access-log
/// line and span end until it ends (its metrics were counted with its
/// head), as nginx and Envoy log a request when it ends. They then carry
/// the bytes it gave (`responseLength`) and — when the backend's body broke
/// off or went silent past the route's timeout, after the head and its
/// status were sent — the error (`INTEGRATION_FAILURE` or
/// `INTEGRATION_TIMEOUT`). A client that leaves part-way, takes nothing for
/// the send timeout or whose upload fails meanwhile, or a drain timeout
/// that ends the answer, is noted in the error message only.
struct ObservedBody {
    body: Body,
    gateway: Arc<Gateway>,
    stage: Arc<CompiledStage>,
    ctx: RequestContext,
    sent: u64,
    done: bool,
}

/// How a streamed answer ended short.
enum Cut {
    /// The backend's body failed (`stalled`: silent past the timeout).
    Backend {
        message: String,
        stalled: bool,
    },
    /// The client's upload failed while the answer streamed.
    ClientBody(String),
    ClientLeft,
}

impl ObservedBody {
    fn new(
        body: Body,
        gateway: Arc<Gateway>,
        stage: Arc<CompiledStage>,
        ctx: RequestContext,
    ) -> ObservedBody {
        ObservedBody {
            body,
            gateway,
            stage,
            ctx,
            sent: 0,
            done: false,
        }
    }

    fn observe(&mut self, cut: Option<Cut>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let outcome = &mut self.ctx.outcome;
        outcome.response_length = Some(self.sent);
        match cut {
            None => {}
            Some(Cut::Backend { message, stalled }) => {
                let kind = if stalled {
                    pylon_common::GatewayResponseType::IntegrationTimeout
                } else {
                    pylon_common::GatewayResponseType::IntegrationFailure
                };
                outcome.error_type = Some(kind.as_str());
                outcome.error_message = Some(format!("the answer was cut after its head: {message}"));
            }
            Some(Cut::ClientBody(message)) => {
                // The client's fault: no integration error (before the
                // head it is a 4xx of its own).
                outcome.error_message = Some(format!("the answer was cut after its head: {message}"));
            }
            Some(Cut::ClientLeft) => {
                let why = if self
                    .gateway
                    .drain_expired
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    "the node shut down before the answer's end (drain timeout)"
                } else {
                    "the client left, or took nothing for the send timeout, before the answer's end"
                };
                outcome.error_message = Some(why.into());
            }
        }
        self.gateway.telemetry.observe_end(&self.ctx, &self.stage);
    }
}

impl hyper::body::Body for ObservedBody {
    type Data = Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                // Trailers are a body's last frame (a server need not poll
                // after them).
                if frame.is_trailers() || this.body.is_end_stream() {
                    this.observe(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                // The error goes on to the server, which cuts the answer;
                // its text goes to the log.
                let cut = if error.is::<integration::http::ClientBodyBroke>() {
                    Cut::ClientBody(error.to_string())
                } else {
                    Cut::Backend {
                        message: error.to_string(),
                        stalled: error.is::<integration::http::BodyStalled>(),
                    }
                };
                this.observe(Some(cut));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.observe(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before its end: the client (or the connection) went.
        let cut = (!hyper::body::Body::is_end_stream(&self.body)).then_some(Cut::ClientLeft);
        self.observe(cut);
    }
}

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let error = if self
            .gateway
            .drain_expired
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            GatewayError::ShutDown
        } else {
            GatewayError::ClientBody(crate::request::body::ClientBodyError::Abandoned(
                "the client left before its answer".into(),
            ))
        };
        rescue::record(&mut self.ctx.outcome, &error);
        self.ctx.outcome.latency = self.clock.elapsed();
        self.gateway.telemetry.observe(self.ctx, self.stage);
    }
}

/// The CORS layer's inner service: [`back`], called once (a preflight the
/// layer answers never calls it).
struct Once<'a>(Option<Back<'a>>);

struct Back<'a> {
    gateway: &'a Arc<Gateway>,
    front: &'a Front,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
    ctx: &'a mut RequestContext,
}

impl<'a> tower::Service<Request<Incoming>> for Once<'a> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'a>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let taken = self.0.take();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            Ok(match taken {
                Some(Back {
                    gateway,
                    front,
                    conn,
                    request_id,
                    ctx,
                }) => back(gateway, front, parts, body, conn, request_id, ctx).await,
                // (tower's oneshot calls a service once.)
                None => rescue::respond(&GatewayError::NoRoute, None, ""),
            })
        })
    }
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
    /// The request target (the stage path is a part of its path).
    uri: Uri,
    /// Where the path below the stage is in `uri`'s path; `None`: it is `/`.
    path_at: Option<(usize, usize)>,
    /// The host routed on (lower-case, no port).
    host: Arc<str>,
    /// The authority as the client addressed it (`X-Forwarded-Host`).
    forwarded_host: HeaderValue,
    source_ip: IpAddr,
}

impl Front {
    /// The path below the stage, from `/`.
    fn path(&self) -> &str {
        match self.path_at {
            Some((start, end)) => self.uri.path().get(start..end).unwrap_or("/"),
            None => "/",
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
    let host = &*authority.host;
    let full = parts.uri.path();
    let (stage, path) = address::resolve(config, &options.base_domain, host, full).map_err(|e| (e, None))?;
    // The path below the stage is a part of the request's path (or `/`).
    let at = (path.as_ptr() as usize).wrapping_sub(full.as_ptr() as usize);
    let path_at = (at < full.len() && at + path.len() <= full.len()).then_some((at, at + path.len()));
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
        stage,
        target,
        uri: parts.uri.clone(),
        path_at,
        host: authority.host,
        forwarded_host: authority.value,
        source_ip,
    })
}

/// Everything from the route on; errors are rescued here so CORS headers
/// reach them too.
async fn back(
    gateway: &Arc<Gateway>,
    front: &Front,
    parts: http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    ctx: &mut RequestContext,
) -> Response<Body> {
    match serve(gateway, front, parts, body, conn, request_id, ctx).await {
        Ok(response) => response,
        Err(error) => {
            // (The answer's own status is recorded when it leaves.)
            rescue::record(&mut ctx.outcome, &error);
            let mut response = fail(
                &error,
                Some(&front.target.definition.responses),
                &ctx.request_id,
                &ctx.http_method,
                &ctx.uri,
            );
            // A request that reached the cache says what it did there, as
            // its answer would have.
            if let Some(what) = ctx.outcome.cache {
                cache::mark(&mut response, what, ctx.outcome.cache_warning);
            }
            response
        }
    }
}

async fn serve(
    gateway: &Arc<Gateway>,
    front: &Front,
    mut parts: http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, GatewayError> {
    let telemetry = &gateway.telemetry;
    let options = &gateway.options;
    let target = &front.target;
    let path = front.path();
    if let Err(error) = admit::check_declared_length(&parts.headers, &options.limits) {
        admit::linger(body);
        return Err(error);
    }
    let body = ClientBody::new(body, options.body_read_timeout, options.limits.max_body_bytes);
    if let Some(api) = &target.definition.websocket {
        if let Some(id) = path.strip_prefix(websocket::manage::PREFIX) {
            ctx.route_key = Some(format!("{} /@connections/{{connectionId}}", parts.method).into());
            // The grant is the stage's own deployment's, whichever side of a
            // canary split this request fell on.
            let main = front.stage.main.definition.websocket.as_ref().unwrap_or(api);
            // (Boxed, as the upgrade below: their futures would otherwise
            // make every HTTP request's future larger.)
            return Box::pin(websocket::manage::serve(
                gateway,
                &front.stage,
                main,
                &parts,
                body.into_inner(),
                ctx,
                id,
            ))
            .await;
        }
        drop(body);
        return Box::pin(connect_websocket(gateway, front, api, parts, conn, ctx)).await;
    }
    let matched = target
        .definition
        .routes
        .find(&parts.method, path)
        .ok_or(GatewayError::NoRoute)?;
    let route = matched.route;
    let settings = &route.settings;
    ctx.route_key = Some(route.key.clone());
    let forwarding = integration::http::Forwarding::new(&parts.headers, conn, &front.forwarded_host);

    // Authenticate before reading a body: strangers cannot make us buffer.
    let inputs = Inputs::new(&parts, path, &matched.params, &target.variables, None).forwarded(&forwarding);
    let key = {
        let _phase = trace::phase(telemetry, ctx.trace.as_ref(), "authorize", SpanKind::Internal);
        authorize::run(gateway, &front.stage, &settings.auth, &inputs, ctx).await?
    };
    {
        let _phase = trace::phase(telemetry, ctx.trace.as_ref(), "throttle", SpanKind::Internal);
        throttle::check(&gateway.shared, &front.stage, &route.key, key).await?;
    }
    // A GET or HEAD body of no declared length is read whole, so it reaches
    // the backend with one (a client would not otherwise send it along).
    let unframed = matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !hyper::body::Body::is_end_stream(&body);
    let fault = (!settings.reads_body && !unframed).then(|| body.fault());
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
    let inputs =
        Inputs::new(&parts, path, &matched.params, &target.variables, whole.as_ref()).forwarded(&forwarding);
    if let Some(validation) = &settings.validation {
        let _phase = trace::phase(telemetry, ctx.trace.as_ref(), "validate", SpanKind::Internal);
        validate::check(validation, &inputs)?;
    }
    // Refusals that depend on the request alone come before the cache, so
    // a hit and a miss refuse alike.
    if let CompiledIntegration::Http { .. } = &route.integration {
        integration::check_params(&matched.params)?;
    }
    let template = match settings.request_template.as_deref() {
        Some(name) => Some(name),
        None if settings.request_templates.is_empty()
            && settings.passthrough == crate::config::Passthrough::WhenNoMatch =>
        {
            None
        }
        None => crate::config::integration::request_template_for(
            &settings.request_templates,
            settings.passthrough,
            &parts.headers,
        )
        .map_err(GatewayError::UnsupportedMediaType)?,
    };
    // (A span only for stages that cache.)
    let lookup_phase = front
        .stage
        .cache
        .is_some()
        .then(|| trace::phase(telemetry, ctx.trace.as_ref(), "cache", SpanKind::Internal));
    // Mappings first: a response varies by the headers the backend is told.
    let mut mapping = transform::plan(&settings.request_mappings, &inputs, ctx)?;
    let lookup = cache::plan(
        gateway.cache.can_encrypt(),
        &front.stage,
        target,
        settings.cache.as_ref(),
        &settings.auth,
        &parts,
        has_body,
        &forwarding,
        path,
        &matched.params,
        ctx,
    )?;
    // What the cache did is known from here on, for errors too.
    match &lookup {
        Lookup::Off => {}
        Lookup::Bypass { warning } => {
            ctx.outcome.cache = Some(CacheStatus::Bypass);
            ctx.outcome.cache_warning = *warning;
        }
        Lookup::Use(plan) => ctx.outcome.cache_warning = plan.warning,
    }
    // The cache holds the integration's answer; the response phase runs for
    // every caller, so what it maps from the request is each caller's own.
    let transforms_response = settings.transforms_response();
    let mut flight = None;
    let mut hit = None;
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
            hit = match gateway.cache.get(plan, request).await {
                Found::Hit(entry) => Some(entry),
                Found::Miss { flight: flight_key } => match gateway.cache.join(flight_key) {
                    Flight::Follower(rx) => {
                        let wait = match &route.integration {
                            CompiledIntegration::Http { timeout, .. } => *timeout,
                            CompiledIntegration::Mock { .. } => DEFAULT_FOLLOW,
                        };
                        // (The leader's answer may be another variant.)
                        cache::follow(rx, wait)
                            .await
                            .filter(|entry| entry.serves(request, plan.private))
                    }
                    Flight::Leader(guard) => {
                        flight = Some(guard);
                        None
                    }
                },
            };
        }
        match &hit {
            Some(entry) => {
                ctx.outcome.cache = Some(CacheStatus::Hit);
                if !transforms_response {
                    let mut response = cache::respond(entry, plan.warning);
                    cache::evaluate_conditions(&parts.method, &parts.headers, &mut response);
                    return Ok(response);
                }
            }
            None => {
                // A miss, even when the backend fails or the client leaves
                // before the answer (the answer may still turn it into a
                // bypass).
                ctx.outcome.cache = Some(CacheStatus::Miss);
                request_headers = Some(parts.headers.clone());
            }
        }
    }
    drop(lookup_phase);
    // A hit calls no integration: nothing to render for it.
    let rendered = template
        .filter(|_| hit.is_none())
        .map(|name| transform::render(&target.definition, name, &inputs, ctx))
        .transpose()?;
    // Response mappings may read the request as the client sent it.
    let original = transforms_response.then(|| copy_parts(&parts));
    drop(inputs);
    let mut outgoing = mapping.apply(&mut parts.headers);
    if rendered.is_some() {
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::TRANSFER_ENCODING);
        outgoing.body = rendered;
    }
    let response = match (&hit, &lookup) {
        // A hit whose answer the response phase maps, as it would map the
        // integration's.
        (Some(entry), Lookup::Use(_)) => cache::stored(entry),
        _ => {
            let mut integration_phase =
                trace::phase(telemetry, ctx.trace.as_ref(), "integration", SpanKind::Client);
            if let Some(cx) = integration_phase.context(ctx.trace.as_ref()) {
                trace::inject(&cx, &mut parts.headers);
            }
            let integration_started = Instant::now();

            let response = match &route.integration {
                CompiledIntegration::Mock {
                    status,
                    headers,
                    body,
                } => integration::mock::respond(*status, headers, body, target, ctx.request_id.as_str()),
                CompiledIntegration::Http { uri, method, timeout } => {
                    let call = Call {
                        uri: match &uri.literal {
                            Some(parsed) => BackendUri::Parsed(parsed),
                            None => BackendUri::Filled(integration::fill(
                                &uri.template,
                                &target.variables,
                                &matched.params,
                            )),
                        },
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
                        (None, None, Some(stream)) => (stream.boxed_unsync(), fault),
                        (None, None, None) => (full_body(Bytes::new()), None),
                    };
                    if integration_phase.is_recording() {
                        integration_phase.set(opentelemetry::KeyValue::new(
                            "server.address",
                            host_of(&uri.template),
                        ));
                    }
                    integration::http::call(gateway.upstreams.client(), call, parts, body, fault).await?
                }
            };
            ctx.outcome.integration_latency = Some(integration_started.elapsed());
            if integration_phase.is_recording() {
                integration_phase.set(opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                ));
            }
            drop(integration_phase);
            response
        }
    };

    // What the cache does with the integration's answer, said after the
    // response phase.
    let (mut response, said) = match &lookup {
        Lookup::Off => (response, None),
        Lookup::Bypass { warning } => (response, Some((CacheStatus::Bypass, *warning))),
        Lookup::Use(plan) if hit.is_some() => (response, Some((CacheStatus::Hit, plan.warning))),
        Lookup::Use(plan) => {
            let request_headers = request_headers.unwrap_or_default();
            let request = cache::entry::RequestView {
                headers: &request_headers,
                forwarding: &forwarding,
                changes: mapping.header_changes(),
            };
            let (response, stored) = gateway.cache.fill(plan, response, request, flight).await?;
            // A private request whose answer may not be shared went around
            // the cache.
            let what = if stored || !plan.private {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            };
            ctx.outcome.cache = Some(what);
            (response, Some((what, plan.warning)))
        }
    };

    // Response phase.
    response = match original {
        None => response,
        Some(original) => {
            let _phase = trace::phase(telemetry, ctx.trace.as_ref(), "response", SpanKind::Internal);
            let inputs = Inputs::new(
                &original,
                path,
                &matched.params,
                &target.variables,
                whole.as_ref(),
            );
            let mut response = response::transform::apply(
                settings,
                &target.definition,
                response,
                &inputs,
                ctx,
                options.limits.max_body_bytes,
            )
            .await?;
            // A hit's conditions are judged on the answer as mapped.
            if hit.is_some() {
                cache::evaluate_conditions(&original.method, &original.headers, &mut response);
            }
            response
        }
    };
    if let Some(entry) = &hit {
        cache::age(&mut response, entry);
    }
    if let Some((what, warning)) = said {
        cache::mark(&mut response, what, warning);
    }
    Ok(response)
}

/// How long a request waits for another one fetching the same cache entry
/// of a MOCK route.
const DEFAULT_FOLLOW: std::time::Duration = std::time::Duration::from_secs(29);

/// A WEBSOCKET API's stage root: `$connect` (authorization, throttling
/// with the stage's connection rate, its integration, which may refuse),
/// then the upgrade; the connection runs in [`websocket::connection::run`].
async fn connect_websocket(
    gateway: &Arc<Gateway>,
    front: &Front,
    api: &Arc<websocket::WebSocketApi>,
    mut parts: http::request::Parts,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, GatewayError> {
    if !matches!(front.path(), "" | "/") {
        return Err(GatewayError::NoRoute);
    }
    if !websocket::is_upgrade(&parts) {
        return Err(websocket::refuse_non_upgrade());
    }
    let key = websocket::handshake_key(&parts.headers)?;
    ctx.route_key = Some("$connect".into());
    // The cluster whose config routed the request accepts the connection.
    let cluster = gateway.config.load().cluster_id.clone();
    let route = api.routes.get("$connect");
    let forwarding = integration::http::Forwarding::new(&parts.headers, conn, &front.forwarded_host);
    let inputs = Inputs::new(&parts, front.path(), &[], &front.target.variables, None).forwarded(&forwarding);
    let stage_key = match route {
        Some(route) => authorize::run(gateway, &front.stage, &route.auth, &inputs, ctx).await?,
        None => None,
    };
    throttle::check(&gateway.shared, &front.stage, "$connect", stage_key).await?;
    let api_key = stage_key.map(|key| key.digest);
    let session = websocket::connection::Session {
        gateway: gateway.clone(),
        cluster: cluster.clone(),
        stage: front.stage.clone(),
        target: front.target.clone(),
        api: api.clone(),
        connection_id: websocket::new_connection_id(),
        principal_id: ctx.authorizer.principal_id.clone(),
        api_key,
        api_key_id: ctx.identity.api_key_id.clone(),
        host: front.host.clone(),
        forwarding: forwarding.clone(),
        source_ip: front.source_ip,
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
        let handshake = websocket::Handshake { inputs: &inputs, ctx };
        let answer = websocket::connect(gateway, &session, route, handshake, ctx.request_id.as_str()).await;
        ctx.outcome.integration_latency = Some(started.elapsed());
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
            cluster,
            api: front.stage.api.to_string(),
            stage: front.stage.name.to_string(),
            connected_at: now,
            last_active_at: now,
            source_ip: session.source_ip.to_string(),
            user_agent: session
                .user_agent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            api_key_id: session.api_key_id.as_deref().map(str::to_owned),
            principal_id: session.principal_id.clone(),
        },
        front.stage.sockets.max_message,
    );
    tokio::spawn(websocket::connection::run(session, upgrade, local, inbox));
    Ok(websocket::switching_protocols(&key, protocol))
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
    request_id: &RequestId,
    method: &Method,
    uri: &Uri,
) -> Response<Body> {
    let request_id = request_id.as_str();
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
