//! `runledger serve` over real HTTP on loopback: the real binary on a free port with a temp
//! ledger, driven by a small std-only HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_runledger");

// ---------------------------------------------------------------------------------------------
// A server process

struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(db: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra);
        Self::spawn(cmd)
    }

    /// [`Self::start`] with every file it writes limited to `blocks` × 512 bytes (`ulimit -f`,
    /// `SIGXFSZ` ignored): past it a write fails as on a full disk.
    fn start_limited(db: &Path, blocks: u64) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                r#"ulimit -f {blocks} && trap "" XFSZ && exec "$0" "$@""#
            ))
            .arg(BIN)
            .arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"]);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Server {
        cmd.env_remove("RUNLEDGER_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning runledger serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(a) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(a.trim().to_string());
                        sent = true;
                    }
                }
                if let Ok(mut l) = log2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("runledger serve did not start: {log}");
            }
        };
        Server {
            child,
            addr,
            stderr: log,
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, &[])
    }

    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let r = request(&self.addr, "GET", path, headers, b"").expect("GET");
        (r.status, r.json())
    }

    fn post(&self, body: &str) -> (u16, Value) {
        self.post_with(body, &[("Content-Type", "application/x-ndjson")])
    }

    fn post_with(&self, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let r = request(&self.addr, "POST", "/v1/events", headers, body.as_bytes()).expect("POST");
        (r.status, r.json())
    }

    /// SIGTERM, then the exit code (fails after 30 s).
    fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "sending SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("waiting") {
                return s.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve did not stop on SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most 30 s) for the server to exit on its own: its exit code and its stderr.
    fn wait_exit_code(mut self) -> (i32, String) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("waiting") {
                // The reader thread may still be copying the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (s.code().unwrap_or(-1), self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "serve did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (one request per connection)

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn send_head(
    s: &mut TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Reads one chunk of a chunked body; `None` at the end.
fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut buf = vec![0; size + 2];
    r.read_exact(&mut buf)?;
    buf.truncate(size);
    Ok(Some(buf))
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    // The server may answer (413, 401) before reading the whole body: a failed write is fine
    // as long as an answer comes.
    let sent = send_head(&mut s, addr, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = match read_head(&mut r) {
        Ok(h) => h,
        Err(e) => {
            sent?;
            return Err(e);
        }
    };
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut body = Vec::new();
    if chunked {
        while let Some(c) = read_chunk(&mut r)? {
            body.extend_from_slice(&c);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Test data

fn ev_progress(run: &str, id: &str, i: usize) -> String {
    json!({"type": "run.progress", "id": id, "ts": 1_763_700_000_000i64 + i as i64,
           "run_id": run, "path": "output.text", "op": "append", "value": "x"})
    .to_string()
}

fn ev_started(run: &str, id: &str) -> String {
    json!({"type": "run.started", "id": id, "ts": 1_763_700_000_000i64, "run_id": run,
           "run": {"operation": "workflow", "template": "WT-test"}})
    .to_string()
}

fn ndjson(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn verify(db: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(["verify", "--json"])
        .env_remove("RUNLEDGER_DB")
        .output()
        .expect("running verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn health_queries_and_graceful_stop() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &[]);
    let (code, h) = s.get("/v1/health");
    assert_eq!(code, 200);
    assert_eq!(h["ok"], true);
    assert_eq!(h["head"]["seq"], 0);

    let lines = [
        r#"{"type":"run.started","id":"e1","ts":1763700000000,"run_id":"wf-1","run":{"operation":"workflow","template":"WT-email-to-tasks","owner":"alice","input":{}}}"#,
        r#"{"type":"run.started","id":"e4","ts":1763700000030,"run_id":"r-3","run":{"operation":"create","doctype":"Task","parent_run_id":"wf-1","step_id":"create-tasks"}}"#,
        r#"{"type":"doc.created","id":"e5","ts":1763700000031,"run_id":"r-3","doctype":"Task","name":"Task-00001","data":{"subject":"Follow up"}}"#,
        r#"{"type":"run.completed","id":"e6","ts":1763700000040,"run_id":"r-3","output":{}}"#,
        r#"{"type":"run.completed","id":"e7","ts":1763700000041,"run_id":"wf-1","output":{"steps":1}}"#,
    ]
    .map(String::from);
    let (code, rep) = s.post(&ndjson(&lines));
    assert_eq!(code, 200, "{rep}");
    assert_eq!(rep["accepted"], 5);
    assert_eq!(rep["last_seq"], 5);
    assert_eq!(rep["results"].as_array().map(Vec::len), Some(5));

    // Read-your-writes: the projections are caught up before answering.
    let (code, show) = s.get("/v1/runs/wf-1");
    assert_eq!(code, 200, "{show}");
    assert_eq!(show["status"], "completed");
    let (_, tree) = s.get("/v1/runs/wf-1/tree?depth=1");
    assert_eq!(tree["children"][0]["run_id"], "r-3");
    let (_, trace) = s.get("/v1/docs/Task/Task-00001/trace");
    assert_eq!(trace["created_by"]["root_run"], "wf-1");
    let (_, evs) = s.get("/v1/runs/r-3/events");
    let seqs: Vec<_> = evs
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![Some(2), Some(3), Some(4)]);
    let (_, runs) = s.get("/v1/runs?root=true&template=WT-email-to-tasks");
    assert_eq!(runs["total"], 1);
    let (_, eff) = s.get("/v1/runs/wf-1/effects?tree=true");
    assert_eq!(eff["changes"].as_array().map(Vec::len), Some(1));
    let (_, st) = s.get("/v1/state?at=2");
    assert_eq!(st["is_loading"], true);
    let (code, _) = s.get("/v1/runs/wf-1?at=1");
    assert_eq!(code, 200);
    let (code, nf) = s.get("/v1/runs/nope");
    assert_eq!(code, 404);
    assert!(nf["error"].is_string());
    let (code, _) = s.get("/v1/runs/nope/events");
    assert_eq!(code, 404);
    let (code, _) = s.get("/v1/docs/Task/Nope/trace");
    assert_eq!(code, 404);
    let (code, _) = s.get("/v1/runs?status=bogus");
    assert_eq!(code, 400);
    // A path that is not UTF-8 is answered in JSON like every other bad request.
    for path in [
        "/v1/runs/%FF",
        "/v1/runs/%FF/tree",
        "/v1/runs/%FF/events",
        "/v1/runs/%FF/effects",
        "/v1/docs/%FF/x/trace",
    ] {
        let (code, err) = s.get(path);
        assert_eq!(code, 400, "{path}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains("UTF-8")),
            "{path}: {err}"
        );
    }
    let (code, found) = s.get("/v1/search?q=Follow");
    assert_eq!(code, 200, "{found}");
    assert!(found["total"].as_u64() >= Some(1), "{found}");
    let (code, _) = s.get("/v1/search?q=(((");
    assert_eq!(code, 400);
    // Regression: a query nested thousands of parentheses deep overflowed the stack of the
    // thread answering it, and ended the server.
    let deep = format!("{}a{}", "%28".repeat(4_000), "%29".repeat(4_000));
    let (code, err) = s.get(&format!("/v1/search?q={deep}"));
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("nest")),
        "{err}"
    );
    let (code, _) = s.get("/v1/health");
    assert_eq!(code, 200);
    let (code, stats) = s.get("/v1/stats?by=operation");
    assert_eq!(code, 200, "{stats}");
    assert!(stats["groups"].is_array());
    let (code, _) = s.get("/v1/stats?by=colour");
    assert_eq!(code, 400);
    let m = request(&s.addr, "GET", "/metrics", &[], b"").expect("metrics");
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("runledger_ingest_accepted_total 5"), "{text}");
    assert!(text.contains("runledger_commit_latency_seconds_bucket"));
    assert!(text.contains("runledger_projection_lag_events"));

    let code = s.stop();
    assert_eq!(code, 0);
    let (code, out) = verify(&db);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn concurrent_posters_are_all_stored() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &[]);
    let addr = s.addr.clone();
    const THREADS: usize = 8;
    const BATCHES: usize = 6;
    const PER: usize = 250;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let run = format!("run-{t}");
                let mut accepted = 0;
                for b in 0..BATCHES {
                    let mut lines = Vec::new();
                    if b == 0 {
                        lines.push(ev_started(&run, &format!("{run}-start")));
                    }
                    for i in 0..PER {
                        lines.push(ev_progress(&run, &format!("{run}-{b}-{i}"), i));
                    }
                    let r = request(
                        &addr,
                        "POST",
                        "/v1/events",
                        &[("Content-Type", "application/x-ndjson")],
                        ndjson(&lines).as_bytes(),
                    )
                    .expect("POST");
                    assert_eq!(r.status, 200);
                    let v = r.json();
                    assert_eq!(v["rejected"], 0, "{v}");
                    accepted += v["accepted"].as_u64().unwrap_or(0);
                }
                accepted
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("poster")).sum();
    let expect = (THREADS * (BATCHES * PER + 1)) as u64;
    assert_eq!(total, expect);
    let (_, h) = s.get("/v1/health");
    assert_eq!(h["head"]["seq"], expect);
    for t in 0..THREADS {
        let (code, evs) = s.get(&format!("/v1/runs/run-{t}/events"));
        assert_eq!(code, 200);
        assert_eq!(
            evs.as_array().map(Vec::len),
            Some(BATCHES * PER + 1),
            "run-{t}"
        );
    }
    assert_eq!(s.stop(), 0);
    assert_eq!(verify(&db).0, 0);
}

#[test]
fn retried_batches_are_duplicates() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &[]);
    let lines: Vec<String> = (0..50)
        .map(|i| ev_progress("r", &format!("id-{i}"), i))
        .collect();
    let body = ndjson(&lines);
    let (_, first) = s.post(&body);
    assert_eq!(first["accepted"], 50);
    // The same batch again, as a JSON array this time.
    let arr = format!("[{}]", lines.join(","));
    let (code, second) = s.post_with(&arr, &[("Content-Type", "application/json")]);
    assert_eq!(code, 200, "{second}");
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicates"], 50);
    assert_eq!(second["last_seq"], Value::Null);
    for (a, b) in first["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(second["results"].as_array().expect("results"))
    {
        assert_eq!(b["status"], "duplicate");
        assert_eq!(
            a["seq"], b["seq"],
            "a duplicate names the seq it was stored under"
        );
    }
    // Concurrent retries of one batch: stored once.
    let more: Vec<String> = (50..150)
        .map(|i| ev_progress("r", &format!("id-{i}"), i))
        .collect();
    let body = Arc::new(ndjson(&more));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr.clone();
            let body = Arc::clone(&body);
            std::thread::spawn(move || {
                request(
                    &addr,
                    "POST",
                    "/v1/events",
                    &[("Content-Type", "application/x-ndjson")],
                    body.as_bytes(),
                )
                .expect("POST")
                .json()
            })
        })
        .collect();
    let accepted: u64 = hs
        .into_iter()
        .map(|h| h.join().expect("poster")["accepted"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(accepted, 100);
    let (_, h) = s.get("/v1/health");
    assert_eq!(h["head"]["seq"], 150);
}

#[test]
fn kill_9_loses_no_acknowledged_event() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    type Acked = Arc<Mutex<Vec<(usize, Vec<String>)>>>;
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let addr = s.addr.clone();
            let stop = Arc::clone(&stop);
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                let run = format!("k-{t}");
                let mut b = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..200).map(|i| format!("{run}-{b}-{i}")).collect();
                    let mut lines: Vec<String> = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| ev_progress(&run, id, i))
                        .collect();
                    if b == 0 {
                        lines.insert(0, ev_started(&run, &format!("{run}-start")));
                    }
                    b += 1;
                    match request(
                        &addr,
                        "POST",
                        "/v1/events",
                        &[("Content-Type", "application/x-ndjson")],
                        ndjson(&lines).as_bytes(),
                    ) {
                        Ok(r) if r.status == 200 => {
                            if let Ok(mut a) = acked.lock() {
                                a.push((t, ids));
                            }
                        }
                        _ => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Let some batches through, then kill the server mid-stream.
    let start = Instant::now();
    while acked.lock().map(|a| a.len()).unwrap_or(0) < 20 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("poster");
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(!acked.is_empty());

    let s = Server::start(&db, &[]);
    for t in 0..4 {
        let (code, evs) = s.get(&format!("/v1/runs/k-{t}/events"));
        let mine: Vec<&String> = acked
            .iter()
            .filter(|(tt, _)| *tt == t)
            .flat_map(|(_, ids)| ids)
            .collect();
        if mine.is_empty() {
            continue;
        }
        assert_eq!(code, 200, "{evs}");
        let stored: std::collections::HashSet<String> = evs
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
        for id in mine {
            assert!(stored.contains(id), "acknowledged event {id} is missing");
        }
    }
    assert_eq!(s.stop(), 0);
    let (code, out) = verify(&db);
    assert_eq!(code, 0, "verify after kill -9: {out}");
}

