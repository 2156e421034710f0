//! Reading the projections, as of any seq: runs, trees, record provenance, CoworkerState.
//!
//! A [`View`] is one read snapshot of the log and the projections. As of a seq `at` below the
//! projections' watermark, a run whose events all come at or before `at` is read as stored;
//! a run with later events is folded again from its events up to `at` — the same fold the
//! projector uses, so time travel equals replaying the first `at` events.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::{ReadOnlyTable, ReadableTable};
use serde_json::{json, Value};

use super::out::{to_value, NodeSummary, ShowAnswer, StateAnswer, TreeAnswer, TreeNode};
use super::plan::{fold_until, id_hash};
use super::projector::applied_in;
use super::run::{ArchivedRunState, Lifecycle, RunState, Status};
use super::tables::*;
use crate::error::{Error, Result};
use crate::event::ArchivedBody;
use crate::log::{Ledger, LogReader};
use crate::render::rfc3339;

/// Operations whose completion makes a top-level run CoworkerState's `current_run`.
const CRUD: [&str; 4] = ["select", "create", "update", "delete"];

/// One read snapshot of the log and projections, answering as of seq [`View::at`].
pub struct View {
    reader: LogReader,
    runs: ReadOnlyTable<&'static str, &'static [u8]>,
    by_start: ReadOnlyTable<(i64, &'static str), ()>,
    children: ReadOnlyTable<(&'static str, &'static str), u64>,
    docs: ReadOnlyTable<(&'static str, &'static str, u64), &'static [u8]>,
    completions: ReadOnlyTable<(i64, u64), &'static str>,
    completions_max_at: ReadOnlyTable<u64, (i64, u64)>,
    active: ReadOnlyTable<&'static str, ()>,
    active_at: ReadOnlyTable<u64, &'static [u8]>,
    at: u64,
    applied: u64,
    /// The projections file the tables above read: a rebuild may replace the ledger's while
    /// this view is open. Declared last, so it is dropped after them.
    _proj: std::sync::Arc<crate::log::Db>,
}

/// A stored run read in place (checked, not decoded).
fn stored_run(bytes: &[u8]) -> Result<&ArchivedRunState> {
    rkyv::access::<ArchivedRunState, rkyv::rancor::Error>(bytes)
        .map_err(|_| Error::DamagedProjections("a run's stored state does not decode".into()))
}

/// A stored record change read in place (checked, not decoded).
fn stored_doc_record(bytes: &[u8]) -> Result<&ArchivedDocRecord> {
    rkyv::access::<ArchivedDocRecord, rkyv::rancor::Error>(bytes)
        .map_err(|_| Error::DamagedProjections("a stored record change does not decode".into()))
}

/// The active run ids recorded at checkpoint `seq`.
fn stored_ids(seq: u64, bytes: &[u8]) -> Result<Vec<&str>> {
    decode_ids(bytes).ok_or_else(|| {
        Error::DamagedProjections(format!(
            "the active runs recorded at seq {seq} do not decode"
        ))
    })
}

/// Levels a tree answer goes down at most, whatever `--depth` says: runs below are counted in
/// `more_children` of the last level shown, and `tree` on one of them goes on from there.
/// Building, writing and freeing the nested answer take a call per level (a chain of 50,000
/// steps overflowed the stack), and at 60 levels its JSON nests ~121 deep, which common
/// parsers accept (serde_json's limit is 128).
pub const TREE_DEPTH: usize = 60;

/// Filters of `runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub operation: Option<String>,
    pub doctype: Option<String>,
    pub status: Option<Status>,
    pub template: Option<String>,
    pub owner: Option<String>,
    pub agent: Option<String>,
    /// Only runs without a parent.
    pub root: bool,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

impl RunFilter {
    pub fn matches(&self, r: &RunState) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        eq(&self.operation, &r.fields.operation)
            && eq(&self.doctype, &r.fields.doctype)
            && (self.template.is_none()
                || eq(&self.template, &r.fields.template)
                || eq(&self.template, &r.fields.flow))
            && eq(&self.owner, &r.fields.owner)
            && eq(&self.agent, &r.fields.agent)
            && self.status.is_none_or(|s| r.status() == s)
            && (!self.root || r.fields.parent_run_id.is_none())
    }
}

