//! The gRPC `AdminService`: validate → check against local state → propose →
//! wait until applied → answer.
//!
//! Requests that fail validation or the pre-checks are answered here and
//! never reach the Raft log; a pre-check refusal is confirmed on a state
//! that has applied every write acknowledged before the call (ReadIndex),
//! so a lagging node never refuses from stale state. The state machine re-checks every precondition
//! deterministically, so a race between two writers still ends in one winner
//! and an `ABORTED`/`ALREADY_EXISTS` for the other.

pub mod backup;
mod batch;
mod cluster;
pub mod consumers;
mod ids;
mod import;
pub mod origin;
mod resources;
mod status;
pub mod usage;

use crate::clock::now;
use crate::publish::Registry;
use crate::raft::node::{NodeHandle, ProposeError};
use crate::raft::transport::Transport;
use crate::state::{Applied, Replica, State};
use origin::Origin;
use pylon_common::model::{ApiKeyConfig, StageConfig, validate_api_key_value};
use pylon_common::{ErrorCode, ValidationErrors};
use pylon_proto::admin::v1::admin_service_server::AdminService;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{self as config, Resource, resource::Kind};
use pylon_proto::raft::v1::{self as raftpb, AuditRecord, Command, ResourceRef, command::Op, resource_ref};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tonic::{Request, Response, Status};

/// How long a write may wait for a leader and for its commit.
const WRITE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a linearizable read may wait for its read index.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PAGE: usize = 100;
/// Routes GetStageMetrics returns, most requested first.
const TOP_ROUTES: usize = 50;
/// The largest admin write but a restore, bytes (the documented 4 MiB).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
const MAX_PAGE: usize = 1000;

/// What a usage call reads or resets: a plan's keys in one cluster.
struct UsageScope {
    store: Arc<dyn usage::UsageStore>,
    /// The cluster id the data planes count under.
    cluster: String,
    quota: config::Quota,
    keys: Vec<String>,
}

pub struct AdminApi {
    node: NodeHandle,
    /// What reads (and pre-checks) look at.
    replica: Arc<Replica>,
    transport: Transport,
    data_planes: Arc<Registry>,
    usage: Option<Arc<dyn usage::UsageStore>>,
    instruments: Arc<crate::telemetry::Instruments>,
}

impl AdminApi {
    pub fn new(
        node: NodeHandle,
        transport: Transport,
        data_planes: Arc<Registry>,
        usage: Option<Arc<dyn usage::UsageStore>>,
        instruments: Arc<crate::telemetry::Instruments>,
    ) -> Self {
        AdminApi {
            replica: node.shared.replica.clone(),
            node,
            transport,
            data_planes,
            usage,
            instruments,
        }
    }

