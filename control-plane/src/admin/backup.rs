//! `ExportBackup` and `RestoreBackup`: every resource of the cluster out as
//! one message, and back in as one Raft entry (`State::restore`), checked
//! here field by field like the resources' own create calls before it is
//! proposed, so a damaged or hand-edited backup never reaches the log.

use super::origin::Origin;
use super::{AdminApi, ReadConsistency, unexpected};
use crate::clock::now;
use crate::state::Applied;
use prost::Message as _;
use pylon_common::ValidationErrors;
use pylon_common::model::{ApiDefinition, ApiKeyConfig, DomainNameConfig, StageConfig, UsagePlanConfig};
use pylon_proto::admin::v1::{Backup, ExportBackupRequest, RestoreBackupRequest, RestoreBackupResponse};
use pylon_proto::raft::v1::{Restore, command::Op};
use tonic::{Request, Response, Status};

/// The backup layout this version writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
/// The largest backup RestoreBackup takes (it becomes one Raft entry).
pub const MAX_BACKUP_BYTES: usize = 64 << 20;

/// 9999-12-31T23:59:59Z, seconds since the epoch.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Ids the control plane makes (deployments, API keys): 1–64 of `a-z 0-9 - _`.
fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl AdminApi {
    pub(super) async fn take_backup(
        &self,
        request: Request<ExportBackupRequest>,
    ) -> Result<Response<Backup>, Status> {
        drop(request);
        self.read(ReadConsistency::Linearizable as i32, |state| {
            let resources = state.to_restore();
            let backup = Backup {
                format: BACKUP_FORMAT,
                cluster_id: resources.from_cluster_id,
                config_version: resources.from_config_version,
                taken_at: Some(now()),
                apis: resources.apis,
                deployments: resources.deployments,
                stages: resources.stages,
                api_keys: resources.api_keys,
                usage_plans: resources.usage_plans,
                domain_names: resources.domain_names,
                consumers: resources.consumers,
            };
            // A backup no restore could take is no backup.
            let size = backup.encoded_len();
            if size > MAX_BACKUP_BYTES {
                return Err(Status::failed_precondition(format!(
                    "the backup would be {size} bytes, over the {MAX_BACKUP_BYTES} a restore takes"
                )));
            }
            Ok(backup)
        })
        .await
    }

    pub(super) async fn restore(
        &self,
        request: Request<RestoreBackupRequest>,
    ) -> Result<Response<RestoreBackupResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let Some(backup) = request.backup else {
            return Err(Status::invalid_argument("backup: required"));
        };
        let size = backup.encoded_len();
        if size > MAX_BACKUP_BYTES {
            return Err(Status::invalid_argument(format!(
                "backup: {size} bytes, at most {MAX_BACKUP_BYTES}"
            )));
        }
        if backup.format != BACKUP_FORMAT {
            return Err(Status::invalid_argument(format!(
                "backup.format: {} is not a layout this version reads ({BACKUP_FORMAT})",
                backup.format
            )));
        }
        let restore = self.check_backup(backup, request.replace)?;
        let counts = RestoreBackupResponse {
            config_version: 0,
            apis: restore.apis.len() as u32,
            deployments: restore.deployments.len() as u32,
            stages: restore.stages.len() as u32,
            api_keys: restore.api_keys.len() as u32,
            usage_plans: restore.usage_plans.len() as u32,
            domain_names: restore.domain_names.len() as u32,
            consumers: restore.consumers.len() as u32,
        };
        let written = self
            .write(&origin, Op::Restore(restore))
            .await
            .map_err(|status| {
                // The state machine names the item (`stages[0]: …`): name it
                // as the request carries it.
                let item = [
                    "apis[",
                    "deployments[",
                    "stages[",
                    "api_keys[",
                    "usage_plans[",
                    "domain_names[",
                    "consumers[",
                ];
                if item.iter().any(|p| status.message().starts_with(p)) {
                    Status::new(status.code(), format!("backup.{}", status.message()))
                } else {
                    status
                }
            })?;
        match written {
            Applied::Restored { config_version } => Ok(Response::new(RestoreBackupResponse {
                config_version,
                ..counts
            })),
            other => Err(unexpected(other)),
        }
    }

    /// Every resource of `backup` validated like its create call, as the
    /// command that restores them; every field at fault is named
    /// (`backup.stages[1].throttle.rate_limit: …`).
    fn check_backup(&self, backup: Backup, replace: bool) -> Result<Restore, Status> {
        let mut errors: Vec<String> = Vec::new();
        // Creation times are kept: each must be a time RFC 3339 can write.
        let mut times = |field: String, at: Option<pylon_proto::wkt::Timestamp>| {
            if at.is_some_and(|at| {
                !(0..=MAX_SECONDS).contains(&at.seconds) || !(0..1_000_000_000).contains(&at.nanos)
            }) {
                errors.push(format!(
                    "backup.{field}.created_at: must be a time from 1970 to 9999"
                ));
            }
        };
        for (i, a) in backup.apis.iter().enumerate() {
            times(format!("apis[{i}]"), a.created_at);
        }
        for (i, d) in backup.deployments.iter().enumerate() {
            times(format!("deployments[{i}]"), d.created_at);
        }
        for (i, s) in backup.stages.iter().enumerate() {
            times(format!("stages[{i}]"), s.created_at);
        }
        for (i, k) in backup.api_keys.iter().enumerate() {
            times(format!("api_keys[{i}]"), k.created_at);
        }
        for (i, p) in backup.usage_plans.iter().enumerate() {
            times(format!("usage_plans[{i}]"), p.created_at);
        }
        for (i, d) in backup.domain_names.iter().enumerate() {
            times(format!("domain_names[{i}]"), d.created_at);
        }
        fn named(errors: &mut Vec<String>, field: &str, e: ValidationErrors) {
            errors.extend(
                e.errors()
                    .iter()
                    .map(|f| format!("backup.{field}.{}: {}", f.path, f.message)),
            );
        }
        let mut restore = Restore {
            replace,
            from_cluster_id: backup.cluster_id,
            from_config_version: backup.config_version,
            ..Restore::default()
        };
        // What a backup of an older version holds that the admin API now
        // refuses but that was served without effect is restored as it was
        // served: userinfo in a backend or authorizer URL (never sent).
        for (i, mut api) in backup.apis.into_iter().enumerate() {
            pylon_common::model::drop_stored_userinfo(&mut api);
            match ApiDefinition::validate(api) {
                Ok(api) => restore.apis.push(api.into_proto()),
                Err(e) => named(&mut errors, &format!("apis[{i}]"), e),
            }
        }
        for (i, mut deployment) in backup.deployments.into_iter().enumerate() {
            if !is_id(&deployment.id) {
                errors.push(format!("backup.deployments[{i}].id: must be 1-64 of a-z 0-9 - _"));
            }
            if let Some(definition) = deployment.definition.as_mut() {
                pylon_common::model::drop_stored_userinfo(definition);
            }
            match deployment.definition.take().map(ApiDefinition::validate) {
                None => errors.push(format!("backup.deployments[{i}].definition: required")),
                Some(Err(e)) => named(&mut errors, &format!("deployments[{i}].definition"), e),
                Some(Ok(definition)) => {
                    let definition = definition.into_proto();
                    if definition.name != deployment.api {
                        errors.push(format!(
                            "backup.deployments[{i}].definition.name: {:?} is not its API {:?}",
                            definition.name, deployment.api
                        ));
                    }
                    deployment.definition = Some(definition);
                }
            }
            restore.deployments.push(deployment);
        }
        for (i, stage) in backup.stages.into_iter().enumerate() {
            match StageConfig::validate(stage) {
                Ok(stage) => {
                    let stage = stage.into_proto();
                    let api = restore.apis.iter().find(|a| a.name == stage.api);
                    if let Err(status) = self.check_stage_protocol_with(&stage, api) {
                        errors.push(format!("backup.stages[{i}].{}", status.message()));
                    }
                    restore.stages.push(stage);
                }
                Err(e) => named(&mut errors, &format!("stages[{i}]"), e),
            }
        }
        for (i, key) in backup.api_keys.into_iter().enumerate() {
            if !is_id(&key.id) {
                errors.push(format!("backup.api_keys[{i}].id: must be 1-64 of a-z 0-9 - _"));
            }
            let digest = key.key_hash.len() == 64
                && key
                    .key_hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !digest {
                errors.push(format!(
                    "backup.api_keys[{i}].key_hash: must be a SHA-256 digest, 64 lowercase hex digits"
                ));
            }
            if key.key_prefix.len() > 16 || !key.key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(format!(
                    "backup.api_keys[{i}].key_prefix: must be at most 16 printable ASCII characters"
                ));
            }
            match ApiKeyConfig::validate(key) {
                Ok(key) => restore.api_keys.push(key.into_proto()),
                Err(e) => named(&mut errors, &format!("api_keys[{i}]"), e),
            }
        }
        for (i, plan) in backup.usage_plans.into_iter().enumerate() {
            match UsagePlanConfig::validate(plan) {
                Ok(plan) => restore.usage_plans.push(plan.into_proto()),
                Err(e) => named(&mut errors, &format!("usage_plans[{i}]"), e),
            }
        }
        for (i, domain) in backup.domain_names.into_iter().enumerate() {
            match DomainNameConfig::validate(domain) {
                Ok(domain) => restore.domain_names.push(domain.into_proto()),
                Err(e) => named(&mut errors, &format!("domain_names[{i}]"), e),
            }
        }
        for (i, consumer) in backup.consumers.into_iter().enumerate() {
            let field = format!("backup.consumers[{i}]");
            if super::consumers::normalize_email(&consumer.email).ok().as_deref()
                != Some(consumer.email.as_str())
            {
                errors.push(format!("{field}.email: must be a lower-case email address"));
            }
            if !consumer.password_hash.starts_with("$argon2id$") || consumer.password_hash.len() > 512 {
                errors.push(format!("{field}.password_hash: must be an Argon2id PHC string"));
            }
            if pylon_proto::raft::v1::consumer::Status::try_from(consumer.status).is_err() {
                errors.push(format!("{field}.status: PENDING, APPROVED or DISABLED"));
            }
            if consumer.api_key_ids.len() > crate::state::MAX_KEYS_PER_CONSUMER {
                errors.push(format!(
                    "{field}.api_key_ids: at most {} keys",
                    crate::state::MAX_KEYS_PER_CONSUMER
                ));
            }
            if consumer.created_at.is_some_and(|at| {
                !(0..=MAX_SECONDS).contains(&at.seconds) || !(0..1_000_000_000).contains(&at.nanos)
            }) {
                errors.push(format!("{field}.created_at: must be a time from 1970 to 9999"));
            }
            restore.consumers.push(consumer);
        }
        if restore.consumers.len() > crate::state::MAX_CONSUMERS {
            errors.push(format!(
                "backup.consumers: at most {}",
                crate::state::MAX_CONSUMERS
            ));
        }
        if errors.is_empty() {
            Ok(restore)
        } else {
            Err(Status::invalid_argument(errors.join("; ")))
        }
    }
}
