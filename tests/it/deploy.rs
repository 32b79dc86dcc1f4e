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
