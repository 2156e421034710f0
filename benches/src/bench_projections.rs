//! `projections`: rebuilding the projections from the stored events (timed, with peak memory),
//! then point queries (`trace`, `tree`, `show`, `state --at N`) over many random keys.
//!
//! Setup (untimed, not in peak memory): the input ingested as by the `ingest` benchmark.
//! - runledger: `ledger::project::rebuild`, then `View::trace_json` (a JSON value), and
//!   `View::{show, tree}` and `ledger.view(Some(n))?.state()` written out as JSON bytes (what
//!   `show`/`tree`/`state --json` and the HTTP API send).
//! - SQLite: [`sqlite_build_projections`] (`runs` with indexes on `parent_run_id` and
//!   `start_seq`, `doc_changes` with an index on `(doctype, name, seq)`), then the same
//!   questions in SQL (recursive CTEs up and down the parent links).

use std::path::Path;

use anyhow::Result;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection};

use crate::gen::Input;
use crate::peer::{disk_use, Metric, Sample};
use crate::qcommon::{self, latency, Keys, Rng, BIG_ROOT};

/// Random keys per point query.
pub const POINT_QUERIES: usize = 2_000;
/// Repetitions of the 10k-run tree.
const TREE_REPS: usize = 30;
/// Random seqs for `state --at`.
const STATE_QUERIES: usize = 200;

pub fn runledger(input: &Input, dir: &Path) -> Result<Sample> {
    let ledger = qcommon::runledger_load(input, dir)?;
    let stored = ledger.head()?.seq;
    let keys = Keys::sample(input, POINT_QUERIES)?;
    qcommon::reset_peak_rss();
    let (_, timing) = qcommon::timed(|| Ok(ledger::project::rebuild(&ledger, &mut |_, _| {})?))?;
    let rss = qcommon::peak_rss_mib();
    let queries = crate::clock::Clock::start();
    let mut m = vec![
        Metric::new("rebuild events/s", stored as f64 / timing.secs, "events/s"),
        Metric::new("rebuild peak RSS", rss, "MiB"),
    ];
    let view = ledger.view(None)?;
    let mut runs = 0u64;
    view.for_each_run(|_| {
        runs += 1;
        Ok(())
    })?;
    m.push(Metric::new("runs projected", runs as f64, "n"));
    m.extend(latency("trace", POINT_QUERIES, 20, |i| {
        let (d, n) = &keys.docs[i];
        std::hint::black_box(view.trace_json(d, n)?);
        Ok(())
    })?);
    let mut nodes = 0usize;
    m.extend(latency("tree 10k-child root", TREE_REPS, 2, |_| {
        let t = view.tree(BIG_ROOT, None)?;
        nodes = tree_size(&t.root);
        std::hint::black_box(serde_json::to_vec(&t)?);
        Ok(())
    })?);
    m.push(Metric::new("tree nodes returned", nodes as f64, "n"));
    m.extend(latency("tree random run", POINT_QUERIES, 20, |i| {
        let t = view.tree(&keys.runs[i], None)?;
        std::hint::black_box(serde_json::to_vec(&t)?);
        Ok(())
    })?);
    m.extend(latency("show", POINT_QUERIES, 20, |i| {
        std::hint::black_box(serde_json::to_vec(&view.show(&keys.runs[i])?)?);
        Ok(())
    })?);
    drop(view);
    let mut rng = Rng::new(11);
    let seqs: Vec<u64> = (0..STATE_QUERIES)
        .map(|_| 1 + rng.below(stored as usize) as u64)
        .collect();
    m.extend(latency("state --at N", STATE_QUERIES, 5, |i| {
        let state = ledger.view(Some(seqs[i]))?.state()?;
        std::hint::black_box(serde_json::to_vec(&state)?);
        Ok(())
    })?);
    m.extend(latency("state (head)", 50, 2, |_| {
        let state = ledger.view(None)?.state()?;
        std::hint::black_box(serde_json::to_vec(&state)?);
        Ok(())
    })?);
    drop(ledger);
    m.push(qcommon::others_busy(&queries));
    let disk = disk_use(dir)?;
    m.push(Metric::new(
        "disk / NDJSON",
        disk.bytes as f64 / input.bytes as f64,
        "x",
    ));
    Ok(Sample::of_store(stored, timing, disk, m))
}

/// Nodes of a tree answer.
fn tree_size(t: &ledger::project::TreeNode) -> usize {
    1 + t.children.iter().map(tree_size).sum::<usize>()
}

