//! Exact deduplication of client event ids for the ledger's whole life.
//!
//! A B-tree keyed by random ids rewrites most of its pages on every large commit, so ids live
//! in a small log-structured set instead: each commit adds one sorted run of `(xxh3(id), seq)`
//! pairs, and the newest adjacent pair of runs is merged while the older is no larger than the
//! newer (a binary counter over runs), which keeps O(log n) runs and writes each pair O(log n)
//! times.
//!
//! On disk a run is split into chunks of [`CHUNK`] pairs (16 KiB), one redb value each, keyed
//! `run number << 32 | chunk number`. In memory ([`IdIndex`]) one Bloom filter covers every
//! stored hash and each run keeps the first hash of each chunk: a lookup reads chunks only on a
//! Bloom hit (a stored id, or about 1 % of new ones), so what a commit reads does not grow with
//! the ledger. One filter for all runs, not one per run, so that a lookup probes one block,
//! not one per run, and merging runs rewrites no filter; it is rebuilt, twice as large, when it
//! fills.
//! A hash match is still only a candidate: the caller compares the stored event's id, so a
//! 64-bit collision never drops an event.

use std::sync::Arc;

use redb::{ReadableTable, Table};

use crate::error::{Error, Result};

pub(crate) const ENTRY: usize = 16;
/// Pairs per stored chunk.
const CHUNK: usize = 1024;
/// Bloom filter size per pair, in bits, and probes per lookup: about 1 % false positives at
/// capacity.
const BLOOM_BITS: usize = 10;
const PROBES: u64 = 7;
/// Pairs the Bloom filter is first sized for (small in unit tests, so that they grow it).
const MIN_BLOOM: usize = if cfg!(test) { 1024 } else { 1 << 20 };

pub(crate) fn hash_id(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

fn entry_at(chunk: &[u8], i: usize) -> (u64, u64) {
    let b = &chunk[i * ENTRY..(i + 1) * ENTRY];
    let mut h = [0u8; 8];
    let mut s = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    s.copy_from_slice(&b[8..]);
    (u64::from_be_bytes(h), u64::from_be_bytes(s))
}

/// The first index in `chunk` whose hash is not below `h`.
fn lower_bound(chunk: &[u8], h: u64) -> usize {
    let (mut a, mut b) = (0, chunk.len() / ENTRY);
    while a < b {
        let m = (a + b) / 2;
        if entry_at(chunk, m).0 < h {
            a = m + 1;
        } else {
            b = m;
        }
    }
    a
}

fn key(run: u32, chunk: usize) -> u64 {
    (u64::from(run) << 32) | chunk as u64
}

/// The keys of every chunk of run `run`.
fn chunk_keys(run: u32) -> std::ops::RangeInclusive<u64> {
    key(run, 0)..=key(run, u32::MAX as usize)
}

/// A blocked Bloom filter over 64-bit hashes: every probe of a hash falls in one 64-byte block,
/// so a lookup costs one cache miss however large the filter (10 M ids take 12 MB). The hashes
/// are uniform already; block and bits are derived from them.
#[derive(Default)]
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    fn with_capacity(entries: usize) -> Bloom {
        Bloom {
            blocks: vec![[0; 8]; (entries * BLOOM_BITS).div_ceil(512).max(1)],
        }
    }
    /// The block of `h` (multiply-shift: uses all of its bits) and the 9-bit positions of its
    /// probes inside the block.
    fn probes(&self, h: u64) -> (usize, [u16; PROBES as usize]) {
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        let mut x = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut bits = [0u16; PROBES as usize];
        for b in &mut bits {
            *b = (x >> 55) as u16;
            x = x.rotate_left(9);
        }
        (block, bits)
    }
    fn insert(&mut self, h: u64) {
        let (block, bits) = self.probes(h);
        let words = &mut self.blocks[block];
        for b in bits {
            words[usize::from(b / 64)] |= 1u64 << (b % 64);
        }
    }
    /// Inserts the hash of every pair of `chunk` (encoded pairs).
    fn insert_all(&mut self, chunk: &[u8]) {
        for i in 0..chunk.len() / ENTRY {
            self.insert(entry_at(chunk, i).0);
        }
    }
    fn contains(&self, h: u64) -> bool {
        let (block, bits) = self.probes(h);
        let Some(words) = self.blocks.get(block) else {
            return false; // an empty filter (nothing stored yet)
        };
        bits.iter()
            .all(|&b| words[usize::from(b / 64)] & (1u64 << (b % 64)) != 0)
    }
}

