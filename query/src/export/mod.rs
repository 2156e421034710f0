//! `runledger export`: the log as tables for DuckDB, Spark or anything that reads Parquet,
//! NDJSON or CSV.
//!
//! # Layout
//! `DIR/<table>/date=YYYY-MM-DD/part-<first seq>-<last seq>.<ext>` for the tables `runs`,
//! `events` and `doc_changes` ([`table`]), partitioned by the UTC day of the event's `ts` (for a
//! run: of its start, else its end, else its first event), plus `DIR/manifest.json`
//! ([`manifest::Manifest`]). `<first seq>-<last seq>` is the seq range of the export that wrote
//! the file, so exports never overwrite each other's files.
//!
//! # Incremental exports
//! Without `since_seq`, an export continues after the last seq recorded in the manifest: it
//! writes the events with a larger seq, their record changes, and every run those events touched
//! — as the run stands at the export's last seq. A run touched again later is written again in a
//! newer part; its newest row is the one with the largest `last_seq`.
//!
//! `since_ms`/`until_ms` keep only rows whose time (the partition time above) is in the range;
//! the manifest's seq still advances to the export's last seq.

/// An I/O error naming the file or directory it happened on (a bare "No such file or
/// directory" said neither which nor where).
fn at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        ledger::Error::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

pub mod manifest;
pub mod parquet;
pub mod table;
pub mod writer;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use ledger::event::ArchivedBody;
use ledger::project::{RunState, View};
use ledger::render::{rfc3339, write_event_json};
use ledger::Ledger;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::stats::Roots;
use manifest::{ExportRecord, FileEntry, Manifest};
use table::{Cell, Row, DOC_CHANGES, EVENTS, RUNS};
use writer::{utc_day, Format, Sink};

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub out: PathBuf,
    /// Rows whose time is at or after this (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Rows whose time is at or before this.
    pub until_ms: Option<i64>,
    /// Export the events after this seq (default: after the manifest's `last_seq`).
    pub since_seq: Option<u64>,
}

impl ExportOptions {
    fn keeps(&self, t: i64) -> bool {
        self.since_ms.is_none_or(|s| t >= s) && self.until_ms.is_none_or(|u| t <= u)
    }
}

/// Exports the events after the last exported seq up to the view's seq, and updates the
/// manifest. Returns `{"out","format","from_seq","to_seq","rows":{table:n},"files":[…],
/// "total_rows":{table:n}}` (`files`: the files written by this export).
///
/// # Errors
/// I/O errors; [`Error::BadQuery`] when the directory holds an export in another format.
pub fn export(ledger: &Ledger, opts: &ExportOptions) -> Result<Value> {
    let view = ledger.view(None)?;
    std::fs::create_dir_all(&opts.out).map_err(at(&opts.out))?;
    let mut manifest = match Manifest::load(&opts.out)? {
        Some(m) if m.format != opts.format.as_str() => {
            return Err(Error::BadQuery(format!(
                "{} holds a {} export; export {} to another directory",
                opts.out.display(),
                m.format,
                opts.format.as_str()
            )))
        }
        Some(m) => m,
        None => Manifest::new(opts.format.as_str()),
    };
    let from = opts.since_seq.unwrap_or(manifest.last_seq) + 1;
    let to = view.at();
    let mut files: Vec<FileEntry> = Vec::new();
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    if from <= to {
        files = write_range(ledger, &view, opts, from, to)?;
        for f in &files {
            *rows.entry(f.table.clone()).or_default() += f.rows;
        }
        manifest.add_files(&files);
        manifest.last_seq = manifest.last_seq.max(to);
        manifest.exports.push(ExportRecord {
            from_seq: from,
            to_seq: to,
            exported_at: rfc3339(chrono::Utc::now().timestamp_millis()),
            since: opts.since_ms.map(rfc3339),
            until: opts.until_ms.map(rfc3339),
            rows: rows.clone(),
        });
        manifest.save(&opts.out)?;
    } else if !opts.out.join("manifest.json").exists() {
        manifest.save(&opts.out)?;
    }
    for t in table::TABLES {
        rows.entry(t.name.to_owned()).or_default();
    }
    let files_json: Vec<Value> = files
        .iter()
        .map(|f| json!({"table": f.table, "path": f.path, "rows": f.rows, "bytes": f.bytes}))
        .collect();
    Ok(json!({
        "out": opts.out.display().to_string(),
        "format": opts.format.as_str(),
        "from_seq": from,
        "to_seq": to,
        "up_to_date": from > to,
        "rows": rows,
        "bytes": files.iter().map(|f| f.bytes).sum::<u64>(),
        "files": files_json,
        "total_rows": manifest.rows(),
        "last_seq": manifest.last_seq,
    }))
}

