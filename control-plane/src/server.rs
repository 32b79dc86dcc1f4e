//! Wiring one control-plane node: storage, the Raft thread, the peer service
//! on `raft_listen`, and the admin API (+ health, reflection) on `listen`.

use crate::access::{Access, Credentials, Port, Role};
use crate::admin::AdminApi;
use crate::auth::BearerToken;
use crate::publish::{PublishService, Publisher};
use crate::raft::node::{self, NodeOptions, RaftTimers};
use crate::raft::storage::{RocksStorage, StorageFailure};
use crate::raft::transport::{MAX_MESSAGE_BYTES, RaftService, Transport};
use pylon_proto::admin::v1::admin_service_server::AdminServiceServer;
use pylon_proto::publish::v1::config_publisher_server::ConfigPublisherServer;
use pylon_proto::publish::v1::data_plane_directory_server::DataPlaneDirectoryServer;
use pylon_proto::raft::v1::raft_transport_server::RaftTransportServer;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

/// Certificate and key (PEM files) for the admin and peer listeners, and the
/// CA bundle peers' certificates must chain to (default: the certificate itself,
/// for a cluster sharing one self-signed certificate).
///
/// With `client_ca` (mutual TLS), both listeners ask clients for a
/// certificate chaining to it (optional: bearer tokens still work), and a
/// certificate's URI SAN `spiffe://TRUST_DOMAIN/ROLE/NAME` names its caller
/// (see [`crate::access`]); the node presents its own certificate to its
/// peers.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// The SPIFFE trust domain of client certificates; default `pylon`.
    pub trust_domain: String,
}

impl TlsFiles {
    fn read(path: &PathBuf) -> Result<Vec<u8>, ServeError> {
        std::fs::read(path).map_err(|e| ServeError::Tls(format!("{}: {e}", path.display())))
    }

    fn server(&self) -> Result<ServerTlsConfig, ServeError> {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(
            Self::read(&self.cert)?,
            Self::read(&self.key)?,
        ));
        Ok(match &self.client_ca {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(Self::read(ca)?))
                .client_auth_optional(true),
            None => config,
        })
    }

    /// How this node verifies its peers, and (with mutual TLS) shows itself.
    fn client(&self) -> Result<ClientTlsConfig, ServeError> {
        let ca = Self::read(self.ca.as_ref().unwrap_or(&self.cert))?;
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        Ok(match &self.client_ca {
            Some(_) => config.identity(Identity::from_pem(
                Self::read(&self.cert)?,
                Self::read(&self.key)?,
            )),
            None => config,
        })
    }

    /// The trust domain when mutual TLS is on.
    fn mutual(&self) -> Option<&str> {
        self.client_ca.as_ref().map(|_| self.trust_domain.as_str())
    }

    /// The caller this node's own certificate names, for its peers.
    fn own_caller(&self, trust_domain: &str) -> Result<crate::access::Caller, ServeError> {
        let pem = Self::read(&self.cert)?;
        let der = pem_first_certificate(&pem)
            .ok_or_else(|| ServeError::Tls(format!("{}: no certificate", self.cert.display())))?;
        crate::access::certificate_caller(&der, trust_domain)
            .map_err(|e| ServeError::Tls(format!("--tls-cert {}: {e}", self.cert.display())))
    }
}

/// The first `CERTIFICATE` block of a PEM file, as DER.
fn pem_first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    (block.label == "CERTIFICATE").then_some(block.contents)
}

