//! The developer portal (`--portal-listen`): the catalog of published
//! stages (a stage opts in with `publication: {published: true,
//! usage_plan: P}`), each API's reference from its OpenAPI export with a
//! "try it" that calls the gateway from the visitor's browser, consumer
//! sign-up (approved by an operator), and self-service API keys in the
//! offered plan with their usage.
//!
//! It shares the console's machinery — sealed session cookies under the
//! cluster's key ([`crate::console::session`]), the listener and the
//! security headers — with its own cookie, and makes its writes through
//! the admin API's consumer calls (`admin::consumers`), which the state
//! machine checks against the consumer they name. Consumers never see the
//! console or each other.

mod pages;
mod templates;

use crate::admin::AdminApi;
use crate::console::Buckets;
use std::sync::Arc;
use std::time::Duration;

/// Sign-ups a source address may make: 5, then one a minute.
pub const SIGNUP_RATE: (u32, Duration) = (5, Duration::from_secs(60));
/// Logins a source address may make: 10, then one every 6 seconds.
pub const LOGIN_RATE: (u32, Duration) = (10, Duration::from_secs(6));

/// Where the portal listens and how visitors reach the gateway.
#[derive(Clone, Debug)]
pub struct PortalSettings {
    /// The gateway's URL for an API's stage, with `{api}` and `{stage}`
    /// (e.g. `https://{api}.api.example.com/{stage}`).
    pub gateway_url: String,
}

/// What every portal page shares.
pub struct Portal {
    admin: Arc<AdminApi>,
    templates: minijinja::Environment<'static>,
    settings: PortalSettings,
    tls: bool,
    loopback: bool,
    /// The gateway origins "try it" may call (`connect-src`).
    connect: String,
    signups: Buckets,
    logins: Buckets,
}

/// The origin of a gateway URL template, with `{api}` as a wildcard label
/// (`https://{api}.example.com/{stage}` → `https://*.example.com`).
fn gateway_origin(template: &str) -> String {
    let (scheme, rest) = template.split_once("://").unwrap_or(("https", template));
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.replace("{api}", "*").replace("{stage}", "*");
    // Only what CSP reads as a host source: no quotes, spaces or semicolons.
    let authority: String = authority
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':' | '[' | ']'))
        .collect();
    format!("{scheme}://{authority}")
}

impl Portal {
    pub fn new(admin: Arc<AdminApi>, settings: PortalSettings, tls: bool, loopback: bool) -> Portal {
        Portal {
            admin,
            templates: templates::environment(),
            connect: gateway_origin(&settings.gateway_url),
            settings,
            tls,
            loopback,
            signups: Buckets::default(),
            logins: Buckets::default(),
        }
    }

    /// The Content Security Policy of every portal answer.
    fn csp(&self) -> String {
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' {}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            self.connect
        )
    }
}

/// Headers on every answer, and the Host check on loopback.
async fn guard(
    portal: axum::extract::State<Arc<Portal>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::console::guarded(portal.loopback, portal.tls, &portal.csp(), request, next).await
}

/// The portal's routes with its guard, ready to serve.
pub fn router(portal: Arc<Portal>) -> axum::Router {
    pages::routes()
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn_with_state(portal.clone(), guard))
        .with_state(portal)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gateway_origin_is_a_wildcard_host_source() {
        assert_eq!(
            super::gateway_origin("http://{api}.localhost:8080/{stage}"),
            "http://*.localhost:8080"
        );
        assert_eq!(
            super::gateway_origin("https://api.example.com/{api}/{stage}"),
            "https://api.example.com"
        );
        // The node refuses such a URL at start; what is left could not
        // widen the policy anyway (one host source, no quote or `;`).
        assert_eq!(
            super::gateway_origin("https://x.com'; script-src *"),
            "https://x.comscript-src*"
        );
    }
}
