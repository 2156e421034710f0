//! Partitioned output: one file per table, UTC day and export, written under a temporary name
//! and renamed when complete, so readers globbing `*.parquet` never see a partial file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ledger::render::rfc3339;

use super::manifest::FileEntry;
use super::parquet::ParquetPart;
use super::table::{Cell, Row, Table};
use crate::error::{Error, Result};

/// Rows buffered per partition before they are written (one Parquet row group).
pub const BATCH_ROWS: usize = 32_768;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "parquet" => Format::Parquet,
            "ndjson" => Format::Ndjson,
            "csv" => Format::Csv,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
    pub fn ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// Writes rows of one table into one file.
pub trait PartWriter: Send {
    fn write_rows(&mut self, rows: &[Row]) -> Result<()>;
    /// Flushes and syncs the file.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Rows buffered in all partitions of a sink before every buffer is handed to the writer: bounds
/// memory when many days are open at once.
pub const MAX_BUFFERED_ROWS: usize = 4 * BATCH_ROWS;

/// Files a sink's writer keeps open; past it the least recently written one is completed (a
/// later row of that day goes to a new file, `part-<from>-<to>-<n>`).
pub const MAX_OPEN_FILES: usize = 64;

/// Rows of one day waiting for the writer, with their seq range.
struct Buffer {
    rows: Vec<Row>,
    min_seq: u64,
    max_seq: u64,
}

/// Work for a sink's writer thread.
enum Job {
    Write(String, Buffer),
    /// Complete and name the files. Without it (the export failed) they are removed.
    Finish,
}

/// The files of one table for one export, by UTC day. Rows are buffered per day; batches are
/// encoded and written by a writer thread, so encoding overlaps reading the log.
pub struct Sink {
    table: &'static Table,
    buffers: BTreeMap<String, Buffer>,
    buffered: usize,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    worker: Option<std::thread::JoinHandle<Result<Vec<FileEntry>>>>,
}

/// `YYYY-MM-DD` of a time, UTC.
pub fn utc_day(ms: i64) -> String {
    rfc3339(ms).get(..10).unwrap_or("1970-01-01").to_owned()
}

/// A file being written by the writer thread.
struct OpenFile {
    writer: Box<dyn PartWriter>,
    rel: String,
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
    min_seq: u64,
    max_seq: u64,
    last_used: u64,
}

/// The writer thread of one table.
struct Worker {
    table: &'static Table,
    format: Format,
    dir: PathBuf,
    from: u64,
    to: u64,
    open: BTreeMap<String, OpenFile>,
    /// Files opened so far per day (names the next one).
    opened: BTreeMap<String, u32>,
    done: Vec<FileEntry>,
    clock: u64,
}

impl Worker {
    fn open(&mut self, day: &str) -> Result<OpenFile> {
        let n = self.opened.entry(day.to_owned()).or_insert(0);
        let suffix = if *n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        *n += 1;
        let rel_dir = format!("{}/date={day}", self.table.name);
        let name = format!(
            "part-{}-{}{suffix}.{}",
            self.from,
            self.to,
            self.format.ext()
        );
        let d = self.dir.join(&rel_dir);
        std::fs::create_dir_all(&d).map_err(super::at(&d))?;
        let tmp = d.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(super::at(&tmp))?;
        let writer: Box<dyn PartWriter> = match self.format {
            Format::Parquet => Box::new(ParquetPart::create(self.table, file)?),
            Format::Ndjson => Box::new(TextPart::new(self.table, file, false)?),
            Format::Csv => Box::new(TextPart::new(self.table, file, true)?),
        };
        Ok(OpenFile {
            writer,
            rel: format!("{rel_dir}/{name}"),
            tmp,
            path: d.join(name),
            rows: 0,
            min_seq: u64::MAX,
            max_seq: 0,
            last_used: 0,
        })
    }

    fn write(&mut self, day: String, buf: Buffer) -> Result<()> {
        if !self.open.contains_key(&day) {
            if self.open.len() >= MAX_OPEN_FILES {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.last_used)
                    .map(|(d, _)| d.clone());
                if let Some(d) = oldest {
                    if let Some(f) = self.open.remove(&d) {
                        self.complete(d, f)?;
                    }
                }
            }
            let f = self.open(&day)?;
            self.open.insert(day.clone(), f);
        }
        self.clock += 1;
        let Some(f) = self.open.get_mut(&day) else {
            return Ok(());
        };
        f.writer
            .write_rows(&buf.rows)
            .map_err(|e| naming(&f.tmp, e))?;
        f.rows += buf.rows.len() as u64;
        f.min_seq = f.min_seq.min(buf.min_seq);
        f.max_seq = f.max_seq.max(buf.max_seq);
        f.last_used = self.clock;
        Ok(())
    }

