//! The physical limit of a durable log: the same NDJSON bytes appended to one plain file, one
//! `fdatasync` per batch. No parsing, no index, no checksums.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::clock::Clock;
use crate::gen::Input;
use crate::peer::{disk_use, Peer, Sample};

/// When a batch is written and synced.
#[derive(Debug, Clone, Copy)]
pub enum Batch {
    /// After this many lines.
    Lines(u64),
    /// Once this many bytes are pending (cut at the line end): runledger's commit size.
    Bytes(usize),
}

pub struct PlainFile {
    pub batch: Batch,
}

impl Peer for PlainFile {
    fn key(&self) -> String {
        match self.batch {
            Batch::Lines(n) => format!("file-{n}"),
            Batch::Bytes(b) => format!("file-{}mib", b >> 20),
        }
    }

    fn label(&self) -> String {
        match self.batch {
            Batch::Lines(n) => format!("plain file, fsync/{} events", crate::report::thousands(n)),
            Batch::Bytes(b) => format!("plain file, fsync/{} MiB (= runledger commit)", b >> 20),
        }
    }

    fn ingest(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let path = dir.join("log.ndjson");
        let clock = Clock::start();
        let mut src = BufReader::with_capacity(1 << 20, File::open(&input.path)?);
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
        let (mut events, mut in_batch, mut commits) = (0u64, 0u64, 0u64);
        let mut flush = |buf: &mut Vec<u8>| -> Result<()> {
            out.write_all(buf)?;
            out.sync_data()?;
            buf.clear();
            commits += 1;
            Ok(())
        };
        loop {
            let n = src.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            events += 1;
            in_batch += 1;
            let full = match self.batch {
                Batch::Lines(max) => in_batch >= max,
                Batch::Bytes(max) => buf.len() >= max,
            };
            if full {
                flush(&mut buf)?;
                in_batch = 0;
            }
        }
        if !buf.is_empty() {
            flush(&mut buf)?;
        }
        let timing = clock.stop();
        Ok(Sample {
            events,
            stored: Some(events),
            timing,
            disk: Some(disk_use(dir)?),
            commits: Some(commits),
            ..Sample::default()
        })
    }
}
