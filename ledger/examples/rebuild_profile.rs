//! Time a projection rebuild alone:
//! `cargo run --release -p runledger-ledger --example rebuild_profile -- DB [SPAN_EVENTS]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args
        .next()
        .ok_or("usage: rebuild_profile DB [SPAN_EVENTS]")?;
    let span = match args.next() {
        Some(s) => s.parse()?,
        None => ledger::project::SPAN_EVENTS,
    };
    let l = ledger::Ledger::open_existing(&db)?;
    let t = std::time::Instant::now();
    let n = ledger::project::rebuild_in_spans(&l, span, &mut |_, _| {})?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "projections rebuilt from {n} events in spans of {span} in {s:.2}s = {:.0}/s",
        n as f64 / s
    );
    Ok(())
}
