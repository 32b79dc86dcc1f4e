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
    let dir = std::env::var("PYLON_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/pylon/tools")
        });
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

fn tools_python() -> std::path::PathBuf {
    let dir = std::env::var("PYLON_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/pylon/tools")
        });
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

#[test]
fn the_chart_refuses_an_even_control_plane_and_five_nodes_render() {
    let output = Command::new(tools_python())
        .arg(repo_root().join("tests/scripts/render_chart.py"))
        .arg(repo_root().join("deploy/helm/pylon"))
        .arg(r#"{"controlPlane": {"replicas": 4}}"#)
        .output()
        .expect("render");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be 1, 3 or 5"));
    let manifests =
        render(serde_json::json!({"controlPlane": {"replicas": 5}, "networkPolicy": {"enabled": true}}));
    assert_eq!(kind(&manifests, "StatefulSet", "pylon-cp")["spec"]["replicas"], 5);
    assert!(manifests.iter().any(|m| m["kind"] == "NetworkPolicy"));
}
