//! Latency and failure statistics over the runs of a ledger: groups with exact percentiles, the
//! slowest runs, failures grouped by normalised message, and a template's time by step.
//!
//! # Percentiles
//! Percentiles are exact and discrete (nearest rank), computed exactly as DuckDB's
//! `quantile_disc(x, q)`: over the `n` sorted durations, the value at 1-based rank
//! `max(1, n - floor(n - n·q))` (with `n·q` in `f64`), i.e. `ceil(n·q)` clamped to at least 1. So
//! `runledger stats` and `quantile_disc(duration_ms, 0.95)` over the export agree to the
//! millisecond. Only runs that have a duration (reported by their terminal event, or end − start)
//! count towards percentiles; `runs` counts every run in the group.
//!
//! # Which runs
//! Every run that has at least one event as of the view's seq (a parent known only because a
//! child names it is not a run here). `--since`/`--until` keep runs whose start time (else end
//! time, for a run known only from its terminal event) lies in the range, bounds included.

mod errors;
mod load;
mod steps;

use std::collections::BTreeMap;

use ledger::project::{RunState, Status, View};
use ledger::render::rfc3339;
use serde_json::{json, Value};

use crate::error::Result;

pub use errors::{errors_json, normalize_message};
pub use load::{
    error_message, for_each_run, load_rows, load_rows_at, run_ids_touched, Links, Roots,
};
pub use steps::{require_template, template_steps_json};

/// What `stats` groups runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    Operation,
    Doctype,
    /// The template (or flow) of the run's root: steps do not carry the template themselves.
    Template,
    Owner,
    Agent,
    Status,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "operation" => GroupBy::Operation,
            "doctype" => GroupBy::Doctype,
            "template" => GroupBy::Template,
            "owner" => GroupBy::Owner,
            "agent" => GroupBy::Agent,
            "status" => GroupBy::Status,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Operation => "operation",
            GroupBy::Doctype => "doctype",
            GroupBy::Template => "template",
            GroupBy::Owner => "owner",
            GroupBy::Agent => "agent",
            GroupBy::Status => "status",
        }
    }
}

/// The start-time range of the runs considered (ms since the Unix epoch, bounds included).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeRange {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl TimeRange {
    pub fn contains(&self, t: Option<i64>) -> bool {
        match t {
            Some(t) => self.since_ms.is_none_or(|s| t >= s) && self.until_ms.is_none_or(|u| t <= u),
            None => self.since_ms.is_none() && self.until_ms.is_none(),
        }
    }
}

/// The discrete quantile `q` of ascending `sorted` values, as DuckDB's `quantile_disc`
/// computes it (nearest rank; see the module docs). `None` when there are no values.
///
/// # Example
/// ```
/// let v = [10, 20, 30, 40];
/// assert_eq!(query::stats::quantile_disc(&v, 0.5), Some(20));
/// assert_eq!(query::stats::quantile_disc(&v, 0.95), Some(40));
/// ```
pub fn quantile_disc<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let floored = (nf - nf * q.clamp(0.0, 1.0)).floor().max(0.0) as usize;
    let rank = n.saturating_sub(floored).max(1);
    sorted.get(rank - 1).copied()
}

/// What statistics need of one run.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub operation: Option<String>,
    pub doctype: Option<String>,
    /// The run's own template, else its flow.
    pub template: Option<String>,
    pub owner: Option<String>,
    pub agent: Option<String>,
    pub parent_run_id: Option<String>,
    pub step_id: Option<String>,
    pub step_index: Option<i64>,
    pub status: Status,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The error message of a failed run.
    pub error: Option<String>,
}

impl RunRow {
    pub fn from_state(r: &RunState) -> RunRow {
        let f = &r.fields;
        let status = r.status();
        let error = if status == Status::Failed {
            Some(error_message(r.error.as_deref()))
        } else {
            None
        };
        RunRow {
            run_id: r.run_id.clone(),
            operation: f.operation.clone(),
            doctype: f.doctype.clone(),
            template: f.template.clone().or_else(|| f.flow.clone()),
            owner: f.owner.clone(),
            agent: f.agent.clone(),
            parent_run_id: f.parent_run_id.clone(),
            step_id: f.step_id.clone(),
            step_index: f.step_index,
            status,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            duration_ms: r.duration_ms(),
            error,
        }
    }

    /// The time `--since`/`--until` look at: the start, else the end.
    pub fn time_ms(&self) -> Option<i64> {
        self.started_ms.or(self.ended_ms)
    }
}

#[derive(Default)]
struct Group {
    runs: u64,
    by_status: [u64; 5],
    durations: Vec<i64>,
}

fn status_slot(s: Status) -> usize {
    match s {
        Status::Running => 0,
        Status::Waiting => 1,
        Status::Completed => 2,
        Status::Failed => 3,
        Status::Cancelled => 4,
    }
}

/// Percentile keys of a sorted set of durations.
fn percentiles(sorted: &[i64]) -> Value {
    json!({
        "p50_ms": quantile_disc(sorted, 0.5),
        "p95_ms": quantile_disc(sorted, 0.95),
        "p99_ms": quantile_disc(sorted, 0.99),
        "max_ms": sorted.last(),
    })
}

