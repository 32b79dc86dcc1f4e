//! APIs and the authorizers in their definitions.

use super::*;

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

pub(super) async fn authorizers(admin: &mut Admin, command: AuthorizersCommand) -> anyhow::Result<()> {
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
            outln!(
                "authorizer {name} removed from API {} (deploy to apply it)",
                api.name
            );
            Ok(())
        }
    }
}

pub(super) async fn apis(admin: &mut Admin, command: ApisCommand) -> anyhow::Result<()> {
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
                outln!(
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
            outln!("deleted API {name}");
            Ok(())
        }
    }
}

pub(super) fn protocol(value: i32) -> String {
    config::api::Protocol::try_from(value)
        .map(|p| p.as_str_name().to_owned())
        .unwrap_or_default()
}
