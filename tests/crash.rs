//! Crash safety: `kill -9` of the real binary at random moments — while ingesting, while
//! catching up projections — then the ledger must open, verify, hold every event that was
//! reported stored, and answer as a ledger that never crashed.
//!
//! The kill delays and the workload come from a seed printed on stderr; set
//! `RUNLEDGER_TEST_SEED` to replay one.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ledger::workload::{write_ndjson, WorkloadConfig};
use serde_json::Value;

use crate::common::{join_lines, seed, Ledger, Rng};

const CHUNK_LINES: usize = 2_000;

fn workload_lines(seed: u64, roots: usize) -> Vec<String> {
    let mut buf = Vec::new();
    write_ndjson(&WorkloadConfig::new(seed, roots), &mut buf).expect("generating the workload");
    String::from_utf8(buf)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A new ledger with the workload of `seed` (`roots` root runs) ingested.
fn ledger_with_workload(seed: u64, roots: usize) -> Ledger {
    let l = Ledger::new();
    let file = l.write("workload.ndjson", &join_lines(&workload_lines(seed, roots)));
    let (code, _, err) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0, "{err}");
    l
}

fn id_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).expect("workload line is JSON");
    v.get("id").and_then(Value::as_str).map(str::to_owned)
}

/// Every client id stored in the log, read with the library.
fn stored_ids(l: &Ledger) -> (BTreeSet<String>, u64) {
    let lib = l.open();
    let r = lib.reader().expect("reader");
    let mut ids = BTreeSet::new();
    let mut n = 0u64;
    r.scan(1, u64::MAX, |_, ev| {
        n += 1;
        if let Some(id) = ev.event.id.as_ref() {
            assert!(ids.insert(id.to_string()), "id {id} stored twice");
        }
        Ok(true)
    })
    .expect("scanning the log");
    (ids, n)
}

/// Spawns `ARGS`, SIGKILLs it after `delay` (unless it finished first). Returns the exit code
/// and stderr when it finished on its own, `None` when it was killed.
fn run_and_kill(l: &Ledger, args: &[&str], delay: Duration) -> Option<(i32, String)> {
    let mut cmd = l.cmd(args).cmd;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning runledger");
    let start = Instant::now();
    let mut status = None;
    while start.elapsed() < delay {
        if let Some(s) = child.try_wait().expect("try_wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if status.is_none() {
        status = child.try_wait().expect("try_wait");
    }
    match status {
        Some(s) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Some((s.code().unwrap_or(-1), err))
        }
        None => {
            child.kill().expect("kill -9"); // SIGKILL on Unix
            let _ = child.wait();
            None
        }
    }
}

#[track_caller]
fn assert_verifies(l: &Ledger, when: &str) -> u64 {
    let (code, v) = l.verify(&[]);
    assert_eq!(code, 0, "{when}: verify after a crash: {v}");
    assert_eq!(v["ok"], true, "{when}: {v}");
    v["events"].as_u64().unwrap()
}

