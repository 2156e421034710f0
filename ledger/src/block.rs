//! Byte layout of a log block: several events in one redb value.
//!
//! ```text
//! u32 count | u32 offsets[count + 1] | entry 0 | entry 1 | ...
//! entry = 32-byte BLAKE3 chain hash | rkyv archive of StoredEvent (unaligned format)
//! ```
//! All integers little-endian; offsets are relative to the first entry. One value per commit
//! (or per `MAX_BLOCK_*`) instead of one B-tree row per event is what lets a commit write a
//! million events a second: redb then writes a few large values, in increasing key order.

use crate::error::{Error, Result};
use crate::event::ArchivedStoredEvent;

/// Events per block at most.
pub const MAX_BLOCK_EVENTS: usize = 4096;
/// Size a block stays within (a single larger event makes a block of its own). redb stores a
/// large value in a power-of-two run of pages, so a block just over 64 KiB would take 128 KiB:
/// stay under it, leaving room for redb's leaf header and the key. Small enough that reading
/// one event (trace, show, folds) reads 16 pages, large enough that a commit writes few values.
pub const MAX_BLOCK_BYTES: usize = (64 << 10) - 512;

pub const HASH_LEN: usize = 32;
pub type Hash = [u8; HASH_LEN];

/// Builds one block from `(hash, archive bytes)` entries.
#[derive(Default)]
pub struct BlockBuilder {
    offsets: Vec<u32>,
    data: Vec<u8>,
    /// The finished block; reused, as every buffer on the append path (fresh memory costs a
    /// page fault and the kernel's zeroing per 4 KiB).
    out: Vec<u8>,
}

impl BlockBuilder {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
    /// Whether an entry with an archive of `archive_len` bytes still fits in this block.
    pub fn fits(&self, archive_len: usize) -> bool {
        self.is_empty()
            || (self.len() < MAX_BLOCK_EVENTS
                && self.encoded_len() + 4 + HASH_LEN + archive_len <= MAX_BLOCK_BYTES)
    }

    /// The length [`Self::finish`] would return.
    pub fn encoded_len(&self) -> usize {
        4 + 4 * (self.offsets.len() + 1) + self.data.len()
    }

    /// Appends an entry chained to `prev`; returns the entry's hash.
    pub fn push(&mut self, prev: &Hash, archive: &[u8]) -> Hash {
        let hash = chain(prev, archive);
        self.offsets.push(self.data.len() as u32);
        self.data.extend_from_slice(&hash);
        self.data.extend_from_slice(archive);
        hash
    }
    /// The block's bytes, valid until the next call; the builder is left empty.
    pub fn finish(&mut self) -> &[u8] {
        let n = self.offsets.len();
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for off in &self.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data);
        self.offsets.clear();
        self.data.clear();
        out
    }
}

/// A block read in place.
pub struct Block<'a> {
    bytes: &'a [u8],
    count: usize,
    data_start: usize,
    first_seq: u64,
}

impl<'a> Block<'a> {
    /// Checks the header of a stored block whose first event is `first_seq`.
    pub fn new(first_seq: u64, bytes: &'a [u8]) -> Result<Self> {
        let bad = |why: &str| Error::Corrupt {
            seq: first_seq,
            why: format!("block header: {why}"),
        };
        let count = read_u32(bytes, 0).ok_or_else(|| bad("too short"))? as usize;
        let data_start = 4 + 4 * (count + 1);
        if count == 0 || bytes.len() < data_start {
            return Err(bad("bad event count"));
        }
        let block = Block {
            bytes,
            count,
            data_start,
            first_seq,
        };
        let last = block.offset(count).ok_or_else(|| bad("bad offsets"))?;
        if data_start + last != bytes.len() {
            return Err(bad("length does not match offsets"));
        }
        Ok(block)
    }

    pub fn len(&self) -> usize {
        self.count
    }
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }
    fn offset(&self, i: usize) -> Option<usize> {
        read_u32(self.bytes, 4 + 4 * i).map(|v| v as usize)
    }

    /// The raw entry `i`: its chain hash and its archive bytes.
    pub fn entry(&self, i: usize) -> Result<(&'a Hash, &'a [u8])> {
        let seq = self.first_seq + i as u64;
        let bad = |why: &str| Error::Corrupt {
            seq,
            why: why.to_string(),
        };
        if i >= self.count {
            return Err(bad("index past the block"));
        }
        let (a, b) = match (self.offset(i), self.offset(i + 1)) {
            (Some(a), Some(b)) if a + HASH_LEN <= b => (a, b),
            _ => return Err(bad("bad entry offsets")),
        };
        let entry = self
            .bytes
            .get(self.data_start + a..self.data_start + b)
            .ok_or_else(|| bad("entry out of bounds"))?;
        let (hash, archive) = entry.split_at(HASH_LEN);
        let hash: &Hash = hash.try_into().map_err(|_| bad("short hash"))?;
        Ok((hash, archive))
    }

    /// Event `i`, checked and read in place.
    pub fn event(&self, i: usize) -> Result<(&'a Hash, &'a ArchivedStoredEvent)> {
        let (hash, archive) = self.entry(i)?;
        Ok((hash, access(self.first_seq + i as u64, archive)?))
    }
}

/// Checked zero-copy access to a stored event's archive.
pub fn access(seq: u64, archive: &[u8]) -> Result<&ArchivedStoredEvent> {
    // rkyv's error says nothing more in a release build.
    rkyv::access::<ArchivedStoredEvent, rkyv::rancor::Error>(archive).map_err(|_| Error::Corrupt {
        seq,
        why: "its bytes are not a valid stored event".into(),
    })
}

/// Zero-copy access to a byte-for-byte copy of an archive that [`access`] has already checked.
///
/// # Safety
/// `archive` must equal bytes for which [`access`] returned `Ok`.
pub unsafe fn access_prechecked(archive: &[u8]) -> &ArchivedStoredEvent {
    // SAFETY: the caller guarantees these exact bytes passed the full bytecheck validation;
    // with the `unaligned` format there is no alignment requirement a copy could break.
    unsafe { rkyv::access_unchecked::<ArchivedStoredEvent>(archive) }
}

/// `BLAKE3(previous hash ‖ stored bytes)`.
pub fn chain(prev: &Hash, archive: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(archive);
    *h.finalize().as_bytes()
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub fn hex(h: &Hash) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
