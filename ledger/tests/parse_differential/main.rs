//! `ledger::parse` against the serde_json-based parser it replaced (`oracle`): for every line
//! both give the same event, or the same rejection. Only the wording of "invalid JSON" reasons
//! may differ; both must still say so and give a column.
//!
//! Lines come from the workload generator, from hand-written edge cases, and from proptest
//! mutations of valid lines (fields set to odd values, keys given twice or escaped, bytes
//! deleted, inserted or replaced, lines cut short, deep nesting, whitespace).

mod oracle;

use std::sync::OnceLock;

use ledger::workload::{config_for_events, write_ndjson};
use ledger::{parse_event_limited, Event, Rejection, DEFAULT_MAX_EVENT_BYTES};
use proptest::prelude::*;
use serde_json::Value;

// ---- comparison ------------------------------------------------------------------------------

/// Why the two parsers disagree on `line`, if they do.
fn disagreement(line: &str, max: usize) -> Option<String> {
    let new = parse_event_limited(line, max);
    let old = oracle::parse_event_limited(line, max);
    if same_result(&new, &old) {
        return None;
    }
    Some(format!(
        "line {line:?} (limit {max}):\n  new: {new:?}\n  old: {old:?}"
    ))
}

fn same_result(new: &Result<Event, Rejection>, old: &Result<Event, Rejection>) -> bool {
    match (new, old) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) if b.0.starts_with("invalid JSON:") => {
            a.0.starts_with("invalid JSON:") && a.0.contains("(column ")
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

#[track_caller]
fn assert_same(line: &str) {
    for max in [DEFAULT_MAX_EVENT_BYTES, 120] {
        if let Some(d) = disagreement(line, max) {
            panic!("parsers disagree on {d}");
        }
    }
}

// ---- workload lines --------------------------------------------------------------------------

fn workload_lines(seed: u64, events: u64) -> Vec<String> {
    let mut out = Vec::new();
    write_ndjson(&config_for_events(seed, events), &mut out).expect("writing to a Vec");
    String::from_utf8(out)
        .expect("the workload writes UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_workload_line_parses_the_same() {
    for seed in [1, 7, 42, 2024] {
        let lines = workload_lines(seed, 20_000);
        assert!(lines.len() > 10_000);
        let mut accepted = 0;
        for line in &lines {
            assert_same(line);
            accepted += usize::from(ledger::parse_event(line).is_ok());
        }
        // The workload is valid: the comparison above is not only about rejections.
        assert_eq!(accepted, lines.len(), "seed {seed}");
    }
}

// ---- hand-written edge cases -----------------------------------------------------------------

const ENVELOPE: &str = r#""run_id":"r-1","ts":1763700000000"#;

/// Lines for every rejection reason and the odd corners of the JSON grammar.
fn edge_lines() -> Vec<String> {
    let mut lines: Vec<String> = [
        // Not an object / not JSON.
        "",
        " ",
        "null",
        "true",
        "1",
        "-0",
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "01",
        "\"text\"",
        "\"\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "[1,2]",
        "[1,]",
        "[]",
        "{",
        "}",
        "{}",
        "{} x",
        "{}\n",
        " \t\r\n{}\n\t ",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\":1 \"b\":2}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":1}}",
        "{\"a\":[1}",
        "{\"a\":{\"b\":1]}",
        "{\"a\":nul}",
        "{\"a\":tru}",
        "{\"a\":nulll}",
        "{\"a\":-}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":1e}",
        "{\"a\":1e+}",
        "{\"a\":01}",
        "{\"a\":-01}",
        "{\"a\":+1}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"\u{1}\"}",
        "{\"a\":\"\t\"}",
        "{\"a\":\"abc",
        "{\"a\":\"abc\\",
        "{\"a\\ud800\":1}",
        "{\"a\\udc00\":1}",
        "{\"\\ud800\\u0041\":1}",
        "{\"\\ud800x\":1}",
        "{\"\u{1}\":1}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"\\u0061\":2}",
        "{\"type\":\"run.cancelled\",\"type\":\"run.cancelled\"}",
        // Fields.
        "{\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":null,\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":1,\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.nope\",\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.nope\\u0000\",\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"\",\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"run_id\":5,\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"runId\":\"b\",\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"runId\":\"b\",\"run_id\":null,\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"runId\":\"b\",\"ts\":1763700000000}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":null}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":-5}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":-0}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":0}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1e12}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000.0}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":253402300799999}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":253402300800000}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":9223372036854775807}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":9223372036854775808}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":-9223372036854775808}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":-9223372036854775809}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":18446744073709551616}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":123456789012345678901234567890123456789012345}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":true}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":{\"a\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2025-11-21T04:40:00.010Z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2025-11-21t04:40:00.010z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2025-11-21 04:40:00+05:30\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2016-12-31T23:59:60Z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"1969-12-31T23:59:59.9999Z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2025-13-01T00:00:00Z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"yesterday\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"2025-11-21T04:40:00\\u002e010Z\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":\"\\ud800\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"id\":\"\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"id\":null}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"id\":[]}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"reason\":\"\\ud83d\\ude00 \\\"quoted\\\" \\/ \\b\\f\\n\\r\\t\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"reason\":\"\\ud83d\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"reason\":\"\\ude00\"}",
        "{\"type\":\"run.cancelled\",\"run_id\":\"a\",\"ts\":1763700000000,\"x\":\"\\ud800\",\"\\u00e9\\n\":1,\"y\\\"\":[\"\\udc00\"],\"path\":2,\"z\":{}}",
        // run.started and its run object.
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":null}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":[]}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":\"x\"}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":1}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"operation\":\"p\"}}",
        "{\"type\":\"run.completed\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"operation\":\"p\"}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"\\ud800\":1}}",
        "{\"type\":\"run.completed\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"\\ud800\":1}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"k\":1,}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\"",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"op\u{1}\":\"o\"}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"doctype\":\"D\",\"from\":\"F\"}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"into\":\"I\",\"operation\":\"o\",\"from\":\"F\",\"doctype\":\"D\"}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"options\":{\"parentRunId\":\"p\",\"chainId\":\"c\",\"stepIndex\":3},\"chain_id\":\"own\"}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"options\":{\"stepIndex\":1.5}}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"options\":{\"a\":1,\"a\":1}}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"options\":[]}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"options\":null,\"input\":null,\"step_index\":-0}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"stepIndex\":2,\"step_index\":1}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\":{\"operation\":\"o\",\"x\":1,\"run\":{\"a\":1,\"a\":2},\"operation\\u0020\":2}}",
        "{\"type\":\"run.started\",\"run_id\":\"a\",\"ts\":1763700000000,\"run\" : { \"operation\" : \"o\" , \"input\" : [ 1 , { } ] } }",
        // Other types.
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\"}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"\",\"value\":1}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\",\"value\":null}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\",\"value\":1,\"op\":\"add\"}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\",\"value\":1,\"op\":\"app\\u0065nd\"}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\",\"value\":1,\"op\":null}",
        "{\"type\":\"run.progress\",\"run_id\":\"a\",\"ts\":1763700000000,\"path\":\"x\",\"value\":1,\"op\":7}",
        "{\"type\":\"run.waiting\",\"run_id\":\"a\",\"ts\":1763700000000,\"stepId\":\"s\",\"prompt\":\"p\"}",
        "{\"type\":\"run.waiting\",\"run_id\":\"a\",\"ts\":1763700000000,\"stepId\":\"s\",\"step_id\":\"t\"}",
        "{\"type\":\"run.waiting\",\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.resumed\",\"run_id\":\"a\",\"ts\":1763700000000,\"step_id\":\"s\",\"data\":{\"x\":[1]}}",
        "{\"type\":\"run.completed\",\"run_id\":\"a\",\"ts\":1763700000000,\"durationMs\":5,\"output\":[1]}",
        "{\"type\":\"run.completed\",\"run_id\":\"a\",\"ts\":1763700000000,\"duration_ms\":5.0}",
        "{\"type\":\"run.completed\",\"run_id\":\"a\",\"ts\":1763700000000,\"duration_ms\":5,\"durationMs\":5}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":\"boom\"}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":5}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":{\"code\":1}}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":{\"message\":2}}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":{\"message\":\"m\",\"code\":{\"c\":1},\"stack\":\"s\",\"more\":true}}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":{\"message\":\"m\",\"stack\":3}}",
        "{\"type\":\"run.failed\",\"run_id\":\"a\",\"ts\":1763700000000,\"error\":{\"message\":\"m\",\"message\":\"n\"}}",
        "{\"type\":\"doc.created\",\"run_id\":\"a\",\"ts\":1763700000000,\"doctype\":\"T\",\"name\":\"N\",\"data\":[1]}",
        "{\"type\":\"doc.created\",\"run_id\":\"a\",\"ts\":1763700000000,\"doctype\":\"T\",\"name\":\"N\",\"data\":{\"a\":1,\"a\":2}}",
        "{\"type\":\"doc.updated\",\"run_id\":\"a\",\"ts\":1763700000000,\"doctype\":\"T\",\"name\":\"N\",\"before\":\"x\"}",
        "{\"type\":\"doc.deleted\",\"run_id\":\"a\",\"ts\":1763700000000,\"doctype\":\"T\"}",
        "{\"type\":\"doc.deleted\",\"run_id\":\"a\",\"ts\":1763700000000,\"name\":\"N\"}",
        // Checkpoints.
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"completed\",\"timestamp\":1763700000050,\"output\":{\"data\":[]},\"duration\":3}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"failed\",\"timestamp\":1763700000050}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"failed\",\"timestamp\":1763700000050,\"error\":{\"message\":\"m\"}}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"failed\",\"timestamp\":1763700000050,\"error\":{\"nope\":1}}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"weird\",\"timestamp\":1763700000050}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"timestamp\":1763700000050}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"running\"}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"status\":\"running\",\"timestamp\":1763700000050}}",
        "{\"type\":\"run.checkpoint\",\"run_id\":\"r\",\"ts\":1763700000000,\"run\":{\"status\":\"pending\",\"timestamp\":5}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"running\",\"timestamp\":\"2025-11-21T04:40:00Z\",\"duration\":1,\"duration_ms\":2}}",
        "{\"type\":\"run.checkpoint\",\"durationMs\":4,\"run\":{\"id\":\"ui-9\",\"status\":\"cancelled\",\"timestamp\":1763700000050,\"duration\":1}}",
        "{\"type\":\"run.checkpoint\",\"run\":{\"id\":\"ui-9\",\"status\":\"completed\",\"timestamp\":1763700000050,\"extra\":{\"deep\":[[[]]]}},\"more\":1}",
        "{\"type\":\"run.checkpoint\"}",
        "{\"type\":\"run.checkpoint\",\"run\":3}",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Lengths around the id limit.
    for n in [255, 256, 257] {
        let id = "é".repeat(n / 2) + &"x".repeat(n % 2);
        lines.push(format!(
            r#"{{"type":"run.cancelled",{ENVELOPE},"id":"{id}"}}"#
        ));
        lines.push(format!(
            r#"{{"type":"run.cancelled","run_id":"{}","ts":1763700000000}}"#,
            "x".repeat(n)
        ));
    }
    // Deep nesting inside values, and as the whole line.
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let deep_objects = "{\"a\":".repeat(3000) + "1" + &"}".repeat(3000);
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"x":{deep}}}"#
    ));
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"x":{deep_objects}}}"#
    ));
    lines.push(format!(
        r#"{{"type":"run.started",{ENVELOPE},"run":{{"operation":"o","input":{deep_objects}}}}}"#
    ));
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"x":{}}}"#,
        &deep[..9999]
    ));
    lines.push(deep.clone());
    lines.push(deep[..5000].to_owned());
    lines.push(deep_objects.clone());
    let mixed = "[{\"a\":".repeat(200) + "1" + &"}]".repeat(200);
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"x":{mixed}}}"#
    ));
    // A wrong closer deep down, past the first 64 levels.
    let wrong = mixed.replacen("}]}]", "}}]]", 1);
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"x":{wrong}}}"#
    ));
    lines.push(mixed);
    // Many unknown keys, and one given twice among them.
    let many: String = (0..200).map(|i| format!(",\"k{i}\":{i}")).collect();
    lines.push(format!(r#"{{"type":"run.cancelled",{ENVELOPE}{many}}}"#));
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE}{many},"k17":0}}"#
    ));
    lines.push(format!(
        r#"{{"type":"run.cancelled",{ENVELOPE},"k3":0{many}}}"#
    ));
    lines
}

