//! Core behaviour at the CLI level (issues #2 and #3): what ingest stores and rejects,
//! deduplication, hash-chain verification against real tampering of the redb file, the
//! projections' answers and time travel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use crate::common::{assert_keys, join_lines, strip_keys, Ledger, Rng};

/// 2025-11-21T04:40:00.000Z in ms.
const T: i64 = 1_763_700_000_000;

/// RFC 3339 (ms, UTC) of `T + k` for k < 1000.
fn ts(k: i64) -> String {
    format!("2025-11-21T04:40:00.{k:03}Z")
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            o => o["run_id"].as_str().expect("run_id").to_owned(),
        })
        .collect()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

// ---- round trip of every event type ------------------------------------------------------

/// (input line, its normalised stored form without ledger fields).
fn every_type() -> Vec<(String, Value)> {
    let t = |k: i64| T + k;
    vec![
        (
            format!(
                r#"{{"type":"run.started","id":"e1","ts":{},"run_id":"wf-1","run":{{"operation":"workflow","template":"WT-1","owner":"alice","agent":"bot","role":"user","input":{{"a":1}},"custom":"kept"}},"extra_top":{{"k":[1,2]}}}}"#,
                t(0)
            ),
            json!({"type":"run.started","id":"e1","run_id":"wf-1","ts":ts(0),
                   "run":{"operation":"workflow","template":"WT-1","owner":"alice","agent":"bot",
                          "role":"user","input":{"a":1},"custom":"kept"},
                   "extra_top":{"k":[1,2]}}),
        ),
        (
            // camelCase aliases at the top of `run` and inside `options`, `from`.
            r#"{"type":"run.started","id":"e2","ts":"2025-11-21T04:40:00.010Z","run_id":"r-2","run":{"operation":"select","from":"Email","parentRunId":"wf-1","options":{"chainId":"wf-1","stepIndex":0},"stepId":"emails","input":{"where":{"unread":true}}}}"#.into(),
            json!({"type":"run.started","id":"e2","run_id":"r-2","ts":ts(10),
                   "run":{"operation":"select","doctype":"Email","parent_run_id":"wf-1",
                          "chain_id":"wf-1","step_id":"emails","step_index":0,
                          "input":{"where":{"unread":true}},
                          "options":{"chainId":"wf-1","stepIndex":0}}}),
        ),
        (
            // RFC 3339 with an offset is the same instant.
            r#"{"type":"run.completed","id":"e3","ts":"2025-11-21T05:40:00.020+01:00","run_id":"r-2","output":{"data":[{"name":"EMAIL-1"}]}}"#.into(),
            json!({"type":"run.completed","id":"e3","run_id":"r-2","ts":ts(20),
                   "output":{"data":[{"name":"EMAIL-1"}]}}),
        ),
        (
            format!(
                r#"{{"type":"run.started","id":"e4","ts":{},"run_id":"r-3","run":{{"operation":"create","into":"Task","parent_run_id":"wf-1","chainId":"wf-1","stepIndex":1,"step_id":"create"}}}}"#,
                t(30)
            ),
            json!({"type":"run.started","id":"e4","run_id":"r-3","ts":ts(30),
                   "run":{"operation":"create","doctype":"Task","parent_run_id":"wf-1",
                          "chain_id":"wf-1","step_id":"create","step_index":1}}),
        ),
        (
            format!(
                r#"{{"type":"doc.created","id":"e5","ts":{},"run_id":"r-3","doctype":"Task","name":"T-1","data":{{"subject":"Follow up","status":"Open"}}}}"#,
                t(31)
            ),
            json!({"type":"doc.created","id":"e5","run_id":"r-3","ts":ts(31),"doctype":"Task",
                   "name":"T-1","data":{"subject":"Follow up","status":"Open"}}),
        ),
        (
            format!(
                r#"{{"type":"doc.updated","id":"e6","ts":{},"run_id":"r-3","doctype":"Task","name":"T-1","data":{{"status":"Done"}},"before":{{"status":"Open"}},"note":"x"}}"#,
                t(32)
            ),
            json!({"type":"doc.updated","id":"e6","run_id":"r-3","ts":ts(32),"doctype":"Task",
                   "name":"T-1","data":{"status":"Done"},"before":{"status":"Open"},"note":"x"}),
        ),
        (
            format!(
                r#"{{"type":"run.failed","id":"e7","ts":{},"run_id":"r-3","error":{{"message":"boom","code":"E42","stack":"at x","hint":"h"}},"duration_ms":9}}"#,
                t(40)
            ),
            json!({"type":"run.failed","id":"e7","run_id":"r-3","ts":ts(40),
                   "error":{"message":"boom","code":"E42","stack":"at x","hint":"h"},
                   "duration_ms":9}),
        ),
        (
            format!(
                r#"{{"type":"run.started","id":"e8","ts":{},"run_id":"r-4","run":{{"operation":"summarize","parentRunId":"wf-1"}}}}"#,
                t(50)
            ),
            json!({"type":"run.started","id":"e8","run_id":"r-4","ts":ts(50),
                   "run":{"operation":"summarize","parent_run_id":"wf-1"}}),
        ),
        (
            // No id: stored as is; `op` defaults to set but is rendered.
            format!(
                r#"{{"type":"run.progress","ts":{},"run_id":"r-4","path":"output.text","op":"append","value":"Hello "}}"#,
                t(51)
            ),
            json!({"type":"run.progress","run_id":"r-4","ts":ts(51),"path":"output.text",
                   "op":"append","value":"Hello "}),
        ),
        (
            format!(
                r#"{{"type":"run.progress","id":"e10","ts":{},"run_id":"r-4","path":"output.text","op":"append","value":"world"}}"#,
                t(52)
            ),
            json!({"type":"run.progress","id":"e10","run_id":"r-4","ts":ts(52),
                   "path":"output.text","op":"append","value":"world"}),
        ),
        (
            format!(
                r#"{{"type":"run.progress","id":"e11","ts":{},"run_id":"r-4","path":"output.tokens","value":5}}"#,
                t(53)
            ),
            json!({"type":"run.progress","id":"e11","run_id":"r-4","ts":ts(53),
                   "path":"output.tokens","op":"set","value":5}),
        ),
        (
            format!(
                r#"{{"type":"run.waiting","id":"e12","ts":{},"run_id":"r-4","stepId":"approve","prompt":"OK?"}}"#,
                t(54)
            ),
            json!({"type":"run.waiting","id":"e12","run_id":"r-4","ts":ts(54),
                   "step_id":"approve","prompt":"OK?"}),
        ),
        (
            format!(
                r#"{{"type":"run.started","id":"e13","ts":{},"run_id":"r-5","run":{{"operation":"flow","flow":"F-1"}}}}"#,
                t(60)
            ),
            json!({"type":"run.started","id":"e13","run_id":"r-5","ts":ts(60),
                   "run":{"operation":"flow","flow":"F-1"}}),
        ),
        (
            format!(
                r#"{{"type":"run.waiting","id":"e14","ts":{},"run_id":"r-5","step_id":"ask"}}"#,
                t(61)
            ),
            json!({"type":"run.waiting","id":"e14","run_id":"r-5","ts":ts(61),"step_id":"ask"}),
        ),
        (
            format!(
                r#"{{"type":"run.resumed","id":"e15","ts":{},"run_id":"r-5","stepId":"ask","data":{{"answer":"yes"}}}}"#,
                t(62)
            ),
            json!({"type":"run.resumed","id":"e15","run_id":"r-5","ts":ts(62),"step_id":"ask",
                   "data":{"answer":"yes"}}),
        ),
        (
            format!(
                r#"{{"type":"doc.deleted","id":"e16","ts":{},"run_id":"r-5","doctype":"Task","name":"T-1"}}"#,
                t(63)
            ),
            json!({"type":"doc.deleted","id":"e16","run_id":"r-5","ts":ts(63),"doctype":"Task",
                   "name":"T-1"}),
        ),
        (
            format!(
                r#"{{"type":"run.cancelled","id":"e17","ts":{},"run_id":"r-5","reason":"user left"}}"#,
                t(64)
            ),
            json!({"type":"run.cancelled","id":"e17","run_id":"r-5","ts":ts(64),
                   "reason":"user left"}),
        ),
        (
            // A checkpoint: run_id from run.id, ts from run.timestamp, duration from run.duration.
            format!(
                r#"{{"type":"run.checkpoint","run":{{"id":"ui-9","status":"completed","operation":"select","doctype":"Task","timestamp":{},"duration":3,"output":{{"data":[]}},"input":{{"q":1}},"weird":true}}}}"#,
                t(70)
            ),
            json!({"type":"run.checkpoint","run_id":"ui-9","ts":ts(70),"duration_ms":3,
                   "run":{"operation":"select","doctype":"Task","input":{"q":1},
                          "status":"completed","output":{"data":[]},"weird":true}}),
        ),
        (
            r#"{"type":"run.checkpoint","id":"c10a","run":{"id":"ui-10","status":"pending","operation":"update","doctype":"Task","timestamp":"2025-11-21T04:40:00.080Z"}}"#.into(),
            json!({"type":"run.checkpoint","id":"c10a","run_id":"ui-10","ts":ts(80),
                   "run":{"operation":"update","doctype":"Task","status":"pending"}}),
        ),
        (
            format!(
                r#"{{"type":"run.checkpoint","id":"c10b","run":{{"id":"ui-10","status":"running","timestamp":{}}}}}"#,
                t(81)
            ),
            json!({"type":"run.checkpoint","id":"c10b","run_id":"ui-10","ts":ts(81),
                   "run":{"status":"running"}}),
        ),
        (
            // A plain string error becomes {"message": …}.
            format!(
                r#"{{"type":"run.checkpoint","id":"c10c","run":{{"id":"ui-10","status":"failed","timestamp":{},"error":"disk full","duration":5}}}}"#,
                t(85)
            ),
            json!({"type":"run.checkpoint","id":"c10c","run_id":"ui-10","ts":ts(85),
                   "duration_ms":5,
                   "run":{"status":"failed","error":{"message":"disk full"}}}),
        ),
        (
            // run_id and ts given at the top level instead.
            format!(
                r#"{{"type":"run.checkpoint","run_id":"ui-11","ts":{},"run":{{"status":"cancelled","operation":"delete"}}}}"#,
                t(90)
            ),
            json!({"type":"run.checkpoint","run_id":"ui-11","ts":ts(90),
                   "run":{"operation":"delete","status":"cancelled"}}),
        ),
        (
            format!(
                r#"{{"type":"run.completed","id":"e20","ts":{},"run_id":"wf-1","output":{{"steps":3}},"duration_ms":100}}"#,
                t(100)
            ),
            json!({"type":"run.completed","id":"e20","run_id":"wf-1","ts":ts(100),
                   "output":{"steps":3},"duration_ms":100}),
        ),
    ]
}

