//! Measurements: what a child reports, the tables the harness prints and the JSON lines it
//! appends to `results.jsonl`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::gen::Input;
use crate::peer::{Role, Sample};

/// One system's result for one benchmark, as the child process reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub bench: String,
    pub system: String,
    pub label: String,
    pub role: Role,
    #[serde(flatten)]
    pub sample: Sample,
    pub input_bytes: u64,
    /// Peak resident memory of the child process (VmHWM), whole run including setup.
    pub peak_rss_bytes: Option<u64>,
    /// Which of the `--repeat` runs this is (1-based).
    #[serde(default)]
    pub attempt: u32,
    /// Whether this is the fastest run of its system, the one the table shows.
    #[serde(default)]
    pub best: bool,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.sample.events as f64 / self.sample.timing.secs.max(1e-9)
    }
    /// CPU time per event, microseconds: unlike the rate, barely affected by other load.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.sample.timing.cpu_secs * 1e6 / self.sample.events.max(1) as f64
    }
    pub fn mb_per_s(&self) -> f64 {
        self.input_bytes as f64 / 1e6 / self.sample.timing.secs.max(1e-9)
    }
}

/// What every line of a run shares in `results.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Seconds since the Unix epoch when the run started; groups the lines of one run.
    pub run_started: u64,
    pub seed: u64,
    pub events_requested: u64,
    pub input_events: u64,
    pub input_path: String,
    pub cores: usize,
    pub harness: &'static str,
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    run: &'a RunInfo,
    #[serde(flatten)]
    m: &'a Measurement,
    events_per_s: f64,
}

/// Appends one JSON line per measurement to `path`.
pub fn append_jsonl(path: &Path, run: &RunInfo, ms: &[Measurement]) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = String::new();
    for m in ms {
        let rec = Record {
            run,
            m,
            events_per_s: m.rate(),
        };
        out.push_str(&serde_json::to_string(&rec)?);
        out.push('\n');
    }
    file.write_all(out.as_bytes())?;
    Ok(())
}

/// Peak resident set of this process (`VmHWM` of `/proc/self/status`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The tables of the `ingest` benchmark.
pub fn print_ingest(
    out: &mut dyn Write,
    input: &Input,
    cores: usize,
    ms: &[Measurement],
) -> io::Result<()> {
    writeln!(
        out,
        "durable bulk ingest, {} events ({:.0} MB NDJSON, {:.0} B/event), {} cores",
        thousands(input.events),
        input.bytes as f64 / 1e6,
        input.bytes_per_event(),
        cores
    )?;
    let base = ms
        .iter()
        .find(|m| m.system == "runledger")
        .map(Measurement::rate);
    let mut t = Table::new(&[
        "system",
        "events/s",
        "MB/s",
        "bytes/event on disk",
        "disk/NDJSON",
        "peak RSS",
        "cores used",
        "CPU µs/event",
        "commits",
        "vs runledger",
    ]);
    for m in ms.iter().filter(|m| m.role == Role::Peer) {
        let disk = m.sample.disk.map(|d| d.bytes as f64);
        t.row(vec![
            m.label.clone(),
            thousands(m.rate() as u64),
            format!("{:.1}", m.mb_per_s()),
            disk.map_or("-".into(), |b| {
                format!("{:.1}", b / m.sample.events.max(1) as f64)
            }),
            disk.map_or("-".into(), |b| {
                format!("{:.2}x", b / m.input_bytes.max(1) as f64)
            }),
            m.peak_rss_bytes.map_or("-".into(), mib),
            format!("{:.2}", m.sample.timing.cores()),
            format!("{:.2}", m.cpu_us_per_event()),
            m.sample.commits.map_or("-".into(), thousands),
            base.map_or("-".into(), |b| format!("{:.2}x", m.rate() / b)),
        ]);
    }
    t.print(out)?;
    writeln!(
        out,
        "runledger and sqlite parse every line; plain-file rows copy bytes only. Disk = allocated \
         blocks after the run. Peak RSS = whole child process."
    )?;
    check_stored(out, ms)?;
    warn_busy(out, ms)?;

    let parts: Vec<&Measurement> = ms.iter().filter(|m| m.role == Role::Breakdown).collect();
    if parts.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "where runledger's ingest time goes")?;
    let mut t = Table::new(&[
        "step",
        "events/s",
        "s per 1M events",
        "cores used",
        "CPU µs/event",
        "peak RSS",
        "vs ingest",
    ]);
    let mut add = |label: String, rate: f64, m: Option<&Measurement>| {
        t.row(vec![
            label,
            thousands(rate as u64),
            format!("{:.3}", 1e6 / rate.max(1e-9)),
            m.map_or("-".into(), |m| format!("{:.2}", m.sample.timing.cores())),
            m.map_or("-".into(), |m| format!("{:.2}", m.cpu_us_per_event())),
            m.and_then(|m| m.peak_rss_bytes).map_or("-".into(), mib),
            base.map_or("-".into(), |b| format!("{:.2}x", rate / b)),
        ]);
    };
    if let Some(m) = ms.iter().find(|m| m.system == "runledger") {
        add(
            "ingest_reader (read, parse+encode, append: pipelined)".into(),
            m.rate(),
            Some(m),
        );
    }
    for m in &parts {
        add(m.label.clone(), m.rate(), Some(m));
    }
    // The pipeline's two stages: parser threads (parse + encode) and the writer side.
    let parsers = ms.iter().find(|m| m.system == "runledger-encode");
    let writer = ms.iter().find(|m| m.system == "runledger-append-encoded");
    if let (Some(p), Some(w)) = (parsers, writer) {
        add(
            "parser stage then writer stage, no overlap (computed)".into(),
            1.0 / (1.0 / p.rate() + 1.0 / w.rate()),
            None,
        );
        let cpu_us = p.cpu_us_per_event() + w.cpu_us_per_event();
        add(
            format!("CPU-bound ceiling: {cores} cores / (parser + writer CPU) (computed)"),
            cores as f64 * 1e6 / cpu_us.max(1e-9),
            None,
        );
    }
    t.print(out)
}

