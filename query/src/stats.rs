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

use std::collections::{BTreeMap, HashMap, HashSet};

use ledger::project::{RunState, Status, View};
use ledger::render::rfc3339;
use ledger::Ledger;
use serde_json::{json, Value};

use crate::error::{Error, Result};

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

/// The message of a stored error object (JSON text); the text itself when it is not an object.
pub fn error_message(error: Option<&str>) -> String {
    let Some(text) = error else {
        return String::new();
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => match m.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => text.to_owned(),
        },
        Ok(Value::String(s)) => s,
        _ => text.to_owned(),
    }
}

/// The ids of the runs that have events in `from..=to` (clamped to the view's seq), in order
/// of their first event there.
pub fn run_ids_touched(view: &View, from: u64, to: u64) -> Result<Vec<String>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut ids = Vec::new();
    view.reader().scan(from, to.min(view.at()), |_, ev| {
        let id = ev.event.run_id.as_str();
        if !seen.contains(id) {
            seen.insert(id.to_owned());
            ids.push(id.to_owned());
        }
        Ok(true)
    })?;
    Ok(ids)
}

/// Calls `f` with every run that has an event as of the view's seq.
///
/// Runs are found by one scan of the log (the projections have no run-by-id iteration that is
/// public), then read from the runs projection.
pub fn for_each_run(view: &View, mut f: impl FnMut(&RunState) -> Result<()>) -> Result<()> {
    let mut ids = run_ids_touched(view, 1, view.at())?;
    // In key order: neighbouring runs share B-tree pages.
    ids.sort_unstable();
    for id in ids {
        if let Some(r) = view.run(&id)? {
            f(&r)?;
        }
    }
    Ok(())
}

/// Every run as a [`RunRow`].
pub fn load_rows(view: &View) -> Result<Vec<RunRow>> {
    let mut rows = Vec::new();
    for_each_run(view, |r| {
        rows.push(RunRow::from_state(r));
        Ok(())
    })?;
    Ok(rows)
}

/// Like [`load_rows`] over a view of `ledger` as of `at`, on several threads (each with its own
/// read snapshot of the same seq): the log scan is split by seq range, then the runs are read in
/// chunks. Returns the seq answered as of and the rows.
pub fn load_rows_parallel(ledger: &Ledger, at: Option<u64>) -> Result<(u64, Vec<RunRow>)> {
    let view = ledger.view(at)?;
    let at = view.at();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || at < 20_000 {
        return Ok((at, load_rows(&view)?));
    }
    drop(view);
    let step = at.div_ceil(threads as u64);
    let ranges: Vec<(u64, u64)> = (0..threads as u64)
        .map(|i| (i * step + 1, ((i + 1) * step).min(at)))
        .collect();
    let parts = in_threads(ranges, |(from, to)| {
        run_ids_touched(&ledger.view(Some(at))?, from, to)
    })?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    for id in parts.into_iter().flatten() {
        if !seen.contains(&id) {
            seen.insert(id.clone());
            ids.push(id);
        }
    }
    drop(seen);
    ids.sort_unstable();
    let chunk = ids.len().div_ceil(threads).max(1);
    let chunks: Vec<&[String]> = ids.chunks(chunk).collect();
    let rows = in_threads(chunks, |ids| {
        let view = ledger.view(Some(at))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = view.run(id)? {
                out.push(RunRow::from_state(&r));
            }
        }
        Ok(out)
    })?;
    Ok((at, rows.into_iter().flatten().collect()))
}

/// Runs `f` on each input in its own scoped thread; the outputs in input order.
fn in_threads<I: Send, O: Send>(
    inputs: Vec<I>,
    f: impl Fn(I) -> Result<O> + Sync,
) -> Result<Vec<O>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .into_iter()
            .map(|i| {
                let f = &f;
                s.spawn(move || f(i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| Error::Invalid("a stats thread panicked".into()))?
            })
            .collect()
    })
}

/// Resolves runs to their root (following `parent_run_id` until a run has none, stopping at the
/// first run seen twice, like [`View::lineage`]) and the root's template, with memoisation.
#[derive(Default)]
pub struct Roots {
    memo: HashMap<String, (String, Option<String>)>,
}

