//! The input of a benchmark run: NDJSON from the project's seeded generator
//! ([`ledger::workload`]), or an existing file given with `--input`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ledger::workload;

/// An NDJSON file every system of a run reads: the same bytes for all of them.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    /// Size of the file.
    pub bytes: u64,
    /// Non-empty lines, i.e. events offered to each system.
    pub events: u64,
}

/// Writes exactly `events` events of the seeded workload to `dir/events-<N>-seed<S>.ndjson`:
/// the first `events` lines of a workload sized a little larger (so the last runs may be cut
/// short, which ingest does not mind).
pub fn generate(seed: u64, events: u64, dir: &Path) -> Result<Input> {
    let path = dir.join(format!("events-{events}-seed{seed}.ndjson"));
    // The generator sizes by roots, and streams: asking for more costs little beyond `take`.
    let mut ask = events + events / 4 + 1_000;
    loop {
        if write_first(seed, ask, events, &path)? == events {
            return Input::open(path);
        }
        ask *= 2;
    }
}

/// Writes the first `events` lines of the workload sized for `ask` events; returns how many.
fn write_first(seed: u64, ask: u64, events: u64, path: &Path) -> Result<u64> {
    let cfg = workload::config_for_events(seed, ask);
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(4096);
    let mut written = 0u64;
    for event in workload::Workload::new(cfg).take(events as usize) {
        line.clear();
        serde_json::to_writer(&mut line, &event)?;
        line.push(b'\n');
        out.write_all(&line)?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

impl Input {
    /// Measures an existing NDJSON file (its size and number of non-empty lines).
    pub fn open(path: PathBuf) -> Result<Input> {
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut bytes, mut events) = (0u64, 0u64);
        // Whether the current line has a non-whitespace byte yet.
        let mut in_line = false;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            for &b in &buf[..n] {
                if b == b'\n' {
                    events += u64::from(in_line);
                    in_line = false;
                } else if !b.is_ascii_whitespace() {
                    in_line = true;
                }
            }
        }
        events += u64::from(in_line);
        Ok(Input {
            path,
            bytes,
            events,
        })
    }

    /// Average bytes per event (line), newline included.
    pub fn bytes_per_event(&self) -> f64 {
        self.bytes as f64 / self.events.max(1) as f64
    }
}

/// Children of the big run tree [`append_big_tree`] adds.
pub const BIG_TREE_CHILDREN: u64 = 10_000;

/// Appends a run tree to `input` (a new file next to it): a workflow root
/// ([`crate::qcommon::BIG_ROOT`]) with [`BIG_TREE_CHILDREN`] children, every second child with
/// one child of its own; each run a `run.started` and a `run.completed`. Returns the new input.
pub fn append_big_tree(input: &Input) -> Result<Input> {
    let path = input.path.with_extension("tree.ndjson");
    std::fs::copy(&input.path, &path)?;
    let file = std::fs::OpenOptions::new().append(true).open(&path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let root = crate::qcommon::BIG_ROOT;
    let t0: i64 = 1_763_600_000_000;
    let mut n = 0u64;
    let mut run = |out: &mut BufWriter<File>, id: &str, run: serde_json::Value, t: i64| {
        n += 1;
        let started = serde_json::json!({"type": "run.started", "id": format!("big-e-{n}"),
            "ts": t, "run_id": id, "run": run});
        n += 1;
        let done = serde_json::json!({"type": "run.completed", "id": format!("big-e-{n}"),
            "ts": t + 5, "run_id": id, "output": {"data": [{"name": id}]}, "duration_ms": 5});
        writeln!(out, "{started}")?;
        writeln!(out, "{done}")
    };
    run(
        &mut out,
        root,
        serde_json::json!({"operation": "workflow", "template": "WT-email-to-tasks",
            "owner": "alice", "input": {"trigger": "bulk"}}),
        t0,
    )?;
    for c in 0..BIG_TREE_CHILDREN {
        let id = format!("big-c-{c}");
        let t = t0 + 10 + c as i64;
        run(
            &mut out,
            &id,
            serde_json::json!({"operation": "select", "doctype": "Task", "owner": "alice",
                "parent_run_id": root, "chain_id": root, "step_id": "fan-out",
                "step_index": c, "input": {"where": {"name": format!("Task-{c:05}")}}}),
            t,
        )?;
        if c % 2 == 0 {
            run(
                &mut out,
                &format!("big-g-{c}"),
                serde_json::json!({"operation": "summarize", "owner": "alice",
                    "parent_run_id": id, "chain_id": root,
                    "input": {"text": format!("grandchild of {c}")}}),
                t + 1,
            )?;
        }
    }
    out.flush()?;
    drop(out);
    Input::open(path)
}
