//! Properties of the log and projections over random event streams, on real redb files:
//!
//! - the final projections do not depend on arrival order;
//! - projecting incrementally (catch-up after each append) equals rebuilding from the log;
//! - answering as of seq N equals a fresh ledger holding only the first N events;
//! - deduplication never stores an id twice and never drops a distinct one.
//!
//! Streams come from the workload generator (`ledger::workload`) with random seeds, parsed by
//! `ledger::parse_event`, then reordered and split into batches at random.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ledger::encode::EncodedBatch;
use ledger::project::{catch_up, catch_up_in_steps, rebuild, RunFilter, View};
use ledger::workload::{ndjson_lines, WorkloadConfig};
use ledger::{Body, Event, Ledger, Outcome};
use proptest::prelude::*;
use serde_json::Value;

// ---- helpers -------------------------------------------------------------------------------

/// splitmix64, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    /// Random batch sizes (1..=max) covering `n` items.
    fn batches(&mut self, n: usize, max: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let b = (1 + self.below(max)).min(left);
            out.push(b);
            left -= b;
        }
        out
    }
}

fn workload(seed: u64, roots: usize, duplicate_rate: f64, reorder_window: usize) -> Vec<Event> {
    let cfg = WorkloadConfig {
        seed,
        roots,
        duplicate_rate,
        reorder_window,
        ..WorkloadConfig::default()
    };
    ndjson_lines(&cfg)
        .iter()
        .map(|l| {
            ledger::parse_event(l).unwrap_or_else(|r| panic!("workload line rejected: {r}: {l}"))
        })
        .collect()
}

/// Drops every later event whose id came before, so that event i is stored as seq i + 1.
fn distinct(events: Vec<Event>) -> Vec<Event> {
    let mut seen = BTreeSet::new();
    events
        .into_iter()
        .filter(|e| e.id.as_ref().is_none_or(|id| seen.insert(id.clone())))
        .collect()
}

/// A random arrival order that keeps the relative order of events with equal `ts` (their
/// order is the `seq` tie-break, which legitimately depends on arrival). Everything else —
/// across runs and within a run — is shuffled.
fn permute(events: &[Event], rng: &mut Rng) -> Vec<Event> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    rng.shuffle(&mut order);
    let mut by_ts: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (pos, &i) in order.iter().enumerate() {
        by_ts.entry(events[i].ts_ms).or_default().push(pos);
    }
    for positions in by_ts.values() {
        let mut orig: Vec<usize> = positions.iter().map(|&p| order[p]).collect();
        orig.sort_unstable();
        for (&p, o) in positions.iter().zip(orig) {
            order[p] = o;
        }
    }
    order.into_iter().map(|i| events[i].clone()).collect()
}

struct Db {
    _dir: tempfile::TempDir,
    ledger: Ledger,
}

fn fresh() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
    Db { _dir: dir, ledger }
}

fn append(l: &Ledger, batch: &[Event]) -> Vec<Outcome> {
    let out = l.append(batch.to_vec()).expect("append");
    assert_eq!(out.len(), batch.len());
    out
}

fn project(l: &Ledger) {
    catch_up(l, &mut |_, _| {}).expect("catch_up");
}

/// A ledger with `events` appended in `batches`, catching up after each batch when `each`.
fn build(events: &[Event], batches: &[usize], each: bool) -> Db {
    let db = fresh();
    let mut at = 0;
    for &b in batches {
        append(&db.ledger, &events[at..at + b]);
        at += b;
        if each {
            project(&db.ledger);
        }
    }
    assert_eq!(at, events.len());
    project(&db.ledger);
    db
}

/// Every run id (including parents named only by a link) and every record of `events`.
fn names(events: &[Event]) -> (Vec<String>, Vec<(String, String)>) {
    let mut runs = BTreeSet::new();
    let mut docs = BTreeSet::new();
    for e in events {
        runs.insert(e.run_id.clone());
        match &e.body {
            Body::Started { run } | Body::Checkpoint { run, .. } => {
                if let Some(p) = &run.parent_run_id {
                    runs.insert(p.clone());
                }
            }
            Body::Doc { doctype, name, .. } => {
                docs.insert((doctype.clone(), name.clone()));
            }
            _ => {}
        }
    }
    (runs.into_iter().collect(), docs.into_iter().collect())
}

