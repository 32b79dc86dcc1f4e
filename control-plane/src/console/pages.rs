//! The console's pages, one handler each, in the order of the navigation:
//! login, APIs (list, create and edit from YAML, deploy, delete), stages
//! (settings from YAML, canary, promote, rollback with the diff of the two
//! definitions), data
//! planes, API keys, usage plans, the audit log.

use super::session::{self, Session};
use super::{Console, Peer, templates};
use crate::access::{CalledMethod, Caller, Role};
use crate::auth::BearerToken;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Value, context};
use pylon_proto::admin::v1::admin_service_server::AdminService;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{self as config, CanarySettings, resource::Kind};
use sha2::Digest as _;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tonic::{Code, Request, Status};

type Shared = State<Arc<Console>>;
type Fields = Form<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/apis") }))
        .route("/static/console.css", get(stylesheet))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/apis", get(apis))
        .route("/apis/new", get(new_api).post(create_api))
        .route("/apis/{api}", get(api))
        .route("/apis/{api}/edit", get(edit_api).post(update_api))
        .route("/apis/{api}/delete", post(delete_api))
        .route("/apis/{api}/deploy", post(deploy))
        .route("/apis/{api}/stages/{stage}", get(stage))
        .route(
            "/apis/{api}/stages/{stage}/edit",
            get(edit_stage).post(update_stage),
        )
        .route("/apis/{api}/stages/{stage}/canary", post(set_canary))
        .route("/apis/{api}/stages/{stage}/promote", post(promote))
        .route(
            "/apis/{api}/stages/{stage}/rollback/{deployment}",
            get(rollback_page).post(rollback),
        )
        .route("/nodes", get(nodes))
        .route("/keys", get(keys).post(create_key))
        .route("/usage-plans", get(usage_plans))
        .route("/usage-plans/new", get(new_plan).post(create_plan))
        .route("/usage-plans/{name}/edit", get(edit_plan).post(update_plan))
        .route("/audit", get(audit))
        .route("/consumers", get(consumers))
        .route("/consumers/{email}/status", post(set_consumer_status))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        templates::STYLESHEET,
    )
        .into_response()
}

/// A request of a logged-in user: the session (seen now), the caller the
/// admin calls are made as (none on a node without credentials), and the
/// key its cookie is sealed with.
pub struct Page {
    console: Arc<Console>,
    session: Session,
    caller: Option<Caller>,
    key: Vec<u8>,
}

fn cookie_name(console: &Console) -> &'static str {
    if console.tls {
        session::SECURE_COOKIE
    } else {
        session::COOKIE
    }
}

fn cookie(console: &Console, value: &str, max_age: u64) -> HeaderValue {
    session::set_cookie(cookie_name(console), value, max_age, console.tls)
}

/// An error page with `status`.
fn error_page(console: &Console, status: StatusCode, message: &str, page: Option<&Page>) -> Response {
    let user = page.map(Page::user);
    let csrf = page.map(|p| p.session.csrf.clone());
    let body = console
        .templates
        .get_template("error.html")
        .and_then(|t| {
            t.render(context! {
                status => format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
                message, user, csrf,
            })
        })
        .unwrap_or_else(|_| message.to_owned());
    (status, Html(body)).into_response()
}

/// The HTTP status an admin call's refusal is shown with.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One `field: message` of a refusal; the admin API joins them with `; `.
fn field_errors(status: &Status) -> Vec<Value> {
    status
        .message()
        .split("; ")
        .map(|part| match part.split_once(": ") {
            Some((field, message)) if !field.contains(' ') => context! { field, message },
            _ => context! { field => "", message => part },
        })
        .collect()
}

