//! What the query benchmarks (`projections`, `search`, `stats`) share: loading the same input
//! into runledger and SQLite (untimed setup), the SQLite projections, the random keys every
//! system is asked about, and latency percentiles.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ledger::ingest::{ingest_reader, IngestOptions, IngestReport, IngestSink};
use ledger::Ledger;
use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::Value;

use crate::clock::{Clock, Timing};
use crate::gen::Input;
use crate::peer::{Metric, Peer};

/// Root of the big run tree appended to the input of the query benchmarks (see `gen.rs`).
pub const BIG_ROOT: &str = "big-root";
/// Seed of the key sampling: the same keys for every system.
const KEY_SEED: u64 = 7;

/// Resets this process's peak RSS (`VmHWM`) so that a later reading covers what follows only.
pub fn reset_peak_rss() {
    // Linux ≥ 4.0: writing 5 to clear_refs resets the peak. Best effort.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn peak_rss_mib() -> f64 {
    crate::report::peak_rss().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64)
}

struct NoSink;
impl IngestSink for NoSink {
    fn committed(&mut self, _bytes: u64, _report: &IngestReport) -> ledger::Result<()> {
        Ok(())
    }
}

/// Untimed setup: a fresh ledger in `dir` holding `input`.
pub fn runledger_load(input: &Input, dir: &Path) -> Result<Ledger> {
    let ledger = Ledger::open(dir.join("ledger.redb"))?;
    let file = File::open(&input.path)?;
    ingest_reader(&ledger, file, &IngestOptions::default(), &mut NoSink)?;
    Ok(ledger)
}

pub fn sqlite_path(dir: &Path) -> PathBuf {
    dir.join("events.sqlite")
}

/// Untimed setup: SQLite's `events` table holding `input` (the `ingest` peer's schema), open
/// in WAL mode with `synchronous=FULL`.
pub fn sqlite_load(input: &Input, dir: &Path) -> Result<Connection> {
    crate::sys_sqlite::Sqlite::default().ingest(input, dir)?;
    let conn = Connection::open(sqlite_path(dir))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -262_144i64)?; // 256 MiB, as redb's cache
    Ok(conn)
}

/// The SQLite projections: what a program using SQLite would build from its events table.
pub const SQLITE_PROJECTION_SCHEMA: &str = "
CREATE TABLE runs(
    run_id TEXT PRIMARY KEY, operation TEXT, doctype TEXT, template TEXT, owner TEXT,
    agent TEXT, parent_run_id TEXT, chain_id TEXT, status TEXT, started_ms INTEGER,
    ended_ms INTEGER, duration_ms INTEGER, start_seq INTEGER, terminal_seq INTEGER,
    events INTEGER, input TEXT, output TEXT, error TEXT, streamed TEXT);
CREATE TABLE doc_changes(doctype TEXT, name TEXT, seq INTEGER, run_id TEXT, kind TEXT,
    ts INTEGER, data TEXT);";

const SQLITE_PROJECTION_INDEXES: &str = "
CREATE INDEX runs_parent ON runs(parent_run_id);
CREATE INDEX runs_start_seq ON runs(start_seq);
CREATE INDEX doc_changes_key ON doc_changes(doctype, name, seq);";

#[derive(Default)]
struct RunRow {
    operation: Option<String>,
    doctype: Option<String>,
    template: Option<String>,
    owner: Option<String>,
    agent: Option<String>,
    parent: Option<String>,
    chain: Option<String>,
    status: Option<&'static str>,
    waiting: bool,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    duration_ms: Option<i64>,
    start_seq: Option<i64>,
    terminal_seq: Option<i64>,
    events: i64,
    input: Option<String>,
    output: Option<String>,
    error: Option<String>,
    streamed: String,
}

