//! Applies the log to the projection tables span by span, each span one transaction that also
//! records the last seq applied — so a crash loses at most an uncommitted span, which the next
//! open applies again.
//!
//! A span is folded in memory first ([`Planner::plan`]); a second thread then only inserts its
//! sorted rows ([`write_span`]) while the next span is folded. The projections live in their own
//! file, so their write transactions never hold up the log's appends.

use std::sync::{mpsc, Arc};

use std::ops::Bound;

use redb::{CursorError, ReadableDatabase, ReadableTable, WriteTransaction};

use super::plan::{Plan, Planner};
use super::tables::*;
use crate::error::{Error, Result};
use crate::log::{
    create_projections, projections_path, rebuilding_path, Ledger, PROJECTIONS_CACHE_BYTES,
    REBUILD_CACHE_BYTES,
};

/// Events per projection transaction when catching up. Measured at 1 M events (rebuild,
/// `rebuild_profile` example): spans of 16–32 Ki events are fastest; at 256 Ki, 25 % slower
/// (a span's runs and rows no longer stay in the CPU caches), at 8 Ki, 10 % (commits).
pub const SPAN_EVENTS: u64 = 32_768;

/// The last seq the projections have applied.
pub fn applied(ledger: &Ledger) -> Result<u64> {
    applied_in(&ledger.proj().begin_read()?)
}

pub(crate) fn applied_in(tx: &redb::ReadTransaction) -> Result<u64> {
    let meta = tx.open_table(PROJ_META)?;
    Ok(meta.get("applied")?.map_or(0, |v| v.value()))
}

/// Applies every event past the projections' watermark, up to the head as it is when called,
/// in transactions of at most [`SPAN_EVENTS`]. Returns the new watermark.
/// `progress(applied, head)` is called after each committed span.
pub fn catch_up(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    catch_up_in_steps(ledger, SPAN_EVENTS, progress)
}

/// [`catch_up`] in transactions of at most `step` events: a server answering queries while it
/// ingests keeps `step` small, so that each commit makes new events visible soon.
pub fn catch_up_in_steps(
    ledger: &Ledger,
    step: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    // A panic elsewhere cannot leave the unit value half-written.
    let _one_projector = ledger.projector.lock().unwrap_or_else(|p| p.into_inner());
    let proj = ledger.proj();
    let db = proj.writable().ok_or_else(|| ledger.not_writable())?;
    catch_up_into(ledger, db, step, progress)
}

/// Rebuilds every projection from the log into a new file beside the projections
/// (`<log>.proj.rebuild`), which then replaces them: until then, views read the projections as
/// they were. A rebuild that was interrupted resumes from that file's watermark.
pub fn rebuild(ledger: &Ledger, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    rebuild_in_spans(ledger, SPAN_EVENTS, progress)
}