/// A record's change, as its history lists it.
#[derive(Debug, Clone)]
pub struct DocChangeRow {
    pub seq: u64,
    pub ts_ms: i64,
    pub kind: &'static str,
    pub run_id: String,
    pub data: Option<Value>,
    pub before: Option<Value>,
}

impl Ledger {
    /// A snapshot answering as of `at` (default: everything the projections have applied).
    /// Projections should be caught up first ([`super::catch_up`]) for answers about the head.
    pub fn view(&self, at: Option<u64>) -> Result<View> {
        // The projections' snapshot first: the log's, taken after, holds at least as much.
        let proj = self.proj();
        let tx = proj.begin_read()?;
        let applied = applied_in(&tx)?;
        let reader = self.reader()?;
        let at = at.map_or(applied, |a| a.min(applied));
        Ok(View {
            runs: tx.open_table(RUNS)?,
            by_start: tx.open_table(RUNS_BY_START)?,
            children: tx.open_table(CHILDREN)?,
            docs: tx.open_table(DOC_EVENTS)?,
            completions: tx.open_table(COMPLETIONS)?,
            completions_max_at: tx.open_table(COMPLETIONS_MAX_AT)?,
            active: tx.open_table(ACTIVE)?,
            active_at: tx.open_table(ACTIVE_AT)?,
            reader,
            at,
            applied,
            _proj: proj,
        })
    }

    /// The last seq ingested at or before `t_ms` (server time), for `--at-time`.
    pub fn seq_at_time(&self, t_ms: i64) -> Result<u64> {
        let reader = self.reader()?;
        let head = reader.head().seq;
        // ingested_at never decreases along seq within one writer; binary search over seqs.
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let t = reader
                .with_event(mid, |ev| ev.ingested_ms.to_native())?
                .unwrap_or(i64::MAX);
            if t <= t_ms {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }
}

impl View {
    /// The seq this view answers as of.
    pub fn at(&self) -> u64 {
        self.at
    }
    /// The projections' watermark.
    pub fn applied(&self) -> u64 {
        self.applied
    }
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// The run as of [`Self::at`], `None` when none of its events came by then.
    pub fn run(&self, run_id: &str) -> Result<Option<RunState>> {
        let cur = match self.runs.get(run_id)? {
            Some(v) => RunState::decode(v.value())?,
            None => return Ok(None),
        };
        if cur.last_seq <= self.at {
            return Ok(Some(cur));
        }
        if cur.first_seq > self.at {
            return Ok(None);
        }
        fold_until(&self.reader, &cur, self.at)
    }

    /// The run, or — for a run known only because a child names it as parent — an empty
    /// running placeholder. `None` when the run id was never seen.
    pub fn run_or_placeholder(&self, run_id: &str) -> Result<Option<RunState>> {
        if let Some(r) = self.run(run_id)? {
            return Ok(Some(r));
        }
        for item in self.children.range((run_id, "")..)? {
            let (k, v) = item?;
            if k.value().0 != run_id {
                break;
            }
            if v.value() <= self.at {
                return Ok(Some(RunState::new(run_id)));
            }
        }
        Ok(None)
    }

    /// The run's children as of `at`, in step order (step index, then start time).
    pub fn children(&self, run_id: &str) -> Result<Vec<RunState>> {
        self.children_with(
            run_id,
            |id| self.run(id),
            |c| c.fields.parent_run_id.as_deref(),
            |c| (c.fields.step_index, c.started_ms, c.run_id.as_str()),
        )
    }

