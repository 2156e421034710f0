//! Full-text and JSON-path search over what runs took and gave, with tantivy.
//!
//! # The index
//! One tantivy document per run, in the directory `<db path>.search/` beside the ledger. A
//! run's document holds its input, output, error, streamed text (the `run.progress` updates
//! folded into its output, input or extra fields), waiting prompts, resumed data and the
//! `data`/`before` of its own `doc.*` events, as:
//! - `text` — every string and number of all of these, the default search field;
//! - JSON fields `input`, `output`, `error`, `data` (records' data), `before`, `resumed`,
//!   `extra` (other run fields and progress paths), queried by path:
//!   `input.where.name:Task-00001`, `output.data.subject:invoice`;
//! - `run_id`, `operation`, `doctype`, `status`, `template` (template or flow), `owner`,
//!   `agent`: untokenized fast fields (filters, and `status:failed` in a query);
//! - `started` (i64 ms, fast): the run's start — else its end, else its last event — for time
//!   ranges.
//!
//! Text is tokenized by [`tokenizer`]: words for space-separated scripts, bigrams for CJK.
//! What is indexed of huge values is bounded: see [`doc`] (first 64 KiB of each string, 256
//! KiB per field).
//!
//! # Keeping up with the log
//! The index records the last seq it contains, and the chain hash of that event, in the
//! payload of each commit. [`catch_up`] reads the events after it in batches
//! ([`BATCH_EVENTS`]); for every run a batch touches it deletes the run's document and adds it
//! again, built from the run's current projected state and all its events — so a filter on
//! `status` reflects a completion that arrived after the input was indexed, and re-applying a
//! batch after a crash neither loses nor doubles a run. Each batch is one commit. An index whose
//! payload does not match the ledger (another ledger at the same path, another format) is
//! dropped and built again.

mod answer;
pub mod doc;
mod index;
mod read_only_dir;
pub mod tokenizer;

pub use answer::{parse_query, search, SearchRequest, SNIPPET_CHARS};
pub use index::{catch_up, catch_up_with, index_dir, indexed_seq, rebuild, CatchUpOptions};

/// Events read per index commit at most.
pub const BATCH_EVENTS: u64 = 100_000;
/// Text per batch at most (about: see [`doc::Parts::weight`]) before it is committed. tantivy
/// queues up to 10,000 documents ahead of its indexing threads; committing after this many
/// bytes bounds that queue for runs with huge payloads.
pub const BATCH_BYTES: usize = 32 << 20;
/// Memory of the index writer (split between its threads).
pub const WRITER_HEAP_BYTES: usize = 64 << 20;