/// A resource as `pylon apply` files hold it, without output-only fields.
fn resource_yaml(kind: Kind) -> String {
    let kind = match kind {
        Kind::Api(mut api) => {
            api.revision = 0;
            api.created_at = None;
            api.updated_at = None;
            Kind::Api(api)
        }
        Kind::UsagePlan(mut plan) => {
            plan.revision = 0;
            plan.created_at = None;
            plan.updated_at = None;
            Kind::UsagePlan(plan)
        }
        Kind::Stage(mut stage) => {
            stage.revision = 0;
            stage.created_at = None;
            stage.updated_at = None;
            stage.cache_generation = 0;
            Kind::Stage(stage)
        }
        other => other,
    };
    // Through `serde_json::Value`: keys sorted, so a model's schema (a
    // `HashMap`) reads the same on every visit.
    match serde_json::to_value(config::Resource { kind: Some(kind) }) {
        Ok(resource) => serde_norway::to_string(&resource).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

impl Page {
    /// The logged-in user of `headers`, or the answer that sends them to log in.
    async fn begin(console: &Arc<Console>, headers: &HeaderMap) -> Result<Page, Response> {
        let key = match console.admin.console_key().await {
            Ok(key) => key,
            Err(status) => {
                return Err(error_page(
                    console,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "the console needs a leader to start sessions: {}",
                        status.message()
                    ),
                    None,
                ));
            }
        };
        let to_login = || Redirect::to("/login").into_response();
        // With mutual TLS, the connection's client certificate (when it
        // names an operator or reader in the trust domain) logs in by itself.
        let certificate = super::CLIENT_CERTIFICATE.try_with(Clone::clone).ok().flatten();
        let certified = certificate.as_ref().and_then(|der| {
            let domain = console.trust_domain.as_deref()?;
            let caller = crate::access::certificate_caller(der, domain).ok()?;
            let digest: [u8; 32] = sha2::Sha256::digest(der.as_slice()).into();
            (caller.has(Role::Operator) || caller.has(Role::Reader)).then_some((caller, digest))
        });
        let session = session::cookie(headers, cookie_name(console))
            .and_then(|value| session::open(&key, value))
            .filter(|session| !console.admin.session_ended(&session.csrf));
        let Some(session) = session.or_else(|| {
            certified
                .as_ref()
                .map(|(caller, digest)| Session::new(&caller.name, digest))
        }) else {
            return Err(to_login());
        };
        let credentials = console.credentials.load();
        let caller = if session.name.starts_with("spiffe://") {
            // A certificate's session holds on the connection showing it.
            match &certified {
                Some((caller, digest))
                    if session.name == *caller.name && session.token_digest == hex::encode(digest) =>
                {
                    Some(caller.clone())
                }
                _ => return Err(to_login()),
            }
        } else if console.open() {
            if session.name != "anonymous" {
                return Err(to_login());
            }
            None
        } else {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&session.token_digest, &mut digest).is_err() {
                return Err(to_login());
            }
            match credentials.caller_by_digest(&session.name, &digest) {
                Some(caller) if caller.has(Role::Operator) || caller.has(Role::Reader) => Some(caller),
                _ => return Err(to_login()),
            }
        };
        Ok(Page {
            console: console.clone(),
            session: session.touched(),
            caller,
            key,
        })
    }

    /// Whether the user may write (the admin API decides again on every call).
    fn operator(&self) -> bool {
        self.caller.as_ref().is_none_or(|c| c.has(Role::Operator))
    }

    fn user(&self) -> Value {
        context! {
            name => self.session.name.clone(),
            role => if self.operator() { "operator" } else { "reader" },
            operator => self.operator(),
        }
    }

    /// The refusal of a form whose `csrf` field is not this session's.
    fn csrf_refusal(&self, fields: &HashMap<String, String>) -> Option<Response> {
        match fields.get("csrf") {
            Some(token) if self.session.csrf_matches(token) => None,
            _ => Some(error_page(
                &self.console,
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this session's: reload the page and try again",
                Some(self),
            )),
        }
    }

    /// Calls `method` of the admin API as the logged-in user: the same
    /// role check, validation and audit as the call over gRPC.
    async fn call<T, R, F, Fut>(&self, method: &'static str, message: T, f: F) -> Result<R, Status>
    where
        F: FnOnce(Arc<crate::admin::AdminApi>, Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let mut request = Request::new(message);
        request.extensions_mut().insert(CalledMethod(method.into()));
        if let Some(caller) = &self.caller {
            crate::access::check_admin_call(caller, &format!("/pylon.admin.v1.AdminService/{method}"))?;
            request.extensions_mut().insert(caller.clone());
        }
        f(self.console.admin.clone(), request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// The refusal of a write the user's role may not make, before any
    /// work is done for it (the admin call checks again).
    fn role_refusal(&self, method: &str) -> Option<Response> {
        let caller = self.caller.as_ref()?;
        crate::access::check_admin_call(caller, &format!("/pylon.admin.v1.AdminService/{method}"))
            .err()
            .map(|status| self.refused(&status))
    }

    /// A refused call as a page.
    fn refused(&self, status: &Status) -> Response {
        error_page(
            &self.console,
            http_status(status.code()),
            status.message(),
            Some(self),
        )
    }

    /// `template` with `values`, the user, the CSRF token and the renewed cookie.
    fn render(&self, template: &str, nav: &str, values: Value) -> Response {
        self.render_with(StatusCode::OK, template, nav, values)
    }

    fn render_with(&self, status: StatusCode, template: &str, nav: &str, values: Value) -> Response {
        let context = context! { user => self.user(), csrf => self.session.csrf.clone(), nav, ..values };
        match self
            .console
            .templates
            .get_template(template)
            .and_then(|t| t.render(context))
        {
            Ok(body) => self.with_cookie((status, Html(body)).into_response()),
            Err(error) => {
                tracing::error!(%error, template, "console page failed to render");
                error_page(
                    &self.console,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                    None,
                )
            }
        }
    }

    fn redirect(&self, to: &str) -> Response {
        self.with_cookie(Redirect::to(to).into_response())
    }

    fn with_cookie(&self, mut response: Response) -> Response {
        if let Ok(value) = session::seal(&self.key, &self.session) {
            response.headers_mut().append(
                header::SET_COOKIE,
                cookie(&self.console, &value, session::MAX_AGE.as_secs()),
            );
        }
        response
    }
}

/// Runs `$body` with the page of a logged-in user (`$page`), or answers
/// with what sends them to log in.
macro_rules! page {
    ($console:expr, $headers:expr) => {
        match Page::begin(&$console, &$headers).await {
            Ok(page) => page,
            Err(response) => return response,
        }
    };
}

/// [`page!`] for a posted form: also answers 403 when `fields` lacks the
/// session's CSRF token.
macro_rules! form_page {
    ($console:expr, $headers:expr, $fields:expr) => {{
        let page = page!($console, $headers);
        if let Some(refused) = page.csrf_refusal(&$fields) {
            return refused;
        }
        page
    }};
}

macro_rules! called {
    ($page:expr, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(status) => return $page.refused(&status),
        }
    };
}

/// A value a template reads by its JSON field names (`deploymentId`).
fn ser<T: serde::Serialize>(value: &T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// A timestamp as RFC 3339 (empty when unset).
fn time(at: Option<pylon_proto::wkt::Timestamp>) -> String {
    at.and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The first 1,000 of a list (the console shows no more).
fn everything() -> Option<pylon_proto::admin::v1::Page> {
    Some(pylon_proto::admin::v1::Page {
        page_size: 1000,
        page_token: String::new(),
    })
}

// ---- login ----

async fn login_page(State(console): Shared) -> Response {
    let open = console.open();
    render_login(&console, StatusCode::OK, open, None)
}

fn render_login(console: &Console, status: StatusCode, open: bool, error: Option<&str>) -> Response {
    let body = console
        .templates
        .get_template("login.html")
        .and_then(|t| t.render(context! { open, error }))
        .unwrap_or_default();
    (status, Html(body)).into_response()
}

async fn login(State(console): Shared, request: axum::extract::Request) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0.ip());
    let open = console.open();
    if let Some(ip) = peer
        && !console.login_allowed(ip)
    {
        let mut response = render_login(
            &console,
            StatusCode::TOO_MANY_REQUESTS,
            open,
            Some("too many login attempts from this address: wait a minute"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("6"));
        return response;
    }
    let Ok(Form(fields)) = Form::<HashMap<String, String>>::from_request(request, &()).await else {
        return render_login(&console, StatusCode::BAD_REQUEST, open, Some("not a login form"));
    };
    let key = match console.admin.console_key().await {
        Ok(key) => key,
        Err(status) => {
            return render_login(
                &console,
                StatusCode::SERVICE_UNAVAILABLE,
                open,
                Some(&format!(
                    "the console needs a leader to start sessions: {}",
                    status.message()
                )),
            );
        }
    };
    let session = if open {
        Session::new("anonymous", &[])
    } else {
        let token = fields.get("token").map(String::as_str).unwrap_or("");
        let Some(caller) = console.credentials.load().identify(token) else {
            tracing::warn!(peer = ?peer, "console: a login with an unknown token");
            return render_login(&console, StatusCode::UNAUTHORIZED, open, Some("unknown token"));
        };
        if !caller.has(Role::Operator) && !caller.has(Role::Reader) {
            return render_login(
                &console,
                StatusCode::FORBIDDEN,
                open,
                Some("a data-plane or peer credential cannot log in to the console"),
            );
        }
        tracing::info!(name = %caller.name, peer = ?peer, "console: logged in");
        Session::new(&caller.name, &BearerToken::digest_of(token))
    };
    match session::seal(&key, &session) {
        Ok(value) => {
            let mut response = Redirect::to("/apis").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&console, &value, session::MAX_AGE.as_secs()),
            );
            response
        }
        Err(error) => render_login(&console, StatusCode::BAD_REQUEST, open, Some(&error.to_string())),
    }
}

use axum::extract::FromRequest as _;

async fn logout(State(console): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let page = form_page!(console, headers, fields);
    // Ended on every node, not just forgotten by this browser.
    let until = (page.session.issued + session::MAX_AGE.as_secs()) as i64;
    if let Err(status) = console
        .admin
        .end_session(&page.session.name, &page.session.csrf, until)
        .await
    {
        tracing::warn!(error = %status.message(), "console: a logout could not end the session cluster-wide");
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&console, "", 0));
    response
}

