//! Shared helpers of the CLI integration tests: a ledger in a temp dir and a runner for the
//! real `runledger` binary against it.
//!
//! ```ignore
//! let l = Ledger::new();
//! let (code, report, stderr) = l.cmd(&["ingest", "-"]).stdin(text).json();
//! let state = l.ok(&["state"]); // `--json`, exit 0 asserted, parsed stdout
//! ```
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_runledger");

/// A command that runs longer than this is killed and the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A ledger file in its own temp dir (deleted on drop).
pub struct Ledger {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// A temp dir with a (not yet created) ledger path `ledger.db` in it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let db = dir.path().join("ledger.db");
        Ledger { dir, db }
    }

    /// A path for another file in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to a file in the temp dir and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("writing a test file");
        p
    }

    /// `runledger --db <db> ARGS…`, ready to run.
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Cmd {
        let mut c = Command::new(BIN);
        c.arg("--db").arg(&self.db);
        for a in args {
            c.arg(a);
        }
        c.env_remove("RUNLEDGER_DB");
        Cmd {
            cmd: c,
            stdin: None,
            timeout: TIMEOUT,
        }
    }

    /// Runs `ARGS --json`, asserts exit 0, returns the parsed stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let (code, v, err) = self.cmd(args).json();
        assert_eq!(
            code,
            0,
            "`runledger {}` exited {code}; stderr: {err}; stdout: {v}",
            show_args(args)
        );
        v
    }

    /// `ingest - --json` of `text`: (exit code, report, stderr).
    pub fn ingest(&self, text: &str) -> (i32, Value, String) {
        self.cmd(&["ingest", "-"]).stdin(text).json()
    }

    /// Ingests `text` and asserts it was all accepted or duplicates (exit 0).
    pub fn ingest_ok(&self, text: &str) -> Value {
        let (code, v, err) = self.ingest(text);
        assert_eq!(code, 0, "ingest exited {code}: {err}; report {v}");
        v
    }

    /// Ingests lines (each without newline).
    pub fn ingest_lines<S: AsRef<str>>(&self, lines: &[S]) -> Value {
        self.ingest_ok(&join_lines(lines))
    }

    /// Spawns `runledger --db <db> ARGS…` with null stdin and piped stdout/stderr.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Child {
        let mut c = self.cmd(args).cmd;
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawning runledger")
    }

    /// Opens the ledger file with the library (drop it before running the binary again).
    pub fn open(&self) -> ledger::Ledger {
        ledger::Ledger::open_existing(&self.db).expect("opening the ledger with the library")
    }

    /// Every stored event rendered with `ledger::render::event_value` (with `seq`), in seq
    /// order.
    pub fn events(&self) -> Vec<Value> {
        let l = self.open();
        let r = l.reader().expect("reader");
        let mut out = Vec::new();
        r.scan(1, u64::MAX, |_, ev| {
            out.push(ledger::render::event_value(ev, true));
            Ok(true)
        })
        .expect("scanning the log");
        out
    }

    /// `verify --json`: (exit code, report).
    pub fn verify(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["verify"];
        args.extend_from_slice(extra);
        let (code, v, err) = self.cmd(&args).json();
        assert!(code == 0 || code == 1, "verify exited {code}: {err}");
        (code, v)
    }
}

fn show_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Joins lines into NDJSON text (newline after each).
pub fn join_lines<S: AsRef<str>>(lines: &[S]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l.as_ref());
        s.push('\n');
    }
    s
}

/// One run of the binary.
pub struct Cmd {
    pub cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished command gave.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout parsed as one JSON document (panics, showing both streams, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}); exit {}; stdout: {:?}; stderr: {:?}",
                self.code, self.stdout, self.stderr
            )
        })
    }
    /// Stdout parsed as NDJSON.
    pub fn ndjson(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }
}

impl Cmd {
    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, a: &[S]) -> Self {
        for x in a {
            self.cmd.arg(x);
        }
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    /// Feeds `text` on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, text: impl AsRef<[u8]>) -> Self {
        self.stdin = Some(text.as_ref().to_vec());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs to the end (killed after the timeout, which fails the test).
    pub fn run(mut self) -> Out {
        let what = format!("{:?}", self.cmd);
        self.cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawning runledger");
        let input = self.stdin.take().unwrap_or_default();
        let mut sin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            // A command that does not read stdin closes it: ignore the broken pipe.
            let _ = sin.write_all(&input);
        });
        let mut sout = child.stdout.take().expect("stdout");
        let mut serr = child.stderr.take().expect("stderr");
        let out_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut sout, &mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut serr, &mut s);
            s
        });
        let status = wait_timeout(&mut child, self.timeout)
            .unwrap_or_else(|| panic!("{what} ran longer than {:?}", self.timeout));
        let _ = writer.join();
        let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
        let code = status.code().unwrap_or(-1);
        assert!(
            !stderr.contains("panicked at") && !stderr.contains("RUST_BACKTRACE"),
            "{what} panicked: {stderr}"
        );
        Out {
            code,
            stdout,
            stderr,
        }
    }

    /// Runs with `--json`: (exit code, parsed stdout or `Null` when stdout is empty, stderr).
    pub fn json(self) -> (i32, Value, String) {
        let out = self.arg("--json").run();
        let v = if out.stdout.trim().is_empty() {
            Value::Null
        } else {
            out.json()
        };
        (out.code, v, out.stderr)
    }
}

/// Waits for `child` at most `t`; kills it and returns `None` past that.
pub fn wait_timeout(child: &mut Child, t: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("waiting for runledger") {
            return Some(s);
        }
        if start.elapsed() > t {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Removes `keys` from every object of `v`, recursively (for comparing answers that differ
/// only in fields such as `at_seq`).
pub fn strip_keys(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(m) => {
            for k in keys {
                m.remove(*k);
            }
            for (_, x) in m.iter_mut() {
                strip_keys(x, keys);
            }
        }
        Value::Array(a) => {
            for x in a {
                strip_keys(x, keys);
            }
        }
        _ => {}
    }
}

/// Asserts that `v` is an object carrying every key of `keys`.
#[track_caller]
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {v}"));
    let missing: Vec<&&str> = keys.iter().filter(|k| !m.contains_key(**k)).collect();
    assert!(missing.is_empty(), "keys {missing:?} missing from {v}");
}

/// A small deterministic PRNG (splitmix64) for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// A seed from the environment (`RUNLEDGER_TEST_SEED`) or the clock, printed so that a
/// failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("RUNLEDGER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {s} (set RUNLEDGER_TEST_SEED={s} to replay)");
    s
}

/// Whether the path exists and is non-empty.
pub fn non_empty(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.len() > 0)
}
