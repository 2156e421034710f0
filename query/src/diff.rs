//! `diff`: two runs, or two run trees matched step by step — inputs and outputs as path-level
//! JSON diffs, status, durations and the records each run changed.
//!
//! Children are matched by `step_id`, else by `step_index`, else by position among the runs that
//! have neither; a key that repeats (a failed step and its retry) pairs the n-th run of one side
//! with the n-th of the other.

use std::collections::{HashMap, HashSet};

use ledger::event::ArchivedBody;
use ledger::project::{RunState, View};
use ledger::render::rfc3339;
use serde_json::{json, Map, Value};

use crate::{Error, Result};

/// One difference between two JSON values, at a path such as `$.data.subject` or `$.text[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl Change {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("path".into(), json!(self.path));
        m.insert("change".into(), json!(self.kind));
        if let Some(o) = &self.old {
            m.insert("old".into(), o.clone());
        }
        if let Some(n) = &self.new {
            m.insert("new".into(), n.clone());
        }
        Value::Object(m)
    }
}

/// The path-level differences that turn `a` into `b` (empty when equal).
pub fn json_diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("$".to_owned(), a, b, &mut out);
    out
}

/// The differences as a JSON array.
pub fn changes_json(changes: &[Change]) -> Value {
    Value::Array(changes.iter().map(Change::to_json).collect())
}

fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{}]", Value::String(key.to_owned()))
    }
}

