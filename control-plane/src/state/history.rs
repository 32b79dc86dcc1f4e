//! What the state machine remembers about the commands it applied, besides
//! their effect: the audit log (who changed what, when) and the outcome of
//! every command that carried an idempotency key, so a retried write is
//! answered with its first outcome instead of being applied twice.
//!
//! Both are bounded and evict their oldest entries first, by log index, so
//! every replica keeps exactly the same ones:
//! - the audit log keeps the last [`MAX_AUDIT_RECORDS`] records;
//! - remembered requests are kept for the last [`MAX_REMEMBERED`] keyed
//!   commands and at most [`MAX_REMEMBERED_BYTES`] of encoded outcomes; a key
//!   retried after its entry was evicted is a new request. This is the
//!   idempotency window (the IETF `Idempotency-Key` draft leaves its length
//!   to the server; Stripe keeps 24 hours).

use super::{Applied, CommandError};
use prost::Message as _;
use pylon_common::ErrorCode;
use pylon_proto::config::v1::{Resource, resource::Kind};
use pylon_proto::raft::v1::{
    AuditRecord, BatchOutcome, Command, Refusal, RememberedRequest, ResourceRef, command::Op,
    remembered_request::Outcome, resource_ref,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Audit records kept (the oldest go first).
pub const MAX_AUDIT_RECORDS: usize = 10_000;
/// Keyed commands whose outcome is kept.
pub const MAX_REMEMBERED: usize = 10_000;
/// Encoded size of the kept outcomes, bytes.
pub const MAX_REMEMBERED_BYTES: usize = 32 << 20;
/// The longest idempotency key accepted, characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The audit log and the remembered outcomes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    audit: VecDeque<Arc<AuditRecord>>,
    remembered: BTreeMap<String, Arc<RememberedRequest>>,
    /// Remembered keys by the index that created them, oldest first.
    order: BTreeMap<u64, String>,
    remembered_bytes: usize,
}

/// Where a command's idempotency key is kept: per caller, so two callers
/// cannot collide (or learn about each other's keys).
pub fn scoped_key(command: &Command) -> Option<String> {
    if command.idempotency_key.is_empty() {
        return None;
    }
    let caller = command.actor.as_ref().map_or("", |a| a.name.as_str());
    Some(format!("{caller}\0{}", command.idempotency_key))
}

impl History {
    /// The first outcome of a command with the same key, if one is kept.
    ///
    /// # Errors
    /// `InvalidArgument` when the key was used with a different request.
    pub fn replay(&self, command: &Command) -> Result<Option<Result<Applied, CommandError>>, CommandError> {
        let Some(key) = scoped_key(command) else {
            return Ok(None);
        };
        let Some(first) = self.remembered.get(&key) else {
            return Ok(None);
        };
        if first.request_digest != command.request_digest {
            return Err(CommandError {
                code: ErrorCode::InvalidArgument,
                message: format!(
                    "idempotency-key: {:?} was already used at index {} for a different request",
                    command.idempotency_key, first.index
                ),
            });
        }
        Ok(Some(outcome(first)))
    }

    /// Records a command that reached the log: its audit record and, when it
    /// carried a key, its outcome.
    pub fn record(&mut self, index: u64, command: &Command, result: &Result<Applied, CommandError>) {
        let (error_code, error) = match result {
            Ok(_) => (String::new(), String::new()),
            Err(e) => (e.code.to_string(), e.message.clone()),
        };
        self.audit.push_back(Arc::new(AuditRecord {
            index,
            at: command.at,
            actor: command.actor.clone(),
            method: command.method.clone(),
            resource: Some(target(command)),
            error_code,
            error,
            idempotency_key: command.idempotency_key.clone(),
        }));
        while self.audit.len() > MAX_AUDIT_RECORDS {
            self.audit.pop_front();
        }
        if let Some(key) = scoped_key(command) {
            let entry = RememberedRequest {
                key: key.clone(),
                request_digest: command.request_digest.clone(),
                index,
                outcome: Some(match result {
                    Ok(applied) => stored(applied),
                    Err(e) => Outcome::Refusal(Refusal {
                        code: e.code.grpc_code() as i32,
                        message: e.message.clone(),
                    }),
                }),
            };
            self.remember(entry);
        }
    }

    /// Records a membership change (a Raft configuration entry, not a
    /// command: it keeps no outcome).
    pub fn record_membership(&mut self, index: u64, info: &pylon_proto::raft::v1::MemberInfo, removed: bool) {
        self.audit.push_back(Arc::new(AuditRecord {
            index,
            at: info.at,
            actor: info.actor.clone(),
            method: if removed { "RemoveMember" } else { "AddMember" }.to_owned(),
            resource: Some(ResourceRef {
                kind: resource_ref::Kind::Unspecified as i32,
                api: String::new(),
                name: if removed {
                    format!("node {}", info.node_id)
                } else {
                    format!("node {} at {}", info.node_id, info.raft_address)
                },
            }),
            ..AuditRecord::default()
        }));
        while self.audit.len() > MAX_AUDIT_RECORDS {
            self.audit.pop_front();
        }
    }

