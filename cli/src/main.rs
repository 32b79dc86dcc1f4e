//! `pylon`: runs the planes (`dev`, `control-plane`, `data-plane`) and drives the admin API
//! (`apply`, `deploy`, `rollback`, `cluster …`) — the same gRPC API automation
//! uses. Wiring and presentation only; no logic of its own.

#[macro_use]
mod output;
mod client;
mod logging;
mod run;
mod telemetry;
mod verbs;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

mod settings;

#[derive(Parser)]
#[command(
    name = "pylon",
    version,
    about = "Pylon: a self-hosted, distributed API gateway"
)]
struct Cli {
    #[command(flatten)]
    connection: client::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process for local use: a single-node control plane
    /// in a local data directory and a data plane.
    Dev(Box<run::DevArgs>),
    /// Run a control-plane node.
    ControlPlane(Box<run::ControlPlaneArgs>),
    /// Run a data-plane (proxy) node.
    DataPlane(Box<run::DataPlaneArgs>),
    #[command(flatten)]
    Admin(verbs::AdminCommand),
}

fn main() -> ExitCode {
    // Every flag of the servers also from PYLON_* and from --config FILE.
    let command = match settings::command(Cli::command(), std::env::args_os().collect()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let matches = command.get_matches();
    if let Err(e) = settings::refuse_admin_flags(&matches) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => run::dev(*args).await,
            Command::ControlPlane(args) => run::control_plane(*args).await,
            Command::DataPlane(args) => run::data_plane(*args).await,
            Command::Admin(command) => verbs::run(&cli.connection, command).await,
        }
    });
    // A server's error goes after its last log lines; those get at most
    // logging::EXIT_FLUSH when stderr stalls (the admin verbs queue none).
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::say(&format!("error: {e:#}\n"));
            ExitCode::FAILURE
        }
    };
    logging::flush(logging::EXIT_FLUSH);
    code
}