/// Everything a control-plane node needs to start.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    pub node_id: u64,
    /// Admin gRPC (+ health, reflection).
    pub listen: SocketAddr,
    /// Raft peer traffic.
    pub raft_listen: SocketAddr,
    /// The address peers use to reach `raft_listen` (default: `raft_listen`).
    pub raft_advertise: Option<String>,
    /// Founding members (id → Raft address) of a new cluster. Ignored once the
    /// data directory holds state.
    pub peers: BTreeMap<u64, String>,
    /// Start empty and wait to be added (`pylon cluster join`) instead of
    /// founding a cluster.
    pub join: bool,
    pub data_dir: PathBuf,
    /// The legacy single token: every role.
    pub token: Option<BearerToken>,
    /// Named credentials with roles (see [`crate::access`]), reloaded on
    /// SIGHUP.
    pub credentials_file: Option<PathBuf>,
    /// The flag that set `listen`, for error messages (`--listen`;
    /// `--admin-listen` in `pylon dev`).
    pub listen_flag: &'static str,
    /// Server reflection answers without the token (by default it needs
    /// the token whenever one is configured; health is always open).
    pub open_reflection: bool,
    pub tls: Option<TlsFiles>,
    pub timers: RaftTimers,
    pub snapshot_interval: u64,
    /// Free space (MiB) kept on the data directory's disk: below it the node
    /// takes no writes (see [`crate::raft::disk`]); 0 turns the watch off.
    pub min_free_space_mb: u64,
    /// Where the data planes count quota use (for GetUsage/ResetUsage).
    pub usage: Option<std::sync::Arc<dyn crate::admin::usage::UsageStore>>,
    /// Set while this node knows a leader (for `/readyz`).
    pub ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The operator console's listener (docs/console.md); off when unset.
    pub console: Option<ConsoleListen>,
    /// The developer portal's listener (docs/portal.md); off when unset.
    pub portal: Option<PortalListen>,
}

/// Where the developer portal listens, and the gateway it offers.
#[derive(Clone, Debug)]
pub struct PortalListen {
    pub address: SocketAddr,
    /// Serve plain HTTP off loopback (as for the console).
    pub insecure: bool,
    /// The gateway's URL for a stage: `{api}` and `{stage}` are filled in
    /// (e.g. `https://{api}.api.example.com/{stage}`).
    pub gateway_url: String,
}