#[test]
fn tokens_and_scopes() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# test tokens\nwriter-tok ingest\nreader-tok read # read only\nboth-tok ingest,read\n",
    )
    .expect("token file");
    let s = Server::start(&db, &["--token-file", tokens.to_str().expect("utf-8 path")]);
    let body = ndjson(&[ev_progress("a", "a1", 0)]);
    let nd = ("Content-Type", "application/x-ndjson");
    let (code, _) = s.post_with(&body, &[nd]);
    assert_eq!(code, 401);
    let (code, _) = s.post_with(&body, &[nd, ("Authorization", "Bearer nope")]);
    assert_eq!(code, 401);
    let (code, _) = s.post_with(&body, &[nd, ("Authorization", "Bearer reader-tok")]);
    assert_eq!(code, 403, "a read token cannot ingest");
    let (code, v) = s.post_with(&body, &[nd, ("Authorization", "Bearer writer-tok")]);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["accepted"], 1);

    let (code, _) = s.get("/v1/runs/a/events");
    assert_eq!(code, 401);
    let (code, _) = s.get_with(
        "/v1/runs/a/events",
        &[("Authorization", "Bearer writer-tok")],
    );
    assert_eq!(code, 403, "an ingest token cannot read");
    let (code, _) = s.get_with(
        "/v1/runs/a/events",
        &[("Authorization", "Bearer reader-tok")],
    );
    assert_eq!(code, 200);
    let (code, _) = s.get_with("/metrics", &[("Authorization", "Bearer both-tok")]);
    assert_eq!(code, 200);
    let (code, _) = s.get("/metrics");
    assert_eq!(code, 401);
    let (code, h) = s.get("/v1/health");
    assert_eq!(code, 200, "health needs no token");
    assert_eq!(h["head"]["seq"], 1);
}

