//! `runledger ingest FILE|-`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::ingest::{ingest_reader, IngestOptions, IngestReport, IngestSink};
use ledger::Rejection;
use serde_json::json;

use crate::ctx::{out_line, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NDJSON file, or `-` for standard input.
    pub input: PathBuf,
    /// Write each rejected line, with its line number and reason, to this file (NDJSON).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Size limit of one event, in bytes.
    #[arg(long, default_value_t = ledger::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// Return once the events are durable, before projections and the index catch up
    /// (the next command that reads catches the projections up, the next search the index).
    #[arg(long)]
    pub no_wait_indexed: bool,
}

struct Sink {
    rejects: Option<BufWriter<File>>,
    bar: Option<ProgressBar>,
    /// What is stored so far (as of the last commit).
    stored: IngestReport,
}

impl IngestSink for Sink {
    fn rejected(&mut self, line: u64, text: &[u8], reason: &Rejection) -> ledger::Result<()> {
        if let Some(w) = &mut self.rejects {
            let rec = json!({
                "line": line,
                "reason": reason.0,
                "text": String::from_utf8_lossy(text),
            });
            writeln!(w, "{rec}")?;
        }
        Ok(())
    }
    fn committed(&mut self, bytes: u64, report: &IngestReport) -> ledger::Result<()> {
        if let Some(b) = &self.bar {
            b.set_position(bytes);
        }
        self.stored.clone_from(report);
        Ok(())
    }
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let opts = IngestOptions {
        max_event_bytes: args.max_event_bytes,
        ..IngestOptions::default()
    };
    let rejects = match &args.rejects {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let ledger = ctx.open_for_write()?;
    let stdin = args.input.as_os_str() == "-";
    let size = if stdin {
        None
    } else {
        std::fs::metadata(&args.input).ok().map(|m| m.len())
    };
    let bar = match size {
        Some(n) if n > (8 << 20) && std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            let b = ProgressBar::new(n);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(b)
        }
        _ => None,
    };
    let mut sink = Sink {
        rejects,
        bar,
        stored: IngestReport::default(),
    };
    let ingested = if stdin {
        ingest_reader(&ledger, std::io::stdin(), &opts, &mut sink)
    } else {
        let f =
            File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        ingest_reader(&ledger, f, &opts, &mut sink)
    };
    if let Some(b) = &sink.bar {
        b.finish_and_clear();
    }
    if let Some(mut w) = sink.rejects.take() {
        w.flush()?;
    }
    // A failed ingest (a full disk, say) keeps what it committed before: say how much.
    let report = ingested.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "ingest stopped after {}; ingesting the same input again stores the rest (what is \
             stored is skipped as duplicates)",
            stored(&sink.stored)
        ))
    })?;
    if !args.no_wait_indexed {
        if let Err(e) = query::catch_up(&ledger) {
            // The events are stored: the report stands, and the next reading command (or
            // `rebuild`) brings projections and the index up to date.
            print_report(ctx, &report)?;
            return Err(anyhow::Error::new(e).context(format!(
                "{}, but bringing projections and the search index up to date failed (the next \
                 reading command retries)",
                stored(&report)
            )));
        }
    }
    print_report(ctx, &report)?;
    Ok(if report.rejected > 0 {
        ExitCode::from(crate::ctx::EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a report says is stored, for an error line.
fn stored(r: &IngestReport) -> String {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" as seq {a}..{b}"),
        _ => String::new(),
    };
    format!(
        "{} events stored{range} ({} duplicates, {} lines rejected)",
        r.accepted, r.duplicates, r.rejected
    )
}

pub fn print_report(ctx: &Ctx, r: &IngestReport) -> anyhow::Result<()> {
    if ctx.json {
        let errors: Vec<_> = r
            .errors
            .iter()
            .map(|e| json!({"line": e.line, "reason": e.reason}))
            .collect();
        ctx.print_json(&json!({
            "accepted": r.accepted,
            "duplicates": r.duplicates,
            "rejected": r.rejected,
            "first_seq": r.first_seq,
            "last_seq": r.last_seq,
            "errors": errors,
        }))?;
        return Ok(());
    }
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
        _ => String::new(),
    };
    out_line(&format!(
        "accepted {}{range}, duplicates {}, rejected {}",
        r.accepted, r.duplicates, r.rejected
    ))?;
    for e in &r.errors {
        eprintln!(
            "line {}: {}",
            e.line,
            crate::ctx::terminal_safe(&e.reason, false)
        );
    }
    if r.rejected as usize > r.errors.len() {
        eprintln!(
            "… and {} more rejected lines",
            r.rejected as usize - r.errors.len()
        );
    }
    Ok(())
}
