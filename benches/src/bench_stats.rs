//! `stats`: `runledger stats --by operation` (runs per operation, by status, duration p50 /
//! p95 / p99 / max, nearest rank) next to the same question asked of SQLite's `runs` table and
//! of DuckDB over runledger's Parquet export; and the Parquet export rate.
//!
//! Setup (untimed): the input ingested, projections built (runledger and DuckDB rows), SQLite's
//! `runs` built by [`crate::qcommon::sqlite_build_projections`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use query::export::writer::Format;
use query::export::{export, ExportOptions};
use query::stats::{stats_json, GroupBy, TimeRange};

use crate::gen::Input;
use crate::peer::{disk_use, Metric, Peer, Sample};
use crate::qcommon::{self, latency};

const REPS: usize = 20;

pub fn runledger(input: &Input, dir: &Path) -> Result<Sample> {
    let ledger = qcommon::runledger_load(input, dir)?;
    ledger::project::rebuild(&ledger, &mut |_, _| {})?;
    let stored = ledger.head()?.seq;
    qcommon::reset_peak_rss();
    let (first, timing) = qcommon::timed(|| {
        Ok(stats_json(
            &ledger.view(None)?,
            GroupBy::Operation,
            TimeRange::default(),
        )?)
    })?;
    let rss = qcommon::peak_rss_mib();
    let mut m = vec![Metric::new("first call", timing.secs * 1e6, "us")];
    m.extend(latency("stats --by operation", REPS, 1, |_| {
        let v = stats_json(
            &ledger.view(None)?,
            GroupBy::Operation,
            TimeRange::default(),
        )?;
        std::hint::black_box(v);
        Ok(())
    })?);
    m.push(Metric::new("peak RSS (stats)", rss, "MiB"));
    summary(&mut m, &first);
    Ok(Sample::of_store(stored, timing, disk_use(dir)?, m))
}

/// Groups and runs counted, and the largest group's p99: the systems must agree.
fn summary(m: &mut Vec<Metric>, v: &serde_json::Value) {
    let groups = v["groups"].as_array().map_or(0, Vec::len);
    m.push(Metric::new("groups", groups as f64, "n"));
    m.push(Metric::new(
        "runs counted",
        v["runs"].as_f64().unwrap_or(f64::NAN),
        "n",
    ));
    m.push(Metric::new(
        "largest group p99 ms",
        v["groups"][0]["p99_ms"].as_f64().unwrap_or(f64::NAN),
        "n",
    ));
}

/// Per operation: runs by status and nearest-rank percentiles of `duration_ms`
/// (rank = ⌈q·n⌉, computed as `(n·q₁₀₀ + 99) / 100` in integers).
pub const SQLITE_STATS: &str = "
WITH c AS (
  SELECT operation, count(*) AS runs, sum(status = 'completed') AS completed,
         sum(status = 'failed') AS failed, sum(status = 'cancelled') AS cancelled,
         sum(status = 'running') AS running, sum(status = 'waiting') AS waiting,
         count(duration_ms) AS with_duration
  FROM runs GROUP BY operation),
d AS (
  SELECT operation, duration_ms,
         row_number() OVER (PARTITION BY operation ORDER BY duration_ms) AS rn,
         count(*) OVER (PARTITION BY operation) AS n
  FROM runs WHERE duration_ms IS NOT NULL),
p AS (
  SELECT operation,
         max(CASE WHEN rn = (n * 50 + 99) / 100 THEN duration_ms END) AS p50,
         max(CASE WHEN rn = (n * 95 + 99) / 100 THEN duration_ms END) AS p95,
         max(CASE WHEN rn = (n * 99 + 99) / 100 THEN duration_ms END) AS p99,
         max(duration_ms) AS max_ms
  FROM d GROUP BY operation)
SELECT c.operation, c.runs, c.completed, c.failed, c.cancelled, c.running, c.waiting,
       c.with_duration, p.p50, p.p95, p.p99, p.max_ms
FROM c LEFT JOIN p ON p.operation IS c.operation
ORDER BY c.runs DESC, c.operation";

