//! Applies the log to the projection tables span by span, each span one transaction that also
//! records the last seq applied — so a crash loses at most an uncommitted span, which the next
//! open applies again.
//!
//! A span is folded in memory first ([`Planner::plan`]); a second thread then only inserts its
//! sorted rows ([`write_span`]) while the next span is folded. The projections live in their own
//! file, so their write transactions never hold up the log's appends.

use std::sync::{mpsc, Arc};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::plan::{Plan, Planner};
use super::tables::*;
use crate::error::{Error, Result};
use crate::log::{create_projections, projections_path, rebuilding_path, Ledger};

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
    catch_up_into(ledger, proj.writable(ledger.path())?, step, progress)
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
    ledger.proj().writable(ledger.path())?;
    let fresh_path = rebuilding_path(ledger.path());
    let fresh = create_projections(&fresh_path)?;
    let applied = catch_up_into(ledger, &fresh, span, progress)?;
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
    ledger.replace_projections(fresh);
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
        for r in &plan.runs {
            runs.insert(r.run_id.as_str(), plan.state(r))?;
        }
    }
    {
        let moved = plan.runs.iter().filter(|r| r.old_key != Some(r.key));
        let mut removed: Vec<(i64, &str)> = moved
            .clone()
            .filter_map(|r| Some((r.old_key?, r.run_id.as_str())))
            .collect();
        let mut added: Vec<(i64, &str)> = moved.map(|r| (r.key, r.run_id.as_str())).collect();
        removed.sort_unstable();
        added.sort_unstable();
        let mut by_start = tx.open_table(RUNS_BY_START)?;
        for key in removed {
            by_start.remove(key)?;
        }
        for key in added {
            by_start.insert(key, ())?;
        }
    }
    {
        let mut active = tx.open_table(ACTIVE)?;
        for r in plan.runs.iter().filter(|r| r.active != r.was_active) {
            if r.active {
                active.insert(r.run_id.as_str(), ())?;
            } else {
                active.remove(r.run_id.as_str())?;
            }
        }
    }
    {
        let mut children = tx.open_table(CHILDREN)?;
        for ((parent, child), seq) in &plan.links {
            children.insert((parent.as_str(), child.as_str()), *seq)?;
        }
    }
    {
        let mut docs = tx.open_table(DOC_EVENTS)?;
        for (doctype, name, seq, record) in &plan.docs {
            docs.insert((doctype.as_str(), name.as_str(), *seq), record.as_slice())?;
        }
    }
    {
        let mut completions = tx.open_table(COMPLETIONS)?;
        for (ts, seq, run_id) in &plan.completions {
            completions.insert((*ts, *seq), run_id.as_str())?;
        }
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