/// Systems that deduplicate must agree on how many events they stored.
fn check_stored(out: &mut dyn Write, ms: &[Measurement]) -> io::Result<()> {
    let dedup: Vec<(&str, u64)> = ms
        .iter()
        .filter(|m| m.system.starts_with("runledger") || m.system == "sqlite")
        .filter_map(|m| Some((m.system.as_str(), m.sample.stored?)))
        .collect();
    let Some(&(_, first)) = dedup.first() else {
        return Ok(());
    };
    if dedup.iter().all(|&(_, n)| n == first) {
        writeln!(
            out,
            "Every deduplicating system stored the same {} events (the rest repeat an id).",
            thousands(first)
        )
    } else {
        let list: Vec<String> = dedup
            .iter()
            .map(|(s, n)| format!("{s} {}", thousands(*n)))
            .collect();
        writeln!(
            out,
            "WARNING: the systems stored different numbers of events: {}",
            list.join(", ")
        )
    }
}

/// Warns when other processes used the machine while rows were measured.
fn warn_busy(out: &mut dyn Write, ms: &[Measurement]) -> io::Result<()> {
    let busy: Vec<String> = ms
        .iter()
        .filter(|m| m.sample.timing.other_cores() > 0.2)
        .map(|m| format!("{} ({:.2} cores)", m.system, m.sample.timing.other_cores()))
        .collect();
    if !busy.is_empty() {
        writeln!(
            out,
            "WARNING: other processes were busy during: {}; those figures are not from an idle \
             machine",
            busy.join(", ")
        )?;
    }
    Ok(())
}

/// A text table: first column left-aligned, the others right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 {
                    line.push_str(c);
                    line.push_str(&pad);
                } else {
                    line.push_str("   ");
                    line.push_str(&pad);
                    line.push_str(c);
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && i % 3 == s.len() % 3 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes as whole MiB.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Formats one metric value by its unit.
fn metric_cell(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    match unit {
        "us" if value >= 10_000.0 => format!("{:.1} ms", value / 1e3),
        "us" => format!("{value:.1} µs"),
        "events/s" => format!("{}/s", thousands(value.round() as u64)),
        "MiB" => format!("{value:.0} MiB"),
        "x" => format!("{value:.2}x"),
        "bytes" => format!("{value:.1} B"),
        "cores" => format!("{value:.2}"),
        _ if value.fract() == 0.0 => thousands(value as u64),
        _ => format!("{value:.2}"),
    }
}

/// The table of a benchmark that reports named metrics (`projections`, `search`, `stats`): one
/// row per metric, one column per system, then each other system's value over runledger's.
pub fn print_metrics(
    out: &mut dyn Write,
    title: &str,
    timed: &str,
    input: &Input,
    cores: usize,
    ms: &[Measurement],
) -> io::Result<()> {
    writeln!(
        out,
        "{title}, {} events ({:.0} MB NDJSON, {:.0} B/event), {cores} cores",
        thousands(input.events),
        input.bytes as f64 / 1e6,
        input.bytes_per_event()
    )?;
    let mut names: Vec<(String, String)> = Vec::new();
    for m in ms {
        for x in &m.sample.metrics {
            if !names.iter().any(|(n, _)| n == &x.name) {
                names.push((x.name.clone(), x.unit.clone()));
            }
        }
    }
    let base = ms.iter().position(|m| m.system == "runledger");
    let mut header: Vec<String> = vec!["metric".into()];
    header.extend(ms.iter().map(|m| m.system.clone()));
    for (i, m) in ms.iter().enumerate() {
        if Some(i) != base && base.is_some() {
            header.push(format!("{} / runledger", m.system));
        }
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header_refs);
    let value = |m: &Measurement, name: &str| {
        m.sample
            .metrics
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value)
    };
    for (name, unit) in &names {
        let mut row = vec![name.clone()];
        for m in ms {
            row.push(value(m, name).map_or("-".into(), |v| metric_cell(v, unit)));
        }
        if let Some(b) = base {
            for (i, m) in ms.iter().enumerate() {
                if i == b {
                    continue;
                }
                let ratio = match (value(m, name), value(&ms[b], name)) {
                    (Some(v), Some(r)) if r != 0.0 && unit != "n" => format!("{:.2}x", v / r),
                    _ => "-".into(),
                };
                row.push(ratio);
            }
        }
        t.row(row);
    }
    t.print(out)?;
    for m in ms {
        writeln!(
            out,
            "{}: {}; timed section ({timed}): {:.2} s, {:.2} cores, peak RSS of the child {}",
            m.system,
            m.label,
            m.sample.timing.secs,
            m.sample.timing.cores(),
            m.peak_rss_bytes
                .map_or("-".into(), |b| format!("{} MiB", b >> 20)),
        )?;
    }
    writeln!(
        out,
        "Latencies in-process over random keys drawn from the input (same keys for every system); \
         ratio > 1: slower / bigger than runledger."
    )?;
    warn_busy(out, ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["a", "n"]);
        t.row(vec!["long name".into(), "1".into()]);
        let mut out = Vec::new();
        t.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "a           n\nlong name   1\n");
    }
}
