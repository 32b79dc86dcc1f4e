//! The replicated state machine: every API, deployment, stage, API key, usage
//! plan and domain name, and the config version.
//!
//! [`State::apply`] is a pure function of the state, the entry's Raft index and
//! the [`Command`]: no clock (timestamps come in the command), no randomness
//! (ids and key hashes come in the command), no I/O. It is two steps: `plan`
//! makes every check and decides the change while only reading, `commit`
//! carries it out and cannot fail — so a command that fails changes nothing,
//! every node reaches the same state from the same log, and [`State::check`]
//! lets the admin API refuse a command before it reaches the log.
//!
//! Besides the resources it keeps the cluster's id (named once by the first
//! leader) and, in [`history`], the audit log and the outcomes of commands
//! that carried an idempotency key.

mod consumers;
pub mod history;
mod replica;
mod restore;

pub use consumers::{MAX_CONSUMERS, MAX_KEYS_PER_CONSUMER};
pub use replica::Replica;

use pylon_common::ErrorCode;
use pylon_common::ids::{ApiKeyId, ApiName, DeploymentId, DomainNameId, StageName, UsagePlanName};
use pylon_proto::config::v1::{Api, ApiKey, Deployment, DomainName, Stage, UsagePlan, resource::Kind};
use pylon_proto::raft::v1::{
    Batch, Command, CreateDeployment, Delete, FlushStageCache, PromoteCanary, Put, RollbackStage,
    SetClusterId, SetConsoleKey, StateImage, batch_op, command::Op, resource_ref,
};
use pylon_proto::wkt::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, CommandError> {
    Err(CommandError {
        code,
        message: message.into(),
    })
}

/// What a successful command produced, returned to the caller that proposed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Api(Api),
    Stage(Stage),
    Deployment(Deployment),
    ApiKey(ApiKey),
    UsagePlan(UsagePlan),
    DomainName(DomainName),
    Deleted,
    /// The cluster got its id.
    ClusterNamed,
    /// Only the audit log changed (a usage reset).
    Noted,
    /// A batch: what each of its changes produced, in order.
    Batch(Vec<Applied>),
    /// A backup's resources replaced the state's; the config version it made.
    Restored {
        config_version: u64,
    },
    /// A portal consumer, as stored.
    Consumer(pylon_proto::raft::v1::Consumer),
}

/// What an accepted command changes, decided by [`State::plan`] without
/// touching the state and carried out by [`State::commit`].
enum Change {
    Api(Api),
    Stage(Stage),
    ApiKey(ApiKey),
    UsagePlan(UsagePlan),
    DomainName(DomainName),
    Deployment {
        deployment: Box<Deployment>,
        /// The stage moved to the new deployment, if any.
        stage: Option<Box<Stage>>,
    },
    Delete {
        kind: resource_ref::Kind,
        api: String,
        name: String,
    },
    ClusterId(String),
    /// The console's session key (not a config change: the version stays).
    ConsoleKey(Vec<u8>),
    /// Nothing but the audit record.
    Nothing,
    /// A batch, carried out on a copy of the resources: the copy replaces
    /// them.
    Batch {
        resources: Box<State>,
        applied: Vec<Applied>,
    },
    /// A restore: these resources replace the state's.
    Restore(Box<State>),
    Consumer(consumers::ConsumerChange),
    /// A session ended until `until`; sessions whose end passed before
    /// `now` are forgotten.
    EndSession {
        id: String,
        until: i64,
        now: i64,
    },
}

type StageKey = (ApiName, StageName);
type DeploymentKey = (ApiName, DeploymentId);

/// Everything the control plane stores, as of one Raft index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    config_version: u64,
    // Resources are shared, so copying the whole state (for a snapshot) copies
    // pointers, not definitions.
    apis: BTreeMap<ApiName, Arc<Api>>,
    deployments: BTreeMap<DeploymentKey, Arc<Deployment>>,
    stages: BTreeMap<StageKey, Arc<Stage>>,
    api_keys: BTreeMap<ApiKeyId, Arc<ApiKey>>,
    usage_plans: BTreeMap<UsagePlanName, Arc<UsagePlan>>,
    domain_names: BTreeMap<DomainNameId, Arc<DomainName>>,
    /// Raft address of every member ever added through a membership change.
    members: BTreeMap<u64, String>,
    /// Empty until the first leader names the cluster.
    cluster_id: String,
    /// Empty until a console first needs it (see [`State::console_key`]).
    console_key: Vec<u8>,
    /// Portal consumers by email ([`consumers`]).
    consumers: BTreeMap<String, Arc<pylon_proto::raft::v1::Consumer>>,
    /// Console and portal sessions ended by a logout, with when they would
    /// have expired.
    ended_sessions: BTreeMap<String, i64>,
    history: history::History,
}

