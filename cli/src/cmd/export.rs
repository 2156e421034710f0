//! `runledger export`: runs, events and record changes as partitioned Parquet, NDJSON or CSV
//! files with a manifest, incremental from the last export.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use query::export::writer::Format;
use query::export::{export, ExportOptions};
use serde_json::Value;

use crate::ctx::{out_line, parse_time, Ctx, Problem};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// parquet, ndjson or csv.
    #[arg(long, default_value = "parquet", value_parser = parse_format)]
    pub format: Format,
    /// The export directory (created when missing; holds `manifest.json`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Only rows whose time (event ts; a run's start, else end) is at or after this (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only rows whose time is at or before this (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// Export the events after this seq (default: after the last seq in DIR's manifest).
    #[arg(long, value_name = "N")]
    pub since_seq: Option<u64>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("{s:?} is not a format (parquet, ndjson, csv)"))
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let opts = ExportOptions {
        format: args.format,
        out: args.out,
        since_ms: args.since,
        until_ms: args.until,
        since_seq: args.since_seq,
    };
    let started = Instant::now();
    let mut v = export(&ledger, &opts).map_err(|e| match e {
        query::Error::BadQuery(m) => anyhow::Error::from(Problem(m)),
        other => anyhow::Error::from(other),
    })?;
    v["seconds"] = Value::from(started.elapsed().as_secs_f64());
    if ctx.json {
        ctx.print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if v["up_to_date"].as_bool() == Some(true) {
        out_line(&format!(
            "{}: already up to date at seq {}",
            opts.out.display(),
            v["last_seq"]
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = &v["rows"];
    out_line(&format!(
        "exported seq {}..={} to {} ({}): {} runs, {} events, {} record changes in {} files, {} bytes, {:.2}s",
        v["from_seq"],
        v["to_seq"],
        opts.out.display(),
        opts.format.as_str(),
        rows["runs"],
        rows["events"],
        rows["doc_changes"],
        v["files"].as_array().map_or(0, Vec::len),
        v["bytes"],
        v["seconds"].as_f64().unwrap_or(0.0),
    ))?;
    Ok(ExitCode::SUCCESS)
}
