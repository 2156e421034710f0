//! Appending to the log: deduplicate, stamp, chain, pack into blocks, commit durably.
//!
//! An append is three steps, each a function here:
//! 1. [`find_duplicates`]: ids repeated within the batch, and ids stored before (the id set,
//!    read in the write transaction);
//! 2. [`pack`]: give each new event its seq and ingest time, chain its hash, pack blocks (pure
//!    CPU, no storage);
//! 3. [`store_ids`], [`store_blocks`]: add the id run, insert the blocks and the head; the
//!    caller commits.
//!
//! [`Ledger::append_encoded`] runs them one after the other in one transaction.
//! [`Ledger::append_stream`] overlaps them across batches: the transaction that stores batch
//! k adds k's ids, finds the duplicates of batch k+1 (against k's ids too, confirmed from k's
//! packed blocks), and while it inserts k's blocks and commits — the kernel copying the pages,
//! then the fsync — another thread packs batch k+1. The next transaction stores it. Each commit is still one durable group
//! commit of one batch, in order; a failed commit stops the stream before anything after it is
//! stored.

use std::sync::mpsc;

use redb::{ReadableTable, Table};

use crate::block::{Block, BlockBuilder};
use crate::dedup::{IdIndex, NewRun};
use crate::encode::{EncodedBatch, Repeats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::log::{encode_head, Head, Ledger, Outcome, BLOCKS, IDS, META};

/// What [`find_duplicates`] decided about a batch before seqs are given.
struct Duplicates {
    /// `Some(Duplicate(seq))` for events whose id was stored before.
    outcomes: Vec<Option<Outcome>>,
    /// For a repeat within the batch, the index of the first event with the same id.
    repeat_of: Vec<Option<usize>>,
}

/// A batch stamped, chained and packed into blocks, ready to be stored.
#[derive(Default)]
struct Packed {
    /// The blocks, back to back; `spans` cuts them out.
    bytes: Vec<u8>,
    /// `(first seq, start, end)` of each block in `bytes`.
    spans: Vec<(u64, usize, usize)>,
    /// `(id hash, seq)` of each stored event that has an id, made a run for the id set.
    id_run: Option<NewRun>,
    outcomes: Vec<Outcome>,
    /// The head after this batch.
    head: Head,
}

impl Packed {
    /// Whether the event at `seq` is one of this batch's.
    fn holds(&self, seq: u64) -> bool {
        self.spans.first().is_some_and(|s| s.0 <= seq) && seq <= self.head.seq
    }

    /// Whether the event at `seq` (one of this batch's) has the id `id`.
    fn id_is(&self, seq: u64, id: Option<&str>) -> Result<bool> {
        let k = self.spans.partition_point(|s| s.0 <= seq);
        let Some(&(first, a, z)) = k.checked_sub(1).and_then(|k| self.spans.get(k)) else {
            return Ok(false);
        };
        block_has_id(first, &self.bytes[a..z], seq, id)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.id_run = None;
        self.outcomes.clear();
    }
}

impl Ledger {
    /// Appends `events` in one durable transaction (group commit): an event is reported
    /// `Stored` only after the commit is on disk. Events whose `id` was stored before (or
    /// earlier in the same batch) are `Duplicate` and not stored again. Outcomes come in the
    /// order of `events`.
    pub fn append(&self, events: Vec<Event>) -> Result<Vec<Outcome>> {
        let mut batch = EncodedBatch::with_capacity(events.len());
        for e in &events {
            batch.push(&e.borrowed())?;
        }
        self.append_encoded(&mut batch)
    }

    /// [`Self::append`] for events already encoded (bulk ingest encodes on every core). The
    /// batch is stamped in place; the caller may clear and reuse it.
    pub fn append_encoded(&self, batch: &mut EncodedBatch) -> Result<Vec<Outcome>> {
        let db = self.write_db()?;
        let mut slot = self.id_index.lock().unwrap_or_else(|p| p.into_inner());
        // Out of its slot until the commit is durable: an append that fails leaves the slot
        // empty, and the next one loads the index from the file again.
        let mut index = slot.take();
        let from = *self.lock_head();
        let tx = db.begin_write()?;
        let mut packed = Packed::default();
        {
            let mut blocks = tx.open_table(BLOCKS)?;
            let mut ids = tx.open_table(IDS)?;
            let index = loaded(&mut index, &mut ids)?;
            let dups = find_duplicates(batch, index, &ids, &blocks, None)?;
            pack(batch, dups, from, &mut packed);
            store_ids(&mut ids, index, &mut packed)?;
            store_blocks(&tx, &mut blocks, &packed, from)?;
        }
        tx.commit()?;
        *slot = index;
        drop(slot);
        self.set_head(packed.head);
        Ok(packed.outcomes)
    }

    /// Appends every batch of `items` in order, one durable commit per batch, overlapping the
    /// commit of one batch with packing the next (see the module doc). `on_stored` is called
    /// with each item and its outcomes once its commit is durable, in order, before the next
    /// commit. On an error, every item before the failing one was stored and reported.
    pub fn append_stream<T: Send>(
        &self,
        items: impl IntoIterator<Item = T>,
        batch_of: fn(&mut T) -> &mut EncodedBatch,
        mut on_stored: impl FnMut(T, &[Outcome]) -> Result<()>,
    ) -> Result<()> {
        let db = self.write_db()?;
        let mut slot = self.id_index.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = slot.take();
        let mut items = items.into_iter();
        std::thread::scope(|scope| -> Result<()> {
            let (job_tx, job_rx) = mpsc::sync_channel::<(T, Duplicates, Head, Packed)>(1);
            let (packed_tx, packed_rx) = mpsc::sync_channel::<(T, Packed)>(1);
            scope.spawn(move || {
                for (mut item, dups, from, mut out) in job_rx {
                    pack(batch_of(&mut item), dups, from, &mut out);
                    if packed_tx.send((item, out)).is_err() {
                        return;
                    }
                }
            });
            // The head as stored, and the head after the last batch handed to the packer.
            let mut stored = *self.lock_head();
            let mut packed_to = stored;
            let mut inflight: Option<(T, Packed)> = None;
            let mut next = items.next();
            let mut spare = Packed::default();
            while inflight.is_some() || next.is_some() {
                let tx = db.begin_write()?;
                let mut sent = false;
                {
                    let mut blocks = tx.open_table(BLOCKS)?;
                    let mut ids = tx.open_table(IDS)?;
                    let index = loaded(&mut index, &mut ids)?;
                    // The ids first: the next batch's duplicates are found against them, and
                    // the packer starts on it while this transaction inserts the blocks.
                    let pending = match inflight.as_mut() {
                        Some((_, packed)) => {
                            store_ids(&mut ids, index, packed)?;
                            Some(&*packed)
                        }
                        None => None,
                    };
                    if let Some(mut item) = next.take() {
                        let batch = batch_of(&mut item);
                        let dups = find_duplicates(batch, index, &ids, &blocks, pending)?;
                        let job = (item, dups, packed_to, std::mem::take(&mut spare));
                        job_tx.send(job).map_err(|_| packer_gone())?;
                        sent = true;
                    }
                    if let Some((_, packed)) = inflight.as_ref() {
                        store_blocks(&tx, &mut blocks, packed, stored)?;
                    }
                }
                // Always committed, even with nothing stored: loading the id set may have
                // dropped a crashed merge's partial output, which the loaded index assumes.
                tx.commit()?;
                if let Some((item, mut packed)) = inflight.take() {
                    stored = packed.head;
                    self.set_head(stored);
                    on_stored(item, &packed.outcomes)?;
                    packed.clear();
                    spare = packed;
                }
                if sent {
                    next = items.next();
                    let (item, packed) = packed_rx.recv().map_err(|_| packer_gone())?;
                    packed_to = packed.head;
                    inflight = Some((item, packed));
                }
            }
            Ok(())
        })?;
        *slot = index;
        Ok(())
    }

    /// Publishes a durable head and wakes those waiting for it.
    fn set_head(&self, head: Head) {
        *self.lock_head() = head;
        self.appended.notify_all();
    }
}

fn packer_gone() -> Error {
    Error::Storage("the append's packing thread stopped".into())
}

/// The id set's in-memory index, loaded from `ids` the first time.
fn loaded<'a>(
    index: &'a mut Option<IdIndex>,
    ids: &mut Table<u64, &'static [u8]>,
) -> Result<&'a mut IdIndex> {
    Ok(match index {
        Some(i) => i,
        None => index.insert(IdIndex::load(ids)?),
    })
}

