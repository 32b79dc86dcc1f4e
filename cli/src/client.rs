//! Connecting to the admin API: endpoint, bearer token, optional CA.

use anyhow::Context as _;
use pylon_proto::admin::v1::admin_service_client::AdminServiceClient;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

#[derive(clap::Args, Clone)]
pub struct Connection {
    /// Admin API of any control-plane node.
    #[arg(
        long,
        global = true,
        env = "PYLON_ENDPOINT",
        default_value = "http://127.0.0.1:9090"
    )]
    pub endpoint: String,
    /// Bearer token for the admin API.
    #[arg(long, global = true, env = "PYLON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// endpoint.
    #[arg(long, global = true, env = "PYLON_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, Auth>>;

impl Connection {
    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("--endpoint {}", self.endpoint))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30));
        if self.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.endpoint))?;
        let auth = match &self.token {
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .context("--token contains characters not allowed in a header")?,
            ),
            None => None,
        };
        Ok(AdminServiceClient::with_interceptor(channel, Auth(auth)))
    }
}

/// Turns a gRPC error into a one-line message: `NotFound: API pets not found`.
pub fn explain(status: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
