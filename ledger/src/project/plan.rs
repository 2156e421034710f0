//! Planning: folds a span of the log over the projections' previous state, in memory, into a
//! [`Plan`] of sorted rows that the writer only inserts.
//!
//! A span is folded chunk by chunk, each chunk ending at the latest at a checkpoint seq (the
//! active set is recorded there). A run's state stays in memory, in a [`Folder`], from the first
//! chunk of the span that touches it to the end of the span, so a run is read from the tables
//! and encoded once per span, not once per chunk.
//!
//! The state before a span is the projections' read snapshot overlaid with the plan the writer
//! may still be writing ([`Planner::pending`]): planning the next span overlaps with writing the
//! previous one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable};

use super::run::{Folder, RunState};
use super::tables::*;
use crate::block::{self, Block};
use crate::error::Result;
use crate::event::{ArchivedBody, ArchivedStoredEvent, CheckpointStatus};
use crate::log::LogReader;

/// Everything one span changes in the projection tables, each list sorted by its table's key.
pub(super) struct Plan {
    pub from: u64,
    pub to: u64,
    /// The log's chain hash at `to`.
    pub to_hash: block::Hash,
    /// The plan's strings; the lists below name them.
    pub names: Names,
    /// By run id.
    pub runs: Vec<RunWrite>,
    /// The runs' encoded states, one after another.
    pub states: Vec<u8>,
    /// (parent, child) links new or seen earlier than recorded.
    pub links: Vec<(Name, Name, u64)>,
    /// (doctype, name, seq, where its encoded [`DocRecord`] sits in `records`).
    pub docs: Vec<(Name, Name, u64, std::ops::Range<usize>)>,
    pub records: Vec<u8>,
    /// (ts, seq, run id).
    pub completions: Vec<(i64, u64, Name)>,
    /// The checkpoints the span reaches, ascending.
    pub checkpoints: Vec<Checkpoint>,
}

/// Strings one after another in one buffer: a plan holds tens of thousands, which as
/// allocations of their own cost a malloc and a free each (dropping a plan's took 5 % of the
/// planner's time).
#[derive(Default)]
pub(super) struct Names(String);

/// A string's place in [`Names`].
#[derive(Clone, Copy)]
pub(super) struct Name(usize, usize);

impl Names {
    fn add(&mut self, s: &str) -> Name {
        let start = self.0.len();
        self.0.push_str(s);
        Name(start, self.0.len())
    }

    pub fn get(&self, n: Name) -> &str {
        self.0.get(n.0..n.1).unwrap_or_default()
    }
}

/// A run's new row and what the tables hold for it before the span.
pub(super) struct RunWrite {
    pub run_id: Name,
    /// Where its encoded state sits in [`Plan::states`].
    pub state: std::ops::Range<usize>,
    /// Its `runs_by_start` key before the span; `None` when the tables do not hold the run yet.
    pub old_key: Option<i64>,
    pub key: i64,
    pub was_active: bool,
    pub active: bool,
}

pub(super) struct Checkpoint {
    pub seq: u64,
    /// The active run ids, ascending ([`encode_ids`]).
    pub active: Vec<u8>,
    /// The greatest `completions` key with seq ≤ `seq`, if any run has completed.
    pub completions_max: Option<(i64, u64)>,
}

impl Plan {
    pub fn state(&self, r: &RunWrite) -> &[u8] {
        &self.states[r.state.clone()]
    }

    pub fn name(&self, n: Name) -> &str {
        self.names.get(n)
    }

    fn run(&self, run_id: &str) -> Option<&RunWrite> {
        let i = self
            .runs
            .binary_search_by(|r| self.name(r.run_id).cmp(run_id))
            .ok()?;
        self.runs.get(i)
    }

    fn link(&self, parent: &str, child: &str) -> Option<u64> {
        let i = self
            .links
            .binary_search_by(|&(p, c, _)| (self.name(p), self.name(c)).cmp(&(parent, child)))
            .ok()?;
        self.links.get(i).map(|&(_, _, seq)| seq)
    }
}