#[test]
fn kill_during_ingest_loses_nothing_reported_stored() {
    let seed = seed("kill_during_ingest");
    let mut rng = Rng(seed);
    const ITERATIONS: usize = 10;
    let lines = workload_lines(seed, 2_700);
    let chunks: Vec<&[String]> = lines.chunks(CHUNK_LINES).collect();
    assert!(chunks.len() > ITERATIONS, "{} chunks", chunks.len());
    let l = Ledger::new();
    let files: Vec<_> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| l.write(&format!("chunk-{i}.ndjson"), &join_lines(c)))
        .collect();
    let ingest = |i: usize| -> Vec<String> {
        vec![
            "ingest".into(),
            files[i].to_string_lossy().into_owned(),
            "--json".into(),
        ]
    };

    // Chunks whose ingest exited 0: everything in them must stay stored.
    let mut done: Vec<usize> = Vec::new();
    // The highest seq an ingest reported stored.
    let mut reported = 0u64;
    let mut kills = 0;
    for it in 0..ITERATIONS {
        // Retry the chunk the previous crash interrupted (or the first): it must succeed.
        let args = ingest(it);
        let (code, rep, err) = l.cmd(&args[..2]).json();
        assert_eq!(code, 0, "iteration {it}: ingest after a crash: {err}");
        assert_eq!(rep["rejected"], 0);
        reported = reported.max(rep["last_seq"].as_u64().unwrap_or(0));
        done.push(it);

        // Then the next chunk, killed at a random moment (mostly before it ends).
        let delay = Duration::from_millis(rng.range(5, 150));
        let args = ingest(it + 1);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match run_and_kill(&l, &args, delay) {
            None => kills += 1,
            Some((0, _)) => done.push(it + 1),
            Some((c, err)) => panic!("iteration {it}: ingest exited {c}: {err} (seed {seed})"),
        }

        // The file opens and verifies, and holds at least what was reported stored.
        let events = assert_verifies(&l, &format!("iteration {it} (seed {seed})"));
        assert!(
            events >= reported,
            "iteration {it}: {events} events after the crash, {reported} were reported stored \
             (seed {seed})"
        );
    }
    assert!(kills > 0, "no ingest was ever killed mid-way (seed {seed})");

    // Every id of every completed chunk is in the log, once; nothing that was never sent is.
    let (ids, _) = stored_ids(&l);
    let sent: BTreeSet<String> = chunks[..=ITERATIONS]
        .iter()
        .flat_map(|c| c.iter().filter_map(|l| id_of(l)))
        .collect();
    assert!(ids.is_subset(&sent));
    for &c in &done {
        for line in chunks[c] {
            if let Some(id) = id_of(line) {
                assert!(
                    ids.contains(&id),
                    "event {id} of chunk {c}, reported stored, is gone (seed {seed})"
                );
            }
        }
    }

    // Re-ingesting every completed chunk stores only the events without ids.
    done.sort_unstable();
    done.dedup();
    let all: Vec<&String> = done.iter().flat_map(|&c| chunks[c].iter()).collect();
    let with_id = all.iter().filter(|l| id_of(l).is_some()).count();
    let file = l.write("again.ndjson", &join_lines(&all));
    let (code, rep, err) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0, "{err}");
    assert_eq!(rep["duplicates"], with_id, "{rep}");
    assert_eq!(rep["accepted"], all.len() - with_id, "{rep}");
    assert_verifies(&l, "at the end");
}

#[test]
fn kill_during_projection_catch_up_recovers_the_same_answers() {
    let seed = seed("kill_during_catch_up");
    let mut rng = Rng(seed);
    let lines = workload_lines(seed, 1_200);
    let parts: Vec<&[String]> = lines.chunks(lines.len() / 4 + 1).collect();
    let crashed = Ledger::new();
    let mut kills = 0;
    for (i, part) in parts.iter().enumerate() {
        let file = crashed.write(&format!("part-{i}.ndjson"), &join_lines(part));
        let (code, rep, err) = crashed
            .cmd(&["ingest", "--no-wait-indexed"])
            .arg(&file)
            .json();
        assert_eq!(code, 0, "{err}");
        assert_eq!(rep["rejected"], 0);
        // Reading commands catch projections up first: kill them during it. The delays stay
        // below how long a catch-up of one part takes, or no kill would land mid-way.
        for q in [&["state"][..], &["runs"], &["state"]] {
            let delay = Duration::from_millis(rng.range(5, 80));
            let mut args = q.to_vec();
            args.push("--json");
            match run_and_kill(&crashed, &args, delay) {
                None => kills += 1,
                Some((0, _)) => {}
                Some((c, err)) => panic!("{q:?} after a crash exited {c}: {err} (seed {seed})"),
            }
        }
    }
    assert!(kills > 0, "nothing was ever killed mid-way (seed {seed})");
    assert_verifies(&crashed, &format!("after the crashes (seed {seed})"));

    let clean = Ledger::new();
    let file = clean.write("all.ndjson", &join_lines(&lines));
    let (code, _, err) = clean.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0, "{err}");

    for q in [
        vec!["state"],
        vec!["runs", "--limit", "1000000"],
        vec![
            "runs", "--root", "--status", "running", "--limit", "1000000",
        ],
    ] {
        let a = crashed.ok(&q);
        let b = clean.ok(&q);
        assert!(
            a == b,
            "{q:?} after crashes differs from a clean ledger (seed {seed})"
        );
    }
    // A sample of runs answers the same too.
    let runs = clean.ok(&["runs", "--limit", "1000000"]);
    let runs = runs["runs"].as_array().unwrap();
    for _ in 0..10 {
        let id = runs[rng.range(0, runs.len() as u64) as usize]["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            crashed.ok(&["show", &id]),
            clean.ok(&["show", &id]),
            "show {id}"
        );
        assert_eq!(
            crashed.ok(&["tree", &id]),
            clean.ok(&["tree", &id]),
            "tree {id}"
        );
    }
}

