//! Reading `pylon apply -f` files: YAML (one resource per `---` document) or JSON
//! (one resource, or an array of them), in the proto3 JSON mapping of
//! [`Resource`].

use pylon_proto::config::v1::Resource;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("document {index}: {message}")]
    Invalid { index: usize, message: String },
}

/// Parses every resource in `text`. JSON when it starts with `{` or `[`, else YAML.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, DocumentError> {
    let trimmed = text.trim_start();
    let invalid = |index: usize, e: &dyn std::fmt::Display| DocumentError::Invalid {
        index,
        message: e.to_string(),
    };
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