fn ok_or_missing(r: ledger::Result<Value>) -> Value {
    match r {
        Ok(v) => v,
        Err(ledger::Error::NotFound(_)) => Value::String("<not found>".into()),
        Err(e) => panic!("query failed: {e}"),
    }
}

/// Every answer of the view about these runs and records, keyed by question.
fn answers(v: &View, names: &(Vec<String>, Vec<(String, String)>)) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for id in &names.0 {
        out.insert(format!("show {id}"), ok_or_missing(v.show_json(id)));
        out.insert(format!("tree {id}"), ok_or_missing(v.tree_json(id, None)));
        out.insert(
            format!("effects --tree {id}"),
            ok_or_missing(v.effects_json(id, true)),
        );
    }
    for (d, n) in &names.1 {
        out.insert(format!("trace {d} {n}"), ok_or_missing(v.trace_json(d, n)));
    }
    out.insert("state".into(), ok_or_missing(v.state_json()));
    let all = RunFilter {
        limit: usize::MAX,
        ..RunFilter::default()
    };
    out.insert("runs".into(), ok_or_missing(v.runs_json(&all)));
    let roots = RunFilter {
        limit: usize::MAX,
        root: true,
        ..RunFilter::default()
    };
    out.insert("runs --root".into(), ok_or_missing(v.runs_json(&roots)));
    out
}

fn answers_of(
    l: &Ledger,
    at: Option<u64>,
    names: &(Vec<String>, Vec<(String, String)>),
) -> BTreeMap<String, Value> {
    let v = l.view(at).expect("view");
    answers(&v, names)
}

/// Keys that hold client data: never stripped inside.
const DATA_KEYS: [&str; 7] = [
    "input", "output", "error", "options", "extra", "data", "before",
];

/// Removes the fields that legitimately depend on arrival order: a run's `first_seq` /
/// `last_seq`, and the `seq` of history rows and effects (everything else — order of
/// histories, children, listings, statuses, merged fields — must not).
fn strip_seqs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("first_seq");
            m.remove("last_seq");
            m.remove("seq");
            for (k, x) in m.iter_mut() {
                if !DATA_KEYS.contains(&k.as_str()) {
                    strip_seqs(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_seqs),
        _ => {}
    }
}