    /// The plan's quota, the keys asked about and the cluster counting them.
    async fn usage_scope(&self, plan: &str, key_id: &str) -> Result<UsageScope, Status> {
        present(plan, "usage_plan")?;
        let store = self.usage.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this control plane has no shared-state backend: start it with --redis (the one the data planes use)",
            )
        })?;
        let plan_name = plan.to_owned();
        let (plan, cluster) = self
            .read(0, move |state| {
                let plan = state
                    .usage_plan(&plan_name)
                    .cloned()
                    .ok_or_else(|| Status::not_found(format!("usage plan {plan_name} not found")))?;
                Ok((plan, state.cluster_id().to_owned()))
            })
            .await?
            .into_inner();
        let quota = plan.quota.ok_or_else(|| {
            Status::failed_precondition(format!("usage plan {}: quota: not set", plan.name))
        })?;
        let keys = if key_id.is_empty() {
            plan.api_key_ids.clone()
        } else if plan.api_key_ids.iter().any(|k| k == key_id) {
            vec![key_id.to_owned()]
        } else {
            return Err(Status::not_found(format!(
                "api_key_id: {key_id} is not a key of usage plan {}",
                plan.name
            )));
        };
        Ok(UsageScope {
            store,
            cluster,
            quota,
            keys,
        })
    }

    async fn usage_report(&self, plan: &str, key_id: &str) -> Result<GetUsageResponse, Status> {
        let UsageScope {
            store,
            cluster,
            quota,
            keys,
        } = self.usage_scope(plan, key_id).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let window = pylon_common::quota::window_at(quota.period(), quota.offset, now);
        let mut report = GetUsageResponse {
            usage_plan: plan.to_owned(),
            period_start: Some(pylon_proto::wkt::Timestamp {
                seconds: window.start_secs(),
                nanos: 0,
            }),
            period_end: Some(pylon_proto::wkt::Timestamp {
                seconds: window.end_secs(),
                nanos: 0,
            }),
            limit: quota.limit,
            keys: Vec::new(),
        };
        for key in keys {
            let used = store
                .used(&cluster, plan, &key, window)
                .await
                .map_err(|e| Status::unavailable(format!("shared-state backend: {e}")))?;
            report.keys.push(KeyUsage {
                api_key_id: key,
                used,
                remaining: quota.limit.saturating_sub(used),
            });
        }
        Ok(report)
    }

    /// Proposes `op` and waits until it is applied here, retrying while no
    /// leader is known. A retry of a write this node already applied (same
    /// idempotency key and request) is answered from its first outcome
    /// without proposing anything.
    async fn write(&self, origin: &Origin, op: Op) -> Result<Applied, Status> {
        use opentelemetry::trace::{Span as _, Status as SpanStatus, Tracer as _};
        let command = Command {
            request_id: ids::request_id(self.node.shared.id),
            at: Some(now()),
            op: Some(op),
            actor: Some(origin.actor.clone()),
            method: origin.method.clone(),
            idempotency_key: origin.idempotency_key.clone(),
            request_digest: origin.request_digest.clone(),
        };
        if let Some(answer) = self.first_outcome(&command) {
            return answer;
        }
        // One entry of the log per write: a restore may be as large as a
        // backup, anything else as large as the admin API's 4 MiB messages
        // (the gRPC limit is the backup's, so the others are held here).
        let limit = if matches!(command.op, Some(Op::Restore(_))) {
            backup::MAX_BACKUP_BYTES
        } else {
            MAX_REQUEST_BYTES
        };
        let size = prost::Message::encoded_len(&command);
        if size > limit {
            return Err(Status::out_of_range(format!(
                "request: {size} bytes, at most {limit} in one write"
            )));
        }
        if self.dry_run(&command).is_err() {
            // This node's state may lag the cluster's: a refusal (NOT_FOUND,
            // ALREADY_EXISTS, ABORTED…) must hold at a linearizable point,
            // so it is confirmed on a state that has applied every write
            // acknowledged before this call (the barrier costs only
            // refused writes a round trip).
            self.barrier(ReadConsistency::Linearizable as i32)
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::Unavailable => Status::unavailable(
                        "no leader confirmed this node is current, so it cannot judge the write; retry",
                    ),
                    _ => status,
                })?;
            if let Some(answer) = self.first_outcome(&command) {
                return answer;
            }
            self.dry_run(&command)?;
        }
        let kind = op_name(&command);
        let tracer = opentelemetry::global::tracer("pylon-control-plane");
        // A child of the admin call's span (see crate::telemetry::TraceAdmin).
        let mut span = tracer
            .span_builder("raft.propose")
            .with_attributes([
                opentelemetry::KeyValue::new("pylon.command", kind),
                opentelemetry::KeyValue::new("pylon.request_id", command.request_id.clone()),
            ])
            .start_with_context(&tracer, &opentelemetry::Context::current());
        let started = Instant::now();
        let result = self.propose(command).await;
        self.instruments.proposal_duration.record(
            started.elapsed().as_secs_f64() * 1e3,
            &[opentelemetry::KeyValue::new("pylon.command", kind)],
        );
        match &result {
            Ok(_) => span.add_event("applied", Vec::new()),
            Err(status) => span.set_status(SpanStatus::error(status.message().to_owned())),
        }
        span.end();
        result
    }

    /// The key the operator console seals sessions with, made and
    /// replicated through Raft the first time any node's console needs it
    /// (two nodes racing: the state machine keeps the first).
    ///
    /// # Errors
    /// `UNAVAILABLE` while no leader can commit the key.
    pub async fn console_key(&self) -> Result<Vec<u8>, Status> {
        let key = self.state().console_key().to_vec();
        if !key.is_empty() {
            return Ok(key);
        }
        let mut fresh = vec![0u8; 32];
        rand::Rng::fill(&mut rand::rng(), fresh.as_mut_slice());
        let origin = Origin {
            actor: raftpb::Actor {
                name: "system".into(),
                roles: Vec::new(),
            },
            method: "SetConsoleKey".into(),
            ..Origin::default()
        };
        match self
            .write(&origin, Op::SetConsoleKey(raftpb::SetConsoleKey { key: fresh }))
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) => return Err(status),
        }
        let key = self.state().console_key().to_vec();
        if key.is_empty() {
            return Err(Status::unavailable(
                "the console key is not applied on this node yet; retry",
            ));
        }
        Ok(key)
    }

    /// Ends a console or portal session on every node (a logout), as
    /// `who` for the audit log.
    ///
    /// # Errors
    /// `UNAVAILABLE` without a leader.
    pub async fn end_session(&self, who: &str, id: &str, until: i64) -> Result<(), Status> {
        let origin = Origin {
            actor: raftpb::Actor {
                name: who.to_owned(),
                roles: Vec::new(),
            },
            method: "Logout".into(),
            ..Origin::default()
        };
        let end = raftpb::EndSession {
            id: id.to_owned(),
            until,
        };
        self.write(&origin, Op::EndSession(end)).await.map(drop)
    }

    /// Whether a logout ended the session `id`.
    pub fn session_ended(&self, id: &str) -> bool {
        self.state().session_ended(id)
    }

    /// The answer to a keyed command this node has already applied: its
    /// first outcome, or the refusal of a key reused for another request.
    fn first_outcome(&self, command: &Command) -> Option<Result<Applied, Status>> {
        match self.state().history().replay(command) {
            Ok(first) => first.map(|first| first.map_err(Status::from)),
            Err(reused) => Some(Err(reused.into())),
        }
    }

    /// Proposes until applied here, retrying while no leader is known.
    async fn propose(&self, command: Command) -> Result<Applied, Status> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.node.propose_once(command.clone())).await {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(ProposeError::Rejected(e))) => return Err(e.into()),
                Ok(Err(ProposeError::NoLeader)) if Instant::now() + Duration::from_millis(100) < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "the write was not confirmed within {}s (leader change?); it may or may not have been applied",
                        WRITE_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }

    /// Runs the state machine's own checks against this node's state, so a
    /// command it would refuse is refused here and never reaches the log. (It
    /// checks again when applying: this node's state may lag the leader's.)
    fn dry_run(&self, command: &Command) -> Result<(), Status> {
        let state = self.state();
        state
            .check(state.config_version() + 1, command)
            .map_err(Status::from)
    }

    /// Waits (ReadIndex) until this node has applied every write acknowledged
    /// before the call, unless the caller accepts a stale read.
    async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        if consistency == ReadConsistency::Stale as i32 {
            return Ok(());
        }
        // A node short of disk may be behind for good: it gets one second.
        let short_of_disk = self
            .node
            .shared
            .disk_low
            .load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now()
            + if short_of_disk {
                Duration::from_secs(1)
            } else {
                READ_TIMEOUT
            };
        loop {
            let attempt = Duration::from_millis(1000).min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(attempt, self.node.read_index_once()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(ProposeError::Stopped)) => {
                    return Err(Status::unavailable("the raft node has stopped"));
                }
                Ok(Err(_)) | Err(_) => {}
            }
            if Instant::now() >= deadline {
                if self
                    .node
                    .shared
                    .disk_low
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return Err(Status::resource_exhausted(
                        "this node is short of disk and no longer takes entries from the leader, so it cannot answer a linearizable read: ask another node, or with consistency STALE",
                    ));
                }
                return Err(Status::unavailable(
                    "no leader confirmed a read index in time; retry, or ask for consistency STALE",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.replica.state()
    }

    async fn read<T>(
        &self,
        consistency: i32,
        f: impl FnOnce(&State) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        self.barrier(consistency).await?;
        f(&self.state()).map(Response::new)
    }

    /// Stage fields the stage's API type would ignore are refused with
    /// their field: connection limits on an HTTP API's stage, a cache or
    /// `METHOD /path` route throttles on a WEBSOCKET API's, WebSocket route
    /// keys on an HTTP API's. Checked on local state, before proposing (the
    /// state machine does not judge it, so old logs replay unchanged).
    fn check_stage_protocol(&self, stage: &config::Stage) -> Result<(), Status> {
        self.check_stage_protocol_with(stage, None)
    }

    /// The same, judged against `api` when given (an API stored by the same
    /// batch), else the stored API.
    fn check_stage_protocol_with(
        &self,
        stage: &config::Stage,
        api: Option<&config::Api>,
    ) -> Result<(), Status> {
        let state = self.state();
        let Some(api) = api.or_else(|| state.api(&stage.api)) else {
            return Ok(());
        };
        let websocket = api.protocol == config::api::Protocol::Websocket as i32;
        let mut errors = Vec::new();
        if !websocket && stage.websocket.is_some() {
            errors.push("websocket: only stages of WEBSOCKET APIs have connection limits".to_owned());
        }
        if websocket && stage.cache.is_some() {
            errors.push("cache: WEBSOCKET stages cache nothing".to_owned());
        }
        for key in stage.route_throttle.keys() {
            // HTTP route keys are "METHOD /path"; WebSocket ones have no space.
            if websocket == key.contains(' ') {
                let want = if websocket {
                    "a WebSocket route key such as sendmessage or $default"
                } else {
                    "a route key such as \"GET /pets/{id}\""
                };
                errors.push(format!("route_throttle[{key:?}]: must be {want}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Status::invalid_argument(errors.join("; ")))
        }
    }

    async fn put(
        &self,
        origin: &Origin,
        kind: Kind,
        create: bool,
        expected_revision: u64,
    ) -> Result<Applied, Status> {
        self.write(
            origin,
            Op::Put(raftpb::Put {
                resource: Some(Resource { kind: Some(kind) }),
                create,
                expected_revision,
            }),
        )
        .await
    }

    async fn delete(
        &self,
        origin: &Origin,
        kind: resource_ref::Kind,
        api: &str,
        name: &str,
        expected_revision: u64,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.write(
            origin,
            Op::Delete(raftpb::Delete {
                target: Some(ResourceRef {
                    kind: kind as i32,
                    api: api.into(),
                    name: name.into(),
                }),
                expected_revision,
            }),
        )
        .await?;
        Ok(Response::new(DeleteResponse {}))
    }
}

fn invalid(errors: ValidationErrors) -> Status {
    Status::invalid_argument(errors.to_string())
}

fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    Status::new(code.grpc_code(), message)
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))
}

