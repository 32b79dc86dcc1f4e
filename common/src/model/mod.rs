//! The resource model, raw → validated.
//!
//! Raw input is the protobuf/JSON form from `pylon-proto` (`config::v1`); the
//! validated types here wrap it with a private field, so holding an
//! [`ApiDefinition`] proves it passed [`ApiDefinition::validate`]. Validation
//! never stops at the first problem: it returns every [`FieldError`], each with
//! the path of the field at fault (`routes[2].integration.timeout_ms`).
//!
//! Checks that need other resources (does the deployment exist?) are not here:
//! the control plane's state machine makes them.

mod api;
mod document;
mod path;
mod plan;
mod stage;

pub mod mapping;
pub mod template;

pub use api::{ApiDefinition, DEFAULT_INTEGRATION_TIMEOUT_MS, RouteKey};
pub use document::{DocumentError, MAX_FLOW_NESTING, check_nesting, parse_documents};
pub use path::{PathSegment, PathTemplate};
pub use plan::{ApiKeyConfig, DomainNameConfig, UsagePlanConfig, validate_api_key_value};
pub use stage::StageConfig;
pub use template::compile_schema;

use std::fmt;

/// An integration response's selection pattern as a regular expression
/// matching a whole status code (AWS matches Java regular expressions with
/// `matches()`, i.e. anchored at both ends).
///
/// # Errors
/// Not a regular expression, or one too large to compile (1 MiB of
/// compiled program).
pub fn selection_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// One field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Whether some error is about exactly this field.
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

/// Collects errors while walking a resource; `at` builds field paths.
#[derive(Default)]
pub(crate) struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    pub(crate) fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.fail(path, message);
        }
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ValidationErrors(self.errors))
        }
    }
}

/// `parent.field`, or `field` at the top.
pub(crate) fn at(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// `parent[index]`.
pub(crate) fn idx(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// `parent["key"]`, for map entries.
pub(crate) fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key:?}]")
}

