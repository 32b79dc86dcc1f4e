//! Admin verbs for people. Each is a thin call (or a get-then-update with the
//! revision it read) on the admin API, one file per area: [`mod@apis`] (and
//! their authorizers), [`mod@keys`], [`mod@named`] (usage plans, domains, quota
//! usage), [`mod@release`] (deployments, stages, canaries, cache), [`mod@cluster`]
//! (members, data planes, audit log), [`mod@apply`].

use crate::client::{Admin, Connection, explain};
use crate::output::{self, OutputArgs, print, time};
use anyhow::{Context as _, bail};
use pylon_common::model::{ApiDefinition, parse_documents};
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::{self as config, CanarySettings, resource::Kind};

use std::path::PathBuf;
use tonic::Code;

mod apis;
mod apply;
mod cluster;
mod declarative;
mod import;
mod keys;
mod named;
mod release;

use self::{apis::*, apply::*, cluster::*, import::*, keys::*, named::*, release::*};
pub use apis::{ApisCommand, AuthorizersCommand};
pub use cluster::{AuditCommand, ClusterCommand};
pub use import::{ExportCommand, ImportCommand};
pub use keys::KeysCommand;
pub use named::{DomainsCommand, UsageCommand, UsagePlansCommand};
pub use release::{CacheCommand, CanaryCommand, DeploymentsCommand, StagesCommand};

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Create or change what a file (or every .yaml/.yml/.json file under a
    /// directory) describes, in one atomic batch (idempotent).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show what `apply` (with --prune: `sync --prune`) would change, field
    /// by field; exit code 0 when nothing, 2 when something would change.
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Also show what `sync --prune` would delete.
        #[arg(long)]
        prune: bool,
    },
    /// Make the cluster's APIs, stages, usage plans and domain names what the
    /// files describe, in one atomic batch; --prune also deletes those they
    /// do not describe (API keys are never deleted).
    Sync {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long)]
        prune: bool,
    },
    /// Write every API, stage, usage plan, domain name and API key (by id,
    /// never its value) as files `apply`/`sync` take.
    Dump {
        #[arg(short = 'o', long = "output-dir")]
        dir: PathBuf,
    },
    /// Write every resource (deployment history and API key digests
    /// included) to FILE (`-`: standard output), as of a linearizable
    /// point; `restore` takes it.
    Backup {
        #[arg(short = 'o', long = "output")]
        file: PathBuf,
    },
    /// Put a backup's resources (FILE, `-`: standard input) in place, as one
    /// change (all or none). A cluster holding resources is refused unless
    /// --replace.
    Restore {
        file: PathBuf,
        /// Replace what the cluster holds: every resource not in the backup is gone.
        #[arg(long)]
        replace: bool,
    },
    /// Import an AWS API Gateway export (OpenAPI 3 / Swagger 2).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Export an API as OpenAPI 3.
    #[command(subcommand)]
    Export(ExportCommand),
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

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected NAME=VALUE".to_owned())
}

pub async fn run(connection: &Connection, command: AdminCommand) -> anyhow::Result<()> {
    let mut admin = connection.connect().await?;
    match command {
        AdminCommand::Apply { file } => declarative::apply(&mut admin, &file, false).await,
        AdminCommand::Sync { file, prune } => declarative::apply(&mut admin, &file, prune).await,
        AdminCommand::Diff { file, prune } => {
            if declarative::diff(&mut admin, &file, prune).await? {
                // Like diff(1): 2 when there are differences.
                std::process::exit(2);
            }
            Ok(())
        }
        AdminCommand::Dump { dir } => declarative::dump(&mut admin, &dir).await,
        AdminCommand::Backup { file } => backup(&mut admin, &file).await,
        AdminCommand::Restore { file, replace } => restore(&mut admin, &file, replace).await,
        AdminCommand::Apis(command) => apis(&mut admin, command).await,
        AdminCommand::Import(command) => import(&mut admin, command).await,
        AdminCommand::Export(command) => export(&mut admin, command).await,
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
                    Some(percent) => outln!(
                        "deployed {api} as {} to stage {stage} as a {percent}% canary",
                        deployment.id
                    ),
                    None => outln!("deployed {api} as {} to stage {stage}", deployment.id),
                }
                return Ok(());
            }
            print(output.format, &deployment, &[], vec![])
        }
        AdminCommand::Deployments(DeploymentsCommand::List { api, output, paging }) => {
            let consistency = output.consistency();
            let stages = stages_of(
                &mut admin,
                &api,
                consistency,
                &PageArgs::default(),
                MissingApi::Refused,
            )
            .await?;
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
                outln!(
                    "cache of {}/{} flushed (generation {})",
                    stage.api,
                    stage.name,
                    stage.cache_generation
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
