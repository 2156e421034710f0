//! Where the tail of `tree` for random runs comes from: times the trees of random started
//! runs, then the slowest ones again (cold reads, or large trees?).
//! `cargo run --release -p runledger-ledger --example tree_profile -- DB [QUERIES]`
use std::io::Write;
use std::time::Instant;

fn nodes(n: &ledger::project::TreeNode) -> usize {
    1 + n.children.iter().map(nodes).sum::<usize>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(db) = args.get(1) else {
        return Err("usage: tree_profile DB [QUERIES]".into());
    };
    let queries: usize = args.get(2).map_or(Ok(2000), |q| q.parse())?;
    let ledger = ledger::Ledger::open_existing(db)?;
    let head = ledger.head()?.seq;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Run ids of started runs at random seqs.
    let reader = ledger.reader()?;
    let mut ids = Vec::new();
    while ids.len() < queries {
        let seq = 1 + next() % head;
        reader.scan(seq, head, |_, ev| {
            if matches!(ev.event.body, ledger::event::ArchivedBody::Started { .. }) {
                ids.push(ev.event.run_id.to_string());
                return Ok(false);
            }
            Ok(true)
        })?;
    }
    drop(reader);
    let view = ledger.view(None)?;
    let mut rows = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let tree = view.tree(id, None)?;
        let bytes = serde_json::to_vec(&tree)?.len();
        rows.push((t.elapsed(), id.clone(), nodes(&tree.root), bytes));
    }
    rows.sort();
    let p = |q: f64| rows[((rows.len() as f64 * q) as usize).min(rows.len() - 1)].0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "p50 {:?} p99 {:?} max {:?}",
        p(0.5),
        p(0.99),
        rows[rows.len() - 1].0
    )?;
    writeln!(out, "slowest: first_us again_us nodes bytes id")?;
    for (d, id, n, bytes) in rows.iter().rev().take(25) {
        let t = Instant::now();
        view.tree(id, None)?;
        let again = t.elapsed();
        writeln!(
            out,
            "{:9.1} {:9.1} {n:>6} {bytes:>8} {id}",
            d.as_secs_f64() * 1e6,
            again.as_secs_f64() * 1e6
        )?;
    }
    Ok(())
}
