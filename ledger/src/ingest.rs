//! Bulk ingest of NDJSON: read, parse on every core, append in order.
//!
//! The input is cut into chunks at line ends; parser threads turn chunks into events while the
//! calling thread appends the previous chunk (one durable commit per chunk). Chunks are
//! appended in input order, so `seq` follows the lines.

use std::io::Read;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::encode::EncodedBatch;
use crate::error::Result;
use crate::log::{Ledger, Outcome};
use crate::parse::{parse_event_ref, Rejection, DEFAULT_MAX_EVENT_BYTES};

/// How many rejection reasons a report keeps (the counts cover all of them).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Settings of a bulk ingest.
///
/// # Defaults
/// - `max_event_bytes`: 16 MiB ([`DEFAULT_MAX_EVENT_BYTES`])
/// - `chunk_bytes`: 8 MiB of input per commit
/// - `parsers`: the number of cores
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub max_event_bytes: usize,
    pub chunk_bytes: usize,
    pub parsers: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            chunk_bytes: 8 << 20,
            parsers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: u64,
    pub reason: String,
}

/// The outcome of an ingest: counts, seq range and the first rejections.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub errors: Vec<LineError>,
    pub bytes: u64,
}

impl IngestReport {
    /// Folds the outcomes of one append into the report.
    pub fn add_outcomes(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Stored(seq) => {
                    self.accepted += 1;
                    self.first_seq.get_or_insert(*seq);
                    self.last_seq = Some(*seq);
                }
                Outcome::Duplicate(_) => self.duplicates += 1,
            }
        }
    }
    pub fn add_rejection(&mut self, line: u64, reason: &Rejection) {
        self.rejected += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError {
                line,
                reason: reason.0.clone(),
            });
        }
    }
}

/// Hooks an ingest calls as it goes, on the calling thread.
pub trait IngestSink {
    /// A line was rejected (`line` is 1-based).
    fn rejected(&mut self, _line: u64, _text: &[u8], _reason: &Rejection) -> Result<()> {
        Ok(())
    }
    /// A chunk was committed; `bytes` of input are done so far.
    fn committed(&mut self, _bytes: u64, _report: &IngestReport) -> Result<()> {
        Ok(())
    }
}

/// A sink that does nothing.
pub struct NoSink;
impl IngestSink for NoSink {}

struct Chunk {
    first_line: u64,
    bytes: Vec<u8>,
}

struct Parsed {
    events: EncodedBatch,
    /// `(line number, reason, line bytes)` of rejected lines.
    rejected: Vec<(u64, Rejection, Vec<u8>)>,
    bytes: u64,
}

/// `input` past a UTF-8 byte order mark at its start, if it has one. Editors on Windows write
/// one; RFC 8259 lets a parser ignore it, and line 1 was rejected as "invalid JSON: expected
/// value (column 1)" for a character nobody sees.
fn without_bom(mut input: impl Read) -> std::io::Result<impl Read> {
    let mut head = Vec::with_capacity(3);
    (&mut input).take(3).read_to_end(&mut head)?;
    if head == b"\xEF\xBB\xBF" {
        head.clear();
    }
    Ok(std::io::Cursor::new(head).chain(input))
}