fn first_difference(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> String {
    for (k, x) in a {
        match b.get(k) {
            Some(y) if y == x => {}
            Some(y) => return format!("{k}:\n  left:  {x}\n  right: {y}"),
            None => return format!("{k} missing on the right"),
        }
    }
    if a.len() != b.len() {
        return "different question sets".into();
    }
    String::new()
}

/// `cases` per property, or `PROPTEST_CASES` when set (for longer local runs).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(16))]

    /// The final projections do not depend on arrival order.
    #[test]
    fn arrival_order_does_not_change_the_projections(
        seed in any::<u64>(),
        shuffle_seed in any::<u64>(),
        roots in 2usize..7,
        dup in prop_oneof![Just(0.0), Just(0.05)],
    ) {
        let mut rng = Rng(shuffle_seed);
        let events = workload(seed, roots, dup, 16);
        let names = names(&events);
        let a = build(&events, &rng.batches(events.len(), 40), true);
        let shuffled = permute(&events, &mut rng);
        let b = build(&shuffled, &rng.batches(shuffled.len(), 40), true);
        let mut x = answers_of(&a.ledger, None, &names);
        let mut y = answers_of(&b.ledger, None, &names);
        x.values_mut().for_each(strip_seqs);
        y.values_mut().for_each(strip_seqs);
        prop_assert!(x == y, "seed {seed}/{shuffle_seed}: {}", first_difference(&x, &y));
    }

    /// Catching up after every append equals rebuilding from the whole log, in one span or in
    /// many (each span folded over the one before it, which may still be being written).
    #[test]
    fn incremental_projection_equals_rebuild(
        seed in any::<u64>(),
        shuffle_seed in any::<u64>(),
        roots in 2usize..7,
        shuffled in any::<bool>(),
        max_batch in prop_oneof![Just(1usize), Just(7), Just(64)],
        step in prop_oneof![Just(1u64), Just(5), Just(37)],
    ) {
        let mut rng = Rng(shuffle_seed);
        let mut events = workload(seed, roots, 0.03, 16);
        if shuffled {
            events = permute(&events, &mut rng);
        }
        let names = names(&events);
        let batches = rng.batches(events.len(), max_batch);
        let inc = build(&events, &batches, true);
        let incremental = answers_of(&inc.ledger, None, &names);

        let once = build(&events, &[events.len()], false);
        let at_once = answers_of(&once.ledger, None, &names);
        prop_assert!(incremental == at_once, "seed {seed}/{shuffle_seed}: {}",
            first_difference(&incremental, &at_once));

        rebuild(&inc.ledger, &mut |_, _| {}).expect("rebuild");
        let rebuilt = answers_of(&inc.ledger, None, &names);
        prop_assert!(incremental == rebuilt, "seed {seed}/{shuffle_seed}: {}",
            first_difference(&incremental, &rebuilt));

        let spans = fresh();
        append(&spans.ledger, &events);
        let mut committed = Vec::new();
        catch_up_in_steps(&spans.ledger, step, &mut |applied, _| committed.push(applied))
            .expect("catch_up in steps");
        let n = spans.ledger.head().unwrap().seq;
        let expected: Vec<u64> = (1..=n.div_ceil(step)).map(|k| (k * step).min(n)).collect();
        prop_assert_eq!(committed, expected, "progress after each committed span");
        let in_spans = answers_of(&spans.ledger, None, &names);
        prop_assert!(incremental == in_spans, "seed {seed}/{shuffle_seed}, spans of {step}: {}",
            first_difference(&incremental, &in_spans));
        // As of an earlier seq too: rows the spans wrote again (a child linked anew, a run
        // folded over its earlier state) keep what time travel reads.
        let cut = 1 + rng.below(n as usize) as u64;
        let (a, b) = (answers_of(&inc.ledger, Some(cut), &names), answers_of(&spans.ledger, Some(cut), &names));
        prop_assert!(a == b, "seed {seed}/{shuffle_seed}, spans of {step}, at {cut}: {}",
            first_difference(&a, &b));
    }

    /// `view(Some(n))` answers exactly as a fresh ledger holding only the first n events.
    #[test]
    fn time_travel_equals_a_prefix_ledger(
        seed in any::<u64>(),
        shuffle_seed in any::<u64>(),
        roots in 2usize..6,
        shuffled in any::<bool>(),
    ) {
        let mut rng = Rng(shuffle_seed);
        let mut events = distinct(workload(seed, roots, 0.0, 16));
        if shuffled {
            events = permute(&events, &mut rng);
        }
        let n = events.len();
        let names = names(&events);
        let full = build(&events, &rng.batches(n, 50), true);
        let mut cuts = vec![0, 1 + rng.below(n), 1 + rng.below(n), n];
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let prefix = build(&events[..cut], &[cut], false);
            prop_assert_eq!(prefix.ledger.head().unwrap().seq, cut as u64);
            let then = answers_of(&full.ledger, Some(cut as u64), &names);
            let fresh = answers_of(&prefix.ledger, None, &names);
            prop_assert!(then == fresh, "seed {seed}/{shuffle_seed}, as of seq {cut} of {n}: {}",
                first_difference(&then, &fresh));
        }
    }

    /// Random repeats, within and across batches and across reopening the file, are answered
    /// `Duplicate(seq of the stored one)`; every distinct id is stored exactly once.
    #[test]
    fn dedup_stores_each_id_once_and_never_drops_one(
        seed in any::<u64>(),
        mix_seed in any::<u64>(),
        roots in 2usize..6,
        repeats in 0usize..200,
        max_batch in prop_oneof![Just(1usize), Just(5), Just(50), Just(1000)],
    ) {
        let mut rng = Rng(mix_seed);
        let distinct_events = distinct(workload(seed, roots, 0.0, 0));
        // Deliveries: every event once, plus random repeats anywhere (a repeat may come
        // before the original: then it is the one stored).
        let mut delivery = distinct_events.clone();
        for _ in 0..repeats {
            let e = distinct_events[rng.below(distinct_events.len())].clone();
            let at = rng.below(delivery.len() + 1);
            delivery.insert(at, e);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut l = Ledger::open(&path).unwrap();
        let mut stored_seq: HashMap<String, u64> = HashMap::new();
        let mut next = 1u64;
        // Batches go in one at a time (`append`) or several as one stream (`append_stream`, as
        // bulk ingest does: each batch's duplicates are found while the one before commits).
        let sizes = rng.batches(delivery.len(), max_batch);
        let mut at = 0;
        let mut k = 0;
        while k < sizes.len() {
            let group = (1 + rng.below(4)).min(sizes.len() - k);
            let mut batches: Vec<&[Event]> = Vec::new();
            for &b in &sizes[k..k + group] {
                batches.push(&delivery[at..at + b]);
                at += b;
            }
            k += group;
            let outs: Vec<Vec<Outcome>> = if rng.below(2) == 0 {
                batches.iter().map(|b| append(&l, b)).collect()
            } else {
                let encoded = batches.iter().map(|b| {
                    let mut e = EncodedBatch::default();
                    for ev in b.iter() {
                        e.push(&ev.borrowed()).unwrap();
                    }
                    e
                });
                let mut outs = Vec::new();
                l.append_stream(encoded, |e| e, |_, o| {
                    outs.push(o.to_vec());
                    Ok(())
                })
                .expect("append_stream");
                outs
            };
            prop_assert_eq!(outs.len(), batches.len());
            for (batch, out) in batches.iter().zip(outs) {
                prop_assert_eq!(out.len(), batch.len());
                for (e, o) in batch.iter().zip(out) {
                    match (&e.id, o) {
                        (None, Outcome::Stored(s)) => {
                            prop_assert_eq!(s, next);
                            next += 1;
                        }
                        (Some(id), Outcome::Stored(s)) => {
                            prop_assert!(!stored_seq.contains_key(id), "id {id} stored twice (seq {s})");
                            prop_assert_eq!(s, next);
                            stored_seq.insert(id.clone(), s);
                            next += 1;
                        }
                        (Some(id), Outcome::Duplicate(s)) => {
                            prop_assert_eq!(stored_seq.get(id).copied(), Some(s),
                                "id {} answered duplicate of seq {} but stored as {:?}", id, s, stored_seq.get(id));
                        }
                        (None, o) => prop_assert!(false, "an event without id was not stored: {o:?}"),
                    }
                }
            }
            if rng.below(4) == 0 {
                drop(l);
                l = Ledger::open(&path).unwrap();
            }
        }
        // The log holds every distinct event exactly once, at the seq reported.
        let reader = l.reader().unwrap();
        prop_assert_eq!(reader.head().seq, next - 1);
        let mut ids_in_log: HashMap<String, u64> = HashMap::new();
        reader.scan(1, u64::MAX, |_, ev| {
            if let Some(id) = ev.event.id.as_ref() {
                let prev = ids_in_log.insert(id.to_string(), ev.seq.to_native());
                assert!(prev.is_none(), "id {id} is in the log twice");
            }
            Ok(true)
        }).unwrap();
        prop_assert_eq!(&ids_in_log, &stored_seq);
        let want: BTreeSet<&String> = distinct_events.iter().filter_map(|e| e.id.as_ref()).collect();
        let have: BTreeSet<&String> = ids_in_log.keys().collect();
        prop_assert_eq!(want, have);
        let report = ledger::verify::verify_log(&l, None).unwrap();
        prop_assert!(report.ok(), "{:?}", report.problems);
    }
}