#[test]
fn every_event_type_round_trips_through_the_log() {
    let l = Ledger::new();
    let cases = every_type();
    let lines: Vec<&str> = cases.iter().map(|(l, _)| l.as_str()).collect();
    let report = l.ingest_lines(&lines);
    assert_eq!(report["accepted"], cases.len());
    assert_eq!(report["rejected"], 0);
    assert_eq!(report["first_seq"], 1);
    assert_eq!(report["last_seq"], cases.len());

    let stored = l.events();
    assert_eq!(stored.len(), cases.len());
    for (i, (ev, (line, want))) in stored.iter().zip(&cases).enumerate() {
        assert_eq!(ev["seq"], i + 1, "seqs follow the lines");
        assert!(ev["ingested_at"].is_string());
        let mut got = ev.clone();
        let m = got.as_object_mut().unwrap();
        m.remove("seq");
        m.remove("ingested_at");
        assert_eq!(&got, want, "line {}: {line}", i + 1);
    }

    // The rendered form is ingest format v1 again: re-ingesting it gives the same events.
    let l2 = Ledger::new();
    let rendered: Vec<String> = stored
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("seq");
            e.as_object_mut().unwrap().remove("ingested_at");
            e.to_string()
        })
        .collect();
    l2.ingest_lines(&rendered);
    let again: Vec<Value> = l2
        .events()
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("ingested_at");
            e
        })
        .collect();
    let first: Vec<Value> = stored
        .into_iter()
        .map(|mut e| {
            e.as_object_mut().unwrap().remove("ingested_at");
            e
        })
        .collect();
    assert_eq!(again, first);

    let (code, v) = l.verify(&[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], cases.len());
}

#[test]
fn show_answers_the_normalised_runs() {
    let l = Ledger::new();
    let lines: Vec<String> = every_type().into_iter().map(|(l, _)| l).collect();
    l.ingest_lines(&lines);
    let show = |id: &str| {
        let v = l.ok(&["show", id]);
        assert_keys(
            &v,
            &[
                "run_id",
                "operation",
                "doctype",
                "template",
                "status",
                "parent_run_id",
                "chain_id",
                "step_id",
                "step_index",
                "owner",
                "agent",
                "role",
                "input",
                "output",
                "error",
                "started_at",
                "ended_at",
                "duration_ms",
                "children",
                "events",
            ],
        );
        assert_eq!(v["run_id"], id);
        v
    };

    let wf = show("wf-1");
    assert_eq!(wf["operation"], "workflow");
    assert_eq!(wf["template"], "WT-1");
    assert_eq!(wf["owner"], "alice");
    assert_eq!(wf["agent"], "bot");
    assert_eq!(wf["role"], "user");
    assert_eq!(wf["status"], "completed");
    assert_eq!(wf["input"], json!({"a":1}));
    assert_eq!(wf["output"], json!({"steps":3}));
    assert_eq!(wf["duration_ms"], 100);
    assert_eq!(wf["started_at"], ts(0));
    assert_eq!(wf["ended_at"], ts(100));
    assert_eq!(wf["events"], 2);
    assert_eq!(wf["parent_run_id"], Value::Null);
    assert_eq!(ids(&wf["children"]), set(&["r-2", "r-3", "r-4"]));

    let r2 = show("r-2");
    assert_eq!(r2["doctype"], "Email");
    assert_eq!(r2["parent_run_id"], "wf-1");
    assert_eq!(r2["chain_id"], "wf-1");
    assert_eq!(r2["step_index"], 0);
    assert_eq!(r2["step_id"], "emails");
    assert_eq!(r2["status"], "completed");
    assert_eq!(r2["duration_ms"], 10, "no duration given: end - start");
    assert_eq!(r2["output"], json!({"data":[{"name":"EMAIL-1"}]}));
    assert_eq!(r2["children"], json!([]));

    let r3 = show("r-3");
    assert_eq!(r3["doctype"], "Task", "`into` is an alias of doctype");
    assert_eq!(r3["chain_id"], "wf-1");
    assert_eq!(r3["step_index"], 1);
    assert_eq!(r3["status"], "failed");
    assert_eq!(
        r3["error"],
        json!({"message":"boom","code":"E42","stack":"at x","hint":"h"})
    );
    assert_eq!(r3["duration_ms"], 9);

    let r4 = show("r-4");
    assert_eq!(r4["status"], "waiting");
    assert_eq!(r4["output"], json!({"text":"Hello world","tokens":5}));
    assert_eq!(r4["ended_at"], Value::Null);
    assert_eq!(r4["duration_ms"], Value::Null);
    assert_eq!(r4["events"], 5);

    let r5 = show("r-5");
    assert_eq!(r5["status"], "cancelled");
    assert_eq!(r5["events"], 5, "its doc.deleted counts too");

    let ui9 = show("ui-9");
    assert_eq!(ui9["status"], "completed");
    assert_eq!(ui9["operation"], "select");
    assert_eq!(ui9["doctype"], "Task");
    assert_eq!(ui9["input"], json!({"q":1}));
    assert_eq!(ui9["output"], json!({"data":[]}));
    assert_eq!(ui9["duration_ms"], 3);
    assert_eq!(ui9["ended_at"], ts(70));

    let ui10 = show("ui-10");
    assert_eq!(ui10["status"], "failed");
    assert_eq!(ui10["operation"], "update");
    assert_eq!(ui10["error"], json!({"message":"disk full"}));
    assert_eq!(ui10["started_at"], ts(80));
    assert_eq!(ui10["ended_at"], ts(85));
    assert_eq!(ui10["duration_ms"], 5);

    let ui11 = show("ui-11");
    assert_eq!(ui11["status"], "cancelled");
    assert_eq!(ui11["operation"], "delete");

    // Status transitions of r-4 and r-5 as of earlier seqs.
    let at = |id: &str, seq: usize| l.ok(&["show", id, "--at", &seq.to_string()]);
    assert_eq!(at("r-4", 8)["status"], "running");
    assert_eq!(at("r-4", 10)["output"], json!({"text":"Hello world"}));
    assert_eq!(at("r-4", 9)["output"], json!({"text":"Hello "}));
    assert_eq!(at("r-4", 12)["status"], "waiting");
    assert_eq!(at("r-5", 14)["status"], "waiting");
    assert_eq!(at("r-5", 15)["status"], "running", "resumed");
    assert_eq!(at("ui-10", 19)["status"], "running", "pending checkpoint");
    assert_eq!(at("ui-10", 20)["status"], "running");

    // Unknown run: exit 1 with one line on stderr.
    let (code, _, err) = l.cmd(&["show", "nope"]).json();
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nope"), "{err}");
    let (code, _, _) = l.cmd(&["show", "ui-11", "--at", "3"]).json();
    assert_eq!(code, 1, "ui-11 did not exist as of seq 3");
}

// ---- rejections -------------------------------------------------------------------------