/// Kills `ingest` late — after its events are durable, while projections and the search
/// index catch up — again and again: every following command must still work.
#[test]
fn kill_while_indexing_leaves_the_ledger_usable() {
    let seed = seed("kill_while_indexing");
    let mut rng = Rng(seed);
    let lines = workload_lines(seed, 2_000);
    let chunks: Vec<&[String]> = lines.chunks(CHUNK_LINES / 2).collect();
    let l = Ledger::new();
    let file = |i: usize| l.write(&format!("c-{i}.ndjson"), &join_lines(chunks[i]));
    // Calibrate: how long one whole ingest of a chunk takes here.
    let f0 = file(0);
    let start = Instant::now();
    let (code, _, err) = l.cmd(&["ingest"]).arg(&f0).json();
    assert_eq!(code, 0, "{err}");
    let whole = start.elapsed().as_millis() as u64;
    let mut kills = 0;
    for i in 1..chunks.len() {
        let f = file(i);
        let f = f.to_string_lossy().into_owned();
        let delay = Duration::from_millis(rng.range(whole / 2, whole * 5 / 4 + 1));
        match run_and_kill(&l, &["ingest", &f, "--json"], delay) {
            None => kills += 1,
            Some((0, _)) => {}
            Some((c, err)) => panic!("chunk {i}: ingest exited {c}: {err} (seed {seed})"),
        }
        let (code, _, err) = l.cmd(&["runs", "--limit", "1"]).json();
        assert_eq!(
            code, 0,
            "chunk {i}: reading after a kill {delay:?} into an ingest (of ~{whole} ms) \
             failed: {err} (seed {seed})"
        );
    }
    assert!(kills > 0, "(seed {seed})");
    assert_verifies(&l, &format!("at the end (seed {seed})"));
}

/// The projections file is derived: lost, or belonging to another log (a log restored from a
/// backup beside newer projections), it is rebuilt, and every answer is the log's own.
#[test]
fn projections_of_an_older_layout_are_rebuilt() {
    let a = ledger_with_workload(3, 60);
    let record = a
        .events()
        .into_iter()
        .find(|e| e["type"] == "doc.created")
        .expect("the workload creates records");
    let (doctype, name) = (
        record["doctype"].as_str().expect("doctype").to_owned(),
        record["name"].as_str().expect("name").to_owned(),
    );
    let q = ["trace", doctype.as_str(), name.as_str()];
    let want = a.ok(&q);
    // Layout 2 kept no record change in `doc_events` (the value was `()`).
    {
        let db = redb::Database::open(ledger::projections_path(&a.db)).expect("open projections");
        let tx = db.begin_write().expect("write");
        tx.delete_table(redb::TableDefinition::<(&str, &str, u64), &[u8]>::new(
            "doc_events",
        ))
        .expect("drop doc_events");
        tx.open_table(redb::TableDefinition::<(&str, &str, u64), ()>::new(
            "doc_events",
        ))
        .expect("old doc_events");
        tx.open_table(redb::TableDefinition::<&str, u64>::new("proj_meta"))
            .expect("meta")
            .insert("version", 2)
            .expect("old version");
        tx.commit().expect("commit");
    }
    assert_eq!(a.ok(&q), want, "projections of layout 2 were not rebuilt");
}