// ---- APIs ----

async fn apis(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let request = ListApisRequest {
        page: everything(),
        ..Default::default()
    };
    let list = called!(
        page,
        page.call("ListApis", request, |a, r| async move { a.list_apis(r).await })
            .await
    );
    page.render("apis.html", "apis", context! { apis => ser(&list.apis) })
}

const NEW_API: &str = "api:\n  name: example\n  description: ''\n  routes:\n    - method: GET\n      path: /hello\n      integration:\n        type: MOCK\n        mock: {statusCode: 200, body: 'hello'}\n";

async fn new_api(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    ResourceForm::api("New API".into()).show(&page, NEW_API, 0)
}

/// What the API form says its YAML is.
const API_HINT: &str = "api: {name: …, routes: […]}";
/// What the stage form says its YAML is.
const STAGE_HINT: &str = "stage: {api: …, name: …, deploymentId: …, variables, throttle, routeThrottle, cache, canary, accessLogFormat, publication …}";

/// What the usage-plan form says its YAML is.
const PLAN_HINT: &str = "usagePlan: {name: …, apiStages: [{api, stage}], throttle, quota: {limit, period}}";
/// A new usage plan's form.
const NEW_PLAN: &str = "usagePlan:\n  name: free\n  apiStages: []\n  quota: {limit: 1000, period: DAY}\n";

