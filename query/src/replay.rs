//! `replay`: the events of a run's subtree as one stream, ordered by `(ts, seq)`, each with its
//! offset from the run's start — for re-reading, re-pacing or posting to another ledger.

use ledger::project::View;
use ledger::render::write_event_json;
use ledger::LogReader;

use crate::diff::not_found;
use crate::Result;

/// Seq bounds of a replay (inclusive; `None` = open), and what to add to the subtree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    /// Also the changes of the `Workflow Template` record the run names, up to its start, so
    /// that a copy can be checked (`replay --check`) on its own.
    pub with_template: bool,
}

impl Bounds {
    fn contains(&self, seq: u64) -> bool {
        self.from_seq.is_none_or(|f| seq >= f) && self.to_seq.is_none_or(|t| seq <= t)
    }
}

/// One event of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub seq: u64,
    pub ts_ms: i64,
    /// `ts_ms` minus the start of the replayed run.
    pub offset_ms: i64,
}

/// The ordered stream of a subtree.
#[derive(Debug, Clone)]
pub struct Replay {
    pub run_id: String,
    /// The replayed run's start (its first start event, else its earliest event).
    pub start_ms: i64,
    pub items: Vec<Item>,
    /// The subtree's parent links form a cycle (the walk stopped at the first run seen twice).
    pub cycle: bool,
    pub runs: usize,
}

/// The events of `run_id`'s subtree (itself included) as of the view, ordered by `(ts, seq)`.
pub fn plan(view: &View, run_id: &str, bounds: Bounds) -> Result<Replay> {
    let root = view
        .run_or_placeholder(run_id)?
        .ok_or_else(|| not_found(view, run_id))?;
    let (ids, cycle) = view.subtree_ids(run_id)?;
    let mut keys: Vec<(i64, u64)> = Vec::new();
    for id in &ids {
        for seq in view.run_event_seqs(id)? {
            if let Some(ts) = view
                .reader()
                .with_event(seq, |ev| ev.event.ts_ms.to_native())?
            {
                keys.push((ts, seq));
            }
        }
    }
    if bounds.with_template {
        let name = root.fields.template.as_ref().or(root.fields.flow.as_ref());
        if let Some(name) = name {
            let start = root.started_ms.unwrap_or(i64::MAX);
            for row in view.doc_history("Workflow Template", name)? {
                if row.ts_ms <= start {
                    keys.push((row.ts_ms, row.seq));
                }
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    let start_ms = root
        .started_ms
        .or_else(|| keys.first().map(|k| k.0))
        .unwrap_or(0);
    let items = keys
        .into_iter()
        .filter(|(_, seq)| bounds.contains(*seq))
        .map(|(ts_ms, seq)| Item {
            seq,
            ts_ms,
            offset_ms: ts_ms - start_ms,
        })
        .collect();
    Ok(Replay {
        run_id: run_id.to_owned(),
        start_ms,
        items,
        cycle,
        runs: ids.len(),
    })
}

/// The stored event as one JSON line: with `seq`, `ingested_at` and `offset_ms` when `stored`,
/// else exactly ingest format v1 (what another ledger accepts).
pub fn line(reader: &LogReader, item: &Item, stored: bool) -> Result<String> {
    let mut s = String::with_capacity(256);
    if reader
        .with_event(item.seq, |ev| write_event_json(ev, stored, &mut s))?
        .is_none()
    {
        return Err(crate::Error::Invalid(format!(
            "no event at seq {}",
            item.seq
        )));
    }
    if stored && s.ends_with('}') {
        s.pop();
        if s.len() > 1 {
            s.push(',');
        }
        s.push_str(&format!("\"offset_ms\":{}}}", item.offset_ms));
    }
    Ok(s)
}