/// Run ids are handed from the log scan to the runs thread in batches of this many.
const ID_BATCH: usize = 4096;

/// Writes the three tables for the events `from..=to`: the log scan (events, record changes)
/// on this thread, the runs it touches read and written on another, each file encoded on its
/// sink's writer thread.
fn write_range(
    ledger: &Ledger,
    view: &View,
    opts: &ExportOptions,
    from: u64,
    to: u64,
) -> Result<Vec<FileEntry>> {
    let at = view.at();
    let abort = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<String>>(16);
    std::thread::scope(|s| {
        let abort = &abort;
        let runs = s.spawn(move || write_runs(ledger, at, opts, (from, to), rx, abort));
        let scanned = scan_events(view, opts, from, to, tx);
        if scanned.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        let runs = runs
            .join()
            .map_err(|_| Error::Invalid("the runs export thread panicked".into()))
            .and_then(|r| r);
        match (scanned, runs) {
            (Ok((events, docs)), runs) => {
                // A table that fails after another completed: the completed files go too, so
                // that the directory holds no file the manifest does not list.
                let mut files = Vec::new();
                let finished = || -> Result<()> {
                    files.extend(runs?);
                    files.extend(events.finish()?);
                    files.extend(docs.finish()?);
                    Ok(())
                };
                match finished() {
                    Ok(()) => Ok(files),
                    Err(e) => {
                        for f in &files {
                            let _ = std::fs::remove_file(opts.out.join(&f.path));
                        }
                        Err(e)
                    }
                }
            }
            // The runs thread failed first (and stopped the scan): its error says why.
            (Err(_), Err(e)) if !abort.load(Ordering::SeqCst) || !is_abort(&e) => Err(e),
            (Err(e), _) => Err(e),
        }
    })
}