/// [`parse_resource`] on a blocking thread: a large document never holds a
/// runtime thread (the nesting check already bounds its cost).
async fn parse_off_runtime(text: &str) -> Result<Kind, Status> {
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || parse_resource(&text))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// The one resource a YAML form holds.
fn parse_resource(text: &str) -> Result<Kind, Status> {
    let resources =
        pylon_common::model::parse_documents(text).map_err(|e| Status::invalid_argument(e.to_string()))?;
    match <[config::Resource; 1]>::try_from(resources) {
        Ok([config::Resource { kind: Some(kind) }]) => Ok(kind),
        _ => Err(Status::invalid_argument(
            "definition: must be exactly one resource document",
        )),
    }
}

/// The one API a YAML form holds.
async fn parse_api(text: &str) -> Result<config::Api, Status> {
    match parse_off_runtime(text).await? {
        Kind::Api(api) => Ok(api),
        _ => Err(not_one("api")),
    }
}

/// The refusal of a form holding another kind of resource than its own.
fn not_one(kind: &str) -> Status {
    Status::invalid_argument(format!("definition: must be exactly one `{kind}:` document"))
}

/// A posted resource form's definition, and the revision it was read at
/// (0 for a new resource).
fn posted(fields: &HashMap<String, String>) -> (String, u64) {
    let definition = fields.get("definition").cloned().unwrap_or_default();
    let revision = fields.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0);
    (definition, revision)
}

/// A resource's YAML form: where it sits in the navigation, its heading,
/// and what its YAML is.
struct ResourceForm {
    nav: &'static str,
    heading: String,
    hint: &'static str,
}

impl ResourceForm {
    fn api(heading: String) -> ResourceForm {
        ResourceForm {
            nav: "apis",
            heading,
            hint: API_HINT,
        }
    }

    fn stage(api: &str, name: &str) -> ResourceForm {
        ResourceForm {
            nav: "apis",
            heading: format!("Edit stage {api}/{name}"),
            hint: STAGE_HINT,
        }
    }

    fn plan(heading: String) -> ResourceForm {
        ResourceForm {
            nav: "plans",
            heading,
            hint: PLAN_HINT,
        }
    }

    fn show(&self, page: &Page, definition: &str, revision: u64) -> Response {
        page.render(
            "resource_form.html",
            self.nav,
            context! { definition, revision, heading => &self.heading, hint => self.hint },
        )
    }

    /// What a posted form's admin call answered: on to `Ok`'s page; a role
    /// refusal's page; else the form again, as posted, with the field
    /// errors beside it.
    fn answer(
        &self,
        page: &Page,
        outcome: Result<String, Status>,
        definition: &str,
        revision: u64,
    ) -> Response {
        match outcome {
            Ok(to) => page.redirect(&to),
            Err(status) if status.code() == Code::PermissionDenied => page.refused(&status),
            Err(status) => page.render_with(
                http_status(status.code()),
                "resource_form.html",
                self.nav,
                context! {
                    definition, revision, heading => &self.heading, hint => self.hint,
                    errors => field_errors(&status),
                },
            ),
        }
    }
}

