//! Exact deduplication of client event ids for the ledger's whole life.
//!
//! A B-tree keyed by random ids rewrites most of its pages on every large commit, so ids live
//! in a small log-structured set instead: each commit adds one sorted run of `(xxh3(id), seq)`
//! pairs, and the two newest runs are merged while the older is not more than twice the size of
//! the newer, which keeps O(log n) runs and writes each pair O(log n) times.
//!
//! On disk a run is split into chunks of [`CHUNK`] pairs (16 KiB), one redb value each, keyed
//! `run number << 32 | chunk number`. In memory ([`IdIndex`]) each run keeps a Bloom filter of
//! its hashes and the first hash of each chunk: a lookup reads a chunk only on a Bloom hit (a
//! stored id, or about 1 % of new ones), so what a commit reads does not grow with the ledger.
//! A hash match is still only a candidate: the caller compares the stored event's id, so a
//! 64-bit collision never drops an event.

use std::sync::Arc;

use redb::{ReadableTable, Table};

use crate::error::{Error, Result};

pub(crate) const ENTRY: usize = 16;
/// Pairs per stored chunk.
const CHUNK: usize = 1024;
/// Bloom filter size per pair, in bits, and probes per lookup: about 1 % false positives.
const BLOOM_BITS: usize = 10;
const PROBES: u64 = 7;

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

/// A Bloom filter over 64-bit hashes (already uniform: probes are derived by double hashing).
struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn with_capacity(entries: usize) -> Bloom {
        Bloom {
            bits: vec![0; (entries * BLOOM_BITS).div_ceil(64).max(1)],
        }
    }
    /// The 64-bit word and bit mask of each probe of `h`.
    fn probe(&self, h: u64, i: u64) -> (usize, u64) {
        let m = self.bits.len() as u64 * 64;
        let bit = h.wrapping_add(i.wrapping_mul(h.rotate_left(32) | 1)) % m;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }
    fn insert(&mut self, h: u64) {
        for i in 0..PROBES {
            let (w, mask) = self.probe(h, i);
            self.bits[w] |= mask;
        }
    }
    fn contains(&self, h: u64) -> bool {
        (0..PROBES).all(|i| {
            let (w, mask) = self.probe(h, i);
            self.bits[w] & mask != 0
        })
    }
}

/// One sorted run: where its chunks are and what they may hold.
struct Run {
    no: u32,
    len: usize,
    /// The first hash of each chunk.
    fences: Vec<u64>,
    bloom: Bloom,
}

/// The in-memory side of the id set: one entry per stored run, oldest first. Immutable: a
/// commit builds the next index and the ledger swaps it in only once the commit is durable.
#[derive(Clone, Default)]
pub(crate) struct IdIndex {
    runs: Vec<Arc<Run>>,
}