    fn remember(&mut self, entry: RememberedRequest) {
        self.remembered_bytes += entry.encoded_len();
        self.order.insert(entry.index, entry.key.clone());
        if let Some(old) = self.remembered.insert(entry.key.clone(), Arc::new(entry)) {
            // Only reachable when a snapshot held the same key twice.
            self.order.remove(&old.index);
            self.remembered_bytes -= old.encoded_len();
        }
        while self.remembered.len() > MAX_REMEMBERED || self.remembered_bytes > MAX_REMEMBERED_BYTES {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some(old) = self.remembered.remove(&key) {
                self.remembered_bytes -= old.encoded_len();
            }
        }
    }

    /// Audit records older than `before` (0: from the newest), newest first.
    pub fn audit_before(&self, before: u64) -> impl Iterator<Item = &AuditRecord> {
        self.audit
            .iter()
            .rev()
            .filter(move |r| before == 0 || r.index < before)
            .map(Arc::as_ref)
    }

    pub fn audit_len(&self) -> usize {
        self.audit.len()
    }

    pub fn remembered_len(&self) -> usize {
        self.remembered.len()
    }

    /// Both, for a snapshot image (oldest first).
    pub fn to_image(&self) -> (Vec<AuditRecord>, Vec<RememberedRequest>) {
        let audit = self.audit.iter().map(|r| r.as_ref().clone()).collect();
        let remembered = self
            .order
            .values()
            .filter_map(|key| self.remembered.get(key))
            .map(|r| r.as_ref().clone())
            .collect();
        (audit, remembered)
    }

    pub fn from_image(audit: Vec<AuditRecord>, remembered: Vec<RememberedRequest>) -> History {
        let mut history = History {
            audit: audit.into_iter().map(Arc::new).collect(),
            ..History::default()
        };
        for entry in remembered {
            history.remember(entry);
        }
        history
    }
}

/// What a command acts on, for its audit record.
fn target(command: &Command) -> ResourceRef {
    use resource_ref::Kind as K;
    let reference = |kind: K, api: &str, name: &str| ResourceRef {
        kind: kind as i32,
        api: api.to_owned(),
        name: name.to_owned(),
    };
    match &command.op {
        Some(Op::Put(put)) => match put.resource.as_ref().and_then(|r| r.kind.as_ref()) {
            Some(Kind::Api(api)) => reference(K::Api, "", &api.name),
            Some(Kind::Stage(stage)) => reference(K::Stage, &stage.api, &stage.name),
            Some(Kind::ApiKey(key)) => reference(K::ApiKey, "", &key.id),
            Some(Kind::UsagePlan(plan)) => reference(K::UsagePlan, "", &plan.name),
            Some(Kind::DomainName(domain)) => reference(K::DomainName, "", &domain.name),
            None => reference(K::Unspecified, "", ""),
        },
        Some(Op::Delete(delete)) => delete.target.clone().unwrap_or_default(),
        Some(Op::CreateDeployment(create)) => reference(K::Deployment, &create.api, &create.id),
        Some(Op::PromoteCanary(p)) => reference(K::Stage, &p.api, &p.stage),
        Some(Op::RollbackStage(r)) => reference(K::Stage, &r.api, &r.stage),
        Some(Op::FlushStageCache(f)) => reference(K::Stage, &f.api, &f.stage),
        Some(Op::SetClusterId(set)) => reference(K::Unspecified, "", &set.cluster_id),
        Some(Op::SetConsoleKey(_)) => reference(K::Unspecified, "", "console session key"),
        Some(Op::SignUpConsumer(sign_up)) => reference(
            K::Unspecified,
            "",
            &format!(
                "consumer {}",
                sign_up.consumer.as_ref().map_or("", |c| c.email.as_str())
            ),
        ),
        Some(Op::SetConsumerStatus(set)) => reference(K::Unspecified, "", &format!("consumer {}", set.email)),
        Some(Op::IssueConsumerKey(issue)) => reference(
            K::ApiKey,
            "",
            issue.api_key.as_ref().map_or("", |k| k.id.as_str()),
        ),
        Some(Op::RevokeConsumerKey(revoke)) => reference(K::ApiKey, "", &revoke.api_key_id),
        Some(Op::EndSession(_)) => reference(K::Unspecified, "", "session"),
        Some(Op::NoteUsageReset(note)) => reference(K::UsagePlan, "", &note.usage_plan),
        Some(Op::Batch(batch)) => reference(
            K::Unspecified,
            "",
            &format!("batch of {} changes", batch.ops.len()),
        ),
        Some(Op::Restore(restore)) => reference(
            K::Unspecified,
            "",
            &format!(
                "backup of cluster {} at version {}{}",
                if restore.from_cluster_id.is_empty() {
                    "(unnamed)"
                } else {
                    restore.from_cluster_id.as_str()
                },
                restore.from_config_version,
                if restore.replace { ", replacing" } else { "" }
            ),
        ),
        None => reference(K::Unspecified, "", ""),
    }
}

