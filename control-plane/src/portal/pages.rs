//! The portal's pages: the catalog, an API's reference, sign-up, login,
//! and the consumer's keys (make, rotate, revoke, usage).

use super::{LOGIN_RATE, Portal, SIGNUP_RATE, templates};
use crate::console::Peer;
use crate::console::session::{self, Session};
use axum::Router;
use axum::extract::{Form, FromRequest as _, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Value, context};
use pylon_proto::admin::v1::GetExportRequest;
use pylon_proto::admin::v1::admin_service_server::AdminService;
use pylon_proto::raft::v1::consumer::Status as ConsumerStatus;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Code;

type Shared = State<Arc<Portal>>;
type Fields = Form<HashMap<String, String>>;

const COOKIE: &str = "pylon_portal";
const SECURE_COOKIE: &str = "__Host-pylon_portal";
/// The double-submit cookie of the forms shown before login.
const FORM_COOKIE: &str = "pylon_portal_form";
/// What session names of consumers start with (console sessions name a
/// credential, which cannot hold a `:`).
const CONSUMER: &str = "consumer:";

pub fn routes() -> Router<Arc<Portal>> {
    Router::new()
        .route("/", get(catalog))
        .route(
            "/static/portal.css",
            get(|| async { asset("text/css; charset=utf-8", templates::STYLESHEET) }),
        )
        .route(
            "/static/try.js",
            get(|| async { asset("text/javascript; charset=utf-8", templates::TRY_IT) }),
        )
        .route(
            "/static/reference.js",
            get(|| async { asset("text/javascript; charset=utf-8", templates::REFERENCE) }),
        )
        .route(
            &format!(
                "/static/swagger-ui-{}/swagger-ui-bundle.js",
                templates::SWAGGER_UI_VERSION
            ),
            get(|| async { vendored("text/javascript; charset=utf-8", templates::SWAGGER_UI_JS) }),
        )
        .route(
            &format!(
                "/static/swagger-ui-{}/swagger-ui.css",
                templates::SWAGGER_UI_VERSION
            ),
            get(|| async { vendored("text/css; charset=utf-8", templates::SWAGGER_UI_CSS) }),
        )
        .route("/apis/{api}/{stage}", get(api))
        .route("/apis/{api}/{stage}/reference", get(reference))
        .route("/apis/{api}/{stage}/openapi.json", get(openapi))
        .route("/signup", get(signup_page).post(signup))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/keys", get(keys).post(create_key))
        .route("/keys/{id}/rotate", post(rotate_key))
        .route("/keys/{id}/revoke", post(revoke_key))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A vendored file: its path names its version, so browsers may keep it.
fn vendored(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

fn cookie_name(portal: &Portal) -> &'static str {
    if portal.tls { SECURE_COOKIE } else { COOKIE }
}

fn set_cookie(portal: &Portal, name: &str, value: &str, max_age: u64) -> HeaderValue {
    session::set_cookie(name, value, max_age, portal.tls)
}

/// The visitor: an approved consumer's session, if any (a consumer
/// disabled or set back to pending since login has none).
struct Visitor {
    email: Option<String>,
    session: Option<Session>,
    key: Vec<u8>,
}

impl Visitor {
    async fn of(portal: &Portal, headers: &HeaderMap) -> Visitor {
        let key = portal.admin.console_key().await.unwrap_or_default();
        let session = session::cookie(headers, cookie_name(portal))
            .and_then(|v| session::open(&key, v))
            .filter(|s| !portal.admin.session_ended(&s.csrf));
        // An approved consumer, whose status has not changed since the
        // session began.
        let email = session
            .as_ref()
            .and_then(|s| {
                let email = s.name.strip_prefix(CONSUMER)?;
                let consumer = portal.admin.consumer(email)?;
                let current = consumer.status == ConsumerStatus::Approved as i32
                    && s.issued as i64 >= consumer.sessions_after;
                current.then_some(email)
            })
            .map(str::to_owned);
        let session = if email.is_some() {
            session.map(|s| s.touched())
        } else {
            None
        };
        Visitor { email, session, key }
    }

    /// The logged-in consumer posting `fields`, or the answer: to log in,
    /// or 403 for a form without this session's CSRF token.
    async fn posting(
        portal: &Portal,
        headers: &HeaderMap,
        fields: &HashMap<String, String>,
    ) -> Result<(Visitor, String), Response> {
        let visitor = Visitor::of(portal, headers).await;
        let Some(email) = visitor.email.clone() else {
            return Err(Redirect::to("/login").into_response());
        };
        if !visitor.csrf_ok(fields) {
            return Err(csrf_refused(portal, &visitor));
        }
        Ok((visitor, email))
    }

    fn csrf(&self) -> String {
        self.session.as_ref().map(|s| s.csrf.clone()).unwrap_or_default()
    }

    fn csrf_ok(&self, fields: &HashMap<String, String>) -> bool {
        match (&self.session, fields.get("csrf")) {
            (Some(session), Some(token)) => session.csrf_matches(token),
            _ => false,
        }
    }
}

fn render(
    portal: &Portal,
    visitor: Option<&Visitor>,
    status: StatusCode,
    template: &str,
    nav: &str,
    values: Value,
) -> Response {
    let consumer = visitor.and_then(|v| v.email.clone());
    let csrf = visitor.map(Visitor::csrf).unwrap_or_default();
    let context = context! { consumer, csrf, nav, ..values };
    let mut response = match portal
        .templates
        .get_template(template)
        .and_then(|t| t.render(context))
    {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => {
            tracing::error!(%error, template, "portal page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    };
    if let Some(visitor) = visitor
        && let Some(session) = &visitor.session
        && let Ok(value) = session::seal(&visitor.key, session)
    {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(portal, cookie_name(portal), &value, session::MAX_AGE.as_secs()),
        );
    }
    response
}

fn message(
    portal: &Portal,
    visitor: Option<&Visitor>,
    status: StatusCode,
    heading: &str,
    text: &str,
) -> Response {
    let kind = if status.is_success() { "notice" } else { "error" };
    render(
        portal,
        visitor,
        status,
        "message.html",
        "",
        context! { heading, message => text, kind },
    )
}

fn limits(plan: &pylon_proto::config::v1::UsagePlan) -> String {
    let mut parts = Vec::new();
    if let Some(throttle) = &plan.throttle
        && throttle.rate_limit > 0.0
    {
        parts.push(format!(
            "{} requests/s (burst {})",
            throttle.rate_limit, throttle.burst_limit
        ));
    }
    if let Some(quota) = &plan.quota
        && quota.limit > 0
    {
        let period = pylon_proto::config::v1::quota::Period::try_from(quota.period)
            .map(|p| p.as_str_name().to_ascii_lowercase())
            .unwrap_or_default();
        parts.push(format!("{} requests per {period}", quota.limit));
    }
    parts.join(", ")
}

fn csrf_refused(portal: &Portal, visitor: &Visitor) -> Response {
    message(
        portal,
        Some(visitor),
        StatusCode::FORBIDDEN,
        "Refused",
        "the form's CSRF token is wrong",
    )
}

// ---- catalog and reference ----

async fn catalog(State(portal): Shared, headers: HeaderMap) -> Response {
    let visitor = Visitor::of(&portal, &headers).await;
    let apis: Vec<Value> = portal
        .admin
        .offers()
        .iter()
        .map(|offer| {
            context! {
                api => offer.api.name.clone(),
                stage => offer.stage.name.clone(),
                description => offer.api.description.clone(),
                plan => offer.plan.name.clone(),
                limits => limits(&offer.plan),
            }
        })
        .collect();
    render(
        &portal,
        Some(&visitor),
        StatusCode::OK,
        "catalog.html",
        "catalog",
        context! { apis },
    )
}

/// The published offer of `api`'s `stage`, if it is one.
fn offer(portal: &Portal, api: &str, stage: &str) -> Option<crate::admin::consumers::Offer> {
    portal
        .admin
        .offers()
        .into_iter()
        .find(|o| o.api.name == api && o.stage.name == stage)
}

/// The public view of an OpenAPI export: every specification extension
/// (`x-*` keys: `x-pylon-*` and `x-amazon-apigateway-*` carry integrations,
/// backend URLs and mappings that may hold secrets) taken out at any depth,
/// and the security schemes' descriptions (operator-facing notes). Only
/// keys where an extension can be are looked at: names in a map (schema
/// properties, components, media types …) and data (`example`, `default`,
/// `enum` …) stay as written.
fn public_view(value: &mut serde_json::Value) {
    // An ANY route is exported under AWS's `x-amazon-apigateway-any-method`:
    // consumers see it as each method it answers.
    if let Some(paths) = value.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        for item in paths.values_mut().filter_map(serde_json::Value::as_object_mut) {
            if let Some(any) = item.get("x-amazon-apigateway-any-method").cloned() {
                for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
                    item.entry(method).or_insert_with(|| any.clone());
                }
            }
        }
    }
    strip_extensions(value, Position::Object);
    if let Some(schemes) = value
        .pointer_mut("/components/securitySchemes")
        .and_then(serde_json::Value::as_object_mut)
    {
        for scheme in schemes.values_mut() {
            if let Some(scheme) = scheme.as_object_mut() {
                scheme.remove("description");
            }
        }
    }
}

/// What a JSON value is in an OpenAPI document.
#[derive(Clone, Copy)]
enum Position {
    /// An OpenAPI or JSON Schema object: its `x-*` keys are extensions.
    Object,
    /// A map whose keys are names (each value an [`Position::Object`]).
    Names,
    /// A value (an example, a default): kept whole.
    Data,
}

fn strip_extensions(value: &mut serde_json::Value, position: Position) {
    match (position, value) {
        (Position::Data, _) => {}
        (Position::Names, serde_json::Value::Object(map)) => {
            map.values_mut()
                .for_each(|child| strip_extensions(child, Position::Object));
        }
        (Position::Object, serde_json::Value::Object(map)) => {
            map.retain(|key, _| !key.starts_with("x-"));
            for (key, child) in map.iter_mut() {
                let position = match key.as_str() {
                    // (A security requirement's keys are scheme names.)
                    "example" | "examples" | "default" | "enum" | "const" | "value" | "security" => {
                        Position::Data
                    }
                    "properties" | "patternProperties" | "$defs" | "definitions" | "content" | "headers"
                    | "links" | "callbacks" | "encoding" | "variables" | "schemas" | "responses"
                    | "parameters" | "requestBodies" | "securitySchemes" | "dependentSchemas"
                    | "dependentRequired" | "dependencies" | "mapping" => Position::Names,
                    _ => Position::Object,
                };
                strip_extensions(child, position);
            }
        }
        (_, serde_json::Value::Array(items)) => items
            .iter_mut()
            .for_each(|item| strip_extensions(item, Position::Object)),
        _ => {}
    }
}

/// The stage's OpenAPI export in its public view (see [`public_view`]),
/// served from the gateway URL visitors call (`servers`).
async fn export(portal: &Portal, api: &str, stage: &str) -> Result<serde_json::Value, tonic::Status> {
    let document = export_document(portal, api, stage).await?;
    let mut value: serde_json::Value =
        serde_json::from_str(&document).map_err(|e| tonic::Status::internal(e.to_string()))?;
    public_view(&mut value);
    if let Some(root) = value.as_object_mut() {
        root.insert(
            "servers".into(),
            serde_json::json!([{ "url": base_url(portal, api, stage) }]),
        );
    }
    Ok(value)
}

/// Where visitors call a stage: the gateway URL template filled in.
fn base_url(portal: &Portal, api: &str, stage: &str) -> String {
    portal
        .settings
        .gateway_url
        .replace("{api}", api)
        .replace("{stage}", stage)
}

async fn export_document(portal: &Portal, api: &str, stage: &str) -> Result<String, tonic::Status> {
    let request = GetExportRequest {
        api: api.to_owned(),
        stage: stage.to_owned(),
        format: "json".into(),
        ..Default::default()
    };
    portal
        .admin
        .get_export(tonic::Request::new(request))
        .await
        .map(|r| r.into_inner().document)
}

/// The operations of an OpenAPI document, for the reference.
fn operations(document: &serde_json::Value) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(paths) = document.get("paths").and_then(|p| p.as_object()) else {
        return out;
    };
    let global_security = document
        .get("security")
        .and_then(|s| s.as_array())
        .is_some_and(|s| !s.is_empty());
    for (path, item) in paths {
        let Some(item) = item.as_object() else { continue };
        let shared: Vec<serde_json::Value> = item
            .get("parameters")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default();
        for (method, op) in item {
            let upper = method.to_ascii_uppercase();
            if ![
                "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
            ]
            .contains(&upper.as_str())
            {
                continue;
            }
            let mut parameters: Vec<Value> = Vec::new();
            for p in shared.iter().chain(
                op.get("parameters")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten(),
            ) {
                parameters.push(context! {
                    name => p.get("name").and_then(|v| v.as_str()).unwrap_or("").to_owned(),
                    in => p.get("in").and_then(|v| v.as_str()).unwrap_or("").to_owned(),
                    required => p.get("required").and_then(serde_json::Value::as_bool).unwrap_or(false),
                });
            }
            let key_required = match op.get("security").and_then(|s| s.as_array()) {
                Some(security) => !security.is_empty(),
                None => global_security,
            };
            let example: String = path
                .split('/')
                .map(|segment| if segment.starts_with('{') { "1" } else { segment })
                .collect::<Vec<_>>()
                .join("/");
            out.push(context! {
                method => upper,
                path => path.clone(),
                example,
                summary => op.get("summary").or_else(|| op.get("description")).and_then(|v| v.as_str()).unwrap_or("").to_owned(),
                parameters,
                key_required,
            });
        }
    }
    out
}

