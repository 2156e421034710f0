//! The reading commands over projections: show, runs, tree, trace, effects, state. Each
//! answers as of `--at SEQ` / `--at-time T` when given.

use std::process::ExitCode;

use ledger::project::{RunFilter, Status};

use crate::ctx::{parse_time, problem_if_not_found, AtArgs, Ctx};
use crate::human;

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    pub run_id: String,
    #[command(flatten)]
    pub at: AtArgs,
}

/// Which runs: flags shared by `runs` and `search`.
#[derive(clap::Args, Debug)]
pub struct RunFilterArgs {
    #[arg(long)]
    pub operation: Option<String>,
    #[arg(long)]
    pub doctype: Option<String>,
    /// running, waiting, completed, failed or cancelled (the run's current status).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<Status>,
    /// The workflow template (or flow) a run names.
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// Runs that started at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Runs that started at or before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    pub filter: RunFilterArgs,
    /// Only top-level runs (no parent).
    #[arg(long)]
    pub root: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Skip this many matching runs (paging).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    #[command(flatten)]
    pub at: AtArgs,
}

pub fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        format!("{s:?} is not a status (running, waiting, completed, failed, cancelled)")
    })
}

#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    pub run_id: String,
    /// Levels below the run to show (default: all).
    #[arg(long)]
    pub depth: Option<usize>,
    #[command(flatten)]
    pub at: AtArgs,
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    pub doctype: String,
    pub name: String,
    #[command(flatten)]
    pub at: AtArgs,
}

#[derive(clap::Args, Debug)]
pub struct EffectsArgs {
    pub run_id: String,
    /// Include every run under RUN_ID.
    #[arg(long)]
    pub tree: bool,
    #[command(flatten)]
    pub at: AtArgs,
}

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    #[command(flatten)]
    pub at: AtArgs,
}

fn answer<T: serde::Serialize>(
    ctx: &Ctx,
    at: &AtArgs,
    ask: impl FnOnce(&ledger::project::View) -> ledger::Result<T>,
    show: impl FnOnce(&T) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let at = at.resolve(&ledger)?;
    let view = ledger.view(at)?;
    let v = problem_if_not_found(ask(&view))?;
    if ctx.json {
        ctx.print_json(&v)?;
    } else {
        show(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(ctx: &Ctx, a: ShowArgs) -> anyhow::Result<ExitCode> {
    answer(
        ctx,
        &a.at,
        |v| v.show(&a.run_id),
        |s| human::show(&ledger::project::to_value(s)?),
    )
}

pub fn runs(ctx: &Ctx, a: RunsArgs) -> anyhow::Result<ExitCode> {
    let RunFilterArgs {
        operation,
        doctype,
        status,
        template,
        owner,
        agent,
        since,
        until,
    } = a.filter;
    let f = RunFilter {
        operation,
        doctype,
        status,
        template,
        owner,
        agent,
        root: a.root,
        since_ms: since,
        until_ms: until,
        limit: a.limit,
        offset: a.offset,
    };
    answer(ctx, &a.at, |v| v.runs_json(&f), human::runs)
}

pub fn tree(ctx: &Ctx, a: TreeArgs) -> anyhow::Result<ExitCode> {
    answer(
        ctx,
        &a.at,
        |v| v.tree(&a.run_id, a.depth),
        |t| human::tree(&ledger::project::to_value(t)?),
    )
}

pub fn trace(ctx: &Ctx, a: TraceArgs) -> anyhow::Result<ExitCode> {
    answer(
        ctx,
        &a.at,
        |v| v.trace_json(&a.doctype, &a.name),
        human::trace,
    )
}

pub fn effects(ctx: &Ctx, a: EffectsArgs) -> anyhow::Result<ExitCode> {
    answer(
        ctx,
        &a.at,
        |v| v.effects_json(&a.run_id, a.tree),
        human::effects,
    )
}

pub fn state(ctx: &Ctx, a: StateArgs) -> anyhow::Result<ExitCode> {
    // JSON straight from the projection (no intermediate values); the human view reads one.
    answer(
        ctx,
        &a.at,
        |v| v.state(),
        |s| human::state(&ledger::project::to_value(s)?),
    )
}