/// Reads NDJSON from `input` to the end and appends every valid event. A rejected line never
/// stops the others; I/O and storage errors do (everything committed before stays stored).
/// A UTF-8 byte order mark at the start is skipped.
pub fn ingest_reader(
    ledger: &Ledger,
    input: impl Read + Send,
    opts: &IngestOptions,
    sink: &mut dyn IngestSink,
) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    let parsers = opts.parsers.max(1);
    std::thread::scope(|scope| -> Result<()> {
        let (job_tx, job_rx) = mpsc::sync_channel::<(Chunk, mpsc::SyncSender<Parsed>)>(parsers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        // In-order results: one receiver per chunk, queued in input order.
        let (order_tx, order_rx) = mpsc::sync_channel::<mpsc::Receiver<Parsed>>(parsers + 1);
        // Spent buffers go back upstream (input chunks to the reader, batches to the parsers):
        // a fresh 8 MiB buffer per chunk would cost a page fault and the kernel's zeroing per
        // page, a fifth of ingest's CPU.
        let (spare_chunk_tx, spare_chunk_rx) = mpsc::channel::<Vec<u8>>();
        let (spare_batch_tx, spare_batch_rx) = mpsc::channel::<EncodedBatch>();
        let spare_batch_rx = Arc::new(Mutex::new(spare_batch_rx));
        for _ in 0..parsers {
            let job_rx = Arc::clone(&job_rx);
            let spare_batch_rx = Arc::clone(&spare_batch_rx);
            let spare_chunk_tx = spare_chunk_tx.clone();
            let max = opts.max_event_bytes;
            scope.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((chunk, done)) = job else { return };
                let spare = spare_batch_rx.lock().ok().and_then(|rx| rx.try_recv().ok());
                let (parsed, bytes) = parse_chunk(chunk, max, spare.unwrap_or_default());
                let _ = spare_chunk_tx.send(bytes);
                let _ = done.send(parsed);
            });
        }
        drop(spare_chunk_tx);
        let chunk_bytes = opts.chunk_bytes.max(1 << 10);
        let reader = scope.spawn(move || -> Result<()> {
            let mut input = without_bom(input)?;
            let mut carry: Vec<u8> = Vec::new();
            let mut line = 1u64;
            // The first chunks are small and grow to `chunk_bytes`: the writer starts as soon as
            // a first small chunk is parsed instead of waiting for a whole one.
            let mut size = chunk_bytes.min(1 << 20);
            loop {
                let mut buf = match spare_chunk_rx.try_recv() {
                    Ok(mut spare) if carry.len() < chunk_bytes => {
                        spare.clear();
                        spare.append(&mut carry);
                        spare
                    }
                    _ => std::mem::take(&mut carry),
                };
                buf.reserve(chunk_bytes);
                let want = size as u64;
                size = (size * 2).min(chunk_bytes);
                let got = (&mut input).take(want).read_to_end(&mut buf)? as u64;
                let eof = got < want;
                if buf.is_empty() {
                    return Ok(());
                }
                // Cut at the last newline; the rest starts the next chunk.
                if !eof {
                    match memchr::memrchr(b'\n', &buf) {
                        Some(p) => {
                            carry.extend_from_slice(&buf[p + 1..]);
                            buf.truncate(p + 1);
                        }
                        None => {
                            // One line longer than a chunk: keep reading it.
                            carry = buf;
                            continue;
                        }
                    }
                }
                let lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
                let (done_tx, done_rx) = mpsc::sync_channel(1);
                let chunk = Chunk {
                    first_line: line,
                    bytes: buf,
                };
                line += lines;
                if job_tx.send((chunk, done_tx)).is_err() || order_tx.send(done_rx).is_err() {
                    return Ok(());
                }
                if eof {
                    return Ok(());
                }
            }
        });
        // Parsed chunks in input order, appended with each commit overlapping the next
        // chunk's packing; each chunk's report follows its durable commit.
        let mut bytes = 0u64;
        let in_order = order_rx.into_iter().map_while(|done| done.recv().ok());
        let result = ledger.append_stream(
            in_order,
            |p: &mut Parsed| &mut p.events,
            |mut parsed, outcomes| {
                report.add_outcomes(outcomes);
                for (line, reason, text) in &parsed.rejected {
                    report.add_rejection(*line, reason);
                    sink.rejected(*line, text, reason)?;
                }
                bytes += parsed.bytes;
                report.bytes = bytes;
                sink.committed(bytes, &report)?;
                parsed.events.clear();
                let _ = spare_batch_tx.send(parsed.events);
                Ok(())
            },
        );
        // Reader errors (I/O) come first: they explain a short ingest.
        match reader.join() {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
            Err(_) => {
                return Err(crate::error::Error::Invalid(
                    "input reader thread panicked".into(),
                ))
            }
        }
        result
    })?;
    Ok(report)
}

/// Parses a chunk into `events` (an empty batch, maybe with buffers to reuse); returns the
/// result and the chunk's buffer.
fn parse_chunk(chunk: Chunk, max: usize, mut events: EncodedBatch) -> (Parsed, Vec<u8>) {
    // Archives run ~1.1x the NDJSON; reserve enough that the buffer never grows mid-chunk.
    events.reserve(chunk.bytes.len() / 200, chunk.bytes.len() / 4 * 5);
    let mut rejected = Vec::new();
    let bytes = chunk.bytes.as_slice();
    // UTF-8 checked once for the chunk; line by line only to name the bad line.
    let text = std::str::from_utf8(bytes).ok();
    let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
    let mut start = 0;
    for (n, end) in (chunk.first_line..).zip(ends) {
        let line = start..end;
        start = end + 1;
        let mut raw = &bytes[line.clone()];
        let mut line_end = line.end;
        if let Some(r) = raw.strip_suffix(b"\r") {
            raw = r;
            line_end -= 1;
        }
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        // A line of valid UTF-8 text starts and ends at a char boundary ('\n', '\r' are ASCII).
        let parsed = match text.and_then(|t| t.get(line.start..line_end)) {
            Some(line) => parse_event_ref(line, max),
            None => match std::str::from_utf8(raw) {
                Ok(line) => parse_event_ref(line, max),
                Err(e) => Err(Rejection(format!(
                    "not valid UTF-8 (byte {})",
                    e.valid_up_to() + 1
                ))),
            },
        };
        let stored = parsed.and_then(|ev| {
            events
                .push(&ev)
                .map_err(|e| Rejection(format!("cannot be encoded: {e}")))
        });
        if let Err(reason) = stored {
            rejected.push((n, reason, raw.to_vec()));
        }
    }
    // Off the writer's path; should it fail, the writer finds the repeats and the error again.
    let _ = events.find_repeats();
    let parsed = Parsed {
        events,
        rejected,
        bytes: chunk.bytes.len() as u64,
    };
    (parsed, chunk.bytes)
}
