//! Templates and literals in AWS exports.
//!
//! AWS writes mapping templates in Velocity (VTL). What carries no Velocity
//! at all — plain text, a fixed JSON document — is imported as a Pylon
//! template that renders to exactly that text. A template that uses
//! Velocity is refused with its first Velocity construct (line and text):
//! Pylon's templates are minijinja, and a template half-translated would
//! answer differently from AWS.

use super::Report;
use serde_json::{Map, Value};

/// `'value'` (API Gateway's static-value syntax) → `value`.
pub fn literal(source: &str) -> Option<String> {
    let inner = source.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.to_owned())
}

/// The first Velocity construct in `text`: its 1-based line and the text
/// of that line. References are `$name`, `$!name`, `${name}`; directives
/// are `#set`, `#if`, `#foreach`, … and `#{else}`-style bracketed ones;
/// `##` and `#*` start comments. A `$` or `#` not followed by one of those
/// (a price, `color: #333`) is plain text in Velocity too.
pub fn first_velocity(text: &str) -> Option<(usize, String)> {
    const DIRECTIVES: &[&str] = &[
        "set", "if", "elseif", "else", "end", "foreach", "break", "stop", "macro", "define", "include",
        "parse", "evaluate",
    ];
    for (number, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let rest = &line[i + 1..];
            let hit = match b {
                b'$' => {
                    let rest = rest.strip_prefix('!').unwrap_or(rest);
                    let rest = rest.strip_prefix('{').unwrap_or(rest);
                    rest.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                }
                b'#' => {
                    rest.starts_with('#')
                        || rest.starts_with('*')
                        || rest.starts_with('{')
                        || DIRECTIVES.iter().any(|d| {
                            rest.starts_with(d)
                                && !rest[d.len()..]
                                    .chars()
                                    .next()
                                    .is_some_and(|c| c.is_ascii_alphanumeric())
                        })
                }
                _ => false,
            };
            if hit {
                return Some((number + 1, line.trim().to_owned()));
            }
        }
    }
    None
}

/// A template with no Velocity in it, as a Pylon template rendering the same
/// text (minijinja's own delimiters escaped).
///
/// # Errors
/// The template uses Velocity: the message names the line.
pub fn convert(text: &str) -> Result<String, String> {
    if let Some((line, construct)) = first_velocity(text) {
        return Err(format!(
            "a Velocity (VTL) template (line {line}: `{}`): Pylon's templates are minijinja; rewrite it (docs/request-phase.md) and import without it",
            shorten(&construct)
        ));
    }
    Ok(escape_minijinja(text))
}

/// Text that renders to itself as a minijinja template: each opening
/// delimiter (`{{`, `{%`, `{#`) is written as an expression printing it,
/// so no part of the text (not even `{% endraw %}`) is ever template code.
pub fn escape_minijinja(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{'
            && let Some(&next) = chars.peek()
            && matches!(next, '{' | '%' | '#')
        {
            chars.next();
            out.push_str(&format!("{{{{ \"{{{next}\" }}}}"));
            continue;
        }
        out.push(c);
    }
    // minijinja drops one final newline of a template.
    if out.ends_with('\n') {
        out.push('\n');
    }
    out
}
/// A gateway response's template: Pylon reads AWS's own text form with
/// `$context.error.messageString`, `$context.error.message` and
/// `$context.requestId` (docs/request-phase.md), so those references are
/// kept; any other Velocity is refused as in [`convert`].
///
/// # Errors
/// Velocity beyond those three references.
pub fn gateway_response(text: &str) -> Result<String, String> {
    let without = text
        .replace("$context.error.messageString", "")
        .replace("$context.error.message", "")
        .replace("$context.requestId", "");
    if let Some((line, construct)) = first_velocity(&without) {
        return Err(format!(
            "a Velocity (VTL) template (line {line}: `{}`): gateway responses take $context.error.messageString, $context.error.message and $context.requestId only",
            shorten(&construct)
        ));
    }
    // Pylon reads a gateway response's body as minijinja only when it has
    // `{{` or `{%`, and as AWS's text form otherwise.
    if text.contains("{{") || text.contains("{%") {
        Err("a gateway response template with `{{` or `{%` in its text cannot be imported as AWS text".into())
    } else {
        Ok(text.to_owned())
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// A template as the integration's language needs it: Velocity kept as
/// written once it parses in the subset Pylon runs, static text escaped
/// for minijinja.
///
/// # Errors
/// Velocity outside the subset (with its line and why).
pub fn prepare(text: &str, velocity: bool) -> Result<String, String> {
    if !velocity {
        return convert(text);
    }
    if let Some(at) = text.find("requestOverride") {
        let line = text[..at].matches('\n').count() + 1;
        return Err(format!(
            "line {line}: $context.requestOverride is not supported: map parameters with request_parameters instead"
        ));
    }
    crate::vtl::check(text).map_err(|e| {
        format!(
            "a Velocity (VTL) template outside the subset Pylon runs ({e}; docs/openapi.md lists the subset)"
        )
    })?;
    Ok(text.to_owned())
}

/// One template from a per-media-type map where Pylon has room for one:
/// `application/json` when there, else the only one; several different
/// ones are refused (reported at `at`).
pub fn pick_one(at: &str, templates: &Map<String, Value>, report: &mut Report) -> Option<String> {
    let texts: Vec<(&String, &str)> = templates
        .iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
        .collect();
    match texts.as_slice() {
        [] => Some(String::new()),
        [(_, only)] => Some((*only).to_owned()),
        many => {
            if many.iter().all(|(_, t)| *t == many[0].1) {
                return Some(many[0].1.to_owned());
            }
            match many.iter().find(|(k, _)| k.as_str() == "application/json") {
                Some((_, json)) => {
                    report.approximated(
                        at,
                        format!(
                            "templates for {} media types: the application/json one is used for every request",
                            many.len()
                        ),
                    );
                    Some((*json).to_owned())
                }
                None => {
                    report.refused(
                        at,
                        "several templates by media type and none for application/json",
                    );
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_is_found_by_its_references_and_directives_not_by_any_dollar_or_hash() {
        assert_eq!(first_velocity("{\"statusCode\": 200}"), None);
        assert_eq!(first_velocity("body { color: #333; } costs $5"), None);
        assert_eq!(first_velocity("a\n#set($x = 1)\n").map(|(l, _)| l), Some(2));
        assert_eq!(first_velocity("stage: $context.stage").map(|(l, _)| l), Some(1));
        assert_eq!(first_velocity("x $!{input.body}").map(|(l, _)| l), Some(1));
        assert_eq!(first_velocity("#{else}").map(|(l, _)| l), Some(1));
        assert_eq!(first_velocity("## a comment").map(|(l, _)| l), Some(1));
        assert_eq!(first_velocity("#settle"), None);
    }

    #[test]
    fn a_plain_template_renders_to_itself_even_with_minijinja_delimiters() {
        assert_eq!(
            convert("json 400 response template").as_deref(),
            Ok("json 400 response template")
        );
        for text in [
            "{{not a jinja}}",
            "a {% endraw %}{{ 7*7 }} {# c #} {x}",
            "{",
            "}}{",
            "{{{",
            "line1\n",
            "a\n\n",
        ] {
            let template = convert(text).expect("static");
            let env = crate::model::template::environment();
            let rendered = env.render_str(&template, ()).expect("renders");
            assert_eq!(rendered, text, "{template}");
        }
        let refused = convert("{\n  \"a\": $input.json('$.a')\n}").expect_err("velocity");
        assert!(refused.contains("line 2"), "{refused}");
    }
}
