//! Declarative configuration: `apply` (create and change what files
//! describe), `diff` (what apply would do, field by field), `sync`
//! (`--prune`: also delete what the files do not describe) and `dump`
//! (every resource as files those verbs take).
//!
//! Files are read whole first (a file, or every `.yaml`/`.yml`/`.json`
//! under a directory, in name order), compared with the cluster's
//! resources read once, and every change goes in **one `ApplyBatch` call**:
//! one Raft entry, applied all or none, each change at the revision that
//! was read — a concurrent change makes the batch fail instead of being
//! lost. API keys are the exception: their secret is made by
//! `CreateApiKey`, so they are created or changed (matched by name) before
//! the batch, and never deleted by `sync`.

use super::*;
use apply::Stored;
use futures::StreamExt as _;
use pylon_common::model::{DomainNameConfig, StageConfig, UsagePlanConfig};
use pylon_proto::raft::v1::{ResourceRef, resource_ref};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Files of resources: every document of a file, or of every `.yaml`,
/// `.yml` and `.json` file under a directory (recursively, in path order).
///
/// # Errors
/// A file that cannot be read or parsed (named), or no resources at all.
pub(super) fn load(path: &Path) -> anyhow::Result<Vec<config::Resource>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    files.sort();
    let mut resources = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        let found = parse_documents(&text).with_context(|| format!("{}", file.display()))?;
        for resource in found {
            if resource.kind.is_none() {
                bail!(
                    "{}: a document names no resource kind (api, stage, apiKey, usagePlan, domainName)",
                    file.display()
                );
            }
            resources.push(resource);
        }
    }
    if resources.is_empty() {
        bail!("{}: no resources", path.display());
    }
    Ok(resources)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !path.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
        let entry = entry?.path();
        // Hidden entries (.git, .github/…) are not configuration.
        if entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

/// The cluster's resources that files describe.
#[derive(Default)]
pub(super) struct Current {
    apis: BTreeMap<String, config::Api>,
    stages: BTreeMap<(String, String), config::Stage>,
    plans: BTreeMap<String, config::UsagePlan>,
    domains: BTreeMap<String, config::DomainName>,
}

/// Reads every API, stage, usage plan and domain name. The first read is
/// linearizable; the rest read the same node without another barrier (it
/// has applied at least as much by then), in parallel for the stages.
pub(super) async fn current(admin: &mut Admin) -> anyhow::Result<Current> {
    let linearizable = ReadConsistency::Linearizable as i32;
    let stale = ReadConsistency::Stale as i32;
    let apis = list_all(&PageArgs::default(), |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_apis(ListApisRequest {
                    page: Some(page),
                    consistency: linearizable,
                })
                .await?
                .into_inner();
            Ok((list.apis, list.next_page_token))
        }
    })
    .await?;
    let stage_lists = futures::stream::iter(apis.iter().map(|api| {
        let mut admin = admin.clone();
        let name = api.name.clone();
        // (Stale reads: an API just listed may not have reached the node
        // answering yet, or may be deleted since.)
        async move { stages_of(&mut admin, &name, stale, &PageArgs::default(), MissingApi::Empty).await }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    let plans = list_all(&PageArgs::default(), |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_usage_plans(ListUsagePlansRequest {
                    page: Some(page),
                    consistency: stale,
                })
                .await?
                .into_inner();
            Ok((list.usage_plans, list.next_page_token))
        }
    })
    .await?;
    let domains = list_all(&PageArgs::default(), |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_domain_names(ListDomainNamesRequest {
                    page: Some(page),
                    consistency: stale,
                })
                .await?
                .into_inner();
            Ok((list.domain_names, list.next_page_token))
        }
    })
    .await?;
    let mut current = Current::default();
    for list in stage_lists {
        for stage in list? {
            current
                .stages
                .insert((stage.api.clone(), stage.name.clone()), stage);
        }
    }
    current.apis = apis.into_iter().map(|a| (a.name.clone(), a)).collect();
    current.plans = plans.into_iter().map(|p| (p.name.clone(), p)).collect();
    current.domains = domains.into_iter().map(|d| (d.name.clone(), d)).collect();
    Ok(current)
}

/// One change the files call for.
pub(super) enum Planned {
    Create {
        what: String,
        resource: config::Resource,
    },
    Update {
        what: String,
        resource: config::Resource,
        expected_revision: u64,
        /// Each changed field: `path: old → new`.
        fields: Vec<String>,
    },
    Delete {
        what: String,
        target: ResourceRef,
        expected_revision: u64,
    },
}

