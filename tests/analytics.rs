//! Analytics and export (issue #7): `stats` groups, percentiles, failures and template steps;
//! `export` layout, manifest and incremental exports; the Parquet export read back by DuckDB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{join_lines, Ledger};

/// 2025-11-21T04:40:00.000Z in ms.
const T: i64 = 1_763_700_000_000;
const DAY: i64 = 86_400_000;

fn started(run: &str, ts: i64, fields: Value) -> String {
    json!({"type":"run.started","ts":ts,"run_id":run,"run":fields}).to_string()
}
fn completed(run: &str, ts: i64) -> String {
    json!({"type":"run.completed","ts":ts,"run_id":run,"output":{}}).to_string()
}
fn failed(run: &str, ts: i64, msg: &str) -> String {
    json!({"type":"run.failed","ts":ts,"run_id":run,"error":{"message":msg}}).to_string()
}

/// Ten `select` runs of 10, 20, … 100 ms, two `create` runs that fail, and two workflows of
/// template WT-a whose steps (linked as a chain: each step's parent is the previous one) do
/// not name the template.
fn sample() -> Vec<String> {
    let mut l = Vec::new();
    for i in 1..=10i64 {
        let id = format!("s-{i}");
        l.push(started(
            &id,
            T + i * 1000,
            json!({"operation":"select","doctype":"Task","owner":"ann"}),
        ));
        l.push(completed(&id, T + i * 1000 + i * 10));
    }
    l.push(started(
        "c-1",
        T + 20_000,
        json!({"operation":"create","doctype":"Task"}),
    ));
    l.push(failed(
        "c-1",
        T + 20_005,
        "record \"Task-00042\" is locked after 3 retries",
    ));
    l.push(started(
        "c-2",
        T + 21_000,
        json!({"operation":"create","doctype":"Task"}),
    ));
    l.push(failed(
        "c-2",
        T + 21_007,
        "record \"Task-00077\" is locked after 12 retries",
    ));
    for (w, base) in [("wf-1", T + 30_000), ("wf-2", T + 40_000)] {
        l.push(started(
            w,
            base,
            json!({"operation":"workflow","template":"WT-a","owner":"bob"}),
        ));
        let a = format!("{w}-a");
        let b = format!("{w}-b");
        l.push(started(
            &a,
            base + 1,
            json!({"operation":"select","parent_run_id":w,"step_id":"fetch","step_index":0}),
        ));
        l.push(completed(&a, base + 21));
        l.push(started(
            &b,
            base + 22,
            json!({"operation":"summarize","parent_run_id":a,"step_id":"sum","step_index":1}),
        ));
        l.push(completed(&b, base + 92));
        l.push(completed(w, base + 100));
    }
    l
}

fn group(v: &Value, key: Value) -> &Value {
    v["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|x| x["key"] == key))
        .unwrap_or_else(|| panic!("no group {key} in {v}"))
}

#[test]
fn stats_groups_use_nearest_rank_percentiles() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let v = l.ok(&["stats", "--by", "operation"]);
    let sel = group(&v, json!("select"));
    // 12 selects: 10..=100 and the two 20 ms workflow steps.
    assert_eq!(sel["runs"], 12);
    assert_eq!(sel["completed"], 12);
    // sorted: 10 20 20 20 30 40 50 60 70 80 90 100; rank ceil(0.5·12)=6 → 40, ceil(0.95·12)=12.
    assert_eq!(sel["p50_ms"], 40);
    assert_eq!(sel["p95_ms"], 100);
    assert_eq!(sel["p99_ms"], 100);
    assert_eq!(sel["max_ms"], 100);
    let cr = group(&v, json!("create"));
    assert_eq!(
        (cr["runs"].clone(), cr["failed"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(v["groups"][0]["key"], "select", "largest group first");
}

#[test]
fn stats_by_template_follows_parent_links_to_the_root() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let v = l.ok(&["stats", "--by", "template"]);
    let wt = group(&v, json!("WT-a"));
    // Two roots and their four steps, although only the roots name the template.
    assert_eq!(wt["runs"], 6);
    let none = group(&v, Value::Null);
    assert_eq!(none["runs"], 12);
}

#[test]
fn stats_since_until_filter_on_start_time() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let since = ledger::render::rfc3339(T + 5_000);
    let until = ledger::render::rfc3339(T + 8_000);
    let v = l.ok(&["stats", "--since", &since, "--until", &until]);
    assert_eq!(v["runs"], 4, "s-5..=s-8: {v}");
}

#[test]
fn stats_errors_group_by_normalised_message() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let v = l.ok(&["stats", "--errors"]);
    assert_eq!(v["failed"], 2);
    let e = &v["errors"][0];
    assert_eq!(e["message"], "record \"…\" is locked after N retries");
    assert_eq!(e["count"], 2);
    assert!(["c-1", "c-2"].contains(&e["example_run_id"].as_str().unwrap_or("")));
}

