//! Test support: start real `pylon` processes on free loopback ports, talk to
//! them over gRPC, and wait for conditions instead of sleeping.
//!
//! Every process is killed when its handle drops; when a test fails, the tail
//! of each node's log is printed to help read what happened.

pub mod fault_proxy;
pub mod gateway;
pub mod jwt;
pub mod linearizability;
pub mod redis;

use anyhow::{Context as _, bail};
use pylon_proto::admin::v1::admin_service_client::AdminServiceClient;
use pylon_proto::admin::v1::{ClusterStatus, GetClusterStatusRequest};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer …` when the cluster has a token.
#[derive(Clone, Default)]
pub struct WithToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, WithToken>>;

/// The `pylon` binary next to this test binary (`make test` builds it first).
pub fn pylon_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PYLON_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("pylon");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin pylon` (make test does)",
        bin.display()
    );
    bin
}

/// A port nobody listens on right now, and never handed out before by this
/// process.
///
/// Ports come from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`) when there is room: the kernel hands
/// ephemeral ports to every `bind(:0)` and outgoing `connect` on the machine,
/// so one taken from there can be given to a fault proxy or a client socket
/// before the `pylon` process it was meant for binds it. Below the range only
/// another explicit choice can take it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low);
    let random = RandomState::new();
    for attempt in 0u64..1000 {
        let port = if high > low + 1000 {
            low + (random.hash_one(attempt) % u64::from(high - low)) as u16
        } else {
            0
        };
        let Ok(bound) = TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr()) else {
            continue;
        };
        let port = bound.port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 after 1000 attempts")
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tests that start clusters run one at a time: the machine has two cores.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(())).lock().await
}

pub async fn connect(endpoint: &str) -> anyhow::Result<Admin> {
    connect_with(endpoint, None, None).await
}

/// Connects with an optional bearer token and, for `https://`, the CA (PEM) to trust.
pub async fn connect_with(endpoint: &str, token: Option<&str>, ca: Option<&[u8]>) -> anyhow::Result<Admin> {
    connect_as(endpoint, token, ca, None).await
}

