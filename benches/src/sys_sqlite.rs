//! The peer a user would pick instead: SQLite (bundled), WAL, `synchronous=FULL`, one row per
//! event with a unique index on the client id, `INSERT OR IGNORE` for duplicates.
//!
//! Each line is parsed with serde_json to extract the columns (a full pass over the JSON, like
//! runledger's parser) and stored whole in `body`. One thread, as a program using SQLite
//! would: SQLite has one writer.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::types::Value;
use rusqlite::{params, Connection};
use serde::Deserialize;

use crate::clock::Clock;
use crate::gen::Input;
use crate::peer::{disk_use, Peer, Sample};

pub struct Sqlite {
    /// Rows per transaction (one fsync of the WAL per commit).
    pub rows_per_tx: u64,
}

impl Default for Sqlite {
    fn default() -> Self {
        Sqlite {
            rows_per_tx: 10_000,
        }
    }
}

const SCHEMA: &str = "CREATE TABLE events(
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE,
    type TEXT,
    run_id TEXT,
    ts INTEGER,
    body TEXT
)";

const INSERT: &str =
    "INSERT OR IGNORE INTO events(id, type, run_id, ts, body) VALUES (?1, ?2, ?3, ?4, ?5)";

/// The columns of one line. Unknown fields are skipped (still scanned and checked by serde_json).
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<Ts<'a>>,
    /// `run.checkpoint` may carry `run_id` and `ts` as `run.id` and `run.timestamp`.
    #[serde(borrow)]
    run: Option<RunRef<'a>>,
}

#[derive(Deserialize)]
struct RunRef<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<Ts<'a>>,
}

/// `ts`: integer milliseconds or RFC 3339 text (stored as given).
#[derive(Deserialize)]
#[serde(untagged)]
enum Ts<'a> {
    Ms(i64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

impl Ts<'_> {
    fn value(&self) -> Value {
        match self {
            Ts::Ms(ms) => Value::Integer(*ms),
            Ts::Text(t) => Value::Text(t.to_string()),
        }
    }
}

impl Peer for Sqlite {
    fn key(&self) -> String {
        "sqlite".into()
    }
    fn label(&self) -> String {
        format!(
            "sqlite WAL sync=FULL + uniq id, {} rows/tx",
            crate::report::thousands(self.rows_per_tx)
        )
    }

    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let path = dir.join("events.sqlite");
        let clock = Clock::start();
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;

        let mut src = BufReader::with_capacity(1 << 20, File::open(&input.path)?);
        let mut insert = conn.prepare(INSERT)?;
        let (mut events, mut stored, mut rejected, mut in_tx, mut commits) = (0u64, 0, 0, 0, 0);
        let mut line = String::new();
        conn.execute_batch("BEGIN")?;
        loop {
            line.clear();
            if src.read_line(&mut line)? == 0 {
                break;
            }
            let text = line.trim_end();
            if text.is_empty() {
                continue;
            }
            events += 1;
            let Ok(l) = serde_json::from_str::<Line>(text) else {
                rejected += 1;
                continue;
            };
            let run = l.run.as_ref();
            let run_id = l.run_id.as_deref().or(run.and_then(|r| r.id.as_deref()));
            let ts =
                l.ts.as_ref()
                    .or(run.and_then(|r| r.timestamp.as_ref()))
                    .map_or(Value::Null, Ts::value);
            stored += insert.execute(params![l.id, l.kind, run_id, ts, text])? as u64;
            in_tx += 1;
            if in_tx >= self.rows_per_tx {
                conn.execute_batch("COMMIT; BEGIN")?;
                commits += 1;
                in_tx = 0;
            }
        }
        conn.execute_batch("COMMIT")?;
        commits += 1;
        let timing = clock.stop();
        if rejected > 0 {
            eprintln!("warning: sqlite peer could not parse {rejected} lines");
        }
        // Measured while open: database plus WAL, as a running system has them on disk.
        let disk = disk_use(dir)?;
        drop(insert);
        conn.close().map_err(|(_, e)| e)?;
        Ok(Sample {
            events,
            stored: Some(stored),
            timing,
            disk: Some(disk),
            commits: Some(commits),
            ..Sample::default()
        })
    }

    fn projections(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_projections::sqlite(input, dir)
    }
    fn search(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_search::sqlite(input, dir)
    }
    fn stats(&self, input: &Input, dir: &Path) -> Result<Sample> {
        crate::bench_stats::sqlite(input, dir)
    }
}