/// The page of an API that is not published (or does not exist).
fn no_such_api(portal: &Portal, visitor: &Visitor) -> Response {
    message(
        portal,
        Some(visitor),
        StatusCode::NOT_FOUND,
        "Not found",
        "No such published API.",
    )
}

async fn api(
    State(portal): Shared,
    headers: HeaderMap,
    Path((api, stage)): Path<(String, String)>,
) -> Response {
    let visitor = Visitor::of(&portal, &headers).await;
    let Some(offer) = offer(&portal, &api, &stage) else {
        return no_such_api(&portal, &visitor);
    };
    let document = match export(&portal, &api, &stage).await {
        Ok(document) => document,
        Err(status) => {
            return message(
                &portal,
                Some(&visitor),
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                status.message(),
            );
        }
    };
    let base_url = base_url(&portal, &api, &stage);
    render(
        &portal,
        Some(&visitor),
        StatusCode::OK,
        "api.html",
        "catalog",
        context! {
            api, stage, base_url,
            description => offer.api.description.clone(),
            plan => offer.plan.name.clone(),
            limits => limits(&offer.plan),
            operations => operations(&document),
        },
    )
}

/// The API's reference in the vendored Swagger UI, over the same public
/// document as `openapi.json`.
async fn reference(
    State(portal): Shared,
    headers: HeaderMap,
    Path((api, stage)): Path<(String, String)>,
) -> Response {
    let visitor = Visitor::of(&portal, &headers).await;
    if offer(&portal, &api, &stage).is_none() {
        return no_such_api(&portal, &visitor);
    }
    let base_url = base_url(&portal, &api, &stage);
    render(
        &portal,
        Some(&visitor),
        StatusCode::OK,
        "reference.html",
        "catalog",
        context! { api, stage, base_url, swagger_ui => templates::SWAGGER_UI_VERSION },
    )
}