async fn create_api(State(console): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let page = form_page!(console, headers, fields);
    if let Some(refused) = page.role_refusal("CreateApi") {
        return refused;
    }
    let (text, _) = posted(&fields);
    let created = match parse_api(&text).await {
        Ok(api) => page
            .call(
                "CreateApi",
                CreateApiRequest { api: Some(api) },
                |a, r| async move { a.create_api(r).await },
            )
            .await
            .map(|api| format!("/apis/{}", urlencoding(&api.name))),
        Err(status) => Err(status),
    };
    ResourceForm::api("New API".into()).answer(&page, created, &text, 0)
}

/// The console page of `api`'s `stage`.
fn stage_path(api: &str, stage: &str) -> String {
    format!("/apis/{}/stages/{}", urlencoding(api), urlencoding(stage))
}

/// A path segment, percent-encoded.
fn urlencoding(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get_api(page: &Page, name: &str) -> Result<config::Api, Status> {
    let request = GetApiRequest {
        name: name.to_owned(),
        ..Default::default()
    };
    page.call("GetApi", request, |a, r| async move { a.get_api(r).await })
        .await
}

async fn api(State(console): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let page = page!(console, headers);
    let api = called!(page, get_api(&page, &name).await);
    let stages = called!(
        page,
        page.call(
            "ListStages",
            ListStagesRequest {
                api: name.clone(),
                page: everything(),
                ..Default::default()
            },
            |a, r| async move { a.list_stages(r).await }
        )
        .await
    );
    // Definitions are long: the history shows ids, times and descriptions.
    let deployments = called!(page, history(&page, &name).await);
    page.render(
        "api.html",
        "apis",
        context! {
            yaml => resource_yaml(Kind::Api(api.clone())),
            api => ser(&api),
            stages => ser(&stages.stages),
            deployments => history_rows(&deployments),
        },
    )
}

async fn edit_api(State(console): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let page = page!(console, headers);
    let api = called!(page, get_api(&page, &name).await);
    let revision = api.revision;
    ResourceForm::api(format!("Edit API {name}")).show(&page, &resource_yaml(Kind::Api(api)), revision)
}

async fn update_api(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    if let Some(refused) = page.role_refusal("UpdateApi") {
        return refused;
    }
    let (text, revision) = posted(&fields);
    let updated = match parse_api(&text).await {
        Ok(api) if api.name != name => Err(Status::invalid_argument(format!(
            "name: {:?} is not this API ({name:?}); create a new API instead",
            api.name
        ))),
        Ok(api) => {
            let request = UpdateApiRequest {
                api: Some(api),
                expected_revision: revision,
            };
            page.call("UpdateApi", request, |a, r| async move { a.update_api(r).await })
                .await
                .map(|_| format!("/apis/{}", urlencoding(&name)))
        }
        Err(status) => Err(status),
    };
    ResourceForm::api(format!("Edit API {name}")).answer(&page, updated, &text, revision)
}

async fn delete_api(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    let request = DeleteApiRequest {
        name,
        expected_revision: fields.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0),
    };
    called!(
        page,
        page.call("DeleteApi", request, |a, r| async move { a.delete_api(r).await })
            .await
    );
    page.redirect("/apis")
}

async fn deploy(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    let stage = fields.get("stage").cloned().unwrap_or_default();
    let request = CreateDeploymentRequest {
        api: name.clone(),
        stage: stage.clone(),
        description: fields.get("description").cloned().unwrap_or_default(),
    };
    called!(
        page,
        page.call("CreateDeployment", request, |a, r| async move {
            a.create_deployment(r).await
        })
        .await
    );
    page.redirect(&stage_path(&name, &stage))
}

// ---- stages ----

async fn get_stage(page: &Page, api: &str, name: &str) -> Result<config::Stage, Status> {
    let request = GetStageRequest {
        api: api.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    };
    page.call("GetStage", request, |a, r| async move { a.get_stage(r).await })
        .await
}

async fn history(page: &Page, api: &str) -> Result<Vec<config::Deployment>, Status> {
    let request = ListDeploymentsRequest {
        api: api.to_owned(),
        page: everything(),
        ..Default::default()
    };
    page.call("ListDeployments", request, |a, r| async move {
        a.list_deployments(r).await
    })
    .await
    .map(|list| list.deployments)
}

fn history_rows(deployments: &[config::Deployment]) -> Vec<Value> {
    deployments
        .iter()
        .map(|d| {
            context! { id => d.id.clone(), description => d.description.clone(),
            createdAt => time(d.created_at) }
        })
        .collect()
}

