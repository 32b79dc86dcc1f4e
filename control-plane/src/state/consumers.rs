//! Developers who signed up on the portal, and the API keys they make
//! themselves (docs/portal.md). A consumer is made `PENDING`; an operator
//! approves it; only an approved consumer makes keys, each for the usage
//! plan a published stage offers, and only its own keys it rotates or
//! revokes. A disabled consumer's keys are disabled with it (approving it
//! again enables none), and a disabled key cannot be rotated.

use super::{Applied, Change, CommandError, State, fail, stage_key};
use pylon_common::ErrorCode;
use pylon_common::ids::{ApiKeyId, UsagePlanName};
use pylon_proto::config::v1::ApiKey;
use pylon_proto::raft::v1::{
    Consumer, IssueConsumerKey, RevokeConsumerKey, SetConsumerStatus, SignUpConsumer, consumer::Status,
};
use pylon_proto::wkt::Timestamp;
use std::sync::Arc;

/// Keys one consumer may hold.
pub const MAX_KEYS_PER_CONSUMER: usize = 10;
/// Consumers a cluster keeps.
pub const MAX_CONSUMERS: usize = 100_000;

/// What a consumer command changes.
pub(super) enum ConsumerChange {
    Put(Box<Consumer>),
    /// A key made (and one revoked, for a rotation) for a plan.
    Key {
        consumer: Box<Consumer>,
        key: Box<ApiKey>,
        plan: String,
        revoked: Option<String>,
    },
    Revoked {
        consumer: Box<Consumer>,
        key_id: String,
    },
}

impl State {
    pub fn consumer(&self, email: &str) -> Option<&Consumer> {
        self.consumers.get(email).map(Arc::as_ref)
    }

    pub fn consumers(&self) -> impl Iterator<Item = &Consumer> {
        self.consumers.values().map(Arc::as_ref)
    }

    pub(super) fn sign_up_consumer(
        &self,
        index: u64,
        at: Option<Timestamp>,
        sign_up: &SignUpConsumer,
    ) -> Result<Change, CommandError> {
        let Some(consumer) = &sign_up.consumer else {
            return fail(ErrorCode::InvalidArgument, "consumer: required");
        };
        if consumer.email.is_empty() || consumer.password_hash.is_empty() {
            return fail(
                ErrorCode::InvalidArgument,
                "consumer: email and password hash required",
            );
        }
        if self.consumers.contains_key(&consumer.email) {
            return fail(
                ErrorCode::AlreadyExists,
                format!("consumer {} already exists", consumer.email),
            );
        }
        if self.consumers.len() >= MAX_CONSUMERS {
            return fail(ErrorCode::ResourceExhausted, "the portal takes no more sign-ups");
        }
        Ok(Change::Consumer(ConsumerChange::Put(Box::new(Consumer {
            status: Status::Pending as i32,
            api_key_ids: Vec::new(),
            created_at: at,
            revision: index,
            ..consumer.clone()
        }))))
    }

    fn existing_consumer(&self, email: &str) -> Result<&Consumer, CommandError> {
        match self.consumers.get(email) {
            Some(consumer) => Ok(consumer),
            None => fail(ErrorCode::NotFound, format!("consumer {email} not found")),
        }
    }

    pub(super) fn set_consumer_status(
        &self,
        index: u64,
        at: Option<Timestamp>,
        set: &SetConsumerStatus,
    ) -> Result<Change, CommandError> {
        let consumer = self.existing_consumer(&set.email)?;
        if Status::try_from(set.status).is_err() {
            return fail(
                ErrorCode::InvalidArgument,
                "status: PENDING, APPROVED or DISABLED",
            );
        }
        Ok(Change::Consumer(ConsumerChange::Put(Box::new(Consumer {
            status: set.status,
            revision: index,
            sessions_after: at.map_or(consumer.sessions_after, |t| t.seconds),
            ..consumer.clone()
        }))))
    }

