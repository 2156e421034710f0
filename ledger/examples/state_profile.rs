//! Where `state --at` spends its time: for random seqs, the active set, the current run and the
//! whole answer, each timed. `cargo run --release -p runledger-ledger --example state_profile --
//! DB [QUERIES | @SEQ]`
use std::io::Write;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(db) = args.get(1) else {
        return Err("usage: state_profile DB [QUERIES]".into());
    };
    // `@SEQ` times that one seq (three times) instead of random ones.
    let one: Option<u64> = match args.get(2).and_then(|a| a.strip_prefix('@')) {
        Some(seq) => Some(seq.parse()?),
        None => None,
    };
    let queries: usize = match one {
        Some(_) => 3,
        None => args.get(2).map_or(Ok(100), |q| q.parse())?,
    };
    let ledger = ledger::Ledger::open_existing(db)?;
    let head = ledger.head()?.seq;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rows = Vec::new();
    for _ in 0..queries {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = one.unwrap_or(1 + x % head);
        let t = Instant::now();
        let ids = ledger.view(Some(at))?.active_ids()?;
        let active = t.elapsed();
        let t = Instant::now();
        ledger.view(Some(at))?.current_run()?;
        let current = t.elapsed();
        let t = Instant::now();
        let state = ledger.view(Some(at))?.state()?;
        let bytes = serde_json::to_vec(&state)?.len();
        let whole = t.elapsed();
        rows.push((whole, active, current, at, ids.len(), bytes));
    }
    rows.sort();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "whole_ms active_ids_ms current_run_ms at active answer_bytes"
    )?;
    for (whole, active, current, at, n, bytes) in rows.iter().rev().take(15) {
        writeln!(
            out,
            "{:8.1} {:8.1} {:8.1} {at:>9} {n:>6} {bytes:>9}",
            whole.as_secs_f64() * 1e3,
            active.as_secs_f64() * 1e3,
            current.as_secs_f64() * 1e3
        )?;
    }
    let p50 = rows[rows.len() / 2].0.as_secs_f64() * 1e3;
    writeln!(out, "p50 whole {p50:.1} ms over {} queries", rows.len())?;
    Ok(())
}
