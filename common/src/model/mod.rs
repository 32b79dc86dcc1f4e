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

pub(crate) fn check_http_url(c: &mut Checker, path: &str, value: &str) {
    if value.chars().any(|ch| ch.is_control() || ch == ' ') {
        c.fail(path, "must not contain spaces or control characters");
        return;
    }
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => c.fail(path, "must be an http:// or https:// URL with a host"),
    }
}

pub(crate) const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[cfg(test)]
mod tests;