/// `state --at` past the first checkpoints of the active set (every `CHECKPOINT_EVERY`
/// events), which start its scan and bound its walk over completions, answers as a prefix
/// ledger does: just before, at and after a checkpoint, and between two.
#[test]
fn state_across_checkpoints_equals_a_prefix_ledger() {
    let every = ledger::project::CHECKPOINT_EVERY as usize;
    let cfg = ledger::workload::config_for_events(5, 2 * every as u64 + 4_000);
    let events = distinct(
        ndjson_lines(&cfg)
            .iter()
            .map(|l| ledger::parse_event(l).expect("workload line"))
            .collect(),
    );
    assert!(events.len() > 2 * every, "{} events", events.len());
    let full = build(
        &events,
        &[events.len() / 3, events.len() - events.len() / 3],
        true,
    );
    // Spans that end off the checkpoints: the active set first needed at a checkpoint inside a
    // span is loaded from the tables overlaid with the span still being written.
    let spans = fresh();
    append(&spans.ledger, &events);
    catch_up_in_steps(&spans.ledger, 10_007, &mut |_, _| {}).expect("catch_up in steps");
    for cut in [
        every - 1,
        every,
        every + 1,
        every + every / 2,
        2 * every + 7,
    ] {
        let prefix = build(&events[..cut], &[cut], false);
        let then = full
            .ledger
            .view(Some(cut as u64))
            .unwrap()
            .state_json()
            .unwrap();
        let in_spans = spans
            .ledger
            .view(Some(cut as u64))
            .unwrap()
            .state_json()
            .unwrap();
        assert!(
            then == in_spans,
            "state as of seq {cut}: projected in spans of 10,007 differs from in batches"
        );
        let fresh = prefix.ledger.view(None).unwrap().state_json().unwrap();
        assert!(
            then["current_run"].is_object(),
            "as of {cut}: no current run"
        );
        assert_eq!(
            then["current_run"]["run_id"], fresh["current_run"]["run_id"],
            "current run as of seq {cut}"
        );
        assert!(
            then == fresh,
            "state as of seq {cut} differs from the prefix ledger's"
        );
    }
}

