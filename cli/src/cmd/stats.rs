//! `runledger stats`: latency percentiles and outcome counts per group, the slowest runs,
//! failures by normalised message, and a template's time by step.
use std::process::ExitCode;

use query::stats::{self, GroupBy, TimeRange};
use serde_json::Value;

use crate::ctx::{out_line, parse_time, AtArgs, Ctx, Problem};
use crate::human;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Group runs by operation, doctype, template (of the run's root), owner, agent or status.
    #[arg(long, default_value = "operation", value_parser = parse_by)]
    pub by: GroupBy,
    /// Runs that started at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Runs that started at or before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// The N slowest runs instead of groups.
    #[arg(long, value_name = "N", conflicts_with_all = ["errors", "steps"])]
    pub slowest: Option<usize>,
    /// Failures grouped by normalised message instead of groups.
    #[arg(long, conflicts_with = "steps")]
    pub errors: bool,
    /// With --steps: the workflow template to break down.
    #[arg(long, value_name = "NAME", requires = "steps")]
    pub template: Option<String>,
    /// A template's time by step: per-step percentiles and the critical path.
    #[arg(long, requires = "template")]
    pub steps: bool,
    #[command(flatten)]
    pub at: AtArgs,
}

fn parse_by(s: &str) -> Result<GroupBy, String> {
    GroupBy::parse(s).ok_or_else(|| {
        format!("{s:?} is not a grouping (operation, doctype, template, owner, agent, status)")
    })
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let at = args.at.resolve(&ledger)?;
    let (at, rows) = stats::load_rows_at(&ledger, at)?;
    let range = TimeRange {
        since_ms: args.since,
        until_ms: args.until,
    };
    let mut v = if let Some(n) = args.slowest {
        stats::slowest_json(&rows, n, range)
    } else if args.errors {
        stats::errors_json(&rows, range)
    } else if let (true, Some(t)) = (args.steps, args.template.as_deref()) {
        if let Err(e) = stats::require_template(&rows, t) {
            return Err(Problem(e.to_string()).into());
        }
        stats::template_steps_json(&rows, t, range)?
    } else {
        stats::groups_json(&rows, args.by, range)?
    };
    v["at_seq"] = Value::from(at);
    if ctx.json {
        ctx.print_json(&v)?;
    } else if args.slowest.is_some() {
        print_slowest(&v)?;
    } else if args.errors {
        print_errors(&v)?;
    } else if args.steps {
        print_steps(&v)?;
    } else {
        print_groups(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn print_groups(v: &Value) -> anyhow::Result<()> {
    out_line(&format!(
        "{:<28} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        v["by"].as_str().unwrap_or("key").to_uppercase(),
        "RUNS",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "P50",
        "P95",
        "P99",
        "MAX"
    ))?;
    for g in list(&v["groups"]) {
        out_line(&format!(
            "{} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human::cell(&s(&g["key"]), 28),
            s(&g["runs"]),
            s(&g["completed"]),
            s(&g["failed"]),
            s(&g["cancelled"]),
            human::duration(&g["p50_ms"]),
            human::duration(&g["p95_ms"]),
            human::duration(&g["p99_ms"]),
            human::duration(&g["max_ms"]),
        ))?;
    }
    out_line(&format!(
        "{} runs; percentiles are nearest-rank over runs with a duration",
        v["runs"]
    ))
}

fn print_slowest(v: &Value) -> anyhow::Result<()> {
    out_line(&format!(
        "{:<28} {:<12} {:<18} {:<14} {:>9}",
        "RUN", "OPERATION", "DOCTYPE", "STATUS", "DURATION"
    ))?;
    for r in list(&v["slowest"]) {
        out_line(&format!(
            "{} {} {} {} {:>9}",
            human::cell(&s(&r["run_id"]), 28),
            human::cell(&s(&r["operation"]), 12),
            human::cell(&s(&r["doctype"]), 18),
            human::status_cell(r["status"].as_str().unwrap_or(""), 14),
            human::duration(&r["duration_ms"]),
        ))?;
    }
    Ok(())
}

fn print_errors(v: &Value) -> anyhow::Result<()> {
    out_line(&format!("{:>6}  {:<28}  MESSAGE", "COUNT", "EXAMPLE RUN"))?;
    for e in list(&v["errors"]) {
        out_line(&format!(
            "{:>6}  {}  {}",
            s(&e["count"]),
            human::cell(&s(&e["example_run_id"]), 28),
            s(&e["message"])
        ))?;
    }
    out_line(&format!("{} failed runs", v["failed"]))
}

fn print_steps(v: &Value) -> anyhow::Result<()> {
    out_line(&format!(
        "template {} — {} workflows, root p50 {} p95 {} max {}",
        s(&v["template"]),
        v["workflows"],
        human::duration(&v["root"]["p50_ms"]),
        human::duration(&v["root"]["p95_ms"]),
        human::duration(&v["root"]["max_ms"]),
    ))?;
    out_line(&format!(
        "{:<24} {:>6} {:>9} {:>9} {:>9} {:>7}",
        "STEP", "RUNS", "P50", "P95", "MAX", "SHARE"
    ))?;
    for st in list(&v["steps"]) {
        out_line(&format!(
            "{} {:>6} {:>9} {:>9} {:>9} {:>7}",
            human::cell(&s(&st["step_id"]), 24),
            s(&st["runs"]),
            human::duration(&st["p50_ms"]),
            human::duration(&st["p95_ms"]),
            human::duration(&st["max_ms"]),
            share(&st["median_share"]),
        ))?;
    }
    let path: Vec<String> = list(&v["critical_path"])
        .iter()
        .map(|p| format!("{} ({})", s(&p["step_id"]), share(&p["median_share"])))
        .collect();
    out_line(&format!("critical path: {}", path.join(" → ")))
}

fn share(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}