#[test]
fn edge_cases_parse_the_same() {
    for line in edge_lines() {
        assert_same(&line);
    }
}

#[test]
fn every_prefix_of_edge_cases_parses_the_same() {
    for line in edge_lines().iter().filter(|l| l.len() < 400) {
        for (i, _) in line.char_indices() {
            assert_same(&line[..i]);
        }
    }
}

// ---- mutations -------------------------------------------------------------------------------

/// A JSON object as its members: key text (as written between the quotes) and value.
#[derive(Clone, Debug)]
struct Object(Vec<(String, Member)>);

#[derive(Clone, Debug)]
enum Member {
    Raw(String),
    Object(Object),
}

impl Object {
    fn from_value(v: &serde_json::Map<String, Value>) -> Object {
        Object(
            v.iter()
                .map(|(k, v)| {
                    let key = serde_json::to_string(k).expect("a string serializes");
                    let key = key[1..key.len() - 1].to_owned();
                    let member = match v {
                        Value::Object(o) => Member::Object(Object::from_value(o)),
                        other => Member::Raw(other.to_string()),
                    };
                    (key, member)
                })
                .collect(),
        )
    }

    fn render(&self, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
            match v {
                Member::Raw(r) => out.push_str(r),
                Member::Object(o) => o.render(out),
            }
        }
        out.push('}');
    }

    /// This object or one nested in it (by a walk of `steps`).
    fn pick(&mut self, steps: &mut impl Iterator<Item = usize>) -> &mut Object {
        let objects: Vec<usize> = (0..self.0.len())
            .filter(|&i| matches!(self.0[i].1, Member::Object(_)))
            .collect();
        let step = steps.next().unwrap_or(0);
        if objects.is_empty() || step % 3 == 0 {
            return self;
        }
        let i = objects[step % objects.len()];
        match &mut self.0[i].1 {
            Member::Object(o) => o.pick(steps),
            Member::Raw(_) => unreachable!(),
        }
    }
}