async fn stage(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name)): Path<(String, String)>,
) -> Response {
    let page = page!(console, headers);
    let stage = called!(page, get_stage(&page, &api, &name).await);
    let deployments = called!(page, history(&page, &api).await);
    let request = GetStageMetricsRequest {
        api: api.clone(),
        stage: name.clone(),
    };
    let traffic = called!(
        page,
        page.call("GetStageMetrics", request, |a, r| async move {
            a.get_stage_metrics(r).await
        })
        .await
    );
    page.render(
        "stage.html",
        "apis",
        context! {
            settings => resource_yaml(Kind::Stage(stage.clone())),
            stage => ser(&stage),
            deployments => history_rows(&deployments),
            traffic => super::charts::stage_traffic(&traffic, time_now()),
        },
    )
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The stage as YAML: variables, throttling, cache, access-log format,
/// tracing, publication — every setting `UpdateStage` takes.
async fn edit_stage(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name)): Path<(String, String)>,
) -> Response {
    let page = page!(console, headers);
    let stage = called!(page, get_stage(&page, &api, &name).await);
    let revision = stage.revision;
    ResourceForm::stage(&api, &name).show(&page, &resource_yaml(Kind::Stage(stage)), revision)
}

async fn update_stage(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name)): Path<(String, String)>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    if let Some(refused) = page.role_refusal("UpdateStage") {
        return refused;
    }
    let (text, revision) = posted(&fields);
    let updated = match parse_off_runtime(&text).await {
        Ok(Kind::Stage(stage)) if stage.api != api || stage.name != name => {
            Err(Status::invalid_argument(format!(
                "api, name: {:?}/{:?} is not this stage ({api:?}/{name:?})",
                stage.api, stage.name
            )))
        }
        Ok(Kind::Stage(stage)) => {
            let request = UpdateStageRequest {
                stage: Some(stage),
                expected_revision: revision,
            };
            page.call(
                "UpdateStage",
                request,
                |a, r| async move { a.update_stage(r).await },
            )
            .await
            .map(|_| stage_path(&api, &name))
        }
        Ok(_) => Err(not_one("stage")),
        Err(status) => Err(status),
    };
    ResourceForm::stage(&api, &name).answer(&page, updated, &text, revision)
}

async fn set_canary(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name)): Path<(String, String)>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    let mut stage = called!(page, get_stage(&page, &api, &name).await);
    let revision: u64 = fields.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0);
    let Some(percent) = fields.get("percent").and_then(|p| p.trim().parse::<f64>().ok()) else {
        return page.refused(&Status::invalid_argument(
            "percent: must be a number from 0 to 100",
        ));
    };
    let deployment_id = fields.get("deployment").cloned().unwrap_or_default();
    let previous = stage.canary.take().unwrap_or_default();
    stage.canary = Some(CanarySettings {
        deployment_id,
        percent_traffic: percent,
        ..previous
    });
    let request = UpdateStageRequest {
        stage: Some(stage),
        expected_revision: revision,
    };
    called!(
        page,
        page.call(
            "UpdateStage",
            request,
            |a, r| async move { a.update_stage(r).await }
        )
        .await
    );
    page.redirect(&stage_path(&api, &name))
}

async fn promote(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name)): Path<(String, String)>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    let request = PromoteCanaryRequest {
        api: api.clone(),
        stage: name.clone(),
        expected_revision: fields.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0),
    };
    called!(
        page,
        page.call("PromoteCanary", request, |a, r| async move {
            a.promote_canary(r).await
        })
        .await
    );
    page.redirect(&stage_path(&api, &name))
}

/// The line diff of two definitions, as `{kind, sign, text}` rows.
fn definition_diff(from: &str, to: &str) -> Vec<Value> {
    let diff = similar::TextDiff::from_lines(from, to);
    let changed = diff
        .iter_all_changes()
        .any(|c| c.tag() != similar::ChangeTag::Equal);
    if !changed {
        return Vec::new();
    }
    diff.iter_all_changes()
        .map(|change| {
            let (kind, sign) = match change.tag() {
                similar::ChangeTag::Delete => ("del", "-"),
                similar::ChangeTag::Insert => ("add", "+"),
                similar::ChangeTag::Equal => ("same", " "),
            };
            context! { kind, sign, text => change.value().trim_end_matches('\n').to_owned() }
        })
        .collect()
}

