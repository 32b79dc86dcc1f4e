//! Body mapping templates and JSON Schema models: the safe replacements for
//! AWS's VTL and its model validation, shared by both planes so a template or
//! schema that does not compile is refused before it reaches the Raft log.
//!
//! Templates are minijinja: no file or network access, no loops without an
//! end (every render has a fuel budget), bounded output.

use std::io;

/// Instructions one render may execute.
pub const TEMPLATE_FUEL: u64 = 200_000;
/// Bytes one render may produce.
pub const MAX_TEMPLATE_OUTPUT: usize = 1024 * 1024;

/// An environment for mapping templates: no loader (templates cannot include
/// files), a fuel budget per render, a shallow recursion limit.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    env
}

/// Whether a gateway response's body is a minijinja template (rather than
/// AWS-style text with `$context.…` placeholders).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%")
}

/// Whether `source` is a template `environment()` accepts.
pub fn check_template(source: &str) -> Result<(), String> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Renders with both bounds; a template that runs out of fuel or writes too
/// much is an error, not a partial body.
///
/// # Errors
/// [`RenderError`]: the template failed (out of fuel, output over the
/// bound, an error it raised) or produced bytes that are not UTF-8.
pub fn render_bounded(
    template: &minijinja::Template<'_, '_>,
    context: minijinja::Value,
) -> Result<String, RenderError> {
    let mut out = BoundedWriter(Vec::new());
    template
        .render_captured_to(context, &mut out)
        .map_err(RenderError::Template)?;
    String::from_utf8(out.0).map_err(RenderError::NotUtf8)
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the template failed")]
    Template(#[source] minijinja::Error),
    #[error("the template's output is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

struct BoundedWriter(Vec<u8>);

impl io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_TEMPLATE_OUTPUT {
            return Err(io::Error::other(format!(
                "template output over {MAX_TEMPLATE_OUTPUT} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compiles a JSON Schema model. The draft is the one its `$schema` names
/// (draft-04 for AWS imports), else 2020-12.
pub fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_that_loops_forever_or_writes_too_much_fails() {
        let env = environment();
        let endless = env
            .template_from_str("{% for i in range(100000000) %}x{% endfor %}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(render_bounded(&endless, minijinja::Value::UNDEFINED).is_err());
        let big = env
            .template_from_str("{{ 'x' * 2000000 }}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(render_bounded(&big, minijinja::Value::UNDEFINED).is_err());
        let ok = env
            .template_from_str("{{ a.b }}!")
            .unwrap_or_else(|e| panic!("{e}"));
        let ctx = minijinja::context! { a => minijinja::context! { b => "hi" } };
        assert_eq!(render_bounded(&ok, ctx).ok().as_deref(), Some("hi!"));
    }

    #[test]
    fn draft_04_and_2020_12_schemas_compile_and_broken_ones_do_not() {
        let draft4 = serde_json::json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "required": ["a"]});
        let v = compile_schema(&draft4).unwrap_or_else(|e| panic!("{e}"));
        assert!(!v.is_valid(&serde_json::json!({})));
        assert!(v.is_valid(&serde_json::json!({"a": 1})));
        assert!(compile_schema(&serde_json::json!({"type": "nonsense"})).is_err());
        assert!(check_template("{% if %}").is_err());
    }
}