/// What [`Roots`] needs to know of a run: its parent and its template (or flow); `None` for a
/// run that never had an event.
pub type Links = Option<(Option<String>, Option<String>)>;

impl Roots {
    pub fn new() -> Self {
        Roots::default()
    }

    /// The root run id of `id` and the root's template; `links` tells a run's parent and
    /// template.
    pub fn resolve(
        &mut self,
        id: &str,
        mut links: impl FnMut(&str) -> Result<Links>,
    ) -> Result<(String, Option<String>)> {
        if let Some(r) = self.memo.get(id) {
            return Ok(r.clone());
        }
        let mut path: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut cur = id.to_owned();
        let mut cycle = false;
        let result = loop {
            if let Some(r) = self.memo.get(&cur) {
                break r.clone();
            }
            seen.insert(cur.clone());
            path.push(cur.clone());
            match links(&cur)? {
                None => break (cur, None),
                Some((None, template)) => break (cur, template),
                Some((Some(parent), template)) => {
                    if seen.contains(&parent) {
                        cycle = true;
                        break (cur, template);
                    }
                    cur = parent;
                }
            }
        };
        // The root of a run on a cycle depends on where the walk started: not memoised.
        if !cycle {
            for p in path {
                self.memo.insert(p, result.clone());
            }
        }
        Ok(result)
    }

    /// Like [`Self::resolve`], reading runs from a view.
    pub fn resolve_in(&mut self, view: &View, id: &str) -> Result<(String, Option<String>)> {
        self.resolve(id, |rid| {
            Ok(view.run(rid)?.map(|r| {
                let t = r.fields.template.clone().or_else(|| r.fields.flow.clone());
                (r.fields.parent_run_id.clone(), t)
            }))
        })
    }

    /// Like [`Self::resolve_in`] for a run already read: `run` itself is not read again.
    pub fn resolve_run(&mut self, view: &View, run: &RunState) -> Result<(String, Option<String>)> {
        let f = &run.fields;
        let mut first = Some((
            f.parent_run_id.clone(),
            f.template.clone().or_else(|| f.flow.clone()),
        ));
        self.resolve(&run.run_id, |rid| {
            if rid == run.run_id {
                if let Some(links) = first.take() {
                    return Ok(Some(links));
                }
            }
            Ok(view.run(rid)?.map(|r| {
                let t = r.fields.template.clone().or_else(|| r.fields.flow.clone());
                (r.fields.parent_run_id.clone(), t)
            }))
        })
    }
}

/// The template of every row's root, by row index: [`Roots`]' walk (the same answer as
/// [`View::lineage`]) over row indexes, memoised.
fn root_templates(rows: &[RunRow]) -> Vec<Option<&str>> {
    enum Up {
        Root,
        /// The parent never had an event: it is the root, without a template.
        Missing,
        Parent(usize),
    }
    let index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.run_id.as_str(), i))
        .collect();
    let up: Vec<Up> = rows
        .iter()
        .map(|r| match &r.parent_run_id {
            None => Up::Root,
            Some(p) => index
                .get(p.as_str())
                .map_or(Up::Missing, |&i| Up::Parent(i)),
        })
        .collect();
    drop(index);
    // memo[i]: Some(root index) or Some(None) for a missing root; stamp: the walk that saw i.
    let mut memo: Vec<Option<Option<usize>>> = vec![None; rows.len()];
    let mut out: Vec<Option<usize>> = vec![None; rows.len()];
    let mut stamp: Vec<usize> = vec![usize::MAX; rows.len()];
    let mut path: Vec<usize> = Vec::new();
    for i in 0..rows.len() {
        if let Some(r) = memo[i] {
            out[i] = r;
            continue;
        }
        path.clear();
        let mut cur = i;
        let mut cycle = false;
        let root = loop {
            if let Some(r) = memo[cur] {
                break r;
            }
            stamp[cur] = i;
            path.push(cur);
            match up[cur] {
                Up::Root => break Some(cur),
                Up::Missing => break None,
                Up::Parent(p) if stamp[p] == i => {
                    cycle = true;
                    break Some(cur);
                }
                Up::Parent(p) => cur = p,
            }
        };
        // The root of a run on a cycle depends on where the walk started: not memoised.
        if !cycle {
            for &p in &path {
                memo[p] = Some(root);
            }
        }
        out[i] = root;
    }
    out.into_iter()
        .map(|r| r.and_then(|r| rows[r].template.as_deref()))
        .collect()
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
        Some(root_templates(rows))
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