/// One sorted run: where its chunks are and the hashes they start with.
struct Run {
    no: u32,
    len: usize,
    /// The first hash of each chunk.
    fences: Vec<u64>,
}

/// Pairs merged within one commit at most: a larger merge advances a step per commit, so that
/// no commit stalls on rewriting a large run (at 10 M ids a run is 160 MB).
const SYNC_MERGE: usize = 16 * CHUNK;
/// Pairs one step of a large merge writes: at least this many, and at least `MERGE_PACE` times
/// the pairs the commit adds, so merges keep ahead of arrivals.
const MERGE_STEP: usize = 16 * CHUNK;
const MERGE_PACE: usize = 16;
/// Key of the marker naming the run a large merge is writing (incomplete until the marker goes).
const MERGING: u64 = u64::MAX;

/// The in-memory side of the id set: one entry per complete run, oldest first, the large
/// merge in progress, if any, and the Bloom filter of every stored hash. It is changed in place
/// before the commit; a failed append drops it, and the next append loads it again from the
/// file.
#[derive(Default)]
pub(crate) struct IdIndex {
    runs: Vec<Arc<Run>>,
    merge: Option<Merge>,
    next_no: u32,
    bloom: Bloom,
    /// Hashes in `bloom`, and how many it is sized for.
    bloomed: usize,
    bloom_capacity: usize,
}

/// Two adjacent runs being merged into run `out`, step by step. Lookups keep using the inputs
/// until the output is complete.
struct Merge {
    older: Arc<Run>,
    newer: Arc<Run>,
    out: u32,
    /// Pairs of each input consumed.
    i: usize,
    j: usize,
    /// The input chunks read last: (chunk number, bytes).
    older_chunk: Option<(usize, Vec<u8>)>,
    newer_chunk: Option<(usize, Vec<u8>)>,
    /// Output pairs not yet a whole chunk.
    carry: Vec<u8>,
    written: usize,
    fences: Vec<u64>,
}

