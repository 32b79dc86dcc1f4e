//! Portal consumers: `ListConsumers` and `UpdateConsumer` for operators,
//! and the calls the developer portal makes in process for a consumer
//! (sign up, check a password, make, rotate and revoke its own keys). The
//! portal is trusted code of this node; what it asks for is checked by the
//! state machine against the consumer it names (only its own keys, only
//! when approved, only a published stage's plan).

use super::origin::Origin;
use super::{AdminApi, ids, invalid, unexpected};
use crate::state::Applied;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use pylon_common::ValidationErrors;
use pylon_proto::admin::v1::{ListConsumersRequest, ListConsumersResponse, UpdateConsumerRequest};
use pylon_proto::config::v1::{self as config, ApiKey};
use pylon_proto::raft::v1::{
    self as raftpb, Consumer, IssueConsumerKey, RevokeConsumerKey, SetConsumerStatus, SignUpConsumer,
    command::Op,
};
use tonic::{Request, Response, Status};

/// Passwords: at least this many characters (NIST SP 800-63B), at most 256.
pub const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 256;

/// A published stage as the portal lists it.
#[derive(Clone, Debug)]
pub struct Offer {
    pub api: config::Api,
    pub stage: config::Stage,
    pub plan: config::UsagePlan,
}

/// An email as a consumer's identity: trimmed and lower-case, at most 254
/// characters: a local part of 1–64 of `a-z 0-9 . _ % + -`, `@`, and a
/// domain of two or more labels of `a-z 0-9 -` (no label starting or
/// ending with `-`). Nothing else — no `/`, `?`, `#` or quotes — so an
/// email is safe in a URL path and a log line as it is.
///
/// # Errors
/// `email` named, when it is not one.
pub fn normalize_email(email: &str) -> Result<String, ValidationErrors> {
    let email = email.trim().to_ascii_lowercase();
    let shaped = email.split_once('@').is_some_and(|(local, domain)| {
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._%+-".contains(&b));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                (1..=63).contains(&label.len())
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        local_ok && domain_ok
    });
    if (3..=254).contains(&email.len()) && email.bytes().all(|b| b.is_ascii_graphic()) && shaped {
        Ok(email)
    } else {
        Err(ValidationErrors(vec![pylon_common::FieldError {
            path: "email".into(),
            message: "must be an email address".into(),
        }]))
    }
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's first Argon2id setting: 19 MiB, 2 passes, 1 lane.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The Argon2id PHC string of `password`, with a fresh salt.
fn hash_password(password: &str) -> Result<String, Status> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| Status::internal(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Status::internal(e.to_string()))
}

/// A hash checked when no consumer has the email, so an unknown address
/// costs the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never anyone's").unwrap_or_default())
}

impl AdminApi {
    pub(super) async fn list_consumers_call(
        &self,
        request: Request<ListConsumersRequest>,
    ) -> Result<Response<ListConsumersResponse>, Status> {
        self.read(request.into_inner().consistency, |state| {
            Ok(ListConsumersResponse {
                consumers: state
                    .consumers()
                    .map(|c| Consumer {
                        password_hash: String::new(),
                        ..c.clone()
                    })
                    .collect(),
            })
        })
        .await
    }