/// Plans spans one after another over one log snapshot.
pub(super) struct Planner<'a> {
    reader: &'a LogReader,
    /// The projections as committed, at least up to where `pending` starts.
    snapshot: ReadTransaction,
    /// Its `runs` table, opened once.
    runs: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    /// The plan handed to the writer last; it may not be committed yet, so it overrides
    /// `snapshot`.
    pending: Option<Arc<Plan>>,
    /// The active run ids as of the end of the last span planned; loaded at the first checkpoint
    /// that needs it.
    active: Option<HashSet<String, Fast>>,
    /// The greatest `completions` key so far.
    last_completion: Option<(i64, u64)>,
    /// Set when the projections were empty as this catch-up began (a rebuild).
    planned: Option<PlannedKeys>,
}

/// Hashes of the run ids and links planned so far, from empty projections: a key not here is
/// not in the tables either, so it is not looked up (a miss costs a B-tree descent, ~1 µs, and
/// almost every run and link of a rebuild is new). A hash found here only means "look it up".
#[derive(Default)]
struct PlannedKeys {
    runs: HashSet<u64, Fast>,
    links: HashSet<u64, Fast>,
}

impl PlannedKeys {
    fn link(parent: &str, child: &str) -> u64 {
        let seed = xxhash_rust::xxh3::xxh3_64(parent.as_bytes());
        xxhash_rust::xxh3::xxh3_64_with_seed(child.as_bytes(), seed)
    }

    fn add(&mut self, plan: &Plan) {
        self.runs
            .extend(plan.runs.iter().map(|r| id_hash(plan.name(r.run_id))));
        self.links.extend(
            plan.links
                .iter()
                .map(|&(p, c, _)| Self::link(plan.name(p), plan.name(c))),
        );
    }
}

/// A run id's 64-bit hash (XXH3), where a set of hashes stands in for a set of ids.
pub(super) fn id_hash(run_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(run_id.as_bytes())
}

/// A run touched by the span being planned, borrowing from the span's events.
struct SpanRun<'b> {
    folder: Folder<'b>,
    /// Its `runs_by_start` key and whether it was active, before the span.
    old_key: Option<i64>,
    was_active: bool,
}

impl<'a> Planner<'a> {
    pub fn new(reader: &'a LogReader, snapshot: ReadTransaction) -> Result<Self> {
        let last_completion = snapshot
            .open_table(COMPLETIONS)?
            .last()?
            .map(|(k, _)| k.value());
        let empty = super::projector::applied_in(&snapshot)? == 0;
        Ok(Planner {
            planned: empty.then(PlannedKeys::default),
            reader,
            runs: snapshot.open_table(RUNS)?,
            snapshot,
            pending: None,
            active: None,
            last_completion,
        })
    }

    /// Records that `plan` went to the writer and that everything before it is committed, so
    /// `snapshot` (taken after that commit) holds it.
    pub fn handed_over(&mut self, plan: Arc<Plan>, snapshot: ReadTransaction) -> Result<()> {
        self.pending = Some(plan);
        self.runs = snapshot.open_table(RUNS)?;
        self.snapshot = snapshot;
        Ok(())
    }

