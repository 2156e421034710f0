//! Events encoded for the log ahead of the append: the part of storing that parallelises.
//!
//! Each event is archived (rkyv) with `seq` and `ingested_ms` left zero; the writer patches the
//! two in place just before chaining. rkyv puts the root object at the end of an archive and
//! lays a struct out in field order (`repr(C)`), so both sit at fixed offsets from the end.

use crate::block;
use crate::dedup;
use crate::error::{Error, Result};
use crate::event::ArchivedStoredEvent;
use crate::event_ref::{EventRef, StoredEventRef};

const ROOT: usize = std::mem::size_of::<ArchivedStoredEvent>();

/// A batch of archived events in one buffer.
#[derive(Default)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    id_hashes: Vec<Option<u64>>,
    arena: rkyv::ser::allocator::Arena,
    /// The batch's own repeated ids, once found.
    repeats: Option<Repeats>,
}

/// Which events of a batch repeat the id of an earlier event of the same batch.
pub(crate) struct Repeats {
    /// For a repeat, the index of the first event with the same id.
    pub repeat_of: Vec<Option<usize>>,
    /// `(id hash, index)` of the first event of each id, by hash.
    pub firsts: Vec<(u64, usize)>,
}

impl EncodedBatch {
    pub fn with_capacity(events: usize) -> Self {
        EncodedBatch {
            bytes: Vec::with_capacity(events * 256),
            spans: Vec::with_capacity(events),
            id_hashes: Vec::with_capacity(events),
            arena: rkyv::ser::allocator::Arena::new(),
            repeats: None,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.repeats = None;
        self.bytes.clear();
        self.spans.clear();
        self.id_hashes.clear();
    }

    /// Makes room for `events` more events of about `bytes` archive bytes in all.
    pub fn reserve(&mut self, events: usize, bytes: usize) {
        self.bytes.reserve(bytes);
        self.spans.reserve(events);
        self.id_hashes.reserve(events);
    }

    /// Archives `event` into the batch (an owned [`Event`] through [`Event::borrowed`]).
    pub fn push(&mut self, event: &EventRef) -> Result<()> {
        let id_hash = event.id.as_deref().map(dedup::hash_id);
        let stored = StoredEventRef {
            seq: 0,
            ingested_ms: 0,
            event,
        };
        let start = self.bytes.len();
        let bytes = std::mem::take(&mut self.bytes);
        self.bytes = rkyv::api::low::to_bytes_in_with_alloc::<_, _, rkyv::rancor::Error>(
            &stored,
            bytes,
            self.arena.acquire(),
        )?;
        if self.bytes.len() - start < ROOT {
            return Err(Error::Storage("archive shorter than its root".into()));
        }
        self.spans.push((start, self.bytes.len()));
        self.id_hashes.push(id_hash);
        self.repeats = None;
        Ok(())
    }

    /// Moves the events of `other` to the end of this batch (group commits gather the
    /// batches of several requests), leaving `other` empty.
    pub fn append(&mut self, other: &mut EncodedBatch) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.spans
            .extend(other.spans.iter().map(|&(a, z)| (a + base, z + base)));
        self.id_hashes.extend_from_slice(&other.id_hashes);
        self.repeats = None;
        other.clear();
    }

    /// Finds the events that repeat an id earlier in the batch. Bulk ingest calls it on the
    /// parser threads, so that the writer does not; the writer finds them if no one did.
    pub fn find_repeats(&mut self) -> Result<()> {
        if self.repeats.is_none() {
            self.repeats = Some(self.repeats()?);
        }
        Ok(())
    }

    /// The repeats [`Self::find_repeats`] found (found now if it was not called).
    pub(crate) fn take_repeats(&mut self) -> Result<Repeats> {
        match self.repeats.take() {
            Some(r) => Ok(r),
            None => self.repeats(),
        }
    }

    /// Sorts id hashes and compares ids only where hashes are equal.
    fn repeats(&self) -> Result<Repeats> {
        let n = self.len();
        let mut hashed: Vec<(u64, usize)> = (0..n)
            .filter_map(|i| self.id_hash(i).map(|h| (h, i)))
            .collect();
        hashed.sort_unstable();
        let mut repeat_of: Vec<Option<usize>> = vec![None; n];
        let mut firsts: Vec<(u64, usize)> = Vec::with_capacity(hashed.len());
        let mut g = 0;
        while g < hashed.len() {
            let mut end = g + 1;
            while end < hashed.len() && hashed[end].0 == hashed[g].0 {
                end += 1;
            }
            for j in g..end {
                let (h, i) = hashed[j];
                let mut first = None;
                for &(_, k) in &hashed[g..j] {
                    if repeat_of[k].is_none() && self.id(k)? == self.id(i)? {
                        first = Some(k);
                        break;
                    }
                }
                match first {
                    Some(k) => repeat_of[i] = Some(k),
                    None => firsts.push((h, i)),
                }
            }
            g = end;
        }
        Ok(Repeats { repeat_of, firsts })
    }

    pub(crate) fn id_hash(&self, i: usize) -> Option<u64> {
        self.id_hashes[i]
    }

    /// The client id of event `i` (read back from its archive; only needed on hash matches).
    pub(crate) fn id(&self, i: usize) -> Result<Option<&str>> {
        let (a, z) = self.spans[i];
        Ok(block::access(0, &self.bytes[a..z])?.event.id.as_deref())
    }

