//! Opening, catching up and rebuilding the index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::json;
use tantivy::schema::Term;
use tantivy::{Index, IndexWriter, TantivyDocument};

use ledger::Ledger;

use super::doc::{self, Fields, Parts};
use super::tokenizer;
use super::{BATCH_BYTES, BATCH_EVENTS, WRITER_HEAP_BYTES};
use crate::{Error, Result};

/// Version of the index layout (schema, tokenizer, what a document holds). An index of another
/// version is dropped and built again.
pub const INDEX_FORMAT: u64 = 1;

/// The index directory of the ledger at `db`: `<db>.search`.
pub fn index_dir(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".search");
    PathBuf::from(p)
}

/// The open writer of this process (one index at a time): creating a writer costs threads and
/// a lock, and a server catches up after every batch it ingests.
struct WriterSlot {
    dir: PathBuf,
    fields: Fields,
    writer: IndexWriter<TantivyDocument>,
    /// Last seq committed.
    indexed: u64,
}

static WRITER: Mutex<Option<WriterSlot>> = Mutex::new(None);

/// Closes the writer this process holds once its merges have finished. A dropped writer's
/// merges go on in the background, writing segment files into its directory: removing that
/// directory meanwhile failed ("Directory not empty"), and an index created in it again could
/// receive their files.
fn close_writer(slot: &mut Option<WriterSlot>) {
    if let Some(s) = slot.take() {
        // A merge that failed leaves the committed index as it was: nothing to report.
        let _ = s.writer.wait_merging_threads();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while indexing leaves at worst an uncommitted batch, which is dropped.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How [`catch_up_with`] proceeds.
///
/// # Defaults
/// - `batch_events`: [`BATCH_EVENTS`]
/// - `crash_after_batches`: `None`
#[derive(Debug, Clone)]
pub struct CatchUpOptions {
    /// Events per commit at most.
    pub batch_events: u64,
    /// For crash tests: after this many committed batches, add the next batch's documents and
    /// then drop the writer without committing, as a crash would, and return an error.
    #[doc(hidden)]
    pub crash_after_batches: Option<usize>,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            batch_events: BATCH_EVENTS,
            crash_after_batches: None,
        }
    }
}

/// What a commit records: the index format, the last seq and its chain hash.
#[derive(Debug, PartialEq)]
struct Payload {
    seq: u64,
    hash: String,
}

fn encode_payload(p: &Payload) -> String {
    json!({"format": INDEX_FORMAT, "seq": p.seq, "hash": p.hash}).to_string()
}

fn decode_payload(s: &str) -> Option<Payload> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    if v["format"].as_u64()? != INDEX_FORMAT {
        return None;
    }
    Some(Payload {
        seq: v["seq"].as_u64()?,
        hash: v["hash"].as_str()?.to_owned(),
    })
}

/// The chain hash of event `seq` (empty for 0); `None` when the ledger has no such event.
fn hash_at(ledger: &Ledger, seq: u64) -> Result<Option<String>> {
    if seq == 0 {
        return Ok(Some(String::new()));
    }
    let reader = ledger.reader()?;
    let mut found = None;
    reader.scan(seq, seq, |h, _| {
        found = Some(ledger::hex(h));
        Ok(false)
    })?;
    Ok(found)
}

/// Registers the tokenizer on an opened index.
pub(super) fn prepare(index: &Index) {
    index
        .tokenizers()
        .register(tokenizer::NAME, tokenizer::analyzer());
}

fn index_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Index(format!("{}: {e}", dir.display()))
}

/// Opens the index at `dir` if it is one of this format for this ledger; returns it with the
/// seq it holds. `None` when it must be built again.
fn open_matching(dir: &Path, ledger: &Ledger) -> Result<Option<(Index, u64)>> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let Ok(index) = Index::open_in_dir(dir) else {
        return Ok(None);
    };
    let (schema, _) = doc::schema();
    if index.schema() != schema {
        return Ok(None);
    }
    let meta = index.load_metas().map_err(|e| index_error(dir, e))?;
    // Every segment must open (a lost or damaged file means building again).
    let readable: tantivy::Result<tantivy::IndexReader> = index
        .reader_builder()
        .reload_policy(tantivy::ReloadPolicy::Manual)
        .try_into();
    if readable.is_err() {
        return Ok(None);
    }
    let payload = meta.payload.as_deref().and_then(decode_payload);
    let seq = match payload {
        Some(p) if hash_at(ledger, p.seq)?.as_deref() == Some(p.hash.as_str()) => p.seq,
        None if meta.segments.is_empty() => 0,
        _ => return Ok(None),
    };
    prepare(&index);
    Ok(Some((index, seq)))
}

