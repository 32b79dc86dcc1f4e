//! `Restore`: a backup's resources in place of the state's (RestoreBackup).
//!
//! Planned on an empty copy in dependency order — APIs, deployments,
//! stages, API keys, usage plans, domain names — with the same checks as
//! their creates, so a backup whose references do not hold (a stage naming a
//! deployment it lacks, a plan naming a key it lacks, two keys with one
//! digest) is refused whole, naming the item (`stages[2]: …`). Only the
//! resources change: the cluster id, members and history stay the state's.

use super::{Change, CommandError, State, deployment_key, fail};
use pylon_common::ErrorCode;
use pylon_proto::config::v1::{Resource, resource::Kind};
use pylon_proto::raft::v1::{Put, Restore};
use pylon_proto::wkt::Timestamp;
use std::sync::Arc;

impl State {
    /// Every resource, as a restore of them would carry it (dependency
    /// order within each kind does not matter: kinds are restored in order).
    pub fn to_restore(&self) -> Restore {
        Restore {
            replace: false,
            from_cluster_id: self.cluster_id.clone(),
            from_config_version: self.config_version,
            apis: self.apis.values().map(|r| r.as_ref().clone()).collect(),
            deployments: self.deployments.values().map(|r| r.as_ref().clone()).collect(),
            stages: self.stages.values().map(|r| r.as_ref().clone()).collect(),
            api_keys: self.api_keys.values().map(|r| r.as_ref().clone()).collect(),
            usage_plans: self.usage_plans.values().map(|r| r.as_ref().clone()).collect(),
            domain_names: self.domain_names.values().map(|r| r.as_ref().clone()).collect(),
            consumers: self.consumers.values().map(|c| c.as_ref().clone()).collect(),
        }
    }

    /// Whether the state holds any resource (a restore then needs `replace`).
    fn holds_resources(&self) -> bool {
        !(self.apis.is_empty()
            && self.deployments.is_empty()
            && self.stages.is_empty()
            && self.api_keys.is_empty()
            && self.usage_plans.is_empty()
            && self.domain_names.is_empty())
    }