#[test]
fn rejected_lines_are_reported_and_the_good_ones_stored() {
    let l = Ledger::new();
    let c = |id: &str, run: &str| {
        format!(r#"{{"type":"run.completed","id":"{id}","ts":{T},"run_id":"{run}"}}"#)
    };
    let long = "x".repeat(257);
    // (line, Some(reason substring)) for a rejection, None for a good or blank line.
    let cases: Vec<(String, Option<&str>)> = vec![
        (c("g1", "a"), None),
        ("[1,2]".into(), Some("not a JSON object")),
        (r#"{"type":"#.into(), Some("invalid JSON")),
        (c("g2", "b"), None),
        (format!(r#"{{"run_id":"a","ts":{T}}}"#), Some("`type`")),
        (
            format!(r#"{{"type":"run.nope","run_id":"a","ts":{T}}}"#),
            Some("unknown type"),
        ),
        (String::new(), None),
        (
            format!(r#"{{"type":"run.completed","ts":{T}}}"#),
            Some("`run_id`"),
        ),
        (
            r#"{"type":"run.completed","run_id":"a"}"#.into(),
            Some("`ts`"),
        ),
        (
            r#"{"type":"run.completed","run_id":"a","ts":1763700000}"#.into(),
            Some("seconds"),
        ),
        (
            r#"{"type":"run.completed","run_id":"a","ts":"2025-13-45T00:00:00Z"}"#.into(),
            Some("RFC 3339"),
        ),
        (
            format!(r#"{{"type":"run.started","id":"r12","run_id":"a","ts":{T},"run":{{}}}}"#),
            Some("run.operation"),
        ),
        (
            format!(r#"{{"type":"run.progress","run_id":"a","ts":{T},"path":"x"}}"#),
            Some("`value`"),
        ),
        (
            format!(
                r#"{{"type":"run.progress","run_id":"a","ts":{T},"path":"x","value":1,"op":"add"}}"#
            ),
            Some("`op`"),
        ),
        (
            format!(r#"{{"type":"run.failed","run_id":"a","ts":{T},"error":{{"code":1}}}}"#),
            Some("message"),
        ),
        (
            format!(r#"{{"type":"doc.created","run_id":"a","ts":{T},"name":"T"}}"#),
            Some("`doctype`"),
        ),
        (
            format!(r#"{{"type":"doc.deleted","run_id":"a","ts":{T},"doctype":"Task"}}"#),
            Some("`name`"),
        ),
        (
            format!(
                r#"{{"type":"doc.updated","run_id":"a","ts":{T},"doctype":"Task","name":"T","data":[1]}}"#
            ),
            Some("`data`"),
        ),
        (
            format!(
                r#"{{"type":"run.checkpoint","run":{{"id":"a","timestamp":{T},"status":"weird"}}}}"#
            ),
            Some("run.status"),
        ),
        (
            format!(r#"{{"type":"run.checkpoint","run":{{"id":"a","timestamp":{T}}}}}"#),
            Some("run.status"),
        ),
        (
            format!(r#"{{"type":"run.completed","run_id":"{long}","ts":{T}}}"#),
            Some("256"),
        ),
        (
            format!(r#"{{"type":"run.completed","id":"{long}","run_id":"a","ts":{T}}}"#),
            Some("256"),
        ),
        ("   ".into(), None),
        (r#""just a string""#.into(), Some("not a JSON object")),
        // The id of a rejected line was not used up.
        (c("r12", "c"), None),
        (c("g4", "d"), None),
    ];
    // The last line has no newline.
    let text = cases
        .iter()
        .map(|(l, _)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let rejects = l.path("rejects.ndjson");
    let (code, v, err) = l
        .cmd(&["ingest", "-", "--rejects"])
        .arg(&rejects)
        .stdin(&text)
        .json();
    assert_eq!(code, 1, "rejected lines make exit 1: {err}");
    let bad: Vec<(usize, &str, &str)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, (l, r))| r.map(|r| (i + 1, l.as_str(), r)))
        .collect();
    assert_eq!(v["accepted"], 4);
    assert_eq!(v["duplicates"], 0);
    assert_eq!(v["rejected"], bad.len());
    assert_eq!(v["first_seq"], 1);
    assert_eq!(v["last_seq"], 4);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), bad.len(), "{v}");
    for (e, (line, text, reason)) in errors.iter().zip(&bad) {
        assert_eq!(e["line"], *line, "{e} for {text}");
        let r = e["reason"].as_str().unwrap();
        assert!(
            r.contains(reason),
            "line {line}: reason {r:?} lacks {reason:?}"
        );
    }

    // The rejects file: one JSON object per rejected line, with its text.
    let rj = std::fs::read_to_string(&rejects).expect("rejects file");
    let recs: Vec<Value> = rj
        .lines()
        .map(|l| serde_json::from_str(l).expect("rejects line is JSON"))
        .collect();
    assert_eq!(recs.len(), bad.len());
    for (r, (line, text, reason)) in recs.iter().zip(&bad) {
        assert_eq!(r["line"], *line);
        assert_eq!(r["text"], *text);
        assert!(r["reason"].as_str().unwrap().contains(reason));
    }

    // Exactly the good lines are stored, in order.
    let stored: Vec<Value> = l.events().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(
        stored,
        json!(["g1", "g2", "r12", "g4"]).as_array().unwrap().clone()
    );

    // Human mode names line numbers on stderr too.
    let out = l.cmd(&["ingest", "-"]).stdin("{\n").run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
}

#[test]
fn max_event_bytes_limits_a_line() {
    let l = Ledger::new();
    let small = format!(r#"{{"type":"run.cancelled","run_id":"a","ts":{T}}}"#);
    let big = format!(
        r#"{{"type":"run.cancelled","run_id":"b","ts":{T},"reason":"{}"}}"#,
        "y".repeat(300)
    );
    let (code, v, _) = l
        .cmd(&["ingest", "-", "--max-event-bytes", "200"])
        .stdin(join_lines(&[&small, &big, &small]))
        .json();
    assert_eq!(code, 1);
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["errors"][0]["line"], 2);
    assert!(v["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("size limit"));
    // Without the limit it is fine.
    let (code, v, _) = l.cmd(&["ingest", "-"]).stdin(&big).json();
    assert_eq!((code, v["accepted"].clone()), (0, json!(1)));
}

#[test]
fn ingesting_the_same_file_twice_stores_nothing_new() {
    let l = Ledger::new();
    let mut lines: Vec<String> = every_type()
        .into_iter()
        .map(|(l, _)| l)
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap()
                .get("id")
                .is_some()
        })
        .collect();
    let n = lines.len();
    // A retried delivery inside the file.
    lines.push(lines[3].clone());
    let file = l.write("events.ndjson", &join_lines(&lines));
    let (code, v, _) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0);
    assert_eq!(v["accepted"], n);
    assert_eq!(v["duplicates"], 1);
    let (code, v, _) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0);
    assert_eq!(v["accepted"], 0);
    assert_eq!(v["duplicates"], n + 1);
    assert_eq!(v["rejected"], 0);
    assert_eq!(v["first_seq"], Value::Null);
    assert_eq!(v["last_seq"], Value::Null);
    assert_eq!(l.events().len(), n);
    // Events without an id are always stored.
    let no_id = format!(r#"{{"type":"run.cancelled","run_id":"z","ts":{T}}}"#);
    let v = l.ingest_lines(&[&no_id, &no_id]);
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["first_seq"], n + 1);
    assert_eq!(v["last_seq"], n + 2);
}

// ---- verification against tampering ------------------------------------------------------

const BLOCKS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("blocks");

type Entries = Vec<([u8; 32], Vec<u8>)>;

fn open_redb(db: &Path) -> redb::Database {
    redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open(db)
        .expect("opening the redb file")
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn decode_block(b: &[u8]) -> Entries {
    let n = u32_at(b, 0);
    let data = 4 + 4 * (n + 1);
    (0..n)
        .map(|i| {
            let (a, z) = (u32_at(b, 4 + 4 * i), u32_at(b, 8 + 4 * i));
            let e = &b[data + a..data + z];
            (e[..32].try_into().unwrap(), e[32..].to_vec())
        })
        .collect()
}

fn encode_block(entries: &Entries) -> Vec<u8> {
    let mut offs = Vec::new();
    let mut data = Vec::new();
    for (h, a) in entries {
        offs.push(data.len() as u32);
        data.extend_from_slice(h);
        data.extend_from_slice(a);
    }
    offs.push(data.len() as u32);
    let mut out = (entries.len() as u32).to_le_bytes().to_vec();
    for o in offs {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(&data);
    out
}

/// The block keys (first seqs) of the log.
fn block_keys(db: &Path) -> Vec<u64> {
    use redb::ReadableTable;
    let d = open_redb(db);
    let tx = d.begin_write().unwrap();
    let keys = {
        let t = tx.open_table(BLOCKS).unwrap();
        let keys: Vec<u64> = t.iter().unwrap().map(|r| r.unwrap().0.value()).collect();
        keys
    };
    tx.abort().unwrap();
    keys
}

/// Rewrites the block starting at `key` after `f` changed its entries (`None` deletes it).
fn tamper(db: &Path, key: u64, f: impl FnOnce(&mut Entries) -> bool) {
    use redb::ReadableTable;
    let d = open_redb(db);
    let tx = d.begin_write().unwrap();
    {
        let mut t = tx.open_table(BLOCKS).unwrap();
        let bytes = t.get(key).unwrap().expect("block").value().to_vec();
        let mut entries = decode_block(&bytes);
        assert_eq!(encode_block(&entries), bytes, "block layout as documented");
        if f(&mut entries) {
            t.insert(key, encode_block(&entries).as_slice()).unwrap();
        } else {
            t.remove(key).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A ledger of 10 events in one block (one ingest = one commit).
fn ten_events() -> Ledger {
    let l = Ledger::new();
    let lines: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"type":"run.started","id":"v{i}","ts":{},"run_id":"run-{i}","run":{{"operation":"select","input":{{"n":{i}}}}}}}"#,
                T + i
            )
        })
        .collect();
    l.ingest_lines(&lines);
    assert_eq!(block_keys(&l.db), vec![1]);
    l
}

#[track_caller]
fn assert_bad_at(l: &Ledger, seq: u64) {
    let (code, v) = l.verify(&[]);
    assert_eq!(code, 1, "verify must fail: {v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["seq"], seq, "first bad seq: {v}");
    // Human output names it too.
    let out = l.cmd(&["verify"]).run();
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains(&format!("seq {seq}")), "{}", out.stdout);
}

#[test]
fn verify_passes_on_an_untouched_log() {
    let l = ten_events();
    let (code, v) = l.verify(&[]);
    assert_eq!(code, 0, "{v}");
    assert_keys(&v, &["ok", "events", "head", "problems"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], 10);
    assert_eq!(v["head"]["seq"], 10);
    assert_eq!(v["problems"], json!([]));
    // The head hash is the stored hash of the last event.
    let mut last = None;
    tamper(&l.db, 1, |e| {
        last = Some(e[9].0);
        true
    });
    let hex: String = last.unwrap().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["head"]["hash"], hex);
    assert_eq!(
        l.verify(&[]).0,
        0,
        "rewriting identical bytes changes nothing"
    );
}

#[test]
fn verify_detects_a_flipped_byte() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        let a = &mut e[2].1;
        let mid = a.len() / 2;
        a[mid] ^= 0x01;
        true
    });
    assert_bad_at(&l, 3);
}

#[test]
fn verify_detects_a_flipped_byte_in_a_stored_hash() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e[6].0[0] ^= 0x80;
        true
    });
    assert_bad_at(&l, 7);
}

#[test]
fn verify_detects_a_removed_event() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e.remove(4);
        true
    });
    assert_bad_at(&l, 5);
}

#[test]
fn verify_detects_a_swapped_pair() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e.swap(3, 4);
        true
    });
    assert_bad_at(&l, 4);
}

#[test]
fn verify_detects_a_truncated_tail() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e.pop();
        true
    });
    assert_bad_at(&l, 10);
}

/// Damage that leaves an event unreadable is verify's finding (exit 1, naming it), also when the
/// projections have yet to read that event.
#[test]
fn verify_reports_an_unreadable_event_before_projections_read_it() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e[3].1.iter_mut().for_each(|b| *b = 0xff);
        true
    });
    std::fs::remove_file(ledger::projections_path(&l.db)).expect("projections");
    assert_bad_at(&l, 4);
    // Reading commands name the damage and where it is.
    let out = l.cmd(&["runs"]).run();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("seq 4") && out.stderr.contains("not a valid stored event"),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_detects_a_removed_last_block() {
    let l = ten_events();
    let more: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"type":"run.cancelled","run_id":"m{i}","ts":{T}}}"#))
        .collect();
    l.ingest_lines(&more);
    assert_eq!(block_keys(&l.db), vec![1, 11]);
    assert_eq!(l.verify(&[]).0, 0);
    tamper(&l.db, 11, |_| false);
    assert_bad_at(&l, 11);
}

#[test]
fn verify_detects_a_removed_middle_block() {
    let l = ten_events();
    for i in 0..2 {
        l.ingest_lines(&[format!(
            r#"{{"type":"run.cancelled","run_id":"m{i}","ts":{T}}}"#
        )]);
    }
    assert_eq!(block_keys(&l.db), vec![1, 11, 12]);
    tamper(&l.db, 11, |_| false);
    assert_bad_at(&l, 11);
}