/// Opens (or creates, or drops and creates again) the index and its writer.
fn open_writer(dir: &Path, ledger: &Ledger) -> Result<WriterSlot> {
    let (index, indexed) = match open_matching(dir, ledger)? {
        Some(found) => found,
        None => {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| index_error(dir, e))?;
            }
            std::fs::create_dir_all(dir).map_err(|e| index_error(dir, e))?;
            let (schema, _) = doc::schema();
            let index = Index::create_in_dir(dir, schema).map_err(|e| index_error(dir, e))?;
            prepare(&index);
            (index, 0)
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2);
    let writer = index
        .writer_with_num_threads(threads, WRITER_HEAP_BYTES)
        .map_err(|e| index_error(dir, e))?;
    // A process killed mid-commit leaves files no commit uses; replaying its deletes would
    // collide with them.
    writer
        .garbage_collect_files()
        .wait()
        .map_err(|e| index_error(dir, e))?;
    let (_, fields) = doc::schema();
    Ok(WriterSlot {
        dir: dir.to_path_buf(),
        fields,
        writer,
        indexed,
    })
}

/// Brings the search index up to what the projections have applied (call the projections'
/// catch-up first, as [`crate::catch_up`] does). A read-only ledger handle — another process
/// writes the ledger and keeps its index — does nothing.
///
/// # Errors
/// [`Error::Index`] when the index directory cannot be written.
pub fn catch_up(ledger: &Ledger) -> Result<()> {
    catch_up_with(ledger, &CatchUpOptions::default()).map(|_| ())
}

/// [`catch_up`] with options; returns the seq the index holds.
pub fn catch_up_with(ledger: &Ledger, opts: &CatchUpOptions) -> Result<u64> {
    if !ledger.is_writable() {
        return Ok(indexed_seq(ledger)?.unwrap_or(0));
    }
    let mut slot = lock(&WRITER);
    catch_up_locked(&mut slot, ledger, opts)
}

fn catch_up_locked(
    slot: &mut Option<WriterSlot>,
    ledger: &Ledger,
    opts: &CatchUpOptions,
) -> Result<u64> {
    let dir = index_dir(ledger.path());
    // The index this process holds open must still be the one on disk (a rebuild by another
    // process replaces it).
    let current = slot.as_ref().is_some_and(|s| s.dir == dir && dir.exists());
    if !current {
        close_writer(slot); // the old writer (and its lock) goes first
        *slot = Some(open_writer(&dir, ledger)?);
    }
    let Some(s) = slot.as_mut() else {
        return Err(Error::Index("search index writer missing".into()));
    };
    let view = ledger.view(None)?;
    let target = view.applied();
    if s.indexed > target {
        // The projections are behind the index (being rebuilt): nothing to add.
        return Ok(s.indexed);
    }
    let mut batches = 0usize;
    while s.indexed < target {
        let crash = opts.crash_after_batches == Some(batches);
        match index_batch(s, &view, target, opts.batch_events.max(1), crash) {
            Ok(Some(last)) => s.indexed = last,
            Ok(None) => break,
            Err(e) => {
                // Roll back: what the writer holds uncommitted must not be committed with a later
                // batch (it would double runs added again), so drop the writer with it.
                close_writer(slot);
                return Err(e);
            }
        }
        batches += 1;
    }
    Ok(s.indexed)
}

