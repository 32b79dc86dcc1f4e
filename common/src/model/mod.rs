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
    if let Some(problem) = authority_problem(authority, value[..5].eq_ignore_ascii_case("https")) {
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

/// Why `host` cannot be the name a TLS connection verifies, judged as the
/// data plane's TLS judges server names (rustls' `ServerName`): an IP
/// address, or a DNS name of labels of letters, digits, `-` and `_`, each
/// 1–63 bytes and not starting or ending with `-`, 253 bytes at most, with
/// at most one trailing dot, whose last label is not a number
/// (`1.2.3.256` and `host.0x1f` are neither addresses nor names).
fn tls_name_problem(host: &str) -> Option<&'static str> {
    rustls_pki_types::ServerName::try_from(host).err().map(|_| {
        "an https host must be an IP address or a DNS name (dot-separated labels of 1 to 63 letters, digits, - and _, none starting or ending with -, the last not a number)"
    })
}

/// A CORS origin as browsers send `Origin` (RFC 6454 §6.1, serialized as
/// the WHATWG URL standard does): `*`, or `scheme://host[:port]` without a
/// path, query, userinfo or wildcard. The data plane compares origins byte
/// for byte, so any spelling a browser would never send is refused (it
/// would be accepted and never match): see [`origin_problem`].
pub(crate) fn check_origin(c: &mut Checker, path: &str, origin: &str) {
    if origin == "*" {
        return;
    }
    if let Some(problem) = origin_problem(origin) {
        c.fail(path, problem);
    }
}

/// Why `origin` is not written as browsers send `Origin`, if it is not.
///
/// Any scheme is an origin's (apps send `capacitor://localhost`,
/// extensions `chrome-extension://<id>`), in lower case. For `http` and
/// `https`, browsers also lower-case the host, leave out the default port,
/// write an IPv4 address as four decimal numbers (`http://127.1` is sent as
/// `http://127.0.0.1`), and the URL rules of [`http_url_problem`] apply.
/// For every scheme a port is written without leading zeros and an IPv6
/// address in its shortest form (`[::1]`). `null` is refused: sandboxed
/// frames and local files send it, so any page can.
fn origin_problem(origin: &str) -> Option<&'static str> {
    const SHAPE: &str = "an origin is scheme://host[:port], such as https://app.example";
    if origin.contains(['{', '}']) {
        return Some("must not contain placeholders ({...}, ${...}): an origin is used as written");
    }
    if origin == "null" {
        return Some("the null origin is refused: sandboxed frames and local files send it, so any page can");
    }
    if !origin.is_ascii() || origin.chars().any(|ch| ch.is_control() || ch == ' ') {
        return Some(
            "must be ASCII without spaces: an internationalized host in its xn-- form, as browsers send it",
        );
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Some(SHAPE);
    };
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let special = matches!(scheme, "http" | "https");
    let problem = if !scheme_ok {
        SHAPE
    } else if rest.contains('*') {
        "wildcards are not supported: list each origin, or allow \"*\""
    } else if rest.contains(['/', '?', '#']) {
        "an origin is scheme://host[:port], without a path, query or trailing slash"
    } else if rest.contains('@') {
        "an origin has no userinfo"
    } else if scheme.bytes().any(|b| b.is_ascii_uppercase())
        || (special && rest.bytes().any(|b| b.is_ascii_uppercase()))
    {
        "must be lower case, as browsers send Origin"
    } else if rest.is_empty() || rest.starts_with(':') {
        SHAPE
    } else {
        return canonical_origin_problem(scheme, rest, special);
    };
    Some(problem)
}

/// The host and port rules of [`origin_problem`], for `rest` (what
/// follows `scheme://`), once its shape is right.
fn canonical_origin_problem(scheme: &str, rest: &str, special: bool) -> Option<&'static str> {
    if special && let Err(problem) = http_url_problem(&format!("{scheme}://{rest}")) {
        return Some(problem);
    }
    let host = match split_authority(rest) {
        Ok(host) => host,
        Err(problem) => return Some(problem),
    };
    if let Some(port) = host.port {
        if port.starts_with('0') {
            return Some("the port must be written without leading zeros, as browsers send it");
        }
        // The WHATWG URL standard's special schemes and their default ports.
        if matches!(
            (scheme, port),
            ("http" | "ws", "80") | ("https" | "wss", "443") | ("ftp", "21")
        ) {
            return Some("must leave out the scheme's default port, as browsers do");
        }
    }
    if host.ipv6 {
        let shortest = host
            .name
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|address| ipv6_as_browsers_write(address) == host.name);
        return (!shortest).then_some(
            "an IPv6 host must be written as browsers send it: lower case, shortest form ([::1], not [0:0:0:0:0:0:0:1])",
        );
    }
    if !host
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Some("the host must be letters, digits, -, . and _, or an IP address");
    }
    if special && ends_in_a_number(host.name) {
        let dotted_quad = host
            .name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.to_string() == host.name);
        if !dotted_quad {
            return Some(
                "an IPv4 host must be written as browsers send it: four decimal numbers without leading zeros (127.0.0.1, not 127.1)",
            );
        }
    }
    None
}