#[test]
fn projections_file_lost_damaged_or_of_another_log_is_rebuilt() {
    let a = ledger_with_workload(1, 60);
    let b = ledger_with_workload(2, 90);
    let q = ["runs", "--limit", "1000000"];
    let want = a.ok(&q);
    let state = a.ok(&["state"]);
    assert_ne!(
        want,
        b.ok(&q),
        "the two ledgers must differ for this test to mean anything"
    );

    let proj = ledger::projections_path(&a.db);
    assert!(
        proj.exists(),
        "projections live beside the log at {}",
        proj.display()
    );
    std::fs::copy(ledger::projections_path(&b.db), &proj).expect("copying projections");
    assert_eq!(a.ok(&q), want, "projections of another log were used");
    assert_eq!(a.ok(&["state"]), state);

    std::fs::remove_file(&proj).expect("removing projections");
    assert_eq!(a.ok(&q), want, "lost projections were not rebuilt");
    assert_eq!(a.ok(&["state"]), state);

    // What a kill while redb creates the file leaves (it writes its magic number last), and a
    // file that is not a database at all.
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    // A database whose pages past the header are gone: redb panics opening it.
    let mut zeroed = std::fs::read(&proj).expect("reading projections");
    zeroed[8192..].fill(0);
    let damaged = [
        ("half-created", vec![0u8; 8192]),
        ("garbage", garbage),
        ("zeroed past the header", zeroed),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&proj, &bytes).expect("damaging projections");
        assert_eq!(a.ok(&q), want, "{what} projections were not rebuilt");
        assert_eq!(a.ok(&["state"]), state, "{what} projections");
        // A rebuild left in that state by a kill starts over.
        std::fs::write(ledger::rebuilding_path(&a.db), &bytes).expect("damaging the rebuild");
        let (code, _, err) = a.cmd(&["rebuild"]).json();
        assert_eq!(code, 0, "rebuild over a {what} file: {err}");
        assert_eq!(a.ok(&q), want, "after a rebuild over a {what} file");
    }
    assert_verifies(&a, "after replacing its projections");
}

/// Damage inside a projections file redb opens: a run's stored state that does not decode,
/// a table that disagrees with the runs. A query says so in one line (exit 2, no panic), `verify`
/// reports it (exit 1), and `rebuild` repairs it.
#[test]
fn damaged_projection_pages_are_reported_and_rebuilt() {
    let l = ledger_with_workload(7, 60);
    l.ok(&["rebuild"]);
    let q = ["runs", "--limit", "1000000"];
    let want = l.ok(&q);
    let run = want["runs"][0]["run_id"]
        .as_str()
        .expect("a run")
        .to_owned();
    let proj = ledger::projections_path(&l.db);
    let tables = |edit: &dyn Fn(&redb::WriteTransaction)| {
        let db = redb::Database::open(&proj).expect("opening the projections");
        let tx = db.begin_write().expect("a write transaction");
        edit(&tx);
        tx.commit().expect("committing");
    };
    let runs: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("runs");
    let by_start: redb::TableDefinition<(i64, &str), ()> =
        redb::TableDefinition::new("runs_by_start");
    let damages: [(&str, &dyn Fn()); 2] = [
        ("a run state that does not decode", &|| {
            tables(&|tx| {
                let mut t = tx.open_table(runs).expect("runs");
                t.insert(run.as_str(), b"\xff\x01".as_slice())
                    .expect("inserting");
            })
        }),
        ("a runs_by_start row missing", &|| {
            tables(&|tx| {
                let mut t = tx.open_table(by_start).expect("runs_by_start");
                t.pop_first().expect("removing").expect("a row");
            })
        }),
    ];
    for (what, damage) in damages {
        damage();
        // Each command meets the damage as it was made: a process that redb panicked in does not
        // close the file cleanly, and the next open repairs it, which can roll it back past the
        // damage.
        let damaged = std::fs::read(&proj).expect("reading the projections");
        let (code, v) = l.verify(&[]);
        assert_eq!(code, 1, "{what}: verify: {v}");
        let problem = v["problems"][0]["problem"].as_str().unwrap_or_default();
        assert!(
            problem.contains("damaged") || problem.contains("runs_by_start lists"),
            "{what}: {v}"
        );
        if what != "a runs_by_start row missing" {
            std::fs::write(&proj, &damaged).expect("writing the projections");
            let out = l.cmd(&["show", run.as_str()]).run();
            assert_eq!(out.code, 2, "{what}: show: {}", out.stderr);
            assert_eq!(
                out.stderr.trim().lines().count(),
                1,
                "{what}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("damaged") && out.stderr.contains("runledger rebuild"),
                "{what}: {}",
                out.stderr
            );
        }
        std::fs::write(&proj, &damaged).expect("writing the projections");
        l.ok(&["rebuild"]);
        assert_eq!(l.ok(&q), want, "{what}: after a rebuild");
        assert_verifies(&l, what);
    }
}