fn ts_ms(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn json_text(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(Value::to_string)
}

impl RunRow {
    /// Context fields of a `run` object (later non-null wins), with the aliases the data uses.
    fn fields(&mut self, run: &Value) {
        let opts = run.get("options");
        let set = |slot: &mut Option<String>, v: Option<String>| {
            if v.is_some() {
                *slot = v;
            }
        };
        set(&mut self.operation, text(run.get("operation")));
        set(
            &mut self.doctype,
            text(run.get("doctype")).or(text(run.get("from"))),
        );
        set(
            &mut self.template,
            text(run.get("template")).or(text(run.get("flow"))),
        );
        set(&mut self.owner, text(run.get("owner")));
        set(&mut self.agent, text(run.get("agent")));
        set(
            &mut self.parent,
            text(run.get("parent_run_id"))
                .or(text(run.get("parentRunId")))
                .or(text(opts.and_then(|o| o.get("parentRunId")))),
        );
        set(
            &mut self.chain,
            text(run.get("chain_id"))
                .or(text(run.get("chainId")))
                .or(text(opts.and_then(|o| o.get("chainId")))),
        );
        set(&mut self.input, json_text(run.get("input")));
    }

    fn start(&mut self, seq: i64, ts: Option<i64>) {
        if self.start_seq.is_none() {
            self.start_seq = Some(seq);
            self.started_ms = ts;
        }
    }

    /// The first terminal event (by seq) decides.
    fn terminal(&mut self, seq: i64, status: &'static str, ts: Option<i64>, ev: &Value) {
        if self.terminal_seq.is_some() {
            return;
        }
        self.terminal_seq = Some(seq);
        self.status = Some(status);
        self.ended_ms = ts;
        self.duration_ms = ev
            .get("duration_ms")
            .or(ev.get("duration"))
            .and_then(Value::as_i64);
        self.output = json_text(ev.get("output"));
        self.error = json_text(ev.get("error"));
    }
}

/// What [`sqlite_build_projections`] built.
pub struct SqliteProjections {
    pub runs: u64,
    pub doc_changes: u64,
}

/// Builds `runs` and `doc_changes` (schema [`SQLITE_PROJECTION_SCHEMA`]) in one pass over
/// `events ORDER BY seq`: each body parsed with serde_json, runs folded in a hash map, record
/// changes inserted as met, then every run inserted with a prepared statement, then the
/// indexes; one transaction, committed (fsync'd) at the end.
pub fn sqlite_build_projections(conn: &Connection) -> Result<SqliteProjections> {
    conn.execute_batch(SQLITE_PROJECTION_SCHEMA)?;
    conn.execute_batch("BEGIN")?;
    let mut runs: HashMap<String, RunRow> = HashMap::new();
    let mut doc_changes = 0u64;
    {
        let mut scan = conn.prepare("SELECT seq, type, run_id, body FROM events ORDER BY seq")?;
        let mut ins_doc = conn.prepare(
            "INSERT INTO doc_changes(doctype, name, seq, run_id, kind, ts, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut rows = scan.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let kind: String = row.get(1)?;
            let run_id: Option<String> = row.get(2)?;
            let body: String = row.get(3)?;
            let ev: Value = serde_json::from_str(&body)?;
            let ts = ts_ms(ev.get("ts"));
            if let Some(change) = kind.strip_prefix("doc.") {
                ins_doc.execute(params![
                    text(ev.get("doctype")),
                    text(ev.get("name")),
                    seq,
                    run_id,
                    change,
                    ts,
                    json_text(ev.get("data")),
                ])?;
                doc_changes += 1;
                continue;
            }
            let Some(run_id) = run_id else { continue };
            let r = runs.entry(run_id).or_default();
            r.events += 1;
            match kind.as_str() {
                "run.started" => {
                    if let Some(run) = ev.get("run") {
                        r.fields(run);
                    }
                    r.start(seq, ts);
                }
                "run.checkpoint" => {
                    let Some(run) = ev.get("run") else { continue };
                    r.fields(run);
                    let ts = ts_ms(run.get("timestamp")).or(ts);
                    match run.get("status").and_then(Value::as_str) {
                        Some("completed") => r.terminal(seq, "completed", ts, run),
                        Some("failed") => r.terminal(seq, "failed", ts, run),
                        Some("cancelled") => r.terminal(seq, "cancelled", ts, run),
                        _ => r.start(seq, ts),
                    }
                }
                "run.completed" => r.terminal(seq, "completed", ts, &ev),
                "run.failed" => r.terminal(seq, "failed", ts, &ev),
                "run.cancelled" => r.terminal(seq, "cancelled", ts, &ev),
                "run.waiting" => r.waiting = true,
                "run.resumed" => r.waiting = false,
                "run.progress" if ev.get("path").and_then(Value::as_str) == Some("output.text") => {
                    if let Some(v) = ev.get("value").and_then(Value::as_str) {
                        r.streamed.push_str(v);
                    }
                }
                _ => {}
            }
        }
    }
    {
        let mut ins = conn.prepare(
            "INSERT INTO runs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
             ?14, ?15, ?16, ?17, ?18, ?19)",
        )?;
        for (id, r) in &runs {
            let status = r
                .status
                .unwrap_or(if r.waiting { "waiting" } else { "running" });
            let duration = r.duration_ms.or(match (r.started_ms, r.ended_ms) {
                (Some(s), Some(e)) if e >= s => Some(e - s),
                _ => None,
            });
            ins.execute(params![
                id,
                r.operation,
                r.doctype,
                r.template,
                r.owner,
                r.agent,
                r.parent,
                r.chain,
                status,
                r.started_ms,
                r.ended_ms,
                duration,
                r.start_seq,
                r.terminal_seq,
                r.events,
                r.input,
                r.output,
                r.error,
                (!r.streamed.is_empty()).then_some(r.streamed.as_str()),
            ])?;
        }
    }
    conn.execute_batch(SQLITE_PROJECTION_INDEXES)?;
    conn.execute_batch("COMMIT")?;
    Ok(SqliteProjections {
        runs: runs.len() as u64,
        doc_changes,
    })
}