fn head(l: &Ledger) -> (u64, String) {
    let (code, v) = l.verify(&[]);
    assert_eq!(code, 0, "{v}");
    (
        v["head"]["seq"].as_u64().unwrap(),
        v["head"]["hash"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn verify_against_an_earlier_head() {
    let l = ten_events();
    let (seq, hash) = head(&l);
    assert_eq!(seq, 10);
    let more: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"type":"run.cancelled","run_id":"m{i}","ts":{T}}}"#))
        .collect();
    l.ingest_lines(&more);
    let (seq2, hash2) = head(&l);
    assert_eq!(seq2, 15);
    assert_ne!(hash, hash2);

    let ok = |against: String| {
        let (code, v) = l.verify(&["--against", &against]);
        (code, v)
    };
    let (code, v) = ok(format!("{seq}:{hash}"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(ok(format!("{seq2}:{hash2}")).0, 0);

    // A wrong hash for that seq.
    let mut wrong = hash.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let (code, v) = ok(format!("{seq}:{}", String::from_utf8(wrong).unwrap()));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problems"][0]["seq"], seq);
    // The right hash at the wrong seq.
    let (code, v) = ok(format!("9:{hash}"));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problems"][0]["seq"], 9);
    // A head beyond the log: it was truncated.
    let (code, v) = ok(format!("20:{hash}"));
    assert_eq!(code, 1, "{v}");
    // Malformed: usage error.
    let out = l.cmd(&["verify", "--against", "10:zz"]).run();
    assert_eq!(out.code, 2, "{}", out.stderr);

    // An earlier event altered: the earlier head no longer verifies.
    tamper(&l.db, 1, |e| {
        e[1].1[0] ^= 0xff;
        true
    });
    let (code, v) = ok(format!("{seq}:{hash}"));
    assert_eq!(code, 1);
    assert_eq!(v["problems"][0]["seq"], 2);
}

// ---- projections -------------------------------------------------------------------------

fn started(k: i64, run: &str, fields: Value) -> String {
    json!({"type":"run.started","id":format!("s-{run}-{k}"),"ts":T + k,"run_id":run,"run":fields})
        .to_string()
}
fn completed(k: i64, run: &str) -> String {
    json!({"type":"run.completed","id":format!("c-{run}-{k}"),"ts":T + k,"run_id":run,"output":{"ok":k}})
        .to_string()
}
fn doc(k: i64, kind: &str, run: &str, doctype: &str, name: &str, data: Value) -> String {
    let mut v = json!({"type":format!("doc.{kind}"),"id":format!("d-{run}-{k}"),"ts":T + k,
                       "run_id":run,"doctype":doctype,"name":name});
    if !data.is_null() {
        v["data"] = data;
    }
    v.to_string()
}

const LINEAGE_KEYS: [&str; 3] = ["run_id", "operation", "step_id"];

#[track_caller]
fn lineage(p: &Value) -> Vec<String> {
    assert_keys(p, &["run_id", "root_run", "template", "lineage"]);
    p["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_keys(s, &LINEAGE_KEYS);
            s["run_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn trace_follows_a_record_across_delete_and_recreate() {
    let l = Ledger::new();
    let lines = vec![
        started(0, "wf-A", json!({"operation":"workflow","template":"WT-A"})),
        started(
            1,
            "a-1",
            json!({"operation":"create","doctype":"Task","parent_run_id":"wf-A","step_id":"create"}),
        ),
        doc(2, "created", "a-1", "Task", "X", json!({"v":1})),
        completed(3, "a-1"),
        completed(4, "wf-A"),
        started(
            10,
            "wf-B",
            json!({"operation":"workflow","template":"WT-B"}),
        ),
        started(
            11,
            "b-1",
            json!({"operation":"delete","parentRunId":"wf-B","step_id":"cleanup"}),
        ),
        doc(12, "deleted", "b-1", "Task", "X", Value::Null),
        started(
            20,
            "wf-C",
            json!({"operation":"workflow","template":"WT-C","owner":"carol"}),
        ),
        started(
            21,
            "c-1",
            json!({"operation":"create","parent_run_id":"wf-C","step_id":"again"}),
        ),
        // The update arrives before the create it follows.
        doc(23, "updated", "c-1", "Task", "X", json!({"v":3})),
        doc(22, "created", "c-1", "Task", "X", json!({"v":2})),
    ];
    l.ingest_lines(&lines);
    let t = l.ok(&["trace", "Task", "X"]);
    assert_keys(
        &t,
        &[
            "doctype",
            "name",
            "deleted",
            "history",
            "created_by",
            "last_modified_by",
        ],
    );
    assert_eq!(t["doctype"], "Task");
    assert_eq!(t["name"], "X");
    assert_eq!(t["deleted"], false);
    let hist = t["history"].as_array().unwrap();
    for h in hist {
        assert_keys(h, &["seq", "ts", "kind", "run_id", "data"]);
    }
    let kinds: Vec<&str> = hist.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "deleted", "created", "updated"]);
    let seqs: Vec<u64> = hist.iter().map(|h| h["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 8, 12, 11]);
    assert_eq!(hist[0]["ts"], ts(2));
    assert_eq!(hist[2]["data"], json!({"v":2}));
    assert_eq!(hist[3]["run_id"], "c-1");
    let cb = &t["created_by"];
    assert_eq!(cb["run_id"], "c-1", "the latest created decides");
    assert_eq!(cb["root_run"], "wf-C");
    assert_eq!(cb["template"], "WT-C");
    assert_eq!(lineage(cb), ["c-1", "wf-C"]);
    assert_eq!(cb["lineage"][0]["step_id"], "again");
    assert_eq!(cb["lineage"][1]["operation"], "workflow");
    assert_eq!(t["last_modified_by"]["run_id"], "c-1");

    // Deleted again: still answered, exit 0.
    l.ingest_lines(&[doc(30, "deleted", "wf-C", "Task", "X", Value::Null)]);
    let t = l.ok(&["trace", "Task", "X"]);
    assert_eq!(t["deleted"], true);
    assert_eq!(t["created_by"]["run_id"], "c-1");
    assert_eq!(t["last_modified_by"]["run_id"], "wf-C");
    assert_eq!(lineage(&t["last_modified_by"]), ["wf-C"]);
    assert_eq!(t["history"].as_array().unwrap().len(), 5);

    // As of the first life's deletion.
    let t8 = l.ok(&["trace", "Task", "X", "--at", "8"]);
    assert_eq!(t8["deleted"], true);
    assert_eq!(t8["created_by"]["run_id"], "a-1");
    assert_eq!(t8["created_by"]["template"], "WT-A");
    assert_eq!(t8["last_modified_by"]["root_run"], "wf-B");

    // A record that never existed: exit 1, naming doctype and name each quoted (a doctype may
    // hold spaces). Before its creation: exit 1.
    let (code, _, err) = l.cmd(&["trace", "Workflow Template", "Y"]).json();
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        r#"runledger: no record "Y" of doctype "Workflow Template" in this ledger"#
    );
    let (code, _, err) = l.cmd(&["trace", "Task", "X", "--at", "2"]).json();
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"no record "X" of doctype "Task" as of seq 2"#),
        "{err}"
    );

    // effects
    let e = l.ok(&["effects", "c-1"]);
    assert_keys(&e, &["run_id", "changes"]);
    let ch = e["changes"].as_array().unwrap();
    for c in ch {
        assert_keys(c, &["seq", "kind", "doctype", "name", "run_id"]);
    }
    let kinds: Vec<&str> = ch.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "updated"], "ordered by ts");
    assert_eq!(
        l.ok(&["effects", "wf-C"])["changes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let et = l.ok(&["effects", "wf-C", "--tree"]);
    let kinds: Vec<(&str, &str)> = et["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["run_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("created", "c-1"), ("updated", "c-1"), ("deleted", "wf-C")]
    );
    assert_eq!(l.ok(&["effects", "wf-A"])["changes"], json!([]));
    assert_eq!(l.cmd(&["effects", "nope"]).json().0, 1);
}

#[test]
fn chain_linked_steps_resolve_to_the_chain_root() {
    let l = Ledger::new();
    let mut lines = vec![started(
        0,
        "chat-0",
        json!({"operation":"chat","flow":"support-chat","owner":"bob"}),
    )];
    for i in 1..=4i64 {
        lines.push(started(
            i * 10,
            &format!("chat-{i}"),
            json!({"operation":"interpret","parentRunId":format!("chat-{}", i - 1),
                   "chainId":"chat-0","stepIndex":i,"step_id":format!("turn-{i}")}),
        ));
    }
    lines.push(doc(
        45,
        "created",
        "chat-4",
        "Note",
        "N-1",
        json!({"text":"hi"}),
    ));
    // Delivered newest first.
    lines.reverse();
    l.ingest_lines(&lines);
    let t = l.ok(&["trace", "Note", "N-1"]);
    let cb = &t["created_by"];
    assert_eq!(cb["root_run"], "chat-0");
    assert_eq!(
        cb["template"], "support-chat",
        "a flow names the workflow too"
    );
    assert_eq!(
        lineage(cb),
        ["chat-4", "chat-3", "chat-2", "chat-1", "chat-0"]
    );
    assert_eq!(cb["lineage"][0]["step_id"], "turn-4");
    assert_ne!(cb["cycle"], true);

    let tree = l.ok(&["tree", "chat-0"]);
    assert_ne!(tree["cycle"], true);
    let mut node = &tree;
    for i in 0..=4 {
        assert_keys(
            node,
            &[
                "run_id",
                "operation",
                "status",
                "duration_ms",
                "step_id",
                "children",
            ],
        );
        assert_eq!(node["run_id"], format!("chat-{i}"));
        let kids = node["children"].as_array().unwrap();
        assert_eq!(kids.len(), if i == 4 { 0 } else { 1 });
        if i < 4 {
            node = &kids[0];
        }
    }
    let shallow = l.ok(&["tree", "chat-0", "--depth", "1"]);
    assert_eq!(shallow["children"][0]["run_id"], "chat-1");
    assert_eq!(shallow["children"][0]["children"], json!([]));
    assert_eq!(l.ok(&["show", "chat-2"])["children"], json!(["chat-3"]));
    assert_eq!(l.ok(&["show", "chat-2"])["chain_id"], "chat-0");
    let eff = l.ok(&["effects", "chat-0", "--tree"]);
    assert_eq!(eff["changes"][0]["name"], "N-1");
    assert_eq!(eff["changes"][0]["run_id"], "chat-4");
}

#[test]
fn a_parent_that_never_arrives_still_answers() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started(
            1,
            "o-1",
            json!({"operation":"select","parent_run_id":"ghost"}),
        ),
        started(
            2,
            "o-2",
            json!({"operation":"create","parent_run_id":"ghost"}),
        ),
        doc(3, "created", "o-2", "Task", "G", json!({})),
    ]);
    assert_eq!(l.ok(&["show", "o-1"])["parent_run_id"], "ghost");
    let g = l.ok(&["show", "ghost"]);
    assert_eq!(g["run_id"], "ghost");
    assert_eq!(ids(&g["children"]), set(&["o-1", "o-2"]));
    let tree = l.ok(&["tree", "ghost"]);
    assert_eq!(ids(&tree["children"]), set(&["o-1", "o-2"]));
    let t = l.ok(&["trace", "Task", "G"]);
    assert_eq!(t["created_by"]["root_run"], "ghost");
    assert_eq!(lineage(&t["created_by"]), ["o-2", "ghost"]);
    let st = l.ok(&["state"]);
    assert_eq!(ids(&st["active_pipelines"]["ghost"]), set(&["o-1", "o-2"]));
    // The parent arrives at last.
    l.ingest_lines(&[started(
        0,
        "ghost",
        json!({"operation":"workflow","template":"WT-G"}),
    )]);
    let t = l.ok(&["trace", "Task", "G"]);
    assert_eq!(t["created_by"]["template"], "WT-G");
    assert_eq!(l.ok(&["show", "ghost"])["operation"], "workflow");
}

