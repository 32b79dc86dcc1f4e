//! `pylon import openapi FILE`: an AWS API Gateway export (OpenAPI 3.x or
//! Swagger 2.0, JSON or YAML) imported through the admin API's `ImportApi`,
//! which converts it on the control plane, so automation calling the RPC
//! gets the same result.

use super::*;
use apply::{Decision, decide};

#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// Import an OpenAPI 3.x / Swagger 2.0 document with AWS's
    /// x-amazon-apigateway-* extensions as an API (created, or updated when
    /// it exists). Prints what became of every construct; a document with
    /// anything Pylon cannot express is refused as a whole, naming each.
    Openapi {
        file: PathBuf,
        /// The API's name (default: the document's title as a DNS label).
        #[arg(long)]
        api: Option<String>,
        /// Deploy the imported API to this stage (created if missing); with
        /// --deploy.
        #[arg(long, requires = "deploy")]
        stage: Option<String>,
        /// Deploy after importing (needs --stage).
        #[arg(long, requires = "stage")]
        deploy: bool,
        /// Convert and report only; nothing is stored. With -o yaml the API is
        /// printed as a file `pylon apply -f` takes.
        #[arg(long)]
        dry_run: bool,
        /// Replace the definition of an existing API of that name (AWS:
        /// put-rest-api --mode overwrite). Without it, an import only
        /// creates.
        #[arg(long)]
        overwrite: bool,
        /// A CloudFormation parameter or placeholder: `Ref X`, `${X}`,
        /// `Fn::GetAtt R.A` (as NAME `R.A`). Repeatable.
        #[arg(long = "set-var", value_name = "NAME=VALUE", value_parser = parse_pair)]
        variables: Vec<(String, String)>,
        /// The URL that serves a Lambda function (its integrations and
        /// authorizers). Repeatable.
        #[arg(long = "lambda-url", value_name = "FUNCTION=URL", value_parser = parse_pair)]
        lambda_urls: Vec<(String, String)>,
        /// The URL that serves an AWS service integration, named by its URI
        /// ARN or its action (`PutRecord`). Repeatable.
        #[arg(long = "service-url", value_name = "ARN_OR_ACTION=URL", value_parser = parse_pair)]
        service_urls: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(super) async fn import(admin: &mut Admin, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Openapi {
        file,
        api,
        stage,
        deploy,
        dry_run,
        overwrite,
        variables,
        lambda_urls,
        service_urls,
        output,
    } = command;
    let document = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    let mut request = ImportApiRequest {
        document,
        api: api.unwrap_or_default(),
        variables: variables.into_iter().collect(),
        lambda_urls: lambda_urls.into_iter().collect(),
        service_urls: service_urls.into_iter().collect(),
        dry_run: true,
        expected_revision: 0,
    };
    // Convert first: the API's name (from the title) tells whether it exists.
    let converted = admin
        .import_api(request.clone())
        .await
        .map_err(explain)?
        .into_inner();
    let desired = converted.api.clone().unwrap_or_default();
    if dry_run {
        return report(output.format, &converted, "dry run: nothing stored");
    }
    let current = admin
        .get_api(GetApiRequest {
            name: desired.name.clone(),
            ..Default::default()
        })
        .await;
    let (stored, what) = match decide(&desired, current)? {
        Decision::Unchanged => (converted, format!("API {} unchanged", desired.name)),
        decision => {
            let verb = match decision {
                Decision::Update { expected_revision } => {
                    if !overwrite {
                        bail!(
                            "API {} already exists (revision {expected_revision}) with another definition: give --overwrite to replace it with the document's, or --api NAME to import it as another API",
                            desired.name
                        );
                    }
                    request.expected_revision = expected_revision;
                    "updated"
                }
                _ => "created",
            };
            request.api = desired.name.clone();
            request.dry_run = false;
            let stored = admin.import_api(request).await.map_err(explain)?.into_inner();
            let revision = stored.api.as_ref().map_or(0, |a| a.revision);
            (
                stored,
                format!("API {} {verb} (revision {revision})", desired.name),
            )
        }
    };
    let mut summary = what;
    if deploy && let Some(stage) = stage {
        let deployment = admin
            .create_deployment(CreateDeploymentRequest {
                api: desired.name.clone(),
                description: format!("imported from {}", file.display()),
                stage: stage.clone(),
            })
            .await
            .map_err(explain)?
            .into_inner();
        summary.push_str(&format!("; deployed as {} to stage {stage}", deployment.id));
    }
    report(output.format, &stored, &summary)
}

/// The report: a line per construct (refusals never reach here: the call
/// failed with them), then the summary; `-o json` the API and the notes;
/// `-o yaml` the API as an `apply` file, the report on stderr.
fn report(format: output::Format, response: &ImportApiResponse, summary: &str) -> anyhow::Result<()> {
    let lines = || {
        let mut text = String::new();
        for outcome in ["approximated", "mapped"] {
            for note in response.notes.iter().filter(|n| n.outcome == outcome) {
                text.push_str(&format!("{:<12} {}: {}\n", note.outcome, note.path, note.detail));
            }
        }
        let count = |o: &str| response.notes.iter().filter(|n| n.outcome == o).count();
        text.push_str(&format!(
            "{} mapped, {} approximated; {summary}\n",
            count("mapped"),
            count("approximated")
        ));
        text
    };
    match format {
        output::Format::Table => out!("{}", lines()),
        output::Format::Json => {
            let value = serde_json::json!({"api": response.api, "notes": response.notes});
            outln!("{}", serde_json::to_string_pretty(&value)?);
        }
        output::Format::Yaml => {
            let mut api = response.api.clone().unwrap_or_default();
            api.revision = 0;
            api.created_at = None;
            api.updated_at = None;
            let resource = config::Resource {
                kind: Some(Kind::Api(api)),
            };
            out!("{}", serde_norway::to_string(&serde_json::to_value(&resource)?)?);
            eprint!("{}", lines());
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ExportCommand {
    /// An API as an OpenAPI 3.0.3 document carrying Pylon's definition
    /// (x-pylon-* extensions): `pylon import openapi` gives the same API back.
    Openapi {
        api: String,
        /// The deployment this stage serves instead of the current definition.
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, value_parser = ["yaml", "json"], default_value = "yaml")]
        format: String,
        /// Also write AWS's x-amazon-apigateway-* extensions where they exist.
        #[arg(long)]
        aws_extensions: bool,
    },
}

pub(super) async fn export(admin: &mut Admin, command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::Openapi {
        api,
        stage,
        format,
        aws_extensions,
    } = command;
    let document = admin
        .get_export(GetExportRequest {
            api,
            stage: stage.unwrap_or_default(),
            aws_extensions,
            format,
            consistency: ReadConsistency::Linearizable as i32,
        })
        .await
        .map_err(explain)?
        .into_inner()
        .document;
    out!("{document}");
    if !document.ends_with('\n') {
        outln!();
    }
    Ok(())
}