    pub(super) fn restore(
        &self,
        index: u64,
        at: Option<Timestamp>,
        restore: &Restore,
    ) -> Result<Change, CommandError> {
        if !restore.replace && self.holds_resources() {
            return fail(
                ErrorCode::FailedPrecondition,
                format!(
                    "the cluster holds resources ({} APIs, {} deployments, {} stages, {} API keys, {} usage plans, {} domain names): restore into an empty cluster, or replace them",
                    self.apis.len(),
                    self.deployments.len(),
                    self.stages.len(),
                    self.api_keys.len(),
                    self.usage_plans.len(),
                    self.domain_names.len()
                ),
            );
        }
        // A restored stage must never read cache entries written before it,
        // in this cluster or in another one sharing the data planes' Redis
        // (whose indexes are as small as this one's): its generation is the
        // command's time in nanoseconds, far above any Raft index and
        // different for every restore.
        let cache_generation = at
            .map(|t| {
                (t.seconds.max(0) as u64).saturating_mul(1_000_000_000) + u64::from(t.nanos.max(0) as u32)
            })
            .unwrap_or(index)
            .max(index);
        let mut scratch = State {
            config_version: self.config_version,
            ..State::default()
        };
        let create = |kind: Kind| Put {
            resource: Some(Resource { kind: Some(kind) }),
            create: true,
            expected_revision: 0,
        };
        let item = |field: &'static str, i: usize| {
            move |e: CommandError| CommandError {
                code: e.code,
                message: format!("{field}[{i}]: {}", e.message),
            }
        };
        for (i, api) in restore.apis.iter().enumerate() {
            let mut change = scratch
                .put(index, at, &create(Kind::Api(api.clone())))
                .map_err(item("apis", i))?;
            if let Change::Api(stored) = &mut change {
                stored.created_at = api.created_at.or(stored.created_at);
            }
            scratch.commit(index, change);
        }
        // Deployments are immutable snapshots: kept as they were (id,
        // definition, creation time) under an API the backup holds. Their
        // revision becomes the restore's, so every deployment made after it
        // is newer whatever the source cluster's numbers were; among
        // themselves the history orders them by creation time.
        // The source's history order (by its revisions) is kept as creation
        // times strictly increasing within each API: two deployments made in
        // the same nanosecond get one nanosecond apart.
        let mut order: Vec<usize> = (0..restore.deployments.len()).collect();
        order.sort_by_key(|&i| {
            let d = &restore.deployments[i];
            (d.api.clone(), d.revision, d.id.clone())
        });
        let mut created = vec![None; restore.deployments.len()];
        let mut previous: Option<(&str, i64, i32)> = None;
        for &i in &order {
            let d = &restore.deployments[i];
            let (mut seconds, mut nanos) = d.created_at.map_or((0, 0), |t| (t.seconds, t.nanos));
            if let Some((api, s, n)) = previous
                && api == d.api
                && (seconds, nanos) <= (s, n)
            {
                (seconds, nanos) = if n >= 999_999_999 { (s + 1, 0) } else { (s, n + 1) };
            }
            previous = Some((d.api.as_str(), seconds, nanos));
            created[i] = Some(Timestamp { seconds, nanos });
        }
        for (i, deployment) in restore.deployments.iter().enumerate() {
            let at_item = item("deployments", i);
            if deployment.id.is_empty() {
                return Err(at_item(CommandError {
                    code: ErrorCode::InvalidArgument,
                    message: "id: required".into(),
                }));
            }
            scratch.require_api(&deployment.api).map_err(&at_item)?;
            let key = deployment_key(&deployment.api, &deployment.id);
            if scratch.deployments.contains_key(&key) {
                return Err(at_item(CommandError {
                    code: ErrorCode::AlreadyExists,
                    message: format!("deployment {}/{} appears twice", deployment.api, deployment.id),
                }));
            }
            let mut deployment = deployment.clone();
            deployment.revision = index;
            deployment.created_at = created[i];
            scratch.deployments.insert(key, Arc::new(deployment));
        }
        for (i, stage) in restore.stages.iter().enumerate() {
            let mut change = scratch
                .put(index, at, &create(Kind::Stage(stage.clone())))
                .map_err(item("stages", i))?;
            if let Change::Stage(stored) = &mut change {
                stored.created_at = stage.created_at.or(stored.created_at);
                stored.cache_generation = cache_generation;
            }
            scratch.commit(index, change);
        }
        for (i, key) in restore.api_keys.iter().enumerate() {
            let mut change = scratch
                .put(index, at, &create(Kind::ApiKey(key.clone())))
                .map_err(item("api_keys", i))?;
            if let Change::ApiKey(stored) = &mut change {
                stored.created_at = key.created_at.or(stored.created_at);
            }
            scratch.commit(index, change);
        }
        for (i, plan) in restore.usage_plans.iter().enumerate() {
            let mut change = scratch
                .put(index, at, &create(Kind::UsagePlan(plan.clone())))
                .map_err(item("usage_plans", i))?;
            if let Change::UsagePlan(stored) = &mut change {
                stored.created_at = plan.created_at.or(stored.created_at);
            }
            scratch.commit(index, change);
        }
        for (i, domain) in restore.domain_names.iter().enumerate() {
            let mut change = scratch
                .put(index, at, &create(Kind::DomainName(domain.clone())))
                .map_err(item("domain_names", i))?;
            if let Change::DomainName(stored) = &mut change {
                stored.created_at = domain.created_at.or(stored.created_at);
            }
            scratch.commit(index, change);
        }
        // Consumers, each owning only keys the backup holds.
        for (i, consumer) in restore.consumers.iter().enumerate() {
            if consumer.email.is_empty() || consumer.password_hash.is_empty() {
                return fail(
                    ErrorCode::InvalidArgument,
                    format!("consumers[{i}]: email and password hash required"),
                );
            }
            if scratch.consumers.contains_key(&consumer.email) {
                return fail(
                    ErrorCode::AlreadyExists,
                    format!("consumers[{i}]: consumer {} appears twice", consumer.email),
                );
            }
            if let Some(id) = consumer.api_key_ids.iter().find(|id| {
                !scratch
                    .api_keys
                    .contains_key(&pylon_common::ids::ApiKeyId::from(id.as_str()))
            }) {
                return fail(
                    ErrorCode::FailedPrecondition,
                    format!("consumers[{i}]: API key {id} is not in the backup"),
                );
            }
            let mut consumer = consumer.clone();
            consumer.revision = index;
            scratch
                .consumers
                .insert(consumer.email.clone(), Arc::new(consumer));
        }
        Ok(Change::Restore(Box::new(scratch)))
    }
}