async fn rollback_page(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name, target)): Path<(String, String, String)>,
) -> Response {
    let page = page!(console, headers);
    let stage = called!(page, get_stage(&page, &api, &name).await);
    let get = |id: String| GetDeploymentRequest {
        api: api.clone(),
        id,
        ..Default::default()
    };
    let current = called!(
        page,
        page.call(
            "GetDeployment",
            get(stage.deployment_id.clone()),
            |a, r| async move { a.get_deployment(r).await }
        )
        .await
    );
    let wanted = called!(
        page,
        page.call("GetDeployment", get(target), |a, r| async move {
            a.get_deployment(r).await
        })
        .await
    );
    let yaml = |d: &config::Deployment| {
        d.definition
            .clone()
            .map(|api| resource_yaml(Kind::Api(api)))
            .unwrap_or_default()
    };
    let diff = definition_diff(&yaml(&current), &yaml(&wanted));
    page.render(
        "rollback.html",
        "apis",
        context! {
            stage => ser(&stage),
            target => context! { id => wanted.id.clone(), createdAt => time(wanted.created_at) },
            diff,
        },
    )
}

async fn rollback(
    State(console): Shared,
    headers: HeaderMap,
    Path((api, name, target)): Path<(String, String, String)>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    let request = RollbackStageRequest {
        api: api.clone(),
        stage: name.clone(),
        deployment_id: target,
        expected_revision: fields.get("revision").and_then(|r| r.parse().ok()).unwrap_or(0),
    };
    called!(
        page,
        page.call("RollbackStage", request, |a, r| async move {
            a.rollback_stage(r).await
        })
        .await
    );
    page.redirect(&stage_path(&api, &name))
}

// ---- data planes, keys, plans, audit ----

async fn nodes(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let version = called!(
        page,
        page.call(
            "GetConfigVersion",
            GetConfigVersionRequest::default(),
            |a, r| async move { a.get_config_version(r).await }
        )
        .await
    )
    .version;
    let list = called!(
        page,
        page.call(
            "ListDataPlaneNodes",
            ListDataPlaneNodesRequest::default(),
            |a, r| async move { a.list_data_plane_nodes(r).await }
        )
        .await
    );
    let rows: Vec<Value> = list
        .nodes
        .iter()
        .map(|n| {
            let lag = match n.applied_version.cmp(&version) {
                std::cmp::Ordering::Equal => "current".to_owned(),
                std::cmp::Ordering::Less => format!("behind by {}", version - n.applied_version),
                std::cmp::Ordering::Greater => format!("ahead by {}", n.applied_version - version),
            };
            context! {
                node_id => n.node_id.clone(),
                applied_version => n.applied_version,
                lag,
                last_result => n.last_result().as_str_name(),
                last_result_version => n.last_result_version,
                last_error => n.last_error.clone(),
                warning => n.warning.clone(),
                last_seen => time(n.last_seen),
                connected => n.connected,
                labels => n.labels.clone(),
            }
        })
        .collect();
    page.render(
        "nodes.html",
        "nodes",
        context! { config_version => version, nodes => rows },
    )
}

async fn list_keys(page: &Page) -> Result<Vec<config::ApiKey>, Status> {
    let request = ListApiKeysRequest {
        page: everything(),
        ..Default::default()
    };
    page.call(
        "ListApiKeys",
        request,
        |a, r| async move { a.list_api_keys(r).await },
    )
    .await
    .map(|list| list.api_keys)
}

async fn keys(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let keys = called!(page, list_keys(&page).await);
    page.render("keys.html", "keys", context! { keys => ser(&keys) })
}

async fn create_key(State(console): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let page = form_page!(console, headers, fields);
    let request = CreateApiKeyRequest {
        api_key: Some(config::ApiKey {
            name: fields.get("name").cloned().unwrap_or_default(),
            description: fields.get("description").cloned().unwrap_or_default(),
            enabled: true,
            ..Default::default()
        }),
        value: String::new(),
    };
    let created = called!(
        page,
        page.call("CreateApiKey", request, |a, r| async move {
            a.create_api_key(r).await
        })
        .await
    );
    let keys = called!(page, list_keys(&page).await);
    // Shown once: this answer is never cached (`no-store`) and the value is
    // not kept anywhere the console can show it again.
    page.render(
        "keys.html",
        "keys",
        context! {
            keys => ser(&keys),
            created => ser(&created.api_key),
            value => created.value,
        },
    )
}

async fn usage_plans(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let request = ListUsagePlansRequest {
        page: everything(),
        ..Default::default()
    };
    let plans = called!(
        page,
        page.call("ListUsagePlans", request, |a, r| async move {
            a.list_usage_plans(r).await
        })
        .await
    );
    let mut rows = Vec::new();
    for plan in &plans.usage_plans {
        let usage = page
            .call(
                "GetUsage",
                GetUsageRequest {
                    usage_plan: plan.name.clone(),
                    api_key_id: String::new(),
                },
                |a, r| async move { a.get_usage(r).await },
            )
            .await;
        let (usage, usage_error) = match usage {
            Ok(usage) => (Some(ser(&usage)), None),
            Err(status) => (None, Some(status.message().to_owned())),
        };
        rows.push(context! { plan => ser(plan), usage, usage_error });
    }
    page.render("plans.html", "plans", context! { plans => rows })
}

