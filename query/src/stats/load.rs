//! Reading runs for statistics: every run of a view (on several threads), and their roots.

use std::collections::{HashMap, HashSet};

use ledger::project::{RunState, View};
use ledger::Ledger;
use serde_json::Value;

use super::RunRow;
use crate::error::Result;

/// The message of a stored error object (JSON text); the text itself when it is not an object.
pub fn error_message(error: Option<&str>) -> String {
    let Some(text) = error else {
        return String::new();
    };
    match ledger::json::value_of(text) {
        Some(Value::Object(m)) => match m.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => text.to_owned(),
        },
        Some(Value::String(s)) => s,
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
pub fn for_each_run(view: &View, mut f: impl FnMut(&RunState) -> Result<()>) -> Result<()> {
    let mut err = None;
    view.for_each_run(|r| {
        if let Err(e) = f(r) {
            err = Some(e);
            return Err(ledger::Error::Invalid("stopped".into()));
        }
        Ok(())
    })
    .or_else(|e| if err.is_some() { Ok(()) } else { Err(e) })?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
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

/// [`load_rows`] over a view of `ledger` as of `at`; returns the seq answered as of and the rows.
pub fn load_rows_at(ledger: &Ledger, at: Option<u64>) -> Result<(u64, Vec<RunRow>)> {
    let view = ledger.view(at)?;
    Ok((view.at(), load_rows(&view)?))
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
pub(super) fn root_templates(rows: &[RunRow]) -> Vec<Option<&str>> {
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