pub fn sqlite(input: &Input, dir: &Path) -> Result<Sample> {
    let conn = qcommon::sqlite_load(input, dir)?;
    let stored: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let max_seq: i64 = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
    let keys = Keys::sample(input, POINT_QUERIES)?;
    qcommon::reset_peak_rss();
    let (built, timing) = qcommon::timed(|| qcommon::sqlite_build_projections(&conn))?;
    let rss = qcommon::peak_rss_mib();
    let queries = crate::clock::Clock::start();
    let mut m = vec![
        Metric::new("rebuild events/s", stored as f64 / timing.secs, "events/s"),
        Metric::new("rebuild peak RSS", rss, "MiB"),
        Metric::new("runs projected", built.runs as f64, "n"),
        Metric::new("record changes projected", built.doc_changes as f64, "n"),
    ];
    m.extend(latency("trace", POINT_QUERIES, 20, |i| {
        let (d, n) = &keys.docs[i];
        std::hint::black_box(sqlite_trace(&conn, d, n)?);
        Ok(())
    })?);
    let mut nodes = 0usize;
    m.extend(latency("tree 10k-child root", TREE_REPS, 2, |_| {
        let t = sqlite_tree(&conn, BIG_ROOT)?;
        nodes = t.len();
        std::hint::black_box(t);
        Ok(())
    })?);
    m.push(Metric::new("tree nodes returned", nodes as f64, "n"));
    m.extend(latency("tree random run", POINT_QUERIES, 20, |i| {
        std::hint::black_box(sqlite_tree(&conn, &keys.runs[i])?);
        Ok(())
    })?);
    m.extend(latency("show", POINT_QUERIES, 20, |i| {
        std::hint::black_box(sqlite_show(&conn, &keys.runs[i])?);
        Ok(())
    })?);
    let mut rng = Rng::new(11);
    let seqs: Vec<i64> = (0..STATE_QUERIES)
        .map(|_| 1 + rng.below(max_seq as usize) as i64)
        .collect();
    m.extend(latency("state --at N", STATE_QUERIES, 5, |i| {
        std::hint::black_box(sqlite_state_at(&conn, seqs[i])?);
        Ok(())
    })?);
    m.extend(latency("state (head)", 50, 2, |_| {
        std::hint::black_box(sqlite_state_at(&conn, max_seq)?);
        Ok(())
    })?);
    m.push(qcommon::others_busy(&queries));
    let disk = disk_use(dir)?;
    m.push(Metric::new(
        "disk / NDJSON",
        disk.bytes as f64 / input.bytes as f64,
        "x",
    ));
    drop(conn);
    Ok(Sample::of_store(stored as u64, timing, disk, m))
}

/// Every column of every row, so that SQLite does the work of producing the answer.
fn rows(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<Vec<SqlValue>>> {
    let mut st = conn.prepare_cached(sql)?;
    let n = st.column_count();
    let mut out = Vec::new();
    let mut rs = st.query(p)?;
    while let Some(r) = rs.next()? {
        out.push(
            (0..n)
                .map(|i| r.get(i))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}

const LINEAGE: &str = "WITH RECURSIVE up(run_id, parent_run_id, operation, doctype, template,
    status, depth) AS (
  SELECT run_id, parent_run_id, operation, doctype, template, status, 0 FROM runs
  WHERE run_id = ?1
  UNION ALL
  SELECT r.run_id, r.parent_run_id, r.operation, r.doctype, r.template, r.status, up.depth + 1
  FROM up CROSS JOIN runs r ON r.run_id = up.parent_run_id WHERE up.depth < 1000)
SELECT * FROM up ORDER BY depth";

/// A record's history, and for its creating and last modifying runs: the lineage up to the
/// root, the root's template and that template's record (what `trace` answers).
pub fn sqlite_trace(conn: &Connection, doctype: &str, name: &str) -> Result<usize> {
    let history = rows(
        conn,
        "SELECT seq, ts, kind, run_id, data FROM doc_changes WHERE doctype = ?1 AND name = ?2
         ORDER BY seq",
        params![doctype, name],
    )?;
    let created = history
        .iter()
        .rev()
        .find(|r| matches!(&r[2], SqlValue::Text(k) if k == "created"));
    let mut n = history.len();
    for row in [created, history.last()].into_iter().flatten() {
        let SqlValue::Text(run) = &row[3] else {
            continue;
        };
        let lineage = rows(conn, LINEAGE, params![run])?;
        n += lineage.len();
        if let Some(SqlValue::Text(t)) = lineage.last().map(|r| &r[4]) {
            n += rows(
                conn,
                "SELECT seq, run_id, data FROM doc_changes
                 WHERE doctype = 'Workflow Template' AND name = ?1 ORDER BY seq DESC LIMIT 1",
                params![t],
            )?
            .len();
        }
    }
    Ok(n)
}

/// Every run under `root` (recursive CTE down the parent index), with what a tree shows.
/// `CROSS JOIN` fixes the join order (CTE rows drive index lookups into `runs`): without it
/// SQLite's planner scans `runs` for the final join.
pub fn sqlite_tree(conn: &Connection, root: &str) -> Result<Vec<Vec<SqlValue>>> {
    rows(
        conn,
        "WITH RECURSIVE down(run_id, depth) AS (
           SELECT ?1, 0
           UNION ALL
           SELECT r.run_id, down.depth + 1 FROM down CROSS JOIN runs r
           ON r.parent_run_id = down.run_id)
         SELECT r.run_id, r.parent_run_id, r.operation, r.doctype, r.status, r.started_ms,
                r.duration_ms, down.depth
         FROM down CROSS JOIN runs r ON r.run_id = down.run_id",
        params![root],
    )
}

/// A run's row and its children's ids.
pub fn sqlite_show(conn: &Connection, run: &str) -> Result<usize> {
    let row = rows(conn, "SELECT * FROM runs WHERE run_id = ?1", params![run])?;
    let children = rows(
        conn,
        "SELECT run_id FROM runs WHERE parent_run_id = ?1",
        params![run],
    )?;
    Ok(row.len() + children.len())
}

/// Runs active at `seq` (started at or before, not ended by then), as the current projection
/// can tell: statuses and fields are today's, not as of `seq`.
pub fn sqlite_state_at(conn: &Connection, seq: i64) -> Result<usize> {
    Ok(rows(
        conn,
        "SELECT run_id, operation, doctype, template, parent_run_id, started_ms FROM runs
         WHERE start_seq <= ?1 AND (terminal_seq IS NULL OR terminal_seq > ?1)
         ORDER BY run_id",
        params![seq],
    )?
    .len())
}
