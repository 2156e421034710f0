//! runledger: the real bulk ingest, and probes that split its time along the ingest pipeline.
//!
//! `ingest_reader` reads 8 MiB chunks, parses and encodes each chunk on a parser thread (one per
//! core), and appends the encoded chunks in order as one stream (`Ledger::append_stream`: the
//! calling thread stores and commits, a packer thread chains and packs the next chunk), one
//! durable commit per chunk. The probes time each stage alone on the same chunks (the same
//! commit boundaries), with everything before the stage done before the clock starts:
//! - parse only: `parse_event` on every line, all cores;
//! - parse + encode: what the parser threads do (`parse_event` + `EncodedBatch::push` +
//!   `find_repeats`);
//! - append encoded: what the writer side does (`Ledger::append_stream`: dedup, chain hash,
//!   block packing, redb commit and fsync, on its two threads);
//! - append: `Ledger::append` of parsed events (encoding on the writer thread), the API an
//!   embedding program would call.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use ledger::encode::EncodedBatch;
use ledger::ingest::{ingest_reader, IngestOptions, IngestReport, IngestSink};
use ledger::{EventRef, Ledger};

use crate::clock::Clock;
use crate::gen::Input;
use crate::peer::{disk_use, Peer, Role, Sample};

const DB_FILE: &str = "ledger.redb";

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
            ..Sample::default()
        })
    }

    fn projections(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_projections::runledger(input, dir)
    }
    fn search(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_search::runledger(input, dir)
    }
    fn stats(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_stats::runledger(input, dir)
    }
}

/// Which stage of the pipeline a probe times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Parse,
    ParseEncode,
    AppendEncoded,
    Append,
}

/// One stage of runledger's ingest, timed alone.
pub struct Probe(pub Stage);

impl Peer for Probe {
    fn key(&self) -> String {
        match self.0 {
            Stage::Parse => "runledger-parse",
            Stage::ParseEncode => "runledger-encode",
            Stage::AppendEncoded => "runledger-append-encoded",
            Stage::Append => "runledger-append",
        }
        .into()
    }
    fn label(&self) -> String {
        let n = parsers();
        match self.0 {
            Stage::Parse => format!("parse only ({n} threads)"),
            Stage::ParseEncode => format!("parse + encode ({n} threads) = parser threads"),
            Stage::AppendEncoded => "append_stream of encoded chunks = writer side".into(),
            Stage::Append => "append of parsed events (encode+append, 1 thread)".into(),
        }
    }
    fn role(&self) -> Role {
        Role::Breakdown
    }

    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let bytes = std::fs::read(&input.path)?;
        let chunks = split_chunks(&bytes, IngestOptions::default().chunk_bytes);
        match self.0 {
            Stage::Parse => {
                let clock = Clock::start();
                let counts = parse_parallel(&chunks, |chunk| {
                    let mut n = 0u64;
                    let rejected = parse_lines(chunk, |_event| {
                        n += 1;
                        Ok(())
                    })?;
                    Ok(n + rejected)
                })?;
                let timing = clock.stop();
                Ok(Sample {
                    events: counts.iter().sum(),
                    timing,
                    ..Sample::default()
                })
            }
            Stage::ParseEncode => {
                let clock = Clock::start();
                let counts = parse_parallel(&chunks, |chunk| {
                    let (batch, rejected) = encode_chunk(chunk)?;
                    Ok(batch.len() as u64 + rejected)
                })?;
                let timing = clock.stop();
                Ok(Sample {
                    events: counts.iter().sum(),
                    timing,
                    ..Sample::default()
                })
            }
            Stage::AppendEncoded => {
                let batches = parse_parallel(&chunks, |chunk| Ok(encode_chunk(chunk)?.0))?;
                drop(bytes);
                let events = batches.iter().map(|b| b.len() as u64).sum();
                timed_appends(dir, events, |ledger, count| {
                    ledger.append_stream(
                        batches,
                        |b| b,
                        |_, outcomes| {
                            count(outcomes);
                            Ok(())
                        },
                    )
                })
            }
            Stage::Append => {
                let batches = parse_parallel(&chunks, |chunk| {
                    let mut events = Vec::with_capacity(chunk.len() / 200);
                    parse_lines(chunk, |event| {
                        events.push(event.into_owned());
                        Ok(())
                    })?;
                    Ok(events)
                })?;
                drop(bytes);
                let events = batches.iter().map(|b| b.len() as u64).sum();
                timed_appends(dir, events, |ledger, count| {
                    for batch in batches {
                        count(&ledger.append(batch)?);
                    }
                    Ok(())
                })
            }
        }
    }
}

