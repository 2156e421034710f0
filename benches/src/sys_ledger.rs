//! runledger: the real bulk ingest, and two probes that split its time into parsing and
//! appending.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use ledger::ingest::{ingest_reader, IngestOptions, IngestReport, IngestSink};
use ledger::{Event, Ledger};

use crate::clock::Clock;
use crate::gen::Input;
use crate::peer::{disk_use, Peer, Role, Sample};

const DB_FILE: &str = "ledger.redb";

/// Events per `Ledger::append` in the append-only probe (≈ one 4 MiB ingest chunk).
pub const APPEND_BATCH: usize = 16_384;

/// `ingest_reader` on the NDJSON file: reading, parsing on every core, durable group commits.
pub struct Runledger;

/// Counts commits (the sink is called once per committed chunk).
#[derive(Default)]
struct CountCommits(u64);

impl IngestSink for CountCommits {
    fn committed(&mut self, _bytes: u64, _report: &IngestReport) -> ledger::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

impl Peer for Runledger {
    fn key(&self) -> String {
        "runledger".into()
    }
    fn label(&self) -> String {
        "runledger (redb+rkyv log, parse incl.)".into()
    }

    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let path = dir.join(DB_FILE);
        let clock = Clock::start();
        let ledger = Ledger::open(&path)?;
        let file = std::fs::File::open(&input.path)?;
        let mut commits = CountCommits::default();
        let report = ingest_reader(&ledger, file, &IngestOptions::default(), &mut commits)?;
        let timing = clock.stop();
        let offered = report.accepted + report.duplicates + report.rejected;
        if offered != input.events {
            bail!(
                "runledger saw {offered} events where the input has {}",
                input.events
            );
        }
        if report.rejected > 0 {
            eprintln!(
                "warning: runledger rejected {} lines, first: {:?}",
                report.rejected,
                report.errors.first()
            );
        }
        check_chain(&ledger, report.accepted)?;
        drop(ledger);
        Ok(Sample {
            events: offered,
            stored: Some(report.accepted),
            timing,
            disk: Some(disk_use(dir)?),
            commits: Some(commits.0),
        })
    }
}

/// Parsing only: every line through `ledger::parse_event` on all cores, in 4 MiB chunks like
/// ingest, events dropped. The file is read into memory before the clock starts.
pub struct ParseOnly;

impl Peer for ParseOnly {
    fn key(&self) -> String {
        "runledger-parse".into()
    }
    fn label(&self) -> String {
        format!("runledger parse only ({} threads)", parsers())
    }
    fn role(&self) -> Role {
        Role::Breakdown
    }

    fn ingest(&self, input: &Input, _dir: &Path) -> Result<Sample> {
        let bytes = std::fs::read(&input.path)?;
        let chunks = split_chunks(&bytes, IngestOptions::default().chunk_bytes);
        let clock = Clock::start();
        let (counts, rejected) = parse_parallel(&chunks, parsers(), |events| events.len())?;
        let timing = clock.stop();
        let parsed: usize = counts.iter().sum();
        Ok(Sample {
            events: parsed as u64 + rejected,
            stored: None,
            timing,
            disk: None,
            commits: None,
        })
    }
}

/// Appending only: events parsed before the clock starts, then `Ledger::append` in batches of
/// [`APPEND_BATCH`] on one thread (encoding, hashing, dedup, redb commit).
pub struct AppendOnly {
    pub batch: usize,
}

impl Default for AppendOnly {
    fn default() -> Self {
        AppendOnly {
            batch: APPEND_BATCH,
        }
    }
}

