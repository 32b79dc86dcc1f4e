//! Usage plans and custom domain names: `list | get | delete` through one
//! flow ([`named()`]), `create | update` from flags; quota usage per key.

use super::*;

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

pub(super) fn api_stage(text: &str, flag: &str) -> anyhow::Result<(String, String)> {
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

/// How the CLI reads, shows and deletes one kind of named resource.
pub(super) struct Named<T, L, G, D> {
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
pub(super) async fn named<T, L, LF, G, GF, D, DF>(
    command: NamedCommand,
    verbs: Named<T, L, G, D>,
) -> anyhow::Result<()>
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
            outln!("{noun} {name} deleted");
            Ok(())
        }
    }
}

pub(super) fn plan_row(p: &config::UsagePlan) -> Vec<String> {
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

pub(super) const PLAN_HEADER: &[&str] = &["NAME", "STAGES", "KEYS", "REVISION", "UPDATED"];

pub(super) async fn usage_plans(admin: &mut Admin, command: UsagePlansCommand) -> anyhow::Result<()> {
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

pub(super) fn domain_row(d: &config::DomainName) -> Vec<String> {
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

pub(super) const DOMAIN_HEADER: &[&str] = &["NAME", "MAPPINGS", "MUTUAL TLS", "REVISION", "UPDATED"];

pub(super) async fn domains(admin: &mut Admin, command: DomainsCommand) -> anyhow::Result<()> {
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

pub(super) async fn usage(admin: &mut Admin, command: UsageCommand) -> anyhow::Result<()> {
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