/// [`connect_with`], also showing a client certificate and key (PEM) for
/// mutual TLS.
pub async fn connect_as(
    endpoint: &str,
    token: Option<&str>,
    ca: Option<&[u8]>,
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> anyhow::Result<Admin> {
    let token = match token {
        Some(token) => Some(format!("Bearer {}", token.trim()).parse()?),
        None => None,
    };
    let mut builder = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?;
    if let Some(ca) = ca {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some((cert, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        builder = builder.tls_config(tls)?;
    }
    let channel = builder
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;
    Ok(AdminServiceClient::with_interceptor(channel, WithToken(token)))
}

/// Starts `pylon SUBCOMMAND ARGS…` with stdout and stderr appended to `log`
/// and `PYLON_LOG` set to `log_filter`.
pub fn spawn_pylon(subcommand: &str, args: &[String], log: &Path, log_filter: &str) -> anyhow::Result<Child> {
    spawn_pylon_limited(subcommand, args, log, log_filter, None)
}

/// [`spawn_pylon`], with at most `open_files` file descriptors when given
/// (through util-linux's `prlimit`, which then runs `pylon` itself).
pub fn spawn_pylon_limited(
    subcommand: &str,
    args: &[String],
    log: &Path,
    log_filter: &str,
    open_files: Option<u64>,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = match open_files {
        Some(n) => {
            let mut command = Command::new("prlimit");
            command
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(pylon_bin());
            command
        }
        None => Command::new(pylon_bin()),
    };
    command
        .arg(subcommand)
        .args(args)
        .env("PYLON_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning pylon {subcommand}"))
}

/// `kill -9` and reap a process a test started, if it runs.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One `pylon control-plane` process and what it needs to be restarted.
pub struct ControlPlaneNode {
    pub id: u64,
    pub admin_port: u16,
    pub raft_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    token: Option<String>,
    /// The CA (PEM) to trust when the node serves TLS.
    ca: Option<Vec<u8>>,
    /// The harness's client certificate and key with mutual TLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The operator console's port, when the cluster has consoles.
    pub console_port: Option<u16>,
    child: Option<Child>,
}

impl ControlPlaneNode {
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.admin_port)
    }

    pub fn raft_address(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is already running", self.id);
        }
        self.child = Some(spawn_pylon(
            "control-plane",
            &self.args,
            &self.log,
            "info,raft=info",
        )?);
        Ok(())
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    pub async fn admin(&self) -> anyhow::Result<Admin> {
        connect_as(
            &self.endpoint(),
            self.token.as_deref(),
            self.ca.as_deref(),
            self.identity.as_ref(),
        )
        .await
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ControlPlaneNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A control-plane cluster of real processes on loopback.
pub struct Cluster {
    pub nodes: Vec<ControlPlaneNode>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    token: Option<String>,
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Every node serves the operator console on a port of its own.
    consoles: bool,
}

impl Cluster {
    /// Starts `size` founding members and waits until they agree on a leader.
    pub async fn start(size: u64) -> Cluster {
        Cluster::start_with(size, &[]).await
    }

    pub async fn start_with(size: u64, extra_args: &[&str]) -> Cluster {
        Cluster::launch(size, extra_args, None, false).await
    }

    /// Starts a cluster whose admin and peer calls require `token`.
    pub async fn start_secured(size: u64, token: &str) -> Cluster {
        Cluster::launch(size, &[], Some(token), false).await
    }

    /// Starts a cluster whose admin and Raft ports serve TLS with a certificate
    /// for 127.0.0.1 from a CA made with `openssl` for the test.
    pub async fn start_with_tls(size: u64) -> Cluster {
        Cluster::launch(size, &[], None, true).await
    }

    /// Starts a TLS cluster whose callers show client certificates instead
    /// of tokens (`--tls-client-ca`): the nodes' shared certificate names a
    /// peer (`spiffe://pylon/peer/cp`), the harness calls as
    /// `spiffe://pylon/operator/harness`. [`Cluster::issue`] makes more.
    pub async fn start_with_mtls(size: u64) -> Cluster {
        Cluster::launch_as(size, &[], None, false, true, true).await
    }

    /// A certificate and key from the cluster's test CA naming `uri` (a
    /// URI SAN, e.g. `spiffe://pylon/data-plane/dp-1`).
    pub fn issue(&self, stem: &str, uri: &str) -> (PathBuf, PathBuf) {
        issue_certificate(self.dir.path(), stem, &format!("URI:{uri}"))
    }

    /// Starts a cluster with named credentials (`--credentials-file`, the
    /// nodes reach each other with its peer credential); the harness's
    /// admin calls present `operator_token`.
    pub async fn start_with_credentials(size: u64, credentials_file: &Path, operator_token: &str) -> Cluster {
        let flag = format!("--credentials-file={}", credentials_file.display());
        Cluster::launch_as(size, &[&flag], Some(operator_token), false, false, false).await
    }

    /// [`Cluster::start_with_mtls`] with the operator console on every
    /// node (HTTPS, client certificates log in).
    pub async fn start_with_mtls_consoles(size: u64) -> Cluster {
        Cluster::launch_with(size, &[], None, false, true, true, true).await
    }

    /// [`Cluster::start_with_credentials`] with the operator console on
    /// every node (`ControlPlaneNode::console_port`).
    pub async fn start_with_consoles(size: u64, credentials_file: &Path, operator_token: &str) -> Cluster {
        let flag = format!("--credentials-file={}", credentials_file.display());
        Cluster::launch_with(size, &[&flag], Some(operator_token), false, false, false, true).await
    }

    async fn launch(size: u64, extra_args: &[&str], token: Option<&str>, tls: bool) -> Cluster {
        Cluster::launch_as(size, extra_args, token, true, tls, false).await
    }

    /// `token_file`: the nodes get `token` as their `--token-file` (else it
    /// is only what the harness presents).
    async fn launch_as(
        size: u64,
        extra_args: &[&str],
        token: Option<&str>,
        token_file: bool,
        tls: bool,
        mutual: bool,
    ) -> Cluster {
        Cluster::launch_with(size, extra_args, token, token_file, tls, mutual, false).await
    }

    async fn launch_with(
        size: u64,
        extra_args: &[&str],
        token: Option<&str>,
        token_file: bool,
        tls: bool,
        mutual: bool,
        consoles: bool,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        if let Some(token) = token.filter(|_| token_file) {
            let file = dir.path().join("token");
            std::fs::write(&file, token).unwrap_or_else(|e| panic!("token file: {e}"));
            extra_args.push(format!("--token-file={}", file.display()));
        }
        let ca = tls.then(|| {
            let (ca, cert, key) = test_certificates(dir.path());
            extra_args.push(format!("--tls-cert={}", cert.display()));
            extra_args.push(format!("--tls-key={}", key.display()));
            extra_args.push(format!("--tls-ca={}", ca.display()));
            if mutual {
                extra_args.push(format!("--tls-client-ca={}", ca.display()));
            }
            std::fs::read(&ca).unwrap_or_else(|e| panic!("CA certificate: {e}"))
        });
        let identity = mutual.then(|| {
            let (cert, key) = issue_certificate(dir.path(), "harness", "URI:spiffe://pylon/operator/harness");
            let read =
                |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (read(&cert), read(&key))
        });
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            extra_args,
            token: token.map(str::to_owned),
            ca,
            identity,
            consoles,
        };
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, raft))| format!("--peer={}=127.0.0.1:{raft}", i + 1))
            .collect();
        for (i, (admin, raft)) in ports.iter().enumerate() {
            let mut node = cluster.node(i as u64 + 1, *admin, *raft, peers.clone());
            node.start().unwrap_or_else(|e| panic!("{e:#}"));
            cluster.nodes.push(node);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    fn node(&self, id: u64, admin_port: u16, raft_port: u16, mut args: Vec<String>) -> ControlPlaneNode {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        args.extend([
            format!("--node-id={id}"),
            format!("--listen=127.0.0.1:{admin_port}"),
            format!("--raft-listen=127.0.0.1:{raft_port}"),
            format!("--data-dir={}", data_dir.display()),
        ]);
        args.extend(self.extra_args.iter().cloned());
        let console_port = self.consoles.then(free_port);
        if let Some(port) = console_port {
            args.push(format!("--console-listen=127.0.0.1:{port}"));
        }
        ControlPlaneNode {
            id,
            admin_port,
            raft_port,
            data_dir,
            log,
            args,
            token: self.token.clone(),
            ca: self.ca.clone(),
            identity: self.identity.clone(),
            console_port,
            child: None,
        }
    }

    /// Free `(admin, raft)` port pairs for `size` nodes, for
    /// [`Cluster::start_linked`].
    pub fn ports(size: u64) -> Vec<(u16, u16)> {
        (0..size).map(|_| (free_port(), free_port())).collect()
    }

    /// Starts founding members on `ports` whose Raft links to each other go
    /// where `link(from, to)` says (e.g. a [`fault_proxy::FaultProxy`] in
    /// front of node `to`'s Raft port), and waits for a leader.
    pub async fn start_linked(ports: &[(u16, u16)], link: impl Fn(u64, u64) -> String) -> Cluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            extra_args: Vec::new(),
            token: None,
            ca: None,
            identity: None,
            consoles: false,
        };
        for (i, (admin, raft)) in ports.iter().enumerate() {
            let from = i as u64 + 1;
            let peers = ports
                .iter()
                .enumerate()
                .map(|(j, (_, raft))| {
                    let to = j as u64 + 1;
                    let address = if to == from {
                        format!("127.0.0.1:{raft}")
                    } else {
                        link(from, to)
                    };
                    format!("--peer={to}={address}")
                })
                .collect();
            let mut node = cluster.node(from, *admin, *raft, peers);
            node.start().unwrap_or_else(|e| panic!("{e:#}"));
            cluster.nodes.push(node);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// Starts a node with `--join`; it waits to be added with AddMember.
    pub fn start_joiner(&mut self, id: u64) -> &ControlPlaneNode {
        let mut node = self.node(id, free_port(), free_port(), vec!["--join".into()]);
        node.start().unwrap_or_else(|e| panic!("{e:#}"));
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        &self.nodes[last]
    }

    pub fn by_id(&mut self, id: u64) -> &mut ControlPlaneNode {
        let index = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"));
        &mut self.nodes[index]
    }

    /// Cluster status as seen by the first running node that answers.
    pub async fn status(&self) -> Option<ClusterStatus> {
        for node in self.running() {
            if let Ok(mut admin) = node.admin().await
                && let Ok(status) = admin.get_cluster_status(GetClusterStatusRequest {}).await
            {
                return Some(status.into_inner());
            }
        }
        None
    }

    /// Waits until every running voter reports the same leader, which is running.
    pub async fn wait_for_leader(&self) -> u64 {
        eventually(
            "a leader all running nodes agree on",
            Duration::from_secs(20),
            || async {
                let status = self.status().await?;
                let leader = status.leader_id;
                let running = self.running_ids();
                let agreed = leader != 0
                    && running.contains(&leader)
                    && status
                        .members
                        .iter()
                        .filter(|m| running.contains(&m.node_id))
                        .all(|m| m.leader_id == leader);
                agreed.then_some(leader)
            },
        )
        .await
    }

    /// Waits until every running node has applied the leader's commit index.
    pub async fn wait_until_caught_up(&self) {
        eventually(
            "all running nodes to apply the last commit",
            Duration::from_secs(20),
            || async {
                let status = self.status().await?;
                let running = self.running_ids();
                let members: Vec<_> = status
                    .members
                    .iter()
                    .filter(|m| running.contains(&m.node_id))
                    .collect();
                let commit = members.iter().map(|m| m.commit_index).max()?;
                members
                    .iter()
                    .all(|m| m.applied_index == commit && m.commit_index == commit)
                    .then_some(())
            },
        )
        .await
    }

    /// The CA certificate clients of a TLS cluster trust.
    pub fn ca_certificate(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|_| self.dir.path().join("ca.pem"))
    }

    pub fn running(&self) -> impl Iterator<Item = &ControlPlaneNode> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    fn running_ids(&self) -> Vec<u64> {
        self.running().map(|n| n.id).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("----- node {} log (tail) -----\n{}", node.id, node.log_tail(40));
            }
        }
    }
}