/// `runledger stats --by KEY`: `{"groups":[{"key","runs","completed","failed","cancelled",
/// "running","waiting","with_duration","p50_ms","p95_ms","p99_ms","max_ms"}]}`, largest group
/// first. A run without the key is counted under `"key": null`.
pub fn groups_json(rows: &[RunRow], by: GroupBy, range: TimeRange) -> Result<Value> {
    let roots = if by == GroupBy::Template {
        Some(load::root_templates(rows))
    } else {
        None
    };
    let mut groups: BTreeMap<Option<&str>, Group> = BTreeMap::new();
    let mut total = 0u64;
    for (i, r) in rows.iter().enumerate() {
        if !range.contains(r.time_ms()) {
            continue;
        }
        let key = match by {
            GroupBy::Operation => r.operation.as_deref(),
            GroupBy::Doctype => r.doctype.as_deref(),
            GroupBy::Template => roots.as_ref().and_then(|t| t[i]),
            GroupBy::Owner => r.owner.as_deref(),
            GroupBy::Agent => r.agent.as_deref(),
            GroupBy::Status => Some(r.status.as_str()),
        };
        let g = groups.entry(key).or_default();
        g.runs += 1;
        total += 1;
        g.by_status[status_slot(r.status)] += 1;
        if let Some(d) = r.duration_ms {
            g.durations.push(d);
        }
    }
    let mut out: Vec<(u64, Option<&str>, Value)> = groups
        .into_iter()
        .map(|(key, mut g)| {
            g.durations.sort_unstable();
            let mut v = json!({
                "key": key,
                "runs": g.runs,
                "completed": g.by_status[2],
                "failed": g.by_status[3],
                "cancelled": g.by_status[4],
                "running": g.by_status[0],
                "waiting": g.by_status[1],
                "with_duration": g.durations.len(),
            });
            if let (Value::Object(m), Value::Object(p)) = (&mut v, percentiles(&g.durations)) {
                m.extend(p);
            }
            (g.runs, key, v)
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(json!({
        "by": by.as_str(),
        "runs": total,
        "percentiles": "nearest rank, as DuckDB quantile_disc",
        "groups": out.into_iter().map(|g| g.2).collect::<Vec<_>>(),
    }))
}

/// `runledger stats --by KEY` straight from a view (what `/v1/stats?by=` answers).
pub fn stats_json(view: &View, by: GroupBy, range: TimeRange) -> Result<Value> {
    let rows = load_rows(view)?;
    let mut v = groups_json(&rows, by, range)?;
    v["at_seq"] = json!(view.at());
    Ok(v)
}

/// `runledger stats --slowest N`: the N runs with the longest durations, longest first (ties by
/// run id).
pub fn slowest_json(rows: &[RunRow], n: usize, range: TimeRange) -> Value {
    let mut with: Vec<&RunRow> = rows
        .iter()
        .filter(|r| r.duration_ms.is_some() && range.contains(r.time_ms()))
        .collect();
    with.sort_by(|a, b| {
        b.duration_ms
            .cmp(&a.duration_ms)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
    let out: Vec<Value> = with
        .into_iter()
        .take(n)
        .map(|r| {
            json!({
                "run_id": r.run_id,
                "operation": r.operation,
                "doctype": r.doctype,
                "status": r.status.as_str(),
                "started_at": r.started_ms.map(rfc3339),
                "duration_ms": r.duration_ms,
            })
        })
        .collect();
    json!({ "slowest": out })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::load::root_templates;
    use super::*;

    #[test]
    fn quantile_matches_nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(quantile_disc(&v, 0.95), Some(19));
        assert_eq!(quantile_disc(&v, 0.5), Some(10));
        assert_eq!(quantile_disc(&v, 0.99), Some(20));
        assert_eq!(quantile_disc(&v[..1], 0.01), Some(1));
        assert_eq!(quantile_disc::<i64>(&[], 0.5), None);
    }

    fn row(id: &str, parent: Option<&str>, template: Option<&str>) -> RunRow {
        RunRow {
            run_id: id.into(),
            operation: None,
            doctype: None,
            template: template.map(Into::into),
            owner: None,
            agent: None,
            parent_run_id: parent.map(Into::into),
            step_id: None,
            step_index: None,
            status: Status::Running,
            started_ms: None,
            ended_ms: None,
            duration_ms: None,
            error: None,
        }
    }

    #[test]
    fn roots_stop_at_the_first_run_seen_twice() {
        // a ⇄ b form a cycle, c hangs under a, d under a run that never came, e is a root.
        let rows = vec![
            row("a", Some("b"), Some("TA")),
            row("b", Some("a"), Some("TB")),
            row("c", Some("a"), Some("TC")),
            row("d", Some("ghost"), Some("TD")),
            row("e", None, Some("TE")),
            row("f", Some("e"), None),
        ];
        let want = [
            Some("TB"),
            Some("TA"),
            Some("TB"),
            None,
            Some("TE"),
            Some("TE"),
        ];
        assert_eq!(root_templates(&rows), want);
        let index: HashMap<&str, &RunRow> = rows.iter().map(|r| (r.run_id.as_str(), r)).collect();
        let mut roots = Roots::new();
        for (r, w) in rows.iter().zip(want) {
            let (_, t) = roots
                .resolve(&r.run_id, |id| {
                    Ok(index
                        .get(id)
                        .map(|x| (x.parent_run_id.clone(), x.template.clone())))
                })
                .expect("resolve");
            assert_eq!(t.as_deref(), w, "root template of {}", r.run_id);
        }
    }

    #[test]
    fn messages_normalise() {
        assert_eq!(
            normalize_message("HTTP 503 from upstream"),
            "HTTP N from upstream"
        );
        assert_eq!(
            normalize_message("record \"Task-00001\" is locked"),
            "record \"…\" is locked"
        );
        assert_eq!(normalize_message("retry in 2.5 s"), "retry in N s");
        assert_eq!(
            normalize_message("run 0b7c2f1e-aa33-4c1b-9a43-1d2e3f4a5b6c failed"),
            "run … failed"
        );
        assert_eq!(normalize_message("can't parse"), "can't parse");
    }
}
