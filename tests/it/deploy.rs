//! What can be checked of the container image without pulling one: the
//! Containerfile passes hadolint and says what a production image must (a
//! non-root user, tini as PID 1, SIGTERM, the binary from the build stage),
//! and the binary needs no library the runtime base does not provide.

use pylon_tests::{pylon_bin, repo_root};
use std::process::Command;

/// Shared libraries `debian:bookworm-slim` provides (libc6, libgcc-s1,
/// libstdc++6), by soname.
const BASE_LIBRARIES: &[&str] = &[
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];

fn containerfile() -> String {
    std::fs::read_to_string(repo_root().join("deploy/container/Containerfile")).expect("Containerfile")
}

#[test]
fn the_containerfile_passes_hadolint() {
    let dir = tools_dir();
    let hadolint = dir.join("bin/hadolint");
    assert!(
        hadolint.exists(),
        "{} is missing: run scripts/bootstrap",
        hadolint.display()
    );
    let output = Command::new(&hadolint)
        .arg(repo_root().join("deploy/container/Containerfile"))
        .output()
        .expect("hadolint");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_runtime_stage_runs_pylon_as_a_non_root_user_under_tini() {
    let text = containerfile();
    let runtime = text.split("AS runtime").nth(1).expect("a runtime stage");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or("").trim();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "numeric, non-root: {user}"
    );
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pylon"]"#));
    assert!(runtime.contains("STOPSIGNAL SIGTERM"));
    assert!(runtime.contains("COPY --from=build /out/pylon /usr/local/bin/pylon"));
    assert!(!text.contains("ADD http"), "nothing fetched by ADD");
}

#[test]
fn the_binary_needs_only_libraries_the_runtime_base_provides() {
    let output = Command::new("ldd").arg(pylon_bin()).output().expect("ldd");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| name.rsplit('/').next().unwrap_or(name))
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{listing}");
    let foreign: Vec<&&str> = needed.iter().filter(|n| !BASE_LIBRARIES.contains(n)).collect();
    assert!(
        foreign.is_empty(),
        "not in the runtime base: {foreign:?}\n{listing}"
    );
}

/// Where `scripts/bootstrap` installs the Python tools the tests run.
fn tools_dir() -> std::path::PathBuf {
    std::env::var("PYLON_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/pylon/tools")
        })
}

fn tools_python() -> std::path::PathBuf {
    let dir = tools_dir();
    let python = dir.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/bootstrap",
        python.display()
    );
    python
}

/// The chart rendered with `values` (linted, every manifest validated
/// against the Kubernetes 1.30 schemas), as its manifests.
fn render(values: serde_json::Value) -> Vec<serde_json::Value> {
    let output = Command::new(tools_python())
        .arg(repo_root().join("tests/scripts/render_chart.py"))
        .arg(repo_root().join("deploy/helm/pylon"))
        .arg(values.to_string())
        .output()
        .expect("render");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("manifests")
}

fn kind<'a>(manifests: &'a [serde_json::Value], kind: &str, suffix: &str) -> &'a serde_json::Value {
    manifests
        .iter()
        .find(|m| {
            m["kind"] == kind
                && m["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} *{suffix}"))
}