pub fn sqlite(input: &Input, dir: &Path) -> Result<Sample> {
    let conn = qcommon::sqlite_load(input, dir)?;
    qcommon::sqlite_build_projections(&conn)?;
    let stored: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let run = || -> Result<serde_json::Value> {
        let mut st = conn.prepare_cached(SQLITE_STATS)?;
        let mut groups = Vec::new();
        let mut runs = 0i64;
        let mut rs = st.query([])?;
        while let Some(r) = rs.next()? {
            let n: i64 = r.get(1)?;
            runs += n;
            let p99: Option<i64> = r.get(10)?;
            let op: Option<String> = r.get(0)?;
            groups.push(serde_json::json!({"key": op, "runs": n, "p99_ms": p99}));
        }
        Ok(serde_json::json!({"runs": runs, "groups": groups}))
    };
    qcommon::reset_peak_rss();
    let (first, timing) = qcommon::timed(run)?;
    let rss = qcommon::peak_rss_mib();
    let mut m = vec![Metric::new("first call", timing.secs * 1e6, "us")];
    m.extend(latency("stats --by operation", REPS, 1, |_| {
        std::hint::black_box(run()?);
        Ok(())
    })?);
    m.push(Metric::new("peak RSS (stats)", rss, "MiB"));
    summary(&mut m, &first);
    let disk = disk_use(dir)?;
    drop(conn);
    Ok(Sample::of_store(stored as u64, timing, disk, m))
}

/// DuckDB (Python package, `python3 -c`) over runledger's Parquet export of `runs`.
pub struct DuckDb;

const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, sys, time
files = sys.argv[1:]
con = duckdb.connect()
con.execute("CREATE VIEW runs AS SELECT * FROM read_parquet(%r)" % files)
q = """
SELECT operation, count(*) AS runs,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'waiting') AS waiting,
       count(duration_ms) AS with_duration,
       quantile_disc(duration_ms, 0.5) AS p50, quantile_disc(duration_ms, 0.95) AS p95,
       quantile_disc(duration_ms, 0.99) AS p99, max(duration_ms) AS max_ms
FROM runs GROUP BY operation ORDER BY runs DESC, operation"""
times = []
rows = None
for i in range(int(REPS) + 1):
    t = time.perf_counter()
    rows = con.execute(q).fetchall()
    times.append((time.perf_counter() - t) * 1e6)
print(json.dumps({"us": times, "runs": sum(r[1] for r in rows), "groups": len(rows),
                  "p99": rows[0][10]}))
"#;

impl Peer for DuckDb {
    fn key(&self) -> String {
        "duckdb".into()
    }
    fn label(&self) -> String {
        "duckdb (python) over runledger's Parquet export".into()
    }
    fn stats(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let ledger = qcommon::runledger_load(input, dir)?;
        ledger::project::rebuild(&ledger, &mut |_, _| {})?;
        let stored = ledger.head()?.seq;
        let out = dir.join("export");
        let opts = ExportOptions {
            format: Format::Parquet,
            out: out.clone(),
            since_ms: None,
            until_ms: None,
            since_seq: None,
        };
        qcommon::reset_peak_rss();
        let (report, timing) = qcommon::timed(|| Ok(export(&ledger, &opts)?))?;
        let rss = qcommon::peak_rss_mib();
        let bytes = report["bytes"].as_u64().unwrap_or(0);
        let runs_files: Vec<PathBuf> = report["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["table"] == "runs")
            .filter_map(|f| f["path"].as_str().map(|p| out.join(p)))
            .collect();
        if runs_files.is_empty() {
            bail!("the export wrote no runs file: {report}");
        }
        let mut m = vec![
            Metric::new("export events/s", stored as f64 / timing.secs, "events/s"),
            Metric::new("export bytes/event", bytes as f64 / stored as f64, "bytes"),
            Metric::new("export / NDJSON", bytes as f64 / input.bytes as f64, "x"),
            Metric::new("export peak RSS", rss, "MiB"),
        ];
        drop(ledger);
        let script = DUCKDB_SCRIPT.replace("int(REPS)", &REPS.to_string());
        let output = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .args(&runs_files)
            .output()
            .context("running python3 with duckdb")?;
        if !output.status.success() {
            bail!(
                "duckdb script failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let mut us: Vec<f64> = v["us"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        if us.is_empty() {
            bail!("duckdb reported no timings");
        }
        let first = us.remove(0);
        us.sort_by(f64::total_cmp);
        let q = |p: f64| us[((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
        m.insert(0, Metric::new("first call", first, "us"));
        m.insert(1, Metric::new("stats --by operation p50", q(0.5), "us"));
        m.insert(2, Metric::new("stats --by operation p99", q(0.99), "us"));
        m.insert(3, Metric::new("stats --by operation max", q(1.0), "us"));
        m.push(Metric::new(
            "groups",
            v["groups"].as_f64().unwrap_or(0.0),
            "n",
        ));
        m.push(Metric::new(
            "runs counted",
            v["runs"].as_f64().unwrap_or(0.0),
            "n",
        ));
        m.push(Metric::new(
            "largest group p99 ms",
            v["p99"].as_f64().unwrap_or(f64::NAN),
            "n",
        ));
        Ok(Sample::of_store(stored, timing, disk_use(dir)?, m))
    }
}