/// Where a deployment sits in its API's history, newest first: by revision,
/// then creation time (deployments a restore brought share its revision),
/// then id. As text, for page tokens: it grows down the history.
pub fn deployment_order(deployment: &Deployment) -> String {
    let created = deployment
        .created_at
        .map(|t| (t.seconds.max(0) as u64).saturating_mul(1_000_000_000) + u64::from(t.nanos.max(0) as u32))
        .unwrap_or(0);
    format!(
        "{:020}{:020}{}",
        u64::MAX - deployment.revision,
        u64::MAX - created,
        deployment.id
    )
}

fn stage_key(api: &str, stage: &str) -> StageKey {
    (ApiName::from(api), StageName::from(stage))
}

fn deployment_key(api: &str, id: &str) -> DeploymentKey {
    (ApiName::from(api), DeploymentId::from(id))
}

/// Checks an optimistic-concurrency precondition (0 means "any revision").
fn check_revision(kind: &str, name: &str, current: u64, expected: u64) -> Result<(), CommandError> {
    if expected != 0 && expected != current {
        return fail(
            ErrorCode::Conflict,
            format!("{kind} {name} is at revision {current}, not {expected}: re-read it and retry"),
        );
    }
    Ok(())
}

/// Stamps revision and timestamps on a created or replaced resource.
macro_rules! stamp {
    ($new:expr, $old:expr, $index:expr, $at:expr) => {{
        $new.revision = $index;
        $new.created_at = match $old {
            Some(old) => old.created_at.clone(),
            None => $at.clone(),
        };
        $new.updated_at = $at.clone();
    }};
}

/// Whether `command`, when it succeeds, can change what data planes serve
/// (stages, the deployments they point at, keys, plans, domains). Editing an
/// API definition cannot: only deploying it does.
pub fn changes_served_config(command: &Command) -> bool {
    match &command.op {
        Some(Op::Put(put)) => !matches!(
            put.resource.as_ref().and_then(|r| r.kind.as_ref()),
            Some(Kind::Api(_)) | None
        ),
        Some(Op::Delete(delete)) => !matches!(
            delete.target.as_ref().map(|t| t.kind()),
            Some(resource_ref::Kind::Deployment) | None
        ),
        Some(Op::CreateDeployment(deployment)) => !deployment.stage.is_empty(),
        Some(Op::PromoteCanary(_))
        | Some(Op::RollbackStage(_))
        | Some(Op::FlushStageCache(_))
        | Some(Op::SetClusterId(_))
        | Some(Op::Restore(_)) => true,
        Some(Op::SetConsoleKey(_)) | Some(Op::SignUpConsumer(_)) | Some(Op::EndSession(_)) => false,
        // Keys change (made, revoked, enabled or disabled with their consumer).
        Some(Op::SetConsumerStatus(_)) | Some(Op::IssueConsumerKey(_)) | Some(Op::RevokeConsumerKey(_)) => {
            true
        }
        Some(Op::Batch(batch)) => batch.ops.iter().any(|op| {
            let single = Command {
                op: match &op.op {
                    Some(batch_op::Op::Put(put)) => Some(Op::Put(put.clone())),
                    Some(batch_op::Op::Delete(delete)) => Some(Op::Delete(delete.clone())),
                    None => None,
                },
                ..Default::default()
            };
            changes_served_config(&single)
        }),
        Some(Op::NoteUsageReset(_)) | None => false,
    }
}

/// The most changes one batch may carry.
pub const MAX_BATCH_CHANGES: usize = 10_000;

impl State {
    pub fn config_version(&self) -> u64 {
        self.config_version
    }