/// Kills `rebuild` mid-way, again and again: the projections it replaces keep answering (the
/// new ones are written beside them), no rebuild goes back behind a killed one's watermark,
/// and the one that finishes answers as a ledger never rebuilt.
#[test]
fn kill_during_rebuild_keeps_the_old_projections_and_resumes() {
    let seed = seed("kill_during_rebuild");
    let mut rng = Rng(seed);
    let lines = workload_lines(seed, 1_200);
    let l = Ledger::new();
    let file = l.write("all.ndjson", &join_lines(&lines));
    let (code, _, err) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0, "{err}");
    let queries = [vec!["state"], vec!["runs", "--limit", "1000000"]];
    let before: Vec<Value> = queries.iter().map(|q| l.ok(q)).collect();
    // Kills land between a tenth and two thirds of an uninterrupted rebuild's time: in its
    // projections part (the search index is rebuilt after).
    let start = Instant::now();
    let (code, _, err) = l.cmd(&["rebuild", "--span", "2000"]).json();
    assert_eq!(code, 0, "{err}");
    let whole = start.elapsed().as_millis() as u64;
    eprintln!("an uninterrupted rebuild: {whole} ms");
    let rebuilding = l.path("ledger.db.proj.rebuild");
    // None when the kill came while redb was creating the file (it writes its magic number
    // last); 0 when it came before the first commit.
    let watermark = || -> Option<u64> {
        use redb::ReadableDatabase as _;
        let db = match redb::Database::open(&rebuilding) {
            Ok(db) => db,
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                return None;
            }
            Err(e) => panic!("opening the rebuild file: {e}"),
        };
        let tx = db.begin_read().expect("read");
        let meta = match tx.open_table(redb::TableDefinition::<&str, u64>::new("proj_meta")) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Some(0),
            Err(e) => panic!("proj_meta: {e}"),
        };
        Some(meta.get("applied").expect("get").map_or(0, |v| v.value()))
    };
    let mut kills = 0;
    // Watermarks of the rebuild file seen after kills, while one rebuild is under way.
    let mut seen: Vec<u64> = Vec::new();
    let mut mid_way = false;
    for _ in 0..8 {
        let delay = Duration::from_millis(rng.range(whole / 10, whole / 2));
        // Small spans: many commits, so kills land between them.
        match run_and_kill(&l, &["rebuild", "--span", "2000"], delay) {
            Some((0, _)) => break,
            Some((c, err)) => panic!("rebuild exited {c}: {err} (seed {seed})"),
            None => kills += 1,
        }
        if !rebuilding.exists() {
            // That one got past its swap (and was killed indexing): the next starts afresh.
            seen.clear();
        } else if let Some(applied) = watermark() {
            assert!(
                seen.last().is_none_or(|&w| w <= applied),
                "a rebuild started over instead of resuming: {seen:?} then {applied} (seed {seed})"
            );
            mid_way |= applied > 0;
            seen.push(applied);
        } else {
            // A file redb never finished creating: nothing was committed to it yet.
            assert!(
                seen.iter().all(|&w| w == 0),
                "a rebuild file with commits became unreadable: {seen:?} (seed {seed})"
            );
        }
        for (q, b) in queries.iter().zip(&before) {
            assert!(
                &l.ok(q) == b,
                "{q:?} while a rebuild was interrupted differs (seed {seed})"
            );
        }
    }
    assert!(kills > 0, "no rebuild was killed mid-way (seed {seed})");
    assert!(
        mid_way,
        "no kill landed after a span was committed (seed {seed})"
    );
    let (code, _, err) = l.cmd(&["rebuild"]).json();
    assert_eq!(code, 0, "{err}");
    assert!(!rebuilding.exists(), "the rebuild file is left behind");
    assert_verifies(&l, &format!("after the rebuild (seed {seed})"));
    for (q, b) in queries.iter().zip(&before) {
        assert!(
            &l.ok(q) == b,
            "{q:?} after the rebuild differs (seed {seed})"
        );
    }
}