#[test]
fn parent_links_that_form_a_cycle_still_answer() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started(
            1,
            "cy-a",
            json!({"operation":"create","parent_run_id":"cy-b"}),
        ),
        started(
            2,
            "cy-b",
            json!({"operation":"select","parent_run_id":"cy-c"}),
        ),
        started(
            3,
            "cy-c",
            json!({"operation":"select","parent_run_id":"cy-a"}),
        ),
        started(
            4,
            "self",
            json!({"operation":"select","parent_run_id":"self"}),
        ),
        doc(5, "created", "cy-a", "Task", "C", json!({})),
        doc(6, "created", "self", "Task", "S", json!({})),
    ]);
    let t = l.ok(&["trace", "Task", "C"]);
    assert_eq!(t["created_by"]["cycle"], true);
    let lin = lineage(&t["created_by"]);
    assert_eq!(lin[..3], ["cy-a", "cy-b", "cy-c"]);
    assert!(lin.len() <= 4, "{lin:?}");
    let t = l.ok(&["trace", "Task", "S"]);
    assert_eq!(t["created_by"]["cycle"], true);
    for id in ["cy-a", "cy-b", "cy-c", "self"] {
        let tree = l.ok(&["tree", id]);
        assert_eq!(tree["cycle"], true, "{id}: {tree}");
        l.ok(&["show", id]);
        let e = l.ok(&["effects", id, "--tree"]);
        assert_eq!(e["cycle"], true, "{id}: {e}");
    }
    let st = l.ok(&["state"]);
    assert_eq!(st["active_runs"].as_array().unwrap().len(), 4);
    let all: BTreeSet<String> = st["active_pipelines"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(ids)
        .collect();
    assert_eq!(all, set(&["cy-a", "cy-b", "cy-c", "self"]));
}

/// Root runs and children for the `runs` filters.
fn runs_fixture() -> Ledger {
    let l = Ledger::new();
    let fail = |k: i64, run: &str| {
        json!({"type":"run.failed","id":format!("f-{run}"),"ts":T + k,"run_id":run,"error":{"message":"no"}})
            .to_string()
    };
    l.ingest_lines(&[
        started(0, "wf-1", json!({"operation":"workflow","template":"WT-1"})),
        started(10, "s-1", json!({"operation":"select","doctype":"Email"})),
        completed(15, "s-1"),
        started(20, "s-2", json!({"operation":"create","doctype":"Task"})),
        fail(25, "s-2"),
        started(30, "s-3", json!({"operation":"update","doctype":"Task"})),
        started(
            40,
            "k-1",
            json!({"operation":"select","doctype":"Email","parent_run_id":"wf-1"}),
        ),
        completed(45, "k-1"),
        started(
            50,
            "k-2",
            json!({"operation":"create","doctype":"Task","parent_run_id":"wf-1"}),
        ),
        completed(60, "wf-1"),
    ]);
    l
}

fn run_ids(l: &Ledger, args: &[&str]) -> (Vec<String>, u64) {
    let mut a = vec!["runs", "--limit", "1000"];
    a.extend_from_slice(args);
    let v = l.ok(&a);
    assert_keys(&v, &["runs", "total"]);
    let runs: Vec<String> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_keys(
                r,
                &[
                    "run_id",
                    "operation",
                    "doctype",
                    "status",
                    "started_at",
                    "duration_ms",
                ],
            );
            r["run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    (runs, v["total"].as_u64().unwrap())
}

#[test]
fn runs_filters_and_pages() {
    let l = runs_fixture();
    let s = |args: &[&str]| {
        let (r, total) = run_ids(&l, args);
        assert_eq!(total as usize, r.len());
        r.into_iter().collect::<BTreeSet<_>>()
    };
    let (all, total) = run_ids(&l, &[]);
    assert_eq!(total, 6);
    assert_eq!(
        all,
        ["k-2", "k-1", "s-3", "s-2", "s-1", "wf-1"],
        "newest first"
    );
    assert_eq!(s(&["--root"]), set(&["wf-1", "s-1", "s-2", "s-3"]));
    assert_eq!(s(&["--status", "completed"]), set(&["wf-1", "s-1", "k-1"]));
    assert_eq!(s(&["--status", "failed"]), set(&["s-2"]));
    assert_eq!(s(&["--status", "running"]), set(&["s-3", "k-2"]));
    assert_eq!(s(&["--status", "waiting"]), set(&[]));
    assert_eq!(s(&["--operation", "select"]), set(&["s-1", "k-1"]));
    assert_eq!(s(&["--doctype", "Task"]), set(&["s-2", "s-3", "k-2"]));
    assert_eq!(s(&["--template", "WT-1"]), set(&["wf-1"]));
    assert_eq!(
        s(&["--root", "--status", "completed"]),
        set(&["wf-1", "s-1"])
    );
    assert_eq!(
        s(&["--doctype", "Task", "--status", "running", "--root"]),
        set(&["s-3"])
    );
    assert_eq!(s(&["--since", &ts(30)]), set(&["s-3", "k-1", "k-2"]));
    assert_eq!(s(&["--until", &ts(10)]), set(&["wf-1", "s-1"]));
    assert_eq!(
        s(&["--since", &ts(10), "--until", &ts(30)]),
        set(&["s-1", "s-2", "s-3"])
    );
    assert_eq!(l.cmd(&["runs", "--status", "bogus"]).json().0, 2);

    // Paging: disjoint pages, in order, total unchanged.
    let mut paged = Vec::new();
    for off in [0, 2, 4, 6] {
        let v = l.ok(&["runs", "--limit", "2", "--offset", &off.to_string()]);
        assert_eq!(v["total"], 6);
        let page = ids(&v["runs"]);
        assert!(page.len() <= 2);
        let order: Vec<String> = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect();
        paged.extend(order);
    }
    assert_eq!(paged, all);
    let v = l.ok(&["runs", "--limit", "2", "--root"]);
    assert_eq!(v["total"], 4);
    assert_eq!(ids(&v["runs"]), set(&["s-3", "s-2"]));
    let r = &l.ok(&["runs", "--limit", "1", "--status", "failed"])["runs"][0];
    assert_eq!(r["started_at"], ts(20));
    assert_eq!(r["duration_ms"], 5);
    assert_eq!(r["doctype"], "Task");
}

#[test]
fn state_follows_coworker_state() {
    let l = Ledger::new();
    let cp = json!({"type":"run.checkpoint","id":"cp","run":{"id":"cp-1","status":"completed",
                    "operation":"select","timestamp":T + 7,"output":{"data":[]}}})
    .to_string();
    let waiting = json!({"type":"run.waiting","id":"w","ts":T + 12,"run_id":"w-1","step_id":"ask"})
        .to_string();
    l.ingest_lines(&[
        started(0, "wf-1", json!({"operation":"workflow","template":"WT-1"})),
        started(
            1,
            "k-2",
            json!({"operation":"create","parent_run_id":"wf-1"}),
        ),
        started(2, "s-1", json!({"operation":"select"})),
        completed(5, "s-1"),
        cp,
        started(
            6,
            "k-1",
            json!({"operation":"select","parent_run_id":"wf-1"}),
        ),
        completed(8, "k-1"),
        started(9, "x-1", json!({"operation":"summarize"})),
        completed(9, "x-1"),
        started(10, "s-3", json!({"operation":"update"})),
        started(11, "w-1", json!({"operation":"flow","flow":"F"})),
        waiting,
        // A completed that arrives before its run.started.
        completed(31, "z-1"),
        started(30, "z-1", json!({"operation":"delete","doctype":"Task"})),
    ]);
    let st = l.ok(&["state"]);
    assert_keys(
        &st,
        &[
            "at_seq",
            "active_runs",
            "active_pipelines",
            "current_run",
            "is_loading",
        ],
    );
    assert_eq!(st["at_seq"], 14);
    assert_eq!(
        ids(&st["active_runs"]),
        set(&["wf-1", "k-2", "s-3", "w-1"]),
        "started and not terminal (waiting counts)"
    );
    for r in st["active_runs"].as_array().unwrap() {
        assert_keys(r, &["run_id", "operation", "status"]);
    }
    let pipes = st["active_pipelines"].as_object().unwrap();
    assert_eq!(
        pipes.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["wf-1", "s-3", "w-1"])
    );
    assert_eq!(ids(&pipes["wf-1"]), set(&["wf-1", "k-2"]));
    assert_eq!(ids(&pipes["w-1"]), set(&["w-1"]));
    assert_eq!(st["is_loading"], true);
    // Latest completed top-level CRUD run: z-1 (delete, completed at +31), although its
    // completion arrived before its start.
    assert_eq!(st["current_run"]["run_id"], "z-1");
    let z = l.ok(&["show", "z-1"]);
    assert_eq!(z["status"], "completed");
    assert_eq!(z["operation"], "delete");
    assert_eq!(z["started_at"], ts(30));
    assert_eq!(z["duration_ms"], 1);
    // Before z-1: the checkpoint-only cp-1 (select at +7); not k-1 (a child, +8) nor x-1
    // (summarize, +9).
    let st12 = l.ok(&["state", "--at", "12"]);
    assert_eq!(st12["current_run"]["run_id"], "cp-1");
    assert_eq!(st12["current_run"]["status"], "completed");
    let st3 = l.ok(&["state", "--at", "3"]);
    assert_eq!(st3["current_run"], Value::Null);
    assert_eq!(ids(&st3["active_runs"]), set(&["wf-1", "k-2", "s-1"]));
    let st4 = l.ok(&["state", "--at", "4"]);
    assert_eq!(st4["current_run"]["run_id"], "s-1");
    assert_eq!(ids(&st4["active_runs"]), set(&["wf-1", "k-2"]));
    // As of seq 13 z-1 is only completed (no start, so no operation yet): not active, not
    // current.
    let st13 = l.ok(&["state", "--at", "13"]);
    assert!(!ids(&st13["active_runs"]).contains("z-1"));
    assert_eq!(st13["current_run"]["run_id"], "cp-1");

    // Everything ends: nothing loading. Later events after a terminal one don't revive a run.
    let fail = json!({"type":"run.failed","id":"f-s3","ts":T + 40,"run_id":"s-3","error":"x"});
    l.ingest_lines(&[
        completed(41, "k-2"),
        completed(42, "wf-1"),
        fail.to_string(),
        json!({"type":"run.cancelled","id":"cw","ts":T + 43,"run_id":"w-1"}).to_string(),
        json!({"type":"run.progress","id":"late","ts":T + 50,"run_id":"s-1","path":"output.x","value":1}).to_string(),
        json!({"type":"run.waiting","id":"late2","ts":T + 51,"run_id":"s-1","step_id":"x"}).to_string(),
        started(52, "s-1", json!({"owner":"late-owner","operation":"select"})),
    ]);
    let (code, _, err) = l.ingest(&fail.to_string());
    assert_eq!(code, 0, "{err}");
    let st = l.ok(&["state"]);
    assert_eq!(st["active_runs"], json!([]));
    assert_eq!(st["active_pipelines"], json!({}));
    assert_eq!(st["is_loading"], false);
    let s1 = l.ok(&["show", "s-1"]);
    assert_eq!(s1["status"], "completed");
    assert_eq!(
        s1["owner"], "late-owner",
        "later run.started merges its fields"
    );
    assert_eq!(l.ok(&["show", "s-3"])["error"], json!({"message":"x"}));
    assert_eq!(l.ok(&["show", "s-3"])["status"], "failed");
}

