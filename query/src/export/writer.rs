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
pub const BATCH_ROWS: usize = 65_536;

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

/// What the caller knows of a partition's file.
struct Part {
    buf: Vec<Row>,
    rows: u64,
    min_seq: u64,
    max_seq: u64,
}

/// Work for a sink's writer thread.
enum Job {
    Write(String, Vec<Row>),
    /// Close and name the files. Without it (the export failed) they are removed.
    Finish,
}

/// The files of one table for one export, by UTC day. Rows are buffered per day; full batches
/// are encoded and written by a writer thread, so encoding overlaps reading the log.
pub struct Sink {
    table: &'static Table,
    format: Format,
    dir: PathBuf,
    from_seq: u64,
    to_seq: u64,
    parts: BTreeMap<String, Part>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    worker: Option<std::thread::JoinHandle<Result<()>>>,
}

/// `YYYY-MM-DD` of a time, UTC.
pub fn utc_day(ms: i64) -> String {
    rfc3339(ms).get(..10).unwrap_or("1970-01-01").to_owned()
}

/// Where a partition's file goes: (relative path, temporary path, final path).
fn part_paths(
    table: &Table,
    format: Format,
    dir: &Path,
    day: &str,
    from: u64,
    to: u64,
) -> (String, PathBuf, PathBuf) {
    let rel_dir = format!("{}/date={day}", table.name);
    let file_name = format!("part-{from}-{to}.{}", format.ext());
    let d = dir.join(&rel_dir);
    (
        format!("{rel_dir}/{file_name}"),
        d.join(format!(".{file_name}.tmp")),
        d.join(file_name),
    )
}

/// The writer thread: opens a file per day on its first batch, writes batches, and closes and
/// renames every file at the end.
fn work(
    table: &'static Table,
    format: Format,
    dir: PathBuf,
    from: u64,
    to: u64,
    jobs: std::sync::mpsc::Receiver<Job>,
) -> Result<()> {
    let mut writers: BTreeMap<String, Box<dyn PartWriter>> = BTreeMap::new();
    let mut finish = false;
    for job in jobs {
        let (day, rows) = match job {
            Job::Write(day, rows) => (day, rows),
            Job::Finish => {
                finish = true;
                break;
            }
        };
        if !writers.contains_key(&day) {
            let (_, tmp, _) = part_paths(table, format, &dir, &day, from, to);
            if let Some(parent) = tmp.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = File::create(&tmp)?;
            let w: Box<dyn PartWriter> = match format {
                Format::Parquet => Box::new(ParquetPart::create(table, file)?),
                Format::Ndjson => Box::new(TextPart::new(table, file, false)?),
                Format::Csv => Box::new(TextPart::new(table, file, true)?),
            };
            writers.insert(day.clone(), w);
        }
        if let Some(w) = writers.get_mut(&day) {
            w.write_rows(&rows)?;
        }
    }
    for (day, w) in writers {
        let (_, tmp, path) = part_paths(table, format, &dir, &day, from, to);
        if finish {
            w.finish()?;
            std::fs::rename(tmp, path)?;
        } else {
            drop(w);
            let _ = std::fs::remove_file(tmp);
        }
    }
    Ok(())
}

impl Sink {
    pub fn new(table: &'static Table, format: Format, dir: &Path, from: u64, to: u64) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let d = dir.to_owned();
        let worker = std::thread::spawn(move || work(table, format, d, from, to, rx));
        Sink {
            table,
            format,
            dir: dir.to_owned(),
            from_seq: from,
            to_seq: to,
            parts: BTreeMap::new(),
            jobs: Some(tx),
            worker: Some(worker),
        }
    }

    /// Adds a row to the partition of `day`; `seq` is the row's seq for the manifest.
    pub fn push(&mut self, day: String, seq: u64, row: Row) -> Result<()> {
        let part = match self.parts.get_mut(&day) {
            Some(p) => p,
            None => self.parts.entry(day.clone()).or_insert(Part {
                buf: Vec::new(),
                rows: 0,
                min_seq: seq,
                max_seq: seq,
            }),
        };
        part.min_seq = part.min_seq.min(seq);
        part.max_seq = part.max_seq.max(seq);
        part.rows += 1;
        part.buf.push(row);
        if part.buf.len() >= BATCH_ROWS {
            let rows = std::mem::take(&mut part.buf);
            self.send(day, rows)?;
        }
        Ok(())
    }

    fn send(&mut self, day: String, rows: Vec<Row>) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Write(day, rows)).is_ok());
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

    fn join(&mut self) -> Result<()> {
        self.jobs = None;
        match self.worker.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Invalid(format!("the {} writer panicked", self.table.name)))?,
            None => Ok(()),
        }
    }

    /// Writes what is buffered, closes every file and names it; returns the manifest entries.
    pub fn finish(mut self) -> Result<Vec<FileEntry>> {
        let parts = std::mem::take(&mut self.parts);
        let mut out = Vec::new();
        for (day, part) in parts {
            if !part.buf.is_empty() {
                self.send(day.clone(), part.buf)?;
            }
            let (rel, _, _) = part_paths(
                self.table,
                self.format,
                &self.dir,
                &day,
                self.from_seq,
                self.to_seq,
            );
            out.push(FileEntry {
                table: self.table.name.to_owned(),
                path: rel,
                date: day,
                rows: part.rows,
                bytes: 0,
                min_seq: part.min_seq,
                max_seq: part.max_seq,
                export_from_seq: self.from_seq,
                export_to_seq: self.to_seq,
            });
        }
        if let Some(tx) = &self.jobs {
            // A closed channel means the writer failed: join reports why.
            let _ = tx.send(Job::Finish);
        }
        self.join()?;
        for f in &mut out {
            f.bytes = std::fs::metadata(self.dir.join(&f.path))?.len();
        }
        Ok(out)
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
