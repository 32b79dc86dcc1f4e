//! Deployments, stages, canaries and the stage cache: releasing a change.

use super::*;

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

pub(super) fn print_stage(output: OutputArgs, stage: &config::Stage) -> anyhow::Result<()> {
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

pub(super) async fn get_stage(admin: &mut Admin, api: &str, stage: &str) -> anyhow::Result<config::Stage> {
    read_stage(admin, api, stage, ReadConsistency::Linearizable as i32).await
}

pub(super) async fn read_stage(
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

pub(super) async fn update_stage(admin: &mut Admin, stage: config::Stage) -> anyhow::Result<config::Stage> {
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

pub(super) async fn stages(admin: &mut Admin, command: StagesCommand) -> anyhow::Result<()> {
    match command {
        StagesCommand::List { api, output, paging } => {
            let stages = stages_of(admin, &api, output.consistency(), &paging, MissingApi::Refused).await?;
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

pub(super) async fn canary(admin: &mut Admin, command: CanaryCommand) -> anyhow::Result<()> {
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