    /// Finishes an open file and gives it its name; on failure removes what it left.
    fn complete(&mut self, day: String, f: OpenFile) -> Result<()> {
        let (tmp, path) = (f.tmp.clone(), f.path.clone());
        let completed = self.complete_file(day, f);
        if completed.is_err() {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&path);
        }
        completed
    }

    fn complete_file(&mut self, day: String, f: OpenFile) -> Result<()> {
        f.writer.finish().map_err(|e| naming(&f.tmp, e))?;
        std::fs::rename(&f.tmp, &f.path).map_err(super::at(&f.path))?;
        self.done.push(FileEntry {
            table: self.table.name.to_owned(),
            bytes: std::fs::metadata(&f.path)
                .map_err(super::at(&f.path))?
                .len(),
            path: f.rel,
            date: day,
            rows: f.rows,
            min_seq: f.min_seq,
            max_seq: f.max_seq,
            export_from_seq: self.from,
            export_to_seq: self.to,
        });
        Ok(())
    }

    /// Runs the jobs; returns the completed files, or removes every file of this export when
    /// the jobs end without [`Job::Finish`] or a write fails.
    fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>) -> Result<Vec<FileEntry>> {
        let mut finish = false;
        let mut result = Ok(());
        for job in jobs {
            match job {
                Job::Write(day, buf) => {
                    result = self.write(day, buf);
                    if result.is_err() {
                        break;
                    }
                }
                Job::Finish => {
                    finish = true;
                    break;
                }
            }
        }
        if finish && result.is_ok() {
            let mut open = std::mem::take(&mut self.open).into_iter();
            for (day, f) in open.by_ref() {
                result = self.complete(day, f);
                if result.is_err() {
                    break;
                }
            }
            // Files not completed are removed below with the others.
            self.open.extend(open);
            if result.is_ok() {
                self.done.sort_by(|a, b| a.path.cmp(&b.path));
                return Ok(self.done);
            }
        }
        for (_, f) in std::mem::take(&mut self.open) {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
        }
        for f in &self.done {
            let _ = std::fs::remove_file(self.dir.join(&f.path));
        }
        result?;
        Err(Error::Invalid(format!(
            "the {} export stopped",
            self.table.name
        )))
    }
}

/// `e`, naming the file it happened on (the Parquet writer's own "External: No space left on
/// device" named none).
fn naming(path: &Path, e: Error) -> Error {
    match e {
        Error::Io(source) => super::at(path)(source),
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
        other => other,
    }
}

impl Sink {
    pub fn new(table: &'static Table, format: Format, dir: &Path, from: u64, to: u64) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let worker = Worker {
            table,
            format,
            dir: dir.to_owned(),
            from,
            to,
            open: BTreeMap::new(),
            opened: BTreeMap::new(),
            done: Vec::new(),
            clock: 0,
        };
        let worker = std::thread::spawn(move || worker.run(rx));
        Sink {
            table,
            buffers: BTreeMap::new(),
            buffered: 0,
            jobs: Some(tx),
            worker: Some(worker),
        }
    }

    /// Adds a row to the partition of `day`; `seq` is the row's seq for the manifest.
    pub fn push(&mut self, day: String, seq: u64, row: Row) -> Result<()> {
        let buf = match self.buffers.get_mut(&day) {
            Some(b) => b,
            None => self.buffers.entry(day.clone()).or_insert(Buffer {
                rows: Vec::new(),
                min_seq: seq,
                max_seq: seq,
            }),
        };
        buf.min_seq = buf.min_seq.min(seq);
        buf.max_seq = buf.max_seq.max(seq);
        buf.rows.push(row);
        self.buffered += 1;
        if buf.rows.len() >= BATCH_ROWS {
            if let Some(b) = self.buffers.remove(&day) {
                self.buffered -= b.rows.len();
                self.send(day, b)?;
            }
        } else if self.buffered >= MAX_BUFFERED_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands every buffer to the writer.
    fn flush(&mut self) -> Result<()> {
        for (day, b) in std::mem::take(&mut self.buffers) {
            self.send(day, b)?;
        }
        self.buffered = 0;
        Ok(())
    }

    fn send(&mut self, day: String, buf: Buffer) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Write(day, buf)).is_ok());
        if sent {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.join()?;
        Err(Error::Invalid(format!(
            "the {} writer stopped",
            self.table.name
        )))
    }

    fn join(&mut self) -> Result<Vec<FileEntry>> {
        self.jobs = None;
        match self.worker.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Invalid(format!("the {} writer panicked", self.table.name)))?,
            None => Ok(Vec::new()),
        }
    }

    /// Writes what is buffered, completes and names every file; returns the manifest entries.
    pub fn finish(mut self) -> Result<Vec<FileEntry>> {
        self.flush()?;
        if let Some(tx) = &self.jobs {
            // A closed channel means the writer failed: join reports why.
            let _ = tx.send(Job::Finish);
        }
        self.join()
    }
}