/// Whether browsers read `host` as an IPv4 address: its last label (one
/// trailing dot aside) is a decimal, octal or hexadecimal number (the
/// WHATWG URL standard's "ends in a number").
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or("");
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An IPv6 address as the WHATWG URL standard serializes it: lower-case
/// hexadecimal pieces without leading zeros, the first longest run of two
/// or more zero pieces written `::`. (Rust's `Display` differs only for
/// IPv4-mapped addresses, which it writes with a dotted quad.)
fn ipv6_as_browsers_write(address: std::net::Ipv6Addr) -> String {
    use std::fmt::Write as _;
    let pieces = address.segments();
    let (mut compress, mut longest, mut index) = (None, 1, 0);
    while index < pieces.len() {
        let start = index;
        while index < pieces.len() && pieces[index] == 0 {
            index += 1;
        }
        if index - start > longest {
            (compress, longest) = (Some(start), index - start);
        }
        index = index.max(start + 1);
    }
    let mut out = String::with_capacity(39);
    let mut in_run = false;
    for (index, piece) in pieces.iter().enumerate() {
        if in_run && *piece == 0 {
            continue;
        }
        in_run = false;
        if compress == Some(index) {
            out.push_str(if index == 0 { "::" } else { ":" });
            in_run = true;
            continue;
        }
        let _ = write!(out, "{piece:x}");
        if index != pieces.len() - 1 {
            out.push(':');
        }
    }
    out
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
/// userinfo (`user:password@` is never sent — a backend's credentials go in
/// a header mapping — and would be printed wherever the URL is logged),
/// no host, an IPv6 literal that is not an IPv6 address in brackets, a
/// port that is not a number from 1 to 65535, or, for `https` (`tls`), a
/// host TLS cannot verify (rustls' server-name rules). `None` when it can.
/// A port out of range must be refused: URI parsers read it as no port at
/// all, and the request would go to the scheme's default port; an empty
/// one too (`host:` is a slip when written, and filled from an undefined
/// stage variable it would silently mean the default port).
pub fn authority_problem(authority: &str, tls: bool) -> Option<&'static str> {
    match split_authority(authority) {
        Err(problem) => Some(problem),
        Ok(host) if tls && !host.ipv6 => tls_name_problem(host.name),
        Ok(_) => None,
    }
}

/// Removes the userinfo (`user:password@`) from an `http(s)://` URL's
/// authority, as a deployment stored before the admin API refused it still
/// holds it: it was never sent, so serving the URL without it changes
/// nothing. `true` when there was one.
pub fn strip_userinfo(url: &mut String) -> bool {
    let Some(start) = after_http_scheme(url).map(|rest| url.len() - rest.len()) else {
        return false;
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |end| start + end);
    match url[start..end].rfind('@') {
        Some(at) => {
            url.replace_range(start..=start + at, "");
            true
        }
        None => false,
    }
}

/// Removes userinfo ([`strip_userinfo`]) from the integration and
/// authorizer URLs of an API or deployment stored before the admin API
/// refused it, so that it is served (and restored from a backup) as before.
/// `true` when one was removed.
pub fn drop_stored_userinfo(api: &mut pylon_proto::config::v1::Api) -> bool {
    use pylon_proto::config::v1::authorizer::Kind;
    let mut dropped = false;
    for integration in api
        .routes
        .iter_mut()
        .filter_map(|route| route.integration.as_mut())
    {
        dropped |= strip_userinfo(&mut integration.uri);
    }
    for kind in api
        .authorizers
        .iter_mut()
        .filter_map(|authorizer| authorizer.kind.as_mut())
    {
        match kind {
            Kind::Jwt(jwt) => {
                dropped |= strip_userinfo(&mut jwt.jwks_uri);
                dropped |= strip_userinfo(&mut jwt.discovery_url);
            }
            Kind::Request(request) => dropped |= strip_userinfo(&mut request.uri),
        }
    }
    dropped
}

/// A URL authority's host, as [`authority_problem`] judges it.
struct Host<'a> {
    /// Without brackets for an IPv6 literal, without the port.
    name: &'a str,
    ipv6: bool,
    /// As written, digits only.
    port: Option<&'a str>,
}

/// The host of `authority` (`host[:port]`), once it is one
/// [`authority_problem`] accepts (userinfo, `user:password@`, is refused).
///
/// # Errors
/// Why it is not, as a field error's message.
fn split_authority(authority: &str) -> Result<Host<'_>, &'static str> {
    const NO_HOST: &str = "must be an http:// or https:// URL with a host";
    const BAD_IPV6: &str = "an IPv6 host must be an IPv6 address in brackets: [address] or [address]:port";
    if authority.contains('@') {
        return Err("must not carry userinfo (user:password@): it is never sent");
    }
    let host_port = authority;
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
        _ => Ok(Host { name, ipv6, port }),
    }
}

pub(crate) const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[cfg(test)]
mod tests;