/// Where the operator console listens.
#[derive(Clone, Debug)]
pub struct ConsoleListen {
    pub address: SocketAddr,
    /// Serve plain HTTP off loopback (without it, a node without
    /// `--tls-cert` refuses to start with a non-loopback console).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageFailure),
    #[error(transparent)]
    Credentials(#[from] crate::access::CredentialsError),
    /// `flag` names the setting that chose `address`.
    #[error("{flag} {address}: cannot listen")]
    Bind {
        flag: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ControlPlaneConfig {
    fn check(&self) -> Result<(), ServeError> {
        if self.node_id == 0 {
            return Err(ServeError::Config("--node-id must not be 0".into()));
        }
        let mutual = self.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
        if self.token.is_none() && self.credentials_file.is_none() && !mutual {
            for (flag, address) in [("--listen", self.listen), ("--raft-listen", self.raft_listen)] {
                if !address.ip().is_loopback() {
                    return Err(ServeError::Config(format!(
                        "{flag} {address} is not a loopback address: set credentials (--credentials-file, a bearer token with --token-file or PYLON_ADMIN_TOKEN, or mutual TLS with --tls-client-ca) first"
                    )));
                }
            }
        }
        if !self.join && !self.peers.is_empty() && !self.peers.contains_key(&self.node_id) {
            return Err(ServeError::Config(format!(
                "--peer lists no entry for this node ({}); list every founding member including this one",
                self.node_id
            )));
        }
        if let Some(console) = &self.console
            && !console.address.ip().is_loopback()
            && self.tls.is_none()
            && !console.insecure
        {
            return Err(ServeError::Config(format!(
                "--console-listen {} is not a loopback address: give the node --tls-cert/--tls-key (the console then serves HTTPS), or --console-insecure",
                console.address
            )));
        }
        if let Some(portal) = &self.portal
            && !portal.address.ip().is_loopback()
            && self.tls.is_none()
            && !portal.insecure
        {
            return Err(ServeError::Config(format!(
                "--portal-listen {} is not a loopback address: give the node --tls-cert/--tls-key (the portal then serves HTTPS), or --portal-insecure",
                portal.address
            )));
        }
        let authority_ok = |url: &str| {
            let rest = url.split_once("://").map_or("", |(_, rest)| rest);
            let authority = rest.split('/').next().unwrap_or("");
            !authority.is_empty()
                && authority
                    .replace("{api}", "api")
                    .replace("{stage}", "stage")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        };
        if let Some(portal) = &self.portal
            && (!(portal.gateway_url.starts_with("http://") || portal.gateway_url.starts_with("https://"))
                || !authority_ok(&portal.gateway_url))
        {
            return Err(ServeError::Config(format!(
                "--portal-gateway-url {:?}: must be an http:// or https:// URL template with {{api}} and {{stage}}",
                portal.gateway_url
            )));
        }
        if self.listen == self.raft_listen {
            return Err(ServeError::Config(
                "--listen and --raft-listen must differ".into(),
            ));
        }
        Ok(())
    }

    fn advertised(&self, bound: SocketAddr) -> String {
        self.raft_advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

async fn bind(flag: &'static str, address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            flag,
            address,
            source,
        })
}

fn server_builder(tls: Option<&TlsFiles>) -> Result<Server, ServeError> {
    // Keepalives find data planes (and peers) that vanished without a FIN.
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server()?)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    Ok(builder)
}

/// Runs a node until `shutdown` resolves.
pub async fn serve(
    config: ControlPlaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.check()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServeError::Config(format!("--data-dir {}: {e}", config.data_dir.display())))?;
    let admin_listener = bind(config.listen_flag, config.listen).await?;
    let raft_listener = bind("--raft-listen", config.raft_listen).await?;
    let admin_address = admin_listener.local_addr().map_err(|source| ServeError::Bind {
        flag: config.listen_flag,
        address: config.listen,
        source,
    })?;
    let raft_address = raft_listener.local_addr().map_err(|source| ServeError::Bind {
        flag: "--raft-listen",
        address: config.raft_listen,
        source,
    })?;
    let advertised = config.advertised(raft_address);

    let storage = RocksStorage::open(&config.data_dir.join("raft"))?;
    let bootstrap = if config.join || !storage.is_empty() {
        None
    } else if config.peers.is_empty() {
        Some(BTreeMap::from([(config.node_id, advertised.clone())]))
    } else {
        Some(config.peers.clone())
    };
    if storage.is_empty() {
        match &bootstrap {
            Some(voters) => {
                tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "founding a new cluster")
            }
            None => {
                tracing::info!("empty data directory: waiting to be added to a cluster (pylon cluster join)")
            }
        }
    }
    let credentials = match &config.credentials_file {
        Some(path) => Credentials::load(path, config.token.clone())?,
        None => Credentials::single(config.token.clone()),
    };
    // A node of a cluster needs something to show its peers.
    let clustered = config.join || config.peers.len() > 1;
    let trust_domain = config.tls.as_ref().and_then(TlsFiles::mutual);
    if let (Some(tls), Some(domain)) = (&config.tls, trust_domain) {
        // With mutual TLS the node shows its peers its own certificate.
        let own = tls.own_caller(domain)?;
        if clustered && credentials.token_for(Role::Peer).is_none() && !own.has(Role::Peer) {
            return Err(ServeError::Config(format!(
                "--tls-cert names {:?}, not a peer (spiffe://{domain}/peer/NAME), and the credentials hold no peer token: this node could not reach its peers",
                own.name
            )));
        }
    } else if clustered && !credentials.is_empty() && credentials.token_for(Role::Peer).is_none() {
        return Err(ServeError::Config(
            "the credentials hold no peer credential (role: peer), so this node could not reach its peers"
                .into(),
        ));
    }
    let credentials = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(credentials));
    crate::access::reload_on_sighup(
        config.credentials_file.clone(),
        config.token.clone(),
        credentials.clone(),
    );
    let peer_tls = config.tls.as_ref().map(TlsFiles::client).transpose()?;
    let transport = Transport::new(
        config.node_id,
        advertised.clone(),
        credentials.clone(),
        peer_tls,
        tokio::runtime::Handle::current(),
    );
    for (id, address) in &config.peers {
        transport.set_address(*id, address.clone());
    }
    let (node, _raft_thread) = node::start(
        storage,
        NodeOptions {
            id: config.node_id,
            bootstrap,
            timers: config.timers.clone(),
            snapshot_interval: config.snapshot_interval,
            disk: crate::raft::disk::DiskGuard::new(&config.data_dir, config.min_free_space_mb << 20),
        },
        transport.clone(),
        node::logger(),
    )?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pylon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pylon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let confirm_current: crate::publish::ConfirmCurrent = {
        let node = node.clone();
        std::sync::Arc::new(move |timeout| {
            let node = node.clone();
            Box::pin(async move {
                matches!(
                    tokio::time::timeout(timeout, node.read_index_once()).await,
                    Ok(Ok(_))
                )
            })
        })
    };
    let publisher = Publisher::start(node.shared.replica.clone(), config.node_id, confirm_current);
    let instruments = std::sync::Arc::new(crate::telemetry::instruments(&node, &publisher.registry));
    crate::telemetry::watch_leader(
        node.clone(),
        config.ready.clone(),
        instruments.leader_changes.clone(),
    );
    let admin_api = std::sync::Arc::new(AdminApi::new(
        node.clone(),
        transport.clone(),
        publisher.registry.clone(),
        config.usage.clone(),
        instruments.clone(),
    ));
    // Room for a restore (checked again per write: others stay at 4 MiB).
    let admin = AdminServiceServer::from_arc(admin_api.clone())
        .max_decoding_message_size(crate::admin::backup::MAX_BACKUP_BYTES + (1 << 20));
    let directory = DataPlaneDirectoryServer::new(crate::publish::directory::DirectoryService {
        registry: publisher.registry.clone(),
    });
    let publish = ConfigPublisherServer::new(PublishService::new(publisher, stop_rx.clone()));
    let peers = RaftTransportServer::new(RaftService {
        transport: transport.clone(),
        shared: node.shared.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Every call on either port passes one check of the caller's role.
    let guard = |port: Port| {
        let credentials = credentials.clone();
        let trust_domain: Option<std::sync::Arc<str>> = trust_domain.map(Into::into);
        tower::layer::layer_fn(move |inner| Access {
            inner,
            credentials: credentials.clone(),
            port,
            trust_domain: trust_domain.clone(),
        })
    };

    let console = match &config.console {
        Some(listen) => {
            let listener = bind("--console-listen", listen.address).await?;
            let acceptor = config
                .tls
                .as_ref()
                .map(|tls| crate::console::tls_acceptor(&tls.cert, &tls.key, tls.client_ca.as_deref()))
                .transpose()
                .map_err(ServeError::Tls)?;
            let console = std::sync::Arc::new(crate::console::Console::new(
                admin_api.clone(),
                credentials.clone(),
                acceptor.is_some(),
                listen.address.ip().is_loopback(),
                trust_domain.map(str::to_owned),
            ));
            tracing::info!(
                address = %listener.local_addr().map_or(listen.address, |a| a),
                tls = acceptor.is_some(),
                "operator console listening"
            );
            Some(tokio::spawn(crate::console::serve(
                listener,
                acceptor,
                console,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let portal = match &config.portal {
        Some(listen) => {
            let listener = bind("--portal-listen", listen.address).await?;
            let acceptor = config
                .tls
                .as_ref()
                .map(|tls| crate::console::tls_acceptor(&tls.cert, &tls.key, None))
                .transpose()
                .map_err(ServeError::Tls)?;
            let portal = std::sync::Arc::new(crate::portal::Portal::new(
                admin_api.clone(),
                crate::portal::PortalSettings {
                    gateway_url: listen.gateway_url.clone(),
                },
                acceptor.is_some(),
                listen.address.ip().is_loopback(),
            ));
            tracing::info!(
                address = %listener.local_addr().map_or(listen.address, |a| a),
                tls = acceptor.is_some(),
                gateway = %listen.gateway_url,
                "developer portal listening"
            );
            Some(tokio::spawn(crate::console::serve_router(
                listener,
                acceptor,
                crate::portal::router(portal),
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Reflection describes every method and message: it needs an operator
    // or reader credential, unless the operator opened it.
    let admin_server = server_builder(config.tls.as_ref())?
        .layer(tower::layer::layer_fn(crate::telemetry::TraceAdmin))
        .layer(guard(Port::Admin {
            open_reflection: config.open_reflection,
        }))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(publish)
        .serve_with_incoming_shutdown(TcpListenerStream::new(admin_listener), stopped(stop_rx.clone()));
    let raft_server = server_builder(config.tls.as_ref())?
        .layer(guard(Port::Peer))
        .add_service(peers)
        .add_service(directory)
        .serve_with_incoming_shutdown(TcpListenerStream::new(raft_listener), stopped(stop_rx));

    tracing::info!(
        node = config.node_id,
        admin = %admin_address,
        raft = %raft_address,
        advertised = %advertised,
        data_dir = %config.data_dir.display(),
        tls = config.tls.is_some(),
        mutual_tls = trust_domain.is_some(),
        auth = !credentials.load().is_empty() || trust_domain.is_some(),
        "control plane ready"
    );
    tokio::try_join!(admin_server, raft_server)?;
    for task in [console, portal].into_iter().flatten() {
        let _ = task.await;
    }
    tracing::info!("control plane stopped");
    Ok(())
}
