//! `search`: building the full-text index from the stored events (timed), its size, then
//! query latency for a term, a phrase, a JSON path and a term with a status filter.
//!
//! Setup (untimed): the input ingested, projections built.
//! - runledger: `query::search::rebuild` (tantivy), queries with `query::search::search`
//!   (limit 10, snippets included).
//! - SQLite: one FTS5 row per run (`run_id UNINDEXED, text` = input, output, error and
//!   streamed text concatenated) built with one `INSERT … SELECT` from `runs`; queries
//!   `MATCH … ORDER BY rank LIMIT 10` with `snippet()`, the status filter as a join on `runs`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use ledger::project::Status;
use query::search::{search, SearchRequest};
use rusqlite::{params, Connection};

use crate::gen::Input;
use crate::peer::{disk_use, Metric, Sample};
use crate::qcommon::{self, bytes_of, latency};

const QUERIES: usize = 500;
const TERMS: &[&str] = &["renewal", "invoice", "discount", "shipment", "password"];
const PHRASES: &[&str] = &[
    "contract renewal",
    "weekly report",
    "call summary",
    "meeting notes",
];
const FAILED_TERMS: &[&str] = &["subject", "invoice", "validation"];

/// The JSON-path value of query `i`: the names the big tree's children select.
fn task(i: usize) -> String {
    format!(
        "Task-{:05}",
        (i * 37) % crate::gen::BIG_TREE_CHILDREN as usize
    )
}

fn hits(v: &serde_json::Value) -> usize {
    v["hits"].as_array().map_or(0, Vec::len)
}