/// Runs `runledger --db <db> ARGS` with every file it writes limited to `blocks` × 512 bytes
/// (`ulimit -f`, `SIGXFSZ` ignored): past it a write fails (EFBIG) as on a full disk.
fn run_limited(l: &Ledger, blocks: u64, args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"ulimit -f {blocks} && trap "" XFSZ && exec "$0" "$@""#
        ))
        .arg(crate::common::BIN)
        .arg("--db")
        .arg(&l.db)
        .args(args)
        .env_remove("RUNLEDGER_DB")
        .output()
        .expect("running runledger with a file size limit")
}

/// A disk that fills during an ingest (here: a file size limit, `ulimit -f`, with `SIGXFSZ`
/// ignored so writes fail with EFBIG as they would with ENOSPC): the ingest exits 2 naming how
/// many events it stored before, the ledger verifies with exactly those, and ingesting the same
/// input again stores the rest, the stored ones skipped as duplicates.
#[test]
fn an_ingest_that_runs_out_of_space_says_what_it_stored() {
    let l = Ledger::new();
    let lines = workload_lines(seed("out_of_space"), 4_000);
    let text = join_lines(&lines);
    assert!(
        text.len() > 8 << 20,
        "the input outgrows the limit below: {}",
        text.len()
    );
    let file = l.write("workload.ndjson", &text);
    // 8,192 blocks of 512 bytes: 4 MiB per file.
    let limited = run_limited(&l, 8_192, &["ingest".as_ref(), file.as_os_str()]);
    let err = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let stored: u64 = err
        .split_once("ingest stopped after ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stored count in: {err}"));
    assert!(stored > 0, "some chunks fit: {err}");
    assert!(err.contains(&format!("as seq 1..{stored}")), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(assert_verifies(&l, "after the failed ingest"), stored);

    let (code, again, err) = l.cmd(&["ingest"]).arg(&file).json();
    assert_eq!(code, 0, "{err}");
    let (ids, n) = stored_ids(&l);
    let all: BTreeSet<String> = lines.iter().filter_map(|s| id_of(s)).collect();
    assert_eq!(ids, all);
    assert_eq!(again["accepted"].as_u64(), Some(n - stored), "{again}");
    assert_verifies(&l, "after ingesting again");
}

