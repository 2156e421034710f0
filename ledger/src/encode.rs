//! Events encoded for the log ahead of the append: the part of storing that parallelises.
//!
//! Each event is archived (rkyv) with `seq` and `ingested_ms` left zero; the writer patches the
//! two in place just before chaining. rkyv puts the root object at the end of an archive and
//! lays a struct out in field order (`repr(C)`), so both sit at fixed offsets from the end.

use crate::block;
use crate::dedup;
use crate::error::{Error, Result};
use crate::event::{ArchivedStoredEvent, Event, StoredEvent};

const ROOT: usize = std::mem::size_of::<ArchivedStoredEvent>();

/// A batch of archived events in one buffer.
#[derive(Default)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    id_hashes: Vec<Option<u64>>,
    arena: rkyv::ser::allocator::Arena,
}

impl EncodedBatch {
    pub fn with_capacity(events: usize) -> Self {
        EncodedBatch {
            bytes: Vec::with_capacity(events * 256),
            spans: Vec::with_capacity(events),
            id_hashes: Vec::with_capacity(events),
            arena: rkyv::ser::allocator::Arena::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Archives `event` into the batch.
    pub fn push(&mut self, event: Event) -> Result<()> {
        let id_hash = event.id.as_deref().map(dedup::hash_id);
        let stored = StoredEvent {
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
        Ok(())
    }

    pub(crate) fn id_hash(&self, i: usize) -> Option<u64> {
        self.id_hashes[i]
    }

    /// The client id of event `i` (read back from its archive; only needed on hash matches).
    pub(crate) fn id(&self, i: usize) -> Result<Option<&str>> {
        let (a, z) = self.spans[i];
        Ok(block::access(0, &self.bytes[a..z])?.event.id.as_deref())
    }

    /// Sets the ledger's fields of event `i` and returns its archive bytes.
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

    #[test]
    fn stamping_sets_seq_and_ingest_time() {
        let mut b = EncodedBatch::default();
        let ev = crate::parse_event(
            r#"{"type":"run.completed","id":"x","run_id":"r","ts":1763700000000,"output":{"a":1}}"#,
        )
        .unwrap();
        b.push(ev.clone()).unwrap();
        let bytes = b.stamp(0, 77, 1_763_700_000_123).to_vec();
        let a = block::access(77, &bytes).unwrap();
        assert_eq!(a.seq.to_native(), 77);
        assert_eq!(a.ingested_ms.to_native(), 1_763_700_000_123);
        assert_eq!(a.event.run_id.as_str(), "r");
        assert_eq!(b.id(0).unwrap(), Some("x"));
        let back: StoredEvent = rkyv::deserialize::<_, rkyv::rancor::Error>(a).unwrap();
        assert_eq!(back.event, ev);
    }
}