#[test]
fn stats_slowest_lists_the_longest_runs() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let v = l.ok(&["stats", "--slowest", "3"]);
    let ids: Vec<&str> = v["slowest"]
        .as_array()
        .expect("slowest")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or(""))
        .collect();
    // Ties (100 ms each) by run id.
    assert_eq!(ids, ["s-10", "wf-1", "wf-2"]);
    assert_eq!(v["slowest"][0]["duration_ms"], 100);
}

#[test]
fn stats_template_steps_break_down_the_root() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let v = l.ok(&["stats", "--template", "WT-a", "--steps"]);
    assert_eq!(v["workflows"], 2);
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(steps, ["fetch", "sum"]);
    assert_eq!(v["steps"][1]["p50_ms"], 70);
    assert_eq!(v["steps"][1]["median_share"], 0.7);
    assert_eq!(v["critical_path"][0]["step_id"], "fetch");
    assert_eq!(v["critical_path"][1]["step_id"], "sum");
    let (code, _, err) = l.cmd(&["stats", "--template", "WT-zzz", "--steps"]).json();
    assert_eq!(code, 1, "unknown template is a reported problem: {err}");
}

/// Every file under `dir` (relative paths, sorted).
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn ndjson_rows(dir: &Path, table: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for f in files(dir) {
        if f.starts_with(&format!("{table}/")) && f.ends_with(".ndjson") {
            let text = std::fs::read_to_string(dir.join(&f)).expect("reading a part");
            for line in text.lines() {
                rows.push(serde_json::from_str::<Value>(line).expect("ndjson row"));
            }
        }
    }
    rows
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest"))
        .expect("manifest is JSON")
}

#[test]
fn export_partitions_by_day_and_continues_from_the_manifest() {
    let l = Ledger::new();
    let first = vec![
        started("a", T, json!({"operation":"select"})),
        completed("a", T + 5),
        started("b", T + DAY, json!({"operation":"create","doctype":"Task"})),
        json!({"type":"doc.created","ts":T + DAY + 1,"run_id":"b","doctype":"Task","name":"T-1","data":{"x":1}}).to_string(),
    ];
    l.ingest_ok(&join_lines(&first));
    let out = l.path("export");
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        (v["from_seq"].clone(), v["to_seq"].clone()),
        (json!(1), json!(4))
    );
    assert_eq!(v["rows"], json!({"runs": 2, "events": 4, "doc_changes": 1}));
    assert_eq!(
        files(&out),
        [
            "doc_changes/date=2025-11-22/part-1-4.ndjson",
            "events/date=2025-11-21/part-1-4.ndjson",
            "events/date=2025-11-22/part-1-4.ndjson",
            "manifest.json",
            "runs/date=2025-11-21/part-1-4.ndjson",
            "runs/date=2025-11-22/part-1-4.ndjson",
        ]
    );
    let runs = ndjson_rows(&out, "runs");
    let a = runs.iter().find(|r| r["run_id"] == "a").expect("run a");
    assert_eq!(a["status"], "completed");
    assert_eq!(a["duration_ms"], 5);
    assert_eq!(a["root_run_id"], "a");
    let docs = ndjson_rows(&out, "doc_changes");
    assert_eq!(docs[0]["data"], json!({"x": 1}));
    assert_eq!(docs[0]["root_run_id"], "b");

    // Nothing new: nothing written.
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(v["up_to_date"], true);

    // More events: only they, and the run they touch, are exported, in new parts.
    l.ingest_lines(&[completed("b", T + DAY + 9)]);
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(v["rows"], json!({"runs": 1, "events": 1, "doc_changes": 0}));
    assert!(out.join("runs/date=2025-11-22/part-5-5.ndjson").exists());
    let m = manifest(&out);
    assert_eq!(m["last_seq"], 5);
    assert_eq!(m["exports"].as_array().map(Vec::len), Some(2));
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    for f in m["files"].as_array().expect("files") {
        *rows
            .entry(f["table"].as_str().unwrap_or("").to_owned())
            .or_default() += f["rows"].as_u64().unwrap_or(0);
    }
    assert_eq!(rows["events"], 5);
    assert_eq!(rows["runs"], 3, "run b appears twice");
    // The latest row of b, by last_seq, is completed.
    let latest_b = ndjson_rows(&out, "runs")
        .into_iter()
        .filter(|r| r["run_id"] == "b")
        .max_by_key(|r| r["last_seq"].as_i64())
        .expect("run b");
    assert_eq!(latest_b["status"], "completed");

    // --since-seq re-exports a chosen range.
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
        "--since-seq",
        "3",
    ]);
    assert_eq!(v["from_seq"], 4);
    // Another format into the same directory is refused.
    let (code, _, err) = l
        .cmd(&[
            "export",
            "--format",
            "csv",
            "--out",
            out.to_str().expect("utf-8"),
        ])
        .json();
    assert_eq!(code, 1, "{err}");
}

