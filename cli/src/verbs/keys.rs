//! API keys: the plain value is printed once, at creation.

use super::*;

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

pub(super) async fn keys(admin: &mut Admin, command: KeysCommand) -> anyhow::Result<()> {
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
            outln!("API key {} ({}) created", key.name, key.id);
            outln!("value: {}", created.value);
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
            outln!(
                "API key {} ({}) updated, revision {}",
                updated.name,
                updated.id,
                updated.revision
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
            outln!("API key {id} deleted");
            Ok(())
        }
    }
}