impl IdIndex {
    /// Reads every stored run (once, when a ledger first appends).
    pub(crate) fn load(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<IdIndex> {
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
        let runs = runs
            .into_iter()
            .map(|(no, bytes)| Arc::new(Run::describe(no, &bytes)))
            .collect();
        Ok(IdIndex { runs })
    }

    /// For each hash of `sorted` (ascending), every seq stored under that hash, as
    /// `(position in sorted, seq)`.
    pub(crate) fn candidates(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        sorted: &[u64],
    ) -> Result<Vec<(usize, u64)>> {
        let mut out = Vec::new();
        for run in &self.runs {
            // The chunk read last: sorted hashes often fall in the same one.
            let mut cached: Option<(usize, Vec<u8>)> = None;
            for (pos, &h) in sorted.iter().enumerate() {
                if !run.bloom.contains(h) {
                    continue;
                }
                // Equal hashes may run over from the chunk before the first fence >= h.
                let mut c = run.fences.partition_point(|&f| f < h).saturating_sub(1);
                while c < run.fences.len() && run.fences[c] <= h {
                    if cached.as_ref().is_none_or(|(n, _)| *n != c) {
                        let bytes = match table.get(key(run.no, c))? {
                            Some(v) => v.value().to_vec(),
                            None => {
                                return Err(Error::Storage(format!(
                                    "id set: chunk {c} of run {} is missing",
                                    run.no
                                )))
                            }
                        };
                        cached = Some((c, bytes));
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

    /// Stores one more run of `(hash, seq)` pairs (any order), merges runs as needed, and
    /// returns the index describing the table afterwards.
    pub(crate) fn with_run(
        &self,
        table: &mut Table<u64, &'static [u8]>,
        mut entries: Vec<(u64, u64)>,
    ) -> Result<IdIndex> {
        let mut next = self.clone();
        if entries.is_empty() {
            return Ok(next);
        }
        entries.sort_unstable();
        let mut bytes = encode(&entries);
        let mut no = next_run_no(table)?;
        next.runs.push(Arc::new(write_run(table, no, &bytes)?));
        while let [.., older, newer] = next.runs.as_slice() {
            if older.len > 2 * newer.len {
                break;
            }
            let (older, newer) = (Arc::clone(older), Arc::clone(newer));
            let merged = merge(&read_run(table, &older)?, &read_run(table, &newer)?);
            delete_run(table, &older)?;
            delete_run(table, &newer)?;
            no += 1;
            bytes = merged;
            next.runs.truncate(next.runs.len() - 2);
            next.runs.push(Arc::new(write_run(table, no, &bytes)?));
        }
        Ok(next)
    }
}

impl Run {
    fn describe(no: u32, bytes: &[u8]) -> Run {
        let len = bytes.len() / ENTRY;
        let mut bloom = Bloom::with_capacity(len);
        let mut fences = Vec::with_capacity(len.div_ceil(CHUNK));
        for i in 0..len {
            let (h, _) = entry_at(bytes, i);
            if i % CHUNK == 0 {
                fences.push(h);
            }
            bloom.insert(h);
        }
        Run {
            no,
            len,
            fences,
            bloom,
        }
    }
}

fn next_run_no(table: &Table<u64, &'static [u8]>) -> Result<u32> {
    let last = table.last()?.map(|(k, _)| (k.value() >> 32) as u32);
    match last {
        None => Ok(0),
        Some(n) => n
            .checked_add(1)
            .ok_or_else(|| Error::Storage("id set: run numbers exhausted".into())),
    }
}

fn write_run(table: &mut Table<u64, &'static [u8]>, no: u32, bytes: &[u8]) -> Result<Run> {
    for (c, chunk) in bytes.chunks(CHUNK * ENTRY).enumerate() {
        table.insert(key(no, c), chunk)?;
    }
    Ok(Run::describe(no, bytes))
}

fn read_run(table: &Table<u64, &'static [u8]>, run: &Run) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(run.len * ENTRY);
    for item in table.range(key(run.no, 0)..=key(run.no, u32::MAX as usize))? {
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

    /// Adds `runs` through `with_run`, one transaction each; returns the index.
    fn add(db: &redb::Database, mut index: IdIndex, runs: &[Vec<(u64, u64)>]) -> IdIndex {
        for r in runs {
            let tx = db.begin_write().expect("write");
            {
                let mut t = tx.open_table(IDS).expect("table");
                index = index.with_run(&mut t, r.clone()).expect("with_run");
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
        let stored: Vec<(u64, u64)> = runs.concat();
        let hashes: Vec<u64> = stored.iter().map(|p| p.0).collect();
        let mut want = stored.clone();
        want.sort_unstable();
        assert_eq!(lookup(&db, &index, &hashes), want);
        // Hashes never stored are not found (Bloom false positives are filtered by the chunk).
        let absent: Vec<u64> = (1_000_000..1_020_000).map(mix).collect();
        assert_eq!(lookup(&db, &index, &absent), vec![]);
        // The index loaded from the table answers the same.
        let tx = db.begin_read().expect("read");
        let loaded = IdIndex::load(&tx.open_table(IDS).expect("table")).expect("load");
        assert_eq!(loaded.runs.len(), index.runs.len());
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
}