/// Opens a fresh ledger in `dir` and runs `append` on the clock; it reports each commit's
/// outcomes to the counter it is given.
fn timed_appends(
    dir: &Path,
    events: u64,
    append: impl FnOnce(&Ledger, &mut dyn FnMut(&[ledger::Outcome])) -> ledger::Result<()>,
) -> Result<Sample> {
    let clock = Clock::start();
    let ledger = Ledger::open(dir.join(DB_FILE))?;
    let (mut stored, mut commits) = (0u64, 0u64);
    append(&ledger, &mut |outcomes| {
        stored += outcomes
            .iter()
            .filter(|o| matches!(o, ledger::Outcome::Stored(_)))
            .count() as u64;
        commits += 1;
    })?;
    let timing = clock.stop();
    check_chain(&ledger, stored)?;
    drop(ledger);
    Ok(Sample {
        events,
        stored: Some(stored),
        timing,
        disk: Some(disk_use(dir)?),
        commits: Some(commits),
        ..Sample::default()
    })
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

/// Cuts `bytes` into pieces the way `ingest_reader` does: `size` bytes, then back to the last
/// line end.
fn split_chunks(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let cut = if rest.len() <= size {
            rest.len()
        } else {
            match rest[..size].iter().rposition(|&b| b == b'\n') {
                Some(p) => p + 1,
                None => rest.len(),
            }
        };
        let (chunk, tail) = rest.split_at(cut);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Runs `work` on every chunk, on one thread per core (each takes the next chunk), and
/// returns the results in chunk order.
fn parse_parallel<T: Send>(
    chunks: &[&[u8]],
    work: impl Fn(&[u8]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<T>)>> = Mutex::new(Vec::with_capacity(chunks.len()));
    std::thread::scope(|s| {
        for _ in 0..parsers().max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { return };
                let t = work(chunk);
                if let Ok(mut d) = done.lock() {
                    d.push((i, t));
                }
            });
        }
    });
    let mut done = done
        .into_inner()
        .map_err(|_| anyhow!("a parser thread panicked"))?;
    if done.len() != chunks.len() {
        bail!("processed {} of {} chunks", done.len(), chunks.len());
    }
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Parses the lines of one chunk as `ingest_reader` does, handing each event to `f`; returns
/// the number of rejected lines.
fn parse_lines(chunk: &[u8], mut f: impl FnMut(EventRef) -> Result<()>) -> Result<u64> {
    let mut rejected = 0;
    for raw in chunk.split(|&b| b == b'\n') {
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let parsed = std::str::from_utf8(raw)
            .map(|line| ledger::parse::parse_event_ref(line, ledger::DEFAULT_MAX_EVENT_BYTES));
        match parsed {
            Ok(Ok(event)) => f(event)?,
            _ => rejected += 1,
        }
    }
    Ok(rejected)
}

/// Parses and encodes one chunk and finds its repeated ids, as a parser thread of
/// `ingest_reader` does.
fn encode_chunk(chunk: &[u8]) -> Result<(EncodedBatch, u64)> {
    let mut batch = EncodedBatch::with_capacity(chunk.len() / 200);
    let rejected = parse_lines(chunk, |event| Ok(batch.push(&event)?))?;
    batch.find_repeats()?;
    Ok((batch, rejected))
}