/// Runs `pylon ARGS…` against an endpoint and returns stdout, failing on a
/// non-zero exit with stderr in the message.
pub fn pylon_cli(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(pylon_bin())
        .args(args)
        .env("PYLON_ENDPOINT", endpoint)
        .env_remove("PYLON_TOKEN")
        .output()?;
    if !output.status.success() {
        bail!(
            "pylon {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A self-signed P-256 certificate for `name` (CN and subjectAltName) and
/// its key, as `(cert, key)` files in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(status.success(), "openssl req for {name}");
    (cert, key)
}

/// Runs `openssl ARGS…` in `dir`, panicking when it fails.
fn openssl_in(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(status.success(), "openssl {} failed", args.join(" "));
}

/// A P-256 certificate and key, as `(STEM.pem, STEM.key)` in `dir`, issued
/// by the test CA there (`ca.pem`, made on first use) for server and client
/// use, with `san` as its subjectAltName (`IP:127.0.0.1,URI:spiffe://…`).
pub fn issue_certificate(dir: &Path, stem: &str, san: &str) -> (PathBuf, PathBuf) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ec: Vec<&str> = ec.split(' ').collect();
    if !dir.join("ca.pem").exists() {
        let args = [
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=pylon-test-ca",
            ],
        ]
        .concat();
        openssl_in(dir, &args);
    }
    let (key, csr, cert, ext) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
        format!("{stem}.ext"),
    );
    let subject = format!("/CN={stem}");
    openssl_in(
        dir,
        &[
            &["req"],
            &ec[..],
            &["-keyout", &key, "-out", &csr, "-subj", &subject],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .unwrap_or_else(|e| panic!("{ext}: {e}"));
    openssl_in(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A test CA and a certificate for 127.0.0.1 and `localhost` from it (which
/// also names a peer, `spiffe://pylon/peer/cp`, for mutual TLS): `(ca,
/// cert, key)` files in `dir`.
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = issue_certificate(
        dir,
        "cert",
        "IP:127.0.0.1,DNS:localhost,URI:spiffe://pylon/peer/cp",
    );
    (dir.join("ca.pem"), cert, key)
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Resident memory of a process, KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The repository root (for `examples/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An OTLP/gRPC receiver that counts what it gets and keeps nothing: a
/// healthy, fast collector for benchmarks.
pub mod otlp_sink {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tonic::{Request, Response, Status};

    #[derive(Clone, Default)]
    pub struct Counts {
        pub spans: Arc<AtomicU64>,
        pub log_records: Arc<AtomicU64>,
        pub metric_exports: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl TraceService for Counts {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let spans: usize = request
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.spans.fetch_add(spans as u64, Ordering::Relaxed);
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl LogsService for Counts {
        async fn export(
            &self,
            request: Request<ExportLogsServiceRequest>,
        ) -> Result<Response<ExportLogsServiceResponse>, Status> {
            let records: usize = request
                .get_ref()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            self.log_records.fetch_add(records as u64, Ordering::Relaxed);
            Ok(Response::new(ExportLogsServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Counts {
        async fn export(
            &self,
            _: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            self.metric_exports.fetch_add(1, Ordering::Relaxed);
            Ok(Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    /// The same over OTLP/HTTP with protobuf bodies (`POST /v1/traces`,
    /// `/v1/logs`, `/v1/metrics`); its base URL and counts.
    pub async fn start_http() -> anyhow::Result<(String, Counts)> {
        use http_body_util::BodyExt;
        use prost::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let counts = Counts::default();
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let counts = counts.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let ok = match path.as_str() {
                                    "/v1/traces" => ExportTraceServiceRequest::decode(body).map(|r| {
                                        let spans: usize = r
                                            .resource_spans
                                            .iter()
                                            .flat_map(|r| &r.scope_spans)
                                            .map(|s| s.spans.len())
                                            .sum();
                                        counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
                                    }),
                                    "/v1/logs" => ExportLogsServiceRequest::decode(body).map(|r| {
                                        let records: usize = r
                                            .resource_logs
                                            .iter()
                                            .flat_map(|r| &r.scope_logs)
                                            .map(|s| s.log_records.len())
                                            .sum();
                                        counts.log_records.fetch_add(records as u64, Ordering::Relaxed);
                                    }),
                                    "/v1/metrics" => ExportMetricsServiceRequest::decode(body).map(|_| {
                                        counts.metric_exports.fetch_add(1, Ordering::Relaxed);
                                    }),
                                    _ => Ok(()),
                                };
                                let mut response =
                                    hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                                if ok.is_err() {
                                    *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
                                }
                                response.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((format!("http://{address}"), counts))
    }

    /// Starts one on a free loopback port; its endpoint and counts.
    pub async fn start() -> anyhow::Result<(String, Counts)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let counts = Counts::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(counts.clone()))
            .add_service(LogsServiceServer::new(counts.clone()))
            .add_service(MetricsServiceServer::new(counts.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok((format!("http://{address}"), counts))
    }
}