/// Normalises an error message so that failures differing only in numbers, quoted values and
/// ids group together: quoted strings (`"…"`, `'…'`, `` `…` ``) become `"…"`; words that mix
/// digits with letters or separators (ids such as `Task-00042`, `r_17`, UUIDs, hex) become `…`;
/// remaining numbers (with `.`/`,` inside) become `N`.
///
/// # Example
/// ```
/// use query::stats::normalize_message;
/// assert_eq!(normalize_message("timeout after 30000ms"), "timeout after Nms");
/// assert_eq!(normalize_message("Task-00042 not found"), "… not found");
/// assert_eq!(normalize_message("no field 'due' in Task"), "no field '…' in Task");
/// ```
pub fn normalize_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let chars: Vec<char> = msg.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            // A quote closes on the same character; an apostrophe inside a word is not a quote.
            let in_word = c == '\'' && i > 0 && chars[i - 1].is_alphanumeric();
            if let Some(len) = chars[i + 1..].iter().position(|&d| d == c) {
                if !in_word {
                    out.push(c);
                    out.push('…');
                    out.push(c);
                    i += len + 2;
                    continue;
                }
            }
            out.push(c);
            i += 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '-' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push_str(&normalize_word(&word));
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Numbers like 2.5 or 1,000 became N.N / N,N: fold them into one N.
    let mut folded = out.replace("N.N", "N").replace("N,N", "N");
    while folded.contains("N.N") || folded.contains("N,N") {
        folded = folded.replace("N.N", "N").replace("N,N", "N");
    }
    folded
}

fn normalize_word(word: &str) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    if digits == 0 {
        return word.to_owned();
    }
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    let seps = word.chars().filter(|c| matches!(c, '_' | '-')).count();
    let is_hex = word.len() >= 8 && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    // A number with a unit: 30000ms, 5s, 2xx.
    let unit = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let with_unit = unit.len() <= 3 && unit.chars().all(|c| c.is_ascii_alphabetic());
    // An id: digits mixed with separators (Task-00042, r_17, uuid), long hex, or letters and
    // many digits (abc12345).
    if !with_unit && (is_hex || (seps > 0 && letters > 0) || (letters > 0 && digits >= 4)) {
        return "…".to_owned();
    }
    // Otherwise each run of digits is a number: 30000ms → Nms, 503 → N.
    let mut s = String::new();
    let mut prev_digit = false;
    for ch in word.chars() {
        if ch.is_ascii_digit() {
            if !prev_digit {
                s.push('N');
            }
            prev_digit = true;
        } else {
            s.push(ch);
            prev_digit = false;
        }
    }
    s
}

/// `runledger stats --errors`: failed runs grouped by normalised message, most frequent first:
/// `{"failed","errors":[{"message","count","example_run_id","example_message","operations"}]}`.
pub fn errors_json(rows: &[RunRow], range: TimeRange) -> Value {
    struct E<'a> {
        count: u64,
        example: &'a RunRow,
        ops: BTreeMap<&'a str, u64>,
    }
    let mut groups: HashMap<String, E> = HashMap::new();
    let mut failed = 0u64;
    for r in rows {
        if r.status != Status::Failed || !range.contains(r.time_ms()) {
            continue;
        }
        failed += 1;
        let key = normalize_message(r.error.as_deref().unwrap_or(""));
        let e = groups.entry(key).or_insert(E {
            count: 0,
            example: r,
            ops: BTreeMap::new(),
        });
        e.count += 1;
        *e.ops
            .entry(r.operation.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    let mut out: Vec<(String, E)> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    let errors: Vec<Value> = out
        .into_iter()
        .map(|(msg, e)| {
            json!({
                "message": msg,
                "count": e.count,
                "example_run_id": e.example.run_id,
                "example_message": e.example.error,
                "operations": e.ops,
            })
        })
        .collect();
    json!({"failed": failed, "errors": errors})
}

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

#[cfg(test)]
mod tests {
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