/// [`rebuild`] in transactions of at most `span` events.
pub fn rebuild_in_spans(
    ledger: &Ledger,
    span: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let _one_projector = ledger.projector.lock().unwrap_or_else(|p| p.into_inner());
    // Only the process that may write the projections may replace them.
    if ledger.proj().writable().is_none() {
        return Err(ledger.not_writable());
    }
    let fresh_path = rebuilding_path(ledger.path());
    let fresh = create_projections(&fresh_path, REBUILD_CACHE_BYTES)?;
    let applied = match catch_up_into(ledger, &fresh, span, progress) {
        Ok(applied) => applied,
        Err(e) if e.needs_reopen() => {
            // The storage failed (a full disk): the partial file would only hold on to the
            // space; a rebuild killed for another reason resumes from it instead.
            drop(fresh);
            let _ = std::fs::remove_file(&fresh_path);
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    // Closed, to be opened again with the cache queries want.
    drop(fresh);
    let path = projections_path(ledger.path());
    std::fs::rename(&fresh_path, &path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    ledger.replace_projections(create_projections(&path, PROJECTIONS_CACHE_BYTES)?);
    Ok(applied)
}

/// Catches the projections in `db` up to the log's head, in spans of at most `step` events.
fn catch_up_into(
    ledger: &Ledger,
    db: &redb::Database,
    step: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    // Projections written by another layout, or of another log (the log file was replaced), are
    // dropped and rebuilt: they are derived.
    if !current(ledger, &db.begin_read()?)? {
        let tx = db.begin_write()?;
        drop_all(&tx)?;
        tx.open_table(PROJ_META)?
            .insert("version", PROJECTION_VERSION)?;
        tx.commit()?;
    }
    // The projections' snapshot first: the log's, taken after, holds at least as much.
    let snapshot = db.begin_read()?;
    let applied = applied_in(&snapshot)?;
    let reader = ledger.reader()?;
    // Up to the head as of now: under a steady stream of appends, chasing the head would end in
    // a commit per handful of events.
    let head = reader.head().seq;
    if applied >= head {
        return Ok(applied);
    }
    let mut planner = Planner::new(&reader, snapshot)?;
    std::thread::scope(|scope| {
        // Rendezvous: when a plan is handed over, the writer has committed the one before.
        let (send, receive) = mpsc::sync_channel::<Arc<Plan>>(0);
        let writer = std::thread::Builder::new()
            .name("projection-writer".into())
            .spawn_scoped(scope, move || -> Result<()> {
                for plan in receive {
                    let tx = db.begin_write()?;
                    write_span(&tx, &plan)?;
                    tx.commit()?;
                }
                Ok(())
            })
            .map_err(Error::IoPlain)?;
        // Returns the end of the last span handed over.
        let mut planning = || -> Result<u64> {
            let mut last = applied;
            while last < head {
                let to = head.min(last + step.max(1));
                let plan = Arc::new(planner.plan(last + 1, to)?);
                if send.send(plan.clone()).is_err() {
                    // The writer failed; its error is the one to report.
                    break;
                }
                // Handing this span over waited for the writer to commit the one before.
                if last > applied {
                    progress(last, head);
                }
                planner.handed_over(plan, db.begin_read()?)?;
                last = to;
            }
            Ok(last)
        };
        let planned = planning();
        drop(send);
        writer
            .join()
            .map_err(|_| Error::Storage("the projection writer panicked".into()))??;
        let last = planned?;
        if last > applied {
            progress(last, head);
        }
        Ok(last)
    })
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

/// Writes a planned span, each table's rows in key order. The plan was made from the state at
/// `applied == from - 1`.
fn write_span(tx: &WriteTransaction, plan: &Plan) -> Result<()> {
    let mut meta = tx.open_table(PROJ_META)?;
    let applied = meta.get("applied")?.map_or(0, |v| v.value());
    if applied + 1 != plan.from {
        return Err(Error::Storage(format!(
            "projections moved to seq {applied} while seqs {}..={} were planned",
            plan.from, plan.to
        )));
    }
    {
        let mut runs = tx.open_table(RUNS)?;
        // Runs the table holds already are replaced in place; new ones go in through a cursor.
        let (known, new): (Vec<_>, Vec<_>) = plan.runs.iter().partition(|r| r.old_key.is_some());
        for r in known {
            runs.insert(plan.name(r.run_id), plan.state(r))?;
        }
        insert_sorted(
            &mut runs,
            new.into_iter()
                .map(|r| (plan.name(r.run_id), plan.state(r))),
        )?;
    }
    {
        let moved = plan.runs.iter().filter(|r| r.old_key != Some(r.key));
        let mut removed: Vec<(i64, &str)> = moved
            .clone()
            .filter_map(|r| Some((r.old_key?, plan.name(r.run_id))))
            .collect();
        let mut added: Vec<(i64, &str)> = moved.map(|r| (r.key, plan.name(r.run_id))).collect();
        removed.sort_unstable();
        added.sort_unstable();
        let mut by_start = tx.open_table(RUNS_BY_START)?;
        for key in removed {
            by_start.remove(key)?;
        }
        insert_sorted(&mut by_start, added.into_iter().map(|k| (k, ())))?;
    }
    {
        let mut active = tx.open_table(ACTIVE)?;
        for r in plan.runs.iter().filter(|r| r.active != r.was_active) {
            if r.active {
                active.insert(plan.name(r.run_id), ())?;
            } else {
                active.remove(plan.name(r.run_id))?;
            }
        }
    }
    {
        let mut children = tx.open_table(CHILDREN)?;
        let links = plan.links.iter();
        insert_sorted(
            &mut children,
            links.map(|&(parent, child, seq)| ((plan.name(parent), plan.name(child)), seq)),
        )?;
    }
    {
        let mut docs = tx.open_table(DOC_EVENTS)?;
        let rows = plan.docs.iter();
        insert_sorted(
            &mut docs,
            rows.map(|(doctype, name, seq, record)| {
                let key = (plan.name(*doctype), plan.name(*name), *seq);
                (key, &plan.records[record.clone()])
            }),
        )?;
    }
    {
        let mut completions = tx.open_table(COMPLETIONS)?;
        let rows = plan.completions.iter();
        insert_sorted(
            &mut completions,
            rows.map(|&(ts, seq, run_id)| ((ts, seq), plan.name(run_id))),
        )?;
    }
    {
        let mut active_at = tx.open_table(ACTIVE_AT)?;
        let mut completions_max_at = tx.open_table(COMPLETIONS_MAX_AT)?;
        for c in &plan.checkpoints {
            active_at.insert(c.seq, c.active.as_slice())?;
            // No entry while nothing has completed: `current_run` finds nothing below it either.
            if let Some(max) = c.completions_max {
                completions_max_at.insert(c.seq, max)?;
            }
        }
    }
    meta.insert("applied", plan.to)?;
    tx.open_table(PROJ_LOG)?
        .insert("applied_hash", plan.to_hash.as_slice())?;
    Ok(())
}

/// Inserts rows sorted by key (each key once), overwriting existing keys. Consecutive keys that
/// fall into one gap between the table's entries go in through a cursor, which fills leaves in
/// order instead of descending the tree for every row (a rebuild's rows mostly append: 25–40 %
/// less time). Keys scattered among existing ones gain nothing from it and pay for the seek, so
/// after a gap that took one row the next [`PLAIN_AFTER_SCATTER`] rows use `insert`.
fn insert_sorted<'r, K: redb::Key + 'static, V: redb::Value + 'static>(
    table: &mut redb::Table<K, V>,
    rows: impl IntoIterator<Item = (K::SelfType<'r>, V::SelfType<'r>)>,
) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    let mut plain = 0;
    while let Some((key, _)) = rows.peek() {
        if plain > 0 {
            plain -= 1;
            if let Some((key, value)) = rows.next() {
                table.insert(key, value)?;
            }
            continue;
        }
        let mut cursor = table.lower_bound_mut(Bound::Included(key))?;
        // Every row up to the next existing key (or the end) goes in through the cursor.
        let mut taken = 0;
        while let Some((key, value)) = rows.peek() {
            match cursor.insert_before(key, value) {
                Ok(()) => {
                    rows.next();
                    taken += 1;
                }
                Err(CursorError::UnorderedKey) => break,
                Err(e) => return Err(redb::Error::from(e).into()),
            }
        }
        cursor.close()?;
        if taken == 0 {
            // The key is already in the table (the cursor's gap is right before it).
            if let Some((key, value)) = rows.next() {
                table.insert(key, value)?;
            }
        }
        if taken <= 1 {
            plain = PLAIN_AFTER_SCATTER;
        }
    }
    Ok(())
}

/// Rows inserted one by one after a cursor's gap took at most one row (random keys into a large
/// table: the cursor then cost ~30 % more than `insert`; with this, the same).
const PLAIN_AFTER_SCATTER: usize = 32;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};

    use super::insert_sorted;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    proptest! {
        /// Sorted rows inserted through the cursor land as `insert` would put them: new keys
        /// between, before and after existing ones, existing keys overwritten, across commits.
        #[test]
        fn sorted_inserts_equal_plain_inserts(
            batches in prop::collection::vec(prop::collection::btree_map(0u16..400, any::<u64>(), 0..60), 1..6)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
            let mut model = BTreeMap::new();
            for batch in &batches {
                let rows: Vec<(String, u64)> =
                    batch.iter().map(|(k, v)| (format!("k{k:03}"), *v)).collect();
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(T).unwrap();
                    insert_sorted(&mut t, rows.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
                }
                tx.commit().unwrap();
                model.extend(rows);
            }
            let tx = db.begin_read().unwrap();
            let t = tx.open_table(T).unwrap();
            let stored: BTreeMap<String, u64> = t
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_owned(), v.value())
                })
                .collect();
            prop_assert_eq!(stored, model);
        }
    }
}
