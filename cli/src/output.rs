//! Printing results: a short table for people, `-o json` for scripts.

use serde::Serialize;

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
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_norway::to_string(value)?),
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
        println!("{}", padded.join("  ").trim_end());
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