const KEYS: &[&str] = &[
    "type",
    "run_id",
    "runId",
    "ts",
    "id",
    "run",
    "path",
    "value",
    "op",
    "step_id",
    "stepId",
    "prompt",
    "data",
    "output",
    "duration_ms",
    "durationMs",
    "error",
    "reason",
    "doctype",
    "name",
    "before",
    "status",
    "timestamp",
    "duration",
    "options",
    "operation",
    "from",
    "into",
    "template",
    "flow",
    "owner",
    "agent",
    "role",
    "parent_run_id",
    "parentRunId",
    "chain_id",
    "chainId",
    "step_index",
    "stepIndex",
    "input",
    "message",
    "code",
    "stack",
    "x",
    "trace_tag",
    "",
    "Type",
    "run\\u005fid",
    "\\u0074s",
    "ty\\u0070e",
    "r\\ud800",
    "a\\ud83d\\ude00",
    "\\n",
    "\\\"",
    "é",
];

fn values() -> &'static [String] {
    static VALUES: OnceLock<Vec<String>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let mut v: Vec<String> = [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "01",
            "1.0",
            "1e5",
            "1E+5",
            "-1",
            "7",
            "1763700000000",
            "1763700000000.0",
            "1.7637e12",
            "100000000000",
            "99999999999",
            "253402300799999",
            "253402300800000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            "1e400",
            "-",
            "1.",
            ".5",
            "+1",
            "nul",
            "\"\"",
            "\"x\"",
            "\"run.started\"",
            "\"run.progress\"",
            "\"run.waiting\"",
            "\"run.resumed\"",
            "\"run.completed\"",
            "\"run.failed\"",
            "\"run.cancelled\"",
            "\"doc.created\"",
            "\"doc.updated\"",
            "\"doc.deleted\"",
            "\"run.checkpoint\"",
            "\"run.nope\"",
            "\"set\"",
            "\"append\"",
            "\"add\"",
            "\"pending\"",
            "\"running\"",
            "\"completed\"",
            "\"failed\"",
            "\"cancelled\"",
            "\"weird\"",
            "\"2025-11-21T04:40:00.010Z\"",
            "\"2025-11-21t04:40:00z\"",
            "\"2025-11-21 04:40:00+01:00\"",
            "\"2025-13-01T00:00:00Z\"",
            "\"1969-12-31T23:59:59.999Z\"",
            "\"2016-12-31T23:59:60Z\"",
            "\"yesterday\"",
            "\"\\u0041\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "\"a\\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"é😀\"",
            "\"\u{1}\"",
            "\"\\\"\"",
            "{}",
            "[]",
            "[1,2]",
            "{\"message\":\"boom\"}",
            "{\"message\":\"m\",\"code\":5,\"stack\":\"s\",\"e\":1}",
            "{\"message\":1}",
            "{\"a\":1,\"a\":2}",
            "{\"\\ud800\":1}",
            "{\"code\":1}",
            "{\"parentRunId\":\"p\",\"chainId\":\"c\",\"stepIndex\":3}",
            "{\"stepIndex\":1.5}",
            "[[[[[[]]]]]]",
            "{\"a\":[1,{\"b\":null}]}",
            "{,}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            " 1 ",
            "\t\"x\"\n",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.push(format!("\"{}\"", "x".repeat(256)));
        v.push(format!("\"{}\"", "x".repeat(257)));
        v.push("[".repeat(300) + &"]".repeat(300));
        v
    })
}

