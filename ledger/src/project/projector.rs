//! Applies the log to the projection tables, batch by batch, each batch one transaction that
//! also records the last seq applied — so a crash loses at most an uncommitted batch, which the
//! next open applies again.
//!
//! A batch is folded from a read snapshot first ([`plan_batch`]); the write transaction then
//! only inserts ([`write_batch`]). redb has one write lock for the whole file, shared with the
//! log's appends: keeping the fold outside it keeps appends (and HTTP acknowledgements) from
//! waiting on the projector's CPU work.

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
    applied_in(&ledger.proj.begin_read()?)
}

pub(crate) fn applied_in(tx: &redb::ReadTransaction) -> Result<u64> {
    let meta = tx.open_table(PROJ_META)?;
    Ok(meta.get("applied")?.map_or(0, |v| v.value()))
}

/// Applies every event past the projections' watermark, up to the head as it is when called,
/// in transactions of at most [`BATCH_EVENTS`]. Returns the new watermark.
/// `progress(applied, head)` is called after each batch.
pub fn catch_up(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    catch_up_in_steps(ledger, BATCH_EVENTS, progress)
}

/// [`catch_up`] in transactions of at most `step` events. Each transaction holds redb's write
/// lock, which appends need too, for about a microsecond per event plus a commit: a server
/// acknowledging appends keeps `step` small so that appends never wait long.
pub fn catch_up_in_steps(
    ledger: &Ledger,
    step: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let db = ledger.proj_write_db()?;
    // A panic elsewhere cannot leave the unit value half-written.
    let _one_projector = ledger.projector.lock().unwrap_or_else(|p| p.into_inner());
    // Projections written by another layout, or of another log (the log file was replaced), are
    // dropped and rebuilt: they are derived.
    if !current(ledger, &db.begin_read()?)? {
        let tx = db.begin_write()?;
        drop_all(&tx)?;
        tx.open_table(PROJ_META)?
            .insert("version", PROJECTION_VERSION)?;
        tx.commit()?;
    }
    // Up to the head as of now: under a steady stream of appends, chasing the head would end in
    // a commit per handful of events.
    let head = ledger.head()?.seq;
    loop {
        // The projections' snapshot first: the log's, taken after, holds at least as much.
        let ptx = db.begin_read()?;
        let applied = applied_in(&ptx)?;
        let reader = ledger.reader()?;
        if applied >= head {
            return Ok(applied);
        }
        // Never cross a checkpoint boundary inside a batch: the active set is snapshot there.
        let boundary = (applied / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY;
        let to = head.min(applied + step.max(1)).min(boundary);
        let plan = plan_batch(&reader, &ptx, applied + 1, to)?;
        drop((reader, ptx));
        let tx = db.begin_write()?;
        write_batch(&tx, &plan)?;
        tx.commit()?;
        progress(to, head);
    }
}

/// Drops every projection and rebuilds it from the log.
pub fn rebuild(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    let db = ledger.proj_write_db()?;
    {
        let _one_projector = ledger.projector.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.begin_write()?;
        drop_all(&tx)?;
        tx.open_table(PROJ_META)?
            .insert("version", PROJECTION_VERSION)?;
        tx.commit()?;
    }
    catch_up(ledger, progress)
}

/// Whether the projections in `tx` were written by this layout from this log: the version
/// matches, they applied no more than the log holds, and the log's chain hash at their
/// watermark is the one they recorded.
fn current(ledger: &Ledger, tx: &redb::ReadTransaction) -> Result<bool> {
    let meta = tx.open_table(PROJ_META)?;
    if meta.get("version")?.map(|v| v.value()) != Some(PROJECTION_VERSION) {
        return Ok(false);
    }
    let applied = meta.get("applied")?.map_or(0, |v| v.value());
    if applied == 0 {
        return Ok(true);
    }
    let recorded = tx
        .open_table(PROJ_LOG)?
        .get("applied_hash")?
        .map(|v| v.value().to_vec());
    let mut actual = None;
    ledger.reader()?.scan(applied, applied, |hash, _| {
        actual = Some(hash.to_vec());
        Ok(false)
    })?;
    Ok(actual.is_some() && actual == recorded)
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
    docs: Vec<(String, String, u64, Vec<u8>)>,
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

/// Everything one batch changes in the projection tables, worked out from a read snapshot so
/// that the write transaction (which holds redb's single write lock, and so holds up appends)
/// only inserts.
struct Plan {
    from: u64,
    to: u64,
    /// The log's chain hash at `to`.
    to_hash: block::Hash,
    runs: Vec<RunWrite>,
    /// (parent, child) links new or seen earlier than recorded.
    links: Vec<((String, String), u64)>,
    /// (doctype, name, seq, encoded [`DocRecord`]).
    docs: Vec<(String, String, u64, Vec<u8>)>,
    completions: Vec<(i64, u64, String)>,
    /// The active set after the batch, when `to` is a checkpoint.
    active_at: Option<Vec<u8>>,
    /// The greatest `completions` key after the batch, when `to` is a checkpoint and some run
    /// has completed.
    completions_max_at: Option<(i64, u64)>,
}

struct RunWrite {
    run_id: String,
    state: Vec<u8>,
    old_key: Option<i64>,
    key: i64,
    active: bool,
}

/// Folds events `from..=to` over the projections as of snapshot `tx` (which has applied up to
/// `from - 1`).
fn plan_batch(reader: &LogReader, tx: &redb::ReadTransaction, from: u64, to: u64) -> Result<Plan> {
    let mut b = Batch::default();
    let mut to_hash = [0; 32];
    reader.scan_entries(from, to, |seq, hash, archive| {
        to_hash = *hash;
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
            ArchivedBody::Doc {
                change,
                doctype,
                name,
                data,
                before,
            } => {
                let record = DocRecord {
                    ts_ms: ts,
                    change: change.get(),
                    run_id: run_id.to_owned(),
                    data: data.as_ref().map(|d| d.to_string()),
                    before: before.as_ref().map(|d| d.to_string()),
                };
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&record)?.to_vec();
                b.docs
                    .push((doctype.to_string(), name.to_string(), seq, bytes));
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

    let runs_table = tx.open_table(RUNS)?;
    let mut runs = Vec::with_capacity(b.runs.len());
    for (run_id, mut slots) in std::mem::take(&mut b.runs) {
        slots.sort_unstable_by_key(|s| (s.ts, s.seq));
        let old = match runs_table.get(run_id.as_str())? {
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
        runs.push(RunWrite {
            state: state.encode()?,
            old_key,
            key: sort_key(&state),
            active: state.is_active(),
            run_id,
        });
    }

    let children = tx.open_table(CHILDREN)?;
    let mut links = Vec::with_capacity(b.links.len());
    for ((parent, child), seq) in std::mem::take(&mut b.links) {
        let prev = children
            .get((parent.as_str(), child.as_str()))?
            .map(|v| v.value());
        if prev.is_none_or(|p| p > seq) {
            links.push(((parent, child), seq));
        }
    }
    b.docs.sort_unstable();

    let checkpoint = to % CHECKPOINT_EVERY == 0;
    let completions_max_at = if checkpoint {
        let before = tx.open_table(COMPLETIONS)?.last()?.map(|(k, _)| k.value());
        b.completions
            .iter()
            .map(|&(ts, seq, _)| (ts, seq))
            .chain(before)
            .max()
    } else {
        None
    };
    let active_at = if checkpoint {
        let mut set = std::collections::BTreeSet::new();
        for item in tx.open_table(ACTIVE)?.iter()? {
            set.insert(item?.0.value().to_owned());
        }
        for r in &runs {
            if r.active {
                set.insert(r.run_id.clone());
            } else {
                set.remove(&r.run_id);
            }
        }
        let mut ids = Vec::new();
        for id in set {
            ids.extend_from_slice(id.as_bytes());
            ids.push(b'\n');
        }
        Some(ids)
    } else {
        None
    };
    Ok(Plan {
        from,
        to,
        to_hash,
        runs,
        links,
        docs: b.docs,
        completions: b.completions,
        active_at,
        completions_max_at,
    })
}

/// Writes a planned batch. The plan was made from the snapshot at `applied == from - 1`.
fn write_batch(tx: &WriteTransaction, plan: &Plan) -> Result<()> {
    let mut meta = tx.open_table(PROJ_META)?;
    let applied = meta.get("applied")?.map_or(0, |v| v.value());
    if applied + 1 != plan.from {
        return Err(crate::Error::Storage(format!(
            "projections moved to seq {applied} while seqs {}..={} were planned",
            plan.from, plan.to
        )));
    }
    let mut runs = tx.open_table(RUNS)?;
    let mut by_start = tx.open_table(RUNS_BY_START)?;
    let mut active = tx.open_table(ACTIVE)?;
    for r in &plan.runs {
        let id = r.run_id.as_str();
        runs.insert(id, r.state.as_slice())?;
        if r.old_key != Some(r.key) {
            if let Some(k) = r.old_key {
                by_start.remove((k, id))?;
            }
            by_start.insert((r.key, id), ())?;
        }
        if r.active {
            active.insert(id, ())?;
        } else {
            active.remove(id)?;
        }
    }
    let mut children = tx.open_table(CHILDREN)?;
    for ((parent, child), seq) in &plan.links {
        children.insert((parent.as_str(), child.as_str()), *seq)?;
    }
    let mut docs = tx.open_table(DOC_EVENTS)?;
    for (doctype, name, seq, record) in &plan.docs {
        docs.insert((doctype.as_str(), name.as_str(), *seq), record.as_slice())?;
    }
    let mut completions = tx.open_table(COMPLETIONS)?;
    for (ts, seq, run_id) in &plan.completions {
        completions.insert((*ts, *seq), run_id.as_str())?;
    }
    if let Some(ids) = &plan.active_at {
        tx.open_table(ACTIVE_AT)?.insert(plan.to, ids.as_slice())?;
    }
    // No entry while nothing has completed: `current_run` finds nothing below it either.
    if let Some(max) = plan.completions_max_at {
        tx.open_table(COMPLETIONS_MAX_AT)?.insert(plan.to, max)?;
    }
    meta.insert("applied", plan.to)?;
    tx.open_table(PROJ_LOG)?
        .insert("applied_hash", plan.to_hash.as_slice())?;
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
    let mut own = Vec::new();
    // (ts, seq, span, whether the span is in this batch's arena)
    let mut keys: Vec<(i64, u64, (usize, usize), bool)> =
        gather(reader, stored.iter().copied(), &mut own)?
            .into_iter()
            .map(|(ts, seq, span)| (ts, seq, span, false))
            .collect();
    keys.extend(slots.iter().map(|s| (s.ts, s.seq, s.at, true)));
    keys.sort_unstable_by_key(|k| (k.0, k.1));
    let mut folder = Folder::new(run_id);
    for (_, _, (a, z), in_batch) in keys {
        let bytes = if in_batch { arena } else { &own[..] };
        // SAFETY: both arenas hold copies of archives checked by `block::access`.
        folder.apply(unsafe { block::access_prechecked(&bytes[a..z]) });
    }
    Ok(folder.finish())
}

/// Folds a run over its events with seq ≤ `at` (time travel). `None` when it had none.
pub(crate) fn fold_until(reader: &LogReader, run: &RunState, at: u64) -> Result<Option<RunState>> {
    let mut arena = Vec::new();
    let seqs = run.seqs.iter().copied().take_while(|&s| s <= at);
    let mut keys = gather(reader, seqs, &mut arena)?;
    if keys.is_empty() {
        return Ok(None);
    }
    keys.sort_unstable_by_key(|k| (k.0, k.1));
    let mut folder = Folder::new(&run.run_id);
    for (_, _, (a, z)) in keys {
        // SAFETY: `gather` copied these bytes after `block::access` checked them.
        folder.apply(unsafe { block::access_prechecked(&arena[a..z]) });
    }
    Ok(Some(folder.finish()))
}

/// `(ts, seq, span in an arena)` of one event.
type Gathered = (i64, u64, (usize, usize));

/// Reads each event of `seqs` once — checked, then copied into `arena` — and returns its fold
/// key and where it sits: `(ts, seq, span in the arena)`. Seqs past the head are skipped.
fn gather(
    reader: &LogReader,
    seqs: impl Iterator<Item = u64>,
    arena: &mut Vec<u8>,
) -> Result<Vec<Gathered>> {
    let mut keys = Vec::new();
    for seq in seqs {
        let got = reader.with_archive(seq, |archive| -> Result<(i64, (usize, usize))> {
            let ts = block::access(seq, archive)?.event.ts_ms.to_native();
            let start = arena.len();
            arena.extend_from_slice(archive);
            Ok((ts, (start, arena.len())))
        })?;
        if let Some(found) = got {
            let (ts, span) = found?;
            keys.push((ts, seq, span));
        }
    }
    Ok(keys)
}