    /// Children of `run_id` as of `at`, each read with `read`, in the order of `key`. A link
    /// is only a candidate — a later `run.started` may have moved the child — so a child is
    /// kept when its own `parent` as read is `run_id`.
    fn children_with<T>(
        &self,
        run_id: &str,
        read: impl Fn(&str) -> Result<Option<T>>,
        parent: impl Fn(&T) -> Option<&str>,
        key: impl Fn(&T) -> (Option<i64>, Option<i64>, &str),
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.children.range((run_id, "")..)? {
            let (k, v) = item?;
            let (linked_to, child) = k.value();
            if linked_to != run_id {
                break;
            }
            if v.value() > self.at {
                continue;
            }
            if let Some(c) = read(child)? {
                if parent(&c) == Some(run_id) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| key(a).cmp(&key(b)));
        Ok(out)
    }

    /// Walks `parent_run_id` up to the root: the runs from `run_id` to the root, and whether
    /// the walk met a run twice (a cycle in client-given links).
    pub fn lineage(&self, run_id: &str) -> Result<(Vec<NodeSummary>, bool)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut next = Some(run_id.to_owned());
        while let Some(id) = next {
            if !seen.insert(id.clone()) {
                return Ok((out, true));
            }
            let Some(r) = self.node_or_placeholder(&id)? else {
                // A parent that never arrived: the lineage ends at a placeholder.
                out.push(NodeSummary::of(&RunState::new(&id)));
                break;
            };
            next = r.parent_run_id.clone();
            out.push(r);
        }
        Ok((out, false))
    }

    /// Seqs of the run's events up to `at`, ordered by `(ts, seq)`.
    pub fn run_event_seqs(&self, run_id: &str) -> Result<Vec<u64>> {
        let Some(v) = self.runs.get(run_id)? else {
            return Ok(Vec::new());
        };
        let run = RunState::decode(v.value())?;
        let mut keys = Vec::new();
        for &seq in run.seqs.iter().take_while(|&&s| s <= self.at) {
            if let Some(ts) = self
                .reader
                .with_event(seq, |ev| ev.event.ts_ms.to_native())?
            {
                keys.push((ts, seq));
            }
        }
        keys.sort_unstable();
        Ok(keys.into_iter().map(|(_, s)| s).collect())
    }

    /// The run ids of the subtree under `run_id` (itself first), breadth first, and whether a
    /// cycle was met.
    pub fn subtree_ids(&self, run_id: &str) -> Result<(Vec<String>, bool)> {
        let mut seen = HashSet::new();
        let mut out = vec![run_id.to_owned()];
        seen.insert(run_id.to_owned());
        let mut cycle = false;
        let mut i = 0;
        while i < out.len() {
            let id = out[i].clone();
            for c in self.children(&id)? {
                if seen.insert(c.run_id.clone()) {
                    out.push(c.run_id);
                } else {
                    cycle = true;
                }
            }
            i += 1;
        }
        Ok((out, cycle))
    }

    /// A record's changes up to `at`, ordered by `(ts, seq)`.
    pub fn doc_history(&self, doctype: &str, name: &str) -> Result<Vec<DocChangeRow>> {
        let mut rows = Vec::new();
        for item in self
            .docs
            .range((doctype, name, 0)..=(doctype, name, self.at))?
        {
            let (k, v) = item?;
            let seq = k.value().2;
            let r = stored_doc_record(v.value())?;
            let json = |t: &rkyv::option::ArchivedOption<rkyv::string::ArchivedString>| {
                t.as_ref().and_then(|d| crate::json::value_of(d))
            };
            rows.push(DocChangeRow {
                seq,
                ts_ms: r.ts_ms.to_native(),
                kind: r.change.get().as_str(),
                run_id: r.run_id.to_string(),
                data: json(&r.data),
                before: json(&r.before),
            });
        }
        rows.sort_by_key(|r| (r.ts_ms, r.seq));
        Ok(rows)
    }

