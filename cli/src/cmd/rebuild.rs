//! `runledger rebuild`: build every projection and the search index again from the log.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::ctx::{out_line, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Events per projection transaction: an interrupted rebuild resumes from the last one
    /// committed. A span's events and runs are held in memory; the default measured fastest.
    #[arg(long, default_value_t = ledger::project::SPAN_EVENTS, value_parser = clap::value_parser!(u64).range(1..))]
    span: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ledger::Ledger::open_existing(&ctx.db)?;
    let head = ledger.head()?.seq;
    let bar = (std::io::IsTerminal::is_terminal(&std::io::stderr()) && head > 100_000).then(|| {
        let b = ProgressBar::new(head);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let start = Instant::now();
    ledger::project::rebuild_in_spans(&ledger, args.span, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })
    .context("rebuilding the projections (the current ones are unchanged)")?;
    query::search::rebuild(&ledger).context("rebuilding the search index")?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    if ctx.json {
        ctx.print_json(&json!({"events": head, "seconds": secs}))?;
    } else {
        out_line(&format!(
            "rebuilt projections and search index from {head} events in {secs:.2} s ({:.0} events/s)",
            head as f64 / secs.max(1e-9)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
