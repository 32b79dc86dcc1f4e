//! `ApplyBatch`: puts and deletes of APIs, stages, usage plans and domain
//! names as one Raft entry — validated here like their single-resource
//! calls, then planned in order and applied all or none by the state
//! machine (`State::batch`).

use super::origin::Origin;
use super::{AdminApi, unexpected};
use crate::state::{Applied, MAX_BATCH_CHANGES, history::batch_outcome};
use pylon_common::ValidationErrors;
use pylon_common::model::{ApiDefinition, DomainNameConfig, StageConfig, UsagePlanConfig};
use pylon_proto::admin::v1::{ApplyBatchRequest, ApplyBatchResponse, batch_change};
use pylon_proto::config::v1::{self as config, Resource, resource::Kind};
use pylon_proto::raft::v1::{self as raftpb, BatchOp, batch_op, command::Op};
use tonic::{Request, Response, Status};

impl AdminApi {
    pub(super) async fn batch(
        &self,
        request: Request<ApplyBatchRequest>,
    ) -> Result<Response<ApplyBatchResponse>, Status> {
        let origin = Origin::of(&request)?;
        let changes = request.into_inner().changes;
        if changes.is_empty() {
            return Err(Status::invalid_argument("changes: at least one"));
        }
        if changes.len() > MAX_BATCH_CHANGES {
            return Err(Status::invalid_argument(format!(
                "changes: {} changes, at most {MAX_BATCH_CHANGES} in one batch",
                changes.len()
            )));
        }
        // The APIs this batch stores, for judging its stages' fields.
        let batch_apis: Vec<config::Api> = changes
            .iter()
            .filter_map(|c| match &c.change {
                Some(batch_change::Change::Put(Resource {
                    kind: Some(Kind::Api(api)),
                })) => Some(api.clone()),
                _ => None,
            })
            .collect();
        let mut errors = Vec::new();
        let mut ops = Vec::with_capacity(changes.len());
        for (i, change) in changes.into_iter().enumerate() {
            let at = |e: &ValidationErrors, what: &str| {
                e.errors()
                    .iter()
                    .map(|f| format!("changes[{i}].put.{what}.{}: {}", f.path, f.message))
                    .collect::<Vec<_>>()
            };
            let expected_revision = change.expected_revision;
            let op = match change.change {
                None => {
                    errors.push(format!("changes[{i}]: neither put nor delete"));
                    continue;
                }
                Some(batch_change::Change::Delete(target)) => batch_op::Op::Delete(raftpb::Delete {
                    target: Some(target),
                    expected_revision,
                }),
                Some(batch_change::Change::Put(resource)) => {
                    let kind = match resource.kind {
                        None => {
                            errors.push(format!("changes[{i}].put: names no resource kind"));
                            continue;
                        }
                        Some(Kind::Api(api)) => ApiDefinition::validate(api)
                            .map(|d| Kind::Api(d.into_proto()))
                            .map_err(|e| at(&e, "api")),
                        Some(Kind::Stage(stage)) => StageConfig::validate_write(stage)
                            .map_err(|e| at(&e, "stage"))
                            .and_then(|s| {
                                let stage = s.into_proto();
                                let api = batch_apis.iter().find(|a| a.name == stage.api);
                                self.check_stage_protocol_with(&stage, api).map_err(|status| {
                                    vec![format!("changes[{i}].put.stage.{}", status.message())]
                                })?;
                                Ok(Kind::Stage(stage))
                            }),
                        Some(Kind::UsagePlan(plan)) => UsagePlanConfig::validate(plan)
                            .map(|p| Kind::UsagePlan(p.into_proto()))
                            .map_err(|e| at(&e, "usage_plan")),
                        Some(Kind::DomainName(domain)) => DomainNameConfig::validate(domain)
                            .map(|d| Kind::DomainName(d.into_proto()))
                            .map_err(|e| at(&e, "domain_name")),
                        Some(Kind::ApiKey(_)) => Err(vec![format!(
                            "changes[{i}].put.api_key: API keys are made by CreateApiKey (their secret is made there), not in a batch"
                        )]),
                    };
                    match kind {
                        Ok(kind) => batch_op::Op::Put(raftpb::Put {
                            resource: Some(Resource { kind: Some(kind) }),
                            create: expected_revision == 0,
                            expected_revision,
                        }),
                        Err(found) => {
                            errors.extend(found);
                            continue;
                        }
                    }
                }
            };
            ops.push(BatchOp { op: Some(op) });
        }
        if !errors.is_empty() {
            return Err(Status::invalid_argument(errors.join("; ")));
        }
        match self.write(&origin, Op::Batch(raftpb::Batch { ops })).await? {
            Applied::Batch(applied) => {
                let (stored, deleted) = batch_outcome(&applied);
                Ok(Response::new(ApplyBatchResponse { stored, deleted }))
            }
            other => Err(unexpected(other)),
        }
    }
}
