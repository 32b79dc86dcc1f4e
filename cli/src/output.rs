//! Printing results: a short table for people, `-o json` for scripts.

use serde::Serialize;

/// `println!` for results: a reader that went away (`pylon … | head -1`)
/// ends the process quietly, as SIGPIPE ends a shell tool, instead of
/// panicking.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for results, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

/// Writes `text` to standard output; when the reader has gone (broken
/// pipe) exits at once with status 141, as a process killed by SIGPIPE
/// reports it (so `set -o pipefail` sees that output was lost, such as a
/// new key's one-time value); with 1 on any other failure to write.
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        gone(e);
    }
}

/// Writes `bytes` to standard output and flushes them, as [`write_out`].
pub fn write_out_bytes(bytes: &[u8]) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        gone(e);
    }
}

fn gone(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write the output: {e}");
    std::process::exit(1);
}

#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(clap::Args, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub format: Format,
    /// Answer from the contacted node's local state, which may lag the leader,
    /// instead of a linearizable read.
    #[arg(long)]
    pub stale: bool,
}

impl OutputArgs {
    /// The `ReadConsistency` to ask for.
    pub fn consistency(&self) -> i32 {
        let consistency = if self.stale {
            pylon_proto::admin::v1::ReadConsistency::Stale
        } else {
            pylon_proto::admin::v1::ReadConsistency::Linearizable
        };
        consistency as i32
    }
}

/// Prints `value` as JSON/YAML, or the given table rows.
///
/// JSON and YAML go through `serde_json::Value`, whose objects keep their
/// keys sorted: a model's schema (`google.protobuf.Struct`, a `HashMap`)
/// prints the same on every call, so outputs can be diffed and kept in git.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&serde_json::to_value(value)?)?),
        Format::Yaml => out!("{}", serde_norway::to_string(&serde_json::to_value(value)?)?),
        Format::Table => table(header, rows),
    }
    Ok(())
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

pub fn time(ts: Option<&pylon_proto::wkt::Timestamp>) -> String {
    match ts {
        Some(ts) => serde_json::to_value(ts)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        None => String::new(),
    }
}
