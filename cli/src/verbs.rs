//! Admin verbs for people. Each is a thin call (or a get-then-update with the
//! revision it read) on the admin API.

use crate::client::{Admin, Connection, explain};
use crate::output::{self, OutputArgs, print, time};
use anyhow::{Context as _, bail};
use pylon_common::model::{ApiDefinition, parse_documents};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{self as config, CanarySettings, resource::Kind};

use std::path::PathBuf;
use tonic::Code;

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Create or update resources from a YAML or JSON file (idempotent).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// APIs.
    #[command(subcommand)]
    Apis(ApisCommand),
    /// API keys (the plain value is printed once, by `create`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Usage plans: throttle and quota per API key over a set of stages.
    #[command(subcommand, name = "usage-plans")]
    UsagePlans(UsagePlansCommand),
    /// Custom domain names and their base-path mappings.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// Snapshot an API's definition as a new deployment and point a stage at it.
    Deploy {
        api: String,
        #[arg(long)]
        stage: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Deploy as the stage's canary with this share of traffic instead of
        /// moving the stage.
        #[arg(long)]
        canary_percent: Option<f64>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deployment history.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Stages.
    #[command(subcommand)]
    Stages(StagesCommand),
    /// Canary releases on a stage.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// Point a stage at an earlier deployment.
    Rollback {
        api: String,
        #[arg(long)]
        stage: String,
        #[arg(long = "to")]
        deployment: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The stages' response caches.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Usage-plan quotas: what each key used in the current period.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// An API's authorizers (they live in its definition: create and change
    /// them with `apply`; a change reaches traffic with the next deploy).
    #[command(subcommand)]
    Authorizers(AuthorizersCommand),
    /// The audit log: every admin write that reached the Raft log, newest
    /// first, with who made it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Data-plane nodes: the config version each serves, its last ACK/NACK
    /// and why, when it was last seen.
    Nodes {
        /// Only the nodes connected to the contacted control-plane node.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Paging by hand; without these flags a list shows everything.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PageArgs {
    /// Show one page of at most this many (1–1000) instead of everything.
    #[arg(long)]
    limit: Option<u32>,
    /// Continue from the token a previous page printed.
    #[arg(long)]
    page_token: Option<String>,
}

impl PageArgs {
    fn by_hand(&self) -> bool {
        self.limit.is_some() || self.page_token.is_some()
    }
}

/// Reads a list: every page (a page of 1,000 at a time), or the one page
/// `paging` asks for, telling on stderr how to get the next.
/// `fetch(page)` makes one call: the page's items and the next token.
///
/// # Errors
/// A call that failed, or `--limit` outside 1–1000.
async fn list_all<T, F, Fut>(paging: &PageArgs, mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    if paging.by_hand() {
        let size = paging.limit.unwrap_or(100);
        if !(1..=1000).contains(&size) {
            bail!("--limit must be 1..=1000");
        }
        let page = Page {
            page_size: size,
            page_token: paging.page_token.clone().unwrap_or_default(),
        };
        let (items, next) = fetch(page).await.map_err(explain)?;
        if !next.is_empty() {
            eprintln!("more: --page-token {next}");
        }
        return Ok(items);
    }
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = Page {
            page_size: 1000,
            page_token: token,
        };
        let (items, next) = fetch(page).await.map_err(explain)?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// The verbs of a resource named by its `name`.
#[derive(clap::Subcommand)]
pub enum NamedCommand {
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    Delete {
        name: String,
    },
}

#[derive(clap::Subcommand)]
pub enum UsagePlansCommand {
    #[command(flatten)]
    Read(NamedCommand),
    /// Creates a plan from flags (or use `apply` with a file).
    Create(PlanFlags),
    /// Changes the fields given, at the revision read (a concurrent change
    /// makes it fail with Aborted rather than be lost).
    Update(PlanFlags),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

#[derive(clap::Args)]
pub struct PlanFlags {
    name: String,
    #[arg(long)]
    description: Option<String>,
    /// Steady requests per second for each key.
    #[arg(long)]
    rate: Option<f64>,
    /// Burst for each key.
    #[arg(long)]
    burst: Option<u32>,
    /// Requests per quota period for each key.
    #[arg(long)]
    quota_limit: Option<u64>,
    #[arg(long, value_enum)]
    quota_period: Option<QuotaPeriod>,
    /// Days the period start is shifted by (WEEK: 0-6, MONTH: 0-27).
    #[arg(long)]
    quota_offset: Option<u32>,
    /// Remove the quota (update only).
    #[arg(long, conflicts_with_all = ["quota_limit", "quota_period", "quota_offset"])]
    no_quota: bool,
    /// A stage the plan covers, API/STAGE (repeatable; on update the list
    /// replaces the plan's, keeping route throttles of stages still in it).
    #[arg(long = "stage", value_name = "API/STAGE")]
    stages: Vec<String>,
    /// An API key id in the plan (repeatable; on update the list replaces
    /// the plan's).
    #[arg(long = "key", value_name = "ID")]
    keys: Vec<String>,
    /// Add an API key id (update).
    #[arg(long = "add-key", value_name = "ID")]
    add_keys: Vec<String>,
    /// Remove an API key id (update).
    #[arg(long = "remove-key", value_name = "ID")]
    remove_keys: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(clap::Subcommand)]
pub enum DomainsCommand {
    #[command(flatten)]
    Read(NamedCommand),
    /// Creates a custom domain name from flags (or use `apply`).
    Create(DomainFlags),
    /// Changes the fields given, at the revision read.
    Update(DomainFlags),
}

#[derive(clap::Args)]
pub struct DomainFlags {
    name: String,
    /// A base-path mapping BASE=API/STAGE; an empty BASE (or "(none)") maps
    /// the root (repeatable; on update the list replaces the domain's).
    #[arg(long = "mapping", value_name = "BASE=API/STAGE")]
    mappings: Vec<String>,
    /// PEM certificate file on the data-plane nodes.
    #[arg(long)]
    certificate_file: Option<String>,
    /// PEM private key file on the data-plane nodes.
    #[arg(long)]
    private_key_file: Option<String>,
    /// Mutual TLS: PEM bundle of the CAs clients must chain to.
    #[arg(long)]
    truststore_file: Option<String>,
    /// Turn mutual TLS off (update).
    #[arg(long, conflicts_with = "truststore_file")]
    no_truststore: bool,
    #[command(flatten)]
    output: OutputArgs,
}

fn api_stage(text: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('/') {
        Some((api, stage)) if !api.is_empty() && !stage.is_empty() && !stage.contains('/') => {
            Ok((api.to_owned(), stage.to_owned()))
        }
        _ => bail!("{flag} {text}: expected API/STAGE"),
    }
}

impl PlanFlags {
    /// Applies the flags to `plan` (a new one, or the one read for an update).
    fn apply_to(&self, plan: &mut config::UsagePlan) -> anyhow::Result<()> {
        if let Some(description) = &self.description {
            plan.description = description.clone();
        }
        if self.rate.is_some() || self.burst.is_some() {
            let throttle = plan.throttle.get_or_insert_with(Default::default);
            if let Some(rate) = self.rate {
                throttle.rate_limit = rate;
            }
            if let Some(burst) = self.burst {
                throttle.burst_limit = burst;
            }
        }
        if self.no_quota {
            plan.quota = None;
        } else if self.quota_limit.is_some() || self.quota_period.is_some() || self.quota_offset.is_some() {
            let quota = plan.quota.get_or_insert_with(Default::default);
            if let Some(limit) = self.quota_limit {
                quota.limit = limit;
            }
            if let Some(period) = self.quota_period {
                quota.set_period(match period {
                    QuotaPeriod::Day => config::quota::Period::Day,
                    QuotaPeriod::Week => config::quota::Period::Week,
                    QuotaPeriod::Month => config::quota::Period::Month,
                });
            }
            if let Some(offset) = self.quota_offset {
                quota.offset = offset;
            }
        }
        if !self.stages.is_empty() {
            let mut stages = Vec::new();
            for text in &self.stages {
                let (api, stage) = api_stage(text, "--stage")?;
                let kept = plan
                    .api_stages
                    .iter()
                    .find(|s| s.api == api && s.stage == stage)
                    .cloned();
                stages.push(kept.unwrap_or(config::ApiStageRef {
                    api,
                    stage,
                    ..Default::default()
                }));
            }
            plan.api_stages = stages;
        }
        if !self.keys.is_empty() {
            plan.api_key_ids = self.keys.clone();
        }
        for key in &self.add_keys {
            if !plan.api_key_ids.contains(key) {
                plan.api_key_ids.push(key.clone());
            }
        }
        plan.api_key_ids.retain(|key| !self.remove_keys.contains(key));
        Ok(())
    }
}

impl DomainFlags {
    fn apply_to(&self, domain: &mut config::DomainName) -> anyhow::Result<()> {
        if !self.mappings.is_empty() {
            let mut mappings = Vec::new();
            for text in &self.mappings {
                let Some((base, target)) = text.split_once('=') else {
                    bail!("--mapping {text}: expected BASE=API/STAGE");
                };
                let (api, stage) = api_stage(target, "--mapping")?;
                mappings.push(config::BasePathMapping {
                    base_path: base.to_owned(),
                    api,
                    stage,
                });
            }
            domain.mappings = mappings;
        }
        if let Some(file) = &self.certificate_file {
            domain.certificate_file = file.clone();
        }
        if let Some(file) = &self.private_key_file {
            domain.private_key_file = file.clone();
        }
        if let Some(file) = &self.truststore_file {
            domain.truststore_file = file.clone();
        }
        if self.no_truststore {
            domain.truststore_file.clear();
        }
        Ok(())
    }
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    Get {
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Prints the key's id and, this once, its value.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// The value, for a key imported from elsewhere (20-128 characters;
        /// default: generated).
        #[arg(long)]
        value: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(clap::Subcommand)]
pub enum ApisCommand {
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    Delete {
        name: String,
    },
}

#[derive(clap::Subcommand)]
pub enum DeploymentsCommand {
    /// Newest first.
    List {
        api: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum StagesCommand {
    List {
        api: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    Get {
        api: String,
        stage: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Change stage variables or description.
    Update {
        api: String,
        stage: String,
        /// NAME=VALUE (repeatable).
        #[arg(long = "var", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
        /// Remove a variable (repeatable).
        #[arg(long = "unset-var")]
        unset: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum CanaryCommand {
    /// Send a share of the stage's traffic to another deployment.
    Set {
        api: String,
        stage: String,
        #[arg(long)]
        deployment: String,
        /// 0.0–100.0
        #[arg(long)]
        percent: f64,
        /// Stage variable override for canary requests, NAME=VALUE (repeatable).
        #[arg(long = "override", value_parser = parse_pair)]
        overrides: Vec<(String, String)>,
        #[arg(long)]
        use_stage_cache: bool,
        /// Stable split on a client attribute, e.g. $request.header.x-user.
        #[arg(long, default_value = "")]
        sticky_key: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make the canary's deployment the stage's.
    Promote {
        api: String,
        stage: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove the canary.
    Clear {
        api: String,
        stage: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum CacheCommand {
    /// Empty a stage's cache on every data-plane node.
    Flush {
        api: String,
        #[arg(long)]
        stage: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum UsageCommand {
    /// Quota used and remaining per key of a usage plan.
    Get {
        plan: String,
        /// Only this API key (id).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Start the quota period over for a key (or every key of the plan).
    Reset {
        plan: String,
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum AuthorizersCommand {
    List {
        api: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    Get {
        api: String,
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Removes it from the API's definition (refused while a route uses it).
    Delete { api: String, name: String },
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Records, newest first (the last 10,000 are kept).
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index per node.
    Status {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Add a node (started with `pylon control-plane --join`) as a voter.
    Join {
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        raft_address: String,
    },
    /// Remove a node from the cluster.
    Leave {
        #[arg(long)]
        node_id: u64,
    },
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

pub async fn run(connection: &Connection, command: AdminCommand) -> anyhow::Result<()> {
    let mut admin = connection.connect().await?;
    match command {
        AdminCommand::Apply { file } => apply(&mut admin, &file).await,
        AdminCommand::Apis(command) => apis(&mut admin, command).await,
        AdminCommand::Keys(command) => keys(&mut admin, command).await,
        AdminCommand::UsagePlans(command) => usage_plans(&mut admin, command).await,
        AdminCommand::Domains(command) => domains(&mut admin, command).await,
        AdminCommand::Deploy {
            api,
            stage,
            description,
            canary_percent,
            output,
        } => {
            let target = if canary_percent.is_some() {
                String::new()
            } else {
                stage.clone()
            };
            let deployment = admin
                .create_deployment(CreateDeploymentRequest {
                    api: api.clone(),
                    description,
                    stage: target,
                })
                .await
                .map_err(explain)?
                .into_inner();
            if let Some(percent) = canary_percent {
                let mut current = get_stage(&mut admin, &api, &stage).await?;
                let previous = current.canary.take().unwrap_or_default();
                current.canary = Some(CanarySettings {
                    deployment_id: deployment.id.clone(),
                    percent_traffic: percent,
                    ..previous
                });
                update_stage(&mut admin, current).await?;
            }
            if output.format == output::Format::Table {
                match canary_percent {
                    Some(percent) => println!(
                        "deployed {api} as {} to stage {stage} as a {percent}% canary",
                        deployment.id
                    ),
                    None => println!("deployed {api} as {} to stage {stage}", deployment.id),
                }
                return Ok(());
            }
            print(output.format, &deployment, &[], vec![])
        }
        AdminCommand::Deployments(DeploymentsCommand::List { api, output, paging }) => {
            let consistency = output.consistency();
            let stages = stages_of(&mut admin, &api, consistency, &PageArgs::default()).await?;
            let deployments = list_all(&paging, |page| {
                let (mut admin, api) = (admin.clone(), api.clone());
                async move {
                    let list = admin
                        .list_deployments(ListDeploymentsRequest {
                            api,
                            page: Some(page),
                            consistency,
                        })
                        .await?
                        .into_inner();
                    Ok((list.deployments, list.next_page_token))
                }
            })
            .await?;
            let rows = deployments
                .iter()
                .map(|d| {
                    let mut on: Vec<String> = stages
                        .iter()
                        .filter(|s| s.deployment_id == d.id)
                        .map(|s| s.name.clone())
                        .collect();
                    on.extend(
                        stages
                            .iter()
                            .filter(|s| {
                                s.canary
                                    .as_ref()
                                    .is_some_and(|c| c.deployment_id == d.id && c.percent_traffic > 0.0)
                            })
                            .map(|s| format!("{} (canary)", s.name)),
                    );
                    vec![
                        d.id.clone(),
                        time(d.created_at.as_ref()),
                        on.join(","),
                        d.description.clone(),
                    ]
                })
                .collect();
            print(
                output.format,
                &deployments,
                &["ID", "CREATED", "STAGES", "DESCRIPTION"],
                rows,
            )
        }
        AdminCommand::Stages(command) => stages(&mut admin, command).await,
        AdminCommand::Canary(command) => canary(&mut admin, command).await,
        AdminCommand::Rollback {
            api,
            stage,
            deployment,
            output,
        } => {
            let stage = admin
                .rollback_stage(RollbackStageRequest {
                    api,
                    stage,
                    deployment_id: deployment,
                    expected_revision: 0,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_stage(output, &stage)
        }
        AdminCommand::Cache(CacheCommand::Flush { api, stage, output }) => {
            let stage = admin
                .flush_stage_cache(FlushStageCacheRequest { api, stage })
                .await
                .map_err(explain)?
                .into_inner();
            if output.format == output::Format::Table {
                println!(
                    "cache of {}/{} flushed (generation {})",
                    stage.api, stage.name, stage.cache_generation
                );
                return Ok(());
            }
            print_stage(output, &stage)
        }
        AdminCommand::Usage(command) => usage(&mut admin, command).await,
        AdminCommand::Cluster(command) => cluster(&mut admin, command).await,
        AdminCommand::Nodes { local, output } => nodes(&mut admin, local, output).await,
        AdminCommand::Audit(AuditCommand::List { output, paging }) => audit(&mut admin, output, paging).await,
        AdminCommand::Authorizers(command) => authorizers(&mut admin, command).await,
    }
}

async fn authorizers(admin: &mut Admin, command: AuthorizersCommand) -> anyhow::Result<()> {
    use pylon_proto::config::v1::authorizer::Kind as AuthorizerKind;
    let header = ["NAME", "TYPE", "SOURCE", "ROUTES"];
    let row = |api: &config::Api, a: &config::Authorizer| {
        let (kind, source) = match &a.kind {
            Some(AuthorizerKind::Jwt(jwt)) => ("JWT", jwt.issuer.clone()),
            Some(AuthorizerKind::Request(request)) => ("REQUEST", request.uri.clone()),
            None => ("-", String::new()),
        };
        let routes = api
            .routes
            .iter()
            .filter(|r| r.authorization.as_ref().is_some_and(|z| z.authorizer == a.name))
            .count();
        vec![a.name.clone(), kind.to_owned(), source, routes.to_string()]
    };
    let read = |name: String| {
        let mut admin = admin.clone();
        async move {
            let request = GetApiRequest {
                name,
                consistency: ReadConsistency::Linearizable as i32,
            };
            admin
                .get_api(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(explain)
        }
    };
    match command {
        AuthorizersCommand::List { api, output } => {
            let api = read(api).await?;
            let rows = api.authorizers.iter().map(|a| row(&api, a)).collect();
            print(output.format, &api.authorizers, &header, rows)
        }
        AuthorizersCommand::Get { api, name, output } => {
            let api = read(api).await?;
            let Some(found) = api.authorizers.iter().find(|a| a.name == name) else {
                bail!("NotFound: API {} has no authorizer {name}", api.name);
            };
            print(output.format, found, &header, vec![row(&api, found)])
        }
        AuthorizersCommand::Delete { api, name } => {
            let mut api = read(api).await?;
            let before = api.authorizers.len();
            api.authorizers.retain(|a| a.name != name);
            if api.authorizers.len() == before {
                bail!("NotFound: API {} has no authorizer {name}", api.name);
            }
            let request = UpdateApiRequest {
                expected_revision: api.revision,
                api: Some(api),
            };
            let api = admin.update_api(request).await.map_err(explain)?.into_inner();
            println!(
                "authorizer {name} removed from API {} (deploy to apply it)",
                api.name
            );
            Ok(())
        }
    }
}

async fn audit(admin: &mut Admin, output: OutputArgs, paging: PageArgs) -> anyhow::Result<()> {
    use pylon_proto::raft::v1::resource_ref::Kind as RefKind;
    let consistency = output.consistency();
    let records = list_all(&paging, |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_audit_records(ListAuditRecordsRequest {
                    page: Some(page),
                    consistency,
                })
                .await?
                .into_inner();
            Ok((list.records, list.next_page_token))
        }
    })
    .await?;
    let rows = records
        .iter()
        .map(|r| {
            let resource = r.resource.as_ref().map_or_else(String::new, |target| {
                let kind = match RefKind::try_from(target.kind) {
                    Ok(RefKind::Api) => "api",
                    Ok(RefKind::Stage) => "stage",
                    Ok(RefKind::Deployment) => "deployment",
                    Ok(RefKind::ApiKey) => "api-key",
                    Ok(RefKind::UsagePlan) => "usage-plan",
                    Ok(RefKind::DomainName) => "domain",
                    Ok(RefKind::Unspecified) | Err(_) => "cluster",
                };
                if target.api.is_empty() {
                    format!("{kind} {}", target.name)
                } else {
                    format!("{kind} {}/{}", target.api, target.name)
                }
            });
            let who = r.actor.as_ref().map_or_else(String::new, |a| {
                if a.roles.is_empty() {
                    a.name.clone()
                } else {
                    format!("{} ({})", a.name, a.roles.join(","))
                }
            });
            vec![
                r.index.to_string(),
                time(r.at.as_ref()),
                who,
                r.method.clone(),
                resource,
                if r.error_code.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("{}: {}", r.error_code, r.error)
                },
            ]
        })
        .collect();
    print(
        output.format,
        &records,
        &["INDEX", "TIME", "WHO", "METHOD", "RESOURCE", "RESULT"],
        rows,
    )
}

async fn nodes(admin: &mut Admin, local: bool, output: OutputArgs) -> anyhow::Result<()> {
    use pylon_proto::publish::v1::data_plane_node::LastResult;
    let list = admin
        .list_data_plane_nodes(ListDataPlaneNodesRequest { local_only: local })
        .await
        .map_err(explain)?
        .into_inner();
    let cluster = admin
        .get_cluster_status(GetClusterStatusRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .cluster_id;
    // Versions of another cluster do not compare with this one's.
    let latest = list
        .nodes
        .iter()
        .filter(|n| n.cluster_id == cluster)
        .map(|n| n.applied_version)
        .max()
        .unwrap_or(0);
    let rows = list
        .nodes
        .iter()
        .map(|n| {
            let result = match LastResult::try_from(n.last_result) {
                Ok(LastResult::Ack) => format!("ACK {}", n.last_result_version),
                Ok(LastResult::Nack) => format!("NACK {}", n.last_result_version),
                _ => "-".to_owned(),
            };
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                n.node_id.clone(),
                if n.connected {
                    "connected".into()
                } else {
                    "gone".into()
                },
                if n.applied_version < latest && n.cluster_id == cluster {
                    format!("{} (behind)", n.applied_version)
                } else {
                    n.applied_version.to_string()
                },
                if n.cluster_id.is_empty() || n.cluster_id == cluster {
                    n.cluster_id.chars().take(12).collect()
                } else {
                    format!("{} (OTHER CLUSTER)", n.cluster_id)
                },
                result,
                match (n.last_result == LastResult::Nack as i32, n.warning.is_empty()) {
                    (true, _) => n.last_error.clone(),
                    (false, false) => format!("warning: {}", n.warning),
                    (false, true) => String::new(),
                },
                time(n.last_seen.as_ref()),
                n.control_plane_node.to_string(),
                labels.join(","),
            ]
        })
        .collect();
    print(
        output.format,
        &list,
        &[
            "NODE",
            "STATE",
            "VERSION",
            "CLUSTER",
            "LAST",
            "ERROR",
            "LAST SEEN",
            "CP",
            "LABELS",
        ],
        rows,
    )
}

/// How the CLI reads, shows and deletes one kind of named resource.
struct Named<T, L, G, D> {
    /// For messages: "usage plan", "domain name".
    noun: &'static str,
    header: &'static [&'static str],
    row: fn(&T) -> Vec<String>,
    /// One page of the list: `(page, consistency)`.
    list: L,
    /// One by name: `(name, consistency)`.
    get: G,
    delete: D,
}

/// `list | get | delete` of a named resource, paged like every list.
async fn named<T, L, LF, G, GF, D, DF>(command: NamedCommand, verbs: Named<T, L, G, D>) -> anyhow::Result<()>
where
    T: serde::Serialize,
    L: FnMut(Page, i32) -> LF,
    LF: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
    G: FnOnce(String, i32) -> GF,
    GF: std::future::Future<Output = Result<T, tonic::Status>>,
    D: FnOnce(String) -> DF,
    DF: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let Named {
        noun,
        header,
        row,
        mut list,
        get,
        delete,
    } = verbs;
    match command {
        NamedCommand::List { output, paging } => {
            let consistency = output.consistency();
            let items = list_all(&paging, |page| list(page, consistency)).await?;
            let rows = items.iter().map(row).collect();
            print(output.format, &items, header, rows)
        }
        NamedCommand::Get { name, output } => {
            let item = get(name, output.consistency()).await.map_err(explain)?;
            let rows = vec![row(&item)];
            print(output.format, &item, header, rows)
        }
        NamedCommand::Delete { name } => {
            delete(name.clone()).await.map_err(explain)?;
            println!("{noun} {name} deleted");
            Ok(())
        }
    }
}

fn plan_row(p: &config::UsagePlan) -> Vec<String> {
    let stages: Vec<String> = p
        .api_stages
        .iter()
        .map(|s| format!("{}/{}", s.api, s.stage))
        .collect();
    vec![
        p.name.clone(),
        stages.join(","),
        p.api_key_ids.len().to_string(),
        p.revision.to_string(),
        time(p.updated_at.as_ref()),
    ]
}

const PLAN_HEADER: &[&str] = &["NAME", "STAGES", "KEYS", "REVISION", "UPDATED"];

async fn usage_plans(admin: &mut Admin, command: UsagePlansCommand) -> anyhow::Result<()> {
    let command = match command {
        UsagePlansCommand::Read(command) => command,
        UsagePlansCommand::Create(flags) => {
            let mut plan = config::UsagePlan {
                name: flags.name.clone(),
                ..Default::default()
            };
            flags.apply_to(&mut plan)?;
            let request = CreateUsagePlanRequest {
                usage_plan: Some(plan),
            };
            let plan = admin
                .create_usage_plan(request)
                .await
                .map_err(explain)?
                .into_inner();
            return print(flags.output.format, &plan, PLAN_HEADER, vec![plan_row(&plan)]);
        }
        UsagePlansCommand::Update(flags) => {
            let request = GetUsagePlanRequest {
                name: flags.name.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            };
            let mut plan = admin.get_usage_plan(request).await.map_err(explain)?.into_inner();
            let expected_revision = plan.revision;
            flags.apply_to(&mut plan)?;
            let request = UpdateUsagePlanRequest {
                usage_plan: Some(plan),
                expected_revision,
            };
            let plan = admin
                .update_usage_plan(request)
                .await
                .map_err(explain)?
                .into_inner();
            return print(flags.output.format, &plan, PLAN_HEADER, vec![plan_row(&plan)]);
        }
    };
    let (lister, getter, deleter) = (admin.clone(), admin.clone(), admin.clone());
    let verbs = Named {
        noun: "usage plan",
        header: PLAN_HEADER,
        row: plan_row,
        list: |page, consistency| {
            let mut admin = lister.clone();
            async move {
                let request = ListUsagePlansRequest {
                    page: Some(page),
                    consistency,
                };
                let list = admin.list_usage_plans(request).await?.into_inner();
                Ok((list.usage_plans, list.next_page_token))
            }
        },
        get: |name, consistency| async move {
            let mut admin = getter;
            let request = GetUsagePlanRequest { name, consistency };
            Ok(admin.get_usage_plan(request).await?.into_inner())
        },
        delete: |name| async move {
            let mut admin = deleter;
            let request = DeleteUsagePlanRequest {
                name,
                ..Default::default()
            };
            admin.delete_usage_plan(request).await.map(drop)
        },
    };
    named(command, verbs).await
}

fn domain_row(d: &config::DomainName) -> Vec<String> {
    let mappings: Vec<String> = d
        .mappings
        .iter()
        .map(|m| format!("{} → {}/{}", m.base_path, m.api, m.stage))
        .collect();
    vec![
        d.name.clone(),
        mappings.join(", "),
        if d.truststore_file.is_empty() { "no" } else { "yes" }.to_owned(),
        d.revision.to_string(),
        time(d.updated_at.as_ref()),
    ]
}

const DOMAIN_HEADER: &[&str] = &["NAME", "MAPPINGS", "MUTUAL TLS", "REVISION", "UPDATED"];

async fn domains(admin: &mut Admin, command: DomainsCommand) -> anyhow::Result<()> {
    let command = match command {
        DomainsCommand::Read(command) => command,
        DomainsCommand::Create(flags) => {
            let mut domain = config::DomainName {
                name: flags.name.clone(),
                ..Default::default()
            };
            flags.apply_to(&mut domain)?;
            let request = CreateDomainNameRequest {
                domain_name: Some(domain),
            };
            let domain = admin
                .create_domain_name(request)
                .await
                .map_err(explain)?
                .into_inner();
            return print(
                flags.output.format,
                &domain,
                DOMAIN_HEADER,
                vec![domain_row(&domain)],
            );
        }
        DomainsCommand::Update(flags) => {
            let request = GetDomainNameRequest {
                name: flags.name.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            };
            let mut domain = admin
                .get_domain_name(request)
                .await
                .map_err(explain)?
                .into_inner();
            let expected_revision = domain.revision;
            flags.apply_to(&mut domain)?;
            let request = UpdateDomainNameRequest {
                domain_name: Some(domain),
                expected_revision,
            };
            let domain = admin
                .update_domain_name(request)
                .await
                .map_err(explain)?
                .into_inner();
            return print(
                flags.output.format,
                &domain,
                DOMAIN_HEADER,
                vec![domain_row(&domain)],
            );
        }
    };
    let (lister, getter, deleter) = (admin.clone(), admin.clone(), admin.clone());
    let verbs = Named {
        noun: "domain name",
        header: DOMAIN_HEADER,
        row: domain_row,
        list: |page, consistency| {
            let mut admin = lister.clone();
            async move {
                let request = ListDomainNamesRequest {
                    page: Some(page),
                    consistency,
                };
                let list = admin.list_domain_names(request).await?.into_inner();
                Ok((list.domain_names, list.next_page_token))
            }
        },
        get: |name, consistency| async move {
            let mut admin = getter;
            let request = GetDomainNameRequest { name, consistency };
            Ok(admin.get_domain_name(request).await?.into_inner())
        },
        delete: |name| async move {
            let mut admin = deleter;
            let request = DeleteDomainNameRequest {
                name,
                ..Default::default()
            };
            admin.delete_domain_name(request).await.map(drop)
        },
    };
    named(command, verbs).await
}

async fn keys(admin: &mut Admin, command: KeysCommand) -> anyhow::Result<()> {
    let row = |k: &config::ApiKey| {
        vec![
            k.name.clone(),
            k.id.clone(),
            format!("{}…", k.key_prefix),
            if k.enabled { "yes" } else { "no" }.to_owned(),
            k.revision.to_string(),
            time(k.updated_at.as_ref()),
        ]
    };
    let header = ["NAME", "ID", "KEY", "ENABLED", "REVISION", "UPDATED"];
    match command {
        KeysCommand::List { output, paging } => {
            let consistency = output.consistency();
            let keys = list_all(&paging, |page| {
                let mut admin = admin.clone();
                async move {
                    let list = admin
                        .list_api_keys(ListApiKeysRequest {
                            page: Some(page),
                            consistency,
                        })
                        .await?
                        .into_inner();
                    Ok((list.api_keys, list.next_page_token))
                }
            })
            .await?;
            if !paging.by_hand() {
                let mut names: std::collections::BTreeMap<&str, usize> = Default::default();
                for key in &keys {
                    *names.entry(key.name.as_str()).or_default() += 1;
                }
                for (name, count) in names.into_iter().filter(|(_, n)| *n > 1) {
                    eprintln!("warning: {count} keys are named {name:?}; apply cannot tell them apart");
                }
            }
            let rows = keys.iter().map(row).collect();
            print(output.format, &keys, &header, rows)
        }
        KeysCommand::Get { id, output } => {
            let key = admin
                .get_api_key(GetApiKeyRequest {
                    id,
                    consistency: output.consistency(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let rows = vec![row(&key)];
            print(output.format, &key, &header, rows)
        }
        KeysCommand::Create {
            name,
            description,
            disabled,
            value,
        } => {
            // Made here, not by the server, so that a retried request (same
            // bytes, same idempotency key) still comes back with its value.
            let chosen = value.is_some();
            let value = value.unwrap_or_else(|| {
                use rand::Rng as _;
                rand::rng()
                    .sample_iter(&rand::distr::Alphanumeric)
                    .take(40)
                    .map(char::from)
                    .collect()
            });
            let created = admin
                .create_api_key(CreateApiKeyRequest {
                    api_key: Some(config::ApiKey {
                        name,
                        description,
                        enabled: !disabled,
                        ..Default::default()
                    }),
                    value,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let key = created.api_key.unwrap_or_default();
            println!("API key {} ({}) created", key.name, key.id);
            println!("value: {}", created.value);
            if !chosen {
                eprintln!("the value is shown only now; keep it");
            }
            Ok(())
        }
        KeysCommand::Update {
            id,
            description,
            enable,
            disable,
        } => {
            let mut key = admin
                .get_api_key(GetApiKeyRequest {
                    id,
                    ..Default::default()
                })
                .await
                .map_err(explain)?
                .into_inner();
            if let Some(description) = description {
                key.description = description;
            }
            if enable || disable {
                key.enabled = enable;
            }
            let expected_revision = key.revision;
            let updated = admin
                .update_api_key(UpdateApiKeyRequest {
                    api_key: Some(key),
                    expected_revision,
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!(
                "API key {} ({}) updated, revision {}",
                updated.name, updated.id, updated.revision
            );
            Ok(())
        }
        KeysCommand::Delete { id } => {
            admin
                .delete_api_key(DeleteApiKeyRequest {
                    id: id.clone(),
                    ..Default::default()
                })
                .await
                .map_err(explain)?;
            println!("API key {id} deleted");
            Ok(())
        }
    }
}

async fn apis(admin: &mut Admin, command: ApisCommand) -> anyhow::Result<()> {
    match command {
        ApisCommand::List { output, paging } => {
            let consistency = output.consistency();
            let apis = list_all(&paging, |page| {
                let mut admin = admin.clone();
                async move {
                    let list = admin
                        .list_apis(ListApisRequest {
                            page: Some(page),
                            consistency,
                        })
                        .await?
                        .into_inner();
                    Ok((list.apis, list.next_page_token))
                }
            })
            .await?;
            let rows = apis
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        protocol(a.protocol),
                        a.routes.len().to_string(),
                        a.revision.to_string(),
                        time(a.updated_at.as_ref()),
                    ]
                })
                .collect();
            print(
                output.format,
                &apis,
                &["NAME", "PROTOCOL", "ROUTES", "REVISION", "UPDATED"],
                rows,
            )
        }
        ApisCommand::Get { name, output } => {
            let api = admin
                .get_api(GetApiRequest {
                    name,
                    consistency: output.consistency(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let rows = api
                .routes
                .iter()
                .map(|r| {
                    let integration = r.integration.as_ref();
                    vec![
                        r.method.clone(),
                        r.path.clone(),
                        integration
                            .and_then(|i| config::integration::Type::try_from(i.r#type).ok())
                            .map(|t| t.as_str_name().to_owned())
                            .unwrap_or_default(),
                        integration.map(|i| i.uri.clone()).unwrap_or_default(),
                    ]
                })
                .collect();
            if output.format == output::Format::Table {
                println!(
                    "{} ({}), revision {}",
                    api.name,
                    protocol(api.protocol),
                    api.revision
                );
            }
            print(
                output.format,
                &api,
                &["METHOD", "PATH", "INTEGRATION", "URI"],
                rows,
            )
        }
        ApisCommand::Delete { name } => {
            admin
                .delete_api(DeleteApiRequest {
                    name: name.clone(),
                    expected_revision: 0,
                })
                .await
                .map_err(explain)?;
            println!("deleted API {name}");
            Ok(())
        }
    }
}

fn protocol(value: i32) -> String {
    config::api::Protocol::try_from(value)
        .map(|p| p.as_str_name().to_owned())
        .unwrap_or_default()
}

fn print_stage(output: OutputArgs, stage: &config::Stage) -> anyhow::Result<()> {
    let canary = stage
        .canary
        .as_ref()
        .map(|c| format!("{} @ {}%", c.deployment_id, c.percent_traffic))
        .unwrap_or_else(|| "-".into());
    let variables = stage
        .variables
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let row = vec![
        stage.name.clone(),
        stage.deployment_id.clone(),
        canary,
        variables,
        stage.revision.to_string(),
    ];
    print(
        output.format,
        stage,
        &["STAGE", "DEPLOYMENT", "CANARY", "VARIABLES", "REVISION"],
        vec![row],
    )
}

async fn get_stage(admin: &mut Admin, api: &str, stage: &str) -> anyhow::Result<config::Stage> {
    read_stage(admin, api, stage, ReadConsistency::Linearizable as i32).await
}

async fn read_stage(
    admin: &mut Admin,
    api: &str,
    stage: &str,
    consistency: i32,
) -> anyhow::Result<config::Stage> {
    Ok(admin
        .get_stage(GetStageRequest {
            api: api.into(),
            name: stage.into(),
            consistency,
        })
        .await
        .map_err(explain)?
        .into_inner())
}

async fn update_stage(admin: &mut Admin, stage: config::Stage) -> anyhow::Result<config::Stage> {
    let expected_revision = stage.revision;
    Ok(admin
        .update_stage(UpdateStageRequest {
            stage: Some(stage),
            expected_revision,
        })
        .await
        .map_err(explain)?
        .into_inner())
}

async fn stages(admin: &mut Admin, command: StagesCommand) -> anyhow::Result<()> {
    match command {
        StagesCommand::List { api, output, paging } => {
            let stages = stages_of(admin, &api, output.consistency(), &paging).await?;
            let rows = stages
                .iter()
                .map(|s| {
                    let canary = s
                        .canary
                        .as_ref()
                        .map(|c| format!("{} @ {}%", c.deployment_id, c.percent_traffic));
                    vec![
                        s.name.clone(),
                        s.deployment_id.clone(),
                        canary.unwrap_or_else(|| "-".into()),
                        s.revision.to_string(),
                    ]
                })
                .collect();
            print(
                output.format,
                &stages,
                &["STAGE", "DEPLOYMENT", "CANARY", "REVISION"],
                rows,
            )
        }
        StagesCommand::Get { api, stage, output } => print_stage(
            output,
            &read_stage(admin, &api, &stage, output.consistency()).await?,
        ),
        StagesCommand::Update {
            api,
            stage,
            vars,
            unset,
            description,
            output,
        } => {
            let mut current = get_stage(admin, &api, &stage).await?;
            for (name, value) in vars {
                current.variables.insert(name, value);
            }
            for name in unset {
                current.variables.remove(&name);
            }
            if let Some(description) = description {
                current.description = description;
            }
            print_stage(output, &update_stage(admin, current).await?)
        }
    }
}

async fn canary(admin: &mut Admin, command: CanaryCommand) -> anyhow::Result<()> {
    match command {
        CanaryCommand::Set {
            api,
            stage,
            deployment,
            percent,
            overrides,
            use_stage_cache,
            sticky_key,
            output,
        } => {
            let mut current = get_stage(admin, &api, &stage).await?;
            current.canary = Some(CanarySettings {
                deployment_id: deployment,
                percent_traffic: percent,
                stage_variable_overrides: overrides.into_iter().collect(),
                use_stage_cache,
                sticky_key,
            });
            print_stage(output, &update_stage(admin, current).await?)
        }
        CanaryCommand::Promote { api, stage, output } => {
            let stage = admin
                .promote_canary(PromoteCanaryRequest {
                    api,
                    stage,
                    expected_revision: 0,
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_stage(output, &stage)
        }
        CanaryCommand::Clear { api, stage, output } => {
            let mut current = get_stage(admin, &api, &stage).await?;
            current.canary = None;
            print_stage(output, &update_stage(admin, current).await?)
        }
    }
}

async fn usage(admin: &mut Admin, command: UsageCommand) -> anyhow::Result<()> {
    let (report, output) = match command {
        UsageCommand::Get { plan, key, output } => (
            admin
                .get_usage(GetUsageRequest {
                    usage_plan: plan,
                    api_key_id: key.unwrap_or_default(),
                })
                .await,
            output,
        ),
        UsageCommand::Reset { plan, key, output } => (
            admin
                .reset_usage(ResetUsageRequest {
                    usage_plan: plan,
                    api_key_id: key.unwrap_or_default(),
                })
                .await,
            output,
        ),
    };
    let report = report.map_err(explain)?.into_inner();
    let rows = report
        .keys
        .iter()
        .map(|k| {
            vec![
                k.api_key_id.clone(),
                k.used.to_string(),
                k.remaining.to_string(),
                report.limit.to_string(),
                time(report.period_end.as_ref()),
            ]
        })
        .collect();
    print(
        output.format,
        &report,
        &["KEY", "USED", "REMAINING", "LIMIT", "PERIOD ENDS"],
        rows,
    )
}

async fn cluster(admin: &mut Admin, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { output } => {
            let status = admin
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            if output.format == output::Format::Table {
                let id = if status.cluster_id.is_empty() {
                    "(not named yet: no leader has been elected)"
                } else {
                    status.cluster_id.as_str()
                };
                println!("cluster {id}");
            }
            let rows = status
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node_id.to_string(),
                        m.raft_address.clone(),
                        m.role.clone(),
                        m.term.to_string(),
                        m.leader_id.to_string(),
                        m.commit_index.to_string(),
                        m.applied_index.to_string(),
                        m.config_version.to_string(),
                        m.error.clone(),
                    ]
                })
                .collect();
            print(
                output.format,
                &status,
                &[
                    "NODE",
                    "RAFT ADDRESS",
                    "ROLE",
                    "TERM",
                    "LEADER",
                    "COMMIT",
                    "APPLIED",
                    "CONFIG",
                    "ERROR",
                ],
                rows,
            )
        }
        ClusterCommand::Join {
            node_id,
            raft_address,
        } => {
            admin
                .add_member(AddMemberRequest {
                    node_id,
                    raft_address,
                })
                .await
                .map_err(explain)?;
            println!("node {node_id} added");
            Ok(())
        }
        ClusterCommand::Leave { node_id } => {
            admin
                .remove_member(RemoveMemberRequest { node_id })
                .await
                .map_err(explain)?;
            println!("node {node_id} removed");
            Ok(())
        }
    }
}

/// Resources `apply` manages: what the control plane sets can be cleared so a
/// file and a stored resource compare.
trait Stored: PartialEq + Clone {
    /// Clears the output-only fields and returns the revision they held.
    fn strip(&mut self) -> u64;
}

macro_rules! stored {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn strip(&mut self) -> u64 {
                self.created_at = None;
                self.updated_at = None;
                std::mem::take(&mut self.revision)
            }
        }
    )*};
}
stored!(config::Api, config::UsagePlan, config::DomainName);

impl Stored for config::Stage {
    fn strip(&mut self) -> u64 {
        self.created_at = None;
        self.updated_at = None;
        // Moved only by flushes; a file does not set it.
        self.cache_generation = 0;
        std::mem::take(&mut self.revision)
    }
}

enum Decision {
    Create,
    Unchanged,
    Update { expected_revision: u64 },
}

/// Create, update (at the revision read) or leave alone.
fn decide<T: Stored>(
    desired: &T,
    current: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<Decision> {
    match current {
        Ok(current) => {
            let mut current = current.into_inner();
            let expected_revision = current.strip();
            if current == *desired {
                Ok(Decision::Unchanged)
            } else {
                Ok(Decision::Update { expected_revision })
            }
        }
        Err(status) if status.code() == Code::NotFound => Ok(Decision::Create),
        Err(status) => Err(explain(status)),
    }
}

async fn apply(admin: &mut Admin, file: &PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let resources = parse_documents(&text).with_context(|| format!("{}", file.display()))?;
    if resources.is_empty() {
        bail!("{}: no resources", file.display());
    }
    for resource in resources {
        let (what, decision) = match resource.kind {
            None => bail!("a document names no resource kind (api, stage, apiKey, usagePlan, domainName)"),
            Some(Kind::Api(api)) => {
                // Compare in the normalized form the control plane stores.
                let desired = ApiDefinition::validate(api.clone())
                    .map(|d| d.into_proto())
                    .unwrap_or(api);
                let current = admin
                    .get_api(GetApiRequest {
                        name: desired.name.clone(),
                        ..Default::default()
                    })
                    .await;
                let decision = decide(&desired, current)?;
                let what = format!("API {}", desired.name);
                match decision {
                    Decision::Create => {
                        admin
                            .create_api(CreateApiRequest { api: Some(desired) })
                            .await
                            .map_err(explain)?;
                    }
                    Decision::Update { expected_revision } => {
                        let request = UpdateApiRequest {
                            api: Some(desired),
                            expected_revision,
                        };
                        admin.update_api(request).await.map_err(explain)?;
                    }
                    Decision::Unchanged => {}
                }
                (what, decision)
            }
            Some(Kind::Stage(stage)) => apply_stage(admin, stage).await?,
            Some(Kind::UsagePlan(plan)) => {
                let request = GetUsagePlanRequest {
                    name: plan.name.clone(),
                    ..Default::default()
                };
                let decision = decide(&plan, admin.get_usage_plan(request).await)?;
                let what = format!("usage plan {}", plan.name);
                match decision {
                    Decision::Create => {
                        let request = CreateUsagePlanRequest {
                            usage_plan: Some(plan),
                        };
                        admin.create_usage_plan(request).await.map_err(explain)?;
                    }
                    Decision::Update { expected_revision } => {
                        let request = UpdateUsagePlanRequest {
                            usage_plan: Some(plan),
                            expected_revision,
                        };
                        admin.update_usage_plan(request).await.map_err(explain)?;
                    }
                    Decision::Unchanged => {}
                }
                (what, decision)
            }
            Some(Kind::DomainName(domain)) => {
                let request = GetDomainNameRequest {
                    name: domain.name.clone(),
                    ..Default::default()
                };
                let decision = decide(&domain, admin.get_domain_name(request).await)?;
                let what = format!("domain name {}", domain.name);
                match decision {
                    Decision::Create => {
                        let request = CreateDomainNameRequest {
                            domain_name: Some(domain),
                        };
                        admin.create_domain_name(request).await.map_err(explain)?;
                    }
                    Decision::Update { expected_revision } => {
                        let request = UpdateDomainNameRequest {
                            domain_name: Some(domain),
                            expected_revision,
                        };
                        admin.update_domain_name(request).await.map_err(explain)?;
                    }
                    Decision::Unchanged => {}
                }
                (what, decision)
            }
            Some(Kind::ApiKey(key)) => {
                apply_api_key(admin, key).await?;
                continue;
            }
        };
        match decision {
            Decision::Create => println!("{what} created"),
            Decision::Update { .. } => println!("{what} configured"),
            Decision::Unchanged => println!("{what} unchanged"),
        }
    }
    Ok(())
}

/// The stages of `api`: all pages, or the one `paging` asks for.
async fn stages_of(
    admin: &mut Admin,
    api: &str,
    consistency: i32,
    paging: &PageArgs,
) -> anyhow::Result<Vec<config::Stage>> {
    list_all(paging, |page| {
        let (mut admin, api) = (admin.clone(), api.to_owned());
        async move {
            let list = admin
                .list_stages(ListStagesRequest {
                    api,
                    page: Some(page),
                    consistency,
                })
                .await?
                .into_inner();
            Ok((list.stages, list.next_page_token))
        }
    })
    .await
}

/// API keys in a file are matched by name; a new key's value is printed once.
async fn apply_api_key(admin: &mut Admin, key: config::ApiKey) -> anyhow::Result<()> {
    // Matched by name over every key, not the first page.
    let keys = list_all(&PageArgs::default(), |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_api_keys(ListApiKeysRequest {
                    page: Some(page),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((list.api_keys, list.next_page_token))
        }
    })
    .await?;
    let mut named = keys.into_iter().filter(|k| k.name == key.name);
    let existing = named.next();
    if named.next().is_some() {
        bail!(
            "api_key {:?}: several API keys have this name, so apply cannot tell which to update; delete the extra ones (DeleteApiKey) first",
            key.name
        );
    }
    match existing {
        Some(current) => {
            let updated = config::ApiKey {
                id: current.id.clone(),
                ..key
            };
            let request = UpdateApiKeyRequest {
                api_key: Some(updated),
                expected_revision: current.revision,
            };
            admin.update_api_key(request).await.map_err(explain)?;
            println!("API key {} ({}) configured", current.name, current.id);
        }
        None => {
            let request = CreateApiKeyRequest {
                api_key: Some(key),
                value: String::new(),
            };
            let created = admin.create_api_key(request).await.map_err(explain)?.into_inner();
            let id = created.api_key.map(|k| k.id).unwrap_or_default();
            println!(
                "API key {id} created; its value is shown only now: {}",
                created.value
            );
        }
    }
    Ok(())
}

/// Applying a stage sets its variables and settings; which deployment it
/// serves (and its canary) change only when the file says so — that is what
/// `deploy`, `canary` and `rollback` are for.
async fn apply_stage(admin: &mut Admin, mut stage: config::Stage) -> anyhow::Result<(String, Decision)> {
    let what = format!("stage {}/{}", stage.api, stage.name);
    let request = GetStageRequest {
        api: stage.api.clone(),
        name: stage.name.clone(),
        ..Default::default()
    };
    let current = admin.get_stage(request).await;
    if let Ok(current) = &current {
        let current = current.get_ref();
        if stage.deployment_id.is_empty() {
            stage.deployment_id = current.deployment_id.clone();
        }
        if stage.canary.is_none() {
            stage.canary = current.canary.clone();
        }
    }
    let decision = decide(&stage, current)?;
    match decision {
        Decision::Create => {
            admin
                .create_stage(CreateStageRequest { stage: Some(stage) })
                .await
                .map_err(explain)?;
        }
        Decision::Update { expected_revision } => {
            let request = UpdateStageRequest {
                stage: Some(stage),
                expected_revision,
            };
            admin.update_stage(request).await.map_err(explain)?;
        }
        Decision::Unchanged => {}
    }
    Ok((what, decision))
}