/// A rebuild that runs out of space (a file size limit stands in for a full disk) says so,
/// leaves the current projections answering, and removes its partial file (which would only
/// hold on to the space); with room it rebuilds.
#[test]
fn a_rebuild_that_runs_out_of_space_keeps_the_projections() {
    let l = ledger_with_workload(seed("rebuild_out_of_space"), 2_000);
    let before = l.ok(&["runs", "--limit", "5"]);
    let proj_bytes = std::fs::metadata(l.path("ledger.db.proj"))
        .expect("projections")
        .len();
    let log_bytes = std::fs::metadata(&l.db).expect("log").len();
    // Room for the log's reads, not for new projections half as large as the current ones.
    let blocks = (proj_bytes / 2 / 512).max(64);
    assert!(blocks * 512 < log_bytes.max(proj_bytes));
    let limited = run_limited(&l, blocks, &["rebuild".as_ref()]);
    let err = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(2), "{err}");
    assert!(err.contains("the current ones are unchanged"), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(!l.path("ledger.db.proj.rebuild").exists());
    assert_eq!(l.ok(&["runs", "--limit", "5"]), before);
    l.ok(&["rebuild"]);
    assert_eq!(l.ok(&["runs", "--limit", "5"]), before);
    assert_verifies(&l, "after the rebuild");
}

/// An export that runs out of space names the file and leaves no file behind — neither the
/// partial one nor those of tables that completed — and no manifest: a glob over the directory
/// sees only what the manifest lists. With room, the export is whole.
#[test]
fn an_export_that_runs_out_of_space_leaves_no_file() {
    let l = ledger_with_workload(seed("export_out_of_space"), 2_000);
    for format in ["parquet", "csv", "ndjson"] {
        let out = l.path(&format!("export-{format}"));
        let mut args = ["export", "--format", format, "--out"]
            .map(std::ffi::OsStr::new)
            .to_vec();
        args.push(out.as_os_str());
        // The runs table's file fits; the events table's does not.
        let limited = run_limited(&l, 1_024, &args);
        let err = String::from_utf8_lossy(&limited.stderr);
        assert_eq!(limited.status.code(), Some(2), "{format}: {err}");
        assert!(err.contains(".tmp: "), "{format}: names the file: {err}");
        assert!(err.contains("File too large"), "{format}: {err}");
        let left = walk_files(&out);
        assert!(left.is_empty(), "{format}: left behind: {left:?}");
        let done = l.ok(&[
            "export",
            "--format",
            format,
            "--out",
            &out.to_string_lossy(),
        ]);
        assert!(
            done["files"].as_array().is_some_and(|f| f.len() >= 3),
            "{done}"
        );
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The reading commands work on a full disk (here no write is allowed at all): opening the
/// ledger for writing fails, so it is read as it is. Regression: they all failed — and each
/// open committed a write transaction to both files (an fsync per command), which on a real
/// full disk failed too.
#[test]
fn reading_commands_work_on_a_full_disk() {
    let l = ledger_with_workload(seed("reads_write_nothing"), 200);
    let run = l.ok(&["runs", "--limit", "1"])["runs"][0]["run_id"]
        .as_str()
        .expect("a run")
        .to_owned();
    let commands: [&[&str]; 6] = [
        &["runs", "--limit", "3"],
        &["show", &run],
        &["tree", &run],
        &["state"],
        &["search", "invoice"],
        &["verify"],
    ];
    for args in commands {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let out = run_limited(&l, 0, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Only `search` brings the search index up to date: the other reading commands answer when
/// the index cannot grow (a full disk, here a file size limit of 8 KiB). Regression: every
/// reading command failed with the index's error.
#[test]
fn an_index_that_cannot_grow_fails_search_alone() {
    let l = ledger_with_workload(seed("index_cannot_grow"), 300);
    // The index must be built again from nothing: its segments outgrow the limit.
    std::fs::remove_dir_all(l.path("ledger.db.search")).expect("removing the index");
    for args in [&["runs", "--limit", "2"][..], &["state"], &["stats"]] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let out = run_limited(&l, 16, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    let out = run_limited(&l, 16, &["search".as_ref(), "invoice".as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("search index"), "{err}");
    let found = l.ok(&["search", "invoice"]);
    assert!(found["total"].as_u64() > Some(0), "{found}");
}