/// Step 1: which events of `batch` repeat an id, within the batch (found by the batch, maybe
/// before) or stored before.
/// `pending` is a packed batch whose ids are in `index` but whose blocks are not yet in
/// `blocks`.
fn find_duplicates(
    batch: &mut EncodedBatch,
    index: &IdIndex,
    ids: &impl ReadableTable<u64, &'static [u8]>,
    blocks: &impl ReadableTable<u64, &'static [u8]>,
    pending: Option<&Packed>,
) -> Result<Duplicates> {
    let Repeats { repeat_of, firsts } = batch.take_repeats()?;
    // Against everything stored: a hash match is confirmed by comparing the ids.
    let sorted: Vec<u64> = firsts.iter().map(|(h, _)| *h).collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
    for (pos, seq) in index.candidates(ids, &sorted)? {
        let i = firsts[pos].1;
        let id = batch.id(i)?;
        let stored = match pending.filter(|p| p.holds(seq)) {
            Some(p) => p.id_is(seq, id)?,
            None => stored_id_is(blocks, seq, id)?,
        };
        if outcomes[i].is_none() && stored {
            outcomes[i] = Some(Outcome::Duplicate(seq));
        }
    }
    Ok(Duplicates {
        outcomes,
        repeat_of,
    })
}

/// Step 2: stamps, chains and packs the new events of `batch` after `from` into `out`.
fn pack(batch: &mut EncodedBatch, dups: Duplicates, from: Head, out: &mut Packed) {
    let Duplicates {
        mut outcomes,
        repeat_of,
    } = dups;
    let now = chrono::Utc::now().timestamp_millis();
    let mut seq = from.seq;
    let mut hash = from.hash;
    let mut builder = BlockBuilder::default();
    let mut block_first = seq + 1;
    let mut new_ids = Vec::new();
    let cut = |builder: &mut BlockBuilder, first: u64, out: &mut Packed| {
        let start = out.bytes.len();
        out.bytes.extend_from_slice(builder.finish());
        out.spans.push((first, start, out.bytes.len()));
    };
    for i in 0..batch.len() {
        if outcomes[i].is_some() {
            continue;
        }
        if let Some(first) = repeat_of[i] {
            // The first of the same id comes earlier, so its outcome is known.
            let s = match outcomes[first] {
                Some(Outcome::Stored(s)) | Some(Outcome::Duplicate(s)) => s,
                None => 0,
            };
            outcomes[i] = Some(Outcome::Duplicate(s));
            continue;
        }
        seq += 1;
        let archive = batch.stamp(i, seq, now);
        if !builder.fits(archive.len()) {
            cut(&mut builder, block_first, out);
            block_first = seq;
        }
        hash = builder.push(&hash, archive);
        if let Some(h) = batch.id_hash(i) {
            new_ids.push((h, seq));
        }
        outcomes[i] = Some(Outcome::Stored(seq));
    }
    if !builder.is_empty() {
        cut(&mut builder, block_first, out);
    }
    out.outcomes.extend(
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Duplicate(0))),
    );
    out.head = Head { seq, hash };
    out.id_run = Some(NewRun::new(new_ids));
}

