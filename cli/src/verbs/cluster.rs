//! The cluster: members, data-plane nodes, the audit log, backups.

use super::*;

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

pub(super) async fn audit(admin: &mut Admin, output: OutputArgs, paging: PageArgs) -> anyhow::Result<()> {
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

pub(super) async fn nodes(admin: &mut Admin, local: bool, output: OutputArgs) -> anyhow::Result<()> {
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

pub(super) async fn cluster(admin: &mut Admin, command: ClusterCommand) -> anyhow::Result<()> {
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
                outln!("cluster {id}");
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
            outln!("node {node_id} added");
            Ok(())
        }
        ClusterCommand::Leave { node_id } => {
            admin
                .remove_member(RemoveMemberRequest { node_id })
                .await
                .map_err(explain)?;
            outln!("node {node_id} removed");
            Ok(())
        }
    }
}

/// What a backup file starts with: 12 bytes of magic and the layout as a
/// big-endian u32; the `Backup` message follows.
const BACKUP_MAGIC: &[u8; 12] = b"PYLON-BACKUP";

pub(super) async fn backup(admin: &mut Admin, file: &std::path::Path) -> anyhow::Result<()> {
    use prost::Message as _;
    let backup = admin
        .export_backup(ExportBackupRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let mut bytes = Vec::with_capacity(16 + backup.encoded_len());
    bytes.extend_from_slice(BACKUP_MAGIC);
    bytes.extend_from_slice(&backup.format.to_be_bytes());
    backup.encode(&mut bytes)?;
    if file == std::path::Path::new("-") {
        crate::output::write_out_bytes(&bytes);
        eprintln!("{}", describe(&backup, bytes.len(), "standard output"));
        return Ok(());
    }
    if file.is_dir() {
        bail!("{} is a directory: name the backup file", file.display());
    }
    // Written beside FILE and renamed over it: a reader never sees half a
    // backup. Only the owner may read it (it holds API key digests).
    let mut name = file
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".partial");
    let partial = file.with_file_name(name);
    let written = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut out = options.open(&partial)?;
        out.write_all(&bytes)?;
        out.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error).with_context(|| format!("{}", partial.display()));
    }
    if let Err(error) = std::fs::rename(&partial, file) {
        let _ = std::fs::remove_file(&partial);
        return Err(error).with_context(|| format!("{}", file.display()));
    }
    outln!("{}", describe(&backup, bytes.len(), &file.display().to_string()));
    Ok(())
}

/// What a backup holds, for people.
fn describe(backup: &Backup, bytes: usize, to: &str) -> String {
    format!(
        "backup of cluster {} at config version {}: {} APIs, {} deployments, {} stages, {} API keys, {} usage plans, {} domain names, {} portal consumers ({bytes} bytes) -> {to}",
        if backup.cluster_id.is_empty() {
            "(unnamed)"
        } else {
            &backup.cluster_id
        },
        backup.config_version,
        backup.apis.len(),
        backup.deployments.len(),
        backup.stages.len(),
        backup.api_keys.len(),
        backup.usage_plans.len(),
        backup.domain_names.len(),
        backup.consumers.len(),
    )
}

pub(super) async fn restore(admin: &mut Admin, file: &std::path::Path, replace: bool) -> anyhow::Result<()> {
    use prost::Message as _;
    let bytes = if file == std::path::Path::new("-") {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        bytes
    } else {
        std::fs::read(file).with_context(|| format!("{}", file.display()))?
    };
    let Some(body) = bytes.strip_prefix(BACKUP_MAGIC.as_slice()) else {
        bail!(
            "{} is not a Pylon backup (written by `pylon backup`)",
            file.display()
        );
    };
    let Some((format, body)) = body.split_first_chunk::<4>() else {
        bail!("{} is cut short", file.display());
    };
    let format = u32::from_be_bytes(*format);
    let backup = Backup::decode(body).with_context(|| format!("{}: damaged", file.display()))?;
    if backup.format != format {
        bail!(
            "{}: damaged (the header says layout {format}, the body {})",
            file.display(),
            backup.format
        );
    }
    let restored = admin
        .restore_backup(RestoreBackupRequest {
            backup: Some(backup),
            replace,
        })
        .await
        .map_err(explain)?
        .into_inner();
    outln!(
        "restored {} APIs, {} deployments, {} stages, {} API keys, {} usage plans, {} domain names, {} portal consumers at config version {}",
        restored.apis,
        restored.deployments,
        restored.stages,
        restored.api_keys,
        restored.usage_plans,
        restored.domain_names,
        restored.consumers,
        restored.config_version
    );
    Ok(())
}
