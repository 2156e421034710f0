//! Time a projection rebuild alone: `cargo run --release -p runledger-ledger --example rebuild_profile -- DB`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::args().nth(1).ok_or("usage: rebuild_profile DB")?;
    let l = ledger::Ledger::open_existing(&db)?;
    let t = std::time::Instant::now();
    let n = ledger::project::rebuild(&l, &mut |_, _| {})?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "projections rebuilt from {n} events in {s:.2}s = {:.0}/s",
        n as f64 / s
    );
    Ok(())
}