impl IdIndex {
    /// Reads every stored run (once, when a ledger first appends) and drops the output of a
    /// large merge that a crash interrupted.
    pub(crate) fn load(table: &mut Table<u64, &'static [u8]>) -> Result<IdIndex> {
        let partial = match table.get(MERGING)? {
            Some(v) => {
                Some(u32::from_le_bytes(v.value().try_into().map_err(|_| {
                    Error::Storage("id set: bad merge marker".into())
                })?))
            }
            None => None,
        };
        if let Some(no) = partial {
            let keys: Vec<u64> = table
                .range(chunk_keys(no))?
                .map(|item| item.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                table.remove(k)?;
            }
            table.remove(MERGING)?;
        }
        let mut runs: Vec<(u32, Vec<u8>)> = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let (no, chunk) = ((k.value() >> 32) as u32, k.value() as u32 as usize);
            match runs.last_mut() {
                Some((n, bytes)) if *n == no && chunk * CHUNK * ENTRY == bytes.len() => {
                    bytes.extend_from_slice(v.value());
                }
                _ if chunk == 0 => runs.push((no, v.value().to_vec())),
                _ => {
                    return Err(Error::Storage(format!(
                        "id set: chunk {chunk} of run {no} out of place"
                    )))
                }
            }
        }
        let next_no = match (runs.last(), partial) {
            (Some((n, _)), Some(p)) => (*n).max(p),
            (Some((n, _)), None) => *n,
            (None, Some(p)) => p,
            (None, None) => 0,
        }
        .checked_add(1)
        .ok_or_else(|| Error::Storage("id set: run numbers exhausted".into()))?;
        let bloomed: usize = runs.iter().map(|(_, bytes)| bytes.len() / ENTRY).sum();
        let bloom_capacity = (2 * bloomed).max(MIN_BLOOM);
        let mut bloom = Bloom::with_capacity(bloom_capacity);
        for (_, bytes) in &runs {
            bloom.insert_all(bytes);
        }
        let runs = runs
            .into_iter()
            .map(|(no, bytes)| Arc::new(Run::describe(no, &bytes)))
            .collect();
        Ok(IdIndex {
            runs,
            merge: None,
            next_no,
            bloom,
            bloomed,
            bloom_capacity,
        })
    }

    /// For each hash of `sorted` (ascending), every seq stored under that hash, as
    /// `(position in sorted, seq)`.
    pub(crate) fn candidates(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        sorted: &[u64],
    ) -> Result<Vec<(usize, u64)>> {
        let mut out = Vec::new();
        // The chunk of each run read last: sorted hashes often fall in the same one.
        let mut cache: Vec<Option<(usize, Vec<u8>)>> = vec![None; self.runs.len()];
        for (pos, &h) in sorted.iter().enumerate() {
            if !self.bloom.contains(h) {
                continue;
            }
            for (run, cached) in self.runs.iter().zip(&mut cache) {
                // Equal hashes may run over from the chunk before the first fence >= h.
                let mut c = run.fences.partition_point(|&f| f < h).saturating_sub(1);
                while c < run.fences.len() && run.fences[c] <= h {
                    if cached.as_ref().is_none_or(|(n, _)| *n != c) {
                        *cached = Some((c, read_chunk(table, run.no, c)?));
                    }
                    let Some((_, chunk)) = cached.as_ref() else {
                        break;
                    };
                    let n = chunk.len() / ENTRY;
                    let mut i = lower_bound(chunk, h);
                    while i < n && entry_at(chunk, i).0 == h {
                        out.push((pos, entry_at(chunk, i).1));
                        i += 1;
                    }
                    if i < n {
                        break; // the next entry is greater: no later chunk holds h
                    }
                    c += 1;
                }
            }
        }
        Ok(out)
    }

    /// Stores one more run of `(hash, seq)` pairs (any order), then merges: small merges at
    /// once, a large one a step at a time.
    #[cfg(test)]
    pub(crate) fn add(
        &mut self,
        table: &mut Table<u64, &'static [u8]>,
        entries: Vec<(u64, u64)>,
    ) -> Result<()> {
        self.add_run(table, NewRun::new(entries))
    }

    /// Stores a run made ready by [`NewRun::new`], then merges: small merges at once, a large
    /// one a step at a time.
    pub(crate) fn add_run(
        &mut self,
        table: &mut Table<u64, &'static [u8]>,
        new: NewRun,
    ) -> Result<()> {
        let added = new.run.len;
        if added > 0 {
            let NewRun { bytes, mut run } = new;
            run.no = self.take_no()?;
            write_chunks(table, run.no, &bytes)?;
            self.make_room(table, added)?;
            self.bloom.insert_all(&bytes);
            self.bloomed += added;
            self.runs.push(Arc::new(run));
        }
        // The newest adjacent pair where the older run is no larger than the newer.
        while let Some(k) = (1..self.runs.len()).rev().find(|&k| {
            self.runs[k - 1].len <= self.runs[k].len
                && !self.merging(&self.runs[k - 1])
                && !self.merging(&self.runs[k])
        }) {
            let (older, newer) = (Arc::clone(&self.runs[k - 1]), Arc::clone(&self.runs[k]));
            if older.len + newer.len > SYNC_MERGE {
                if self.merge.is_none() {
                    let out = self.take_no()?;
                    table.insert(MERGING, out.to_le_bytes().as_slice())?;
                    self.merge = Some(Merge::new(older, newer, out));
                }
                break;
            }
            let merged = merge(&read_run(table, &older)?, &read_run(table, &newer)?);
            delete_run(table, &older)?;
            delete_run(table, &newer)?;
            let no = self.take_no()?;
            self.runs[k - 1] = Arc::new(write_run(table, no, &merged)?);
            self.runs.remove(k);
        }
        if let Some(m) = self.merge.as_mut() {
            if m.step(table, MERGE_STEP.max(MERGE_PACE * added))? {
                self.finish_merge(table)?;
            }
        }
        Ok(())
    }

    /// Rebuilds the Bloom filter, twice as large as it needs to be, when `more` hashes would
    /// overfill it: from the stored runs (the inputs of a merge in progress hold every pair its
    /// output does).
    fn make_room(&mut self, table: &Table<u64, &'static [u8]>, more: usize) -> Result<()> {
        if self.bloomed + more <= self.bloom_capacity {
            return Ok(());
        }
        let capacity = (2 * (self.bloomed + more)).max(MIN_BLOOM);
        let mut bloom = Bloom::with_capacity(capacity);
        let mut bloomed = 0;
        for run in &self.runs {
            for item in table.range(chunk_keys(run.no))? {
                let (_, chunk) = item?;
                bloom.insert_all(chunk.value());
                bloomed += chunk.value().len() / ENTRY;
            }
        }
        self.bloom = bloom;
        self.bloomed = bloomed;
        self.bloom_capacity = capacity;
        Ok(())
    }

    fn take_no(&mut self) -> Result<u32> {
        let no = self.next_no;
        self.next_no = no
            .checked_add(1)
            .ok_or_else(|| Error::Storage("id set: run numbers exhausted".into()))?;
        Ok(no)
    }

    fn merging(&self, run: &Run) -> bool {
        self.merge
            .as_ref()
            .is_some_and(|m| m.older.no == run.no || m.newer.no == run.no)
    }

    /// Replaces the merge's two inputs by its complete output.
    fn finish_merge(&mut self, table: &mut Table<u64, &'static [u8]>) -> Result<()> {
        let Some(m) = self.merge.take() else {
            return Ok(());
        };
        delete_run(table, &m.older)?;
        delete_run(table, &m.newer)?;
        table.remove(MERGING)?;
        let out = Arc::new(Run {
            no: m.out,
            len: m.older.len + m.newer.len,
            fences: m.fences,
        });
        self.runs.retain(|r| r.no != m.newer.no);
        match self.runs.iter().position(|r| r.no == m.older.no) {
            Some(k) => self.runs[k] = out,
            None => return Err(Error::Storage("id set: merge input vanished".into())),
        }
        Ok(())
    }
}