/// Indexes the events after `s.indexed` (up to `target`, at most `batch` of them) and commits;
/// returns the last seq indexed (`None` when there was nothing). With `crash`, stops before the
/// commit with an error.
fn index_batch(
    s: &mut WriterSlot,
    view: &ledger::project::View,
    target: u64,
    batch: u64,
    crash: bool,
) -> Result<Option<u64>> {
    let from = s.indexed + 1;
    let mut runs: HashMap<String, Parts> = HashMap::new();
    let mut last = s.indexed;
    let mut last_hash: ledger::Hash = [0; 32];
    let mut held = 0usize;
    view.reader().scan(from, target, |hash, ev| {
        last = ev.seq.to_native();
        last_hash = *hash;
        let id = ev.event.run_id.as_str();
        let parts = match runs.get_mut(id) {
            Some(p) => p,
            None => runs.entry(id.to_owned()).or_default(),
        };
        let before = parts.weight();
        parts.add(ev);
        held += parts.weight() - before;
        Ok(last - from + 1 < batch && held < BATCH_BYTES)
    })?;
    if last < from {
        return Ok(None); // the log ended early (cannot happen: target <= head)
    }
    let mut ids: Vec<(String, Parts)> = runs.into_iter().collect();
    ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (run_id, parts) in ids {
        let state = view.run(&run_id)?;
        // A run whose first event comes after what the index holds has no document yet:
        // deleting is only needed for the others (and costs a term lookup per segment).
        if state.as_ref().is_none_or(|st| st.first_seq < from) {
            s.writer
                .delete_term(Term::from_field_text(s.fields.run_id, &run_id));
        }
        let Some(state) = state else {
            continue;
        };
        // Parts gathered from this batch are the whole story only when every event of the run
        // is in it.
        let parts = if state.first_seq >= from && state.last_seq <= last {
            parts
        } else {
            Parts::of_run(view, &run_id)?
        };
        s.writer
            .add_document(doc::build(&s.fields, &state, parts))
            .map_err(|e| index_error(&s.dir, e))?;
    }
    if crash {
        return Err(Error::Index("simulated crash while indexing".into()));
    }
    let mut commit = s
        .writer
        .prepare_commit()
        .map_err(|e| index_error(&s.dir, e))?;
    commit.set_payload(&encode_payload(&Payload {
        seq: last,
        hash: ledger::hex(&last_hash),
    }));
    commit.commit().map_err(|e| index_error(&s.dir, e))?;
    Ok(Some(last))
}

/// Drops the search index and builds it again from the log (the projections must be caught
/// up).
///
/// # Errors
/// [`Error::Index`] when another process is writing the ledger, or the directory cannot be
/// written.
pub fn rebuild(ledger: &Ledger) -> Result<()> {
    if !ledger.is_writable() {
        return Err(Error::Index(format!(
            "{}: another process is writing this ledger; it keeps the search index (stop it to \
             rebuild)",
            ledger.path().display()
        )));
    }
    let mut slot = lock(&WRITER);
    close_writer(&mut slot);
    super::answer::forget_reader();
    let dir = index_dir(ledger.path());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| index_error(&dir, e))?;
    }
    catch_up_locked(&mut slot, ledger, &CatchUpOptions::default())?;
    Ok(())
}

/// The last seq the index on disk holds, `None` when there is no index.
pub fn indexed_seq(ledger: &Ledger) -> Result<Option<u64>> {
    let dir = index_dir(ledger.path());
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = Index::open_in_dir(&dir).map_err(|e| index_error(&dir, e))?;
    let meta = index.load_metas().map_err(|e| index_error(&dir, e))?;
    Ok(Some(payload_seq(meta.payload.as_deref())))
}

/// The seq a commit payload records (0 for none).
pub(super) fn payload_seq(payload: Option<&str>) -> u64 {
    payload.and_then(decode_payload).map_or(0, |p| p.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let p = Payload {
            seq: 42,
            hash: "ab".into(),
        };
        assert_eq!(decode_payload(&encode_payload(&p)), Some(p));
        assert_eq!(decode_payload(r#"{"format":0,"seq":1,"hash":""}"#), None);
        assert_eq!(decode_payload("garbage"), None);
    }

    #[test]
    fn index_dir_is_beside_the_db() {
        assert_eq!(
            index_dir(Path::new("/x/runledger.db")),
            PathBuf::from("/x/runledger.db.search")
        );
    }
}
