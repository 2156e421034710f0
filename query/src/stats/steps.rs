//! `stats --template NAME --steps`: a template's time by step, and its critical path.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::{quantile_disc, RunRow, TimeRange};
use crate::error::{Error, Result};

#[derive(Default)]
struct Step {
    durations: Vec<i64>,
    shares: Vec<f64>,
    indexes: Vec<i64>,
    offsets: Vec<i64>,
    workflows: u64,
}

/// `runledger stats --template NAME --steps`: where a template's time goes. The workflows are
/// the root runs whose template (or flow) is NAME (within the time range); their steps are all
/// the runs under them, keyed by `step_id` (else operation). Per step: runs, p50/p95/max, and the
/// median over workflows of the step's share of the root's duration (a step run several times in
/// one workflow counts its summed time). The critical path lists the steps in order (median
/// `step_index`, then median start offset from the root's start), keeping of overlapping steps
/// the one with the longest median.
pub fn template_steps_json(rows: &[RunRow], template: &str, range: TimeRange) -> Result<Value> {
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(p) = &r.parent_run_id {
            children.entry(p.as_str()).or_default().push(i);
        }
    }
    let mut steps: BTreeMap<String, Step> = BTreeMap::new();
    let mut root_durations = Vec::new();
    let mut workflows = 0u64;
    for root in rows.iter() {
        if root.parent_run_id.is_some()
            || root.template.as_deref() != Some(template)
            || !range.contains(root.time_ms())
        {
            continue;
        }
        workflows += 1;
        if let Some(d) = root.duration_ms {
            root_durations.push(d);
        }
        // Breadth-first over the tree, each run once.
        let mut seen: HashSet<&str> = HashSet::from([root.run_id.as_str()]);
        let mut queue = vec![root.run_id.as_str()];
        let mut per_step: BTreeMap<String, (i64, Option<i64>, Option<i64>)> = BTreeMap::new();
        while let Some(id) = queue.pop() {
            for &c in children.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                let r = &rows[c];
                if !seen.insert(r.run_id.as_str()) {
                    continue;
                }
                queue.push(r.run_id.as_str());
                let key = r
                    .step_id
                    .clone()
                    .or_else(|| r.operation.clone())
                    .unwrap_or_default();
                let s = steps.entry(key.clone()).or_default();
                if let Some(d) = r.duration_ms {
                    s.durations.push(d);
                }
                let offset = match (r.started_ms, root.started_ms) {
                    (Some(a), Some(b)) => Some(a - b),
                    _ => None,
                };
                let e = per_step.entry(key).or_insert((0, r.step_index, offset));
                e.0 += r.duration_ms.unwrap_or(0);
                e.1 = e.1.or(r.step_index);
                e.2 = match (e.2, offset) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        for (key, (sum, index, offset)) in per_step {
            let s = steps.entry(key).or_default();
            s.workflows += 1;
            if let Some(d) = root.duration_ms.filter(|&d| d > 0) {
                s.shares.push(sum as f64 / d as f64);
            }
            s.indexes.extend(index);
            s.offsets.extend(offset);
        }
    }
    root_durations.sort_unstable();
    struct Out {
        key: String,
        index: Option<i64>,
        offset: Option<i64>,
        p50: Option<i64>,
        share: Option<f64>,
        value: Value,
    }
    let mut list: Vec<Out> = steps
        .into_iter()
        .map(|(key, mut s)| {
            s.durations.sort_unstable();
            s.shares.sort_by(f64::total_cmp);
            s.indexes.sort_unstable();
            s.offsets.sort_unstable();
            let share = quantile_disc(&s.shares, 0.5);
            let index = quantile_disc(&s.indexes, 0.5);
            let offset = quantile_disc(&s.offsets, 0.5);
            let p50 = quantile_disc(&s.durations, 0.5);
            let value = json!({
                "step_id": key,
                "runs": s.durations.len(),
                "workflows": s.workflows,
                "step_index": index,
                "median_offset_ms": offset,
                "p50_ms": p50,
                "p95_ms": quantile_disc(&s.durations, 0.95),
                "max_ms": s.durations.last(),
                "median_share": share.map(round4),
            });
            Out {
                key,
                index,
                offset,
                p50,
                share,
                value,
            }
        })
        .collect();
    list.sort_by(|a, b| {
        (
            a.index.unwrap_or(i64::MAX),
            a.offset.unwrap_or(i64::MAX),
            &a.key,
        )
            .cmp(&(
                b.index.unwrap_or(i64::MAX),
                b.offset.unwrap_or(i64::MAX),
                &b.key,
            ))
    });
    // Critical path: in order; of steps that overlap (same index, or starting before the
    // previous one ends, by medians), the longest.
    let mut path: Vec<&Out> = Vec::new();
    for s in &list {
        let overlaps = path.last().is_some_and(|last| {
            (s.index.is_some() && s.index == last.index)
                || (s.index.is_none() || last.index.is_none())
                    && match (s.offset, last.offset) {
                        (Some(o), Some(lo)) => o < lo + last.p50.unwrap_or(0),
                        _ => false,
                    }
        });
        if overlaps {
            if let Some(last) = path.last_mut() {
                if s.p50 > last.p50 {
                    *last = s;
                }
            }
        } else {
            path.push(s);
        }
    }
    let path_share: f64 = path.iter().filter_map(|s| s.share).sum();
    let critical: Vec<Value> = path
        .iter()
        .map(|s| json!({"step_id": s.key, "p50_ms": s.p50, "median_share": s.share.map(round4)}))
        .collect();
    Ok(json!({
        "template": template,
        "workflows": workflows,
        "root": {
            "with_duration": root_durations.len(),
            "p50_ms": quantile_disc(&root_durations, 0.5),
            "p95_ms": quantile_disc(&root_durations, 0.95),
            "max_ms": root_durations.last(),
        },
        "steps": list.into_iter().map(|s| s.value).collect::<Vec<_>>(),
        "critical_path": critical,
        "critical_path_share": round4(path_share),
    }))
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Checks that `--template` names a template some workflow ran.
pub fn require_template(rows: &[RunRow], template: &str) -> Result<()> {
    if rows
        .iter()
        .any(|r| r.parent_run_id.is_none() && r.template.as_deref() == Some(template))
    {
        Ok(())
    } else {
        Err(Error::BadQuery(format!(
            "no workflow ran template {template:?} in this ledger"
        )))
    }
}
