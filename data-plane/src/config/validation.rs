//! Request validation, compiled once per snapshot: JSON Schema models for
//! bodies (by content type) and the query strings and headers a route requires.

use http::HeaderName;
use pylon_proto::config::v1::{Api, RequestValidation};
use std::collections::HashMap;
use std::sync::Arc;

pub struct CompiledValidation {
    /// Content type (lower case, no parameters) → schema.
    pub body_models: Vec<(String, Arc<jsonschema::Validator>)>,
    pub required_query: Vec<String>,
    pub required_headers: Vec<HeaderName>,
}

impl std::fmt::Debug for CompiledValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledValidation")
            .field(
                "body_models",
                &self.body_models.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .field("required_query", &self.required_query)
            .field("required_headers", &self.required_headers)
            .finish()
    }
}

/// The API's models compiled once, shared by every route that names them.
pub fn compile_models(api: &Api) -> Result<HashMap<String, Arc<jsonschema::Validator>>, String> {
    let mut out = HashMap::new();
    for (name, schema) in &api.models {
        let schema = serde_json::to_value(schema).map_err(|e| format!("models[{name:?}]: {e}"))?;
        let validator =
            pylon_common::model::compile_schema(&schema).map_err(|e| format!("models[{name:?}]: {e}"))?;
        out.insert(name.clone(), Arc::new(validator));
    }
    Ok(out)
}

pub fn compile_validation(
    validation: Option<&RequestValidation>,
    models: &HashMap<String, Arc<jsonschema::Validator>>,
) -> Result<Option<CompiledValidation>, String> {
    let Some(validation) = validation else {
        return Ok(None);
    };
    let mut body_models = Vec::new();
    for (content_type, model) in &validation.body_models {
        let validator = models
            .get(model)
            .ok_or_else(|| format!("validation.body_models: no model {model:?}"))?;
        body_models.push((content_type.to_ascii_lowercase(), validator.clone()));
    }
    let required_headers = validation
        .required_headers
        .iter()
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes()).map_err(|e| format!("validation.required_headers: {h}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(CompiledValidation {
        body_models,
        required_query: validation.required_query.clone(),
        required_headers,
    }))
}