impl Drop for Sink {
    /// A sink dropped before [`Sink::finish`] (the export failed) removes its files.
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// NDJSON (one object per row, JSON columns embedded as values) or CSV (a header, RFC 4180
/// quoting, JSON columns as text).
struct TextPart {
    table: &'static Table,
    out: BufWriter<File>,
    csv: bool,
    line: String,
}

impl TextPart {
    fn new(table: &'static Table, file: File, csv: bool) -> Result<TextPart> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        if csv {
            let header: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
            writeln!(out, "{}", header.join(","))?;
        }
        Ok(TextPart {
            table,
            out,
            csv,
            line: String::new(),
        })
    }

    fn ndjson_row(&mut self, row: &Row) {
        let l = &mut self.line;
        l.push('{');
        for (i, ((name, _), cell)) in self.table.columns.iter().zip(row).enumerate() {
            if i > 0 {
                l.push(',');
            }
            l.push('"');
            l.push_str(name);
            l.push_str("\":");
            match cell {
                Cell::Null => l.push_str("null"),
                Cell::Int(v) => l.push_str(&v.to_string()),
                Cell::Ts(v) => push_quoted(l, &rfc3339(*v)),
                Cell::Str(s) => push_quoted(l, s),
                Cell::Json(s) => l.push_str(s),
            }
        }
        l.push_str("}\n");
    }

    fn csv_row(&mut self, row: &Row) {
        let l = &mut self.line;
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                l.push(',');
            }
            match cell {
                Cell::Null => {}
                Cell::Int(v) => l.push_str(&v.to_string()),
                Cell::Ts(v) => l.push_str(&rfc3339(*v)),
                Cell::Str(s) | Cell::Json(s) => {
                    if s.contains([',', '"', '\n', '\r']) || s.is_empty() {
                        l.push('"');
                        l.push_str(&s.replace('"', "\"\""));
                        l.push('"');
                    } else {
                        l.push_str(s);
                    }
                }
            }
        }
        l.push('\n');
    }
}

fn push_quoted(out: &mut String, s: &str) {
    out.push_str(&ledger::render::quote(s));
}

impl PartWriter for TextPart {
    fn write_rows(&mut self, rows: &[Row]) -> Result<()> {
        for row in rows {
            self.line.clear();
            if self.csv {
                self.csv_row(row);
            } else {
                self.ndjson_row(row);
            }
            self.out.write_all(self.line.as_bytes())?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::table::EVENTS;

    fn buffer(seq: u64) -> Buffer {
        let row = vec![
            Cell::Int(seq as i64),
            Cell::Ts(0),
            Cell::Ts(0),
            Cell::Str("run.started".into()),
            Cell::Str("r".into()),
            Cell::Null,
            Cell::Json("{}".into()),
        ];
        Buffer {
            rows: vec![row],
            min_seq: seq,
            max_seq: seq,
        }
    }

    #[test]
    fn days_past_the_open_file_limit_go_to_new_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = std::sync::mpsc::sync_channel(1000);
        let days = MAX_OPEN_FILES + 6;
        let mut seq = 0;
        for _round in 0..2 {
            for d in 0..days {
                seq += 1;
                let day = format!("2025-01-{:03}", d);
                tx.send(Job::Write(day, buffer(seq))).expect("send");
            }
        }
        tx.send(Job::Finish).expect("send");
        drop(tx);
        let worker = Worker {
            table: &EVENTS,
            format: Format::Ndjson,
            dir: dir.path().to_owned(),
            from: 1,
            to: seq,
            open: BTreeMap::new(),
            opened: BTreeMap::new(),
            done: Vec::new(),
            clock: 0,
        };
        let files = worker.run(rx).expect("run");
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), seq);
        assert!(
            files.iter().any(|f| f.path.ends_with("-1.ndjson")),
            "{files:?}"
        );
        for f in &files {
            let text = std::fs::read_to_string(dir.path().join(&f.path)).expect("file");
            assert_eq!(text.lines().count() as u64, f.rows);
        }
    }

    #[test]
    fn a_failed_export_leaves_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = Sink::new(&EVENTS, Format::Parquet, dir.path(), 1, 2);
        for i in 0..3 {
            sink.push(format!("2025-01-0{i}"), i, buffer(i).rows.remove(0))
                .expect("push");
        }
        sink.flush().expect("flush");
        drop(sink);
        let mut left = Vec::new();
        for e in std::fs::read_dir(dir.path().join("events"))
            .expect("dir")
            .flatten()
        {
            left.extend(
                std::fs::read_dir(e.path())
                    .expect("day")
                    .flatten()
                    .map(|f| f.path()),
            );
        }
        assert!(left.is_empty(), "{left:?}");
    }
}
