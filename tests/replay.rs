//! `replay`, `replay --check`, `diff` and `timeline` against the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const T0: i64 = 1_763_700_000_000;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runledger")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect()
    }
}

fn rl(db: &Path, args: &[&str]) -> Out {
    let o = Command::new(bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run runledger");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ingest(db: &Path, lines: &[Value]) {
    let dir = db.parent().expect("db dir");
    let file = dir.join(format!("in-{}.ndjson", lines.len()));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).expect("write ndjson");
    ingest_file(db, &file);
}

fn ingest_file(db: &Path, file: &Path) {
    let o = rl(db, &["--json", "ingest", file.to_str().expect("path")]);
    assert_eq!(o.code, 0, "ingest failed: {}{}", o.stdout, o.stderr);
}

fn tmpdb() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("l.db");
    (dir, db)
}

// ---- a small templated workflow, recorded by hand -----------------------------------------

fn template_steps() -> Value {
    json!([
        {"id": "emails", "operation": "select", "doctype": "Email",
         "input": {"where": {"unread": true}}},
        {"id": "sum", "operation": "summarize",
         "if": "{{emails.output.data.length}} > 1",
         "input": {"text": "{{emails.output.data}}", "n": "count={{emails.output.data.length}}"}},
        {"id": "task", "operation": "create", "doctype": "Task",
         "input": {"data": {"subject": "{{prev.output.text}}"}}}
    ])
}

fn template_record(name: &str, ts: i64) -> Vec<Value> {
    vec![
        json!({"type": "run.started", "run_id": format!("tpl-{name}"), "ts": ts,
               "run": {"operation": "create", "doctype": "Workflow Template"}}),
        json!({"type": "doc.created", "run_id": format!("tpl-{name}"), "ts": ts + 1,
               "doctype": "Workflow Template", "name": name,
               "data": {"description": "test", "steps": template_steps()}}),
        json!({"type": "run.completed", "run_id": format!("tpl-{name}"), "ts": ts + 2,
               "output": {"data": [{"name": name}]}}),
    ]
}

/// One recorded step: `(run_id, step_id, step_index, input, Ok(output) | Err(message))`.
type Step = (
    String,
    &'static str,
    i64,
    Value,
    Result<Value, &'static str>,
);

/// A workflow root with the given steps, run one after the other, 10 ms each.
fn workflow(
    root: &str,
    template: Option<&str>,
    root_input: Value,
    start: i64,
    steps: &[Step],
) -> Vec<Value> {
    let mut run = json!({"operation": "workflow", "input": root_input});
    if let Some(t) = template {
        run["template"] = json!(t);
    }
    let mut ev = vec![json!({"type": "run.started", "run_id": root, "ts": start, "run": run})];
    let mut t = start + 1;
    for (id, step_id, index, input, out) in steps {
        ev.push(json!({"type": "run.started", "run_id": id, "ts": t,
            "run": {"operation": "step", "parent_run_id": root, "step_id": step_id,
                    "step_index": index, "input": input}}));
        if *step_id == "task" {
            ev.push(
                json!({"type": "doc.created", "run_id": id, "ts": t + 5, "doctype": "Task",
                "name": format!("T-{id}"), "data": input["data"].clone()}),
            );
        }
        match out {
            Ok(o) => {
                ev.push(json!({"type": "run.completed", "run_id": id, "ts": t + 10, "output": o}))
            }
            Err(m) => ev.push(
                json!({"type": "run.failed", "run_id": id, "ts": t + 10, "error": {"message": m}}),
            ),
        }
        t += 11;
    }
    if steps.last().is_some_and(|s| s.4.is_err()) {
        ev.push(json!({"type": "run.failed", "run_id": root, "ts": t, "error": {"message": "step failed"}}));
    } else {
        ev.push(json!({"type": "run.completed", "run_id": root, "ts": t, "output": {"steps": steps.len()}}));
    }
    ev
}

fn emails(n: usize) -> Value {
    let data: Vec<Value> = (0..n).map(|i| json!({"name": format!("E{i}")})).collect();
    json!({"data": data})
}

fn step(
    id: &str,
    step_id: &'static str,
    index: i64,
    input: Value,
    out: Result<Value, &'static str>,
) -> Step {
    (id.to_owned(), step_id, index, input, out)
}