/// A DNS label: 1-63 chars of a-z, 0-9 and '-', not starting or ending with '-'.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// 1..=max chars of A-Z a-z 0-9 and the given extra characters.
pub(crate) fn is_name(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// An absolute `http`/`https` URL used as written (authorizer URLs, CORS
/// origins): the rules of [`http_url_problem`], and no placeholder (these
/// fields are not filled per request).
pub(crate) fn check_http_url(c: &mut Checker, path: &str, value: &str) {
    if value.contains(['{', '}']) {
        c.fail(
            path,
            "must not contain placeholders ({...}, ${...}): this URL is used as written",
        );
        return;
    }
    if let Err(problem) = http_url_problem(value) {
        c.fail(path, problem);
    }
}

/// Why `value` cannot name a backend, if it cannot: it must be an absolute
/// `http`/`https` URL, the scheme in any case (RFC 3986 §3.1), ASCII only,
/// without a fragment (never sent, RFC 9110 §4.2.4: it would only hide what
/// follows it), with an authority [`authority_problem`] accepts, and — with
/// placeholders in its path or query standing for a segment — accepted by
/// the URI parser the data plane uses, so that whatever passes here
/// compiles there. An authority with a `${...}` placeholder is judged once
/// filled, per request.
///
/// # Errors
/// What is wrong, as a field error's message.
pub(crate) fn http_url_problem(value: &str) -> Result<(), &'static str> {
    if value.chars().any(|ch| ch.is_control() || ch == ' ') {
        return Err("must not contain spaces or control characters");
    }
    if !value.is_ascii() {
        return Err("must be ASCII: percent-encode other characters (RFC 3986 §2.1)");
    }
    let Some(rest) = after_http_scheme(value) else {
        return Err("must be an http:// or https:// URL with a host");
    };
    if value.contains('#') {
        return Err("must not have a fragment (#...): a fragment is never sent");
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains("${") {
        return Ok(());
    }
    let host = split_authority(authority)?;
    if value[..5].eq_ignore_ascii_case("https")
        && !host.ipv6
        && let Some(problem) = tls_name_problem(host.name)
    {
        return Err(problem);
    }
    match http::Uri::try_from(fill_placeholders(value).as_str()) {
        Ok(uri) if uri.authority().is_some() => Ok(()),
        _ => Err("is not a valid URL (RFC 3986)"),
    }
}

/// `value` with each `${...}` and `{...}` replaced by one plain character.
fn fill_placeholders(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let open = if rest[..start].ends_with('$') {
            start - 1
        } else {
            start
        };
        out.push_str(&rest[..open]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why `host` cannot be the name a TLS connection verifies (as rustls
/// reads server names; an IPv6 literal is one): an IPv4 address is one;
/// else a DNS name of labels of
/// letters, digits, `-` and `_`, each 1–63 bytes and not starting or
/// ending with `-`, 253 bytes at most, without a trailing dot, whose last
/// label is not all digits (`1.2.3.256` is neither an address nor a name).
fn tls_name_problem(host: &str) -> Option<&'static str> {
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    if host.len() > 253 || !host.split('.').all(label_ok) || last_numeric {
        return Some(
            "an https host must be an IP address or a DNS name (dot-separated labels of letters, digits, - and _)",
        );
    }
    None
}

/// A CORS origin as browsers send `Origin` (RFC 6454 §6.1): `*`, or
/// `scheme://host[:port]` in lower case, without the scheme's default port,
/// a path, query, userinfo or wildcard: the data plane compares origins
/// byte for byte, and any other spelling would be accepted and never match.
pub(crate) fn check_origin(c: &mut Checker, path: &str, origin: &str) {
    if origin == "*" {
        return;
    }
    let rest = after_http_scheme(origin).unwrap_or("");
    let problem = if origin.contains(['{', '}']) {
        Some("must not contain placeholders ({...}, ${...}): an origin is used as written")
    } else if let Err(problem) = http_url_problem(origin) {
        Some(problem)
    } else if rest.contains(['/', '?']) {
        Some("an origin is scheme://host[:port], without a path, query or trailing slash")
    } else if rest.contains('@') {
        Some("an origin has no userinfo")
    } else if rest.contains('*') {
        Some("wildcards are not supported: list each origin, or allow \"*\"")
    } else if origin.bytes().any(|b| b.is_ascii_uppercase()) {
        Some("must be lower case, as browsers send Origin")
    } else if (origin.starts_with("http://") && rest.ends_with(":80"))
        || (origin.starts_with("https://") && rest.ends_with(":443"))
    {
        Some("must leave out the scheme's default port, as browsers do")
    } else {
        None
    };
    if let Some(problem) = problem {
        c.fail(path, problem);
    }
}

/// What follows `http://` or `https://` (the scheme in any case); `None`
/// for any other scheme.
pub fn after_http_scheme(url: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    })
}

/// Why a URL's authority (`[userinfo@]host[:port]`) cannot name a backend:
/// no host, an IPv6 literal that is not an IPv6 address in brackets, or a
/// port that is not a number from 1 to 65535. `None` when it can. A port out
/// of range must be refused: URI parsers read it as no port at all, and the
/// request would go to the scheme's default port; an empty one too (`host:`
/// is a slip when written, and filled from an undefined stage variable it
/// would silently mean the default port).
pub fn authority_problem(authority: &str) -> Option<&'static str> {
    split_authority(authority).err()
}

/// A URL authority's host, as [`authority_problem`] judges it.
struct Host<'a> {
    /// Without brackets for an IPv6 literal, without userinfo and port.
    name: &'a str,
    ipv6: bool,
}

/// The host of `authority` (`[userinfo@]host[:port]`), once it is one
/// [`authority_problem`] accepts.
///
/// # Errors
/// Why it is not, as a field error's message.
fn split_authority(authority: &str) -> Result<Host<'_>, &'static str> {
    const NO_HOST: &str = "must be an http:// or https:// URL with a host";
    const BAD_IPV6: &str = "an IPv6 host must be an IPv6 address in brackets: [address] or [address]:port";
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (name, port, ipv6) = match host_port.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((address, after)) if address.parse::<std::net::Ipv6Addr>().is_ok() => match after {
                "" => (address, None, true),
                after => match after.strip_prefix(':') {
                    Some(port) => (address, Some(port), true),
                    None => return Err(BAD_IPV6),
                },
            },
            _ => return Err(BAD_IPV6),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (host_port, None, false),
        },
    };
    if name.is_empty() {
        return Err(NO_HOST);
    }
    let port_ok =
        |port: &str| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    match port {
        Some(port) if !port_ok(port) => Err("the port must be a number from 1 to 65535"),
        _ => Ok(Host { name, ipv6 }),
    }
}

pub(crate) const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[cfg(test)]
mod tests;
