//! The systems under test, behind one trait (like redb's `crates/redb-bench`).
//!
//! Each benchmark is a method of [`Peer`]; a system that has nothing to say for a benchmark
//! keeps the default. The harness runs every `(benchmark, peer)` pair in a child process of its
//! own (see `main.rs`), so peak memory is per system and one system's page cache and allocator
//! state do not leak into the next one's figures.
//!
//! To add a benchmark: add a method here (default: not supported), implement it for the
//! systems that have it, add a `Bench` variant in `main.rs` and a table in `report.rs`.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::clock::Timing;
use crate::gen::Input;

/// What one timed run of one system produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Events processed (offered), the numerator of the rate.
    pub events: u64,
    /// Events actually stored (after dedup / rejection), when the system stores them.
    pub stored: Option<u64>,
    /// Time of the measured part.
    #[serde(flatten)]
    pub timing: Timing,
    /// The files the system left in its directory.
    pub disk: Option<DiskUse>,
    /// Durable commits (fsyncs) done.
    pub commits: Option<u64>,
    /// Named figures of the benchmarks that measure more than one rate (latencies, sizes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

impl Sample {
    /// A run over a store of `stored` events (every query benchmark): events offered = stored.
    pub fn of_store(stored: u64, timing: Timing, disk: DiskUse, metrics: Vec<Metric>) -> Sample {
        Sample {
            events: stored,
            stored: Some(stored),
            timing,
            disk: Some(disk),
            metrics,
            ..Sample::default()
        }
    }
}

/// One named figure of a run: `unit` is `us` (latency, microseconds), `events/s`, `bytes`,
/// `MiB`, `x` (a ratio) or `n` (a count).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// Space taken by a system's files.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct DiskUse {
    /// Blocks allocated on disk (`st_blocks × 512`): what the files cost.
    pub bytes: u64,
    /// Sum of file lengths; larger than `bytes` for sparse files (redb grows its file sparsely).
    pub apparent_bytes: u64,
}

/// Whether a row competes with runledger or explains where runledger's own time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Peer,
    Breakdown,
}

/// One system under test.
pub trait Peer {
    /// Short stable name: the `--only` filter and the `system` field of results.jsonl.
    fn key(&self) -> String;
    /// The row label in tables.
    fn label(&self) -> String;
    fn role(&self) -> Role {
        Role::Peer
    }
    /// Durable bulk ingest of `input` into a fresh store under `dir` (empty, owned by this
    /// run). Every event must be on disk (fsync'd) when this returns.
    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let _ = (input, dir);
        bail!("{} has no ingest benchmark", self.key())
    }
    /// Builds the projections from stored events (timed), then times point queries.
    fn projections(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let _ = (input, dir);
        bail!("{} has no projections benchmark", self.key())
    }
    /// Builds the full-text index (timed), then times queries.
    fn search(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let _ = (input, dir);
        bail!("{} has no search benchmark", self.key())
    }
    /// Times `stats --by operation` (and, where there is one, the export it reads).
    fn stats(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let _ = (input, dir);
        bail!("{} has no stats benchmark", self.key())
    }
    /// Ingest over HTTP (or the CLI bulk path it is compared with) into a fresh store.
    fn serve(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let _ = (input, dir);
        bail!("{} has no serve benchmark", self.key())
    }
}

/// The systems of `projections` and `search`: runledger and SQLite.
pub fn query_peers() -> Vec<Box<dyn Peer>> {
    vec![
        Box::new(crate::sys_ledger::Runledger),
        Box::new(crate::sys_sqlite::Sqlite::default()),
    ]
}

/// The systems of `stats`: runledger, SQLite, DuckDB over runledger's Parquet export.
pub fn stats_peers() -> Vec<Box<dyn Peer>> {
    vec![
        Box::new(crate::sys_ledger::Runledger),
        Box::new(crate::sys_sqlite::Sqlite::default()),
        Box::new(crate::bench_stats::DuckDb),
    ]
}

/// The systems of `serve`: the CLI bulk path, then HTTP ingest.
pub fn serve_peers() -> Vec<Box<dyn Peer>> {
    use crate::bench_serve::{CliBulk, Http, Mode};
    vec![
        Box::new(CliBulk),
        Box::new(Http(Mode::Throughput)),
        Box::new(Http(Mode::ThroughputDeferred)),
        Box::new(Http(Mode::Latency)),
        Box::new(Http(Mode::LatencyDeferred)),
    ]
}

/// The systems of the `ingest` benchmark, in table order: runledger, its peers, then the
/// breakdown of runledger's time.
pub fn ingest_peers() -> Vec<Box<dyn Peer>> {
    use crate::sys_file::{Batch, PlainFile};
    use crate::sys_ledger::{Probe, Stage};
    let commit_bytes = ledger::ingest::IngestOptions::default().chunk_bytes;
    vec![
        Box::new(crate::sys_ledger::Runledger),
        Box::new(PlainFile {
            batch: Batch::Lines(1_000),
        }),
        Box::new(PlainFile {
            batch: Batch::Bytes(commit_bytes),
        }),
        Box::new(crate::sys_sqlite::Sqlite::default()),
        Box::new(Probe(Stage::Parse)),
        Box::new(Probe(Stage::ParseEncode)),
        Box::new(Probe(Stage::AppendEncoded)),
        Box::new(Probe(Stage::Append)),
    ]
}

/// Space taken by the regular files under `dir` (recursively).
pub fn disk_use(dir: &Path) -> Result<DiskUse> {
    use std::os::unix::fs::MetadataExt;
    let mut total = DiskUse::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let sub = disk_use(&entry.path())?;
            total.bytes += sub.bytes;
            total.apparent_bytes += sub.apparent_bytes;
        } else {
            total.bytes += meta.blocks() * 512;
            total.apparent_bytes += meta.len();
        }
    }
    Ok(total)
}