    /// Sets the ledger's fields of event `i` and returns its archive bytes. Stamping changes
    /// no id, so the repeats found stay valid.
    pub(crate) fn stamp(&mut self, i: usize, seq: u64, ingested_ms: i64) -> &[u8] {
        let (a, z) = self.spans[i];
        let root = z - ROOT;
        self.bytes[root..root + 8].copy_from_slice(&seq.to_le_bytes());
        self.bytes[root + 8..root + 16].copy_from_slice(&ingested_ms.to_le_bytes());
        &self.bytes[a..z]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StoredEvent;

    #[test]
    fn stamping_sets_seq_and_ingest_time() {
        let mut b = EncodedBatch::default();
        let ev = crate::parse_event(
            r#"{"type":"run.completed","id":"x","run_id":"r","ts":1763700000000,"output":{"a":1}}"#,
        )
        .unwrap();
        b.push(&ev.borrowed()).unwrap();
        let bytes = b.stamp(0, 77, 1_763_700_000_123).to_vec();
        let a = block::access(77, &bytes).unwrap();
        assert_eq!(a.seq.to_native(), 77);
        assert_eq!(a.ingested_ms.to_native(), 1_763_700_000_123);
        assert_eq!(a.event.run_id.as_str(), "r");
        assert_eq!(b.id(0).unwrap(), Some("x"));
        let back: StoredEvent = rkyv::deserialize::<_, rkyv::rancor::Error>(a).unwrap();
        assert_eq!(back.event, ev);
    }

    #[test]
    fn appended_batches_keep_every_event() {
        let line = |id: &str| {
            format!(r#"{{"type":"run.completed","id":"{id}","run_id":"r","ts":1763700000000}}"#)
        };
        let (mut a, mut b) = (EncodedBatch::default(), EncodedBatch::default());
        for (to_a, id) in [(true, "x"), (false, "y"), (false, "x")] {
            let batch = if to_a { &mut a } else { &mut b };
            batch
                .push(&crate::parse::parse_event_ref(&line(id), 1 << 20).unwrap())
                .unwrap();
        }
        a.find_repeats().unwrap();
        a.append(&mut b);
        assert!(b.is_empty());
        let ids: Vec<_> = (0..a.len()).map(|i| a.id(i).unwrap().unwrap()).collect();
        assert_eq!(ids, ["x", "y", "x"]);
        assert_eq!(a.take_repeats().unwrap().repeat_of, [None, None, Some(0)]);
        assert_eq!(
            block::access(3, a.stamp(2, 3, 0)).unwrap().seq.to_native(),
            3
        );
    }

    /// The borrowed twins must archive to the owned types' bytes: the log's format is the
    /// owned model's, and readers deserialise into it.
    #[test]
    fn borrowed_events_archive_as_owned_ones() {
        let cfg = crate::workload::WorkloadConfig::new(7, 40);
        let mut lines = crate::workload::ndjson_lines(&cfg);
        // Every type, escapes (owned strings), unknown fields and both error forms.
        lines.extend(
            [
                r#"{"type":"run.started","id":"a\u0041","ts":"2025-11-21T04:40:00.010Z","run_id":"r\n1","run":{"operation":"select","from":"Email","options":{"parentRunId":"p","chainId":"c","stepIndex":2},"input":{"q":"\"x\""},"custom":[1]},"x":{"y":null}}"#,
                r#"{"type":"run.progress","run_id":"r","ts":1763700000000,"path":"output.text","op":"append","value":"t\u00e9"}"#,
                r#"{"type":"run.waiting","run_id":"r","ts":1763700000000,"step_id":"s","prompt":"ok?"}"#,
                r#"{"type":"run.resumed","run_id":"r","ts":1763700000000,"stepId":"s","data":{"a":1}}"#,
                r#"{"type":"run.completed","run_id":"r","ts":1763700000000,"durationMs":5}"#,
                r#"{"type":"run.failed","run_id":"r","ts":1763700000000,"error":{"message":"m","code":42,"stack":"s","more":true}}"#,
                r#"{"type":"run.failed","run_id":"r","ts":1763700000000,"error":"plain"}"#,
                r#"{"type":"run.cancelled","run_id":"r","ts":1763700000000,"reason":"user"}"#,
                r#"{"type":"doc.updated","run_id":"r","ts":1763700000000,"doctype":"Task","name":"T-1","data":{"s":1},"before":{"s":0}}"#,
                r#"{"type":"doc.deleted","run_id":"r","ts":1763700000000,"doctype":"Task","name":"T-1"}"#,
                r#"{"type":"run.checkpoint","run":{"id":"ui","status":"failed","operation":"select","timestamp":1763700000050,"duration":3,"output":{"d":[]},"error":{"message":"e"},"zz":1}}"#,
            ]
            .map(String::from),
        );
        let mut kinds = std::collections::BTreeSet::new();
        for line in &lines {
            let borrowed = crate::parse::parse_event_ref(line, 1 << 20).unwrap();
            let owned = borrowed.clone().into_owned();
            assert_eq!(owned.borrowed(), borrowed);
            kinds.insert(owned.body.type_name());
            let mut b = EncodedBatch::default();
            b.push(&borrowed).unwrap();
            let stored = StoredEvent {
                seq: 0,
                ingested_ms: 0,
                event: owned,
            };
            let expected = rkyv::to_bytes::<rkyv::rancor::Error>(&stored).unwrap();
            assert_eq!(&b.bytes[..], &expected[..], "{line}");
        }
        assert_eq!(kinds.len(), crate::event::TYPES.len());
    }
}