impl Peer for AppendOnly {
    fn key(&self) -> String {
        "runledger-append".into()
    }
    fn label(&self) -> String {
        format!(
            "runledger append only ({} ev/commit)",
            crate::report::thousands(self.batch as u64)
        )
    }
    fn role(&self) -> Role {
        Role::Breakdown
    }

    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let batches: Vec<Vec<Event>> = {
            let bytes = std::fs::read(&input.path)?;
            let chunks = split_chunks(&bytes, IngestOptions::default().chunk_bytes);
            let (parsed, _) = parse_parallel(&chunks, parsers(), |events| events)?;
            let size = self.batch.max(1);
            let mut batches = Vec::new();
            let mut batch = Vec::with_capacity(size);
            for event in parsed.into_iter().flatten() {
                batch.push(event);
                if batch.len() == size {
                    batches.push(std::mem::replace(&mut batch, Vec::with_capacity(size)));
                }
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
            batches
        };
        let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let path = dir.join(DB_FILE);
        let clock = Clock::start();
        let ledger = Ledger::open(&path)?;
        let (mut stored, mut commits) = (0u64, 0u64);
        for batch in batches {
            let outcomes = ledger.append(batch)?;
            stored += outcomes
                .iter()
                .filter(|o| matches!(o, ledger::Outcome::Stored(_)))
                .count() as u64;
            commits += 1;
        }
        let timing = clock.stop();
        check_chain(&ledger, stored)?;
        drop(ledger);
        Ok(Sample {
            events,
            stored: Some(stored),
            timing,
            disk: Some(disk_use(dir)?),
            commits: Some(commits),
        })
    }
}

fn parsers() -> usize {
    IngestOptions::default().parsers
}

/// Verifies the hash chain after the clock stopped: a benchmark of a broken log is worthless.
fn check_chain(ledger: &Ledger, stored: u64) -> Result<()> {
    let report = ledger::verify::verify_log(ledger, None)?;
    if !report.ok() || report.events != stored {
        bail!(
            "verify after ingest: {} events, {} stored, problems: {:?}",
            report.events,
            stored,
            report.problems.first()
        );
    }
    Ok(())
}

/// Cuts `bytes` into pieces of about `size` bytes, each ending at a line end.
fn split_chunks(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let cut = if rest.len() <= size {
            rest.len()
        } else {
            match rest[size..].iter().position(|&b| b == b'\n') {
                Some(p) => size + p + 1,
                None => rest.len(),
            }
        };
        let (chunk, tail) = rest.split_at(cut);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Parses the chunks on `threads` threads (each takes the next unparsed chunk), handing each
/// chunk's events to `take` on the parsing thread. Returns the results in chunk order and the
/// number of rejected lines.
fn parse_parallel<T: Send>(
    chunks: &[&[u8]],
    threads: usize,
    take: impl Fn(Vec<Event>) -> T + Sync,
) -> Result<(Vec<T>, u64)> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, T, u64)>> = Mutex::new(Vec::with_capacity(chunks.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { return };
                let (events, rejected) = parse_chunk(chunk);
                let t = take(events);
                if let Ok(mut d) = done.lock() {
                    d.push((i, t, rejected));
                }
            });
        }
    });
    let mut done = done
        .into_inner()
        .map_err(|_| anyhow!("a parser thread panicked"))?;
    if done.len() != chunks.len() {
        bail!("parsed {} of {} chunks", done.len(), chunks.len());
    }
    done.sort_unstable_by_key(|(i, _, _)| *i);
    let rejected = done.iter().map(|(_, _, r)| r).sum();
    Ok((done.into_iter().map(|(_, t, _)| t).collect(), rejected))
}

/// Parses the lines of one chunk the way `ingest_reader` does; returns the events and the
/// number of rejected lines.
fn parse_chunk(chunk: &[u8]) -> (Vec<Event>, u64) {
    let mut events = Vec::with_capacity(chunk.len() / 200);
    let mut rejected = 0;
    for raw in chunk.split(|&b| b == b'\n') {
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match std::str::from_utf8(raw).map(ledger::parse_event) {
            Ok(Ok(ev)) => events.push(ev),
            _ => rejected += 1,
        }
    }
    (events, rejected)
}