impl Merge {
    fn new(older: Arc<Run>, newer: Arc<Run>, out: u32) -> Merge {
        Merge {
            older,
            newer,
            out,
            i: 0,
            j: 0,
            older_chunk: None,
            newer_chunk: None,
            carry: Vec::with_capacity(CHUNK * ENTRY),
            written: 0,
            fences: Vec::new(),
        }
    }

    /// Writes up to `budget` more output pairs; `true` once the output is complete.
    fn step(&mut self, table: &mut Table<u64, &'static [u8]>, budget: usize) -> Result<bool> {
        let mut done = 0;
        while done < budget && (self.i < self.older.len || self.j < self.newer.len) {
            let a = pair_at(table, &self.older, self.i, &mut self.older_chunk)?;
            let b = pair_at(table, &self.newer, self.j, &mut self.newer_chunk)?;
            let take = match (a, b) {
                (Some(a), Some(b)) if a <= b => {
                    self.i += 1;
                    a
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    self.j += 1;
                    b
                }
                (Some(a), None) => {
                    self.i += 1;
                    a
                }
                (None, None) => break,
            };
            if self.carry.is_empty() {
                self.fences.push(take.0);
            }
            self.carry.extend_from_slice(&take.0.to_be_bytes());
            self.carry.extend_from_slice(&take.1.to_be_bytes());
            if self.carry.len() == CHUNK * ENTRY {
                table.insert(key(self.out, self.written), self.carry.as_slice())?;
                self.written += 1;
                self.carry.clear();
            }
            done += 1;
        }
        let complete = self.i >= self.older.len && self.j >= self.newer.len;
        if complete && !self.carry.is_empty() {
            table.insert(key(self.out, self.written), self.carry.as_slice())?;
            self.written += 1;
            self.carry.clear();
        }
        Ok(complete)
    }
}

/// Pair `i` of `run`, reading its chunk through `cache`; `None` past the end.
fn pair_at(
    table: &Table<u64, &'static [u8]>,
    run: &Run,
    i: usize,
    cache: &mut Option<(usize, Vec<u8>)>,
) -> Result<Option<(u64, u64)>> {
    if i >= run.len {
        return Ok(None);
    }
    let c = i / CHUNK;
    if cache.as_ref().is_none_or(|(n, _)| *n != c) {
        *cache = Some((c, read_chunk(table, run.no, c)?));
    }
    match cache.as_ref() {
        Some((_, chunk)) if (i % CHUNK + 1) * ENTRY <= chunk.len() => {
            Ok(Some(entry_at(chunk, i % CHUNK)))
        }
        _ => Err(Error::Storage(format!(
            "id set: run {} is shorter than recorded",
            run.no
        ))),
    }
}

fn read_chunk(
    table: &impl ReadableTable<u64, &'static [u8]>,
    run: u32,
    c: usize,
) -> Result<Vec<u8>> {
    match table.get(key(run, c))? {
        Some(v) => Ok(v.value().to_vec()),
        None => Err(Error::Storage(format!(
            "id set: chunk {c} of run {run} is missing"
        ))),
    }
}

