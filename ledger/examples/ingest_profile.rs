//! Where bulk ingest spends its time: parse-only (one thread), then a full ingest into a fresh
//! file. `cargo run --release -p runledger-ledger --example ingest_profile -- FILE.ndjson DB`
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(db)) = (args.get(1), args.get(2)) else {
        return Err("usage: ingest_profile FILE.ndjson DB".into());
    };
    if file == "--gen" {
        let mut out = std::io::BufWriter::new(std::fs::File::create(db)?);
        ledger::workload::write_ndjson(
            &ledger::workload::config_for_events(42, 1_000_000),
            &mut out,
        )?;
        return Ok(());
    }
    if file == "--sizes" {
        return sizes(db);
    }
    let text = std::fs::read_to_string(file)?;
    let t = Instant::now();
    let mut n = 0u64;
    for line in text.lines() {
        if ledger::parse_event(line).is_ok() {
            n += 1;
        }
    }
    let parse = t.elapsed().as_secs_f64();
    println!(
        "parse, 1 thread: {n} events in {parse:.2}s = {:.0}/s",
        n as f64 / parse
    );
    let events: Vec<ledger::Event> = text
        .lines()
        .filter_map(|l| ledger::parse_event(l).ok())
        .collect();
    let _ = std::fs::remove_file(db);
    let l = ledger::Ledger::open(db)?;
    let t = Instant::now();
    let mut it = events.into_iter();
    loop {
        let batch: Vec<ledger::Event> = it.by_ref().take(20_000).collect();
        if batch.is_empty() {
            break;
        }
        l.append(batch)?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("append only: {n} in {secs:.2}s = {:.0}/s", n as f64 / secs);
    drop(l);
    let _ = std::fs::remove_file(db);
    let l = ledger::Ledger::open(db)?;
    let t = Instant::now();
    let r = ledger::ingest::ingest_reader(
        &l,
        text.as_bytes(),
        &ledger::ingest::IngestOptions::default(),
        &mut ledger::ingest::NoSink,
    )?;
    let secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(db)?.len();
    println!(
        "ingest: {} stored in {secs:.2}s = {:.0}/s; file {} MB ({:.2}x input)",
        r.accepted,
        r.accepted as f64 / secs,
        size / 1_000_000,
        size as f64 / text.len() as f64
    );
    Ok(())
}

#[allow(dead_code)]
fn sizes(db: &str) -> Result<(), Box<dyn std::error::Error>> {
    let l = ledger::Ledger::open_existing(db)?;
    let r = l.reader()?;
    let mut bytes = 0usize;
    let mut n = 0usize;
    r.scan_entries(1, u64::MAX, |_, _, a| {
        bytes += a.len() + 32;
        n += 1;
        Ok(true)
    })?;
    println!(
        "{n} events, {} bytes of entries, {:.0} B/event",
        bytes,
        bytes as f64 / n as f64
    );
    Ok(())
}