/// The bound a checkpoint keeps for `current_run` covers completions of earlier batches too:
/// here the latest completion by time arrives first, and every completion of the batch that
/// ends at the checkpoint is older.
#[test]
fn current_run_as_of_a_seq_finds_a_completion_older_than_the_checkpoints_batch() {
    let every = ledger::project::CHECKPOINT_EVERY as usize;
    let ev = |line: String| ledger::parse_event(&line).expect("test line");
    let late = 1_900_000_000_000i64;
    let mut events = vec![
        ev(format!(
            r#"{{"type":"run.started","id":"s","run_id":"late","ts":{late},"run":{{"operation":"select"}}}}"#
        )),
        ev(format!(
            r#"{{"type":"run.completed","id":"c","run_id":"late","ts":{}}}"#,
            late + 1
        )),
    ];
    for i in 0..every + 8 {
        events.push(ev(format!(
            r#"{{"type":"run.checkpoint","id":"k{i}","run":{{"id":"ui-{i}","status":"completed","operation":"update","timestamp":{}}}}}"#,
            1_763_700_000_000i64 + i as i64
        )));
    }
    let db = build(&events, &[every / 2, events.len() - every / 2], true);
    let at = every as u64 - 3;
    let then = db.ledger.view(Some(at)).unwrap().state_json().unwrap();
    assert_eq!(then["current_run"]["run_id"], "late", "as of seq {at}");
}