    pub(super) async fn update_consumer_call(
        &self,
        request: Request<UpdateConsumerRequest>,
    ) -> Result<Response<Consumer>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let email = normalize_email(&request.email).map_err(invalid)?;
        let set = SetConsumerStatus {
            email,
            status: request.status,
        };
        match self.write(&origin, Op::SetConsumerStatus(set)).await? {
            Applied::Consumer(consumer) => Ok(Response::new(Consumer {
                password_hash: String::new(),
                ..consumer
            })),
            other => Err(unexpected(other)),
        }
    }

    /// The audit log's caller for what a consumer does on the portal.
    fn portal_origin(email: &str, method: &str) -> Origin {
        Origin {
            actor: raftpb::Actor {
                name: format!("portal:{email}"),
                roles: vec!["consumer".into()],
            },
            method: method.into(),
            ..Origin::default()
        }
    }

    /// Signs `email` up with `password` (hashed here, off the runtime);
    /// the consumer waits for an operator's approval.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming `email` or `password`; `ALREADY_EXISTS`.
    pub async fn sign_up_consumer(&self, email: &str, password: &str) -> Result<Consumer, Status> {
        let email = normalize_email(email).map_err(invalid)?;
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
            return Err(Status::invalid_argument(format!(
                "password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
            )));
        }
        // Hashed whether or not the email has an account, so the time
        // taken does not tell.
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        if self.state().consumer(&email).is_some() {
            return Err(Status::already_exists("an account with this email exists"));
        }
        let consumer = Consumer {
            email: email.clone(),
            password_hash: hash,
            ..Consumer::default()
        };
        let origin = Self::portal_origin(&email, "SignUpConsumer");
        match self
            .write(
                &origin,
                Op::SignUpConsumer(SignUpConsumer {
                    consumer: Some(consumer),
                }),
            )
            .await?
        {
            Applied::Consumer(consumer) => Ok(consumer),
            other => Err(unexpected(other)),
        }
    }

    /// The consumer `email` names when `password` is its password (any
    /// status; the portal decides what a pending one sees). An unknown
    /// email takes as long as a wrong password.
    pub async fn check_consumer_password(&self, email: &str, password: &str) -> Option<Consumer> {
        let email = normalize_email(email).ok()?;
        let consumer = self.state().consumer(&email).cloned();
        let hash = consumer
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |c| c.password_hash.clone());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        consumer.filter(|_| matches)
    }

    /// The consumer `email`, as this node has it.
    pub fn consumer(&self, email: &str) -> Option<Consumer> {
        self.state().consumer(email).cloned()
    }

    /// Every published stage whose plan exists, with its API (by API, stage).
    pub fn offers(&self) -> Vec<Offer> {
        let state = self.state();
        state
            .stages()
            .filter(|stage| stage.publication.as_ref().is_some_and(|p| p.published))
            .filter_map(|stage| {
                let plan = stage.publication.as_ref()?.usage_plan.clone();
                Some(Offer {
                    api: state.api(&stage.api)?.clone(),
                    stage: stage.clone(),
                    plan: state.usage_plan(&plan)?.clone(),
                })
            })
            .collect()
    }

    /// The API keys of `email`, with the plan each is in.
    pub fn consumer_keys(&self, email: &str) -> Vec<(ApiKey, Option<config::UsagePlan>)> {
        let state = self.state();
        let Some(consumer) = state.consumer(email) else {
            return Vec::new();
        };
        consumer
            .api_key_ids
            .iter()
            .filter_map(|id| state.api_key(id).cloned())
            .map(|key| {
                let plan = state
                    .usage_plans()
                    .find(|p| p.api_key_ids.contains(&key.id))
                    .cloned();
                (key, plan)
            })
            .collect()
    }

    /// Makes a key for `email` in the plan `api`'s `stage` offers
    /// (revoking `replaces` in the same entry): the key and its value,
    /// shown once.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` for a consumer not approved; `FAILED_PRECONDITION`
    /// for a stage not published; `NOT_FOUND` for a key not the consumer's;
    /// `RESOURCE_EXHAUSTED` beyond the keys a consumer may hold.
    pub async fn issue_consumer_key(
        &self,
        email: &str,
        api: &str,
        stage: &str,
        replaces: Option<&str>,
    ) -> Result<(ApiKey, String), Status> {
        let value = ids::api_key_value();
        let key = ApiKey {
            id: ids::api_key_id(),
            name: format!("{email} {api}/{stage}"),
            description: "made on the developer portal".into(),
            enabled: true,
            key_hash: ids::hash_api_key(&value),
            key_prefix: value.chars().take(6).collect(),
            ..ApiKey::default()
        };
        let issue = IssueConsumerKey {
            email: email.to_owned(),
            api_key: Some(key),
            api: api.to_owned(),
            stage: stage.to_owned(),
            replaces: replaces.unwrap_or_default().to_owned(),
        };
        let method = if replaces.is_some() {
            "RotateConsumerKey"
        } else {
            "IssueConsumerKey"
        };
        match self
            .write(&Self::portal_origin(email, method), Op::IssueConsumerKey(issue))
            .await?
        {
            Applied::ApiKey(key) => Ok((key, value)),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes `email`'s key `api_key_id`.
    ///
    /// # Errors
    /// `NOT_FOUND` when the key is not the consumer's.
    pub async fn revoke_consumer_key(&self, email: &str, api_key_id: &str) -> Result<(), Status> {
        let revoke = RevokeConsumerKey {
            email: email.to_owned(),
            api_key_id: api_key_id.to_owned(),
        };
        self.write(
            &Self::portal_origin(email, "RevokeConsumerKey"),
            Op::RevokeConsumerKey(revoke),
        )
        .await
        .map(drop)
    }

    /// Quota use of `keys` in `plan`: `(used, remaining)` per key id, when
    /// the node can read the data planes' counters.
    pub async fn key_usage(&self, plan: &str, keys: &[String]) -> Option<Vec<(String, u64, u64)>> {
        let request = pylon_proto::admin::v1::GetUsageRequest {
            usage_plan: plan.to_owned(),
            api_key_id: String::new(),
        };
        let usage = pylon_proto::admin::v1::admin_service_server::AdminService::get_usage(
            self,
            Request::new(request),
        )
        .await
        .ok()?
        .into_inner();
        Some(
            usage
                .keys
                .into_iter()
                .filter(|k| keys.contains(&k.api_key_id))
                .map(|k| (k.api_key_id, k.used, k.remaining))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_are_lower_case_and_plain() {
        assert_eq!(
            super::normalize_email(" Dev@Example.COM ").ok().as_deref(),
            Some("dev@example.com")
        );
        for bad in [
            "x/../victim@corp.com",
            "x@-.-",
            "a@b",
            "a@b..c",
            "a b@c.d",
            "a@b.c?x",
            "a#b@c.d",
            "@c.d",
            "a@@c.d",
        ] {
            assert!(super::normalize_email(bad).is_err(), "{bad}");
        }
        assert!(super::normalize_email("first.last+tag@mail.example.co").is_ok());
    }
}