fn emails_step(p: &str, n: usize) -> Step {
    step(
        &format!("{p}-e"),
        "emails",
        0,
        json!({"where": {"unread": true}}),
        Ok(emails(n)),
    )
}

fn sum_step(p: &str, n: usize, text: &str) -> Step {
    let data = emails(n)["data"].clone();
    step(
        &format!("{p}-s"),
        "sum",
        1,
        json!({"text": data, "n": format!("count={n}")}),
        Ok(json!({"text": text})),
    )
}

fn task_step(p: &str, subject: Value) -> Step {
    step(
        &format!("{p}-t"),
        "task",
        2,
        json!({"data": {"subject": subject}}),
        Ok(json!({"data": [{"name": format!("T-{p}-t")}]})),
    )
}

fn check(db: &Path, root: &str) -> (i32, Value) {
    let o = rl(db, &["--json", "replay", "--check", root]);
    assert!(o.code == 0 || o.code == 1, "{}{}", o.stdout, o.stderr);
    (o.code, o.json())
}

fn flows_db() -> (tempfile::TempDir, PathBuf) {
    let (dir, db) = tmpdb();
    let mut ev = template_record("WT-test", T0);
    // Faithful: two emails, summary, task from the summary.
    ev.extend(workflow(
        "wf-ok",
        Some("WT-test"),
        json!({}),
        T0 + 100,
        &[
            emails_step("ok", 2),
            sum_step("ok", 2, "two mails"),
            task_step("ok", json!("two mails")),
        ],
    ));
    // Faithful: one email, summary skipped, `prev` is the emails step (no text: null).
    ev.extend(workflow(
        "wf-skip",
        Some("WT-test"),
        json!({}),
        T0 + 200,
        &[emails_step("skip", 1), task_step("skip", Value::Null)],
    ));
    // Changed input.
    ev.extend(workflow(
        "wf-edit",
        Some("WT-test"),
        json!({}),
        T0 + 300,
        &[
            emails_step("edit", 2),
            sum_step("edit", 2, "two mails"),
            task_step("edit", json!("(edited) two mails")),
        ],
    ));
    // Ran although the condition was false.
    ev.extend(workflow(
        "wf-ran",
        Some("WT-test"),
        json!({}),
        T0 + 400,
        &[
            emails_step("ran", 1),
            sum_step("ran", 1, "one mail"),
            task_step("ran", json!("one mail")),
        ],
    ));
    // Skipped although the condition was true.
    ev.extend(workflow(
        "wf-miss",
        Some("WT-test"),
        json!({}),
        T0 + 500,
        &[emails_step("miss", 3), task_step("miss", Value::Null)],
    ));
    // Failed at the summary (no retry): the task is not reached, which is no divergence.
    ev.extend(workflow(
        "wf-fail",
        Some("WT-test"),
        json!({}),
        T0 + 600,
        &[
            emails_step("fail", 2),
            step(
                "fail-s",
                "sum",
                1,
                json!({"text": emails(2)["data"].clone(), "n": "count=2"}),
                Err("model timeout"),
            ),
        ],
    ));
    // Failed, retried, then went on: the retry's output is `prev`.
    ev.extend(workflow(
        "wf-retry",
        Some("WT-test"),
        json!({}),
        T0 + 700,
        &[
            emails_step("retry", 2),
            step(
                "retry-s1",
                "sum",
                1,
                json!({"text": emails(2)["data"].clone(), "n": "count=2"}),
                Err("rate limited"),
            ),
            step(
                "retry-s2",
                "sum",
                1,
                json!({"text": emails(2)["data"].clone(), "n": "count=2"}),
                Ok(json!({"text": "retried"})),
            ),
            task_step("retry", json!("retried")),
        ],
    ));
    // The template carried in the root's own input.
    ev.extend(workflow(
        "wf-inline",
        None,
        json!({"steps": template_steps()}),
        T0 + 800,
        &[
            emails_step("inline", 2),
            sum_step("inline", 2, "x"),
            task_step("inline", json!("x")),
        ],
    ));
    // Steps linked each to the previous one, `chain_id` naming the root.
    let mut chain = workflow(
        "wf-chain",
        Some("WT-test"),
        json!({}),
        T0 + 900,
        &[
            emails_step("chain", 2),
            sum_step("chain", 2, "y"),
            task_step("chain", json!("(edited) y")),
        ],
    );
    let mut prev = "wf-chain".to_owned();
    for e in chain
        .iter_mut()
        .filter(|e| e["type"] == "run.started" && e["run_id"] != "wf-chain")
    {
        e["run"]["parent_run_id"] = json!(prev);
        e["run"]["chain_id"] = json!("wf-chain");
        prev = e["run_id"].as_str().unwrap_or_default().to_owned();
    }
    ev.extend(chain);
    // Delivered out of order: children before parents.
    ev.reverse();
    ingest(&db, &ev);
    (dir, db)
}

