//! Reading `pylon apply -f` files: YAML (one resource per `---` document) or JSON
//! (one resource, or an array of them), in the proto3 JSON mapping of
//! [`Resource`].

use pylon_proto::config::v1::Resource;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("document {index}: {message}")]
    Invalid { index: usize, message: String },
}

/// The deepest nesting of flow collections (`[`, `{`) a document may
/// have; real ones stay under 20. A YAML parser's work grows with the
/// square of the depth before its own limit stops it, so a small hostile
/// input could hold a thread for seconds.
pub const MAX_FLOW_NESTING: usize = 64;

/// Refuses `text` when its flow collections (`[`, `{`) nest deeper than
/// [`MAX_FLOW_NESTING`], in one linear pass before any parser sees them
/// (brackets in quoted strings and comments do not count).
///
/// # Errors
/// The depth.
pub fn check_nesting(text: &str) -> Result<(), String> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut single, mut double, mut escaped, mut comment) = (false, false, false, false);
    let mut previous = '\n';
    for c in text.chars() {
        if comment {
            comment = c != '\n';
        } else if double {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => double = false,
                _ => {}
            }
        } else if single {
            single = c != '\'';
        } else {
            match c {
                '"' => double = true,
                '\'' if !previous.is_alphanumeric() => single = true,
                '#' if previous.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = c;
        if deepest > MAX_FLOW_NESTING {
            return Err(format!(
                "nested deeper than {MAX_FLOW_NESTING} levels of [ and {{"
            ));
        }
    }
    Ok(())
}

/// Parses every resource in `text`. JSON when it starts with `{` or `[`, else YAML.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, DocumentError> {
    let trimmed = text.trim_start();
    let invalid = |index: usize, e: &dyn std::fmt::Display| DocumentError::Invalid {
        index,
        message: e.to_string(),
    };
    check_nesting(text).map_err(|e| invalid(0, &e))?;
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| invalid(0, &e));
    }
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map(|r| vec![r])
            .map_err(|e| invalid(0, &e));
    }
    let mut resources = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(document).map_err(|e| invalid(index, &e))?;
        if value.is_null() {
            continue;
        }
        let resource: Resource = serde_json::from_value(value).map_err(|e| invalid(index, &e))?;
        resources.push(resource);
    }
    Ok(resources)
}