impl Run {
    fn describe(no: u32, bytes: &[u8]) -> Run {
        let len = bytes.len() / ENTRY;
        let fences = (0..len)
            .step_by(CHUNK)
            .map(|i| entry_at(bytes, i).0)
            .collect();
        Run { no, len, fences }
    }
}

/// A run of new pairs, sorted, encoded and described (fences): the part of adding a run that
/// needs no storage, done off the writer's path.
pub(crate) struct NewRun {
    bytes: Vec<u8>,
    /// Its number is given when it is stored.
    run: Run,
}

impl NewRun {
    pub(crate) fn new(mut entries: Vec<(u64, u64)>) -> NewRun {
        entries.sort_unstable();
        let bytes = encode(&entries);
        let run = Run::describe(0, &bytes);
        NewRun { bytes, run }
    }
}

fn write_chunks(table: &mut Table<u64, &'static [u8]>, no: u32, bytes: &[u8]) -> Result<()> {
    for (c, chunk) in bytes.chunks(CHUNK * ENTRY).enumerate() {
        table.insert(key(no, c), chunk)?;
    }
    Ok(())
}

fn write_run(table: &mut Table<u64, &'static [u8]>, no: u32, bytes: &[u8]) -> Result<Run> {
    write_chunks(table, no, bytes)?;
    Ok(Run::describe(no, bytes))
}

fn read_run(table: &Table<u64, &'static [u8]>, run: &Run) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(run.len * ENTRY);
    for item in table.range(chunk_keys(run.no))? {
        out.extend_from_slice(item?.1.value());
    }
    Ok(out)
}

fn delete_run(table: &mut Table<u64, &'static [u8]>, run: &Run) -> Result<()> {
    for c in 0..run.fences.len() {
        table.remove(key(run.no, c))?;
    }
    Ok(())
}

fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for (h, s) in entries {
        out.extend_from_slice(&h.to_be_bytes());
        out.extend_from_slice(&s.to_be_bytes());
    }
    out
}