#[test]
fn replay_check_finds_each_kind_of_divergence() {
    let (_dir, db) = flows_db();
    for root in ["wf-ok", "wf-skip", "wf-fail", "wf-retry", "wf-inline"] {
        let (code, v) = check(&db, root);
        assert_eq!(code, 0, "{root} should check clean: {v:#}");
        assert_eq!(v["ok"], true);
        assert!(v["first_divergence"].is_null());
    }
    let (_, v) = check(&db, "wf-inline");
    assert_eq!(v["template_source"], "input");
    let (_, v) = check(&db, "wf-ok");
    assert_eq!(v["template_source"], "record");
    let (_, v) = check(&db, "wf-fail");
    assert_eq!(v["steps"][2]["verdict"], "not-reached");
    let (_, v) = check(&db, "wf-skip");
    assert_eq!(v["steps"][1]["verdict"], "skipped");

    let (code, v) = check(&db, "wf-edit");
    assert_eq!(code, 1);
    let first = &v["first_divergence"];
    assert_eq!(first["kind"], "input-differs");
    assert_eq!(first["step_id"], "task");
    let diff = &v["steps"][2]["input_diffs"][0];
    assert_eq!(diff["run_id"], "edit-t");
    assert_eq!(diff["changes"][0]["path"], "$.data.subject");
    assert_eq!(diff["changes"][0]["old"], "two mails");
    assert_eq!(diff["changes"][0]["new"], "(edited) two mails");

    let (code, v) = check(&db, "wf-ran");
    assert_eq!(code, 1);
    assert_eq!(v["first_divergence"]["kind"], "ran-though-false");
    assert_eq!(v["first_divergence"]["step_id"], "sum");
    assert_eq!(v["divergences"].as_array().map(Vec::len), Some(1), "{v:#}");

    let (code, v) = check(&db, "wf-chain");
    assert_eq!(code, 1);
    assert_eq!(v["first_divergence"]["kind"], "input-differs", "{v:#}");
    assert_eq!(v["first_divergence"]["run_id"], "chain-t");
    assert_eq!(v["steps"][1]["verdict"], "ok");

    let (code, v) = check(&db, "wf-miss");
    assert_eq!(code, 1);
    assert_eq!(v["first_divergence"]["kind"], "skipped-though-true");
    assert_eq!(v["first_divergence"]["step_id"], "sum");

    // Human output names the first divergence.
    let o = rl(&db, &["replay", "--check", "wf-edit"]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("first divergence"), "{}", o.stdout);
    assert!(o.stdout.contains("$.data.subject"), "{}", o.stdout);

    // A run without a template, and a run that never existed: reported problems.
    let o = rl(&db, &["replay", "--check", "tpl-WT-test"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no template"), "{}", o.stderr);
    let o = rl(&db, &["replay", "--check", "ok-e"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("not a workflow root"), "{}", o.stderr);
    let o = rl(&db, &["replay", "--check", "nope"]);
    assert_eq!(o.code, 1);
}

#[test]
fn replay_check_uses_the_template_as_of_the_root_start() {
    let (_dir, db) = tmpdb();
    let mut ev = template_record("WT-v", T0);
    ev.extend(workflow(
        "wf-old",
        Some("WT-v"),
        json!({}),
        T0 + 100,
        &[
            emails_step("old", 2),
            sum_step("old", 2, "a"),
            task_step("old", json!("a")),
        ],
    ));
    // Version 2: the first step selects with a limit.
    let mut steps = template_steps();
    steps[0]["input"] = json!({"where": {"unread": true}, "limit": 10});
    ev.push(
        json!({"type": "doc.updated", "run_id": "tpl-upd", "ts": T0 + 150,
        "doctype": "Workflow Template", "name": "WT-v", "data": {"steps": steps}}),
    );
    let mut new_steps = vec![step(
        "new-e",
        "emails",
        0,
        json!({"where": {"unread": true}, "limit": 10}),
        Ok(emails(2)),
    )];
    new_steps.push(sum_step("new", 2, "b"));
    new_steps.push(task_step("new", json!("b")));
    ev.extend(workflow(
        "wf-new",
        Some("WT-v"),
        json!({}),
        T0 + 200,
        &new_steps,
    ));
    ingest(&db, &ev);
    assert_eq!(check(&db, "wf-old").0, 0);
    assert_eq!(check(&db, "wf-new").0, 0);
    // As of a seq before the update, the new workflow does not exist yet.
    let o = rl(&db, &["replay", "--check", "wf-new", "--at", "3"]);
    assert_eq!(o.code, 1);
}

#[test]
fn replay_check_agrees_with_the_generator() {
    let (dir, db) = tmpdb();
    let cfg = ledger::workload::WorkloadConfig::new(7, 400);
    let file = dir.path().join("w.ndjson");
    let mut f = std::fs::File::create(&file).expect("create");
    ledger::workload::write_ndjson(&cfg, &mut f).expect("write");
    drop(f);
    ingest_file(&db, &file);
    let runs = rl(
        &db,
        &[
            "--json",
            "runs",
            "--root",
            "--operation",
            "workflow",
            "--limit",
            "100000",
        ],
    )
    .json();
    let (mut clean, mut divergent) = (0, 0);
    for r in runs["runs"].as_array().expect("runs") {
        let id = r["run_id"].as_str().expect("id");
        if r["template"].is_null() {
            continue; // flows: no template
        }
        let (code, v) = check(&db, id);
        if code == 0 {
            clean += 1;
            continue;
        }
        divergent += 1;
        for d in v["divergences"].as_array().expect("divergences") {
            // The generator changes inputs and runs steps whose `if` is false; nothing else.
            let kind = d["kind"].as_str().expect("kind");
            assert!(
                kind == "input-differs" || kind == "ran-though-false",
                "{id}: {v:#}"
            );
        }
        assert_eq!(
            v["divergences"].as_array().map(Vec::len),
            Some(1),
            "{id}: {v:#}"
        );
    }
    let total = clean + divergent;
    assert!(total > 80, "{total} workflows");
    // About 10% diverge on purpose.
    assert!(
        divergent * 100 >= total * 3 && divergent * 100 <= total * 25,
        "{divergent}/{total}"
    );
}

#[test]
fn diff_two_runs_of_one_template() {
    let (_dir, db) = flows_db();
    let o = rl(&db, &["--json", "diff", "wf-ok", "wf-edit"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v = o.json();
    assert_eq!(v["same"], false);
    let steps = v["steps"].as_array().expect("steps");
    let row = |key: &str| {
        steps
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("{key}: {v:#}"))
    };
    assert_eq!(row("root")["depth"], 0);
    let emails = row("step emails");
    assert_eq!(emails["same"], true, "{emails:#}");
    assert_eq!(emails["a"]["run_id"], "ok-e");
    assert_eq!(emails["b"]["run_id"], "edit-e");
    let task = row("step task");
    assert_eq!(task["same"], false);
    assert_eq!(task["input"][0]["path"], "$.data.subject");
    assert_eq!(task["input"][0]["change"], "changed");
    assert_eq!(task["input"][0]["old"], "two mails");
    assert_eq!(task["input"][0]["new"], "(edited) two mails");
    assert_eq!(task["status"]["same"], true);
    assert_eq!(task["duration_ms"]["delta"], 0);
    assert_eq!(task["records"]["a"][0]["doctype"], "Task");
    assert_eq!(task["records"]["b"][0]["name"], "T-edit-t");

    // A step one side skipped; a retry only one side has.
    let v = rl(&db, &["--json", "diff", "wf-ok", "wf-skip"]).json();
    let sum = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["key"] == "step sum")
        .cloned();
    assert_eq!(sum.expect("sum row")["only"], "a");
    let v = rl(&db, &["--json", "diff", "wf-ok", "wf-retry"]).json();
    let keys: Vec<&str> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "root",
            "step emails",
            "step sum",
            "step task",
            "step sum (run 2)"
        ]
    );
    let sum = &v["steps"][2];
    assert_eq!(sum["status"]["b"], "failed");

    // Identical runs are the same; human output lists the changed path.
    let v = rl(&db, &["--json", "diff", "wf-ok", "wf-ok"]).json();
    assert_eq!(v["same"], true);
    let o = rl(&db, &["diff", "wf-ok", "wf-edit"]);
    assert!(o.stdout.contains("$.data.subject"), "{}", o.stdout);
    assert_eq!(rl(&db, &["diff", "wf-ok", "nope"]).code, 1);
}

// ---- parallel branches --------------------------------------------------------------------

/// A root with two interleaved parallel branches (b1 with a child), then a final step; one
/// branch waits for input.
fn parallel() -> Vec<Value> {
    vec![
        json!({"type": "run.started", "run_id": "P", "ts": T0, "run": {"operation": "workflow"}}),
        json!({"type": "run.started", "run_id": "b1", "ts": T0 + 10, "run": {"operation": "a", "parent_run_id": "P", "step_index": 0}}),
        json!({"type": "run.started", "run_id": "b2", "ts": T0 + 10, "run": {"operation": "b", "parent_run_id": "P", "step_index": 1}}),
        json!({"type": "run.started", "run_id": "b1c", "ts": T0 + 20, "run": {"operation": "c", "parent_run_id": "b1"}}),
        json!({"type": "run.progress", "run_id": "b2", "ts": T0 + 25, "path": "output.text", "value": "x", "op": "append"}),
        json!({"type": "run.waiting", "run_id": "b2", "ts": T0 + 30, "step_id": "ok?", "prompt": "go?"}),
        json!({"type": "run.completed", "run_id": "b1c", "ts": T0 + 40, "output": {}}),
        json!({"type": "run.completed", "run_id": "b1", "ts": T0 + 100, "output": {}}),
        json!({"type": "run.resumed", "run_id": "b2", "ts": T0 + 250, "step_id": "ok?", "data": {"yes": true}}),
        json!({"type": "run.completed", "run_id": "b2", "ts": T0 + 300, "output": {}}),
        json!({"type": "run.started", "run_id": "fin", "ts": T0 + 310, "run": {"operation": "d", "parent_run_id": "P", "step_index": 2}}),
        json!({"type": "run.failed", "run_id": "fin", "ts": T0 + 400, "error": {"message": "boom"}}),
        json!({"type": "run.failed", "run_id": "P", "ts": T0 + 401, "error": {"message": "fin failed"}}),
        // Another tree at the same time: not part of P's replay.
        json!({"type": "run.started", "run_id": "other", "ts": T0 + 50, "run": {"operation": "x"}}),
        json!({"type": "run.completed", "run_id": "other", "ts": T0 + 60, "output": {}}),
    ]
}

#[test]
fn replay_orders_interleaved_branches_by_ts_then_seq() {
    let (_dir, db) = tmpdb();
    let mut ev = parallel();
    // Deliver scrambled: the order of seqs differs from the order of ts.
    ev.swap(0, 9);
    ev.swap(2, 7);
    ev.reverse();
    ingest(&db, &ev);
    let o = rl(&db, &["replay", "P"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines = o.lines();
    assert_eq!(lines.len(), 13);
    let runs: Vec<&str> = lines.iter().filter_map(|l| l["run_id"].as_str()).collect();
    assert!(!runs.contains(&"other"));
    let ts = |l: &Value| {
        chrono::DateTime::parse_from_rfc3339(l["ts"].as_str().expect("ts"))
            .expect("rfc3339")
            .timestamp_millis()
    };
    for w in lines.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (ka, kb) = ((ts(a), a["seq"].as_u64()), (ts(b), b["seq"].as_u64()));
        assert!(ka < kb, "not ordered by (ts, seq): {a} then {b}");
    }
    for l in &lines {
        assert_eq!(l["offset_ms"].as_i64(), Some(ts(l) - T0), "{l}");
        assert!(l["ingested_at"].is_string());
    }
    // The two starts at the same ts come in seq order.
    assert_eq!(lines[1]["type"], "run.started");
    assert_eq!(lines[2]["type"], "run.started");
    // A branch alone: its own subtree, offsets from its own start.
    let b1 = rl(&db, &["replay", "b1"]).lines();
    let ids: Vec<&str> = b1.iter().filter_map(|l| l["run_id"].as_str()).collect();
    assert_eq!(ids, ["b1", "b1c", "b1c", "b1"]);
    assert_eq!(b1[0]["offset_ms"], 0);
    assert_eq!(b1[3]["offset_ms"], 90);
    // Seq bounds.
    let mut seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    seqs.sort();
    let (lo, hi) = (seqs[3], seqs[8]);
    let some = rl(
        &db,
        &[
            "replay",
            "P",
            "--from-seq",
            &lo.to_string(),
            "--to-seq",
            &hi.to_string(),
        ],
    )
    .lines();
    assert_eq!(some.len(), 6);
    assert!(some
        .iter()
        .all(|l| (lo..=hi).contains(&l["seq"].as_u64().unwrap_or(0))));
    assert_eq!(rl(&db, &["replay", "nope"]).code, 1);
}

#[test]
fn replay_speed_keeps_the_pacing() {
    let (_dir, db) = tmpdb();
    ingest(&db, &parallel());
    // 401 ms of events at 4x: about 100 ms.
    let t = Instant::now();
    let o = rl(&db, &["replay", "P", "--speed", "4"]);
    let took = t.elapsed();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.lines().len(), 13);
    assert!(took >= Duration::from_millis(95), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(rl(&db, &["replay", "P", "--speed", "0"]).code, 2);
}

#[test]
fn timeline_marks_waits_failures_and_the_critical_path() {
    let (_dir, db) = tmpdb();
    ingest(&db, &parallel());
    let v = rl(&db, &["--json", "timeline", "P"]).json();
    let rows = v["rows"].as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert_eq!(ids, ["P", "b1", "b1c", "b2", "fin"]);
    assert_eq!(v["critical_path"], json!(["P", "b2", "fin"]));
    assert_eq!(v["span_ms"], 401);
    let b2 = &rows[3];
    assert_eq!(b2["waits"][0]["from_ms"], 30);
    assert_eq!(b2["waits"][0]["to_ms"], 250);
    assert_eq!(b2["start_ms"], 10);
    assert_eq!(b2["end_ms"], 300);
    assert_eq!(rows[2]["depth"], 2);
    assert_eq!(rows[4]["error"], "boom");
    let o = rl(&db, &["timeline", "P", "--width", "100"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text: Vec<&str> = o.stdout.lines().collect();
    assert!(
        text[3].starts_with('*') && text[3].contains('░'),
        "{}",
        o.stdout
    );
    assert!(text[1].starts_with(' '), "{}", o.stdout);
    assert!(text[4].contains('✗'), "{}", o.stdout);
    assert!(
        text.iter().take(5).all(|l| l.chars().count() <= 100),
        "{}",
        o.stdout
    );
}

// ---- --to: posting to another ledger -------------------------------------------------------

/// A one-shot-per-connection HTTP listener that keeps every request body it gets.
fn listener() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).expect("body");
            let body = String::from_utf8(body).expect("utf8");
            let n = body.lines().count();
            let answer =
                json!({"accepted": n, "duplicates": 0, "rejected": 0, "errors": [], "last_seq": 1})
                    .to_string();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if tx.send((head, body)).is_err() {
                break;
            }
        }
    });
    (format!("http://{addr}/v1/events"), rx)
}