#[test]
fn the_chart_renders_a_control_plane_statefulset_and_autoscaled_data_planes() {
    let manifests = render(serde_json::json!({}));
    let cp = kind(&manifests, "StatefulSet", "pylon-cp");
    assert_eq!(cp["spec"]["replicas"], 3);
    assert_eq!(cp["spec"]["podManagementPolicy"], "Parallel");
    let headless = kind(&manifests, "Service", "pylon-cp");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let container = &cp["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(cp["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_array());
    assert_eq!(cp["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
    assert_eq!(
        kind(&manifests, "PodDisruptionBudget", "pylon-cp")["spec"]["maxUnavailable"],
        1
    );
    let dp = kind(&manifests, "Deployment", "pylon-dp");
    let pod = &dp["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("grace");
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let drain: u64 = env
        .iter()
        .find(|e| e["name"] == "PYLON_DRAIN_TIMEOUT_S")
        .and_then(|e| e["value"].as_str()?.parse().ok())
        .expect("drain");
    assert!(grace > drain, "grace {grace} s must outlast the drain {drain} s");
    assert!(pod["containers"][0]["lifecycle"]["preStop"].is_object());
    assert!(
        dp["spec"].get("replicas").is_none(),
        "the autoscaler owns the replica count"
    );
    assert_eq!(
        kind(&manifests, "HorizontalPodAutoscaler", "pylon-dp")["spec"]["maxReplicas"],
        10
    );
    // Secrets only by reference.
    let text = serde_json::to_string(&manifests).expect("json");
    assert!(
        !manifests.iter().any(|m| m["kind"] == "Secret"),
        "the chart makes no Secret"
    );
    assert!(!text.to_ascii_lowercase().contains("password"));
}

/// What rendering `values` says on stderr; panics if the chart rendered.
fn refusal(values: &str) -> String {
    let output = Command::new(tools_python())
        .arg(repo_root().join("tests/scripts/render_chart.py"))
        .arg(repo_root().join("deploy/helm/pylon"))
        .arg(values)
        .output()
        .expect("render");
    assert!(!output.status.success(), "{values} rendered");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_chart_refuses_values_that_could_not_run_and_names_them() {
    for (values, says) in [
        (r#"{"controlPlane": {"replicas": 4}}"#, "must be one of 1, 3, 5"),
        (r#"{"controlPlane": {"founding": 0}}"#, "/controlPlane/founding"),
        (r#"{"controlPlane": {"founding": "x"}}"#, "/controlPlane/founding"),
        (r#"{"controlPlane": {"founding": 2.5}}"#, "/controlPlane/founding"),
        (r#"{"controlPlane": {"founding": 5}}"#, "founding cannot exceed"),
        // A misspelled key is refused, never ignored.
        (r#"{"controlPlane": {"replica": 3}}"#, "'replica' not allowed"),
        (
            r#"{"dataPlane": {"service": {"type": "Bogus"}}}"#,
            "/dataPlane/service/type",
        ),
        (
            r#"{"dataPlane": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}"#,
            "minReplicas cannot exceed maxReplicas",
        ),
        (
            r#"{"dataPlane": {"drainTimeoutSeconds": 0}}"#,
            "/dataPlane/drainTimeoutSeconds",
        ),
        (
            r#"{"tls": {"clientAuth": {"enabled": true}}}"#,
            "needs tls.secret",
        ),
        (
            r#"{"tls": {"secret": "cp-tls"}}"#,
            "tls.caSecret or tls.dataPlaneSecret",
        ),
        (r#"{"tokenSecret": ""}"#, "tokenSecret may be empty only"),
        (
            r#"{"credentials": {"secret": "creds"}}"#,
            "credentials.dataPlaneSecret is required",
        ),
        (
            r#"{"credentials": {"dataPlaneSecret": "dp"}}"#,
            "credentials.dataPlaneSecret needs credentials.secret",
        ),
        (r#"{"tls": {"caSecret": "ca"}}"#, "tls.caSecret needs tls.secret"),
        (
            r#"{"tls": {"clientAuth": {"trustDomain": "corp"}}}"#,
            "trustDomain needs tls.clientAuth.enabled",
        ),
        (
            r#"{"redis": {"enabled": true, "urlSecret": ""}}"#,
            "needs redis.urlSecret",
        ),
        (
            r#"{"controlPlane": {"ports": {"admin": 7000}}}"#,
            "admin, raft and ops must differ",
        ),
        (
            r#"{"dataPlane": {"ports": {"http": 9464}}}"#,
            "http and ops must differ",
        ),
    ] {
        let stderr = refusal(values);
        assert!(stderr.contains(says), "{values}: {stderr}");
    }
}

#[test]
fn the_chart_renders_five_nodes_with_monitoring_and_an_operator_namespace() {
    let manifests = render(serde_json::json!({
        "controlPlane": {"replicas": 5},
        "networkPolicy": {
            "enabled": true,
            "operatorPodSelector": {"matchLabels": {"app": "ops-tool"}},
            "operatorNamespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
        },
        "metrics": {"serviceMonitor": {"enabled": true}, "dashboard": {"enabled": true}}
    }));
    assert_eq!(kind(&manifests, "StatefulSet", "pylon-cp")["spec"]["replicas"], 5);
    let policy = kind(&manifests, "NetworkPolicy", "pylon-cp");
    // Operators: the pods selected (the selector given replaces the
    // default, never adds to it), in the namespaces selected.
    let operators = &policy["spec"]["ingress"][0]["from"][1];
    assert_eq!(
        operators["podSelector"],
        serde_json::json!({"matchLabels": {"app": "ops-tool"}})
    );
    assert_eq!(
        operators["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ops"
    );
    assert!(manifests.iter().any(|m| m["kind"] == "ServiceMonitor"));
    // The dashboard is the one deploy/otel holds, byte for byte.
    let dashboard = kind(&manifests, "ConfigMap", "pylon-dashboard");
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/otel/grafana-dashboard.json")).expect("dashboard");
    assert_eq!(
        dashboard["data"]["pylon.json"].as_str().map(str::trim_end),
        Some(shipped.trim_end())
    );
}

/// Network namespaces, veth links and hosts files made for one test, and
/// the processes started in them; all removed when dropped.
struct Pods {
    hub: String,
    namespaces: Vec<String>,
    children: Vec<std::process::Child>,
}

impl Pods {
    fn ip(args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("ip");
        assert!(status.success(), "ip {}", args.join(" "));
    }

    /// A hub namespace with a bridge, and one namespace per pod on it at
    /// 10.213.0.(10 + i), each with a hosts file naming `names`.
    fn new(prefix: &str, pods: usize, names: &[(String, usize)]) -> Pods {
        let hub = format!("{prefix}-hub");
        Self::ip(&["netns", "add", &hub]);
        let mut made = Pods {
            hub: hub.clone(),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        Self::ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        Self::ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, pod) in names {
            hosts.push_str(&format!("10.213.0.{} {name}\n", 10 + pod));
        }
        for i in 0..pods {
            let ns = format!("{prefix}-{i}");
            Self::ip(&["netns", "add", &ns]);
            made.namespaces.push(ns.clone());
            let veth = format!("v{i}");
            Self::ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            Self::ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"]);
            Self::ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.213.0.{}/24", 10 + i),
                "dev",
                "eth0",
            ]);
            Self::ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            Self::ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let dir = std::path::PathBuf::from("/etc/netns").join(&ns);
            std::fs::create_dir_all(&dir).expect("/etc/netns");
            std::fs::write(dir.join("hosts"), &hosts).expect("hosts");
        }
        made
    }

    /// Rewrites every pod's hosts file in place (the namespaces' bind
    /// mounts see the new content), as a DNS record that appears late.
    fn write_hosts(&self, names: &[(String, usize)]) {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, pod) in names {
            hosts.push_str(&format!("10.213.0.{} {name}\n", 10 + pod));
        }
        for ns in &self.namespaces {
            std::fs::write(
                std::path::PathBuf::from("/etc/netns").join(ns).join("hosts"),
                &hosts,
            )
            .expect("hosts");
        }
    }

    /// Whether every process started is still running.
    fn all_running(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|c| c.try_wait().is_ok_and(|status| status.is_none()))
    }

    /// Runs `program args` in pod `i`'s namespace with only `env` (and PATH).
    fn spawn(
        &mut self,
        i: usize,
        env: &[(String, String)],
        program: &str,
        args: &[String],
        log: &std::path::Path,
    ) {
        let log = std::fs::File::create(log).expect("log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespaces[i], "env", "-i"])
            .arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()))
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(program)
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.children.push(command.spawn().expect("spawn"));
    }

    /// Runs a command to completion in pod `i`'s namespace.
    fn run(&self, i: usize, env: &[(String, String)], program: &str, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespaces[i], "env"]);
        command.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        command.arg(program).args(args).output().expect("run")
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(std::path::PathBuf::from("/etc/netns").join(ns));
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test]
async fn what_the_chart_says_starts_a_control_plane_that_grows_by_join_and_data_planes_that_serve() {
    run_the_chart(Auth::SharedToken).await;
}

#[tokio::test]
async fn the_chart_with_credentials_by_role_runs_the_same() {
    run_the_chart(Auth::Roles).await;
}

#[tokio::test]
async fn the_chart_with_mutual_tls_and_no_token_runs_the_same() {
    run_the_chart(Auth::MutualTls).await;
}

/// How the rendered chart's callers prove who they are.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// One token in `tokenSecret`, shared by everyone.
    SharedToken,
    /// A credentials file by role (operator, data-plane, peer).
    Roles,
    /// TLS on both control-plane ports and client certificates naming a
    /// role, for peers, data planes and the operator; no token anywhere.
    MutualTls,
}

/// Runs what the chart renders with `auth`'s values.
async fn run_the_chart(auth: Auth) {
    if !is_root() {
        eprintln!("SKIPPED: needs root (ip netns) to give each pod a network namespace of its own");
        return;
    }
    let _serial = pylon_tests::serial().await;
    // Five nodes, three founding: ordinals 3 and 4 start with --join.
    let mut values = serde_json::json!({
        "controlPlane": {"replicas": 5, "founding": 3},
        "dataPlane": {"autoscaling": {"enabled": false}, "replicas": 2}
    });
    match auth {
        Auth::SharedToken => {}
        Auth::Roles => {
            values["credentials"] =
                serde_json::json!({"secret": "pylon-creds", "dataPlaneSecret": "pylon-dp"});
        }
        Auth::MutualTls => {
            values["tokenSecret"] = "".into();
            values["tls"] = serde_json::json!({
                "secret": "pylon-cp-tls",
                "clientAuth": {"enabled": true},
                "dataPlaneSecret": "pylon-dp-tls"
            });
        }
    }
    let manifests = render(values);
    let cp = kind(&manifests, "StatefulSet", "pylon-cp");
    let dp = kind(&manifests, "Deployment", "pylon-dp");
    let dir = tempfile::tempdir().expect("tempdir");
    // The Secrets as files: one shared token, or a credentials file (what the
    // `credentials` Secret mounts at /etc/pylon/credentials) and the data
    // planes' own token.
    let token = dir.path().join("token");
    std::fs::write(&token, "chart-test-token-0123456789").expect("token");
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).expect("credentials dir");
    let mut file = String::new();
    for (name, role) in [("ops", "operator"), ("dp", "data-plane"), ("cp", "peer")] {
        let path = creds.join(format!("{name}.token"));
        std::fs::write(&path, format!("{name}-token-0123456789abcdef")).expect("token");
        file.push_str(&format!(
            "- {{name: {name}, role: {role}, token_file: {}}}\n",
            path.display()
        ));
    }
    std::fs::write(creds.join("credentials.yaml"), file).expect("credentials");
    // The kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt) as
    // directories: one certificate for every node, named by the headless
    // Service's wildcard and as a peer; the data planes' and the operator's.
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let secret = |stem: &str, san: &str| {
        let (cert, key) = pylon_tests::issue_certificate(&pki, stem, san);
        let secret = dir.path().join(format!("{stem}-secret"));
        std::fs::create_dir_all(&secret).expect("secret dir");
        std::fs::copy(&cert, secret.join("tls.crt")).expect("tls.crt");
        std::fs::copy(&key, secret.join("tls.key")).expect("tls.key");
        std::fs::copy(pki.join("ca.pem"), secret.join("ca.crt")).expect("ca.crt");
        secret
    };
    let cp_tls = secret(
        "cp",
        "DNS:*.demo-pylon-cp.apis.svc,DNS:demo-pylon-cp-admin.apis.svc,URI:spiffe://pylon/peer/cp",
    );
    let dp_tls = secret("dp", "URI:spiffe://pylon/data-plane/dp");
    let ops_tls = secret("ops", "URI:spiffe://pylon/operator/ops");
    let dp_token = match auth {
        Auth::Roles => creds.join("dp.token"),
        _ => token.clone(),
    };
    // What an operator in pod `i` gives the CLI to reach that pod's node.
    let admin_env = |i: usize| -> Vec<(String, String)> {
        let pair = |k: &str, v: String| (k.to_owned(), v);
        match auth {
            Auth::SharedToken => vec![
                pair("PYLON_ENDPOINT", "http://127.0.0.1:9090".into()),
                pair("PYLON_TOKEN", "chart-test-token-0123456789".into()),
            ],
            Auth::Roles => vec![
                pair("PYLON_ENDPOINT", "http://127.0.0.1:9090".into()),
                pair("PYLON_TOKEN", "ops-token-0123456789abcdef".into()),
            ],
            Auth::MutualTls => vec![
                pair(
                    "PYLON_ENDPOINT",
                    format!("https://demo-pylon-cp-{i}.demo-pylon-cp.apis.svc:9090"),
                ),
                pair("PYLON_CA_CERT", ops_tls.join("ca.crt").display().to_string()),
                pair("PYLON_CLIENT_CERT", ops_tls.join("tls.crt").display().to_string()),
                pair("PYLON_CLIENT_KEY", ops_tls.join("tls.key").display().to_string()),
            ],
        }
    };
    let bin = pylon_bin().display().to_string();
    // Pods 0–2: the control plane, by the names its headless Service gives.
    let names: Vec<(String, usize)> = (0..5)
        .map(|i| (format!("demo-pylon-cp-{i}.demo-pylon-cp.apis.svc"), i))
        .collect();
    // The names do not resolve yet when the nodes start (pods come up before
    // their DNS records): the nodes wait and retry instead of exiting.
    let mut pods = Pods::new(&format!("pyl{}{}", std::process::id(), auth as u8), 7, &[]);

    // The StatefulSet's container: its shell script with this machine's paths.
    let script = cp["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .expect("script");
    for i in 0..5 {
        let data = dir.path().join(format!("cp{i}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let script = script
            .replace("/usr/local/bin/pylon", &bin)
            .replace("/var/lib/pylon/data", &data.join("data").display().to_string())
            .replace("/etc/pylon/token/token", &token.display().to_string())
            .replace("/etc/pylon/credentials", &creds.display().to_string())
            .replace("/etc/pylon/tls", &cp_tls.display().to_string());
        let env = vec![("HOSTNAME".to_owned(), format!("demo-pylon-cp-{i}"))];
        pods.spawn(
            i,
            &env,
            "/bin/sh",
            &["-c".to_owned(), script],
            &dir.path().join(format!("cp{i}.log")),
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        pods.all_running(),
        "a node exited while its peers' names did not resolve"
    );
    pods.write_hosts(&names);
    // The Deployment's container: its args and environment.
    let container = &dp["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    for j in 0..2 {
        let pod_name = format!("demo-pylon-dp-{j}");
        let cache = dir.path().join(format!("dp{j}"));
        std::fs::create_dir_all(&cache).expect("cache dir");
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| {
                let name = e["name"].as_str()?.to_owned();
                let value = match (e["value"].as_str(), name.as_str()) {
                    (_, "POD_NAME") => pod_name.clone(),
                    (Some(v), _) => v
                        .replace("$(POD_NAME)", &pod_name)
                        .replace("/etc/pylon/token/token", &dp_token.display().to_string())
                        .replace("/etc/pylon/tls", &dp_tls.display().to_string())
                        .replace("/var/cache/pylon", &cache.display().to_string()),
                    (None, _) => return None,
                };
                Some((name, value))
            })
            .collect();
        pods.spawn(5 + j, &env, &bin, &args, &dir.path().join(format!("dp{j}.log")));
    }

    // The three nodes elect a leader through the DNS names.
    let logs = || {
        (0..5)
            .map(|i| std::fs::read_to_string(dir.path().join(format!("cp{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let mut status = String::new();
    for _ in 0..120 {
        let out = pods.run(0, &admin_env(0), &bin, &["cluster", "status"]);
        status = String::from_utf8_lossy(&out.stdout).into_owned();
        if status.contains("LEADER") && status.matches("demo-pylon-cp-").count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(status.contains("LEADER"), "no leader: {status}\n{}", logs());
    // Growing: the two later ordinals are added by name, as deploy/helm/README.md says.
    for n in [4, 5] {
        let address = format!("demo-pylon-cp-{}.demo-pylon-cp.apis.svc:7000", n - 1);
        let node = n.to_string();
        let joined = pods.run(
            0,
            &admin_env(0),
            &bin,
            &["cluster", "join", "--node-id", &node, "--raft-address", &address],
        );
        assert!(
            joined.status.success(),
            "join {n}: {}\n{}",
            String::from_utf8_lossy(&joined.stderr),
            logs()
        );
    }
    for _ in 0..120 {
        let out = pods.run(4, &admin_env(4), &bin, &["cluster", "status"]);
        status = String::from_utf8_lossy(&out.stdout).into_owned();
        if status.matches("demo-pylon-cp-").count() == 5 && status.contains("LEADER") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        status.matches("demo-pylon-cp-").count(),
        5,
        "{status}\n{}",
        logs()
    );
    let petstore = repo_root().join("examples/petstore.yaml").display().to_string();
    let applied = pods.run(1, &admin_env(1), &bin, &["apply", "-f", &petstore]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let deployed = pods.run(2, &admin_env(2), &bin, &["deploy", "petstore", "--stage", "prod"]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );

    // Both data planes, configured only by the chart's variables, serve it.
    for pod in [5, 6] {
        let mut code = String::new();
        for _ in 0..60 {
            let out = pods.run(
                pod,
                &[],
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Host: petstore.localhost",
                    "http://127.0.0.1:8080/prod/pets",
                ],
            );
            code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code == "200" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let log = std::fs::read_to_string(dir.path().join(format!("dp{}.log", pod - 5))).unwrap_or_default();
        assert_eq!(code, "200", "data plane {pod}: {log}");
    }
}