/// The command's kind, for spans and metrics.
fn op_name(command: &Command) -> &'static str {
    match &command.op {
        Some(Op::Put(_)) => "put",
        Some(Op::Delete(_)) => "delete",
        Some(Op::CreateDeployment(_)) => "create_deployment",
        Some(Op::PromoteCanary(_)) => "promote_canary",
        Some(Op::RollbackStage(_)) => "rollback_stage",
        Some(Op::FlushStageCache(_)) => "flush_stage_cache",
        Some(Op::SetClusterId(_)) => "set_cluster_id",
        Some(Op::NoteUsageReset(_)) => "note_usage_reset",
        Some(Op::Batch(_)) => "batch",
        Some(Op::Restore(_)) => "restore",
        Some(Op::SetConsoleKey(_)) => "set_console_key",
        Some(Op::SignUpConsumer(_)) => "sign_up_consumer",
        Some(Op::SetConsumerStatus(_)) => "set_consumer_status",
        Some(Op::IssueConsumerKey(_)) => "issue_consumer_key",
        Some(Op::RevokeConsumerKey(_)) => "revoke_consumer_key",
        Some(Op::EndSession(_)) => "end_session",
        None => "none",
    }
}

/// Membership changes are Raft configuration entries, not commands: they
/// keep no outcome, so a key would be a promise not kept. (AddMember of a
/// member at the same address succeeds again; see `cluster`.)
fn refuse_idempotency_key<T>(request: &Request<T>) -> Result<(), Status> {
    if request.metadata().get(origin::IDEMPOTENCY_KEY).is_some() {
        return Err(Status::invalid_argument(
            "idempotency-key: membership changes do not take one; read `pylon cluster status` before retrying",
        ));
    }
    Ok(())
}