#[test]
fn cors_for_allowed_origins() {
    let dir = tempdir();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tok ingest,read\n").expect("token file");
    let s = Server::start(
        &dir.path().join("l.db"),
        &[
            "--token-file",
            tokens.to_str().expect("utf-8 path"),
            "--cors-origin",
            "http://app.example",
        ],
    );
    // A preflight carries no token and is answered before authentication.
    let pre = request(
        &s.addr,
        "OPTIONS",
        "/v1/events",
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    )
    .expect("OPTIONS");
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("authorization")));
    let r = request(
        &s.addr,
        "GET",
        "/v1/health",
        &[("Origin", "http://app.example")],
        b"",
    )
    .expect("GET");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    let r = request(
        &s.addr,
        "GET",
        "/v1/health",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .expect("GET");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn refuses_non_loopback_without_tokens() {
    let dir = tempdir();
    let out = Command::new(BIN)
        .arg("--db")
        .arg(dir.path().join("l.db"))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .env_remove("RUNLEDGER_DB")
        .output()
        .expect("running serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
    assert!(!dir.path().join("l.db").exists(), "nothing was opened");
}

#[test]
fn oversized_and_malformed_bodies() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &["--max-body", "4096"]);
    let lines: Vec<String> = (0..100)
        .map(|i| ev_progress("big", &format!("b{i}"), i))
        .collect();
    let body = ndjson(&lines);
    assert!(body.len() > 4096);
    let (code, v) = s.post(&body);
    assert_eq!(code, 413, "{v}");
    assert!(v["error"].is_string());

    let json = ("Content-Type", "application/json");
    for bad in [
        r#"[{"type":"run.progress""#,
        r#"[1, 2"#,
        r#"{"type":"run.progress","run_id":"x","ts":1763700000000,"path":"a","value":1}"#,
    ] {
        let (code, v) = s.post_with(bad, &[json]);
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].is_string());
    }
    let r = request(
        &s.addr,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/x-ndjson")],
        b"\xff\xfe not utf-8\n",
    )
    .expect("POST");
    assert_eq!(r.status, 400);
    // NDJSON with bad lines: 200, the good lines stored, each bad one named by index.
    let mixed = format!(
        "{}\nnot json\n{{\"type\":\"nope\"}}\n\n{}\n",
        ev_progress("m", "m1", 0),
        ev_progress("m", "m2", 1)
    );
    let (code, v) = s.post(&mixed);
    assert_eq!(code, 200);
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"], 2);
    let idx: Vec<_> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["index"].as_u64())
        .collect();
    assert_eq!(idx, vec![Some(1), Some(2)]);
    let (code, _) = s.get("/v1/nowhere");
    assert_eq!(code, 404);
}