    /// The cluster's id; empty until its first leader named it.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The audit log and remembered request outcomes.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// Applies the command of the log entry at `index`. A command whose
    /// idempotency key was seen before changes nothing and answers the first
    /// outcome; any other command, applied or refused, gets an audit record.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied, CommandError> {
        if let Some(first) = self.history.replay(command)? {
            return first;
        }
        let result = self.plan(index, command).map(|change| {
            // A sign-up changes nothing data planes serve; a status change
            // enables or disables keys.
            let served = !matches!(
                change,
                Change::Nothing
                    | Change::ConsoleKey(_)
                    | Change::EndSession { .. }
                    | Change::Consumer(consumers::ConsumerChange::Put(_))
            ) || matches!(&command.op, Some(Op::SetConsumerStatus(_)));
            if served {
                self.config_version = index;
            }
            self.commit(index, change)
        });
        self.history.record(index, command, &result);
        result
    }

    /// What `apply` would answer, without changing anything (for a command
    /// seen before: its first outcome).
    pub fn check(&self, index: u64, command: &Command) -> Result<(), CommandError> {
        if let Some(first) = self.history.replay(command)? {
            return first.map(drop);
        }
        self.plan(index, command).map(drop)
    }

    /// Every check a command must pass, and what it will change. Reads only.
    fn plan(&self, index: u64, command: &Command) -> Result<Change, CommandError> {
        let at = command.at;
        match &command.op {
            None => fail(ErrorCode::InvalidArgument, "empty command"),
            Some(Op::Put(put)) => self.put(index, at, put),
            Some(Op::Delete(delete)) => self.delete(delete),
            Some(Op::CreateDeployment(create)) => self.create_deployment(index, at, create),
            Some(Op::PromoteCanary(promote)) => self.promote_canary(index, at, promote),
            Some(Op::RollbackStage(rollback)) => self.rollback_stage(index, at, rollback),
            Some(Op::FlushStageCache(flush)) => self.flush_stage_cache(index, at, flush),
            Some(Op::SetClusterId(set)) => self.set_cluster_id(set),
            Some(Op::SetConsoleKey(set)) => self.set_console_key(set),
            Some(Op::SignUpConsumer(sign_up)) => self.sign_up_consumer(index, at, sign_up),
            Some(Op::SetConsumerStatus(set)) => self.set_consumer_status(index, at, set),
            Some(Op::EndSession(end)) => self.end_session(at, end),
            Some(Op::IssueConsumerKey(issue)) => self.issue_consumer_key(index, at, issue),
            Some(Op::RevokeConsumerKey(revoke)) => self.revoke_consumer_key(index, revoke),
            Some(Op::NoteUsageReset(_)) => Ok(Change::Nothing),
            Some(Op::Batch(batch)) => self.batch(index, at, batch),
            Some(Op::Restore(restore)) => self.restore(index, at, restore),
        }
    }

    /// Plans and carries out each change of a batch, in order, on a copy of
    /// the resources (cheap: they are shared), so a later change sees the
    /// earlier ones; the first refusal refuses the whole batch, naming the
    /// change (`changes[3]: …`).
    fn batch(&self, index: u64, at: Option<Timestamp>, batch: &Batch) -> Result<Change, CommandError> {
        if batch.ops.is_empty() {
            return fail(ErrorCode::InvalidArgument, "changes: at least one");
        }
        if batch.ops.len() > MAX_BATCH_CHANGES {
            return fail(
                ErrorCode::InvalidArgument,
                format!("changes: at most {MAX_BATCH_CHANGES} in one batch"),
            );
        }
        let mut scratch = self.resources();
        let mut applied = Vec::with_capacity(batch.ops.len());
        for (i, op) in batch.ops.iter().enumerate() {
            let change = match &op.op {
                Some(batch_op::Op::Put(put)) => scratch.put(index, at, put),
                Some(batch_op::Op::Delete(delete)) => scratch.delete(delete),
                None => fail(ErrorCode::InvalidArgument, "an empty change"),
            }
            .map_err(|e| CommandError {
                code: e.code,
                message: format!("changes[{i}]: {}", e.message),
            })?;
            applied.push(scratch.commit(index, change));
        }
        Ok(Change::Batch {
            resources: Box::new(scratch),
            applied,
        })
    }

    /// A copy of the resources (not the history, members or cluster id).
    fn resources(&self) -> State {
        State {
            config_version: self.config_version,
            apis: self.apis.clone(),
            deployments: self.deployments.clone(),
            stages: self.stages.clone(),
            api_keys: self.api_keys.clone(),
            usage_plans: self.usage_plans.clone(),
            domain_names: self.domain_names.clone(),
            members: BTreeMap::new(),
            cluster_id: String::new(),
            console_key: Vec::new(),
            consumers: self.consumers.clone(),
            ended_sessions: self.ended_sessions.clone(),
            history: history::History::default(),
        }
    }

    /// Takes `resources`' APIs, deployments, stages, API keys, usage plans
    /// and domain names in place of this state's.
    fn replace_resources(&mut self, resources: State) {
        self.apis = resources.apis;
        self.deployments = resources.deployments;
        self.stages = resources.stages;
        self.api_keys = resources.api_keys;
        self.usage_plans = resources.usage_plans;
        self.domain_names = resources.domain_names;
    }

    /// Carries out a planned change; cannot fail.
    fn commit(&mut self, index: u64, change: Change) -> Applied {
        match change {
            Change::Api(api) => {
                self.apis
                    .insert(ApiName::from(api.name.as_str()), Arc::new(api.clone()));
                Applied::Api(api)
            }
            Change::Stage(stage) => {
                self.stages
                    .insert(stage_key(&stage.api, &stage.name), Arc::new(stage.clone()));
                Applied::Stage(stage)
            }
            Change::ApiKey(key) => {
                self.api_keys
                    .insert(ApiKeyId::from(key.id.as_str()), Arc::new(key.clone()));
                Applied::ApiKey(key)
            }
            Change::UsagePlan(plan) => {
                self.usage_plans
                    .insert(UsagePlanName::from(plan.name.as_str()), Arc::new(plan.clone()));
                Applied::UsagePlan(plan)
            }
            Change::DomainName(domain) => {
                self.domain_names
                    .insert(DomainNameId::from(domain.name.as_str()), Arc::new(domain.clone()));
                Applied::DomainName(domain)
            }
            Change::Deployment { deployment, stage } => {
                if let Some(stage) = stage {
                    self.stages
                        .insert(stage_key(&stage.api, &stage.name), Arc::from(stage));
                }
                let key = deployment_key(&deployment.api, &deployment.id);
                let applied = (*deployment).clone();
                self.deployments.insert(key, Arc::from(deployment));
                Applied::Deployment(applied)
            }
            Change::Delete { kind, api, name } => {
                match kind {
                    resource_ref::Kind::Api => {
                        let key = ApiName::from(name.as_str());
                        self.apis.remove(&key);
                        self.stages.retain(|(a, _), _| *a != key);
                        self.deployments.retain(|(a, _), _| *a != key);
                    }
                    resource_ref::Kind::Stage => {
                        self.stages.remove(&stage_key(&api, &name));
                    }
                    resource_ref::Kind::Deployment => {
                        self.deployments.remove(&deployment_key(&api, &name));
                    }
                    resource_ref::Kind::ApiKey => {
                        // A deleted key leaves every plan and consumer it was in.
                        self.drop_key(index, &name);
                    }
                    resource_ref::Kind::UsagePlan => {
                        self.usage_plans.remove(&UsagePlanName::from(name.as_str()));
                    }
                    resource_ref::Kind::DomainName => {
                        self.domain_names.remove(&DomainNameId::from(name.as_str()));
                    }
                    resource_ref::Kind::Unspecified => {}
                }
                Applied::Deleted
            }
            Change::ClusterId(id) => {
                self.cluster_id = id;
                Applied::ClusterNamed
            }
            Change::ConsoleKey(key) => {
                self.console_key = key;
                Applied::Noted
            }
            Change::Consumer(change) => self.commit_consumer(index, change),
            Change::EndSession { id, until, now } => {
                self.ended_sessions.retain(|_, end| *end > now);
                self.ended_sessions.insert(id, until);
                Applied::Noted
            }
            Change::Nothing => Applied::Noted,
            Change::Batch { resources, applied } => {
                self.replace_resources(*resources);
                Applied::Batch(applied)
            }
            Change::Restore(resources) => {
                self.consumers = resources.consumers.clone();
                self.replace_resources(*resources);
                Applied::Restored {
                    config_version: index,
                }
            }
        }
    }

    fn set_cluster_id(&self, set: &SetClusterId) -> Result<Change, CommandError> {
        if !self.cluster_id.is_empty() {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("the cluster is already named {}", self.cluster_id),
            );
        }
        if set.cluster_id.is_empty() {
            return fail(ErrorCode::InvalidArgument, "cluster_id: required");
        }
        Ok(Change::ClusterId(set.cluster_id.clone()))
    }

    fn set_console_key(&self, set: &SetConsoleKey) -> Result<Change, CommandError> {
        if !self.console_key.is_empty() {
            return fail(ErrorCode::FailedPrecondition, "the console key is already set");
        }
        if set.key.len() != 32 {
            return fail(ErrorCode::InvalidArgument, "key: must be 32 bytes");
        }
        Ok(Change::ConsoleKey(set.key.clone()))
    }

    /// The key console sessions are sealed with (empty until set).
    pub fn console_key(&self) -> &[u8] {
        &self.console_key
    }

    /// Records a membership change in the audit log (from the entry at
    /// `index`; `removed`: a removal).
    pub fn audit_membership(&mut self, index: u64, info: &pylon_proto::raft::v1::MemberInfo, removed: bool) {
        self.history.record_membership(index, info, removed);
    }

    /// Records a member's Raft address (from a membership-change entry).
    pub fn set_member(&mut self, node_id: u64, address: Option<String>) {
        match address {
            Some(address) => self.members.insert(node_id, address),
            None => self.members.remove(&node_id),
        };
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    fn put(&self, index: u64, at: Option<Timestamp>, put: &Put) -> Result<Change, CommandError> {
        let Some(kind) = put.resource.as_ref().and_then(|r| r.kind.clone()) else {
            return fail(ErrorCode::InvalidArgument, "put without a resource");
        };
        let (create, expected) = (put.create, put.expected_revision);
        match kind {
            Kind::Api(mut api) => {
                let key = ApiName::from(api.name.as_str());
                let old = self.existing(
                    "API",
                    &api.name,
                    self.apis.get(&key).map(Arc::as_ref),
                    create,
                    expected,
                )?;
                stamp!(api, old, index, at);
                Ok(Change::Api(api))
            }
            Kind::Stage(mut stage) => {
                self.require_api(&stage.api)?;
                let name = format!("{}/{}", stage.api, stage.name);
                let key = stage_key(&stage.api, &stage.name);
                let old = self.existing(
                    "stage",
                    &name,
                    self.stages.get(&key).map(Arc::as_ref),
                    create,
                    expected,
                )?;
                self.check_stage_deployments(&stage)?;
                self.check_publication(&stage)?;
                // Only FlushStageCache moves the cache generation; a new stage
                // starts at its own index, so a stage deleted and created
                // again never reads the old one's entries.
                stage.cache_generation = old.map_or(index, |old| old.cache_generation);
                stamp!(stage, old, index, at);
                Ok(Change::Stage(stage))
            }
            Kind::ApiKey(mut key) => {
                let id = ApiKeyId::from(key.id.as_str());
                let old = self.existing(
                    "API key",
                    &key.id,
                    self.api_keys.get(&id).map(Arc::as_ref),
                    create,
                    expected,
                )?;
                if let Some(old) = old {
                    // The hash is fixed at creation; an update cannot change the key.
                    key.key_hash = old.key_hash.clone();
                    key.key_prefix = old.key_prefix.clone();
                } else if key.key_hash.is_empty() {
                    return fail(ErrorCode::InvalidArgument, "a new API key needs its hash");
                } else if self.api_keys.values().any(|k| k.key_hash == key.key_hash) {
                    return fail(
                        ErrorCode::AlreadyExists,
                        "an API key with this value already exists",
                    );
                }
                stamp!(key, old, index, at);
                Ok(Change::ApiKey(key))
            }
            Kind::UsagePlan(mut plan) => {
                let key = UsagePlanName::from(plan.name.as_str());
                let old = self.existing(
                    "usage plan",
                    &plan.name,
                    self.usage_plans.get(&key).map(Arc::as_ref),
                    create,
                    expected,
                )?;
                for (i, api_stage) in plan.api_stages.iter().enumerate() {
                    if !self
                        .stages
                        .contains_key(&stage_key(&api_stage.api, &api_stage.stage))
                    {
                        return fail(
                            ErrorCode::FailedPrecondition,
                            format!(
                                "api_stages[{i}]: stage {}/{} does not exist",
                                api_stage.api, api_stage.stage
                            ),
                        );
                    }
                }
                if let Some(stage) = self.publication_left_out(&plan.name, &plan.api_stages) {
                    return fail(
                        ErrorCode::FailedPrecondition,
                        format!(
                            "api_stages: published stage {stage} offers this plan: keep it, or unpublish it first"
                        ),
                    );
                }
                for (i, id) in plan.api_key_ids.iter().enumerate() {
                    if !self.api_keys.contains_key(&ApiKeyId::from(id.as_str())) {
                        return fail(
                            ErrorCode::FailedPrecondition,
                            format!("api_key_ids[{i}]: API key {id} does not exist"),
                        );
                    }
                }
                stamp!(plan, old, index, at);
                Ok(Change::UsagePlan(plan))
            }
            Kind::DomainName(mut domain) => {
                let key = DomainNameId::from(domain.name.as_str());
                let old = self.existing(
                    "domain name",
                    &domain.name,
                    self.domain_names.get(&key).map(Arc::as_ref),
                    create,
                    expected,
                )?;
                for (i, mapping) in domain.mappings.iter().enumerate() {
                    if !self.stages.contains_key(&stage_key(&mapping.api, &mapping.stage)) {
                        return fail(
                            ErrorCode::FailedPrecondition,
                            format!(
                                "mappings[{i}]: stage {}/{} does not exist",
                                mapping.api, mapping.stage
                            ),
                        );
                    }
                }
                stamp!(domain, old, index, at);
                Ok(Change::DomainName(domain))
            }
        }
    }

    /// The create/update preconditions shared by every kind: a create needs the
    /// name free, an update needs the resource at the expected revision.
    fn existing<'a, T: Revisioned>(
        &self,
        kind: &str,
        name: &str,
        current: Option<&'a T>,
        create: bool,
        expected: u64,
    ) -> Result<Option<&'a T>, CommandError> {
        match (current, create) {
            (Some(_), true) => fail(ErrorCode::AlreadyExists, format!("{kind} {name} already exists")),
            (None, false) => fail(ErrorCode::NotFound, format!("{kind} {name} not found")),
            (None, true) => Ok(None),
            (Some(current), false) => {
                check_revision(kind, name, current.revision(), expected)?;
                Ok(Some(current))
            }
        }
    }

    fn require_api(&self, api: &str) -> Result<&Api, CommandError> {
        match self.apis.get(&ApiName::from(api)) {
            Some(found) => Ok(found),
            None => fail(ErrorCode::NotFound, format!("API {api} not found")),
        }
    }

    fn check_stage_deployments(&self, stage: &Stage) -> Result<(), CommandError> {
        if !stage.deployment_id.is_empty()
            && !self
                .deployments
                .contains_key(&deployment_key(&stage.api, &stage.deployment_id))
        {
            return fail(
                ErrorCode::FailedPrecondition,
                format!(
                    "deployment_id: API {} has no deployment {}",
                    stage.api, stage.deployment_id
                ),
            );
        }
        if let Some(canary) = &stage.canary
            && !self
                .deployments
                .contains_key(&deployment_key(&stage.api, &canary.deployment_id))
        {
            return fail(
                ErrorCode::FailedPrecondition,
                format!(
                    "canary.deployment_id: API {} has no deployment {}",
                    stage.api, canary.deployment_id
                ),
            );
        }
        Ok(())
    }

    /// A published stage's usage plan exists and offers the stage.
    fn check_publication(&self, stage: &Stage) -> Result<(), CommandError> {
        let Some(publication) = stage.publication.as_ref().filter(|p| p.published) else {
            return Ok(());
        };
        let offers = self
            .usage_plans
            .get(&UsagePlanName::from(publication.usage_plan.as_str()))
            .map(|plan| {
                plan.api_stages
                    .iter()
                    .any(|s| s.api == stage.api && s.stage == stage.name)
            });
        match offers {
            Some(true) => Ok(()),
            Some(false) => fail(
                ErrorCode::FailedPrecondition,
                format!(
                    "publication.usage_plan: plan {} does not offer stage {}/{} (add it to the plan's api_stages first)",
                    publication.usage_plan, stage.api, stage.name
                ),
            ),
            None => fail(
                ErrorCode::FailedPrecondition,
                format!(
                    "publication.usage_plan: usage plan {} not found",
                    publication.usage_plan
                ),
            ),
        }
    }

    /// The published stage that offers `plan` but that `api_stages` would
    /// leave out, if any.
    fn publication_left_out(
        &self,
        plan: &str,
        api_stages: &[pylon_proto::config::v1::ApiStageRef],
    ) -> Option<String> {
        self.stages.values().find_map(|stage| {
            let publication = stage.publication.as_ref().filter(|p| p.published)?;
            let left_out = publication.usage_plan == plan
                && !api_stages
                    .iter()
                    .any(|s| s.api == stage.api && s.stage == stage.name);
            left_out.then(|| format!("{}/{}", stage.api, stage.name))
        })
    }

    fn delete(&self, delete: &Delete) -> Result<Change, CommandError> {
        let Some(target) = &delete.target else {
            return fail(ErrorCode::InvalidArgument, "delete without a target");
        };
        let expected = delete.expected_revision;
        let (api, name) = (target.api.as_str(), target.name.as_str());
        let kind = resource_ref::Kind::try_from(target.kind).unwrap_or(resource_ref::Kind::Unspecified);
        match kind {
            resource_ref::Kind::Api => {
                let found = self.require_api(name)?;
                check_revision("API", name, found.revision, expected)?;
                if let Some(plan) = self
                    .usage_plans
                    .values()
                    .find(|p| p.api_stages.iter().any(|s| s.api == name))
                {
                    return fail(
                        ErrorCode::FailedPrecondition,
                        format!("API {name} is used by usage plan {}: detach it first", plan.name),
                    );
                }
                if let Some(domain) = self
                    .domain_names
                    .values()
                    .find(|d| d.mappings.iter().any(|m| m.api == name))
                {
                    return fail(
                        ErrorCode::FailedPrecondition,
                        format!(
                            "API {name} is mapped by domain name {}: remove the mapping first",
                            domain.name
                        ),
                    );
                }
            }
            resource_ref::Kind::Stage => {
                let key = stage_key(api, name);
                let Some(found) = self.stages.get(&key) else {
                    return fail(ErrorCode::NotFound, format!("stage {api}/{name} not found"));
                };
                check_revision("stage", name, found.revision, expected)?;
                self.stage_unreferenced(api, name)?;
            }
            resource_ref::Kind::Deployment => {
                let key = deployment_key(api, name);
                if !self.deployments.contains_key(&key) {
                    return fail(
                        ErrorCode::NotFound,
                        format!("deployment {name} of API {api} not found"),
                    );
                }
                let used = self.stages.values().find(|s| {
                    s.api == api
                        && (s.deployment_id == name
                            || s.canary.as_ref().is_some_and(|c| c.deployment_id == name))
                });
                if let Some(stage) = used {
                    return fail(
                        ErrorCode::FailedPrecondition,
                        format!("deployment {name} is in use by stage {}", stage.name),
                    );
                }
            }
            resource_ref::Kind::ApiKey => {
                let key = ApiKeyId::from(name);
                let Some(found) = self.api_keys.get(&key) else {
                    return fail(ErrorCode::NotFound, format!("API key {name} not found"));
                };
                check_revision("API key", name, found.revision, expected)?;
            }
            resource_ref::Kind::UsagePlan => {
                let key = UsagePlanName::from(name);
                let Some(found) = self.usage_plans.get(&key) else {
                    return fail(ErrorCode::NotFound, format!("usage plan {name} not found"));
                };
                check_revision("usage plan", name, found.revision, expected)?;
                if let Some(stage) = self.publication_left_out(name, &[]) {
                    return fail(
                        ErrorCode::FailedPrecondition,
                        format!(
                            "usage plan {name} is offered by published stage {stage}: unpublish it first"
                        ),
                    );
                }
            }
            resource_ref::Kind::DomainName => {
                let key = DomainNameId::from(name);
                let Some(found) = self.domain_names.get(&key) else {
                    return fail(ErrorCode::NotFound, format!("domain name {name} not found"));
                };
                check_revision("domain name", name, found.revision, expected)?;
            }
            resource_ref::Kind::Unspecified => {
                return fail(ErrorCode::InvalidArgument, "delete of an unknown kind");
            }
        }
        Ok(Change::Delete {
            kind,
            api: api.to_owned(),
            name: name.to_owned(),
        })
    }

    fn stage_unreferenced(&self, api: &str, name: &str) -> Result<(), CommandError> {
        if let Some(plan) = self
            .usage_plans
            .values()
            .find(|p| p.api_stages.iter().any(|s| s.api == api && s.stage == name))
        {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("stage {api}/{name} is used by usage plan {}", plan.name),
            );
        }
        if let Some(domain) = self
            .domain_names
            .values()
            .find(|d| d.mappings.iter().any(|m| m.api == api && m.stage == name))
        {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("stage {api}/{name} is mapped by domain name {}", domain.name),
            );
        }
        Ok(())
    }

    fn create_deployment(
        &self,
        index: u64,
        at: Option<Timestamp>,
        create: &CreateDeployment,
    ) -> Result<Change, CommandError> {
        let definition = self.require_api(&create.api)?.clone();
        if self
            .deployments
            .contains_key(&deployment_key(&create.api, &create.id))
        {
            return fail(
                ErrorCode::AlreadyExists,
                format!("deployment {} already exists", create.id),
            );
        }
        let deployment = Deployment {
            id: create.id.clone(),
            api: create.api.clone(),
            description: create.description.clone(),
            definition: Some(definition),
            created_at: at,
            revision: index,
        };
        let stage = (!create.stage.is_empty()).then(|| {
            let mut stage = self
                .stage(&create.api, &create.stage)
                .cloned()
                .unwrap_or_else(|| Stage {
                    api: create.api.clone(),
                    name: create.stage.clone(),
                    created_at: at,
                    ..Default::default()
                });
            stage.deployment_id = create.id.clone();
            stage.revision = index;
            stage.updated_at = at;
            Box::new(stage)
        });
        Ok(Change::Deployment {
            deployment: Box::new(deployment),
            stage,
        })
    }

    /// A copy of the stage to modify, if it exists at the expected revision.
    fn stage_at(&self, api: &str, name: &str, expected: u64) -> Result<Stage, CommandError> {
        match self.stage(api, name) {
            None => fail(ErrorCode::NotFound, format!("stage {api}/{name} not found")),
            Some(stage) => {
                check_revision("stage", name, stage.revision, expected)?;
                Ok(stage.clone())
            }
        }
    }

    fn promote_canary(
        &self,
        index: u64,
        at: Option<Timestamp>,
        promote: &PromoteCanary,
    ) -> Result<Change, CommandError> {
        let mut stage = self.stage_at(&promote.api, &promote.stage, promote.expected_revision)?;
        let Some(canary) = stage.canary.as_mut() else {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("stage {}/{} has no canary to promote", promote.api, promote.stage),
            );
        };
        stage.deployment_id = canary.deployment_id.clone();
        for (name, value) in &canary.stage_variable_overrides {
            stage.variables.insert(name.clone(), value.clone());
        }
        canary.percent_traffic = 0.0;
        stage.revision = index;
        stage.updated_at = at;
        Ok(Change::Stage(stage))
    }

    fn rollback_stage(
        &self,
        index: u64,
        at: Option<Timestamp>,
        rollback: &RollbackStage,
    ) -> Result<Change, CommandError> {
        if self.deployment(&rollback.api, &rollback.deployment_id).is_none() {
            return fail(
                ErrorCode::NotFound,
                format!(
                    "deployment {} of API {} not found",
                    rollback.deployment_id, rollback.api
                ),
            );
        }
        let mut stage = self.stage_at(&rollback.api, &rollback.stage, rollback.expected_revision)?;
        stage.deployment_id = rollback.deployment_id.clone();
        stage.revision = index;
        stage.updated_at = at;
        Ok(Change::Stage(stage))
    }

    fn flush_stage_cache(
        &self,
        index: u64,
        at: Option<Timestamp>,
        flush: &FlushStageCache,
    ) -> Result<Change, CommandError> {
        let mut stage = self.stage_at(&flush.api, &flush.stage, 0)?;
        // The log index: unique, and larger than any generation before.
        stage.cache_generation = index;
        stage.revision = index;
        stage.updated_at = at;
        Ok(Change::Stage(stage))
    }

    // ---- reads ----

    pub fn api(&self, name: &str) -> Option<&Api> {
        self.apis.get(&ApiName::from(name)).map(Arc::as_ref)
    }

    /// APIs by name, starting after `after`.
    pub fn apis_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a Api> + 'a {
        let after = after.to_owned();
        self.apis
            .values()
            .map(Arc::as_ref)
            .filter(move |a| a.name > after)
    }

    pub fn stage(&self, api: &str, name: &str) -> Option<&Stage> {
        self.stages.get(&stage_key(api, name)).map(Arc::as_ref)
    }

    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        self.stages.values().map(Arc::as_ref)
    }

    pub fn stages_of<'a>(&'a self, api: &str) -> impl Iterator<Item = &'a Stage> + 'a {
        let api = ApiName::from(api);
        self.stages
            .iter()
            .filter(move |((a, _), _)| *a == api)
            .map(|(_, s)| s.as_ref())
    }

    pub fn deployment(&self, api: &str, id: &str) -> Option<&Deployment> {
        self.deployments.get(&deployment_key(api, id)).map(Arc::as_ref)
    }

    /// The API's deployment history, newest first.
    pub fn deployments_of(&self, api: &str) -> Vec<&Deployment> {
        let api = ApiName::from(api);
        let mut history: Vec<&Deployment> = self
            .deployments
            .iter()
            .filter(|((a, _), _)| *a == api)
            .map(|(_, d)| d.as_ref())
            .collect();
        history.sort_by_cached_key(|d| deployment_order(d));
        history
    }

    pub fn api_key(&self, id: &str) -> Option<&ApiKey> {
        self.api_keys.get(&ApiKeyId::from(id)).map(Arc::as_ref)
    }

    pub fn api_keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.api_keys.values().map(Arc::as_ref)
    }

    pub fn usage_plan(&self, name: &str) -> Option<&UsagePlan> {
        self.usage_plans.get(&UsagePlanName::from(name)).map(Arc::as_ref)
    }

    pub fn usage_plans(&self) -> impl Iterator<Item = &UsagePlan> {
        self.usage_plans.values().map(Arc::as_ref)
    }

    pub fn domain_name(&self, name: &str) -> Option<&DomainName> {
        self.domain_names.get(&DomainNameId::from(name)).map(Arc::as_ref)
    }

    pub fn domain_names(&self) -> impl Iterator<Item = &DomainName> {
        self.domain_names.values().map(Arc::as_ref)
    }

    // ---- snapshots ----

    /// The whole state as one message, for Raft snapshots. Deterministic:
    /// equal states give equal bytes.
    pub fn to_image(&self) -> StateImage {
        let (audit, remembered) = self.history.to_image();
        StateImage {
            cluster_id: self.cluster_id.clone(),
            audit,
            remembered,
            config_version: self.config_version,
            apis: self.apis.values().map(|r| r.as_ref().clone()).collect(),
            deployments: self.deployments.values().map(|r| r.as_ref().clone()).collect(),
            stages: self.stages.values().map(|r| r.as_ref().clone()).collect(),
            api_keys: self.api_keys.values().map(|r| r.as_ref().clone()).collect(),
            usage_plans: self.usage_plans.values().map(|r| r.as_ref().clone()).collect(),
            domain_names: self.domain_names.values().map(|r| r.as_ref().clone()).collect(),
            member_addresses: self.members.clone(),
            console_key: self.console_key.clone(),
            consumers: self.consumers.values().map(|c| c.as_ref().clone()).collect(),
            ended_sessions: self.ended_sessions.clone().into_iter().collect(),
        }
    }

    pub fn from_image(image: StateImage) -> State {
        State {
            config_version: image.config_version,
            apis: image
                .apis
                .into_iter()
                .map(|a| (ApiName::from(a.name.as_str()), Arc::new(a)))
                .collect(),
            deployments: image
                .deployments
                .into_iter()
                .map(|d| (deployment_key(&d.api, &d.id), Arc::new(d)))
                .collect(),
            stages: image
                .stages
                .into_iter()
                .map(|s| (stage_key(&s.api, &s.name), Arc::new(s)))
                .collect(),
            api_keys: image
                .api_keys
                .into_iter()
                .map(|k| (ApiKeyId::from(k.id.as_str()), Arc::new(k)))
                .collect(),
            usage_plans: image
                .usage_plans
                .into_iter()
                .map(|p| (UsagePlanName::from(p.name.as_str()), Arc::new(p)))
                .collect(),
            domain_names: image
                .domain_names
                .into_iter()
                .map(|d| (DomainNameId::from(d.name.as_str()), Arc::new(d)))
                .collect(),
            members: image.member_addresses,
            cluster_id: image.cluster_id,
            console_key: image.console_key,
            consumers: image
                .consumers
                .into_iter()
                .map(|c| (c.email.clone(), Arc::new(c)))
                .collect(),
            ended_sessions: image.ended_sessions.into_iter().collect(),
            history: history::History::from_image(image.audit, image.remembered),
        }
    }
}

/// Resources that carry an optimistic-concurrency revision.
trait Revisioned {
    fn revision(&self) -> u64;
}

macro_rules! revisioned {
    ($($t:ty),*) => {$(
        impl Revisioned for $t {
            fn revision(&self) -> u64 {
                self.revision
            }
        }
    )*};
}
revisioned!(Api, Stage, ApiKey, UsagePlan, DomainName);

#[cfg(test)]
mod tests;