async fn new_plan(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    ResourceForm::plan("New usage plan".into()).show(&page, NEW_PLAN, 0)
}

async fn create_plan(State(console): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let page = form_page!(console, headers, fields);
    if let Some(refused) = page.role_refusal("CreateUsagePlan") {
        return refused;
    }
    let (text, _) = posted(&fields);
    let created = match parse_off_runtime(&text).await {
        Ok(Kind::UsagePlan(plan)) => {
            let request = CreateUsagePlanRequest {
                usage_plan: Some(plan),
            };
            page.call("CreateUsagePlan", request, |a, r| async move {
                a.create_usage_plan(r).await
            })
            .await
            .map(|_| "/usage-plans".to_owned())
        }
        Ok(_) => Err(not_one("usagePlan")),
        Err(status) => Err(status),
    };
    ResourceForm::plan("New usage plan".into()).answer(&page, created, &text, 0)
}

async fn edit_plan(State(console): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let page = page!(console, headers);
    let request = GetUsagePlanRequest {
        name: name.clone(),
        ..Default::default()
    };
    let plan = called!(
        page,
        page.call("GetUsagePlan", request, |a, r| async move {
            a.get_usage_plan(r).await
        })
        .await
    );
    let revision = plan.revision;
    ResourceForm::plan(format!("Edit usage plan {name}")).show(
        &page,
        &resource_yaml(Kind::UsagePlan(plan)),
        revision,
    )
}

async fn update_plan(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(fields): Fields,
) -> Response {
    let page = form_page!(console, headers, fields);
    if let Some(refused) = page.role_refusal("UpdateUsagePlan") {
        return refused;
    }
    let (text, revision) = posted(&fields);
    let updated = match parse_off_runtime(&text).await {
        Ok(Kind::UsagePlan(plan)) if plan.name != name => Err(Status::invalid_argument(format!(
            "name: {:?} is not this usage plan ({name:?}); create a new one instead",
            plan.name
        ))),
        Ok(Kind::UsagePlan(plan)) => {
            let request = UpdateUsagePlanRequest {
                usage_plan: Some(plan),
                expected_revision: revision,
            };
            page.call("UpdateUsagePlan", request, |a, r| async move {
                a.update_usage_plan(r).await
            })
            .await
            .map(|_| "/usage-plans".to_owned())
        }
        Ok(_) => Err(not_one("usagePlan")),
        Err(status) => Err(status),
    };
    ResourceForm::plan(format!("Edit usage plan {name}")).answer(&page, updated, &text, revision)
}

async fn audit(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let request = ListAuditRecordsRequest {
        page: Some(pylon_proto::admin::v1::Page {
            page_size: 200,
            page_token: String::new(),
        }),
        ..Default::default()
    };
    let records = called!(
        page,
        page.call("ListAuditRecords", request, |a, r| async move {
            a.list_audit_records(r).await
        })
        .await
    );
    page.render(
        "audit.html",
        "audit",
        context! { records => ser(&records.records) },
    )
}

// ---- portal consumers ----

async fn consumers(State(console): Shared, headers: HeaderMap) -> Response {
    let page = page!(console, headers);
    let list = called!(
        page,
        page.call(
            "ListConsumers",
            ListConsumersRequest::default(),
            |a, r| async move { a.list_consumers(r).await }
        )
        .await
    );
    page.render(
        "consumers.html",
        "consumers",
        context! { consumers => ser(&list.consumers) },
    )
}

async fn set_consumer_status(
    State(console): Shared,
    headers: HeaderMap,
    Path(email): Path<String>,
    Form(fields): Fields,
) -> Response {
    use pylon_proto::raft::v1::consumer::Status as ConsumerStatus;
    let page = form_page!(console, headers, fields);
    let Some(status) = fields
        .get("status")
        .and_then(|s| ConsumerStatus::from_str_name(s))
    else {
        return page.refused(&Status::invalid_argument("status: APPROVED, DISABLED or PENDING"));
    };
    let request = UpdateConsumerRequest {
        email,
        status: status as i32,
    };
    called!(
        page,
        page.call("UpdateConsumer", request, |a, r| async move {
            a.update_consumer(r).await
        })
        .await
    );
    page.redirect("/consumers")
}