fn walk(path: String, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(key_path(&path, k), va, vb, out),
                    None => out.push(Change {
                        path: key_path(&path, k),
                        kind: "removed",
                        old: Some(va.clone()),
                        new: None,
                    }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(Change {
                        path: key_path(&path, k),
                        kind: "added",
                        old: None,
                        new: Some(vb.clone()),
                    });
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(p, va, vb, out),
                    (Some(va), None) => out.push(Change {
                        path: p,
                        kind: "removed",
                        old: Some(va.clone()),
                        new: None,
                    }),
                    (None, Some(vb)) => out.push(Change {
                        path: p,
                        kind: "added",
                        old: None,
                        new: Some(vb.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        _ if a == b => {}
        _ => out.push(Change {
            path,
            kind: "changed",
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
    }
}

fn parse(text: &Option<String>) -> Value {
    ledger::json::value_or_null(text.as_deref())
}

/// A run's recorded input as JSON (null when none).
pub fn input_of(r: &RunState) -> Value {
    parse(&r.fields.input)
}
/// A run's output as JSON (null when none).
pub fn output_of(r: &RunState) -> Value {
    parse(&r.output)
}
/// A run's error as JSON (null when none).
pub fn error_of(r: &RunState) -> Value {
    parse(&r.error)
}

/// The record changes a run made itself: `(kind, doctype, name)` in `(ts, seq)` order.
pub fn run_records(view: &View, run_id: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for seq in view.run_event_seqs(run_id)? {
        let row = view.reader().with_event(seq, |ev| match &ev.event.body {
            ArchivedBody::Doc {
                change,
                doctype,
                name,
                ..
            } => Some((
                change.get().as_str().to_owned(),
                doctype.to_string(),
                name.to_string(),
            )),
            _ => None,
        })?;
        if let Some(Some(r)) = row {
            out.push(r);
        }
    }
    Ok(out)
}

/// The error for a run id that never appeared (as of the view's seq): exit 1 in the CLI.
pub fn not_found(view: &View, run_id: &str) -> Error {
    let msg = if view.at() < view.applied() {
        format!("no run {run_id:?} as of seq {}", view.at())
    } else {
        format!("no run {run_id:?} in this ledger")
    };
    Error::Ledger(ledger::Error::NotFound(msg))
}

/// How a child is matched: its step id, else its step index, else its position.
fn match_key(r: &RunState, position: &mut usize) -> String {
    if let Some(id) = &r.fields.step_id {
        format!("step {id}")
    } else if let Some(i) = r.fields.step_index {
        format!("step #{i}")
    } else {
        *position += 1;
        format!("position {}", *position - 1)
    }
}

type Pair = (String, Option<RunState>, Option<RunState>);

/// Pairs the children of the two sides (see the module docs), in A's order then B's extras.
pub fn match_runs(a: Vec<RunState>, b: Vec<RunState>) -> Vec<Pair> {
    let keyed = |runs: Vec<RunState>| -> Vec<(String, RunState)> {
        let mut pos = 0;
        let mut seen: HashMap<String, usize> = HashMap::new();
        runs.into_iter()
            .map(|r| {
                let k = match_key(&r, &mut pos);
                let n = seen.entry(k.clone()).or_insert(0);
                *n += 1;
                let k = if *n > 1 { format!("{k} (run {n})") } else { k };
                (k, r)
            })
            .collect()
    };
    let a = keyed(a);
    let mut b: Vec<Option<(String, RunState)>> = keyed(b).into_iter().map(Some).collect();
    let mut out = Vec::new();
    for (k, ra) in a {
        let found = b
            .iter_mut()
            .find(|x| x.as_ref().is_some_and(|(kb, _)| *kb == k))
            .and_then(Option::take);
        out.push((k, Some(ra), found.map(|(_, r)| r)));
    }
    for (k, rb) in b.into_iter().flatten() {
        out.push((k, None, Some(rb)));
    }
    out
}

fn side(r: &RunState) -> Value {
    json!({
        "run_id": r.run_id,
        "operation": r.fields.operation,
        "doctype": r.fields.doctype,
        "status": r.status().as_str(),
        "started_at": r.started_ms.map(rfc3339),
        "duration_ms": r.duration_ms(),
    })
}

fn records_json(recs: &[(String, String, String)]) -> Value {
    Value::Array(
        recs.iter()
            .map(|(k, d, n)| json!({"kind": k, "doctype": d, "name": n}))
            .collect(),
    )
}

/// The kinds and doctypes of the records changed, sorted: what "the same effects" compares
/// (record names differ from one run to the next).
fn shape(recs: &[(String, String, String)]) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = recs
        .iter()
        .map(|(k, d, _)| (k.clone(), d.clone()))
        .collect();
    s.sort();
    s
}

/// One row of a diff: a matched pair (or a run only one side has).
fn pair_row(
    view: &View,
    key: &str,
    depth: usize,
    a: Option<&RunState>,
    b: Option<&RunState>,
) -> Result<Value> {
    let mut row = Map::new();
    row.insert("key".into(), json!(key));
    row.insert("depth".into(), json!(depth));
    row.insert("a".into(), a.map_or(Value::Null, side));
    row.insert("b".into(), b.map_or(Value::Null, side));
    let (Some(a), Some(b)) = (a, b) else {
        row.insert("only".into(), json!(if a.is_some() { "a" } else { "b" }));
        row.insert("same".into(), json!(false));
        return Ok(Value::Object(row));
    };
    let input = json_diff(&input_of(a), &input_of(b));
    let output = json_diff(&output_of(a), &output_of(b));
    let error = json_diff(&error_of(a), &error_of(b));
    let (ra, rb) = (run_records(view, &a.run_id)?, run_records(view, &b.run_id)?);
    let same_records = shape(&ra) == shape(&rb);
    let same_status = a.status() == b.status();
    let same_op = a.fields.operation == b.fields.operation && a.fields.doctype == b.fields.doctype;
    row.insert(
        "status".into(),
        json!({"a": a.status().as_str(), "b": b.status().as_str(), "same": same_status}),
    );
    let (da, db) = (a.duration_ms(), b.duration_ms());
    row.insert(
        "duration_ms".into(),
        json!({"a": da, "b": db, "delta": da.zip(db).map(|(x, y)| y - x)}),
    );
    row.insert("input".into(), changes_json(&input));
    row.insert("output".into(), changes_json(&output));
    row.insert("error".into(), changes_json(&error));
    row.insert(
        "records".into(),
        json!({"a": records_json(&ra), "b": records_json(&rb), "same": same_records}),
    );
    let same = same_status
        && same_op
        && same_records
        && input.is_empty()
        && output.is_empty()
        && error.is_empty();
    row.insert("same".into(), json!(same));
    Ok(Value::Object(row))
}

/// `runledger diff A B`: the two runs and, step by step, their subtrees.
pub fn diff_json(view: &View, a_id: &str, b_id: &str) -> Result<Value> {
    let get = |id: &str| -> Result<RunState> {
        view.run_or_placeholder(id)?
            .ok_or_else(|| not_found(view, id))
    };
    let (a, b) = (get(a_id)?, get(b_id)?);
    let rows = walk_pairs(view, a, b)?;
    let differing = rows
        .iter()
        .filter(|r| r["same"].as_bool() != Some(true))
        .count();
    let tree_records = |id: &str| -> Result<Vec<(String, String, String)>> {
        let (ids, _) = view.subtree_ids(id)?;
        let mut all = Vec::new();
        for i in ids {
            all.extend(run_records(view, &i)?);
        }
        Ok(all)
    };
    let (ta, tb) = (tree_records(a_id)?, tree_records(b_id)?);
    Ok(json!({
        "a": a_id,
        "b": b_id,
        "same": differing == 0,
        "differing_steps": differing,
        "steps": rows,
        "records": {"a": records_json(&ta), "b": records_json(&tb), "same": shape(&ta) == shape(&tb)},
    }))
}

/// One row per matched pair of runs, depth first from the roots. A stack, not recursion: a
/// chain of 50,000 steps is 50,000 levels deep.
fn walk_pairs(view: &View, a: RunState, b: RunState) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut seen = (HashSet::new(), HashSet::new());
    let mut stack = vec![("root".to_string(), 0usize, Some(a), Some(b))];
    while let Some((key, depth, a, b)) = stack.pop() {
        rows.push(pair_row(view, &key, depth, a.as_ref(), b.as_ref())?);
        // A run met twice on one side (a cycle in parent links) is not descended again.
        let kids = |r: &Option<RunState>, seen: &mut HashSet<String>| -> Result<Vec<RunState>> {
            match r {
                Some(r) if seen.insert(r.run_id.clone()) => Ok(view.children(&r.run_id)?),
                _ => Ok(Vec::new()),
            }
        };
        let (ka, kb) = (kids(&a, &mut seen.0)?, kids(&b, &mut seen.1)?);
        let pairs = match_runs(ka, kb).into_iter().rev();
        stack.extend(pairs.map(|(k, ca, cb)| (k, depth + 1, ca, cb)));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_level_changes() {
        let a = json!({"data": {"subject": "x", "n": 1}, "text": [1, 2], "gone": true});
        let b = json!({"data": {"subject": "y", "n": 1}, "text": [1], "new key": null});
        let d = json_diff(&a, &b);
        let paths: Vec<(&str, &str)> = d.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            paths,
            vec![
                ("$.data.subject", "changed"),
                ("$.text[1]", "removed"),
                ("$.gone", "removed"),
                ("$[\"new key\"]", "added"),
            ]
        );
        assert!(json_diff(&a, &a).is_empty());
        assert_eq!(json_diff(&json!(1), &json!("1"))[0].path, "$");
    }
}
