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
    // redb panics on some damaged pages instead of returning an error: the damage is the
    // finding, named with the file it is in.
    let (report, mut problems) =
        match crate::panics::catching(|| ledger::verify::verify_log(&ledger, args.against)) {
            Ok(report) => {
                let report = report?;
                let problems: Vec<serde_json::Value> = report
                    .problems
                    .iter()
                    .map(|p| json!({"seq": p.seq, "problem": p.what}))
                    .collect();
                (report, problems)
            }
            Err(panic) => {
                let report = ledger::verify::VerifyReport {
                    events: 0,
                    head: ledger.head()?,
                    problems: Vec::new(),
                };
                let what = format!("the log file is damaged: reading it stopped ({panic})");
                (report, vec![json!({"seq": null, "problem": what})])
            }
        };
    if problems.is_empty() {
        let checked = crate::panics::catching(|| check_projections(&ledger, report.head.seq))
            .unwrap_or_else(|panic| {
                let why = format!("reading it stopped ({panic})");
                Err(ledger::Error::DamagedProjections(why).into())
            });
        match checked {
            Ok(found) => problems.extend(found),
            Err(e) => match e.downcast_ref::<ledger::Error>() {
                Some(damage @ ledger::Error::DamagedProjections(_)) => {
                    problems.push(json!({"seq": null, "problem": damage.to_string()}));
                }
                _ => return Err(e),
            },
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
            let what = p["problem"].as_str().unwrap_or("");
            match p["seq"].as_u64() {
                Some(seq) => out_line(&format!("  seq {seq}: {what}"))?,
                None => out_line(&format!("  {what}"))?,
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEM)
    })
}

/// Brings the projections up to the log's head and checks them against it.
fn check_projections(ledger: &ledger::Ledger, head: u64) -> anyhow::Result<Vec<serde_json::Value>> {
    catch_up(ledger)?;
    // Projections must not claim more than the log holds.
    let applied = ledger::project::applied(ledger)?;
    if applied > head {
        return Ok(vec![json!({"seq": head + 1,
            "problem": format!("projections claim seq {applied}, past the log's head {head}")})]);
    }
    let view = ledger.view(None)?;
    Ok(view
        .check_against_log(20)?
        .into_iter()
        .map(|p| json!({"seq": view.applied(), "problem": format!("projection: {p}")}))
        .collect())
}
