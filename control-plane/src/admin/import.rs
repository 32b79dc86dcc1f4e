//! `ImportApi`: an OpenAPI 3.x / Swagger 2.0 document (an AWS API Gateway
//! export) converted by [`pylon_common::openapi`] and stored through the
//! same path as `CreateApi`/`UpdateApi` — same validation, Raft entry,
//! idempotency and audit record. `GetExport`: the other way.

use super::origin::Origin;
use super::{AdminApi, invalid};
use pylon_common::model::ApiDefinition;
use pylon_common::openapi::{self, ExportOptions, ImportError, ImportOptions, Report};
use pylon_proto::admin::v1::{
    GetExportRequest, GetExportResponse, ImportApiRequest, ImportApiResponse, ImportNote,
};
use tonic::{Request, Response, Status};

/// The largest document accepted (AWS's own import limit is 6 MB of JSON;
/// the gRPC message limit of the admin API is what bounds it here).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

impl AdminApi {
    pub(super) async fn import(
        &self,
        request: Request<ImportApiRequest>,
    ) -> Result<Response<ImportApiResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        if request.document.len() > MAX_DOCUMENT_BYTES {
            return Err(Status::invalid_argument(format!(
                "document: {} bytes, at most {MAX_DOCUMENT_BYTES}",
                request.document.len()
            )));
        }
        let options = ImportOptions {
            api_name: (!request.api.is_empty()).then(|| request.api.clone()),
            variables: request.variables.into_iter().collect(),
            lambda_urls: request.lambda_urls.into_iter().collect(),
            service_urls: request.service_urls.into_iter().collect(),
        };
        let document = request.document;
        // Conversion is CPU work on a document of up to 4 MiB: off the runtime.
        let imported = tokio::task::spawn_blocking(move || openapi::import(&document, &options))
            .await
            .map_err(|e| Status::internal(format!("the import stopped: {e}")))?
            .map_err(|e| match e {
                ImportError::Refused(report) => {
                    Status::invalid_argument(format!("document: {}", ImportError::Refused(report)))
                }
                other => Status::invalid_argument(format!("document: {other}")),
            })?;
        let notes = notes(&imported.report);
        if request.dry_run {
            let api = ApiDefinition::validate(imported.api)
                .map_err(invalid)?
                .into_proto();
            return Ok(Response::new(ImportApiResponse {
                api: Some(api),
                notes,
            }));
        }
        let expected = (request.expected_revision != 0).then_some(request.expected_revision);
        let stored = self
            .put_named(&origin, Some(imported.api), expected)
            .await?
            .into_inner();
        Ok(Response::new(ImportApiResponse {
            api: Some(stored),
            notes,
        }))
    }
}

fn notes(report: &Report) -> Vec<ImportNote> {
    report
        .notes
        .iter()
        .map(|n| ImportNote {
            path: n.path.clone(),
            outcome: n.outcome.as_str().to_owned(),
            detail: n.detail.clone(),
        })
        .collect()
}

impl AdminApi {
    /// `GetExport`: the API (or the deployment a stage serves) as OpenAPI.
    pub(super) async fn export(
        &self,
        request: Request<GetExportRequest>,
    ) -> Result<Response<GetExportResponse>, Status> {
        let request = request.into_inner();
        let format = match request.format.as_str() {
            "" | "json" => Format::Json,
            "yaml" => Format::Yaml,
            other => {
                return Err(Status::invalid_argument(format!(
                    "format: {other:?} is not json or yaml"
                )));
            }
        };
        let (api, version) = self
            .read(request.consistency, |state| {
                if request.stage.is_empty() {
                    let api = state
                        .api(&request.api)
                        .ok_or_else(|| Status::not_found(format!("API {} not found", request.api)))?;
                    Ok((api.clone(), format!("revision {}", api.revision)))
                } else {
                    let stage = state.stage(&request.api, &request.stage).ok_or_else(|| {
                        Status::not_found(format!("stage {}/{} not found", request.api, request.stage))
                    })?;
                    let deployment =
                        state
                            .deployment(&request.api, &stage.deployment_id)
                            .ok_or_else(|| {
                                Status::failed_precondition(format!(
                                    "stage: {}/{} serves no deployment yet",
                                    request.api, request.stage
                                ))
                            })?;
                    let definition = deployment.definition.clone().unwrap_or_default();
                    Ok((definition, format!("deployment {}", deployment.id)))
                }
            })
            .await?
            .into_inner();
        let document = openapi::export(
            &api,
            &ExportOptions {
                aws_extensions: request.aws_extensions,
                server_url: None,
                version,
            },
        );
        let document = ordered(document).map_err(|e| Status::internal(e.to_string()))?;
        let document = match format {
            Format::Json => {
                serde_json::to_string_pretty(&document).map_err(|e| Status::internal(e.to_string()))?
            }
            Format::Yaml => {
                serde_norway::to_string(&document).map_err(|e| Status::internal(e.to_string()))?
            }
        };
        Ok(Response::new(GetExportResponse { document }))
    }
}

/// The document with its top-level fields in the order people read an
/// OpenAPI document in (the rest stays sorted).
fn ordered(document: serde_json::Value) -> Result<serde_norway::Value, serde_norway::Error> {
    const ORDER: &[&str] = &["openapi", "info", "servers", "paths", "components"];
    let serde_json::Value::Object(mut fields) = document else {
        return serde_norway::to_value(document);
    };
    let mut out = serde_norway::Mapping::new();
    for key in ORDER {
        if let Some(value) = fields.remove(*key) {
            out.insert((*key).into(), serde_norway::to_value(value)?);
        }
    }
    for (key, value) in fields {
        out.insert(key.into(), serde_norway::to_value(value)?);
    }
    Ok(serde_norway::Value::Mapping(out))
}

enum Format {
    Json,
    Yaml,
}
