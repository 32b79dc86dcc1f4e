//! Settings for the servers (`dev`, `control-plane`, `data-plane`) from the
//! environment and a file, so a container or a Helm chart configures Pylon
//! without long argument lists.
//!
//! Every flag `--some-flag` of a server is also read from `PYLON_SOME_FLAG`
//! (unless it already names its own variable, such as `PYLON_REDIS_URL` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), and from a YAML file given by
//! `--config FILE` (or `PYLON_CONFIG`): a map from flag names (without
//! `--`) to values, lists for repeatable flags (`peer: [1=a:7000, 2=b:7000]`),
//! `true`/`false` for switches. The command line wins over the environment,
//! which wins over the file, which wins over the built-in default. A key
//! the server does not have is an error naming it, never ignored.

use anyhow::{Context as _, bail};
use clap::{Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::PathBuf;

/// The subcommands that take settings.
pub const SERVERS: &[&str] = &["dev", "control-plane", "data-plane"];

/// `root` with environment variables and `--config` on every server
/// subcommand, and the file named in `args` (if any) applied as defaults.
///
/// # Errors
/// The file cannot be read or parsed, or names a setting the server does
/// not have, or gives a list to a flag that takes one value.
pub fn command(mut root: Command, args: Vec<OsString>) -> anyhow::Result<Command> {
    let chosen = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| SERVERS.contains(a))
        .map(str::to_owned);
    for name in SERVERS {
        root = root.mut_subcommand(*name, |sub| {
            let prefix = name.to_ascii_uppercase().replace('-', "_");
            // `control-plane` reads its own typed --config file.
            let own_file = sub.get_arguments().any(|a| a.get_id() == "config");
            let sub = sub.mut_args(|arg| with_env(arg, &prefix));
            if own_file {
                return sub;
            }
            sub.arg(
                Arg::new("config")
                    .long("config")
                    .env("PYLON_CONFIG")
                    .value_name("FILE")
                    .help("Settings from a YAML file: flag name → value (the command line and PYLON_* win)"),
            )
        });
    }
    let Some(chosen) = chosen else {
        return Ok(root);
    };
    let Some(file) = config_file(&args) else {
        return Ok(root);
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("--config {}", file.display()))?;
    let settings: serde_norway::Mapping =
        serde_norway::from_str(&text).with_context(|| format!("--config {}", file.display()))?;
    let Some(sub) = root.find_subcommand(&chosen) else {
        return Ok(root);
    };
    if chosen == "control-plane" {
        // Its own typed file (docs/control-plane.md).
        return Ok(root);
    }
    let mut defaults = Vec::new();
    for (key, value) in settings {
        let Some(key) = key.as_str().map(str::to_owned) else {
            bail!("--config {}: a key that is not a flag name", file.display());
        };
        // `data-dir` or `data_dir`.
        let key = key.replace('_', "-");
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
        else {
            bail!(
                "--config {}: {key:?} is not a setting of `pylon {chosen}` (see `pylon {chosen} --help`)",
                file.display()
            );
        };
        let values: Vec<String> = match value {
            serde_norway::Value::Sequence(items) => {
                items.iter().map(scalar).collect::<anyhow::Result<_>>()?
            }
            other => vec![scalar(&other)?],
        };
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        if values.len() != 1 && !repeatable {
            bail!("--config {}: {key} takes one value", file.display());
        }
        defaults.push((arg.get_id().clone(), values));
    }
    Ok(root.mut_subcommand(chosen, |mut sub| {
        for (id, values) in defaults {
            sub = sub.mut_arg(id, |arg| arg.required(false).default_values(values));
        }
        sub
    }))
}

/// `PYLON_<FLAG>` for a flag that has no variable of its own; a name the
/// admin CLI already uses for something else gets the subcommand's prefix
/// (`PYLON_DATA_PLANE_…`).
fn with_env(arg: Arg, prefix: &str) -> Arg {
    if arg.get_env().is_some() {
        return arg;
    }
    let Some(long) = arg.get_long() else {
        return arg;
    };
    if matches!(long, "help" | "version") {
        return arg;
    }
    let flag = long.to_ascii_uppercase().replace('-', "_");
    let name = if matches!(
        flag.as_str(),
        "ENDPOINT" | "TOKEN" | "CA_CERT" | "CLIENT_CERT" | "CLIENT_KEY" | "IDEMPOTENCY_KEY"
    ) {
        format!("PYLON_{prefix}_{flag}")
    } else {
        format!("PYLON_{flag}")
    };
    arg.env(name)
}

/// `--config FILE`, `--config=FILE` or `PYLON_CONFIG`.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(arg) = it.next() {
        if arg == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(file) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(file));
        }
    }
    std::env::var_os("PYLON_CONFIG").map(PathBuf::from)
}

fn scalar(value: &serde_norway::Value) -> anyhow::Result<String> {
    Ok(match value {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        other => bail!("{other:?} is not a flag value (a string, number or true/false)"),
    })
}

/// The admin CLI's connection flags (`--endpoint`, `--token`, …) are global,
/// so clap also takes them after a server subcommand, where they would do
/// nothing: given there on the command line, they are refused by name (a
/// server authenticates with `--token-file` or `PYLON_ADMIN_TOKEN`, and its
/// control planes are `--control-plane`). From the environment they are
/// ambient and ignored.
///
/// # Errors
/// A server subcommand with one of those flags on its command line.
pub fn refuse_admin_flags(matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    if !SERVERS.contains(&name) {
        return Ok(());
    }
    for (id, flag) in [
        ("endpoint", "--endpoint"),
        ("token", "--token"),
        ("ca_cert", "--ca-cert"),
        ("client_cert", "--client-cert"),
        ("client_key", "--client-key"),
        ("idempotency_key", "--idempotency-key"),
    ] {
        let given = [matches, sub]
            .iter()
            .any(|m| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine));
        if given {
            bail!(
                "{flag} is for the admin commands, not `pylon {name}` (a server takes its token from --token-file or PYLON_ADMIN_TOKEN{})",
                if name == "data-plane" {
                    ", its control planes from --control-plane"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
