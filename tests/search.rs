//! `runledger search`: planted tokens, JSON paths, filters, CJK, late completions, crashes
//! while indexing, huge payloads, malformed queries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_runledger");
const T0: i64 = 1_763_700_000_000;

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.db");
        Db { _dir: dir, path }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--db").arg(&self.path).args(args);
        c.env_remove("RUNLEDGER_DB");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning runledger");
        if let Some(mut sin) = child.stdin.take() {
            let _ = sin.write_all(stdin.unwrap_or_default());
        }
        let out = child.wait_with_output().expect("waiting for runledger");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked"),
            "runledger {args:?} panicked: {err}"
        );
        out
    }

    fn ingest(&self, lines: &[Value]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        self.ingest_text(&text, &[]);
    }

    fn ingest_text(&self, text: &str, extra: &[&str]) {
        let mut args = vec!["ingest", "-", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args, Some(text.as_bytes()));
        assert_eq!(
            out.status.code(),
            Some(0),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `search ARGS --json`, exit 0 asserted.
    fn search(&self, args: &[&str]) -> Value {
        let mut a = vec!["search", "--json", "--limit", "1000"];
        a.extend_from_slice(args);
        let out = self.run(&a, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "search {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("search prints JSON")
    }

    /// The run ids a search finds (asserting one hit per run).
    fn ids(&self, args: &[&str]) -> Vec<String> {
        let v = self.search(args);
        let ids: Vec<String> = v["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["run_id"].as_str().expect("run_id").to_owned())
            .collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "a run twice in {v}");
        assert_eq!(v["total"].as_u64(), Some(ids.len() as u64), "{v}");
        ids
    }

    fn sorted_ids(&self, args: &[&str]) -> Vec<String> {
        let mut ids = self.ids(args);
        ids.sort();
        ids
    }
}

fn started(run_id: &str, ts: i64, run: Value) -> Value {
    json!({"type": "run.started", "ts": ts, "run_id": run_id, "run": run})
}

fn completed(run_id: &str, ts: i64, output: Value) -> Value {
    json!({"type": "run.completed", "ts": ts, "run_id": run_id, "output": output})
}

/// A ledger with generated traffic plus runs with planted tokens in every kind of text.
fn planted() -> (Db, BTreeMap<&'static str, &'static str>) {
    let db = Db::new();
    let mut lines: Vec<Value> =
        ledger::workload::ndjson_lines(&ledger::workload::WorkloadConfig::new(7, 40))
            .iter()
            .map(|l| serde_json::from_str(l).expect("workload line"))
            .collect();
    let t = T0 + 3_600_000;
    lines.extend([
        started("p-input", t, json!({"operation": "select", "doctype": "Task",
            "input": {"where": {"name": "Task-70001", "note": "zqinputtoken"}}})),
        completed("p-input", t + 5, json!({"data": []})),
        started("p-output", t + 10, json!({"operation": "summarize"})),
        completed("p-output", t + 20, json!({"data": {"subject": "zqoutputtoken invoice"}})),
        started("p-error", t + 30, json!({"operation": "summarize"})),
        json!({"type": "run.failed", "ts": t + 40, "run_id": "p-error",
            "error": {"message": "zqerrortoken timeout", "code": "ZQCODE"}}),
        started("p-stream", t + 50, json!({"operation": "message"})),
        json!({"type": "run.progress", "ts": t + 51, "run_id": "p-stream", "path": "output.text",
            "op": "append", "value": "zqstream"}),
        json!({"type": "run.progress", "ts": t + 52, "run_id": "p-stream", "path": "output.text",
            "op": "append", "value": "token and more"}),
        json!({"type": "run.progress", "ts": t + 53, "run_id": "p-stream",
            "path": "steps.s1.note", "value": "zqextratoken"}),
        started("p-wait", t + 60, json!({"operation": "flow", "flow": "FL-zq"})),
        json!({"type": "run.waiting", "ts": t + 61, "run_id": "p-wait", "step_id": "s1",
            "prompt": "zqprompttoken approve?"}),
        json!({"type": "run.resumed", "ts": t + 62, "run_id": "p-wait", "step_id": "s1",
            "data": {"answer": "zqresumedtoken"}}),
        started("p-doc", t + 70, json!({"operation": "create", "doctype": "Note"})),
        json!({"type": "doc.created", "ts": t + 71, "run_id": "p-doc", "doctype": "Note",
            "name": "Note-zq1", "data": {"title": "zqdoctoken", "status": "Open"}}),
        json!({"type": "doc.updated", "ts": t + 72, "run_id": "p-doc", "doctype": "Note",
            "name": "Note-zq1", "data": {"status": "Closed"}, "before": {"status": "zqbeforetoken"}}),
        completed("p-doc", t + 73, json!({"data": [{"name": "Note-zq1"}]})),
        json!({"type": "run.checkpoint", "run": {"id": "p-ckpt", "status": "completed",
            "operation": "select", "timestamp": t + 80, "input": {"q": "zqcheckpointtoken"},
            "output": {"data": []}}}),
        json!({"type": "run.cancelled", "ts": t + 90, "run_id": "p-cancel", "reason": "zqcanceltoken"}),
    ]);
    db.ingest(&lines);
    let tokens = BTreeMap::from([
        ("zqinputtoken", "p-input"),
        ("zqoutputtoken", "p-output"),
        ("zqerrortoken", "p-error"),
        ("zqstreamtoken", "p-stream"),
        ("zqextratoken", "p-stream"),
        ("zqprompttoken", "p-wait"),
        ("zqresumedtoken", "p-wait"),
        ("zqdoctoken", "p-doc"),
        ("zqbeforetoken", "p-doc"),
        ("zq1", "p-doc"),
        ("zqcheckpointtoken", "p-ckpt"),
        ("zqcanceltoken", "p-cancel"),
    ]);
    (db, tokens)
}

#[test]
fn search_planted_tokens_are_found_in_their_run_only() {
    let (db, tokens) = planted();
    for (token, run) in &tokens {
        let v = db.search(&[token]);
        assert_eq!(v["total"], 1, "{token}: {v}");
        assert_eq!(v["hits"][0]["run_id"], *run, "{token}: {v}");
        let snippet = v["hits"][0]["snippet"].as_str().unwrap_or_default();
        assert!(
            snippet
                .to_lowercase()
                .contains(token.get(..6).unwrap_or(token)),
            "{token}: snippet {snippet:?}"
        );
        assert!(
            !v["hits"][0]["highlights"].as_array().unwrap().is_empty(),
            "{v}"
        );
    }
    // Case does not matter; generated traffic never matches a planted token.
    assert_eq!(db.ids(&["ZQINPUTTOKEN"]), ["p-input"]);
    assert!(db.ids(&["zqnosuchtoken"]).is_empty());
    // Words all must match; OR widens.
    assert_eq!(db.ids(&["zqerrortoken", "timeout"]), ["p-error"]);
    assert!(db.ids(&["zqerrortoken", "zqinputtoken"]).is_empty());
    assert_eq!(
        db.sorted_ids(&["zqerrortoken OR zqinputtoken"]),
        ["p-error", "p-input"]
    );
    // Human output names the run.
    let out = db.run(&["search", "zqdoctoken"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("p-doc") && text.contains("1 run match"),
        "{text}"
    );
}

#[test]
fn search_json_paths() {
    let (db, _) = planted();
    assert_eq!(db.ids(&["input.where.name:Task-70001"]), ["p-input"]);
    assert_eq!(db.ids(&["input.where.note:zqinputtoken"]), ["p-input"]);
    // The same token on another path does not match.
    assert!(db.ids(&["output.where.note:zqinputtoken"]).is_empty());
    assert!(db.ids(&["input.where.name:zqinputtoken"]).is_empty());
    assert_eq!(db.ids(&["output.data.subject:zqoutputtoken"]), ["p-output"]);
    assert_eq!(db.ids(&["error.code:ZQCODE"]), ["p-error"]);
    assert_eq!(db.ids(&["error.message:zqerrortoken"]), ["p-error"]);
    assert_eq!(db.ids(&["output.text:zqstreamtoken"]), ["p-stream"]);
    assert_eq!(db.ids(&["extra.steps.s1.note:zqextratoken"]), ["p-stream"]);
    assert_eq!(db.ids(&["resumed.answer:zqresumedtoken"]), ["p-wait"]);
    assert_eq!(db.ids(&["data.title:zqdoctoken"]), ["p-doc"]);
    assert_eq!(db.ids(&["before.status:zqbeforetoken"]), ["p-doc"]);
    assert!(db.ids(&["data.status:zqbeforetoken"]).is_empty());
    // Generated traffic: every failed summarize run that said timeout has it in its error.
    let said_timeout =
        db.sorted_ids(&["timeout", "--operation", "summarize", "--status", "failed"]);
    let in_error = db.sorted_ids(&[
        "error.message:timeout",
        "--operation",
        "summarize",
        "--status",
        "failed",
    ]);
    assert!(!said_timeout.is_empty());
    assert_eq!(said_timeout, in_error);
    // The snippet highlights a JSON-path match too.
    let v = db.search(&["input.where.name:Task-70001"]);
    let snippet = v["hits"][0]["snippet"].as_str().unwrap_or_default();
    assert!(snippet.contains("Task-70001"), "{v}");
    assert!(
        !v["hits"][0]["highlights"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[test]
fn search_filters() {
    let db = Db::new();
    let mut lines = Vec::new();
    // 12 runs sharing the word "zqshared", one hour apart, with varied fields.
    let ops = ["select", "create", "summarize"];
    let doctypes = ["Task", "Email"];
    let owners = ["alice", "bob"];
    for i in 0..12i64 {
        let id = format!("f-{i:02}");
        let ts = T0 + i * 3_600_000;
        lines.push(started(
            &id,
            ts,
            json!({
            "operation": ops[i as usize % 3], "doctype": doctypes[i as usize % 2],
            "owner": owners[(i as usize / 2) % 2], "template": if i < 4 { "WT-a" } else { "WT-b" },
            "agent": "zqagent",
            "input": {"text": format!("zqshared item {i}")}}),
        ));
        match i % 4 {
            0 => lines.push(completed(&id, ts + 10, json!({"ok": true}))),
            1 => lines.push(json!({"type": "run.failed", "ts": ts + 10, "run_id": id,
                "error": {"message": "boom"}})),
            2 => lines.push(json!({"type": "run.cancelled", "ts": ts + 10, "run_id": id})),
            _ => {}
        }
    }
    // A flow-only run matches --template by its flow.
    lines.push(started(
        "f-flow",
        T0 - 1000,
        json!({"operation": "flow", "flow": "WT-a",
        "input": {"text": "zqshared flow"}}),
    ));
    db.ingest(&lines);
    let all = db.sorted_ids(&["zqshared"]);
    assert_eq!(all.len(), 13);

    let expect = |pred: &dyn Fn(i64) -> bool| -> Vec<String> {
        (0..12i64)
            .filter(|i| pred(*i))
            .map(|i| format!("f-{i:02}"))
            .collect()
    };
    assert_eq!(
        db.sorted_ids(&["zqshared", "--operation", "create"]),
        expect(&|i| i % 3 == 1)
    );
    assert_eq!(
        db.sorted_ids(&["zqshared", "--doctype", "Email"]),
        expect(&|i| i % 2 == 1)
    );
    assert_eq!(
        db.sorted_ids(&["zqshared", "--owner", "bob"]),
        expect(&|i| (i / 2) % 2 == 1)
    );
    assert_eq!(
        db.sorted_ids(&["zqshared", "--status", "failed"]),
        expect(&|i| i % 4 == 1)
    );
    let mut running = expect(&|i| i % 4 == 3);
    running.push("f-flow".into());
    assert_eq!(db.sorted_ids(&["zqshared", "--status", "running"]), running);
    assert_eq!(
        db.sorted_ids(&["zqshared", "--status", "cancelled"]),
        expect(&|i| i % 4 == 2)
    );
    let mut wt_a = vec!["f-flow".to_string()];
    wt_a.extend(expect(&|i| i < 4));
    wt_a.sort();
    assert_eq!(db.sorted_ids(&["zqshared", "--template", "WT-a"]), wt_a);
    assert_eq!(db.sorted_ids(&["--agent", "zqagent"]), expect(&|_| true));
    // Time range on the run's start, both ends inclusive.
    let since = ledger::render::rfc3339(T0 + 3 * 3_600_000);
    let until = ledger::render::rfc3339(T0 + 6 * 3_600_000);
    assert_eq!(
        db.sorted_ids(&["zqshared", "--since", &since, "--until", &until]),
        expect(&|i| (3..=6).contains(&i))
    );
    assert_eq!(db.sorted_ids(&["zqshared", "--until", &since]), {
        let mut v = expect(&|i| i <= 3);
        v.push("f-flow".to_string());
        v
    });
    // Filters combine; the query can name filter fields too.
    assert_eq!(
        db.sorted_ids(&["zqshared", "--owner", "alice", "--operation", "select"]),
        expect(&|i| (i / 2) % 2 == 0 && i % 3 == 0)
    );
    assert_eq!(
        db.sorted_ids(&["zqshared status:failed"]),
        expect(&|i| i % 4 == 1)
    );
    // An empty query lists every run the filters keep, newest first as `runs` does.
    let listed: Vec<String> = db.ids(&["", "--operation", "select"]);
    let out = db.run(&["runs", "--operation", "select", "--json"], None);
    let runs: Value = serde_json::from_slice(&out.stdout).expect("runs json");
    let by_runs: Vec<String> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(listed, by_runs);
    assert_eq!(
        db.sorted_ids(&["", "--doctype", "Task"]),
        expect(&|i| i % 2 == 0)
    );
    // Paging: disjoint pages that add up to everything, total unchanged.
    let mut paged = Vec::new();
    for offset in [0, 5, 10] {
        let mut a = vec!["search", "zqshared", "--json", "--limit", "5"];
        let off = offset.to_string();
        a.extend_from_slice(&["--offset", &off]);
        let out = db.run(&a, None);
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["total"], 13);
        for h in v["hits"].as_array().expect("hits") {
            paged.push(h["run_id"].as_str().expect("id").to_owned());
        }
    }
    paged.sort();
    assert_eq!(paged, all);
    let out = db.run(&["search", "zqshared", "--json", "--limit", "0"], None);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["total"].as_u64(), v["hits"].as_array().map(Vec::len)),
        (Some(13), Some(0))
    );
}

#[test]
fn search_cjk_words() {
    let db = Db::new();
    db.ingest(&[
        started(
            "c-ja",
            T0,
            json!({"operation": "message",
            "input": {"text": "請求書を送ってください"}}),
        ),
        started(
            "c-zh",
            T0 + 1,
            json!({"operation": "message",
            "input": {"text": "把发票发给财务部"}}),
        ),
        started(
            "c-mix",
            T0 + 2,
            json!({"operation": "message",
            "input": {"text": "請求書 INV-4471 を送付しました"}}),
        ),
        started(
            "c-other",
            T0 + 3,
            json!({"operation": "message",
            "input": {"text": "書を請ける 求"}}),
        ),
        started(
            "c-en",
            T0 + 4,
            json!({"operation": "message",
            "input": {"text": "please send the invoice"}}),
        ),
    ]);
    assert_eq!(db.sorted_ids(&["請求書"]), ["c-ja", "c-mix"]);
    assert_eq!(db.sorted_ids(&["発票"]), Vec::<String>::new());
    assert_eq!(db.sorted_ids(&["发票"]), ["c-zh"]);
    assert_eq!(db.sorted_ids(&["财务"]), ["c-zh"]);
    assert_eq!(db.sorted_ids(&["請求書", "4471"]), ["c-mix"]);
    assert_eq!(db.sorted_ids(&["input.text:送付"]), ["c-mix"]);
    assert_eq!(db.sorted_ids(&["invoice"]), ["c-en"]);
    let v = db.search(&["请求书 OR 請求書"]);
    let snippet = v["hits"][0]["snippet"].as_str().unwrap_or_default();
    let h = &v["hits"][0]["highlights"][0];
    let chars: Vec<char> = snippet.chars().collect();
    let (a, b) = (
        h[0].as_u64().unwrap() as usize,
        h[1].as_u64().unwrap() as usize,
    );
    assert_eq!(chars[a..b].iter().collect::<String>(), "請求書", "{v}");
}

#[test]
fn search_status_filter_follows_a_late_completion() {
    let db = Db::new();
    db.ingest(&[started(
        "late",
        T0,
        json!({"operation": "summarize",
        "input": {"text": "zqlatetoken"}}),
    )]);
    assert_eq!(db.ids(&["zqlatetoken", "--status", "running"]), ["late"]);
    assert!(db.ids(&["zqlatetoken", "--status", "completed"]).is_empty());
    db.ingest(&[completed("late", T0 + 100, json!({"text": "zqlateoutput"}))]);
    assert!(db.ids(&["zqlatetoken", "--status", "running"]).is_empty());
    assert_eq!(db.ids(&["zqlatetoken", "--status", "completed"]), ["late"]);
    assert_eq!(db.ids(&["zqlatetoken zqlateoutput"]), ["late"]);
    // A terminal event that arrives before the start (out of order) decides too.
    db.ingest(&[
        json!({"type": "run.failed", "ts": T0 + 500, "run_id": "early",
        "error": {"message": "zqearlytoken"}}),
    ]);
    assert_eq!(db.ids(&["zqearlytoken", "--status", "failed"]), ["early"]);
    db.ingest(&[started(
        "early",
        T0 + 400,
        json!({"operation": "select", "doctype": "Task"}),
    )]);
    assert_eq!(
        db.ids(&["zqearlytoken", "--status", "failed", "--doctype", "Task"]),
        ["early"]
    );
}

/// Every run id of the ledger, from the projections.
fn all_runs(l: &ledger::Ledger) -> BTreeSet<String> {
    let v = l
        .view(None)
        .expect("view")
        .runs_json(&ledger::project::RunFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .expect("runs");
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every run id the index holds, asserting none twice.
fn indexed_runs(l: &ledger::Ledger) -> BTreeSet<String> {
    let mut req = query::search::SearchRequest::new("");
    req.limit = 1_000_000;
    let v = query::search::search(l, &req).expect("search");
    let hits = v["hits"].as_array().expect("hits");
    let ids: BTreeSet<String> = hits
        .iter()
        .map(|h| h["run_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), hits.len(), "a run indexed twice");
    assert_eq!(v["total"].as_u64(), Some(ids.len() as u64));
    ids
}

fn ingest_workload(l: &ledger::Ledger, seed: u64, roots: usize) {
    let mut text = Vec::new();
    ledger::workload::write_ndjson(
        &ledger::workload::WorkloadConfig::new(seed, roots),
        &mut text,
    )
    .expect("workload");
    ledger::ingest::ingest_reader(
        l,
        text.as_slice(),
        &ledger::ingest::IngestOptions::default(),
        &mut ledger::ingest::NoSink,
    )
    .expect("ingest");
}

#[test]
fn search_crash_while_indexing_catches_up_without_loss_or_doubles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.db");
    let l = ledger::Ledger::open(&path).expect("open");
    ingest_workload(&l, 11, 100);
    ledger::project::catch_up(&l, &mut |_, _| {}).expect("projections");
    let head = l.head().expect("head").seq;
    assert!(head > 700, "{head}");
    let opts = query::search::CatchUpOptions {
        batch_events: 200,
        crash_after_batches: Some(2),
    };
    let err = query::search::catch_up_with(&l, &opts);
    assert!(err.is_err(), "the simulated crash reports an error");
    // Two batches committed, the third lost.
    assert_eq!(query::search::indexed_seq(&l).expect("seq"), Some(400));
    // More events arrive (some touching runs indexed before), then the index catches up.
    ingest_workload(&l, 12, 20);
    query::catch_up(&l).expect("catch up");
    let runs = all_runs(&l);
    assert_eq!(indexed_runs(&l), runs);
    assert_eq!(
        query::search::indexed_seq(&l).expect("seq"),
        Some(l.head().expect("head").seq)
    );
    // The same answers as an index built from scratch.
    let queries = [
        "invoice",
        "請求書",
        "timeout",
        "status:failed",
        "input.where.unread:true",
    ];
    let answer = |l: &ledger::Ledger| -> Vec<Value> {
        queries
            .iter()
            .map(|q| {
                let mut r = query::search::SearchRequest::new(*q);
                r.limit = 10_000;
                let mut v = query::search::search(l, &r).expect("search");
                let mut ids: Vec<String> = v["hits"]
                    .as_array()
                    .expect("hits")
                    .iter()
                    .map(|h| h["run_id"].as_str().expect("id").to_owned())
                    .collect();
                ids.sort();
                json!({"total": v["total"].take(), "ids": ids})
            })
            .collect()
    };
    let incremental = answer(&l);
    query::search::rebuild(&l).expect("rebuild");
    assert_eq!(answer(&l), incremental);
    assert_eq!(indexed_runs(&l), runs);
}

#[test]
fn search_killed_process_resumes_from_its_last_commit() {
    let db = Db::new();
    let mut text = Vec::new();
    ledger::workload::write_ndjson(&ledger::workload::config_for_events(5, 20_000), &mut text)
        .expect("workload");
    db.ingest_text(&String::from_utf8_lossy(&text), &["--no-wait-indexed"]);
    // Kill searches (which catch the index up first) at growing delays.
    for delay_ms in [50u64, 200, 500, 900] {
        let mut child = db
            .cmd(&["search", "invoice", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let l = ledger::Ledger::open_existing(&db.path).expect("open");
    query::catch_up(&l).expect("catch up");
    assert_eq!(indexed_runs(&l), all_runs(&l));
}

#[test]
fn search_bad_queries_are_clear_errors() {
    let (db, _) = planted();
    for (q, says) in [
        ("nosuchfield:x", "no field \"nosuchfield\""),
        ("input.where.name:", "syntax error"),
        ("(invoice", "syntax error"),
        ("\"unclosed", "syntax error"),
        ("-invoice", "only excluded terms"),
        ("started:[a TO b]", "started"),
        ("input.where.n:>4000", "`started` only"),
    ] {
        let out = db.run(&["search", "--", q], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{q}: {err}");
        assert!(
            err.contains("bad query") && err.contains(says),
            "{q}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{q}: {err}");
    }
    let out = db.run(&["search", "x", "--status", "weird"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn search_huge_payloads_are_indexed_bounded() {
    let db = Db::new();
    let mut big = String::from("zqheadtoken ");
    while big.len() < 1 << 20 {
        big.push_str("lorem ipsum dolor ");
    }
    big.push_str(" zqtailtoken");
    let items: Vec<Value> = (0..40_000)
        .map(|i| json!({"name": format!("Item-{i}"), "note": if i == 39_999 { "zqlastitem" } else { "x" }}))
        .collect();
    db.ingest(&[
        started(
            "huge",
            T0,
            json!({"operation": "summarize", "input": {"text": big}}),
        ),
        completed("huge", T0 + 10, json!({"data": items})),
        started(
            "small",
            T0 + 20,
            json!({"operation": "summarize", "input": {"text": "zqsmall"}}),
        ),
    ]);
    let started_at = Instant::now();
    assert_eq!(db.ids(&["zqheadtoken"]), ["huge"]);
    // Past the first 64 KiB of a string / 256 KiB of a field: not indexed (documented).
    assert!(db.ids(&["zqtailtoken"]).is_empty());
    assert!(db.ids(&["zqlastitem"]).is_empty());
    assert_eq!(db.ids(&["output.data.name:Item-3"]), ["huge"]);
    assert_eq!(db.ids(&["zqsmall"]), ["small"]);
    assert!(started_at.elapsed() < Duration::from_secs(30));
    let index_bytes: u64 = std::fs::read_dir(search_dir(&db.path))
        .expect("index dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(index_bytes < 4 << 20, "index of {index_bytes} bytes");
}

fn search_dir(db: &Path) -> PathBuf {
    query::search::index_dir(db)
}

#[test]
fn search_rebuild_and_read_only_handle() {
    let (db, tokens) = planted();
    let before = db.search(&["invoice"]);
    let out = db.run(&["rebuild"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.search(&["invoice"])["total"], before["total"]);
    // Another process holds the ledger for writing: search still answers, read-only.
    let writer = ledger::Ledger::open(&db.path).expect("open for writing");
    assert!(writer.is_writable());
    for (token, run) in tokens.iter().take(3) {
        assert_eq!(db.ids(&[token]), [*run]);
    }
    drop(writer);
    // A missing index is built again on the next search.
    std::fs::remove_dir_all(search_dir(&db.path)).expect("rm index");
    assert_eq!(db.search(&["invoice"])["total"], before["total"]);
}

/// Answers to a fixed set of searches (ids sorted), for comparing two indexes.
fn answers(l: &ledger::Ledger) -> Vec<Value> {
    let mut reqs: Vec<query::search::SearchRequest> = [
        "invoice",
        "請求書",
        "timeout",
        "input.where.unread:true",
        "output.data.subject:invoice",
        "data.status:Open",
        "",
    ]
    .iter()
    .map(|q| query::search::SearchRequest::new(*q))
    .collect();
    for st in ["running", "waiting", "completed", "failed", "cancelled"] {
        let mut r = query::search::SearchRequest::new("");
        r.status = ledger::project::Status::parse(st);
        reqs.push(r);
    }
    reqs.into_iter()
        .map(|mut r| {
            r.limit = 100_000;
            let mut v = query::search::search(l, &r).expect("search");
            let mut ids: Vec<String> = v["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| format!("{} {}", h["run_id"].as_str().unwrap_or("?"), h["snippet"]))
                .collect();
            ids.sort();
            json!({"q": r.query, "status": format!("{:?}", r.status), "total": v["total"].take(), "ids": ids})
        })
        .collect()
}

/// Ingests `lines`, then catches the projections and the index up, the index committing every
/// `batch_events` events.
fn ingest_and_index(l: &ledger::Ledger, lines: &[String], batch_events: u64) {
    let text = lines.join("\n") + "\n";
    ledger::ingest::ingest_reader(
        l,
        text.as_bytes(),
        &ledger::ingest::IngestOptions::default(),
        &mut ledger::ingest::NoSink,
    )
    .expect("ingest");
    ledger::project::catch_up(l, &mut |_, _| {}).expect("projections");
    let opts = query::search::CatchUpOptions {
        batch_events,
        crash_after_batches: None,
    };
    query::search::catch_up_with(l, &opts).expect("index");
}

#[test]
fn search_incremental_index_equals_a_rebuilt_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inc.db");
    let l = ledger::Ledger::open(&path).expect("open");
    let lines = ledger::workload::ndjson_lines(&ledger::workload::WorkloadConfig::new(3, 60));
    // Uneven chunks, each ingested and indexed in small batches, so that runs (delivered out
    // of order) span chunks and batches.
    let sizes = [1usize, 17, 5, 64, 3, 200, 29];
    let mut at = 0;
    let mut i = 0;
    while at < lines.len() {
        let n = sizes[i % sizes.len()].min(lines.len() - at);
        ingest_and_index(&l, &lines[at..at + n], 1 + (i as u64 * 7) % 50);
        at += n;
        i += 1;
    }
    let incremental = answers(&l);
    assert_eq!(indexed_runs(&l), all_runs(&l));
    query::search::rebuild(&l).expect("rebuild");
    assert_eq!(answers(&l), incremental);
}

/// Regression: a rebuild right after many small commits met the merges those commits started
/// still writing segment files into the index directory, and failed removing it ("Directory
/// not empty").
#[test]
fn search_rebuild_waits_for_merges_in_flight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let l = ledger::Ledger::open(dir.path().join("m.db")).expect("open");
    let lines = ledger::workload::ndjson_lines(&ledger::workload::WorkloadConfig::new(11, 30));
    let rounds = 6;
    for (round, part) in lines.chunks(lines.len().div_ceil(rounds)).enumerate() {
        // A commit per few events: dozens of segments, whose merges still run as the rebuild
        // starts.
        ingest_and_index(&l, part, 3);
        if let Err(e) = query::search::rebuild(&l) {
            panic!("rebuild in round {round}: {e}");
        }
    }
    assert_eq!(indexed_runs(&l), all_runs(&l));
}

#[test]
fn search_damaged_index_is_built_again() {
    let (db, tokens) = planted();
    let dir = search_dir(&db.path);
    let before = db.search(&["invoice"])["total"].clone();
    // A lost segment file.
    let idx = std::fs::read_dir(&dir)
        .expect("index dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .expect("a segment file");
    std::fs::remove_file(idx).expect("rm");
    assert_eq!(db.search(&["invoice"])["total"], before);
    // A meta.json that does not parse.
    std::fs::write(dir.join("meta.json"), "{\"broken").expect("write");
    assert_eq!(db.search(&["invoice"])["total"], before);
    for (token, run) in &tokens {
        assert_eq!(db.ids(&[token]), [*run]);
    }
}

#[test]
fn search_index_left_by_another_ledger_is_replaced() {
    let db = Db::new();
    db.ingest(&[started(
        "old-run",
        T0,
        json!({"operation": "select",
        "input": {"text": "zqoldtoken"}}),
    )]);
    assert_eq!(db.ids(&["zqoldtoken"]), ["old-run"]);
    // The ledger file is replaced (same path, other events); its index directory stays.
    std::fs::remove_file(&db.path).expect("rm db");
    db.ingest(&[
        started(
            "new-run",
            T0,
            json!({"operation": "select", "input": {"text": "zqnewtoken"}}),
        ),
        completed("new-run", T0 + 1, json!({})),
    ]);
    assert!(db.ids(&["zqoldtoken"]).is_empty());
    assert_eq!(db.ids(&["zqnewtoken"]), ["new-run"]);
}