    // ---- the JSON answers of the interface ------------------------------------------------

    /// `runledger show`.
    pub fn show(&self, run_id: &str) -> Result<ShowAnswer> {
        let Some(run) = self.run_or_placeholder(run_id)? else {
            return Err(Error::NotFound(self.not_found("run", run_id)));
        };
        let children = self
            .child_nodes(run_id)?
            .into_iter()
            .map(|c| c.run_id)
            .collect();
        Ok(ShowAnswer { run, children })
    }

    /// [`Self::show`] as a JSON value.
    pub fn show_json(&self, run_id: &str) -> Result<Value> {
        to_value(&self.show(run_id)?)
    }

    fn not_found(&self, what: &str, id: &str) -> String {
        self.no(&format!("{what} {id:?}"))
    }

    /// "no `what`" as of this view.
    fn no(&self, what: &str) -> String {
        if self.at < self.applied {
            format!("no {what} as of seq {}", self.at)
        } else {
            format!("no {what} in this ledger")
        }
    }

    /// `runledger runs`: newest first by start time (else end time, else last event).
    pub fn runs_json(&self, f: &RunFilter) -> Result<Value> {
        let mut total = 0u64;
        let mut out = Vec::new();
        let mut take = |r: &RunState| {
            total += 1;
            if total as usize > f.offset && out.len() < f.limit {
                out.push(json!({
                    "run_id": r.run_id,
                    "operation": r.fields.operation,
                    "doctype": r.fields.doctype,
                    "template": r.fields.template,
                    "status": r.status().as_str(),
                    "parent_run_id": r.fields.parent_run_id,
                    "started_at": r.started_ms.map(rfc3339),
                    "duration_ms": r.duration_ms(),
                }));
            }
        };
        let in_range =
            |key: i64| f.since_ms.is_none_or(|s| key >= s) && f.until_ms.is_none_or(|u| key <= u);
        if self.at >= self.applied {
            // The index holds every run's current listing time: walk it newest first.
            let lo = (f.since_ms.unwrap_or(i64::MIN), "");
            for item in self.by_start.range(lo..)?.rev() {
                let (k, _) = item?;
                let (key, id) = k.value();
                if !in_range(key) {
                    continue;
                }
                let Some(r) = self.run(id)? else { continue };
                if f.matches(&r) {
                    take(&r);
                }
            }
        } else {
            // A run's listing time can change as later events arrive (a completion before
            // its start): order by the time known as of `at`.
            let mut rows = Vec::new();
            for item in self.by_start.iter()? {
                let (k, _) = item?;
                let Some(r) = self.run(k.value().1)? else {
                    continue;
                };
                let key = r.sort_key();
                if in_range(key) && f.matches(&r) {
                    rows.push((key, r));
                }
            }
            rows.sort_by(|a, b| (b.0, &b.1.run_id).cmp(&(a.0, &a.1.run_id)));
            for (_, r) in &rows {
                take(r);
            }
        }
        Ok(json!({"at_seq": self.at, "runs": out, "total": total}))
    }

    /// `runledger tree`.
    pub fn tree(&self, run_id: &str, depth: Option<usize>) -> Result<TreeAnswer> {
        let Some(r) = self.node_or_placeholder(run_id)? else {
            return Err(Error::NotFound(self.not_found("run", run_id)));
        };
        let mut seen = HashSet::new();
        let mut cycle = false;
        let depth = Some(depth.map_or(TREE_DEPTH, |d| d.min(TREE_DEPTH)));
        let root = self.tree_node(r, depth, &mut seen, &mut cycle)?;
        Ok(TreeAnswer { root, cycle })
    }

    /// [`Self::tree`] as a JSON value.
    pub fn tree_json(&self, run_id: &str, depth: Option<usize>) -> Result<Value> {
        to_value(&self.tree(run_id, depth)?)
    }