/// The events and record changes of `from..=to`; sends each run id seen to `runs`.
fn scan_events(
    view: &View,
    opts: &ExportOptions,
    from: u64,
    to: u64,
    runs: SyncSender<Vec<String>>,
) -> Result<(Sink, Sink)> {
    let mut events = Sink::new(&EVENTS, opts.format, &opts.out, from, to);
    let mut docs = Sink::new(&DOC_CHANGES, opts.format, &opts.out, from, to);
    let mut roots = Roots::new();
    let mut batch: Vec<String> = Vec::with_capacity(ID_BATCH);
    let mut seen: HashSet<String> = HashSet::new();
    let mut failure: Option<Error> = None;
    let mut days = Days::default();
    view.reader().scan(from, to, |_, ev| {
        let e = &ev.event;
        let run_id = e.run_id.as_str();
        if !seen.contains(run_id) {
            seen.insert(run_id.to_owned());
            batch.push(run_id.to_owned());
            if batch.len() >= ID_BATCH && runs.send(std::mem::take(&mut batch)).is_err() {
                failure = Some(Error::Invalid("the runs export thread stopped".into()));
                return Ok(false);
            }
        }
        let ts = e.ts_ms.to_native();
        if !opts.keeps(ts) {
            return Ok(true);
        }
        let seq = ev.seq.to_native();
        let day = days.day(ts);
        let mut body = String::with_capacity(256);
        write_event_json(ev, false, &mut body);
        let row: Row = vec![
            Cell::Int(seq as i64),
            Cell::Ts(ts),
            Cell::Ts(ev.ingested_ms.to_native()),
            Cell::Str(e.body.type_name().to_owned()),
            Cell::Str(run_id.to_owned()),
            Cell::opt_str(e.id.as_deref()),
            Cell::Json(body),
        ];
        let step = || -> Result<()> {
            events.push(day.clone(), seq, row)?;
            if let ArchivedBody::Doc {
                change,
                doctype,
                name,
                data,
                before,
            } = &e.body
            {
                let (root, template) = roots.resolve_in(view, run_id)?;
                let doc: Row = vec![
                    Cell::Int(seq as i64),
                    Cell::Ts(ts),
                    Cell::Str(change.get().as_str().to_owned()),
                    Cell::Str(doctype.to_string()),
                    Cell::Str(name.to_string()),
                    Cell::Str(run_id.to_owned()),
                    Cell::Str(root),
                    Cell::opt_str(template.as_deref()),
                    Cell::opt_json(data.as_deref()),
                    Cell::opt_json(before.as_deref()),
                ];
                docs.push(day.clone(), seq, doc)?;
            }
            Ok(())
        };
        match step() {
            Ok(()) => Ok(true),
            Err(err) => {
                failure = Some(err);
                Ok(false)
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !batch.is_empty() && runs.send(batch).is_err() {
        return Err(Error::Invalid("the runs export thread stopped".into()));
    }
    Ok((events, docs))
}

const ABORTED: &str = "export aborted";

fn is_abort(e: &Error) -> bool {
    matches!(e, Error::Invalid(m) if m == ABORTED)
}

/// The `runs` table: every run whose id comes through `ids`, as it stands at `at`. Its files
/// are only completed when the scan did not `abort`.
fn write_runs(
    ledger: &Ledger,
    at: u64,
    opts: &ExportOptions,
    (from, to): (u64, u64),
    ids: Receiver<Vec<String>>,
    abort: &AtomicBool,
) -> Result<Vec<FileEntry>> {
    let view = ledger.view(Some(at))?;
    let mut days = Days::default();
    let mut roots = Roots::new();
    let mut runs = Sink::new(&RUNS, opts.format, &opts.out, from, to);
    for mut batch in ids {
        // In key order: neighbouring runs share B-tree pages.
        batch.sort_unstable();
        for id in &batch {
            let Some(r) = view.run(id)? else { continue };
            let t = match r.started_ms.or(r.ended_ms) {
                Some(t) => t,
                None => view
                    .reader()
                    .with_event(r.first_seq, |ev| ev.event.ts_ms.to_native())?
                    .unwrap_or(0),
            };
            if !opts.keeps(t) {
                continue;
            }
            let (root, template) = roots.resolve_run(&view, &r)?;
            runs.push(days.day(t), r.last_seq, run_row(&r, root, template))?;
        }
    }
    if abort.load(Ordering::SeqCst) {
        // Dropping the sink removes its unfinished files.
        return Err(Error::Invalid(ABORTED.into()));
    }
    runs.finish()
}

/// `YYYY-MM-DD` of times, remembering the last day (events come roughly in time order).
#[derive(Default)]
struct Days {
    last: Option<(i64, String)>,
}

impl Days {
    fn day(&mut self, ms: i64) -> String {
        let n = ms.div_euclid(86_400_000);
        match &self.last {
            Some((d, s)) if *d == n => s.clone(),
            _ => {
                let s = utc_day(ms);
                self.last = Some((n, s.clone()));
                s
            }
        }
    }
}

/// A run as a row of the `runs` table.
pub fn run_row(r: &RunState, root: String, root_template: Option<String>) -> Row {
    let f = &r.fields;
    vec![
        Cell::Str(r.run_id.clone()),
        Cell::opt_str(f.operation.as_deref()),
        Cell::opt_str(f.doctype.as_deref()),
        Cell::opt_str(f.template.as_deref().or(f.flow.as_deref())),
        Cell::Str(root),
        Cell::opt_str(root_template.as_deref()),
        Cell::Str(r.status().as_str().to_owned()),
        Cell::opt_str(f.parent_run_id.as_deref()),
        Cell::opt_str(f.chain_id.as_deref()),
        Cell::opt_str(f.step_id.as_deref()),
        Cell::opt_int(f.step_index),
        Cell::opt_str(f.owner.as_deref()),
        Cell::opt_str(f.agent.as_deref()),
        Cell::opt_str(f.role.as_deref()),
        Cell::opt_ts(r.started_ms),
        Cell::opt_ts(r.ended_ms),
        Cell::opt_int(r.duration_ms()),
        Cell::Int(i64::from(r.events)),
        Cell::Int(r.first_seq as i64),
        Cell::Int(r.last_seq as i64),
        Cell::opt_json(f.input.as_deref()),
        Cell::opt_json(r.output.as_deref()),
        Cell::opt_json(r.error.as_deref()),
    ]
}