/// Step 3a: adds a packed batch's ids to the id set.
fn store_ids(
    ids: &mut Table<u64, &'static [u8]>,
    index: &mut IdIndex,
    packed: &mut Packed,
) -> Result<()> {
    match packed.id_run.take() {
        Some(run) => index.add_run(ids, run),
        None => Ok(()),
    }
}

/// Step 3b: inserts a packed batch's blocks and head; it follows `from` (the stored head).
fn store_blocks(
    tx: &redb::WriteTransaction,
    blocks: &mut Table<u64, &'static [u8]>,
    packed: &Packed,
    from: Head,
) -> Result<()> {
    for &(first, a, z) in &packed.spans {
        blocks.insert(first, &packed.bytes[a..z])?;
    }
    if packed.head != from {
        let mut meta = tx.open_table(META)?;
        meta.insert("head", encode_head(&packed.head).as_slice())?;
    }
    Ok(())
}

fn stored_id_is(
    blocks: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
    id: Option<&str>,
) -> Result<bool> {
    match blocks.range(..=seq)?.next_back().transpose()? {
        Some((k, v)) => block_has_id(k.value(), v.value(), seq, id),
        None => Ok(false),
    }
}

/// Whether the block starting at `first` holds the event `seq` and its id is `id`.
fn block_has_id(first: u64, bytes: &[u8], seq: u64, id: Option<&str>) -> Result<bool> {
    let block = Block::new(first, bytes)?;
    let i = (seq - first) as usize;
    if i >= block.len() {
        return Ok(false);
    }
    let (_, ev) = block.event(i)?;
    Ok(ev.event.id.as_deref() == id)
}