#[test]
fn several_terminal_events_the_latest_by_ts_decides() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started(0, "r", json!({"operation":"select"})),
        json!({"type":"run.failed","id":"f","ts":T + 20,"run_id":"r","error":{"message":"late"}})
            .to_string(),
        completed(10, "r"),
    ]);
    let r = l.ok(&["show", "r"]);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["ended_at"], ts(20));
    // And the same events in the other order give the same answer.
    let l2 = Ledger::new();
    l2.ingest_lines(&[
        completed(10, "r"),
        json!({"type":"run.failed","id":"f","ts":T + 20,"run_id":"r","error":{"message":"late"}})
            .to_string(),
        started(0, "r", json!({"operation":"select"})),
    ]);
    let mut a = r;
    let mut b = l2.ok(&["show", "r"]);
    strip_keys(&mut a, &["first_seq", "last_seq"]);
    strip_keys(&mut b, &["first_seq", "last_seq"]);
    assert_eq!(a, b);
}

// ---- time travel -------------------------------------------------------------------------

/// Workload lines with later repeats of an id dropped, so that line k is seq k.
fn distinct_lines(seed: u64, roots: usize) -> Vec<String> {
    let lines = ledger::workload::ndjson_lines(&ledger::workload::WorkloadConfig::new(seed, roots));
    let mut seen = BTreeSet::new();
    lines
        .into_iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            match v.get("id").and_then(Value::as_str) {
                Some(id) => seen.insert(id.to_owned()),
                None => true,
            }
        })
        .collect()
}

/// Run ids and records named by `lines`.
fn names(lines: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let mut runs = BTreeSet::new();
    let mut docs = BTreeSet::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let run = v
            .get("run_id")
            .or_else(|| v["run"].get("id"))
            .and_then(Value::as_str);
        if let Some(r) = run {
            runs.insert(r.to_owned());
        }
        if let (Some(d), Some(n)) = (v["doctype"].as_str(), v["name"].as_str()) {
            docs.insert((d.to_owned(), n.to_owned()));
        }
    }
    (runs.into_iter().collect(), docs.into_iter().collect())
}

/// Seqs (1-based line numbers) of terminal events that arrived before their run's start.
fn early_terminals(lines: &[String]) -> Vec<usize> {
    let mut started = BTreeSet::new();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(l).unwrap();
        let run = v
            .get("run_id")
            .or_else(|| v["run"].get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let status = v["run"]["status"].as_str();
        match v["type"].as_str().unwrap_or_default() {
            "run.started" => {
                started.insert(run);
            }
            "run.checkpoint" if matches!(status, Some("pending" | "running")) => {
                started.insert(run);
            }
            "run.completed" | "run.failed" | "run.cancelled" | "run.checkpoint"
                if !started.contains(&run) =>
            {
                out.push(i + 1);
            }
            _ => {}
        }
    }
    out
}

/// (exit code, answer) of `args` with `--json`.
fn answer(l: &Ledger, args: &[String]) -> (i32, Value) {
    let (code, v, err) = l.cmd(args).json();
    assert!(code == 0 || code == 1, "{args:?}: exit {code}: {err}");
    (code, if code == 0 { v } else { Value::Null })
}

#[test]
fn at_seq_answers_equal_a_ledger_with_only_the_first_n_events() {
    let seed = crate::common::seed("time_travel");
    let mut rng = Rng(seed);
    let lines = distinct_lines(seed, 12);
    let n = lines.len();
    assert!(n >= 20, "{n} lines");
    let full = Ledger::new();
    let rep = full.ingest_lines(&lines);
    assert_eq!(rep["accepted"], n, "every line valid and distinct");
    let (runs, docs) = names(&lines);

    // Cuts: the edges, a random one, and the interesting places — right after a run's
    // terminal event that arrived before its start.
    let mut cuts = vec![1, n / 3, rng.range(2, n as u64) as usize, n];
    cuts.extend(early_terminals(&lines).into_iter().take(3));
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let part = Ledger::new();
        part.ingest_lines(&lines[..cut]);
        let at = cut.to_string();
        let mut questions: Vec<Vec<String>> = vec![
            vec!["state".into()],
            vec!["runs".into(), "--limit".into(), "100000".into()],
            vec![
                "runs".into(),
                "--root".into(),
                "--status".into(),
                "completed".into(),
            ],
        ];
        // A sample of runs and records, some of which only exist later.
        for _ in 0..5 {
            let r = &runs[rng.range(0, runs.len() as u64) as usize];
            questions.push(vec!["show".into(), r.clone()]);
            questions.push(vec!["tree".into(), r.clone()]);
            questions.push(vec!["effects".into(), r.clone(), "--tree".into()]);
        }
        for _ in 0..3 {
            let (d, nm) = &docs[rng.range(0, docs.len() as u64) as usize];
            questions.push(vec!["trace".into(), d.clone(), nm.clone()]);
        }
        for q in questions {
            let mut qa = q.clone();
            qa.extend(["--at".to_string(), at.clone()]);
            let (ca, a) = answer(&full, &qa);
            let (cb, b) = answer(&part, &q);
            assert_eq!(ca, cb, "exit code of {q:?} at {cut} (seed {seed})");
            if ca == 0 {
                assert_eq!(
                    a, b,
                    "{q:?} as of seq {cut} differs from a ledger of the first {cut} events \
                     (seed {seed})"
                );
            }
        }
    }
}

#[test]
fn at_time_answers_as_of_the_last_event_ingested_by_then() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started(0, "a", json!({"operation":"select"})),
        started(1, "b", json!({"operation":"select"})),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mid = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(30));
    l.ingest_lines(&[
        completed(2, "a"),
        started(3, "c", json!({"operation":"create"})),
    ]);
    let by_time = l.ok(&["state", "--at-time", &mid]);
    let by_seq = l.ok(&["state", "--at", "2"]);
    assert_eq!(by_time, by_seq);
    assert_eq!(ids(&by_time["active_runs"]), set(&["a", "b"]));
    assert_eq!(l.ok(&["show", "a", "--at-time", &mid])["status"], "running");
    assert_eq!(l.ok(&["show", "a"])["status"], "completed");
    assert_eq!(l.cmd(&["show", "c", "--at-time", &mid]).json().0, 1);
    // Before anything was ingested: an empty ledger.
    let st = l.ok(&["state", "--at-time", "2000-01-01T00:00:00Z"]);
    assert_eq!(st["active_runs"], json!([]));
    assert_eq!(st["at_seq"], 0);
    assert_eq!(l.cmd(&["state", "--at-time", "yesterday"]).json().0, 2);
}

