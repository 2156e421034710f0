//! `runledger demo`: a realistic coworker workload, ingested, then the questions people ask.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ledger::event::ArchivedBody;
use ledger::ingest::{ingest_reader, IngestOptions, NoSink};
use ledger::workload::{write_ndjson, WorkloadConfig};
use serde_json::json;

use crate::ctx::{out_line, Ctx};
use crate::human;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Top-level runs to generate (workflows, chat chains, flows, single CRUD runs).
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Seed of the generator: the same seed gives the same workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn heading(ctx: &Ctx, s: &str) -> anyhow::Result<()> {
    if !ctx.json {
        out_line("")?;
        out_line(&format!("── {s} ──"))?;
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = WorkloadConfig::new(args.seed, args.runs);
    let mut ndjson = Vec::new();
    let lines = write_ndjson(&cfg, &mut ndjson)?;
    let ledger = ctx.open_for_write()?;
    let start = Instant::now();
    let report = ingest_reader(
        &ledger,
        ndjson.as_slice(),
        &IngestOptions::default(),
        &mut NoSink,
    )?;
    let stored = start.elapsed();
    query::catch_up(&ledger).context("catching up projections and index")?;
    let caught_up = start.elapsed();
    let mut summary = json!({
        "db": ctx.db.display().to_string(),
        "generated": {"lines": lines, "bytes": ndjson.len(), "roots": args.runs, "seed": args.seed},
        "ingest": {"accepted": report.accepted, "duplicates": report.duplicates,
                   "rejected": report.rejected, "first_seq": report.first_seq, "last_seq": report.last_seq,
                   "stored_seconds": stored.as_secs_f64(), "caught_up_seconds": caught_up.as_secs_f64()},
    });
    if !ctx.json {
        out_line(&format!(
            "generated {lines} events ({} KB) from {} top-level runs (seed {})",
            ndjson.len() / 1024,
            args.runs,
            args.seed
        ))?;
        out_line(&format!(
            "ingested into {}: {} stored, {} duplicates (retried deliveries), {} rejected — durable in {:.0} ms, projections and index caught up in {:.0} ms",
            ctx.db.display(),
            report.accepted,
            report.duplicates,
            report.rejected,
            stored.as_secs_f64() * 1e3,
            caught_up.as_secs_f64() * 1e3
        ))?;
    }

    // A record made inside a workflow from a template: the last such Task.
    let view = ledger.view(None)?;
    let mut created: Vec<(String, String, String)> = Vec::new();
    view.reader().scan(1, view.at(), |_, ev| {
        if let ArchivedBody::Doc {
            change,
            doctype,
            name,
            ..
        } = &ev.event.body
        {
            if change.get() == ledger::DocChange::Created && doctype.as_str() == "Task" {
                created.push((
                    doctype.to_string(),
                    name.to_string(),
                    ev.event.run_id.to_string(),
                ));
            }
        }
        Ok(true)
    })?;
    let mut record = None;
    for c in created.into_iter().rev() {
        let (lineage, _) = view.lineage(&c.2)?;
        if lineage.len() > 1 && lineage.last().is_some_and(|r| r.template.is_some()) {
            record = Some(c);
            break;
        }
    }
    if let Some((doctype, name, _)) = &record {
        heading(ctx, &format!("runledger trace {doctype} {name}"))?;
        let trace = view.trace_json(doctype, name)?;
        if !ctx.json {
            human::trace(&trace)?;
        }
        let root = trace["created_by"]["root_run"].as_str().map(str::to_owned);
        summary["trace"] = trace;
        if let Some(root) = root {
            heading(ctx, &format!("runledger tree {root}"))?;
            let tree = view.tree_json(&root, None)?;
            if !ctx.json {
                human::tree(&tree)?;
            }
            summary["tree"] = tree;
        }
    }

    heading(ctx, "runledger search 'invoice' --status failed")?;
    let req = query::search::SearchRequest {
        query: "invoice".into(),
        status: Some(ledger::project::Status::Failed),
        limit: 5,
        ..Default::default()
    };
    let found = query::search::search(&ledger, &req)?;
    if !ctx.json {
        for h in found["hits"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out_line(&format!(
                "  {:<14} {:<10} {}  {}",
                h["run_id"].as_str().unwrap_or("-"),
                h["operation"].as_str().unwrap_or("-"),
                human::status(h["status"].as_str().unwrap_or("-")),
                h["snippet"].as_str().unwrap_or("").replace('\n', " ")
            ))?;
        }
        out_line(&format!(
            "{} failed runs mention an invoice",
            found["total"]
        ))?;
    }
    summary["search"] = json!({"query": "invoice", "status": "failed", "total": found["total"]});

    heading(ctx, "runledger stats --by operation")?;
    let stats = query::stats::stats_json(
        &view,
        query::stats::GroupBy::Operation,
        query::stats::TimeRange::default(),
    )?;
    if !ctx.json {
        out_line(&format!(
            "  {:<12} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "OPERATION", "RUNS", "FAILED", "CANCEL", "P50", "P95", "P99"
        ))?;
        for g in stats["groups"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out_line(&format!(
                "  {:<12} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
                g["key"].as_str().unwrap_or("-"),
                g["runs"].to_string(),
                g["failed"].to_string(),
                g["cancelled"].to_string(),
                human::duration(&g["p50_ms"]),
                human::duration(&g["p95_ms"]),
                human::duration(&g["p99_ms"])
            ))?;
        }
    }
    summary["stats"] = stats;

    heading(ctx, "runledger state")?;
    let state = view.state_json()?;
    if !ctx.json {
        human::state(&state)?;
    }
    summary["state"] = json!({
        "at_seq": state["at_seq"],
        "active_runs": state["active_runs"].as_array().map_or(0, |a| a.len()),
        "is_loading": state["is_loading"],
    });

    heading(ctx, "runledger verify")?;
    let verify = ledger::verify::verify_log(&ledger, None)?;
    if !ctx.json {
        out_line(&format!(
            "{}: {} events, head {}:{}",
            if verify.ok() { "ok" } else { "NOT OK" },
            verify.events,
            verify.head.seq,
            verify.head.hash_hex()
        ))?;
    }
    summary["verify"] = json!({"ok": verify.ok(), "head": {"seq": verify.head.seq, "hash": verify.head.hash_hex()}});
    if ctx.json {
        ctx.print_json(&summary)?;
    }
    Ok(ExitCode::SUCCESS)
}