pub fn runledger(input: &Input, dir: &Path) -> Result<Sample> {
    let ledger = qcommon::runledger_load(input, dir)?;
    ledger::project::rebuild(&ledger, &mut |_, _| {})?;
    let stored = ledger.head()?.seq;
    let log_bytes = disk_use(dir)?.bytes;
    qcommon::reset_peak_rss();
    let (_, timing) = qcommon::timed(|| Ok(query::search::rebuild(&ledger)?))?;
    let rss = qcommon::peak_rss_mib();
    let queries = crate::clock::Clock::start();
    let index_bytes = bytes_of(&query::search::index_dir(ledger.path()))?;
    let nd = input.bytes as f64;
    let mut m = vec![
        Metric::new("index events/s", stored as f64 / timing.secs, "events/s"),
        Metric::new("index peak RSS", rss, "MiB"),
        Metric::new("index / NDJSON", index_bytes as f64 / nd, "x"),
    ];
    let ask = |q: String, status: Option<Status>| -> Result<usize> {
        let req = SearchRequest {
            query: q,
            status,
            limit: 10,
            ..SearchRequest::default()
        };
        Ok(hits(&search(&ledger, &req)?))
    };
    let mut found = [0usize; 4];
    m.extend(latency("term", QUERIES, 10, |i| {
        found[0] += ask(TERMS[i % TERMS.len()].into(), None)?;
        Ok(())
    })?);
    m.extend(latency("phrase", QUERIES, 10, |i| {
        found[1] += ask(format!("\"{}\"", PHRASES[i % PHRASES.len()]), None)?;
        Ok(())
    })?);
    m.extend(latency("json path", QUERIES, 10, |i| {
        found[2] += ask(format!("input.where.name:{}", task(i)), None)?;
        Ok(())
    })?);
    m.extend(latency("term + status=failed", QUERIES, 10, |i| {
        found[3] += ask(
            FAILED_TERMS[i % FAILED_TERMS.len()].into(),
            Some(Status::Failed),
        )?;
        Ok(())
    })?);
    push_found(&mut m, found);
    // Lag: append 1,000 events, one carrying a planted token, and time until search finds it.
    let planted = "zqxplantedtoken";
    let mut batch = Vec::with_capacity(1_000);
    for k in 0..1_000 {
        let line = format!(
            r#"{{"type":"run.started","id":"lag-{k}","ts":1763800000000,"run_id":"lag-{k}","run":{{"operation":"summarize","input":{{"text":"{}"}}}}}}"#,
            if k == 999 { planted } else { "filler" }
        );
        batch.push(ledger::parse_event(&line).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    let t = Instant::now();
    ledger.append(batch)?;
    let appended = t.elapsed();
    query::catch_up(&ledger)?;
    if ask(planted.into(), None)? != 1 {
        bail!("the planted token is not searchable after catch_up");
    }
    let lag = t.elapsed();
    m.push(Metric::new(
        "lag: append 1k + catch up + found",
        lag.as_secs_f64() * 1e6,
        "us",
    ));
    m.push(Metric::new(
        "  of which the durable append",
        appended.as_secs_f64() * 1e6,
        "us",
    ));
    drop(ledger);
    m.push(qcommon::others_busy(&queries));
    let disk = disk_use(dir)?;
    m.push(Metric::new(
        "log+projections / NDJSON",
        log_bytes as f64 / nd,
        "x",
    ));
    m.push(Metric::new(
        "all on disk / NDJSON",
        disk.bytes as f64 / nd,
        "x",
    ));
    Ok(Sample::of_store(stored, timing, disk, m))
}

fn push_found(m: &mut Vec<Metric>, found: [usize; 4]) {
    for (name, n) in ["term", "phrase", "json path", "term + status=failed"]
        .iter()
        .zip(found)
    {
        m.push(Metric::new(
            format!("{name}: hits per query"),
            n as f64 / QUERIES as f64,
            "n",
        ));
    }
}

/// The size of the database file after folding the WAL into it.
fn db_bytes(conn: &Connection, dir: &Path) -> Result<u64> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    bytes_of(&qcommon::sqlite_path(dir))
}

pub fn sqlite(input: &Input, dir: &Path) -> Result<Sample> {
    let conn = qcommon::sqlite_load(input, dir)?;
    let fts5: bool =
        conn.query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
            r.get(0)
        })?;
    if !fts5 {
        bail!("this SQLite build has no FTS5");
    }
    qcommon::sqlite_build_projections(&conn)?;
    let stored: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let before = db_bytes(&conn, dir)?;
    qcommon::reset_peak_rss();
    let (_, timing) = qcommon::timed(|| {
        conn.execute_batch(
            "BEGIN;
             CREATE VIRTUAL TABLE fts USING fts5(run_id UNINDEXED, text);
             INSERT INTO fts(run_id, text)
               SELECT run_id, coalesce(input, '') || ' ' || coalesce(output, '') || ' ' ||
                      coalesce(error, '') || ' ' || coalesce(streamed, '')
               FROM runs;
             COMMIT;",
        )?;
        Ok(())
    })?;
    let rss = qcommon::peak_rss_mib();
    let queries = crate::clock::Clock::start();
    let after = db_bytes(&conn, dir)?;
    let nd = input.bytes as f64;
    let mut m = vec![
        Metric::new("index events/s", stored as f64 / timing.secs, "events/s"),
        Metric::new("index peak RSS", rss, "MiB"),
        Metric::new(
            "index / NDJSON",
            after.saturating_sub(before) as f64 / nd,
            "x",
        ),
    ];
    let matching = |q: &str| -> Result<usize> {
        let mut st = conn.prepare_cached(
            "SELECT run_id, snippet(fts, 1, '[', ']', '…', 16) FROM fts WHERE fts MATCH ?1
             ORDER BY rank LIMIT 10",
        )?;
        let mut n = 0;
        let mut rs = st.query(params![q])?;
        while let Some(r) = rs.next()? {
            let _: (String, String) = (r.get(0)?, r.get(1)?);
            n += 1;
        }
        Ok(n)
    };
    let mut found = [0usize; 4];
    m.extend(latency("term", QUERIES, 10, |i| {
        found[0] += matching(TERMS[i % TERMS.len()])?;
        Ok(())
    })?);
    m.extend(latency("phrase", QUERIES, 10, |i| {
        found[1] += matching(&format!("\"{}\"", PHRASES[i % PHRASES.len()]))?;
        Ok(())
    })?);
    // FTS5 has no JSON paths: the value as a phrase anywhere in the run's text.
    m.extend(latency("json path", QUERIES, 10, |i| {
        found[2] += matching(&format!("\"{}\"", task(i)))?;
        Ok(())
    })?);
    m.extend(latency("term + status=failed", QUERIES, 10, |i| {
        let mut st = conn.prepare_cached(
            "SELECT f.run_id, snippet(fts, 1, '[', ']', '…', 16) FROM fts f
             JOIN runs r ON r.run_id = f.run_id
             WHERE fts MATCH ?1 AND r.status = 'failed' ORDER BY f.rank LIMIT 10",
        )?;
        let mut rs = st.query(params![FAILED_TERMS[i % FAILED_TERMS.len()]])?;
        while let Some(r) = rs.next()? {
            let _: (String, String) = (r.get(0)?, r.get(1)?);
            found[3] += 1;
        }
        Ok(())
    })?);
    push_found(&mut m, found);
    m.push(qcommon::others_busy(&queries));
    let disk = disk_use(dir)?;
    m.push(Metric::new(
        "log+projections / NDJSON",
        before as f64 / nd,
        "x",
    ));
    m.push(Metric::new(
        "all on disk / NDJSON",
        disk.bytes as f64 / nd,
        "x",
    ));
    drop(conn);
    Ok(Sample::of_store(stored as u64, timing, disk, m))
}
