//! Request validation: required query strings and headers, then the body
//! against the JSON Schema model for its content type. Messages name what is
//! wrong; schemas were compiled with the snapshot.

use crate::config::validation::CompiledValidation;
use crate::error::GatewayError;
use crate::request::inputs::Inputs;

/// Schema errors listed in one message, at most.
const MAX_REPORTED: usize = 10;

pub fn check(validation: &CompiledValidation, inputs: &Inputs<'_>) -> Result<(), GatewayError> {
    let mut missing: Vec<&str> = Vec::new();
    for name in &validation.required_query {
        if inputs.query(name).is_none_or(|v| v.is_empty()) {
            missing.push(name);
        }
    }
    for name in &validation.required_headers {
        if inputs.header(name.as_str()).is_none_or(|v| v.is_empty()) {
            missing.push(name.as_str());
        }
    }
    if !missing.is_empty() {
        return Err(GatewayError::BadRequestParameters(format!(
            "Missing required request parameters: [{}]",
            missing.join(", ")
        )));
    }
    if validation.body_models.is_empty() {
        return Ok(());
    }
    let content_type = crate::headers::media_type(&inputs.parts.headers)
        .map_err(|why| GatewayError::BadRequestBody(format!("Invalid request body: {why}")))?
        .unwrap_or_else(|| "application/json".to_owned());
    let Some((_, schema)) = validation
        .body_models
        .iter()
        .find(|(t, _)| *t == content_type)
        .or_else(|| validation.body_models.iter().find(|(t, _)| t == "$default"))
    else {
        let known: Vec<&str> = validation.body_models.iter().map(|(t, _)| t.as_str()).collect();
        return Err(GatewayError::BadRequestBody(format!(
            "Invalid request body: content type {content_type} is not one of [{}]",
            known.join(", ")
        )));
    };
    let body = inputs.body.map(|b| &b[..]).unwrap_or(b"");
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadRequestBody(format!("Invalid request body: not JSON: {e}")))?;
    let problems: Vec<String> = schema
        .iter_errors(&json)
        .take(MAX_REPORTED)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::BadRequestBody(format!(
            "Invalid request body: {}",
            problems.join("; ")
        )))
    }
}