    /// Folds events `from..=to` (the span after the last one planned).
    pub fn plan(&mut self, from: u64, to: u64) -> Result<Plan> {
        // The span's events are read in place, and its runs borrow their strings from them
        // until they are encoded.
        let stored = self.reader.blocks(from, to)?;
        let blocks = stored
            .iter()
            .map(|(first, bytes)| Block::new(*first, bytes.value()))
            .collect::<Result<Vec<_>>>()?;
        let mut span = Span::default();
        let mut chunk_from = from;
        while chunk_from <= to {
            let boundary = (chunk_from / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY;
            let chunk_to = to.min(boundary);
            self.fold_chunk(&blocks, chunk_from, chunk_to, &mut span)?;
            if chunk_to % CHECKPOINT_EVERY == 0 {
                let checkpoint = self.checkpoint(chunk_to, &span)?;
                span.checkpoints.push(checkpoint);
            }
            chunk_from = chunk_to + 1;
        }
        let plan = self.finish(from, to, span)?;
        if let Some(planned) = self.planned.as_mut() {
            planned.add(&plan);
        }
        Ok(plan)
    }

    /// Folds events `from..=to` of `blocks` into the span's runs, in `(ts, seq)` order per
    /// run, and collects their links, record changes and completions.
    fn fold_chunk<'b>(
        &mut self,
        blocks: &[Block<'b>],
        from: u64,
        to: u64,
        span: &mut Span<'b>,
    ) -> Result<()> {
        // Each event with its run's place in `span.folded`.
        let mut slots: Vec<(usize, Slot<'b>)> = Vec::with_capacity((to + 1 - from) as usize);
        for block in blocks {
            let first = block.first_seq();
            if first > to || first + (block.len() as u64) <= from {
                continue;
            }
            for i in 0..block.len() {
                let seq = first + i as u64;
                if seq < from || seq > to {
                    continue;
                }
                let (hash, ev) = block.event(i)?;
                span.to_hash = *hash;
                let e = &ev.event;
                let ts = e.ts_ms.to_native();
                let run_id = e.run_id.as_str();
                span.collect(run_id, ts, seq, &e.body)?;
                let i = match span.index.get(run_id) {
                    Some(&i) => i,
                    None => {
                        span.folded.push(self.before_span(run_id)?);
                        let i = span.folded.len() - 1;
                        span.index.insert(run_id, i);
                        i
                    }
                };
                slots.push((i, Slot { ts, seq, ev }));
            }
        }
        // The events grouped by run (a counting sort on the run's place: no hashing, no vector
        // per run), then each run's few events sorted by `(ts, seq)` and folded.
        let mut starts = vec![0usize; span.folded.len() + 1];
        for &(i, _) in &slots {
            starts[i + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut grouped = vec![0; slots.len()];
        let mut next = starts.clone();
        for (k, &(i, _)) in slots.iter().enumerate() {
            grouped[next[i]] = k;
            next[i] += 1;
        }
        let mut run_slots: Vec<Slot> = Vec::new();
        for (i, run) in span.folded.iter_mut().enumerate() {
            let group = &grouped[starts[i]..starts[i + 1]];
            if group.is_empty() {
                continue;
            }
            run_slots.clear();
            run_slots.extend(group.iter().map(|&k| slots[k].1));
            run_slots.sort_unstable_by_key(|s| (s.ts, s.seq));
            let first = run_slots[0];
            if run.folder.state().follows(first.ts, first.seq) {
                for s in &run_slots {
                    run.folder.apply(s.ev);
                }
            } else {
                // An event older than what was folded: fold the run again from all its events.
                let state = run.folder.state();
                run.folder = refold(self.reader, &state.run_id, &state.seqs, &run_slots)?;
            }
            if let Some(active) = self.active.as_mut() {
                let state = run.folder.state();
                if state.is_active() {
                    if !active.contains(&*state.run_id) {
                        active.insert(state.run_id.to_string());
                    }
                } else {
                    active.remove(&*state.run_id);
                }
            }
        }
        self.last_completion = self.last_completion.max(span.completions_max);
        Ok(())
    }

    /// A run as it stands before the span: in the pending plan, else in the snapshot, else new.
    fn before_span<'b>(&self, run_id: &'b str) -> Result<SpanRun<'b>> {
        let Some(old) = self.stored_before_span(run_id)? else {
            return Ok(SpanRun {
                folder: Folder::new(run_id),
                old_key: None,
                was_active: false,
            });
        };
        Ok(SpanRun {
            old_key: Some(old.sort_key()),
            was_active: old.is_active(),
            folder: Folder::from_state(old),
        })
    }

    /// A run's state in the pending plan, else in the snapshot.
    fn stored_before_span(&self, run_id: &str) -> Result<Option<RunState>> {
        let never_planned = self
            .planned
            .as_ref()
            .is_some_and(|p| !p.runs.contains(&id_hash(run_id)));
        if never_planned {
            return Ok(None);
        }
        let pending = self
            .pending
            .as_ref()
            .and_then(|p| p.run(run_id).map(|w| p.state(w)));
        Ok(match pending {
            Some(bytes) => Some(RunState::decode(bytes)?),
            None => match self.runs.get(run_id)? {
                Some(v) => Some(RunState::decode(v.value())?),
                None => None,
            },
        })
    }

    /// The checkpoint at `seq`, the end of the chunk just folded.
    fn checkpoint(&mut self, seq: u64, span: &Span) -> Result<Checkpoint> {
        let active = match self.active.as_mut() {
            Some(a) => a,
            None => {
                // The tables, overlaid with the pending plan, then with this span so far.
                let mut set = HashSet::default();
                for item in self.snapshot.open_table(ACTIVE)?.iter()? {
                    set.insert(item?.0.value().to_owned());
                }
                let pending = self
                    .pending
                    .iter()
                    .flat_map(|p| p.runs.iter().map(|r| (p.name(r.run_id), r.active)));
                for (id, active) in pending.chain(span.folded.iter().map(|r| {
                    let state = r.folder.state();
                    (&*state.run_id, state.is_active())
                })) {
                    if active {
                        set.insert(id.to_owned());
                    } else {
                        set.remove(id);
                    }
                }
                self.active.insert(set)
            }
        };
        let mut sorted: Vec<&str> = active.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        Ok(Checkpoint {
            seq,
            active: encode_ids(sorted),
            completions_max: self.last_completion,
        })
    }

    /// Encodes the span's runs and keeps the links that are new or earlier than recorded.
    fn finish(&self, from: u64, to: u64, span: Span) -> Result<Plan> {
        let mut names = Names::default();
        let mut runs = Vec::with_capacity(span.folded.len());
        // Sized as the last span's, rather than grown (and copied) by doubling.
        let mut states = Vec::with_capacity(self.pending.as_ref().map_or(0, |p| p.states.len()));
        for r in span.folded {
            let state = r.folder.finish();
            let start = states.len();
            states = state.encode_into(states)?;
            runs.push(RunWrite {
                state: start..states.len(),
                old_key: r.old_key,
                key: state.sort_key(),
                was_active: r.was_active,
                active: state.is_active(),
                run_id: names.add(&state.run_id),
            });
        }
        runs.sort_unstable_by(|a, b| names.get(a.run_id).cmp(names.get(b.run_id)));
        let children = self.snapshot.open_table(CHILDREN)?;
        let mut links = Vec::with_capacity(span.links.len());
        for ((parent, child), seq) in span.links {
            let never_planned = self
                .planned
                .as_ref()
                .is_some_and(|p| !p.links.contains(&PlannedKeys::link(parent, child)));
            let prev = if never_planned {
                None
            } else {
                match self.pending.as_ref().and_then(|p| p.link(parent, child)) {
                    Some(s) => Some(s),
                    None => children.get((parent, child))?.map(|v| v.value()),
                }
            };
            if prev.is_none_or(|p| p > seq) {
                links.push((names.add(parent), names.add(child), seq));
            }
        }
        let mut docs = span.docs;
        docs.sort_unstable_by_key(|d| (d.0, d.1, d.2));
        let docs = docs
            .into_iter()
            .map(|(doctype, name, seq, record)| (names.add(doctype), names.add(name), seq, record))
            .collect();
        let mut completions = span.completions;
        completions.sort_unstable_by_key(|c| (c.0, c.1));
        let completions = completions
            .into_iter()
            .map(|(ts, seq, run_id)| (ts, seq, names.add(run_id)))
            .collect();
        Ok(Plan {
            from,
            to,
            to_hash: span.to_hash,
            names,
            runs,
            states,
            links,
            docs,
            records: span.records,
            completions,
            checkpoints: span.checkpoints,
        })
    }
}

/// Run ids are hashed several times per event; SipHash's flooding resistance buys nothing
/// here, and the streaming XXH3 hasher copies every key into its buffer.
type Fast = std::hash::BuildHasherDefault<IdHasher>;

/// Hashes a key's bytes in one XXH3 call.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        // `str` hashes end with 0xff: mixing it in cheaply keeps the hash as good.
        self.0 = self.0.rotate_left(8) ^ u64::from(b);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a span has gathered so far, borrowing from its events.
#[derive(Default)]
struct Span<'b> {
    /// The runs the span touched, in the order first touched. One vector rather than one
    /// allocation per run: glibc frees hundreds of thousands of boxes slowly (consolidating).
    folded: Vec<SpanRun<'b>>,
    /// Each run's place in `folded`.
    index: HashMap<&'b str, usize, Fast>,
    /// (parent, child) -> first seq naming that parent.
    links: BTreeMap<(&'b str, &'b str), u64>,
    /// (doctype, name, seq, where its encoded [`DocRecord`] sits in `records`).
    docs: Vec<(&'b str, &'b str, u64, std::ops::Range<usize>)>,
    records: Vec<u8>,
    completions: Vec<(i64, u64, &'b str)>,
    completions_max: Option<(i64, u64)>,
    checkpoints: Vec<Checkpoint>,
    /// The chain hash of the last event folded.
    to_hash: block::Hash,
}

impl<'b> Span<'b> {
    /// Collects what an event adds besides its run's fold: a parent link, a record change, a
    /// completion.
    fn collect(
        &mut self,
        run_id: &'b str,
        ts: i64,
        seq: u64,
        body: &'b ArchivedBody,
    ) -> Result<()> {
        match body {
            ArchivedBody::Started { run } | ArchivedBody::Checkpoint { run, .. } => {
                if let Some(p) = run.parent_run_id.as_ref() {
                    self.links.entry((p.as_str(), run_id)).or_insert(seq);
                }
            }
            ArchivedBody::Doc {
                change,
                doctype,
                name,
                data,
                before,
            } => {
                let record = DocRecordRef {
                    ts_ms: ts,
                    change: change.get(),
                    run_id: Cow::Borrowed(run_id),
                    data: data.as_ref().map(|d| Cow::Borrowed(d.as_str())),
                    before: before.as_ref().map(|d| Cow::Borrowed(d.as_str())),
                };
                let start = self.records.len();
                let records = std::mem::take(&mut self.records);
                self.records =
                    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&record, records)?;
                let at = start..self.records.len();
                self.docs.push((doctype.as_str(), name.as_str(), seq, at));
            }
            _ => {}
        }
        let completed = match body {
            ArchivedBody::Completed { .. } => true,
            ArchivedBody::Checkpoint { status, .. } => status.get() == CheckpointStatus::Completed,
            _ => false,
        };
        if completed {
            self.completions.push((ts, seq, run_id));
            self.completions_max = self.completions_max.max(Some((ts, seq)));
        }
        Ok(())
    }
}

/// One event of a chunk, read in place, with its fold key.
#[derive(Clone, Copy)]
struct Slot<'a> {
    ts: i64,
    seq: u64,
    ev: &'a ArchivedStoredEvent,
}

/// Folds a run from stored seqs plus a chunk's new slots.
fn refold(
    reader: &LogReader,
    run_id: &str,
    stored: &[u64],
    slots: &[Slot],
) -> Result<Folder<'static>> {
    let mut arena = Vec::new();
    let gathered = gather(reader, stored.iter().copied(), &mut arena)?;
    let mut events: Vec<(i64, u64, &ArchivedStoredEvent)> = gathered
        .into_iter()
        // SAFETY: `gather` copied these bytes after `block::access` checked them.
        .map(|(ts, seq, (a, z))| (ts, seq, unsafe { block::access_prechecked(&arena[a..z]) }))
        .collect();
    events.extend(slots.iter().map(|s| (s.ts, s.seq, s.ev)));
    events.sort_unstable_by_key(|e| (e.0, e.1));
    let mut folder = Folder::new(run_id);
    for (_, _, ev) in events {
        folder.apply(ev);
    }
    // The arena goes: the folder keeps copies of what it borrowed.
    Ok(folder.into_static())
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
    Ok(Some(folder.finish().into_owned()))
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
