//! Exact deduplication of client event ids for the ledger's whole life.
//!
//! A B-tree keyed by random ids rewrites most of its pages on every large commit, so ids live
//! in a small log-structured set instead: each commit adds one sorted run of
//! `(xxh3(id), seq)` pairs, and runs are merged while a run is not more than twice the size of
//! the next newer one, which keeps O(log n) runs. A lookup walks each run once with the batch's
//! sorted hashes (galloping search). A hash match is only a candidate: the stored event at that
//! seq is read and its id compared, so a 64-bit collision never drops an event.

use redb::{ReadableTable, Table};

use crate::error::Result;

pub(crate) const ENTRY: usize = 16;

pub(crate) fn hash_id(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

fn entry_at(run: &[u8], i: usize) -> (u64, u64) {
    let b = &run[i * ENTRY..(i + 1) * ENTRY];
    let mut h = [0u8; 8];
    let mut s = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    s.copy_from_slice(&b[8..]);
    (u64::from_be_bytes(h), u64::from_be_bytes(s))
}

/// For each hash of `sorted` (ascending), every seq stored under that hash, as
/// `(position in sorted, seq)`.
pub(crate) fn candidates(
    table: &impl ReadableTable<u64, &'static [u8]>,
    sorted: &[u64],
) -> Result<Vec<(usize, u64)>> {
    let mut out = Vec::new();
    if sorted.is_empty() {
        return Ok(out);
    }
    for item in table.iter()? {
        let (_, v) = item?;
        let run = v.value();
        let n = run.len() / ENTRY;
        let mut lo = 0usize;
        for (pos, &h) in sorted.iter().enumerate() {
            // Gallop forward from the last position, then binary search in the bracket.
            let mut step = 1usize;
            let mut hi = lo;
            while hi < n && entry_at(run, hi).0 < h {
                lo = hi + 1;
                hi = lo + step;
                step *= 2;
            }
            let mut a = lo;
            let mut b = hi.min(n);
            while a < b {
                let m = (a + b) / 2;
                if entry_at(run, m).0 < h {
                    a = m + 1;
                } else {
                    b = m;
                }
            }
            lo = a;
            let mut i = a;
            while i < n {
                let (eh, seq) = entry_at(run, i);
                if eh != h {
                    break;
                }
                out.push((pos, seq));
                i += 1;
            }
            if lo >= n {
                break;
            }
        }
    }
    Ok(out)
}

/// Adds one run of `(hash, seq)` pairs (any order) and merges runs as needed.
pub(crate) fn add_run(
    table: &mut Table<u64, &'static [u8]>,
    mut entries: Vec<(u64, u64)>,
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_unstable();
    let next_key = match table.last()? {
        Some((k, _)) => k.value() + 1,
        None => 0,
    };
    table.insert(next_key, encode(&entries).as_slice())?;
    loop {
        let (newer_key, older_key, merge_them) = {
            let mut last_two = table.iter()?.rev().take(2);
            match (last_two.next(), last_two.next()) {
                (Some(n), Some(o)) => {
                    let (nk, nv) = n?;
                    let (ok, ov) = o?;
                    let merge = ov.value().len() <= 2 * nv.value().len();
                    (nk.value(), ok.value(), merge)
                }
                _ => break,
            }
        };
        if !merge_them {
            break;
        }
        let merged = match (table.get(older_key)?, table.get(newer_key)?) {
            (Some(o), Some(n)) => merge(o.value(), n.value()),
            _ => break,
        };
        table.remove(newer_key)?;
        table.insert(older_key, merged.as_slice())?;
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