    pub(super) fn issue_consumer_key(
        &self,
        index: u64,
        at: Option<Timestamp>,
        issue: &IssueConsumerKey,
    ) -> Result<Change, CommandError> {
        let consumer = self.existing_consumer(&issue.email)?;
        if consumer.status != Status::Approved as i32 {
            return fail(
                ErrorCode::PermissionDenied,
                format!("consumer {} is not approved", consumer.email),
            );
        }
        let Some(stage) = self.stages.get(&stage_key(&issue.api, &issue.stage)) else {
            return fail(
                ErrorCode::NotFound,
                format!("stage {}/{} not found", issue.api, issue.stage),
            );
        };
        let offered = stage
            .publication
            .as_ref()
            .filter(|p| p.published)
            .map(|p| p.usage_plan.clone());
        let Some(plan_name) = offered else {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("stage {}/{} is not published", issue.api, issue.stage),
            );
        };
        if !self
            .usage_plans
            .contains_key(&UsagePlanName::from(plan_name.as_str()))
        {
            return fail(
                ErrorCode::FailedPrecondition,
                format!("usage plan {plan_name} not found"),
            );
        }
        let revoked = if issue.replaces.is_empty() {
            None
        } else if consumer.api_key_ids.contains(&issue.replaces) {
            // A key an operator disabled stays disabled: rotating it would
            // give the consumer an enabled one.
            if self
                .api_keys
                .get(&ApiKeyId::from(issue.replaces.as_str()))
                .is_some_and(|k| !k.enabled)
            {
                return fail(
                    ErrorCode::FailedPrecondition,
                    format!("key {} is disabled: it cannot be rotated", issue.replaces),
                );
            }
            Some(issue.replaces.clone())
        } else {
            return fail(
                ErrorCode::NotFound,
                format!("{} has no key {}", consumer.email, issue.replaces),
            );
        };
        if revoked.is_none() && consumer.api_key_ids.len() >= MAX_KEYS_PER_CONSUMER {
            return fail(
                ErrorCode::ResourceExhausted,
                format!("at most {MAX_KEYS_PER_CONSUMER} keys per consumer: revoke one first"),
            );
        }
        let Some(mut key) = issue.api_key.clone() else {
            return fail(ErrorCode::InvalidArgument, "api_key: required");
        };
        if key.id.is_empty()
            || key.key_hash.is_empty()
            || self.api_keys.contains_key(&ApiKeyId::from(key.id.as_str()))
        {
            return fail(
                ErrorCode::InvalidArgument,
                "api_key: a new id and hash are required",
            );
        }
        if self.api_keys.values().any(|k| k.key_hash == key.key_hash) {
            return fail(
                ErrorCode::AlreadyExists,
                "an API key with this value already exists",
            );
        }
        key.enabled = true;
        key.revision = index;
        key.created_at = at;
        key.updated_at = at;
        let mut consumer = consumer.clone();
        consumer.api_key_ids.retain(|id| Some(id) != revoked.as_ref());
        consumer.api_key_ids.push(key.id.clone());
        consumer.revision = index;
        Ok(Change::Consumer(ConsumerChange::Key {
            consumer: Box::new(consumer),
            key: Box::new(key),
            plan: plan_name,
            revoked,
        }))
    }

    pub(super) fn revoke_consumer_key(
        &self,
        index: u64,
        revoke: &RevokeConsumerKey,
    ) -> Result<Change, CommandError> {
        let consumer = self.existing_consumer(&revoke.email)?;
        if !consumer.api_key_ids.contains(&revoke.api_key_id) {
            return fail(
                ErrorCode::NotFound,
                format!("{} has no key {}", consumer.email, revoke.api_key_id),
            );
        }
        let mut consumer = consumer.clone();
        consumer.api_key_ids.retain(|id| *id != revoke.api_key_id);
        consumer.revision = index;
        Ok(Change::Consumer(ConsumerChange::Revoked {
            consumer: Box::new(consumer),
            key_id: revoke.api_key_id.clone(),
        }))
    }

    /// Removes a key from the state and from every plan.
    pub(super) fn drop_key(&mut self, index: u64, id: &str) {
        self.api_keys.remove(&ApiKeyId::from(id));
        for plan in self.usage_plans.values_mut() {
            if plan.api_key_ids.iter().any(|k| k == id) {
                let plan = Arc::make_mut(plan);
                plan.api_key_ids.retain(|k| k != id);
                plan.revision = index;
            }
        }
        for consumer in self.consumers.values_mut() {
            if consumer.api_key_ids.iter().any(|k| k == id) {
                Arc::make_mut(consumer).api_key_ids.retain(|k| k != id);
            }
        }
    }

    pub(super) fn commit_consumer(&mut self, index: u64, change: ConsumerChange) -> Applied {
        match change {
            ConsumerChange::Put(consumer) => {
                // A disabled consumer's keys are disabled. Approval enables
                // none: a key an operator disabled on its own stays so (an
                // operator enables keys, or the consumer makes new ones).
                let enabled = match Status::try_from(consumer.status) {
                    Ok(Status::Disabled) => Some(false),
                    _ => None,
                };
                if let Some(enabled) = enabled {
                    for id in &consumer.api_key_ids {
                        if let Some(key) = self.api_keys.get_mut(&ApiKeyId::from(id.as_str()))
                            && key.enabled != enabled
                        {
                            let key = Arc::make_mut(key);
                            key.enabled = enabled;
                            key.revision = index;
                        }
                    }
                }
                self.consumers
                    .insert(consumer.email.clone(), Arc::new((*consumer).clone()));
                Applied::Consumer(*consumer)
            }
            ConsumerChange::Key {
                consumer,
                key,
                plan,
                revoked,
            } => {
                if let Some(old) = &revoked {
                    self.drop_key(index, old);
                }
                if let Some(plan) = self.usage_plans.get_mut(&UsagePlanName::from(plan.as_str())) {
                    let plan = Arc::make_mut(plan);
                    plan.api_key_ids.push(key.id.clone());
                    plan.revision = index;
                }
                self.api_keys
                    .insert(ApiKeyId::from(key.id.as_str()), Arc::new((*key).clone()));
                self.consumers.insert(consumer.email.clone(), Arc::from(consumer));
                Applied::ApiKey(*key)
            }
            ConsumerChange::Revoked { consumer, key_id } => {
                self.drop_key(index, &key_id);
                self.consumers.insert(consumer.email.clone(), Arc::from(consumer));
                Applied::Deleted
            }
        }
    }
}

/// Ended sessions a cluster remembers at once; beyond, an end is refused
/// (the session then lasts until it expires).
pub const MAX_ENDED_SESSIONS: usize = 100_000;

impl State {
    /// Whether the session `id` was ended by a logout.
    pub fn session_ended(&self, id: &str) -> bool {
        self.ended_sessions.contains_key(id)
    }

    pub(super) fn end_session(
        &self,
        at: Option<Timestamp>,
        end: &pylon_proto::raft::v1::EndSession,
    ) -> Result<Change, CommandError> {
        if end.id.is_empty() || end.id.len() > 64 {
            return fail(ErrorCode::InvalidArgument, "id: 1-64 characters");
        }
        let now = at.map_or(0, |t| t.seconds);
        let live = self.ended_sessions.values().filter(|until| **until > now).count();
        if live >= MAX_ENDED_SESSIONS {
            return fail(ErrorCode::ResourceExhausted, "too many ended sessions remembered");
        }
        Ok(Change::EndSession {
            id: end.id.clone(),
            until: end.until,
            now,
        })
    }
}