fn stored(applied: &Applied) -> Outcome {
    let resource = |kind| Outcome::Resource(Resource { kind: Some(kind) });
    match applied {
        Applied::Api(api) => resource(Kind::Api(api.clone())),
        Applied::Stage(stage) => resource(Kind::Stage(stage.clone())),
        Applied::ApiKey(key) => resource(Kind::ApiKey(key.clone())),
        Applied::UsagePlan(plan) => resource(Kind::UsagePlan(plan.clone())),
        Applied::DomainName(domain) => resource(Kind::DomainName(domain.clone())),
        Applied::Deployment(deployment) => Outcome::Deployment(deployment.clone()),
        Applied::Deleted | Applied::ClusterNamed | Applied::Noted => Outcome::Deleted(true),
        Applied::Batch(applied) => {
            let (stored, deleted) = batch_outcome(applied);
            Outcome::Batch(BatchOutcome { stored, deleted })
        }
        Applied::Restored { config_version } => Outcome::Restored(*config_version),
        Applied::Consumer(consumer) => Outcome::Consumer(consumer.clone()),
    }
}

/// A batch's puts as resources, in order, and its count of deletes.
pub fn batch_outcome(applied: &[Applied]) -> (Vec<Resource>, u32) {
    let mut stored = Vec::new();
    let mut deleted = 0;
    for one in applied {
        match stored_resource(one) {
            Some(resource) => stored.push(resource),
            None => deleted += 1,
        }
    }
    (stored, deleted)
}

fn stored_resource(applied: &Applied) -> Option<Resource> {
    let kind = match applied {
        Applied::Api(api) => Kind::Api(api.clone()),
        Applied::Stage(stage) => Kind::Stage(stage.clone()),
        Applied::ApiKey(key) => Kind::ApiKey(key.clone()),
        Applied::UsagePlan(plan) => Kind::UsagePlan(plan.clone()),
        Applied::DomainName(domain) => Kind::DomainName(domain.clone()),
        _ => return None,
    };
    Some(Resource { kind: Some(kind) })
}

fn outcome(first: &RememberedRequest) -> Result<Applied, CommandError> {
    match &first.outcome {
        Some(Outcome::Resource(Resource { kind: Some(kind) })) => Ok(match kind.clone() {
            Kind::Api(api) => Applied::Api(api),
            Kind::Stage(stage) => Applied::Stage(stage),
            Kind::ApiKey(key) => Applied::ApiKey(key),
            Kind::UsagePlan(plan) => Applied::UsagePlan(plan),
            Kind::DomainName(domain) => Applied::DomainName(domain),
        }),
        Some(Outcome::Deployment(deployment)) => Ok(Applied::Deployment(deployment.clone())),
        Some(Outcome::Deleted(_)) => Ok(Applied::Deleted),
        Some(Outcome::Consumer(consumer)) => Ok(Applied::Consumer(consumer.clone())),
        Some(Outcome::Restored(config_version)) => Ok(Applied::Restored {
            config_version: *config_version,
        }),
        Some(Outcome::Batch(batch)) => {
            let mut applied: Vec<Applied> = batch
                .stored
                .iter()
                .filter_map(|r| r.kind.clone())
                .map(|kind| match kind {
                    Kind::Api(api) => Applied::Api(api),
                    Kind::Stage(stage) => Applied::Stage(stage),
                    Kind::ApiKey(key) => Applied::ApiKey(key),
                    Kind::UsagePlan(plan) => Applied::UsagePlan(plan),
                    Kind::DomainName(domain) => Applied::DomainName(domain),
                })
                .collect();
            applied.extend((0..batch.deleted).map(|_| Applied::Deleted));
            Ok(Applied::Batch(applied))
        }
        Some(Outcome::Refusal(refusal)) => Err(CommandError {
            code: ErrorCode::from_grpc(tonic::Code::from_i32(refusal.code)),
            message: refusal.message.clone(),
        }),
        Some(Outcome::Resource(Resource { kind: None })) | None => Err(CommandError {
            code: ErrorCode::Internal,
            message: format!("the outcome of index {} was not kept", first.index),
        }),
    }
}
