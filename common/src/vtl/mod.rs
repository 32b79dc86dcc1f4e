//! The Velocity (VTL) subset AWS API Gateway mapping templates are written
//! in, so imported REST APIs keep their templates: `$input` (`body`,
//! `json(path)`, `path(path)`, `params()`, `params(name)`), `$util`
//! (`escapeJavaScript`, `urlEncode`, `urlDecode`, `base64Encode`,
//! `base64Decode`, `parseJson`), `$context` (with
//! `$context.responseOverride.status` and `.header.NAME` settable),
//! `$stageVariables`, `#set`, `#if`/`#elseif`/`#else`, `#foreach` with
//! `$foreach.hasNext`/`.index`/`.count` (and `$velocityCount`), `#break`,
//! Java-style methods on strings, lists and maps (`contains`, `length`,
//! `size`, `toString`, `replaceAll`, `replace`, `substring`, `indexOf`,
//! `toLowerCase`, `toUpperCase`, `trim`, `startsWith`, `endsWith`,
//! `split`, `equals`, `isEmpty`, `get`, `keySet`, `containsKey`).
//!
//! Rendering is bounded like the minijinja templates: a fuel budget
//! ([`FUEL`] steps) and an output bound ([`MAX_OUTPUT`] bytes); running out
//! is an error, never a partial body. Values follow Java's printing: a map
//! prints as `{a=1, b=2}`, a list as `[1, 2]`, an absent reference as its
//! own text (`$x`) unless quiet (`$!x`).

mod eval;
mod parse;

pub use eval::{Inputs, Override, RenderError, render};
pub use parse::{Node, ParseError, parse};

/// Steps (nodes, expressions, loop turns) one render may take.
pub const FUEL: u64 = 200_000;
/// Bytes one render may produce.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// Whether `source` is a template this subset runs.
///
/// # Errors
/// The line and why (a directive outside the subset, a malformed
/// expression, an unclosed block).
pub fn check(source: &str) -> Result<(), ParseError> {
    parse(source).map(drop)
}

#[cfg(test)]
mod tests;