fn strip_seqs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["seq", "at_seq", "first_seq", "last_seq"] {
                m.remove(k);
            }
            m.values_mut().for_each(strip_seqs);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_seqs),
        _ => {}
    }
}

fn same_answers(a: &Path, b: &Path, args: &[&str]) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let (mut x, mut y) = (rl(a, &full).json(), rl(b, &full).json());
    strip_seqs(&mut x);
    strip_seqs(&mut y);
    assert_eq!(x, y, "{args:?} differs between the original and the copy");
}

#[test]
fn replay_to_posts_batches_that_rebuild_the_tree_elsewhere() {
    let (dir, db) = flows_db();
    let (url, rx) = listener();
    let o = rl(
        &db,
        &[
            "--json", "replay", "wf-retry", "--to", &url, "--batch", "4", "--token", "s3cret",
        ],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let summary = o.json();
    let n = rl(&db, &["replay", "wf-retry"]).lines().len() as u64;
    assert_eq!(summary["posted"], n);
    assert_eq!(summary["accepted"], n);
    assert_eq!(summary["batches"], n.div_ceil(4));
    let mut all = String::new();
    for _ in 0..n.div_ceil(4) {
        let (head, body) = rx.recv_timeout(Duration::from_secs(10)).expect("a batch");
        assert!(head.starts_with("POST /v1/events HTTP/1.1"), "{head}");
        assert!(head.contains("Authorization: Bearer s3cret"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-ndjson"),
            "{head}"
        );
        for l in body.lines() {
            let v: Value = serde_json::from_str(l).expect("json line");
            assert!(
                v.get("seq").is_none()
                    && v.get("offset_ms").is_none()
                    && v.get("ingested_at").is_none(),
                "{l}"
            );
        }
        all.push_str(&body);
    }
    // The copy: the received NDJSON ingested into a second ledger.
    let copy = dir.path().join("copy.db");
    let file = dir.path().join("received.ndjson");
    std::fs::write(&file, all).expect("write");
    ingest_file(&copy, &file);
    same_answers(&db, &copy, &["tree", "wf-retry"]);
    same_answers(&db, &copy, &["trace", "Task", "T-retry-t"]);
    same_answers(&db, &copy, &["show", "retry-s2"]);
    // The template record is not part of the tree: the copy cannot be checked...
    assert_eq!(rl(&copy, &["replay", "--check", "wf-retry"]).code, 1);
    // ...unless it comes along.
    let (url, rx) = listener();
    let o = rl(&db, &["replay", "wf-ran", "--to", &url, "--with-template"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let (_, body) = rx.recv_timeout(Duration::from_secs(10)).expect("a batch");
    assert!(
        body.lines().next().unwrap_or("").contains("doc.created"),
        "{body}"
    );
    let file = dir.path().join("received2.ndjson");
    std::fs::write(&file, body).expect("write");
    ingest_file(&copy, &file);
    let (code, v) = check(&copy, "wf-ran");
    assert_eq!(
        (code, &v["first_divergence"]["kind"]),
        (1, &json!("ran-though-false"))
    );

    // Nobody listening: an error (exit 2), not a panic.
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/v1/events", dead.local_addr().expect("addr"));
    drop(dead);
    let o = rl(&db, &["replay", "wf-retry", "--to", &dead_url]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.starts_with("runledger: POST"), "{}", o.stderr);
    assert_eq!(
        rl(&db, &["replay", "wf-retry", "--to", "https://x.example"]).code,
        2
    );
}

/// Against a second real `runledger serve`, when that command is available in this build.
#[test]
fn replay_to_a_second_runledger_serve() {
    let (dir, db) = tmpdb();
    let cfg = ledger::workload::WorkloadConfig::new(11, 60);
    let file = dir.path().join("w.ndjson");
    let mut f = std::fs::File::create(&file).expect("create");
    ledger::workload::write_ndjson(&cfg, &mut f).expect("write");
    drop(f);
    ingest_file(&db, &file);
    let runs = rl(
        &db,
        &[
            "--json",
            "runs",
            "--root",
            "--operation",
            "workflow",
            "--limit",
            "1000",
        ],
    )
    .json();
    let root = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["status"] == "completed" && !r["template"].is_null())
        .and_then(|r| r["run_id"].as_str())
        .expect("a completed workflow")
        .to_owned();

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let copy = dir.path().join("copy.db");
    let addr = format!("127.0.0.1:{port}");
    let mut serve = Command::new(bin())
        .arg("--db")
        .arg(&copy)
        .args(["serve", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut up = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = serve.try_wait() {
            break;
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !up {
        let _ = serve.kill();
        let _ = serve.wait();
        let mut err = String::new();
        if let Some(mut e) = serve.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("`runledger serve` did not come up: {}", err.trim());
    }
    let url = format!("http://{addr}/v1/events");
    let o = rl(
        &db,
        &["--json", "replay", &root, "--to", &url, "--batch", "3"],
    );
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let n = rl(&db, &["replay", &root]).lines().len() as u64;
    assert_eq!(o.json()["accepted"], n, "{}", o.stdout);
    same_answers(&db, &copy, &["tree", &root]);
    let eff = rl(&db, &["--json", "effects", &root, "--tree"]).json();
    for c in eff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["kind"] == "created")
        .take(3)
    {
        let (dt, name) = (
            c["doctype"].as_str().expect("doctype"),
            c["name"].as_str().expect("name"),
        );
        let orig = rl(&db, &["--json", "trace", dt, name]).json();
        let mut x = orig["created_by"].clone();
        let mut y = rl(&copy, &["--json", "trace", dt, name]).json()["created_by"].clone();
        strip_seqs(&mut x);
        strip_seqs(&mut y);
        assert_eq!(x, y);
    }
}