fn merge(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (na, nb) = (a.len() / ENTRY, b.len() / ENTRY);
    let (mut i, mut j) = (0, 0);
    while i < na && j < nb {
        if entry_at(a, i) <= entry_at(b, j) {
            out.extend_from_slice(&a[i * ENTRY..(i + 1) * ENTRY]);
            i += 1;
        } else {
            out.extend_from_slice(&b[j * ENTRY..(j + 1) * ENTRY]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i * ENTRY..]);
    out.extend_from_slice(&b[j * ENTRY..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("ids");

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = redb::Database::create(dir.path().join("ids.redb")).expect("create");
        (dir, db)
    }

    /// Adds `runs` through `add`, one transaction each; returns the index.
    fn add(db: &redb::Database, mut index: IdIndex, runs: &[Vec<(u64, u64)>]) -> IdIndex {
        for r in runs {
            let tx = db.begin_write().expect("write");
            {
                let mut t = tx.open_table(IDS).expect("table");
                index.add(&mut t, r.clone()).expect("add");
            }
            tx.commit().expect("commit");
        }
        index
    }

    fn lookup(db: &redb::Database, index: &IdIndex, hashes: &[u64]) -> Vec<(u64, u64)> {
        let tx = db.begin_write().expect("write");
        let t = tx.open_table(IDS).expect("table");
        let mut sorted = hashes.to_vec();
        sorted.sort_unstable();
        let mut got: Vec<(u64, u64)> = index
            .candidates(&t, &sorted)
            .expect("candidates")
            .into_iter()
            .map(|(pos, seq)| (sorted[pos], seq))
            .collect();
        got.sort_unstable();
        got
    }

    fn mix(x: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes())
    }

    #[test]
    fn finds_every_stored_pair_and_nothing_else_across_merges_and_reopen() {
        let (_dir, db) = db();
        // Runs of uneven sizes, so that merges cascade and runs span several chunks.
        let mut seq = 0;
        let runs: Vec<Vec<(u64, u64)>> = [3000, 10, 700, 2500, 1, 5000, 64]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        seq += 1;
                        (mix(seq), seq)
                    })
                    .collect()
            })
            .collect();
        let index = add(&db, IdIndex::default(), &runs);
        assert!(index.runs.len() < runs.len(), "runs were merged");
        assert!(
            index.bloom_capacity > MIN_BLOOM,
            "the Bloom filter was rebuilt larger"
        );
        let stored: Vec<(u64, u64)> = runs.concat();
        let hashes: Vec<u64> = stored.iter().map(|p| p.0).collect();
        let mut want = stored.clone();
        want.sort_unstable();
        assert_eq!(lookup(&db, &index, &hashes), want);
        // Hashes never stored are not found (Bloom false positives are filtered by the chunk).
        let absent: Vec<u64> = (1_000_000..1_020_000).map(mix).collect();
        assert_eq!(lookup(&db, &index, &absent), vec![]);
        // The index loaded from the table answers the same.
        let tx = db.begin_write().expect("write");
        let loaded = IdIndex::load(&mut tx.open_table(IDS).expect("table")).expect("load");
        tx.commit().expect("commit");
        assert_eq!(lookup(&db, &loaded, &hashes), want);
    }

    #[test]
    fn one_hash_under_many_seqs_spanning_chunks_is_found_whole() {
        let (_dir, db) = db();
        let colliding: Vec<(u64, u64)> = (1..=(CHUNK as u64 * 2 + 5)).map(|s| (77, s)).collect();
        let others: Vec<(u64, u64)> = (10_000..10_500).map(|s| (mix(s), s)).collect();
        let index = add(&db, IdIndex::default(), &[others, colliding.clone()]);
        assert_eq!(lookup(&db, &index, &[77]), colliding);
    }

    /// Stored pairs counted straight from the table (each pair once: no leftovers).
    fn stored_pairs(db: &redb::Database) -> usize {
        let tx = db.begin_read().expect("read");
        let t = tx.open_table(IDS).expect("table");
        t.iter()
            .expect("iter")
            .map(|item| {
                let (k, v) = item.expect("item");
                if k.value() == MERGING {
                    0
                } else {
                    v.value().len() / ENTRY
                }
            })
            .sum()
    }

    #[test]
    fn large_merges_advance_step_by_step_and_survive_a_crash_midway() {
        let (_dir, db) = db();
        let mut index = IdIndex::default();
        let mut stored: Vec<(u64, u64)> = Vec::new();
        let mut steps_seen = 0;
        let mut crashed = false;
        for r in 0..240u64 {
            let run: Vec<(u64, u64)> = (0..500)
                .map(|k| (mix(r * 500 + k), r * 500 + k + 1))
                .collect();
            stored.extend(&run);
            index = add(&db, index, &[run]);
            if index.merge.is_some() {
                steps_seen += 1;
                // Mid-merge, every stored pair is found (through the merge's inputs).
                if r % 7 == 0 {
                    let sample: Vec<u64> = stored.iter().step_by(37).map(|p| p.0).collect();
                    assert_eq!(lookup(&db, &index, &sample).len(), sample.len());
                }
                if !crashed && r > 120 {
                    // A crash: the in-memory merge is lost; loading drops its partial output.
                    crashed = true;
                    let tx = db.begin_write().expect("write");
                    index = IdIndex::load(&mut tx.open_table(IDS).expect("table")).expect("load");
                    tx.commit().expect("commit");
                    assert!(index.merge.is_none());
                    assert_eq!(
                        stored_pairs(&db),
                        stored.len(),
                        "partial output left behind"
                    );
                }
            }
        }
        assert!(
            steps_seen > 5,
            "no large merge took several commits ({steps_seen})"
        );
        assert!(crashed, "the crash was never simulated");
        // Everything is found exactly once, and the table holds each pair once (a merge in
        // progress holds its inputs and part of its output: count once it is done).
        let hashes: Vec<u64> = stored.iter().map(|p| p.0).collect();
        let mut want = stored.clone();
        want.sort_unstable();
        assert_eq!(lookup(&db, &index, &hashes), want);
        while index.merge.is_some() {
            index = add(&db, index, &[vec![]]);
        }
        assert_eq!(stored_pairs(&db), stored.len());
        assert!(index.runs.len() <= 12, "{} runs", index.runs.len());
    }

    #[test]
    fn the_bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::with_capacity(100_000);
        for k in 0..100_000u64 {
            b.insert(mix(k));
        }
        assert!((0..100_000u64).all(|k| b.contains(mix(k))));
        let false_hits = (1_000_000..1_100_000u64)
            .filter(|&k| b.contains(mix(k)))
            .count();
        // 10 bits and 7 probes per id, blocked: about 1 %.
        assert!(
            false_hits < 2_500,
            "{false_hits} false positives in 100,000"
        );
    }
}
