//! `pylon apply -f FILE`: create or update what a file describes.

use super::*;

/// Resources `apply` manages: what the control plane sets can be cleared so a
/// file and a stored resource compare.
pub(super) trait Stored: PartialEq + Clone {
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

pub(super) enum Decision {
    Create,
    Unchanged,
    Update { expected_revision: u64 },
}

/// Create, update (at the revision read) or leave alone.
pub(super) fn decide<T: Stored>(
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

pub(super) async fn apply(admin: &mut Admin, file: &PathBuf) -> anyhow::Result<()> {
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
pub(super) async fn stages_of(
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
pub(super) async fn apply_api_key(admin: &mut Admin, key: config::ApiKey) -> anyhow::Result<()> {
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
pub(super) async fn apply_stage(
    admin: &mut Admin,
    mut stage: config::Stage,
) -> anyhow::Result<(String, Decision)> {
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