/// Reads SSE events from a `/v1/stream` connection.
struct SseClient {
    r: BufReader<TcpStream>,
    pending: String,
}

impl SseClient {
    fn open(addr: &str, last_event_id: Option<u64>, from: Option<u64>) -> SseClient {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let path = match from {
            Some(f) => format!("/v1/stream?from={f}"),
            None => "/v1/stream".to_string(),
        };
        let id;
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(l) = last_event_id {
            id = l.to_string();
            headers.push(("Last-Event-ID", &id));
        }
        send_head(&mut s, addr, "GET", &path, &headers, b"").expect("send");
        let mut r = BufReader::new(s);
        let (status, hs) = read_head(&mut r).expect("head");
        assert_eq!(status, 200);
        let resp = Resp {
            status,
            headers: hs,
            body: Vec::new(),
        };
        assert!(resp
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")));
        SseClient {
            r,
            pending: String::new(),
        }
    }

    /// The next event `(id, data)`, skipping comments (keep-alives).
    fn next(&mut self) -> (u64, Value) {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if let Some(id) = id {
                    let v = serde_json::from_str(&data).expect("event JSON");
                    return (id, v);
                }
                continue;
            }
            let chunk = read_chunk(&mut self.r)
                .expect("reading the stream")
                .expect("stream ended");
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[test]
fn stream_resumes_exactly_once() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start(&db, &[]);
    let batch = |from: usize, n: usize| -> String {
        let lines: Vec<String> = (from..from + n)
            .map(|i| ev_progress("tail", &format!("t{i}"), i))
            .collect();
        ndjson(&lines)
    };
    assert_eq!(s.post(&batch(0, 10)).1["accepted"], 10);

    // From the start: read 7, then disconnect.
    let mut c = SseClient::open(&s.addr, None, Some(0));
    let mut seen = Vec::new();
    for _ in 0..7 {
        let (id, v) = c.next();
        assert_eq!(v["seq"].as_u64(), Some(id));
        seen.push(id);
    }
    drop(c);
    // More arrive while disconnected.
    assert_eq!(s.post(&batch(10, 10)).1["accepted"], 10);
    // Resume from the last id received.
    let mut c = SseClient::open(&s.addr, seen.last().copied(), Some(0));
    while seen.last() != Some(&20) {
        seen.push(c.next().0);
    }
    // Live: events posted while connected.
    assert_eq!(s.post(&batch(20, 5)).1["accepted"], 5);
    while seen.last() != Some(&25) {
        seen.push(c.next().0);
    }
    assert_eq!(
        seen,
        (1..=25).collect::<Vec<u64>>(),
        "every event exactly once, in order"
    );

    // A tail without a starting point sees only new events.
    let mut live = SseClient::open(&s.addr, None, None);
    assert_eq!(s.post(&batch(25, 1)).1["accepted"], 1);
    assert_eq!(live.next().0, 26);
    drop(live);
    drop(c);
    // Open streams do not hold up shutdown.
    let _open = SseClient::open(&s.addr, None, None);
    assert_eq!(s.stop(), 0);
}

#[test]
fn js_client_tests() {
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_node {
        assert!(
            std::env::var_os("CI").is_none(),
            "node is not on PATH, and CI is set: the JS client tests must run"
        );
        eprintln!("skipping the JS client tests: node is not on PATH");
        return;
    }
    let root = repo_root();
    let dir = tempdir();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new("node")
        .args(["--test", "clients/js/test/"])
        .current_dir(&root)
        .env("RUNLEDGER_BIN", BIN)
        .env_remove("RUNLEDGER_DB")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("running node --test");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for node") {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "node --test clients/js/test/ failed ({status:?}):\n{stdout}\n{stderr}"
    );
}

