//! `runledger`: the command-line front of the ledger. Flags are parsed into checked settings
//! before any I/O; each command lives in its own module under `cmd/`.

mod cmd;
mod ctx;
mod human;
mod panics;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ctx::Ctx;

/// An event-sourced run ledger and trace analyzer for coworker engines.
#[derive(Parser, Debug)]
#[command(name = "runledger", version, about, propagate_version = true)]
struct Cli {
    /// The ledger file (default: $RUNLEDGER_DB, else ./runledger.db).
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_DB",
        default_value = "runledger.db"
    )]
    db: std::path::PathBuf,
    /// Print one JSON document (NDJSON where noted) instead of human output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append NDJSON events (ingest format v1) from a file or `-` (stdin).
    Ingest(cmd::ingest::Args),
    /// Walk the hash chain and check projections against the log.
    Verify(cmd::verify::Args),
    /// Drop every projection and the search index and rebuild them from the log.
    Rebuild(cmd::rebuild::Args),
    /// Generate a realistic coworker workload, ingest it and show what the ledger answers.
    Demo(cmd::demo::Args),
    /// One run: its context, status, input, output and children.
    Show(cmd::read::ShowArgs),
    /// List runs, newest first, with filters.
    Runs(cmd::read::RunsArgs),
    /// The run tree under a run.
    Tree(cmd::read::TreeArgs),
    /// A record traced back to the runs, workflows and templates that made and changed it.
    Trace(cmd::read::TraceArgs),
    /// The records a run (or its whole tree) changed.
    Effects(cmd::read::EffectsArgs),
    /// The CoworkerState view: active runs, pipelines, current run, loading.
    State(cmd::read::StateArgs),
    /// Full-text and JSON-path search over what runs took and gave.
    Search(cmd::search::Args),
    /// Latency and failure statistics.
    Stats(cmd::stats::Args),
    /// The ordered event stream of a run tree.
    Replay(cmd::replay::Args),
    /// Two runs or two trees, step by step.
    Diff(cmd::diff::Args),
    /// A terminal waterfall of a run tree.
    Timeline(cmd::timeline::Args),
    /// Export runs, events and record changes for DuckDB or Spark.
    Export(cmd::export::Args),
    /// Serve the HTTP API (ingest, queries, live tail).
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    panics::install(false);
    let ctx = Ctx::new(cli.db, cli.json);
    let result = panics::catching(|| dispatch(&ctx, cli.command))
        .unwrap_or_else(|panic| Err(panics::command_error(panic)));
    match result {
        Ok(code) => code,
        Err(e) => ctx::report_error(&e),
    }
}

fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ingest(a) => cmd::ingest::run(ctx, a),
        Command::Verify(a) => cmd::verify::run(ctx, a),
        Command::Rebuild(a) => cmd::rebuild::run(ctx, a),
        Command::Demo(a) => cmd::demo::run(ctx, a),
        Command::Show(a) => cmd::read::show(ctx, a),
        Command::Runs(a) => cmd::read::runs(ctx, a),
        Command::Tree(a) => cmd::read::tree(ctx, a),
        Command::Trace(a) => cmd::read::trace(ctx, a),
        Command::Effects(a) => cmd::read::effects(ctx, a),
        Command::State(a) => cmd::read::state(ctx, a),
        Command::Search(a) => cmd::search::run(ctx, a),
        Command::Stats(a) => cmd::stats::run(ctx, a),
        Command::Replay(a) => cmd::replay::run(ctx, a),
        Command::Diff(a) => cmd::diff::run(ctx, a),
        Command::Timeline(a) => cmd::timeline::run(ctx, a),
        Command::Export(a) => cmd::export::run(ctx, a),
        Command::Serve(a) => serve::run(ctx, a),
    }
}
