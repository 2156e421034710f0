//! Applies the log to the projection tables, batch by batch, each batch one transaction that
//! also records the last seq applied — so a crash loses at most an uncommitted batch, which the
//! next open applies again.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::run::{Folder, RunState};
use super::tables::*;
use crate::block;
use crate::error::Result;
use crate::event::{ArchivedBody, CheckpointStatus};
use crate::log::{Ledger, LogReader};

/// Events applied per projection transaction at most.
pub const BATCH_EVENTS: u64 = 32_768;

/// The last seq the projections have applied.
pub fn applied(ledger: &Ledger) -> Result<u64> {
    let tx = ledger.db.begin_read()?;
    applied_in(&tx)
}

pub(crate) fn applied_in(tx: &redb::ReadTransaction) -> Result<u64> {
    let meta = tx.open_table(PROJ_META)?;
    Ok(meta.get("applied")?.map_or(0, |v| v.value()))
}

/// Applies every event past the projections' watermark. Returns the new watermark.
/// `progress(applied, head)` is called after each batch.
pub fn catch_up(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    let db = ledger.write_db()?;
    // Projections written by another layout are dropped and rebuilt: they are derived.
    let version = {
        let tx = db.begin_read()?;
        let meta = tx.open_table(PROJ_META)?;
        let v = meta.get("version")?.map(|v| v.value());
        v
    };
    if version != Some(PROJECTION_VERSION) {
        let tx = db.begin_write()?;
        drop_all(&tx)?;
        tx.open_table(PROJ_META)?
            .insert("version", PROJECTION_VERSION)?;
        tx.commit()?;
    }
    loop {
        let reader = ledger.reader()?;
        let head = reader.head().seq;
        let applied = applied_in(reader.tx())?;
        if applied >= head {
            return Ok(applied);
        }
        // Never cross a checkpoint boundary inside a batch: the active set is snapshot there.
        let boundary = (applied / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY;
        let to = head.min(applied + BATCH_EVENTS).min(boundary);
        let tx = db.begin_write()?;
        apply_batch(&reader, &tx, applied + 1, to)?;
        tx.commit()?;
        progress(to, head);
    }
}

/// Drops every projection and rebuilds it from the log.
pub fn rebuild(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    let db = ledger.write_db()?;
    let tx = db.begin_write()?;
    drop_all(&tx)?;
    tx.open_table(PROJ_META)?
        .insert("version", PROJECTION_VERSION)?;
    tx.commit()?;
    catch_up(ledger, progress)
}

/// One event of a batch: its fold key and where its archive sits in the arena.
struct Slot {
    ts: i64,
    seq: u64,
    at: (usize, usize),
}

#[derive(Default)]
struct Batch {
    arena: Vec<u8>,
    runs: BTreeMap<String, Vec<Slot>>,
    /// (parent, child) -> first seq naming that parent.
    links: BTreeMap<(String, String), u64>,
    docs: Vec<(String, String, u64)>,
    completions: Vec<(i64, u64, String)>,
}

impl Batch {
    fn push(&mut self, run_id: &str, ts: i64, seq: u64, archive: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(archive);
        let slot = Slot {
            ts,
            seq,
            at: (start, self.arena.len()),
        };
        match self.runs.get_mut(run_id) {
            Some(v) => v.push(slot),
            None => {
                self.runs.insert(run_id.to_owned(), vec![slot]);
            }
        }
    }
}

fn apply_batch(reader: &LogReader, tx: &WriteTransaction, from: u64, to: u64) -> Result<()> {
    let mut b = Batch::default();
    reader.scan_entries(from, to, |seq, _, archive| {
        let ev = block::access(seq, archive)?;
        let e = &ev.event;
        let ts = e.ts_ms.to_native();
        let run_id = e.run_id.as_str();
        match &e.body {
            ArchivedBody::Started { run } | ArchivedBody::Checkpoint { run, .. } => {
                if let Some(p) = run.parent_run_id.as_ref() {
                    let key = (p.to_string(), run_id.to_owned());
                    b.links.entry(key).or_insert(seq);
                }
            }
            ArchivedBody::Doc { doctype, name, .. } => {
                b.docs.push((doctype.to_string(), name.to_string(), seq));
            }
            _ => {}
        }
        let completed = match &e.body {
            ArchivedBody::Completed { .. } => true,
            ArchivedBody::Checkpoint { status, .. } => status.get() == CheckpointStatus::Completed,
            _ => false,
        };
        if completed {
            b.completions.push((ts, seq, run_id.to_owned()));
        }
        b.push(run_id, ts, seq, archive);
        Ok(true)
    })?;

    let mut runs = tx.open_table(RUNS)?;
    let mut by_start = tx.open_table(RUNS_BY_START)?;
    let mut active = tx.open_table(ACTIVE)?;
    for (run_id, mut slots) in std::mem::take(&mut b.runs) {
        slots.sort_unstable_by_key(|s| (s.ts, s.seq));
        let old = match runs.get(run_id.as_str())? {
            Some(v) => Some(RunState::decode(v.value())?),
            None => None,
        };
        let old_key = old.as_ref().map(sort_key);
        let in_order = old
            .as_ref()
            .is_none_or(|o| o.follows(slots[0].ts, slots[0].seq));
        let state = if in_order {
            let mut folder = match old {
                Some(o) => Folder::from_state(o),
                None => Folder::new(&run_id),
            };
            for s in &slots {
                // SAFETY: the arena holds copies of archives checked by the scan above.
                folder.apply(unsafe { block::access_prechecked(&b.arena[s.at.0..s.at.1]) });
            }
            folder.finish()
        } else {
            // An event older than what was folded: fold the run again from all its events.
            let stored = old.as_ref().map_or(&[][..], |o| o.seqs.as_slice());
            refold(reader, &run_id, stored, &slots, &b.arena)?
        };
        runs.insert(run_id.as_str(), state.encode()?.as_slice())?;
        let key = sort_key(&state);
        if old_key != Some(key) {
            if let Some(k) = old_key {
                by_start.remove((k, run_id.as_str()))?;
            }
            by_start.insert((key, run_id.as_str()), ())?;
        }
        if state.is_active() {
            active.insert(run_id.as_str(), ())?;
        } else {
            active.remove(run_id.as_str())?;
        }
    }

    let mut children = tx.open_table(CHILDREN)?;
    for ((parent, child), seq) in &b.links {
        let key = (parent.as_str(), child.as_str());
        let prev = children.get(key)?.map(|v| v.value());
        if prev.is_none_or(|p| p > *seq) {
            children.insert(key, *seq)?;
        }
    }
    let mut docs = tx.open_table(DOC_EVENTS)?;
    b.docs.sort_unstable();
    for (doctype, name, seq) in &b.docs {
        docs.insert((doctype.as_str(), name.as_str(), *seq), ())?;
    }
    let mut completions = tx.open_table(COMPLETIONS)?;
    for (ts, seq, run_id) in &b.completions {
        completions.insert((*ts, *seq), run_id.as_str())?;
    }
    if to % CHECKPOINT_EVERY == 0 {
        let mut ids = Vec::new();
        for item in active.iter()? {
            let (k, _) = item?;
            ids.extend_from_slice(k.value().as_bytes());
            ids.push(b'\n');
        }
        tx.open_table(ACTIVE_AT)?.insert(to, ids.as_slice())?;
    }
    tx.open_table(PROJ_META)?.insert("applied", to)?;
    Ok(())
}

/// The time a run sorts by in listings: its start, else its end, else its last event.
pub(crate) fn sort_key(s: &RunState) -> i64 {
    s.started_ms.or(s.ended_ms).unwrap_or(s.fold_ts)
}

/// Folds a run from stored seqs plus this batch's new slots.
fn refold(
    reader: &LogReader,
    run_id: &str,
    stored: &[u64],
    slots: &[Slot],
    arena: &[u8],
) -> Result<RunState> {
    // (ts, seq, where the archive sits in the arena when it is from this batch)
    type Key = (i64, u64, Option<(usize, usize)>);
    let mut keys: Vec<Key> = Vec::new();
    for &seq in stored {
        let got = reader.with_event(seq, |ev| ev.event.ts_ms.to_native())?;
        if let Some(ts) = got {
            keys.push((ts, seq, None));
        }
    }
    for s in slots {
        keys.push((s.ts, s.seq, Some(s.at)));
    }
    keys.sort_unstable_by_key(|k| (k.0, k.1));
    let mut folder = Folder::new(run_id);
    for (_, seq, at) in keys {
        match at {
            // SAFETY: the arena holds copies of archives checked by the batch's scan.
            Some((a, z)) => folder.apply(unsafe { block::access_prechecked(&arena[a..z]) }),
            None => {
                reader.with_event(seq, |ev| folder.apply(ev))?;
            }
        }
    }
    Ok(folder.finish())
}

/// Folds a run over its events with seq ≤ `at` (time travel). `None` when it had none.
pub(crate) fn fold_until(reader: &LogReader, run: &RunState, at: u64) -> Result<Option<RunState>> {
    let mut keys = Vec::new();
    for &seq in run.seqs.iter().take_while(|&&s| s <= at) {
        if let Some(ts) = reader.with_event(seq, |ev| ev.event.ts_ms.to_native())? {
            keys.push((ts, seq));
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    keys.sort_unstable();
    let mut folder = Folder::new(&run.run_id);
    for (_, seq) in keys {
        reader.with_event(seq, |ev| folder.apply(ev))?;
    }
    Ok(Some(folder.finish()))
}
