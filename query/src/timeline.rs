//! `timeline`: the runs of a tree on one time axis — when each ran, when it waited for input,
//! how it ended — and the critical path, the chain of runs that decides when the root ends.
//!
//! The critical path starts at the root; among a run's children it takes the one that ended
//! last, then, going backwards, the child that ended last before that one started, and so on;
//! it descends into every run it takes the same way.

use std::collections::HashSet;

use ledger::event::ArchivedBody;
use ledger::project::{RunState, Status, View};
use ledger::render::rfc3339;
use serde_json::{json, Value};

use crate::diff::not_found;
use crate::Result;

/// A paused period of a run, in ms from the axis start (`to` = `None`: still waiting).
#[derive(Debug, Clone)]
pub struct Wait {
    pub from: i64,
    pub to: Option<i64>,
    pub step_id: String,
}

/// One run on the axis.
#[derive(Debug, Clone)]
pub struct Row {
    pub run: RunState,
    pub depth: usize,
    /// Absolute ms.
    pub start: i64,
    /// Absolute ms; `None` while the run has not ended.
    pub end: Option<i64>,
    pub waits: Vec<Wait>,
    pub critical: bool,
    parent: Option<usize>,
}

/// The rows of a tree in tree order (depth first, children in step order).
pub struct Timeline {
    pub run_id: String,
    /// Axis start and end, absolute ms.
    pub t0: i64,
    pub t1: i64,
    pub rows: Vec<Row>,
    pub cycle: bool,
}

fn events_of(view: &View, r: &RunState) -> Result<(Option<i64>, Option<i64>, Vec<Wait>)> {
    let (mut first, mut last) = (None::<i64>, None::<i64>);
    let mut waits: Vec<Wait> = Vec::new();
    for seq in view.run_event_seqs(&r.run_id)? {
        let got = view.reader().with_event(seq, |ev| {
            let ts = ev.event.ts_ms.to_native();
            let w = match &ev.event.body {
                ArchivedBody::Waiting { step_id, .. } => Some((true, step_id.to_string())),
                ArchivedBody::Resumed { step_id, .. } => Some((false, step_id.to_string())),
                _ => None,
            };
            (ts, w)
        })?;
        let Some((ts, w)) = got else { continue };
        first = Some(first.map_or(ts, |f| f.min(ts)));
        last = Some(last.map_or(ts, |l| l.max(ts)));
        match w {
            Some((true, step_id)) => waits.push(Wait {
                from: ts,
                to: None,
                step_id,
            }),
            Some((false, _)) => {
                if let Some(open) = waits.iter_mut().rev().find(|w| w.to.is_none()) {
                    open.to = Some(ts);
                }
            }
            None => {}
        }
    }
    // A run that ended while waiting stops waiting then.
    if let Some(end) = r.ended_ms {
        for w in waits.iter_mut().filter(|w| w.to.is_none()) {
            w.to = Some(end.max(w.from));
        }
    }
    Ok((first, last, waits))
}

/// The timeline of `run_id`'s tree as of the view.
pub fn timeline(view: &View, run_id: &str) -> Result<Timeline> {
    let root = view
        .run_or_placeholder(run_id)?
        .ok_or_else(|| not_found(view, run_id))?;
    let mut rows: Vec<Row> = Vec::new();
    let mut seen = HashSet::new();
    let mut cycle = false;
    let mut last_ts = i64::MIN;
    // Depth first, children in step order.
    let mut stack: Vec<(RunState, usize, Option<usize>)> = vec![(root, 0, None)];
    while let Some((r, depth, parent)) = stack.pop() {
        if !seen.insert(r.run_id.clone()) {
            cycle = true;
            continue;
        }
        let (first, last, waits) = events_of(view, &r)?;
        last_ts = last_ts.max(last.unwrap_or(i64::MIN));
        let start = r.started_ms.or(first).unwrap_or(0);
        let end = r.ended_ms.filter(|_| r.status().is_terminal());
        let idx = rows.len();
        let kids = view.children(&r.run_id)?;
        rows.push(Row {
            run: r,
            depth,
            start,
            end,
            waits,
            critical: false,
            parent,
        });
        for c in kids.into_iter().rev() {
            stack.push((c, depth + 1, Some(idx)));
        }
    }
    let t0 = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let t1 = rows
        .iter()
        .filter_map(|r| r.end)
        .chain(std::iter::once(last_ts))
        .max()
        .unwrap_or(t0)
        .max(t0);
    let mut tl = Timeline {
        run_id: run_id.to_owned(),
        t0,
        t1,
        rows,
        cycle,
    };
    mark_critical(&mut tl, 0);
    Ok(tl)
}

/// Marks row `root` and, under every marked run, the chain of children that decides when it
/// ends.
fn mark_critical(tl: &mut Timeline, root: usize) {
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); tl.rows.len()];
    for (k, r) in tl.rows.iter().enumerate() {
        if let Some(p) = r.parent {
            kids[p].push(k);
        }
    }
    let t1 = tl.t1;
    let end_of = |r: &Row| r.end.unwrap_or(t1);
    let mut todo = vec![root];
    while let Some(i) = todo.pop() {
        if i >= tl.rows.len() || tl.rows[i].critical {
            continue;
        }
        tl.rows[i].critical = true;
        let mut taken: Vec<usize> = Vec::new();
        let mut bound = i64::MAX;
        loop {
            let next = kids[i]
                .iter()
                .copied()
                .filter(|&k| !taken.contains(&k) && end_of(&tl.rows[k]) <= bound)
                .max_by_key(|&k| (end_of(&tl.rows[k]), tl.rows[k].start));
            let Some(k) = next else { break };
            taken.push(k);
            bound = tl.rows[k].start;
        }
        todo.extend(taken);
    }
}

impl Timeline {
    pub fn critical_path(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| r.critical)
            .map(|r| r.run.run_id.as_str())
            .collect()
    }

    /// `timeline --json`.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let waits: Vec<Value> = r
                    .waits
                    .iter()
                    .map(|w| {
                        json!({
                            "step_id": w.step_id,
                            "from_ms": w.from - self.t0,
                            "to_ms": w.to.map(|t| t - self.t0),
                        })
                    })
                    .collect();
                let error = match r.run.status() {
                    Status::Failed => r
                        .run
                        .error
                        .as_deref()
                        .and_then(ledger::json::value_of)
                        .and_then(|e| e.get("message").cloned())
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                json!({
                    "run_id": r.run.run_id,
                    "depth": r.depth,
                    "parent_run_id": r.run.fields.parent_run_id,
                    "operation": r.run.fields.operation,
                    "doctype": r.run.fields.doctype,
                    "step_id": r.run.fields.step_id,
                    "step_index": r.run.fields.step_index,
                    "status": r.run.status().as_str(),
                    "started_at": rfc3339(r.start),
                    "ended_at": r.end.map(rfc3339),
                    "start_ms": r.start - self.t0,
                    "end_ms": r.end.map(|e| e - self.t0),
                    "duration_ms": r.run.duration_ms(),
                    "waits": waits,
                    "critical": r.critical,
                    "error": error,
                })
            })
            .collect();
        json!({
            "run_id": self.run_id,
            "start": rfc3339(self.t0),
            "end": rfc3339(self.t1),
            "span_ms": self.t1 - self.t0,
            "critical_path": self.critical_path(),
            "cycle": self.cycle,
            "rows": rows,
        })
    }
}