async fn openapi(State(portal): Shared, Path((api, stage)): Path<(String, String)>) -> Response {
    if offer(&portal, &api, &stage).is_none() {
        return (StatusCode::NOT_FOUND, "no such published API").into_response();
    }
    match export(&portal, &api, &stage).await {
        Ok(document) => ([(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response(),
        Err(status) => (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response(),
    }
}

// ---- sign-up and login ----

/// A form shown before login, with its double-submit token (in the page
/// and in a cookie only this origin can set or read).
fn anonymous_form(
    portal: &Portal,
    heading: &str,
    signup: bool,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let mut response = render(
        portal,
        None,
        status,
        "form.html",
        "",
        context! { heading, signup, email, error, form_csrf => token.clone() },
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(portal, FORM_COOKIE, &token, 3600));
    response
}

fn form_token_ok(headers: &HeaderMap, fields: &HashMap<String, String>) -> bool {
    use subtle::ConstantTimeEq as _;
    match (session::cookie(headers, FORM_COOKIE), fields.get("csrf")) {
        (Some(cookie), Some(field)) if !cookie.is_empty() && cookie.len() == field.len() => {
            bool::from(cookie.as_bytes().ct_eq(field.as_bytes()))
        }
        _ => false,
    }
}

async fn signup_page(State(portal): Shared) -> Response {
    anonymous_form(&portal, "Sign up", true, "", None, StatusCode::OK)
}

async fn fields_and_peer(request: Request) -> (HeaderMap, Option<std::net::IpAddr>, HashMap<String, String>) {
    let peer = request.extensions().get::<Peer>().map(|p| p.0.ip());
    let headers = request.headers().clone();
    let fields = Form::<HashMap<String, String>>::from_request(request, &())
        .await
        .map(|Form(f)| f)
        .unwrap_or_default();
    (headers, peer, fields)
}

async fn signup(State(portal): Shared, request: Request) -> Response {
    let (headers, peer, fields) = fields_and_peer(request).await;
    let email = fields.get("email").cloned().unwrap_or_default();
    if !form_token_ok(&headers, &fields) {
        return anonymous_form(
            &portal,
            "Sign up",
            true,
            &email,
            Some("the form expired: try again"),
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(ip) = peer
        && !portal.signups.take(ip, SIGNUP_RATE)
    {
        return anonymous_form(
            &portal,
            "Sign up",
            true,
            &email,
            Some("too many sign-ups from this address: wait a minute"),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    match portal.admin.sign_up_consumer(&email, password).await {
        Ok(consumer) => {
            tracing::info!(email = %consumer.email, peer = ?peer, "portal: a consumer signed up");
            message(
                &portal,
                None,
                StatusCode::OK,
                "Thank you",
                "Your account waits for an operator's approval; log in once it is approved.",
            )
        }
        // The same answer whether the address is taken or not: sign-up
        // does not tell who has an account.
        Err(status) if status.code() == Code::AlreadyExists => message(
            &portal,
            None,
            StatusCode::OK,
            "Thank you",
            "Your account waits for an operator's approval; log in once it is approved.",
        ),
        Err(status) if status.code() == Code::Unavailable => message(
            &portal,
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "sign-up is unavailable for a moment (the cluster has no leader): try again",
        ),
        Err(status) => anonymous_form(
            &portal,
            "Sign up",
            true,
            &email,
            Some(status.message()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    }
}

async fn login_page(State(portal): Shared) -> Response {
    anonymous_form(&portal, "Log in", false, "", None, StatusCode::OK)
}

async fn login(State(portal): Shared, request: Request) -> Response {
    let (headers, peer, fields) = fields_and_peer(request).await;
    let email = fields.get("email").cloned().unwrap_or_default();
    if !form_token_ok(&headers, &fields) {
        return anonymous_form(
            &portal,
            "Log in",
            false,
            &email,
            Some("the form expired: try again"),
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(ip) = peer
        && !portal.logins.take(ip, LOGIN_RATE)
    {
        return anonymous_form(
            &portal,
            "Log in",
            false,
            &email,
            Some("too many attempts from this address: wait a minute"),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let password = fields.get("password").map(String::as_str).unwrap_or("");
    let Some(consumer) = portal.admin.check_consumer_password(&email, password).await else {
        return anonymous_form(
            &portal,
            "Log in",
            false,
            &email,
            Some("wrong email or password"),
            StatusCode::UNAUTHORIZED,
        );
    };
    match ConsumerStatus::try_from(consumer.status) {
        Ok(ConsumerStatus::Approved) => {}
        Ok(ConsumerStatus::Disabled) => {
            return anonymous_form(
                &portal,
                "Log in",
                false,
                &email,
                Some("this account is disabled"),
                StatusCode::FORBIDDEN,
            );
        }
        _ => {
            return anonymous_form(
                &portal,
                "Log in",
                false,
                &email,
                Some("this account waits for an operator's approval"),
                StatusCode::FORBIDDEN,
            );
        }
    }
    let key = match portal.admin.console_key().await {
        Ok(key) => key,
        Err(status) => {
            return message(
                &portal,
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                status.message(),
            );
        }
    };
    let session = Session::new(&format!("{CONSUMER}{}", consumer.email), &[]);
    let Ok(value) = session::seal(&key, &session) else {
        return message(
            &portal,
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "no session",
        );
    };
    let mut response = Redirect::to("/keys").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&portal, cookie_name(&portal), &value, session::MAX_AGE.as_secs()),
    );
    response
}

async fn logout(State(portal): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let visitor = Visitor::of(&portal, &headers).await;
    if visitor.email.is_some() && !visitor.csrf_ok(&fields) {
        return csrf_refused(&portal, &visitor);
    }
    if let Some(session) = &visitor.session {
        let until = (session.issued + session::MAX_AGE.as_secs()) as i64;
        if let Err(status) = portal
            .admin
            .end_session(&session.name, &session.csrf, until)
            .await
        {
            tracing::warn!(error = %status.message(), "portal: a logout could not end the session cluster-wide");
        }
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&portal, cookie_name(&portal), "", 0),
    );
    response
}

// ---- keys ----

async fn keys_page(portal: &Portal, visitor: &Visitor, created: Option<Value>) -> Response {
    let Some(email) = &visitor.email else {
        return Redirect::to("/login").into_response();
    };
    let mut rows = Vec::new();
    let keys = portal.admin.consumer_keys(email);
    for (key, plan) in &keys {
        let usage = match plan {
            Some(plan) => {
                portal
                    .admin
                    .key_usage(&plan.name, std::slice::from_ref(&key.id))
                    .await
            }
            None => None,
        };
        let (used, remaining) = usage
            .and_then(|u| u.into_iter().next())
            .map_or(("–".to_owned(), "–".to_owned()), |(_, used, remaining)| {
                (used.to_string(), remaining.to_string())
            });
        rows.push(context! {
            id => key.id.clone(),
            prefix => key.key_prefix.clone(),
            plan => plan.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            used, remaining,
        });
    }
    let offers: Vec<Value> = portal
        .admin
        .offers()
        .iter()
        .map(|o| context! { api => o.api.name.clone(), stage => o.stage.name.clone(), plan => o.plan.name.clone() })
        .collect();
    render(
        portal,
        Some(visitor),
        StatusCode::OK,
        "keys.html",
        "keys",
        context! { keys => rows, offers, created },
    )
}

async fn keys(State(portal): Shared, headers: HeaderMap) -> Response {
    let visitor = Visitor::of(&portal, &headers).await;
    keys_page(&portal, &visitor, None).await
}

/// The answer to a refused key call.
fn refused(portal: &Portal, visitor: &Visitor, status: &tonic::Status) -> Response {
    let code = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    message(portal, Some(visitor), code, "Refused", status.message())
}

async fn create_key(State(portal): Shared, headers: HeaderMap, Form(fields): Fields) -> Response {
    let (visitor, email) = match Visitor::posting(&portal, &headers, &fields).await {
        Ok(posting) => posting,
        Err(refused) => return refused,
    };
    let offer = fields.get("offer").cloned().unwrap_or_default();
    let Some((api, stage)) = offer.split_once('/') else {
        return message(
            &portal,
            Some(&visitor),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Refused",
            "offer: API/STAGE",
        );
    };
    match portal.admin.issue_consumer_key(&email, api, stage, None).await {
        Ok((key, value)) => {
            let plan = offer_plan(&portal, api, stage);
            let created = context! { id => key.id, value, api => format!("{api}/{stage}"), plan };
            keys_page(&portal, &visitor, Some(created)).await
        }
        Err(status) => refused(&portal, &visitor, &status),
    }
}

fn offer_plan(portal: &Portal, api: &str, stage: &str) -> String {
    offer(portal, api, stage).map(|o| o.plan.name).unwrap_or_default()
}

async fn rotate_key(
    State(portal): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Fields,
) -> Response {
    let (visitor, email) = match Visitor::posting(&portal, &headers, &fields).await {
        Ok(posting) => posting,
        Err(refused) => return refused,
    };
    // The stage the old key's plan is offered on.
    let keys = portal.admin.consumer_keys(&email);
    let plan = keys
        .iter()
        .find(|(k, _)| k.id == id)
        .and_then(|(_, plan)| plan.clone());
    let offer = plan.and_then(|plan| {
        portal
            .admin
            .offers()
            .into_iter()
            .find(|o| o.plan.name == plan.name)
    });
    let Some(offer) = offer else {
        return message(
            &portal,
            Some(&visitor),
            StatusCode::NOT_FOUND,
            "Refused",
            "no such key of yours on a published API",
        );
    };
    match portal
        .admin
        .issue_consumer_key(&email, &offer.api.name, &offer.stage.name, Some(&id))
        .await
    {
        Ok((key, value)) => {
            let created = context! {
                id => key.id, value,
                api => format!("{}/{}", offer.api.name, offer.stage.name),
                plan => offer.plan.name.clone(),
            };
            keys_page(&portal, &visitor, Some(created)).await
        }
        Err(status) => refused(&portal, &visitor, &status),
    }
}

async fn revoke_key(
    State(portal): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Fields,
) -> Response {
    let (visitor, email) = match Visitor::posting(&portal, &headers, &fields).await {
        Ok(posting) => posting,
        Err(refused) => return refused,
    };
    match portal.admin.revoke_consumer_key(&email, &id).await {
        Ok(()) => keys_page(&portal, &visitor, None).await,
        Err(status) => refused(&portal, &visitor, &status),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_public_view_keeps_no_extension_at_any_depth() {
        let mut document = serde_json::json!({
            "openapi": "3.0.3",
            "x-pylon-api": {"secret": 1},
            "paths": {"/a": {"get": {
                "summary": "A",
                "x-pylon-route": {"integration": {"uri": "http://internal.corp/"}},
                "x-amazon-apigateway-integration": {"requestParameters": {"h": "'Bearer sk'"}},
                "responses": {"200": {"description": "ok"}}
            }}}
        });
        super::public_view(&mut document);
        let text = document.to_string();
        assert!(
            !text.contains("x-") && !text.contains("internal.corp") && !text.contains("sk"),
            "{text}"
        );
        assert_eq!(document["paths"]["/a"]["get"]["summary"], "A");
    }

    #[test]
    fn the_public_view_keeps_names_and_data_that_start_with_x_and_drops_scheme_notes() {
        let mut document = serde_json::json!({
            "openapi": "3.0.3",
            "paths": {"/a": {"get": {"responses": {"200": {"description": "ok", "x-amazon-apigateway-x": 1}}}}},
            "components": {
                "schemas": {"Thing": {
                    "type": "object",
                    "required": ["x-api-version"],
                    "x-pylon-note": "internal",
                    "properties": {
                        "x-api-version": {"type": "string", "x-internal": true},
                        "meta": {"type": "object", "example": {"x-trace": "abc", "y": 1}, "default": {"x-d": 1}}
                    }
                }},
                "securitySchemes": {"gate": {
                    "type": "apiKey", "name": "Authorization", "in": "header",
                    "description": "checked at http://authz.internal:9000/check?apikey=SECRET",
                    "x-amazon-apigateway-authorizer": {"authorizerUri": "http://authz.internal:9000/"}
                }}
            }
        });
        super::public_view(&mut document);
        let thing = &document["components"]["schemas"]["Thing"];
        assert_eq!(
            thing["properties"]["x-api-version"],
            serde_json::json!({"type": "string"})
        );
        assert_eq!(
            thing["properties"]["meta"]["example"],
            serde_json::json!({"x-trace": "abc", "y": 1})
        );
        assert_eq!(
            thing["properties"]["meta"]["default"],
            serde_json::json!({"x-d": 1})
        );
        assert_eq!(thing["required"], serde_json::json!(["x-api-version"]));
        assert!(thing.get("x-pylon-note").is_none());
        let text = document.to_string();
        assert!(
            !text.contains("authz.internal") && !text.contains("x-amazon"),
            "{text}"
        );
        assert_eq!(
            document["components"]["securitySchemes"]["gate"]["type"],
            "apiKey"
        );
    }

    #[test]
    fn the_public_view_keeps_scheme_names_in_requirements_and_shows_any_as_each_method() {
        let mut document = serde_json::json!({
            "paths": {
                "/a": {"get": {"security": [{"x-authz": []}], "responses": {}}},
                "/any": {"x-amazon-apigateway-any-method": {"summary": "all", "x-amazon-apigateway-integration": {}}}
            },
            "components": {"schemas": {"Pet": {"discriminator": {"propertyName": "kind", "mapping": {"x-kind": "#/x"}}}}}
        });
        super::public_view(&mut document);
        assert_eq!(
            document["paths"]["/a"]["get"]["security"],
            serde_json::json!([{"x-authz": []}])
        );
        assert_eq!(
            document["paths"]["/any"]["delete"],
            serde_json::json!({"summary": "all"})
        );
        assert!(
            document["paths"]["/any"]
                .get("x-amazon-apigateway-any-method")
                .is_none()
        );
        assert_eq!(
            document["components"]["schemas"]["Pet"]["discriminator"]["mapping"],
            serde_json::json!({"x-kind": "#/x"})
        );
    }
}