/// splitmix64: the same keys for every system.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Deserialize)]
struct KeyLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    run_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    doctype: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// Random keys drawn from the input (not from either system): records, runs.
pub struct Keys {
    pub docs: Vec<(String, String)>,
    pub runs: Vec<String>,
}

impl Keys {
    /// `n` random records (doctype, name) and `n` random run ids (of `run.started` events).
    pub fn sample(input: &Input, n: usize) -> Result<Keys> {
        let mut docs: Vec<(String, String)> = Vec::new();
        let mut seen_docs: HashSet<(String, String)> = HashSet::new();
        let mut runs: Vec<String> = Vec::new();
        let mut seen_runs: HashSet<String> = HashSet::new();
        let src = BufReader::with_capacity(1 << 20, File::open(&input.path)?);
        for line in src.lines() {
            let line = line?;
            let Ok(l) = serde_json::from_str::<KeyLine>(&line) else {
                continue;
            };
            if l.kind.starts_with("doc.") {
                if let (Some(d), Some(nm)) = (l.doctype, l.name) {
                    let k = (d.into_owned(), nm.into_owned());
                    if seen_docs.insert(k.clone()) {
                        docs.push(k);
                    }
                }
            } else if l.kind == "run.started" {
                if let Some(id) = l.run_id {
                    if seen_runs.insert(id.to_string()) {
                        runs.push(id.into_owned());
                    }
                }
            }
        }
        let mut rng = Rng::new(KEY_SEED);
        let pick = |len: usize, rng: &mut Rng| -> Vec<usize> {
            (0..n).map(|_| rng.below(len)).collect::<Vec<usize>>()
        };
        let di = pick(docs.len(), &mut rng);
        let ri = pick(runs.len(), &mut rng);
        anyhow::ensure!(
            !docs.is_empty() && !runs.is_empty(),
            "the input has no records or runs"
        );
        Ok(Keys {
            docs: di.into_iter().map(|i| docs[i].clone()).collect(),
            runs: ri.into_iter().map(|i| runs[i].clone()).collect(),
        })
    }
}

/// A latency series stops after this long (once it has 10 samples).
const SERIES_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Cores the rest of the machine kept busy since `clock` started (the query phase).
pub fn others_busy(clock: &Clock) -> Metric {
    Metric::new(
        "others busy during queries",
        clock.stop().other_cores(),
        "cores",
    )
}

/// Calls `f(i)` for `i` in `0..iters` (after `warm` untimed calls) and returns p50, p99 and
/// max latency in microseconds as metrics named `<name> p50` etc.
pub fn latency(
    name: &str,
    iters: usize,
    warm: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<Metric>> {
    for i in 0..warm {
        f(i).with_context(|| format!("{name} (warm-up)"))?;
    }
    let mut us: Vec<f64> = Vec::with_capacity(iters);
    let series = Instant::now();
    for i in 0..iters {
        if series.elapsed() > SERIES_BUDGET && us.len() >= 10 {
            break;
        }
        let t = Instant::now();
        f(i).with_context(|| name.to_owned())?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let q = |p: f64| -> f64 {
        if us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len());
        us[rank - 1]
    };
    Ok(vec![
        Metric::new(format!("{name} p50"), q(0.5), "us"),
        Metric::new(format!("{name} p99"), q(0.99), "us"),
        Metric::new(format!("{name} max"), q(1.0), "us"),
        Metric::new(format!("{name} samples"), us.len() as f64, "n"),
    ])
}

/// Times `f` with a [`Clock`].
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Timing)> {
    let clock = Clock::start();
    let t = f()?;
    Ok((t, clock.stop()))
}

/// Bytes allocated on disk by one file or directory (recursively).
pub fn bytes_of(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    if meta.is_dir() {
        Ok(crate::peer::disk_use(path)?.bytes)
    } else {
        Ok(meta.blocks() * 512)
    }
}