    fn tree_node(
        &self,
        run: NodeSummary,
        depth: Option<usize>,
        seen: &mut HashSet<String>,
        cycle: &mut bool,
    ) -> Result<TreeNode> {
        seen.insert(run.run_id.clone());
        let mut children = Vec::new();
        let mut more_children = 0usize;
        for c in self.child_nodes(&run.run_id)? {
            if seen.contains(&c.run_id) {
                *cycle = true;
                continue;
            }
            match depth {
                Some(0) => more_children += 1,
                _ => children.push(self.tree_node(c, depth.map(|d| d - 1), seen, cycle)?),
            }
        }
        Ok(TreeNode {
            run,
            children,
            more_children,
        })
    }

    /// What a tree shows of run `run_id` as of `at` (read in place when no fold is needed);
    /// `None` when it had no event by then.
    pub fn node(&self, run_id: &str) -> Result<Option<NodeSummary>> {
        let Some(v) = self.runs.get(run_id)? else {
            return Ok(None);
        };
        let bytes = v.value();
        let stored = stored_run(bytes)?;
        if stored.last_seq.to_native() <= self.at {
            return Ok(Some(NodeSummary::of_archived(stored)));
        }
        if stored.first_seq.to_native() > self.at {
            return Ok(None);
        }
        let cur = RunState::decode(bytes)?;
        Ok(fold_until(&self.reader, &cur, self.at)?.map(|r| NodeSummary::of(&r)))
    }

    /// [`Self::node`], or the placeholder of a run known only as a parent.
    fn node_or_placeholder(&self, run_id: &str) -> Result<Option<NodeSummary>> {
        match self.node(run_id)? {
            Some(n) => Ok(Some(n)),
            None => Ok(self
                .run_or_placeholder(run_id)?
                .map(|r| NodeSummary::of(&r))),
        }
    }

    /// [`Self::children`] as tree nodes, in the same order.
    fn child_nodes(&self, run_id: &str) -> Result<Vec<NodeSummary>> {
        self.children_with(
            run_id,
            |id| self.node(id),
            |c| c.parent_run_id.as_deref(),
            |c| (c.step_index, c.started_ms, c.run_id.as_str()),
        )
    }

    /// How a run stands in a lineage, with the root's template.
    fn provenance(&self, run_id: &str) -> Result<Value> {
        let (lineage, cycle) = self.lineage(run_id)?;
        let root = lineage.last();
        let steps: Vec<Value> = lineage
            .iter()
            .map(|r| {
                json!({
                    "run_id": r.run_id,
                    "operation": r.operation,
                    "step_id": r.step_id,
                })
            })
            .collect();
        Ok(json!({
            "run_id": run_id,
            "root_run": root.map(|r| r.run_id.clone()),
            "template": root.and_then(|r| r.template.clone().or(r.flow.clone())),
            "owner": root.and_then(|r| r.owner.clone()),
            "lineage": steps,
            "cycle": cycle,
        }))
    }

    /// `runledger trace DOCTYPE NAME`.
    pub fn trace_json(&self, doctype: &str, name: &str) -> Result<Value> {
        let history = self.doc_history(doctype, name)?;
        if history.is_empty() {
            return Err(Error::NotFound(
                // Each quoted: a doctype may hold spaces ("Workflow Template").
                self.no(&format!("record {name:?} of doctype {doctype:?}")),
            ));
        }
        let deleted = history.last().is_some_and(|h| h.kind == "deleted");
        let created = history.iter().rev().find(|h| h.kind == "created");
        let modified = history.last();
        let created_by = match created {
            Some(c) => self.provenance(&c.run_id)?,
            None => Value::Null,
        };
        let last_modified_by = match modified {
            Some(m) => self.provenance(&m.run_id)?,
            None => Value::Null,
        };
        let lives = history.iter().filter(|h| h.kind == "created").count();
        let rows: Vec<Value> = history
            .into_iter()
            .map(|h| {
                json!({
                    "seq": h.seq,
                    "ts": rfc3339(h.ts_ms),
                    "kind": h.kind,
                    "run_id": h.run_id,
                    "data": h.data,
                    "before": h.before,
                })
            })
            .collect();
        Ok(json!({
            "doctype": doctype,
            "name": name,
            "deleted": deleted,
            "lives": lives,
            "at_seq": self.at,
            "history": rows,
            "created_by": created_by,
            "last_modified_by": last_modified_by,
        }))
    }