/// Regression: the active set at a checkpoint was stored `\n`-separated, so a run id holding a
/// line break (an id is any string of 1 to 256 bytes) fell apart in `state --at` past it, and
/// the run was missing from the answer.
#[test]
fn run_ids_with_line_breaks_survive_a_checkpoint() {
    let every = ledger::project::CHECKPOINT_EVERY as usize;
    let ev = |line: String| ledger::parse_event(&line).expect("test line");
    let t = 1_763_700_000_000i64;
    let mut events = Vec::new();
    for (k, id) in [r"a\nb", r"c\r", r"d\r\n"].iter().enumerate() {
        events.push(ev(format!(
            r#"{{"type":"run.started","id":"s{k}","run_id":"{id}","ts":{t},"run":{{"operation":"select"}}}}"#
        )));
    }
    for i in 0..every + 8 {
        events.push(ev(format!(
            r#"{{"type":"run.checkpoint","id":"k{i}","run":{{"id":"ui-{i}","status":"completed","operation":"update","timestamp":{}}}}}"#,
            t + 1 + i as i64
        )));
    }
    let db = build(&events, &[events.len()], true);
    let at = every + 2;
    let then = db
        .ledger
        .view(Some(at as u64))
        .unwrap()
        .state_json()
        .unwrap();
    let active: Vec<&str> = then["active_runs"]
        .as_array()
        .expect("active runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("run id"))
        .collect();
    assert_eq!(active, ["a\nb", "c\r", "d\r\n"], "as of seq {at}");
    let prefix = build(&events[..at], &[at], false);
    assert!(then == prefix.ledger.view(None).unwrap().state_json().unwrap());
    let problems = db.ledger.view(None).unwrap().check_against_log(20).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// Regression: a `run.progress` path of 200,000 segments built a state so deep that writing it
/// overflowed the stack, on every catch-up after it (the ledger could no longer be read). Such
/// payloads, and ones deeper than serde_json reads, now fold to the same state whether each
/// event is a span of its own (the state written and read back between them) or all are one,
/// and in any arrival order.
#[test]
fn deep_payloads_fold_the_same_across_spans() {
    let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    let ev = |line: String| ledger::parse_event(&line).expect("test line");
    let t = 1_763_700_000_000i64;
    let deep = nested(300);
    let long_path = format!("output{}", ".a".repeat(200_000));
    let events = vec![
        ev(format!(
            r#"{{"type":"run.started","id":"e1","run_id":"r","ts":{t},"run":{{"operation":"select","input":{deep}}}}}"#
        )),
        ev(format!(
            r#"{{"type":"run.completed","id":"e2","run_id":"r","ts":{},"output":{{"k":{deep}}}}}"#,
            t + 1
        )),
        ev(format!(
            r#"{{"type":"run.progress","id":"e3","run_id":"r","ts":{},"path":"output.k.0.0","value":{deep}}}"#,
            t + 2
        )),
        ev(format!(
            r#"{{"type":"run.progress","id":"e4","run_id":"r","ts":{},"path":"{long_path}","value":1}}"#,
            t + 3
        )),
        ev(format!(
            r#"{{"type":"run.progress","id":"e5","run_id":"r","ts":{},"path":"x.y","op":"append","value":{deep}}}"#,
            t + 4
        )),
        // serde_json reads the value, but not the state with it 20 levels down.
        ev(format!(
            r#"{{"type":"run.progress","id":"e6","run_id":"r","ts":{},"path":"output{}","value":{}}}"#,
            t + 5,
            ".b".repeat(20),
            nested(120)
        )),
        ev(format!(
            r#"{{"type":"run.progress","id":"e7","run_id":"r","ts":{},"path":"output.c","value":1}}"#,
            t + 6
        )),
    ];
    let show = |db: &Db| {
        let answer = db.ledger.view(None).unwrap().show("r").unwrap();
        serde_json::to_string(&answer).unwrap()
    };
    let whole = show(&build(&events, &[events.len()], true));
    let each = show(&build(&events, &vec![1; events.len()], true));
    let reversed: Vec<Event> = events.iter().rev().cloned().collect();
    let late = show(&build(&reversed, &vec![1; events.len()], true));
    assert!(whole == each, "one span vs a span per event");
    assert!(whole == late, "in order vs reversed");
    assert!(whole.contains(r#""x":{"y":["#), "{whole:.300}");
}

/// A rebuild writes new projections beside the old ones and swaps them in: a view opened
/// before it keeps reading the file it opened, and answers as views opened after it do.
#[test]
fn views_opened_before_a_rebuild_keep_answering() {
    let events = distinct(workload(7, 4, 0.0, 16));
    let db = build(&events, &[events.len()], false);
    let names = names(&events);
    let before = db.ledger.view(None).unwrap();
    let old = answers(&before, &names);
    rebuild(&db.ledger, &mut |_, _| {}).expect("rebuild");
    let after = db.ledger.view(None).unwrap();
    assert_eq!(after.applied(), before.applied());
    let rebuilt = answers(&after, &names);
    assert!(old == rebuilt, "{}", first_difference(&old, &rebuilt));
    let still = answers(&before, &names);
    assert!(old == still, "{}", first_difference(&old, &still));
    let fresh = ledger::rebuilding_path(db.ledger.path());
    assert!(!fresh.exists(), "{} is left behind", fresh.display());
}

/// A rebuild stopped once its first span is committed resumes from its watermark: by then the
/// writer holds the second span and commits it, so the next rebuild's first span ends at the
/// third (from scratch it would end at the first); its answers equal an uninterrupted one's.
#[test]
fn an_interrupted_rebuild_resumes_from_its_watermark() {
    let events = distinct(workload(11, 4, 0.0, 16));
    let db = build(&events, &[events.len()], false);
    let names = names(&events);
    let expected = answers_of(&db.ledger, None, &names);
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ledger::project::rebuild_in_spans(&db.ledger, 10, &mut |applied, _| {
            panic!("stopped after {applied}")
        })
    }));
    assert!(stopped.is_err(), "the rebuild was not stopped");
    assert!(ledger::rebuilding_path(db.ledger.path()).exists());
    let mut committed = Vec::new();
    ledger::project::rebuild_in_spans(&db.ledger, 10, &mut |applied, _| committed.push(applied))
        .expect("rebuild");
    assert_eq!(
        committed.first(),
        Some(&30),
        "spans committed: {committed:?}"
    );
    let rebuilt = answers_of(&db.ledger, None, &names);
    assert!(
        expected == rebuilt,
        "{}",
        first_difference(&expected, &rebuilt)
    );
}

/// A child named under the same parent by a later event, in a later span of a rebuild, keeps
/// the seq of its first link: as of the seq in between, it is already in the parent's tree.
#[test]
fn a_child_linked_again_in_a_later_span_keeps_its_first_link() {
    let lines = [
        r#"{"type":"run.started","id":"1","ts":1763700000000,"run_id":"p","run":{"operation":"workflow"}}"#,
        r#"{"type":"run.started","id":"2","ts":1763700000001,"run_id":"c","run":{"operation":"create","parent_run_id":"p"}}"#,
        r#"{"type":"run.started","id":"3","ts":1763700000002,"run_id":"c","run":{"operation":"create","parent_run_id":"p","agent":"bot"}}"#,
        r#"{"type":"run.completed","id":"4","ts":1763700000003,"run_id":"c"}"#,
    ];
    let events: Vec<Event> = lines
        .iter()
        .map(|l| ledger::parse_event(l).expect("event"))
        .collect();
    let names = (vec!["p".to_owned(), "c".to_owned()], Vec::new());
    let whole = build(&events, &[events.len()], false);
    let spans = fresh();
    append(&spans.ledger, &events);
    catch_up_in_steps(&spans.ledger, 1, &mut |_, _| {}).expect("catch up");
    for at in 1..=4 {
        let (a, b) = (
            answers_of(&whole.ledger, Some(at), &names),
            answers_of(&spans.ledger, Some(at), &names),
        );
        assert!(a == b, "at {at}: {}", first_difference(&a, &b));
    }
    let tree = spans
        .ledger
        .view(Some(2))
        .expect("view")
        .tree_json("p", None)
        .expect("tree");
    assert_eq!(tree["children"][0]["run_id"], "c", "{tree}");
}