/// Bits of JSON (and of not JSON) to splice into a line.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "\\u",
    "\\uD83D",
    "\\uDE00",
    "\\uD83D\\uDE00",
    "\\ud800",
    "\\n",
    "\\x",
    ",",
    ":",
    "{",
    "}",
    "[",
    "]",
    "null",
    "true",
    "1e5",
    "-0",
    "01",
    "1.0",
    "-",
    " ",
    "\t",
    "\n",
    "\r",
    "\u{b}",
    "\u{1}",
    "\u{7f}",
    "é",
    "😀",
    "\"run_id\":\"x\",",
    "\"runId\":\"y\",",
    "\"type\":\"run.completed\",",
    "\"ts\":1763700000001,",
    ",\"x\":1",
    "{\"a\":",
    "[1,",
];

/// Valid lines to start from: a small workload plus lines of every type.
fn base_lines() -> &'static [String] {
    static LINES: OnceLock<Vec<String>> = OnceLock::new();
    LINES.get_or_init(|| {
        let mut lines = workload_lines(3, 1500);
        lines.extend(
            edge_lines()
                .into_iter()
                .filter(|l| l.len() < 1000 && ledger::parse_event(l).is_ok())
                // Lone surrogates stay in raw values, but `serde_json::Value` refuses them.
                .filter(|l| serde_json::from_str::<Value>(l).is_ok()),
        );
        lines
    })
}