/// The index commits less often than the projections; a search about the head still finds
/// what was just acknowledged, without waiting for the index's own cadence.
#[test]
fn search_reads_its_writes_with_a_long_index_interval() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("l.db"), &["--index-interval", "600000"]);
    for round in 0..3 {
        let run = format!("rywsearch-{round}");
        let token = format!("zqxfresh{round}token");
        let line = json!({"type": "run.started", "id": format!("{run}-s"),
                          "ts": 1_763_700_000_000i64, "run_id": run,
                          "run": {"operation": "summarize", "input": {"text": token}}})
        .to_string();
        let (_, rep) = s.post(&ndjson(&[line]));
        assert_eq!(rep["accepted"], 1);
        let t = Instant::now();
        let (code, found) = s.get(&format!("/v1/search?q={token}"));
        assert_eq!(code, 200, "{found}");
        let hits = found["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), 1, "{found}");
        assert_eq!(hits[0]["run_id"], run);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the search waited {:?} for the index",
            t.elapsed()
        );
    }
    assert_eq!(s.stop(), 0);
}

#[test]
fn queries_read_their_writes_with_a_long_catch_up_interval() {
    let dir = tempdir();
    let s = Server::start(&dir.path().join("l.db"), &["--catch-up-interval", "600000"]);
    for round in 0..3 {
        let run = format!("ryw-{round}");
        let (_, rep) = s.post(&ndjson(&[ev_started(&run, &format!("{run}-s"))]));
        assert_eq!(rep["accepted"], 1);
        let t = Instant::now();
        let (code, show) = s.get(&format!("/v1/runs/{run}"));
        assert_eq!(code, 200, "{show}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the query waited {:?} for the catch-up",
            t.elapsed()
        );
    }
    assert_eq!(s.stop(), 0);
}