#[test]
fn demo_ingests_and_verifies() {
    let l = Ledger::new();
    let (code, v, err) = l.cmd(&["demo", "--runs", "50"]).json();
    assert_eq!(code, 0, "{err}");
    assert!(v.is_object(), "{v}");
    let (code, ver) = l.verify(&[]);
    assert_eq!(code, 0, "{ver}");
    assert_eq!(ver["ok"], true);
    assert!(ver["events"].as_u64().unwrap() > 100, "{ver}");
    let runs = l.ok(&["runs", "--limit", "5"]);
    assert!(runs["total"].as_u64().unwrap() >= 50, "{runs}");
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for r in runs["runs"].as_array().unwrap() {
        *by.entry(r["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(!by.is_empty());
}

#[test]
fn runs_as_of_a_seq_sorts_and_filters_by_what_was_known_then() {
    // b's completion arrives before its start: as of seq 3 it is known only by its end.
    let lines = [
        started(0, "a", json!({"operation":"select"})),
        completed(50, "b"),
        started(20, "c", json!({"operation":"select"})),
        started(10, "b", json!({"operation":"select"})),
    ];
    let full = Ledger::new();
    full.ingest_lines(&lines);
    let part = Ledger::new();
    part.ingest_lines(&lines[..3]);
    for q in [
        vec!["runs"],
        vec!["runs", "--since", "2025-11-21T04:40:00.030Z"],
        vec!["runs", "--until", "2025-11-21T04:40:00.030Z"],
        vec!["runs", "--limit", "1"],
    ] {
        let mut qa = q.clone();
        qa.extend(["--at", "3"]);
        assert_eq!(
            full.ok(&qa),
            part.ok(&q),
            "{q:?} as of seq 3 must answer as a ledger of the first 3 events"
        );
    }
}

#[test]
fn invalid_utf8_and_crlf_lines() {
    let l = Ledger::new();
    let good = |run: &str| format!(r#"{{"type":"run.cancelled","run_id":"{run}","ts":{T}}}"#);
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe{}\n");
    input.extend_from_slice(good("a").as_bytes());
    input.extend_from_slice(b"\r\n\r\n");
    input.extend_from_slice(good("b").as_bytes());
    input.extend_from_slice(b"\r\n");
    let (code, v, _) = l.cmd(&["ingest", "-"]).stdin(input).json();
    assert_eq!(code, 1);
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["errors"][0]["line"], 1);
    assert!(v["errors"][0]["reason"].as_str().unwrap().contains("UTF-8"));
    let runs: Vec<Value> = l.events().iter().map(|e| e["run_id"].clone()).collect();
    assert_eq!(runs, [json!("a"), json!("b")]);
    // All valid UTF-8 (checked once for the whole chunk), CRLF ends, a non-ASCII run id.
    let crlf = format!("{}\r\n\r\n{}\r\n", good("c-é"), good("d"));
    let (code, v, _) = l.cmd(&["ingest", "-"]).stdin(crlf).json();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    let runs: Vec<Value> = l.events().iter().map(|e| e["run_id"].clone()).collect();
    assert_eq!(runs, [json!("a"), json!("b"), json!("c-é"), json!("d")]);
}

/// `leaf` inside `depth` levels, objects `{"k": …}` and arrays taking turns.
fn nested(depth: usize, leaf: &str) -> String {
    let open: String = (0..depth)
        .map(|i| if i % 2 == 0 { "{\"k\":" } else { "[" })
        .collect();
    let close: String = (0..depth)
        .rev()
        .map(|i| if i % 2 == 0 { '}' } else { ']' })
        .collect();
    format!("{open}{leaf}{close}")
}

/// Regression: payloads nested deeper than serde_json builds values of (128 levels) are
/// accepted, but `show` and `state` failed ("answer does not serialise: recursion limit
/// exceeded"), `trace` gave their record data as null, progress values and error codes folded
/// to null, and search did not find their words.
#[test]
fn payloads_nested_deeper_than_128_levels_answer_everywhere() {
    let l = Ledger::new();
    let deep = nested(300, r#""zqdeepword""#);
    let lines = [
        format!(
            r#"{{"type":"run.started","id":"e1","ts":{T},"run_id":"wf","run":{{"operation":"workflow","input":{deep},"custom":{deep}}}}}"#
        ),
        format!(
            r#"{{"type":"run.started","id":"e2","ts":{},"run_id":"r1","run":{{"operation":"create","parent_run_id":"wf","input":{deep}}}}}"#,
            T + 1
        ),
        format!(
            r#"{{"type":"doc.created","id":"e3","ts":{},"run_id":"r1","doctype":"Task","name":"T1","data":{{"a":{deep}}}}}"#,
            T + 2
        ),
        format!(
            r#"{{"type":"run.completed","id":"e4","ts":{},"run_id":"r1","output":{deep}}}"#,
            T + 3
        ),
        format!(
            r#"{{"type":"run.started","id":"e5","ts":{},"run_id":"r2","run":{{"operation":"summarize","parent_run_id":"wf"}}}}"#,
            T + 4
        ),
        format!(
            r#"{{"type":"run.progress","id":"e6","ts":{},"run_id":"r2","path":"output.x","value":{deep}}}"#,
            T + 5
        ),
        format!(
            r#"{{"type":"run.failed","id":"e7","ts":{},"run_id":"r2","error":{{"message":"boom","code":{deep}}}}}"#,
            T + 6
        ),
    ];
    l.ingest_lines(&lines);
    let commands: [&[&str]; 11] = [
        &["show", "wf"],
        &["show", "r1"],
        &["show", "r2"],
        &["state"],
        &["runs"],
        &["tree", "wf"],
        &["effects", "wf", "--tree"],
        &["trace", "Task", "T1"],
        &["replay", "wf"],
        &["diff", "r1", "r2"],
        &["timeline", "wf"],
    ];
    for args in commands {
        for json in [false, true] {
            let c = l.cmd(args);
            let out = if json { c.arg("--json") } else { c }.run();
            assert_eq!(
                (out.code, out.stderr.as_str()),
                (0, ""),
                "{args:?} json={json}"
            );
        }
    }
    // Stored text passes through as it was ingested.
    let show = l.cmd(&["show", "r1", "--json"]).run().stdout;
    assert!(show.contains(&format!(r#""input":{deep}"#)), "{show:.300}");
    assert!(show.contains(&format!(r#""output":{deep}"#)), "{show:.300}");
    // Where a value is built from it, what lies below 100 levels is kept as its JSON text (a
    // string, so its quotes are escaped), not null.
    let as_text = |what: &str, text: &str| {
        assert!(
            text.contains(r#"{\"k\":[{\"k\":["#) && text.contains(r#"\"zqdeepword\""#),
            "{what}: {text:.300}"
        );
    };
    let trace = l.ok(&["trace", "Task", "T1"]);
    as_text("trace data", &trace["history"][0]["data"].to_string());
    let r2 = l.cmd(&["show", "r2", "--json"]).run().stdout;
    let (output, error) = r2.split_once(r#""error":"#).expect("an error");
    as_text(
        "progress value",
        &output[output.find(r#""output":{"x":"#).expect("output.x")..],
    );
    as_text("error code", error);
    let found = l.ok(&["search", "zqdeepword"]);
    assert_eq!(
        ids(&found["hits"]),
        ["r1", "r2", "wf"].map(String::from).into(),
        "{found}"
    );
}

/// Run ids, operations, record names and prompts come from clients: human output writes their
/// control characters escaped, so they cannot drive the terminal (clear it, set its title or
/// clipboard, fake lines); JSON output keeps them exactly.
#[test]
fn human_output_escapes_control_characters_from_events() {
    let l = Ledger::new();
    let run = "r\u{1b}[2J\u{1b}]0;title\u{7}\nfake";
    let esc = |s: &str| serde_json::to_string(s).expect("json string");
    l.ingest_lines(&[
        format!(
            r#"{{"type":"run.started","id":"e1","ts":{T},"run_id":{},"run":{{"operation":{},"owner":"o\u001b[8m"}}}}"#,
            esc(run),
            esc("op\u{9b}31m")
        ),
        format!(
            r#"{{"type":"doc.created","id":"e2","ts":{},"run_id":{},"doctype":"Task","name":{},"data":{{}}}}"#,
            T + 1,
            esc(run),
            esc("T\u{1b}[1m")
        ),
        format!(
            r#"{{"type":"run.waiting","id":"e3","ts":{},"run_id":{},"step_id":"s\u001b[5m","prompt":"p\u0007"}}"#,
            T + 2,
            esc(run)
        ),
    ]);
    let commands: [&[&str]; 9] = [
        &["runs"],
        &["show", run],
        &["tree", run],
        &["trace", "Task", "T\u{1b}[1m"],
        &["state"],
        &["stats"],
        &["timeline", run],
        &["search", "fake"],
        &["show", "missing\u{1b}[2J"],
    ];
    for args in commands {
        let out = l.cmd(args).run();
        for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !text.contains(|c: char| c.is_control() && c != '\n'),
                "{args:?} {stream}: {text:?}"
            );
        }
        assert!(
            out.stdout.lines().all(|line| !line.starts_with("fake")),
            "{args:?}: a line of the run id's own: {}",
            out.stdout
        );
    }
    assert!(l
        .cmd(&["show", run])
        .run()
        .stdout
        .contains(r"r\u{1b}[2J\u{1b}]0;title\u{7}\nfake"));
    assert_eq!(l.ok(&["show", run])["run_id"], run);
    assert_eq!(l.ok(&["show", run])["owner"], "o\u{1b}[8m");

    // The escaped id takes its columns: the next column starts under its heading.
    l.ingest_lines(&[format!(
        r#"{{"type":"run.started","id":"e4","ts":{},"run_id":"a\u0007b","run":{{"operation":"chat"}}}}"#,
        T + 3
    )]);
    let out = l.cmd(&["runs", "--operation", "chat"]).run().stdout;
    let mut lines = out.lines();
    let (head, row) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    assert!(row.starts_with(r"a\u{7}b "), "{out}");
    assert_eq!(head.find("OPERATION"), row.find("chat"), "{out}");
}

/// Regression: a file that starts with a UTF-8 byte order mark (as editors on Windows write)
/// had its first line rejected as invalid JSON.
#[test]
fn a_byte_order_mark_at_the_start_is_skipped() {
    let l = Ledger::new();
    let line = |k: i64| {
        format!(
            r#"{{"type":"run.cancelled","id":"b{k}","run_id":"r{k}","ts":{}}}"#,
            T + k
        )
    };
    let mut input = b"\xEF\xBB\xBF".to_vec();
    input.extend_from_slice(format!("{}\n{}\n", line(1), line(2)).as_bytes());
    let (code, v, err) = l.cmd(&["ingest", "-"]).stdin(&input).json();
    assert_eq!((code, &v["accepted"]), (0, &json!(2)), "{v} {err}");
    // Only at the start: elsewhere it is a character before the JSON.
    let mut later = format!("{}\n", line(3)).into_bytes();
    later.extend_from_slice(b"\xEF\xBB\xBF");
    later.extend_from_slice(line(4).as_bytes());
    let (code, v, _) = l.cmd(&["ingest", "-"]).stdin(&later).json();
    assert_eq!(
        (code, &v["accepted"], &v["errors"][0]["line"]),
        (1, &json!(1), &json!(2)),
        "{v}"
    );
}

/// While another process writes the ledger, a second writer is refused with one line saying
/// what to do, and readers still answer.
#[test]
fn a_second_writer_is_told_what_to_do() {
    let l = Ledger::new();
    l.ingest_lines(&[format!(
        r#"{{"type":"run.started","id":"e1","run_id":"r","ts":{T},"run":{{"operation":"select"}}}}"#
    )]);
    let writer = l.open();
    let line = format!(
        r#"{{"type":"run.cancelled","id":"e2","run_id":"r","ts":{}}}"#,
        T + 1
    );
    let out = l.cmd(&["ingest", "-"]).stdin(line).run();
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("another process is writing this ledger"),
        "{}",
        out.stderr
    );
    assert_eq!(l.ok(&["show", "r"])["status"], "running");
    drop(writer);
}

/// Regression: a chain of runs (each step's parent the step before, as a long conversation
/// is) 20,000 deep overflowed the stack in `tree` and `diff`. A tree answer now stops 60 levels
/// down, counting the runs below in `more_children`; `diff` walks the whole chain.
#[test]
fn a_chain_of_twenty_thousand_runs_answers() {
    let l = Ledger::new();
    let n = 20_000;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let parent = if i == 0 {
                String::new()
            } else {
                format!(r#","parent_run_id":"c{}""#, i - 1)
            };
            format!(
                r#"{{"type":"run.started","id":"s{i}","run_id":"c{i}","ts":{},"run":{{"operation":"create"{parent}}}}}"#,
                T + i
            )
        })
        .collect();
    l.ingest_lines(&lines);
    let mut node = l.ok(&["tree", "c0"]);
    let mut levels = 0;
    while let Some(child) = node["children"].get(0).cloned() {
        node = child;
        levels += 1;
    }
    assert_eq!((levels, &node["run_id"]), (60, &json!("c60")));
    assert_eq!(node["more_children"], 1);
    let deeper = l.ok(&["tree", "c60", "--depth", "1"]);
    assert_eq!(deeper["children"][0]["run_id"], "c61");
    assert_eq!(l.cmd(&["tree", "c0"]).run().code, 0);
    let diff = l.ok(&["diff", "c0", "c1"]);
    assert_eq!(diff["steps"].as_array().map(Vec::len), Some(n as usize));
}

#[test]
fn errors_are_one_clear_line() {
    let l = Ledger::new();
    // Not a ledger file.
    std::fs::write(&l.db, "this is not a redb file, just text\n".repeat(100)).unwrap();
    for args in [vec!["show", "x"], vec!["verify"], vec!["ingest", "-"]] {
        let out = l.cmd(&args).arg("--json").run();
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("ledger.db"),
            "names the file: {}",
            out.stderr
        );
    }
    // Usage errors.
    let l = Ledger::new();
    assert_eq!(l.cmd(&["show"]).run().code, 2);
    assert_eq!(l.cmd(&["runs", "--limit", "many"]).run().code, 2);
    // An input file that does not exist.
    let out = l.cmd(&["ingest", "/nonexistent/events.ndjson"]).run();
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    // An export directory that cannot be made: the error names it (it said only "Not a
    // directory (os error 20)").
    l.ingest_lines(&[format!(
        r#"{{"type":"run.cancelled","run_id":"r","ts":{T}}}"#
    )]);
    let file = l.write("plain", "not a directory");
    let dir = file.join("export");
    let out = l.cmd(&["export", "--out"]).arg(&dir).run();
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&*dir.to_string_lossy()),
        "names the directory: {}",
        out.stderr
    );
}

#[test]
fn line_numbers_stay_right_across_large_inputs() {
    // Over 4 MiB (more than one ingest chunk), with a line longer than a chunk.
    let l = Ledger::new();
    let huge = format!(
        r#"{{"type":"run.progress","run_id":"big","ts":{T},"path":"output.text","value":"{}"}}"#,
        "z".repeat(5 << 20)
    );
    let filler = |i: usize| {
        format!(
            r#"{{"type":"run.progress","id":"f{i}","run_id":"r{}","ts":{},"path":"output.n","value":{i},"pad":"{}"}}"#,
            i % 97,
            T + i as i64,
            "p".repeat(150)
        )
    };
    let mut lines: Vec<String> = Vec::new();
    let mut bad = Vec::new();
    for i in 0..30_000usize {
        if i == 1 {
            lines.push(huge.clone());
        } else if i % 7_001 == 3 {
            lines.push(format!("{{\"type\":\"run.nope\",\"n\":{i}}}"));
            bad.push(i + 1);
        } else {
            lines.push(filler(i));
        }
    }
    let file = l.write("big.ndjson", &join_lines(&lines));
    let (code, v, err) = l.cmd(&["ingest", "--no-wait-indexed"]).arg(&file).json();
    assert_eq!(code, 1, "{err}");
    assert_eq!(v["rejected"], bad.len());
    assert_eq!(v["accepted"], lines.len() - bad.len());
    let got: Vec<u64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = bad.iter().map(|&b| b as u64).collect();
    assert_eq!(got, want);
    // Seqs follow the lines: the huge event is seq 2.
    let lib = l.open();
    let r = lib.reader().unwrap();
    let len = r
        .with_event(2, |ev| ev.event.run_id.to_string())
        .unwrap()
        .unwrap();
    assert_eq!(len, "big");
    let last = r
        .with_event(r.head().seq, |ev| {
            ev.event.id.as_ref().map(|s| s.to_string())
        })
        .unwrap()
        .unwrap();
    assert_eq!(last.as_deref(), Some("f29999"));
}

#[test]
fn a_second_start_merges_its_fields_later_by_ts_wins() {
    let l = Ledger::new();
    l.ingest_lines(&[
        started(
            10,
            "m",
            json!({"operation":"select","owner":"new","doctype":"Task"}),
        ),
        // Arrives later but happened earlier: it does not override, it fills in.
        started(
            5,
            "m",
            json!({"operation":"select","owner":"old","agent":"a1","input":{"q":1}}),
        ),
    ]);
    let m = l.ok(&["show", "m"]);
    assert_eq!(m["owner"], "new");
    assert_eq!(m["agent"], "a1");
    assert_eq!(m["doctype"], "Task");
    assert_eq!(m["input"], json!({"q":1}));
    assert_eq!(m["started_at"], ts(5), "the first start by ts");
    assert_eq!(m["events"], 2);
    // A later null does not erase a value.
    l.ingest_lines(&[started(20, "m", json!({"operation":"select","owner":null}))]);
    assert_eq!(l.ok(&["show", "m"])["owner"], "new");
    // --at past the head answers as of the head.
    assert_eq!(l.ok(&["show", "m", "--at", "1000"]), l.ok(&["show", "m"]));
    assert_eq!(l.ok(&["state", "--at", "1000"]), l.ok(&["state"]));
}

#[test]
fn verify_against_the_head_of_the_empty_ledger() {
    // The head an auditor gets from a new, empty ledger: every later log extends it.
    let l = Ledger::new();
    assert_eq!(l.ingest("").0, 0);
    let (code, v) = l.verify(&[]);
    assert_eq!(code, 0, "{v}");
    let zero = "0".repeat(64);
    assert_eq!(v["head"], json!({"seq": 0, "hash": zero}));
    l.ingest_lines(&[format!(
        r#"{{"type":"run.cancelled","run_id":"a","ts":{T}}}"#
    )]);
    let (code, v) = l.verify(&["--against", &format!("0:{zero}")]);
    assert_eq!(code, 0, "the log extends the empty head: {v}");
    let (code, _) = l.verify(&["--against", &format!("0:{}", "1".repeat(64))]);
    assert_eq!(code, 1, "no log has that hash at seq 0");
}

const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

/// Recomputes every chain hash of block 1 and the recorded head, as a forger who knows the
/// scheme would: only the seqs inside the events (and an auditor's earlier head) give it away.
fn rechain(db: &Path) {
    let mut head = (0u64, [0u8; 32]);
    tamper(db, 1, |e| {
        let mut prev = [0u8; 32];
        for (h, archive) in e.iter_mut() {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&prev);
            hasher.update(archive);
            *h = *hasher.finalize().as_bytes();
            prev = *h;
        }
        head = (e.len() as u64, prev);
        true
    });
    let d = open_redb(db);
    let tx = d.begin_write().unwrap();
    {
        let mut meta = tx.open_table(META).unwrap();
        let mut v = head.0.to_le_bytes().to_vec();
        v.extend_from_slice(&head.1);
        meta.insert("head", v.as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn verify_detects_reordering_and_removal_even_when_the_chain_is_recomputed() {
    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e.swap(3, 4);
        true
    });
    rechain(&l.db);
    assert_bad_at(&l, 4);

    let l = ten_events();
    tamper(&l.db, 1, |e| {
        e.remove(6);
        true
    });
    rechain(&l.db);
    assert_bad_at(&l, 7);

    // A forged byte with a recomputed chain passes the walk, but not an auditor's head.
    let l = ten_events();
    let (seq, hash) = head(&l);
    tamper(&l.db, 1, |e| {
        // Change the run id's text `run-8` to `run-9` in place (same length).
        let a = &mut e[8].1;
        let at = a
            .windows(5)
            .position(|w| w == b"run-8")
            .expect("run id bytes");
        a[at + 4] = b'9';
        true
    });
    rechain(&l.db);
    let (code, v) = l.verify(&["--against", &format!("{seq}:{hash}")]);
    assert_eq!(code, 1, "{v}");
    // (The head is all the auditor kept: the mismatch shows at its seq.)
    assert_eq!(v["problems"][0]["seq"], seq, "{v}");
    assert_eq!(
        l.verify(&[]).0,
        0,
        "without the auditor's head, a full re-chain passes"
    );
}

/// Makes files and directories unwritable, even for root where it can (`chattr +i`: root
/// ignores permission bits), and undoes it on drop so the temp dir can be removed.
struct Unwritable(Vec<std::path::PathBuf>);

impl Unwritable {
    /// `None` when this machine cannot make them unwritable for this user.
    fn make(paths: Vec<std::path::PathBuf>) -> Option<Unwritable> {
        use std::os::unix::fs::PermissionsExt;
        for p in &paths {
            let mode = if p.is_dir() { 0o555 } else { 0o444 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).ok()?;
        }
        let guard = Unwritable(paths);
        if !guard.writable() {
            return Some(guard);
        }
        let chattr = |p: &std::path::Path| {
            std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success())
        };
        (guard.0.iter().all(|p| chattr(p)) && !guard.writable()).then_some(guard)
    }

    fn writable(&self) -> bool {
        self.0
            .iter()
            .filter(|p| p.is_file())
            .any(|p| std::fs::OpenOptions::new().append(true).open(p).is_ok())
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// A ledger whose files cannot be written (an audit copy on read-only media) is still read,
/// searched and verified; what would write says so; projections behind the log are named.
/// Regression: every command failed with "Read-only file system (os error 30)".
#[test]
fn a_ledger_that_cannot_be_written_is_read_and_verified() {
    let l = Ledger::new();
    let started = |k: i64| {
        format!(
            r#"{{"type":"run.started","id":"s{k}","ts":{},"run_id":"r-{k}","run":{{"operation":"summarize","input":{{"text":"quarterly invoice {k}"}}}}}}"#,
            T + k
        )
    };
    l.ingest_lines(&[started(1), started(2)]);
    // Projections as of seq 2, kept aside; then the log moves on to seq 3.
    let proj = l.path("ledger.db.proj");
    std::fs::copy(&proj, l.path("old.proj")).expect("copying the projections");
    l.ingest_lines(&[started(3)]);
    let head = l.ok(&["verify"])["head"].clone();
    std::fs::rename(l.path("old.proj"), &proj).expect("restoring the older projections");
    let search_dir = l.path("ledger.db.search");
    let mut paths = vec![l.db.clone(), proj.clone(), search_dir.clone()];
    for entry in std::fs::read_dir(&search_dir).expect("index dir") {
        paths.push(entry.expect("entry").path());
    }
    paths.push(l.dir.path().to_path_buf());
    let Some(_unwritable) = Unwritable::make(paths) else {
        eprintln!("skipped: this machine cannot make files unwritable for this user");
        return;
    };

    let verified = l.ok(&["verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["head"], head);
    let (code, runs, err) = l.cmd(&["runs"]).json();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        runs["total"], 2,
        "answers as of the projections' seq 2: {runs}"
    );
    assert!(
        err.contains("projections stay at seq 2 of the log's 3"),
        "{err}"
    );
    let found = l.ok(&["search", "invoice"]);
    assert_eq!(found["total"], 3, "{found}");
    assert_eq!(l.ok(&["show", "r-1"])["operation"], "summarize");
    let (code, _, err) = l.cmd(&["rebuild"]).json();
    assert_eq!(code, 2);
    assert!(err.contains("cannot be written here"), "{err}");
    assert!(err.contains("writable copy"), "{err}");
}