impl Planned {
    fn line(&self) -> String {
        match self {
            Planned::Create { what, .. } => format!("+ {what}"),
            Planned::Update {
                what,
                expected_revision,
                ..
            } => format!("~ {what} (revision {expected_revision})"),
            Planned::Delete { what, .. } => format!("- {what}"),
        }
    }

    fn change(&self) -> BatchChange {
        let (change, expected_revision) = match self {
            Planned::Create { resource, .. } => (batch_change::Change::Put(resource.clone()), 0),
            Planned::Update {
                resource,
                expected_revision,
                ..
            } => (batch_change::Change::Put(resource.clone()), *expected_revision),
            Planned::Delete {
                target,
                expected_revision,
                ..
            } => (batch_change::Change::Delete(target.clone()), *expected_revision),
        };
        BatchChange {
            change: Some(change),
            expected_revision,
        }
    }
}

/// What apply (and with `prune`, sync) would change, in the order the
/// batch applies it: APIs, stages, usage plans, domain names; then deletes
/// the other way round. `unchanged` gets the resources already as described.
pub(super) fn plan(
    desired: &[config::Resource],
    current: &Current,
    prune: bool,
    unchanged: &mut Vec<String>,
) -> anyhow::Result<Vec<Planned>> {
    let mut apis = Vec::new();
    let mut stages = Vec::new();
    let mut plans = Vec::new();
    let mut domains = Vec::new();
    for resource in desired {
        match &resource.kind {
            Some(Kind::Api(api)) => apis.push(api.clone()),
            Some(Kind::Stage(stage)) => stages.push(stage.clone()),
            Some(Kind::UsagePlan(plan)) => plans.push(plan.clone()),
            Some(Kind::DomainName(domain)) => domains.push(domain.clone()),
            Some(Kind::ApiKey(_)) | None => {}
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (what, key) in apis
        .iter()
        .map(|a| (format!("API {}", a.name), a.name.clone()))
        .chain(stages.iter().map(|s| {
            (
                format!("stage {}/{}", s.api, s.name),
                format!("{}/{}", s.api, s.name),
            )
        }))
        .chain(
            plans
                .iter()
                .map(|p| (format!("usage plan {}", p.name), p.name.clone())),
        )
        .chain(
            domains
                .iter()
                .map(|d| (format!("domain name {}", d.name), d.name.clone())),
        )
    {
        if !seen.insert((what.split(' ').next().unwrap_or("").to_owned(), key)) {
            bail!("{what} is described twice");
        }
    }

    let mut out = Vec::new();
    for api in apis {
        // Compared in the normalised form the control plane stores.
        let desired = ApiDefinition::validate(api.clone())
            .map(|d| d.into_proto())
            .unwrap_or(api);
        let what = format!("API {}", desired.name);
        let stored = current.apis.get(&desired.name);
        compare(what, desired, stored, Kind::Api, unchanged, &mut out);
    }
    for mut stage in stages {
        let stored = current.stages.get(&(stage.api.clone(), stage.name.clone()));
        // Which deployment a stage serves (and its canary) changes only when
        // the file says so: `deploy`, `canary` and `rollback` move it.
        if let Some(stored) = stored {
            if stage.deployment_id.is_empty() {
                stage.deployment_id = stored.deployment_id.clone();
            }
            if stage.canary.is_none() {
                stage.canary = stored.canary.clone();
            }
        }
        let stage = StageConfig::validate(stage.clone())
            .map(|s| s.into_proto())
            .unwrap_or(stage);
        let what = format!("stage {}/{}", stage.api, stage.name);
        compare(what, stage, stored, Kind::Stage, unchanged, &mut out);
    }
    for plan_ in plans {
        let plan_ = UsagePlanConfig::validate(plan_.clone())
            .map(|p| p.into_proto())
            .unwrap_or(plan_);
        let what = format!("usage plan {}", plan_.name);
        compare(
            what,
            plan_.clone(),
            current.plans.get(&plan_.name),
            Kind::UsagePlan,
            unchanged,
            &mut out,
        );
    }
    for domain in domains {
        let domain = DomainNameConfig::validate(domain.clone())
            .map(|d| d.into_proto())
            .unwrap_or(domain);
        let what = format!("domain name {}", domain.name);
        compare(
            what,
            domain.clone(),
            current.domains.get(&domain.name),
            Kind::DomainName,
            unchanged,
            &mut out,
        );
    }
    if prune {
        let described = |kind: &str, key: &str| seen.contains(&(kind.to_owned(), key.to_owned()));
        let target = |kind: resource_ref::Kind, api: &str, name: &str| ResourceRef {
            kind: kind as i32,
            api: api.to_owned(),
            name: name.to_owned(),
        };
        for (name, domain) in &current.domains {
            if !described("domain", name) {
                out.push(Planned::Delete {
                    what: format!("domain name {name}"),
                    target: target(resource_ref::Kind::DomainName, "", name),
                    expected_revision: domain.revision,
                });
            }
        }
        for (name, plan_) in &current.plans {
            if !described("usage", name) {
                out.push(Planned::Delete {
                    what: format!("usage plan {name}"),
                    target: target(resource_ref::Kind::UsagePlan, "", name),
                    expected_revision: plan_.revision,
                });
            }
        }
        for ((api, name), stage) in &current.stages {
            // A stage of an API that goes too goes with it.
            if !described("stage", &format!("{api}/{name}")) && described("API", api) {
                out.push(Planned::Delete {
                    what: format!("stage {api}/{name}"),
                    target: target(resource_ref::Kind::Stage, api, name),
                    expected_revision: stage.revision,
                });
            }
        }
        for (name, api) in &current.apis {
            if !described("API", name)
                && let Some(stage) = seen
                    .iter()
                    .find(|(kind, key)| kind == "stage" && key.split('/').next() == Some(name.as_str()))
            {
                bail!(
                    "stage {} is described but its API {name} is not, so --prune would delete the API with the stage: describe the API too, or remove the stage's file",
                    stage.1
                );
            }
            if !described("API", name) {
                out.push(Planned::Delete {
                    what: format!("API {name} (with its stages and deployments)"),
                    target: target(resource_ref::Kind::Api, "", name),
                    expected_revision: api.revision,
                });
            }
        }
    }
    Ok(out)
}

/// Create, change (listing the changed fields) or leave alone.
fn compare<T: Stored + serde::Serialize>(
    what: String,
    desired: T,
    stored: Option<&T>,
    kind: fn(T) -> Kind,
    unchanged: &mut Vec<String>,
    out: &mut Vec<Planned>,
) {
    // Output-only fields a file may carry (a `get -o yaml` pasted in) are
    // the control plane's, not a change.
    let mut desired = desired;
    desired.strip();
    match stored {
        None => out.push(Planned::Create {
            what,
            resource: config::Resource {
                kind: Some(kind(desired)),
            },
        }),
        Some(stored) => {
            let mut stored = stored.clone();
            let expected_revision = stored.strip();
            if stored == desired {
                unchanged.push(what);
                return;
            }
            let mut fields = Vec::new();
            let before = serde_json::to_value(&stored).unwrap_or(Value::Null);
            let after = serde_json::to_value(&desired).unwrap_or(Value::Null);
            json_diff(&before, &after, "", &mut fields);
            out.push(Planned::Update {
                what,
                resource: config::Resource {
                    kind: Some(kind(desired)),
                },
                expected_revision,
                fields,
            });
        }
    }
}

/// Every leaf that differs between `before` and `after`, as
/// `path: old → new` (absent values shown as `∅`).
fn json_diff(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                json_diff(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    &join(key),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                json_diff(
                    a.get(i).unwrap_or(&Value::Null),
                    b.get(i).unwrap_or(&Value::Null),
                    &format!("{path}[{i}]"),
                    out,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!(
            "{}: {} → {}",
            if path.is_empty() { "." } else { path },
            short(a),
            short(b)
        )),
    }
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::Null => "∅".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// A change to an API key a file describes (keys are matched by name).
enum KeyChange {
    Create(config::ApiKey),
    Update {
        id: String,
        key: config::ApiKey,
        expected_revision: u64,
        fields: Vec<String>,
    },
}

async fn all_keys(admin: &mut Admin) -> anyhow::Result<Vec<config::ApiKey>> {
    list_all(&PageArgs::default(), |page| {
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
    .await
}

/// The API keys the files describe against the stored ones: only their
/// name, description and enabled flag are compared (never a value).
fn plan_keys(
    desired: &[config::Resource],
    stored: &[config::ApiKey],
    unchanged: &mut Vec<String>,
) -> anyhow::Result<Vec<KeyChange>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for resource in desired {
        let Some(Kind::ApiKey(key)) = &resource.kind else {
            continue;
        };
        if !seen.insert(key.name.clone()) {
            bail!("API key {} is described twice", key.name);
        }
        let mut named = stored.iter().filter(|k| k.name == key.name);
        let current = named.next();
        if named.next().is_some() {
            bail!(
                "api_key {:?}: several API keys have this name, so apply cannot tell which to change; delete the extra ones (DeleteApiKey) first",
                key.name
            );
        }
        let desired = config::ApiKey {
            name: key.name.clone(),
            description: key.description.clone(),
            enabled: key.enabled,
            ..Default::default()
        };
        match current {
            None => out.push(KeyChange::Create(desired)),
            Some(current)
                if current.enabled == desired.enabled && current.description == desired.description =>
            {
                unchanged.push(format!("API key {} ({})", current.name, current.id));
            }
            Some(current) => {
                let mut fields = Vec::new();
                if current.enabled != desired.enabled {
                    fields.push(format!("enabled: {} → {}", current.enabled, desired.enabled));
                }
                if current.description != desired.description {
                    fields.push(format!(
                        "description: {} → {}",
                        short(&Value::from(current.description.clone())),
                        short(&Value::from(desired.description.clone()))
                    ));
                }
                out.push(KeyChange::Update {
                    id: current.id.clone(),
                    key: config::ApiKey {
                        id: current.id.clone(),
                        ..desired
                    },
                    expected_revision: current.revision,
                    fields,
                });
            }
        }
    }
    Ok(out)
}

impl KeyChange {
    fn line(&self) -> String {
        match self {
            KeyChange::Create(key) => format!("+ API key {}", key.name),
            KeyChange::Update { id, key, .. } => format!("~ API key {} ({id})", key.name),
        }
    }
}

/// `apply` (`prune: false`) and `sync` (`prune: true`): the API keys that
/// differ first (their secret is made by `CreateApiKey`), then every other
/// change in one batch.
pub(super) async fn apply(admin: &mut Admin, path: &Path, prune: bool) -> anyhow::Result<()> {
    let desired = load(path)?;
    let mut unchanged = Vec::new();
    let key_changes = plan_keys(&desired, &all_keys(admin).await?, &mut unchanged)?;
    let current = current(admin).await?;
    let planned = plan(&desired, &current, prune, &mut unchanged)?;
    for what in &unchanged {
        outln!("{what} unchanged");
    }
    for change in &key_changes {
        match change {
            KeyChange::Create(key) => {
                let created = admin
                    .create_api_key(CreateApiKeyRequest {
                        api_key: Some(key.clone()),
                        value: String::new(),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                let id = created.api_key.map(|k| k.id).unwrap_or_default();
                outln!(
                    "API key {} ({id}) created; its value is shown only now: {}",
                    key.name,
                    created.value
                );
            }
            KeyChange::Update {
                id,
                key,
                expected_revision,
                ..
            } => {
                admin
                    .update_api_key(UpdateApiKeyRequest {
                        api_key: Some(key.clone()),
                        expected_revision: *expected_revision,
                    })
                    .await
                    .map_err(explain)?;
                outln!("API key {} ({id}) configured", key.name);
            }
        }
    }
    if planned.is_empty() {
        return Ok(());
    }
    let changes = planned.iter().map(Planned::change).collect();
    if let Err(status) = admin.apply_batch(ApplyBatchRequest { changes }).await {
        let what = if key_changes.is_empty() {
            "nothing was changed (the batch is applied all or none)"
        } else {
            "the API keys above were written first; nothing else was changed (the batch is applied all or none)"
        };
        let hint = if status.code() == Code::OutOfRange {
            "; the batch is over the admin API's 4 MiB message limit: apply the files in several parts"
        } else {
            ""
        };
        // `changes[i]` names the change: say which resource it is.
        let culprit = status
            .message()
            .strip_prefix("changes[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .and_then(|i| planned.get(i))
            .map(|p| format!(" (that is {})", p.line().trim_start_matches(['+', '~', '-', ' '])))
            .unwrap_or_default();
        return Err(explain(status)).context(format!("{what}{culprit}{hint}"));
    }
    for change in &planned {
        match change {
            Planned::Create { what, .. } => outln!("{what} created"),
            Planned::Update { what, .. } => outln!("{what} configured"),
            Planned::Delete { what, .. } => outln!("{what} deleted"),
        }
    }
    Ok(())
}

/// `diff`: the changes, field by field, API keys included. Returns whether
/// there are any.
pub(super) async fn diff(admin: &mut Admin, path: &Path, prune: bool) -> anyhow::Result<bool> {
    let desired = load(path)?;
    let mut unchanged = Vec::new();
    let key_changes = plan_keys(&desired, &all_keys(admin).await?, &mut unchanged)?;
    let current = current(admin).await?;
    let planned = plan(&desired, &current, prune, &mut unchanged)?;
    let (mut creates, mut updates, mut deletes) = (0, 0, 0);
    for change in &key_changes {
        outln!("{}", change.line());
        match change {
            KeyChange::Create(_) => creates += 1,
            KeyChange::Update { fields, .. } => {
                updates += 1;
                for field in fields {
                    outln!("    {field}");
                }
            }
        }
    }
    for change in &planned {
        outln!("{}", change.line());
        match change {
            Planned::Create { .. } => creates += 1,
            Planned::Update { fields, .. } => {
                updates += 1;
                for field in fields {
                    outln!("    {field}");
                }
            }
            Planned::Delete { .. } => deletes += 1,
        }
    }
    outln!(
        "{creates} to create, {updates} to change, {deletes} to delete, {} unchanged",
        unchanged.len()
    );
    Ok(!planned.is_empty() || !key_changes.is_empty())
}

/// `dump -o DIR`: every API, stage, usage plan, domain name and API key as
/// files (`apis/NAME.yaml`, `stages/API/STAGE.yaml`, `usage-plans/`,
/// `domain-names/`, `api-keys/`), without output-only fields; API keys by
/// id, name and digest, never their value.
pub(super) async fn dump(admin: &mut Admin, dir: &Path) -> anyhow::Result<()> {
    if dir == Path::new("-") {
        bail!(
            "dump writes a directory of files, one per resource: name a directory (`-` is not standard output here)"
        );
    }
    // A file left from an earlier dump would bring a deleted resource back
    // on `sync --prune`.
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: dump into an empty or new directory (a stale file would bring a deleted resource back on sync --prune)",
            dir.display()
        );
    }
    let current = current(admin).await?;
    let keys = list_all(&PageArgs::default(), |page| {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_api_keys(ListApiKeysRequest {
                    page: Some(page),
                    consistency: ReadConsistency::Stale as i32,
                })
                .await?
                .into_inner();
            Ok((list.api_keys, list.next_page_token))
        }
    })
    .await?;
    let write = |relative: String, kind: Kind| -> anyhow::Result<()> {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
        }
        // Through `serde_json::Value`: keys sorted, so a model's schema
        // (a `HashMap`) is written the same way on every export.
        let resource = serde_json::to_value(config::Resource { kind: Some(kind) })?;
        let text = serde_norway::to_string(&resource)?;
        std::fs::write(&path, text).with_context(|| format!("{}", path.display()))
    };
    let mut count = 0;
    for (name, api) in &current.apis {
        let mut api = api.clone();
        api.strip();
        write(format!("apis/{name}.yaml"), Kind::Api(api))?;
        count += 1;
    }
    for ((api, name), stage) in &current.stages {
        let mut stage = stage.clone();
        stage.strip();
        write(format!("stages/{api}/{name}.yaml"), Kind::Stage(stage))?;
        count += 1;
    }
    for (name, plan_) in &current.plans {
        let mut plan_ = plan_.clone();
        plan_.strip();
        write(format!("usage-plans/{name}.yaml"), Kind::UsagePlan(plan_))?;
        count += 1;
    }
    for (name, domain) in &current.domains {
        let mut domain = domain.clone();
        domain.strip();
        write(format!("domain-names/{name}.yaml"), Kind::DomainName(domain))?;
        count += 1;
    }
    for key in keys {
        // By id and digest (SHA-256 of the value), never the value: a
        // digest cannot call the API, and tells two clusters' keys apart.
        let key = config::ApiKey {
            id: key.id.clone(),
            name: key.name.clone(),
            description: key.description.clone(),
            enabled: key.enabled,
            key_hash: key.key_hash.clone(),
            ..Default::default()
        };
        write(format!("api-keys/{}.yaml", key.id), Kind::ApiKey(key))?;
        count += 1;
    }
    outln!("{count} resources written under {}", dir.display());
    Ok(())
}