/// The disk fills while serving (a file size limit stands in for it): the server exits 2 with
/// the reason, and a post that met it answers 503 saying so — instead of answering every later
/// request with redb's "Previous I/O error" while `/v1/health` said ok. Every acknowledged
/// event is stored; a restart goes on.
#[test]
fn a_full_disk_stops_the_server_with_what_it_stored() {
    let dir = tempdir();
    let db = dir.path().join("l.db");
    let s = Server::start_limited(&db, 8_192); // 4 MiB per file
    let mut acknowledged = 0u64;
    for batch in 0..200 {
        let lines: Vec<String> = (0..2_000)
            .map(|i| ev_started(&format!("r-{batch}-{i}"), &format!("e-{batch}-{i}")))
            .collect();
        let headers = [("Content-Type", "application/x-ndjson")];
        // The log or the projections fill first: the post answers 503, or the server is gone.
        let Ok(r) = request(
            &s.addr,
            "POST",
            "/v1/events",
            &headers,
            ndjson(&lines).as_bytes(),
        ) else {
            break;
        };
        let rep = r.json();
        if r.status != 200 {
            assert_eq!(r.status, 503, "{rep}");
            assert!(
                rep["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("stopping")),
                "{rep}"
            );
            break;
        }
        acknowledged = rep["last_seq"].as_u64().expect("last_seq");
    }
    assert!(acknowledged > 0, "some batches fit");
    let exit = s.wait_exit_code();
    assert_eq!(exit.0, 2, "{}", exit.1);
    assert!(exit.1.contains("File too large"), "{}", exit.1);
    assert!(
        exit.1.contains("Every event acknowledged before is stored"),
        "{}",
        exit.1
    );

    let (code, out) = verify(&db);
    assert_eq!(code, 0, "{out}");
    let head = serde_json::from_str::<Value>(&out).expect("verify JSON")["head"]["seq"].as_u64();
    assert!(
        head >= Some(acknowledged),
        "every acknowledged event is stored: {out}"
    );
    let s = Server::start(&db, &[]);
    let (code, rep) = s.post(&ndjson(&[ev_started("r-x", "after")]));
    assert_eq!(code, 200, "{rep}");
    assert_eq!(rep["last_seq"].as_u64(), head.map(|h| h + 1));
    let (code, h) = s.get("/v1/health");
    assert_eq!((code, &h["ok"]), (200, &json!(true)));
    assert_eq!(s.stop(), 0);
}