/// A string field that must be set.
fn present(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    Ok(())
}

fn not_found(what: String) -> Status {
    status(ErrorCode::NotFound, format!("{what} not found"))
}

fn unexpected(applied: Applied) -> Status {
    Status::internal(format!("unexpected result from the state machine: {applied:?}"))
}

/// How many items a page holds: 100 unless asked, at most 1000.
fn page_size(page: Option<&Page>) -> Result<usize, Status> {
    match page.map(|p| p.page_size as usize).unwrap_or(0) {
        0 => Ok(DEFAULT_PAGE),
        n if n > MAX_PAGE => Err(Status::invalid_argument(format!(
            "page.page_size: at most {MAX_PAGE}"
        ))),
        n => Ok(n),
    }
}

/// One page of `items` (sorted by `key`), after the page token.
fn page<T: Clone>(
    items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> String,
    page: Option<&Page>,
) -> Result<(Vec<T>, String), Status> {
    let size = page_size(page)?;
    let after = page.map(|p| p.page_token.clone()).unwrap_or_default();
    let mut out: Vec<T> = items
        .filter(|item| after.is_empty() || key(item) > after)
        .take(size + 1)
        .collect();
    let next = if out.len() > size {
        out.truncate(size);
        out.last().map(&key).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((out, next))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_api(&self, request: Request<CreateApiRequest>) -> Result<Response<config::Api>, Status> {
        let origin = Origin::of(&request)?;
        self.put_named(&origin, request.into_inner().api, None).await
    }

    async fn get_api(&self, request: Request<GetApiRequest>) -> Result<Response<config::Api>, Status> {
        let request = request.into_inner();
        self.get_named(request.consistency, &request.name).await
    }

    async fn list_apis(
        &self,
        request: Request<ListApisRequest>,
    ) -> Result<Response<ListApisResponse>, Status> {
        let request = request.into_inner();
        let (apis, next_page_token) = self
            .list_named(request.consistency, request.page.as_ref())
            .await?;
        Ok(Response::new(ListApisResponse {
            apis,
            next_page_token,
        }))
    }

    async fn update_api(&self, request: Request<UpdateApiRequest>) -> Result<Response<config::Api>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.put_named(&origin, request.api, Some(request.expected_revision))
            .await
    }

    async fn apply_batch(
        &self,
        request: Request<ApplyBatchRequest>,
    ) -> Result<Response<ApplyBatchResponse>, Status> {
        self.batch(request).await
    }

    async fn get_export(
        &self,
        request: Request<GetExportRequest>,
    ) -> Result<Response<GetExportResponse>, Status> {
        self.export(request).await
    }

    async fn export_backup(&self, request: Request<ExportBackupRequest>) -> Result<Response<Backup>, Status> {
        self.take_backup(request).await
    }

    async fn restore_backup(
        &self,
        request: Request<RestoreBackupRequest>,
    ) -> Result<Response<RestoreBackupResponse>, Status> {
        self.restore(request).await
    }

    async fn import_api(
        &self,
        request: Request<ImportApiRequest>,
    ) -> Result<Response<ImportApiResponse>, Status> {
        self.import(request).await
    }

    async fn delete_api(
        &self,
        request: Request<DeleteApiRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.delete_named::<config::Api>(&origin, &request.name, request.expected_revision)
            .await
    }

    async fn create_deployment(
        &self,
        request: Request<CreateDeploymentRequest>,
    ) -> Result<Response<config::Deployment>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        if request.description.len() > 1024 {
            return Err(Status::invalid_argument(
                "description: must be at most 1024 characters",
            ));
        }
        if !request.stage.is_empty() {
            // The stage may be created by this call: validate its name as a stage.
            let probe = config::Stage {
                api: request.api.clone(),
                name: request.stage.clone(),
                ..Default::default()
            };
            StageConfig::validate(probe).map_err(|e| {
                let named: Vec<_> = e
                    .errors()
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: {}",
                            if f.path == "name" {
                                "stage"
                            } else {
                                f.path.as_str()
                            },
                            f.message
                        )
                    })
                    .collect();
                Status::invalid_argument(named.join("; "))
            })?;
        }
        let op = Op::CreateDeployment(raftpb::CreateDeployment {
            api: request.api,
            id: ids::deployment_id(),
            description: request.description,
            stage: request.stage,
        });
        match self.write(&origin, op).await? {
            Applied::Deployment(deployment) => Ok(Response::new(deployment)),
            other => Err(unexpected(other)),
        }
    }

    async fn get_deployment(
        &self,
        request: Request<GetDeploymentRequest>,
    ) -> Result<Response<config::Deployment>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            state
                .deployment(&request.api, &request.id)
                .cloned()
                .ok_or_else(|| not_found(format!("deployment {} of API {}", request.id, request.api)))
        })
        .await
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            if state.api(&request.api).is_none() {
                return Err(not_found(format!("API {}", request.api)));
            }
            // Newest first: the page key grows down the history.
            let (deployments, next_page_token) = page(
                state.deployments_of(&request.api).into_iter(),
                |d| crate::state::deployment_order(d),
                request.page.as_ref(),
            )?;
            let deployments = deployments.into_iter().cloned().collect();
            Ok(ListDeploymentsResponse {
                deployments,
                next_page_token,
            })
        })
        .await
    }

    async fn create_stage(
        &self,
        request: Request<CreateStageRequest>,
    ) -> Result<Response<config::Stage>, Status> {
        let origin = Origin::of(&request)?;
        let stage = required(request.into_inner().stage, "stage")?;
        let stage = StageConfig::validate_write(stage).map_err(invalid)?.into_proto();
        self.check_stage_protocol(&stage)?;
        match self.put(&origin, Kind::Stage(stage), true, 0).await? {
            Applied::Stage(stage) => Ok(Response::new(stage)),
            other => Err(unexpected(other)),
        }
    }

    async fn get_stage(&self, request: Request<GetStageRequest>) -> Result<Response<config::Stage>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            state
                .stage(&request.api, &request.name)
                .cloned()
                .ok_or_else(|| not_found(format!("stage {}/{}", request.api, request.name)))
        })
        .await
    }

    async fn list_stages(
        &self,
        request: Request<ListStagesRequest>,
    ) -> Result<Response<ListStagesResponse>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            if state.api(&request.api).is_none() {
                return Err(not_found(format!("API {}", request.api)));
            }
            let (stages, next_page_token) = page(
                state.stages_of(&request.api),
                |s| s.name.clone(),
                request.page.as_ref(),
            )?;
            Ok(ListStagesResponse {
                stages: stages.into_iter().cloned().collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn update_stage(
        &self,
        request: Request<UpdateStageRequest>,
    ) -> Result<Response<config::Stage>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let stage = required(request.stage, "stage")?;
        let stage = StageConfig::validate_write(stage).map_err(invalid)?.into_proto();
        self.check_stage_protocol(&stage)?;
        match self
            .put(&origin, Kind::Stage(stage), false, request.expected_revision)
            .await?
        {
            Applied::Stage(stage) => Ok(Response::new(stage)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_stage(
        &self,
        request: Request<DeleteStageRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.delete(
            &origin,
            resource_ref::Kind::Stage,
            &request.api,
            &request.name,
            request.expected_revision,
        )
        .await
    }

    async fn promote_canary(
        &self,
        request: Request<PromoteCanaryRequest>,
    ) -> Result<Response<config::Stage>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let op = Op::PromoteCanary(raftpb::PromoteCanary {
            api: request.api,
            stage: request.stage,
            expected_revision: request.expected_revision,
        });
        match self.write(&origin, op).await? {
            Applied::Stage(stage) => Ok(Response::new(stage)),
            other => Err(unexpected(other)),
        }
    }

    async fn rollback_stage(
        &self,
        request: Request<RollbackStageRequest>,
    ) -> Result<Response<config::Stage>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let op = Op::RollbackStage(raftpb::RollbackStage {
            api: request.api,
            stage: request.stage,
            deployment_id: request.deployment_id,
            expected_revision: request.expected_revision,
        });
        match self.write(&origin, op).await? {
            Applied::Stage(stage) => Ok(Response::new(stage)),
            other => Err(unexpected(other)),
        }
    }

    async fn flush_stage_cache(
        &self,
        request: Request<FlushStageCacheRequest>,
    ) -> Result<Response<config::Stage>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        present(&request.api, "api")?;
        present(&request.stage, "stage")?;
        let op = Op::FlushStageCache(raftpb::FlushStageCache {
            api: request.api,
            stage: request.stage,
        });
        match self.write(&origin, op).await? {
            Applied::Stage(stage) => Ok(Response::new(stage)),
            other => Err(unexpected(other)),
        }
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.usage_report(&request.usage_plan, &request.api_key_id)
                .await?,
        ))
    }

    async fn reset_usage(
        &self,
        request: Request<ResetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let UsageScope {
            store, cluster, keys, ..
        } = self.usage_scope(&request.usage_plan, &request.api_key_id).await?;
        // Recorded first: a reset that cannot be audited does not happen.
        self.write(
            &origin,
            Op::NoteUsageReset(raftpb::NoteUsageReset {
                usage_plan: request.usage_plan.clone(),
                api_key_id: request.api_key_id.clone(),
            }),
        )
        .await?;
        for key in &keys {
            store
                .reset(&cluster, &request.usage_plan, key)
                .await
                .map_err(|e| Status::unavailable(format!("shared-state backend: {e}")))?;
        }
        tracing::info!(usage_plan = %request.usage_plan, keys = keys.len(), "quota usage reset");
        Ok(Response::new(
            self.usage_report(&request.usage_plan, &request.api_key_id)
                .await?,
        ))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let mut key = ApiKeyConfig::validate(required(request.api_key, "api_key")?)
            .map_err(invalid)?
            .into_proto();
        let value = if request.value.is_empty() {
            ids::api_key_value()
        } else {
            validate_api_key_value(&request.value).map_err(invalid)?;
            request.value
        };
        key.id = ids::api_key_id();
        key.key_hash = ids::hash_api_key(&value);
        key.key_prefix = value.chars().take(6).collect();
        match self.put(&origin, Kind::ApiKey(key), true, 0).await? {
            Applied::ApiKey(api_key) => {
                // A retry answered from the first outcome made no new key: the
                // value generated for this attempt is not the key's, and the
                // first one was shown once and is not kept.
                let value = if api_key.key_hash == ids::hash_api_key(&value) {
                    value
                } else {
                    String::new()
                };
                Ok(Response::new(CreateApiKeyResponse {
                    api_key: Some(api_key),
                    value,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn get_api_key(
        &self,
        request: Request<GetApiKeyRequest>,
    ) -> Result<Response<config::ApiKey>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            state
                .api_key(&request.id)
                .cloned()
                .ok_or_else(|| not_found(format!("API key {}", request.id)))
        })
        .await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            let (keys, next_page_token) = page(state.api_keys(), |k| k.id.clone(), request.page.as_ref())?;
            Ok(ListApiKeysResponse {
                api_keys: keys.into_iter().cloned().collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Result<Response<config::ApiKey>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        let key = ApiKeyConfig::validate(required(request.api_key, "api_key")?)
            .map_err(invalid)?
            .into_proto();
        match self
            .put(&origin, Kind::ApiKey(key), false, request.expected_revision)
            .await?
        {
            Applied::ApiKey(key) => Ok(Response::new(key)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.delete(
            &origin,
            resource_ref::Kind::ApiKey,
            "",
            &request.id,
            request.expected_revision,
        )
        .await
    }

    async fn create_usage_plan(
        &self,
        request: Request<CreateUsagePlanRequest>,
    ) -> Result<Response<config::UsagePlan>, Status> {
        let origin = Origin::of(&request)?;
        self.put_named(&origin, request.into_inner().usage_plan, None)
            .await
    }

    async fn get_usage_plan(
        &self,
        request: Request<GetUsagePlanRequest>,
    ) -> Result<Response<config::UsagePlan>, Status> {
        let request = request.into_inner();
        self.get_named(request.consistency, &request.name).await
    }

    async fn list_usage_plans(
        &self,
        request: Request<ListUsagePlansRequest>,
    ) -> Result<Response<ListUsagePlansResponse>, Status> {
        let request = request.into_inner();
        let (usage_plans, next_page_token) = self
            .list_named(request.consistency, request.page.as_ref())
            .await?;
        Ok(Response::new(ListUsagePlansResponse {
            usage_plans,
            next_page_token,
        }))
    }

    async fn update_usage_plan(
        &self,
        request: Request<UpdateUsagePlanRequest>,
    ) -> Result<Response<config::UsagePlan>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.put_named(&origin, request.usage_plan, Some(request.expected_revision))
            .await
    }

    async fn delete_usage_plan(
        &self,
        request: Request<DeleteUsagePlanRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.delete_named::<config::UsagePlan>(&origin, &request.name, request.expected_revision)
            .await
    }

    async fn create_domain_name(
        &self,
        request: Request<CreateDomainNameRequest>,
    ) -> Result<Response<config::DomainName>, Status> {
        let origin = Origin::of(&request)?;
        self.put_named(&origin, request.into_inner().domain_name, None)
            .await
    }

    async fn get_domain_name(
        &self,
        request: Request<GetDomainNameRequest>,
    ) -> Result<Response<config::DomainName>, Status> {
        let request = request.into_inner();
        self.get_named(request.consistency, &request.name).await
    }

    async fn list_domain_names(
        &self,
        request: Request<ListDomainNamesRequest>,
    ) -> Result<Response<ListDomainNamesResponse>, Status> {
        let request = request.into_inner();
        let (domain_names, next_page_token) = self
            .list_named(request.consistency, request.page.as_ref())
            .await?;
        Ok(Response::new(ListDomainNamesResponse {
            domain_names,
            next_page_token,
        }))
    }

    async fn update_domain_name(
        &self,
        request: Request<UpdateDomainNameRequest>,
    ) -> Result<Response<config::DomainName>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.put_named(&origin, request.domain_name, Some(request.expected_revision))
            .await
    }

    async fn delete_domain_name(
        &self,
        request: Request<DeleteDomainNameRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        self.delete_named::<config::DomainName>(&origin, &request.name, request.expected_revision)
            .await
    }

    async fn get_config_version(
        &self,
        request: Request<GetConfigVersionRequest>,
    ) -> Result<Response<GetConfigVersionResponse>, Status> {
        let request = request.into_inner();
        self.read(request.consistency, |state| {
            Ok(GetConfigVersionResponse {
                version: state.config_version(),
            })
        })
        .await
    }

    async fn get_cluster_status(
        &self,
        _request: Request<GetClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(cluster::status(&self.node, &self.transport).await))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        refuse_idempotency_key(&request)?;
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        cluster::add_member(&self.node, &origin, request.node_id, &request.raft_address).await?;
        Ok(Response::new(cluster::status(&self.node, &self.transport).await))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        refuse_idempotency_key(&request)?;
        let origin = Origin::of(&request)?;
        let request = request.into_inner();
        cluster::remove_member(&self.node, &origin, request.node_id).await?;
        Ok(Response::new(cluster::status(&self.node, &self.transport).await))
    }

    async fn list_data_plane_nodes(
        &self,
        request: Request<ListDataPlaneNodesRequest>,
    ) -> Result<Response<pylon_proto::publish::v1::DataPlaneNodeList>, Status> {
        let nodes = if request.into_inner().local_only {
            self.data_planes.list()
        } else {
            crate::publish::directory::everywhere(&self.data_planes, &self.transport, self.node.shared.id)
                .await
        };
        Ok(Response::new(pylon_proto::publish::v1::DataPlaneNodeList {
            nodes,
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<ListConsumersRequest>,
    ) -> Result<Response<ListConsumersResponse>, Status> {
        self.list_consumers_call(request).await
    }

    async fn update_consumer(
        &self,
        request: Request<UpdateConsumerRequest>,
    ) -> Result<Response<raftpb::Consumer>, Status> {
        self.update_consumer_call(request).await
    }

    async fn get_stage_metrics(
        &self,
        request: Request<GetStageMetricsRequest>,
    ) -> Result<Response<pylon_proto::publish::v1::StageTraffic>, Status> {
        let request = request.into_inner();
        present(&request.api, "api")?;
        present(&request.stage, "stage")?;
        if self.state().stage(&request.api, &request.stage).is_none() {
            return Err(not_found(format!("stage {}/{}", request.api, request.stage)));
        }
        Ok(Response::new(
            crate::publish::directory::stage_traffic_everywhere(
                &self.data_planes,
                &self.transport,
                self.node.shared.id,
                &request.api,
                &request.stage,
                TOP_ROUTES,
            )
            .await,
        ))
    }

    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        let request = request.into_inner();
        let before = match request.page.as_ref().map(|p| p.page_token.as_str()) {
            None | Some("") => 0,
            Some(token) => token
                .parse::<u64>()
                .map_err(|_| Status::invalid_argument("page.page_token: not a token this call returned"))?,
        };
        let size = page_size(request.page.as_ref())?;
        self.read(request.consistency, |state| {
            let mut records: Vec<AuditRecord> = state
                .history()
                .audit_before(before)
                .take(size + 1)
                .cloned()
                .collect();
            let next_page_token = if records.len() > size {
                records.truncate(size);
                records.last().map(|r| r.index.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(ListAuditRecordsResponse {
                records,
                next_page_token,
            })
        })
        .await
    }
}