#[test]
fn export_since_until_keep_rows_of_the_range() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started("a", T, json!({"operation":"select"})),
        completed("a", T + 5),
        started("b", T + DAY, json!({"operation":"create"})),
        completed("b", T + DAY + 5),
    ]);
    let out = l.path("day2");
    let since = ledger::render::rfc3339(T + DAY);
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
        "--since",
        &since,
    ]);
    assert_eq!(v["rows"], json!({"runs": 1, "events": 2, "doc_changes": 0}));
    let runs = ndjson_rows(&out, "runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], "b");
    assert_eq!(
        manifest(&out)["last_seq"],
        4,
        "the seq advances past filtered rows"
    );
}

#[test]
fn export_spreads_many_days_over_bounded_open_files() {
    let l = Ledger::new();
    // 70 days visited twice, interleaved: every file listed, every row in one.
    let mut lines = Vec::new();
    for round in 0..2i64 {
        for d in 0..70i64 {
            let id = format!("r-{round}-{d}");
            lines.push(started(
                &id,
                T + d * DAY + round,
                json!({"operation":"select"}),
            ));
        }
    }
    l.ingest_lines(&lines);
    let out = l.path("days");
    let v = l.ok(&[
        "export",
        "--format",
        "ndjson",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(v["rows"]["events"], 140);
    let m = manifest(&out);
    let mut total = 0;
    for f in m["files"].as_array().expect("files") {
        let path = out.join(f["path"].as_str().expect("path"));
        let text = std::fs::read_to_string(&path).expect("a listed file exists");
        assert_eq!(
            text.lines().count() as u64,
            f["rows"].as_u64().expect("rows")
        );
        if f["table"] == "events" {
            total += f["rows"].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(total, 140);
    assert_eq!(ndjson_rows(&out, "events").len(), 140, "no stray files");
    assert!(files(&out).iter().all(|f| !f.ends_with(".tmp")));
}

#[test]
fn export_csv_has_a_header_and_quotes_json() {
    let l = Ledger::new();
    l.ingest_lines(&sample());
    let out = l.path("csv");
    l.ok(&[
        "export",
        "--format",
        "csv",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let part = files(&out)
        .into_iter()
        .find(|f| f.starts_with("events/"))
        .expect("an events part");
    let text = std::fs::read_to_string(out.join(part)).expect("csv");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("seq,ts,ingested_at,type,run_id,id,body"));
    let row = lines.next().expect("a row");
    assert!(row.starts_with("1,2025-11-21T04:40:01.000Z,"), "{row}");
    assert!(row.contains("\"{\"\"type\"\":\"\"run.started\"\""), "{row}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// DuckDB reads the Parquet export back: row counts match the manifest, and every group's
/// counts and percentiles match `stats --json` (quantile_disc). Skipped with a note when the
/// `duckdb` Python package is missing — except under CI, where that fails.
#[test]
fn export_parquet_agrees_with_duckdb() {
    let have = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `python3 -c 'import duckdb'` fails: run `pip install duckdb`"
        );
        eprintln!("note: skipping the DuckDB check (pip install duckdb to run it)");
        return;
    }
    let l = Ledger::new();
    // ~24k events: enough for `stats` to read on several threads.
    let demo = l.cmd(&["demo", "--runs", "2500"]).run();
    assert_eq!(demo.code, 0, "demo: {}", demo.stderr);
    let out = l.path("parquet");
    let out_s = out.to_str().expect("utf-8");
    l.ok(&["export", "--format", "parquet", "--out", out_s]);
    // An incremental export after more events: a new run, and an old run touched again (it is
    // written a second time; DuckDB takes its latest row by last_seq).
    let old = l.ok(&["runs", "--limit", "1", "--operation", "select"]);
    let old_id = old["runs"][0]["run_id"]
        .as_str()
        .expect("a select run")
        .to_owned();
    let now = chrono::Utc::now().timestamp_millis();
    l.ingest_lines(&[
        started("late-1", now, json!({"operation":"select","owner":"zed"})),
        completed("late-1", now + 7),
        json!({"type":"run.progress","ts":now,"run_id":old_id,"path":"output.note","value":"x"})
            .to_string(),
    ]);
    let v = l.ok(&["export", "--format", "parquet", "--out", out_s]);
    assert_eq!(v["rows"]["runs"], 2, "{v}");
    assert_eq!(v["rows"]["events"], 3, "{v}");
    let script = repo_root().join("tests/duckdb_check.py");
    for by in ["operation", "template", "status"] {
        let stats = l.ok(&["stats", "--by", by]);
        let stats_file = l.write(&format!("stats-{by}.json"), &stats.to_string());
        let o = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .arg(&stats_file)
            .output()
            .expect("running python3");
        assert!(
            o.status.success(),
            "duckdb_check.py failed for --by {by}:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
