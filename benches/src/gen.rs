//! The input of a benchmark run: NDJSON from the project's seeded generator
//! ([`ledger::workload`]), or an existing file given with `--input`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An NDJSON file every system of a run reads: the same bytes for all of them.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    /// Size of the file.
    pub bytes: u64,
    /// Non-empty lines, i.e. events offered to each system.
    pub events: u64,
}

/// Writes `events` events of the seeded workload to `dir/events-<N>-seed<S>.ndjson`.
pub fn generate(seed: u64, events: u64, dir: &Path) -> Result<Input> {
    let path = dir.join(format!("events-{events}-seed{seed}.ndjson"));
    let cfg = ledger::workload::config_for_events(seed, events);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    ledger::workload::write_ndjson(&cfg, &mut out)
        .with_context(|| format!("writing {}", path.display()))?;
    out.flush()?;
    Input::open(path)
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