    /// `runledger effects RUN_ID [--tree]`: the record changes of a run (or its subtree),
    /// ordered by `(ts, seq)`.
    pub fn effects_json(&self, run_id: &str, tree: bool) -> Result<Value> {
        if self.run_or_placeholder(run_id)?.is_none() {
            return Err(Error::NotFound(self.not_found("run", run_id)));
        }
        let (ids, cycle) = if tree {
            self.subtree_ids(run_id)?
        } else {
            (vec![run_id.to_owned()], false)
        };
        let mut changes = Vec::new();
        for id in &ids {
            for seq in self.run_event_seqs(id)? {
                let row = self.reader.with_event(seq, |ev| match &ev.event.body {
                    ArchivedBody::Doc {
                        change,
                        doctype,
                        name,
                        ..
                    } => Some((
                        ev.event.ts_ms.to_native(),
                        json!({
                            "seq": seq,
                            "ts": rfc3339(ev.event.ts_ms.to_native()),
                            "kind": change.get().as_str(),
                            "doctype": doctype.as_str(),
                            "name": name.as_str(),
                            "run_id": id,
                        }),
                    )),
                    _ => None,
                })?;
                if let Some(Some(r)) = row {
                    changes.push((r.0, seq, r.1));
                }
            }
        }
        changes.sort_by_key(|c| (c.0, c.1));
        let changes: Vec<Value> = changes.into_iter().map(|c| c.2).collect();
        Ok(json!({"run_id": run_id, "tree": tree, "cycle": cycle, "changes": changes}))
    }

