//! `runledger verify [--against SEQ:HASH]`.

use std::process::ExitCode;

use serde_json::json;

use crate::ctx::{catch_up, out_line, Ctx, EXIT_PROBLEM};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Prove that the log still extends an earlier head `SEQ:HASH` (as printed by verify).
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_against)]
    pub against: Option<(u64, ledger::Hash)>,
}

fn parse_against(s: &str) -> Result<(u64, ledger::Hash), String> {
    let (seq, hash) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SEQ:HASH"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("{seq:?} is not a sequence number"))?;
    let hash =
        ledger::parse_hex(hash).ok_or_else(|| format!("{hash:?} is not a 64-digit hex hash"))?;
    Ok((seq, hash))
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    // The log first, as it is: bringing projections up to date reads it, and a damaged log is
    // this command's finding, not its failure.
    let ledger = ctx.open_as_is()?;
    let report = ledger::verify::verify_log(&ledger, args.against)?;
    let mut problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|p| json!({"seq": p.seq, "problem": p.what}))
        .collect();
    if problems.is_empty() {
        catch_up(&ledger)?;
        // Projections must not claim more than the log holds.
        let applied = ledger::project::applied(&ledger)?;
        if applied > report.head.seq {
            problems.push(json!({"seq": report.head.seq + 1,
                "problem": format!("projections claim seq {applied}, past the log's head {}", report.head.seq)}));
        }
    }
    if problems.is_empty() {
        let view = ledger.view(None)?;
        for p in view.check_against_log(20)? {
            problems.push(json!({"seq": view.applied(), "problem": format!("projection: {p}")}));
        }
    }
    let ok = problems.is_empty();
    if ctx.json {
        ctx.print_json(&json!({
            "ok": ok,
            "events": report.events,
            "head": {"seq": report.head.seq, "hash": report.head.hash_hex()},
            "first_bad_seq": problems.first().map(|p| p["seq"].clone()),
            "problems": problems,
        }))?;
    } else if ok {
        out_line(&format!(
            "ok: {} events, head {}:{}",
            report.events,
            report.head.seq,
            report.head.hash_hex()
        ))?;
    } else {
        out_line(&format!(
            "NOT OK: {} events verified before the first problem",
            report.events
        ))?;
        for p in &problems {
            out_line(&format!(
                "  seq {}: {}",
                p["seq"],
                p["problem"].as_str().unwrap_or("")
            ))?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEM)
    })
}