/// One change to a line; the numbers pick what and where.
#[derive(Clone, Debug)]
enum Mutation {
    SetValue(Vec<usize>, usize, usize),
    Remove(Vec<usize>, usize),
    Duplicate(Vec<usize>, usize),
    RenameKey(Vec<usize>, usize, usize),
    Delete(usize, usize),
    Insert(usize, usize),
    ReplaceByte(usize, u8),
    Truncate(usize),
}

/// Changes to members: the line stays JSON (mostly), so the field rules are what is tested.
fn member_mutation() -> impl Strategy<Value = Mutation> {
    let path = proptest::collection::vec(any::<usize>(), 0..3);
    prop_oneof![
        4 => (path.clone(), any::<usize>(), any::<usize>())
            .prop_map(|(p, k, v)| Mutation::SetValue(p, k, v)),
        1 => (path.clone(), any::<usize>()).prop_map(|(p, i)| Mutation::Remove(p, i)),
        1 => (path.clone(), any::<usize>()).prop_map(|(p, i)| Mutation::Duplicate(p, i)),
        1 => (path, any::<usize>(), any::<usize>())
            .prop_map(|(p, i, k)| Mutation::RenameKey(p, i, k)),
    ]
}

/// Changes to the text: mostly breaks the JSON, so the scanner is what is tested.
fn text_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), 1..20usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::ReplaceByte(at, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Applies `mutations` to `line`: first the structural ones, then those on the text.
fn mutate(line: &str, mutations: &[Mutation]) -> String {
    let parsed: serde_json::Map<String, Value> =
        serde_json::from_str(line).expect("base lines are JSON objects");
    let mut object = Object::from_value(&parsed);
    for m in mutations {
        match m {
            Mutation::SetValue(path, k, v) => {
                let o = object.pick(&mut path.iter().copied());
                let key = KEYS[k % KEYS.len()].to_owned();
                let value = Member::Raw(values()[v % values().len()].clone());
                match o.0.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(member) => member.1 = value,
                    None => {
                        let at = v % (o.0.len() + 1);
                        o.0.insert(at, (key, value));
                    }
                }
            }
            Mutation::Remove(path, i) => {
                let o = object.pick(&mut path.iter().copied());
                if !o.0.is_empty() {
                    let at = i % o.0.len();
                    o.0.remove(at);
                }
            }
            Mutation::Duplicate(path, i) => {
                let o = object.pick(&mut path.iter().copied());
                if !o.0.is_empty() {
                    let member = o.0[i % o.0.len()].clone();
                    let at = (i / 7) % (o.0.len() + 1);
                    o.0.insert(at, member);
                }
            }
            Mutation::RenameKey(path, i, k) => {
                let o = object.pick(&mut path.iter().copied());
                if !o.0.is_empty() {
                    let len = o.0.len();
                    o.0[i % len].0 = KEYS[k % KEYS.len()].to_owned();
                }
            }
            _ => {}
        }
    }
    let mut text = String::new();
    object.render(&mut text);
    let mut bytes = text.into_bytes();
    for m in mutations {
        let at = |p: usize, len: usize| p % (len + 1);
        match *m {
            Mutation::Delete(p, n) => {
                let from = at(p, bytes.len());
                let to = (from + n).min(bytes.len());
                bytes.drain(from..to);
            }
            Mutation::Insert(p, t) => {
                let from = at(p, bytes.len());
                let token = TOKENS[t % TOKENS.len()].as_bytes();
                bytes.splice(from..from, token.iter().copied());
            }
            Mutation::ReplaceByte(p, b) if !bytes.is_empty() => {
                let i = p % bytes.len();
                bytes[i] = b;
            }
            Mutation::Truncate(p) => {
                let len = at(p, bytes.len());
                bytes.truncate(len);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn lines_with_changed_members_parse_the_same(
        which in any::<usize>(),
        mutations in proptest::collection::vec(member_mutation(), 1..6),
    ) {
        let lines = base_lines();
        let line = mutate(&lines[which % lines.len()], &mutations);
        if let Some(d) = disagreement(&line, DEFAULT_MAX_EVENT_BYTES) {
            prop_assert!(false, "parsers disagree on {}", d);
        }
    }

    #[test]
    fn lines_with_changed_text_parse_the_same(
        which in any::<usize>(),
        members in proptest::collection::vec(member_mutation(), 0..3),
        text in proptest::collection::vec(text_mutation(), 1..4),
    ) {
        let lines = base_lines();
        let line = mutate(&lines[which % lines.len()], &[members, text].concat());
        if let Some(d) = disagreement(&line, DEFAULT_MAX_EVENT_BYTES) {
            prop_assert!(false, "parsers disagree on {}", d);
        }
    }

    #[test]
    fn json_like_noise_parses_the_same(
        line in "[{}\\[\\]\",:0-9a-z\\\\ .eEu+-]{0,60}",
    ) {
        if let Some(d) = disagreement(&line, DEFAULT_MAX_EVENT_BYTES) {
            prop_assert!(false, "parsers disagree on {}", d);
        }
    }

    #[test]
    fn envelope_noise_parses_the_same(
        tail in "[{}\\[\\]\",:0-9a-z\\\\ .eEu+-]{0,40}",
        kind in 0..11usize,
    ) {
        let line = format!(
            r#"{{"type":"{}",{ENVELOPE},{tail}"#,
            ledger::event::TYPES[kind]
        );
        if let Some(d) = disagreement(&line, DEFAULT_MAX_EVENT_BYTES) {
            prop_assert!(false, "parsers disagree on {}", d);
        }
    }
}