    /// The ids of runs active as of `at`.
    pub fn active_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = Vec::new();
        if self.at >= self.applied {
            for item in self.active.iter()? {
                ids.push(item?.0.value().to_owned());
            }
            return Ok(ids);
        }
        // Nearest checkpoint at or before `at`, then the events after it. A run active at the
        // checkpoint is still active unless an event in between ends it; a run started in
        // between is active unless one ends it — or one before the checkpoint did (a start
        // arriving after its end, or a restart), which only its stored row tells.
        let (from, base): (u64, HashSet<String>) =
            match self.active_at.range(..=self.at)?.next_back().transpose()? {
                Some((k, v)) => (
                    k.value(),
                    stored_ids(k.value(), v.value())?
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                ),
                None => (0, HashSet::new()),
            };
        let mut started: HashSet<String> = HashSet::new();
        let mut ended: HashSet<String> = HashSet::new();
        self.reader.scan(from + 1, self.at, |_, ev| {
            let id = ev.event.run_id.as_str();
            match Lifecycle::of(&ev.event.body) {
                Lifecycle::Starts if !base.contains(id) => {
                    started.insert(id.to_owned());
                }
                Lifecycle::Ends => {
                    ended.insert(id.to_owned());
                }
                _ => {}
            }
            Ok(true)
        })?;
        ids.extend(base.into_iter().filter(|id| !ended.contains(id)));
        for id in started.into_iter().filter(|id| !ended.contains(id)) {
            // start_seq and terminal_seq never change once set (later events have larger
            // seqs), so the current row decides; it is read in place (no decoding).
            if let Some(v) = self.runs.get(id.as_str())? {
                if stored_run(v.value())?.is_active_at(self.at) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// `runledger state`: CoworkerState as of `at`.
    pub fn state(&self) -> Result<StateAnswer> {
        let mut active_runs = Vec::new();
        let mut active_pipelines: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Parents as of `at`, shared by every active run of a pipeline: each ancestor is read
        // (and, as of an earlier seq, folded) once — the active runs' own first.
        let mut parents: HashMap<String, Option<String>> = HashMap::new();
        for id in self.active_ids()? {
            let Some(r) = self.run(&id)? else { continue };
            parents.insert(id, r.fields.parent_run_id.clone());
            active_runs.push(r);
        }
        for r in &active_runs {
            let root = self.root_of(&r.run_id, &mut parents)?;
            active_pipelines
                .entry(root)
                .or_default()
                .push(r.run_id.clone());
        }
        Ok(StateAnswer {
            at_seq: self.at,
            active_runs,
            active_pipelines,
            current_run: self.current_run()?,
        })
    }

    /// [`Self::state`] as a JSON value.
    pub fn state_json(&self) -> Result<Value> {
        to_value(&self.state()?)
    }

    /// The last run of `run_id`'s lineage (as [`Self::lineage`] ends it, also on a cycle),
    /// with parents looked up through `parents`.
    fn root_of(
        &self,
        run_id: &str,
        parents: &mut HashMap<String, Option<String>>,
    ) -> Result<String> {
        let mut seen = HashSet::new();
        let mut cur = run_id.to_owned();
        let mut last = cur.clone();
        while seen.insert(cur.clone()) {
            last = cur.clone();
            let parent = match parents.get(&cur) {
                Some(p) => p.clone(),
                None => {
                    let p = self
                        .run_or_placeholder(&cur)?
                        .and_then(|r| r.fields.parent_run_id);
                    parents.insert(cur.clone(), p.clone());
                    p
                }
            };
            match parent {
                Some(p) => cur = p,
                None => break,
            }
        }
        Ok(last)
    }

    /// The latest completed top-level run whose operation is a CRUD one.
    pub fn current_run(&self) -> Result<Option<RunState>> {
        // Completions with seq ≤ `at` have keys no greater than the first checkpoint's bound
        // at or after `at`: only those between the two are skipped (past the last checkpoint,
        // the completions since it).
        let bound = if self.at >= self.applied {
            None
        } else {
            self.completions_max_at
                .range(self.at..)?
                .next()
                .transpose()?
        };
        let candidates = match bound {
            Some((_, max)) => self.completions.range(..=max.value())?,
            None => self.completions.range::<(i64, u64)>(..)?,
        };
        for item in candidates.rev() {
            let (k, v) = item?;
            let (_, seq) = k.value();
            if seq > self.at {
                continue;
            }
            // Tested on the run's summary, read in place; decoded only when it is the one.
            let Some(n) = self.node(v.value())? else {
                continue;
            };
            let crud = n.operation.as_deref().is_some_and(|o| CRUD.contains(&o));
            if crud && n.parent_run_id.is_none() && n.status == Status::Completed {
                return self.run(v.value());
            }
        }
        Ok(None)
    }
}

impl View {
    /// Checks the projections against the log: every stored run equals the fold of its events
    /// up to the watermark, every event up to the watermark is indexed under its run, and every
    /// row of the other tables reads and agrees with the runs (so damage anywhere in the file
    /// shows here, not in a later query). Returns one line per problem (at most `max`).
    pub fn check_against_log(&self, max: usize) -> Result<Vec<String>> {
        let mut problems = Problems {
            max,
            found: Vec::new(),
        };
        let mut indexed = 0u64;
        // Each run's `runs_by_start` key and activeness, by a hash of its id (an id per run
        // would double the memory at millions of runs; a collision could only hide a problem).
        let mut runs: HashMap<u64, (i64, bool)> = HashMap::new();
        for item in self.runs.iter()? {
            let (k, v) = item?;
            let id = k.value();
            let stored = RunState::decode(v.value())?;
            runs.insert(id_hash(id), (stored.sort_key(), stored.is_active()));
            let folded = fold_until(&self.reader, &stored, self.applied)?;
            indexed += u64::from(stored.events);
            if folded.as_ref() != Some(&stored)
                && problems.add(format!(
                    "run {id:?}: the projection differs from the fold of its events"
                ))
            {
                return Ok(problems.found);
            }
        }
        if indexed != self.applied {
            problems.add(format!(
                "runs account for {indexed} events but {} were applied",
                self.applied
            ));
        }
        // The other tables are read whole (damage anywhere shows); `add` keeps the first `max`.
        let known = |id: &str| runs.get(&id_hash(id)).copied();
        let mut listed = 0usize;
        for item in self.by_start.iter()? {
            let (k, _) = item?;
            let (key, id) = k.value();
            listed += 1;
            if known(id).map(|r| r.0) != Some(key) {
                problems.add(format!("runs_by_start: run {id:?} is not listed at {key}"));
            }
        }
        if listed != runs.len() {
            problems.add(format!(
                "runs_by_start lists {listed} runs where there are {}",
                runs.len()
            ));
        }
        for item in self.children.iter()? {
            let (k, _) = item?;
            let (parent, child) = k.value();
            // A parent may be known only from its children; a child has events.
            if known(child).is_none() {
                problems.add(format!(
                    "children: {parent:?} -> {child:?} names an unknown child"
                ));
            }
        }
        for item in self.docs.iter()? {
            let (k, v) = item?;
            let (doctype, name, seq) = k.value();
            let run = stored_doc_record(v.value())?.run_id.as_str();
            if known(run).is_none() || seq > self.applied {
                problems.add(format!(
                    "doc_events: {doctype:?} {name:?} at seq {seq} names an unknown run {run:?} \
                     or lies past seq {}",
                    self.applied
                ));
            }
        }
        for item in self.completions.iter()? {
            let (k, v) = item?;
            let run = v.value();
            if known(run).is_none() {
                problems.add(format!(
                    "completions: {:?} names an unknown run {run:?}",
                    k.value()
                ));
            }
        }
        let mut active = 0usize;
        for item in self.active.iter()? {
            let (k, _) = item?;
            let id = k.value();
            active += 1;
            if known(id).is_none_or(|r| !r.1) {
                problems.add(format!("active: run {id:?} is not active"));
            }
        }
        let active_runs = runs.values().filter(|r| r.1).count();
        if active != active_runs {
            problems.add(format!(
                "active lists {active} runs where {active_runs} are active"
            ));
        }
        for item in self.active_at.iter()? {
            let (k, v) = item?;
            let ids = stored_ids(k.value(), v.value())?;
            if let Some(id) = ids.iter().find(|id| known(id).is_none()) {
                problems.add(format!(
                    "active_at {}: names an unknown run {id:?}",
                    k.value()
                ));
            }
        }
        for item in self.completions_max_at.iter()? {
            item?;
        }
        Ok(problems.found)
    }
}

/// Problems found by a check, up to a limit.
struct Problems {
    max: usize,
    found: Vec<String>,
}

impl Problems {
    /// Records a problem; true when the limit is reached.
    fn add(&mut self, problem: String) -> bool {
        if self.found.len() < self.max {
            self.found.push(problem);
        }
        self.found.len() >= self.max
    }
}

impl View {
    /// Calls `f` with every run that had an event as of [`Self::at`], in run id order.
    pub fn for_each_run(&self, mut f: impl FnMut(&RunState) -> Result<()>) -> Result<()> {
        for item in self.runs.iter()? {
            let (_, v) = item?;
            let cur = RunState::decode(v.value())?;
            if cur.last_seq <= self.at {
                f(&cur)?;
            } else if cur.first_seq <= self.at {
                if let Some(r) = fold_until(&self.reader, &cur, self.at)? {
                    f(&r)?;
                }
            }
        }
        Ok(())
    }
}
