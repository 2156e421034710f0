//! `serve`: ingest over HTTP on loopback into the real `runledger serve` binary, next to the
//! CLI bulk path (`ingest_reader`, what `runledger ingest` runs) on the same events.
//!
//! - throughput: `CLIENTS` keep-alive connections post NDJSON batches of `BATCH` events as
//!   fast as the server acknowledges them (each answer comes after the fsync);
//! - latency: the same clients post batches of `LATENCY_BATCH` on a fixed schedule totalling
//!   `LATENCY_RATE` events/s (open loop: a late answer delays the next send, and that delay is
//!   counted, so there is no coordinated omission).
//!
//! The server runs with its defaults, projections and search index catching up concurrently.
//! The server binary is `runledger` next to the harness binary (`cargo build --release`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::clock::Clock;
use crate::gen::Input;
use crate::peer::{disk_use, Metric, Peer, Role, Sample};

const CLIENTS: usize = 4;
const BATCH: usize = 1_000;
const LATENCY_BATCH: usize = 100;
const LATENCY_RATE: u64 = 50_000;
const LATENCY_SECS: u64 = 10;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// As fast as acknowledged, projections catching up every 50 ms (the default).
    Throughput,
    /// As fast as acknowledged, projections caught up only at shutdown: what catching up costs.
    ThroughputDeferred,
    /// Fixed rate, acknowledgement latency.
    Latency,
    /// Fixed rate, projections caught up only at shutdown.
    LatencyDeferred,
}

/// Server flags that leave catching up to the shutdown.
const DEFERRED: &[&str] = &["--catch-up-interval", "3600000"];

pub struct Http(pub Mode);

impl Peer for Http {
    fn key(&self) -> String {
        match self.0 {
            Mode::Throughput => "http".into(),
            Mode::ThroughputDeferred => "http-deferred-catch-up".into(),
            Mode::Latency => "http-latency".into(),
            Mode::LatencyDeferred => "http-latency-deferred-catch-up".into(),
        }
    }
    fn label(&self) -> String {
        match self.0 {
            Mode::Throughput => format!("runledger serve, {CLIENTS} clients × {BATCH}/post"),
            Mode::ThroughputDeferred => "  same, projections caught up at shutdown".into(),
            Mode::Latency => format!(
                "runledger serve at {}k events/s, {LATENCY_BATCH}/post",
                LATENCY_RATE / 1000
            ),
            Mode::LatencyDeferred => "  same, projections caught up at shutdown".into(),
        }
    }
    fn role(&self) -> Role {
        match self.0 {
            Mode::ThroughputDeferred | Mode::LatencyDeferred => Role::Breakdown,
            _ => Role::Peer,
        }
    }
    fn serve(&self, input: &Input, dir: &Path) -> Result<Sample> {
        match self.0 {
            Mode::Throughput => throughput(input, dir, &[]),
            Mode::ThroughputDeferred => throughput(input, dir, DEFERRED),
            Mode::Latency => latency(input, dir, &[]),
            Mode::LatencyDeferred => latency(input, dir, DEFERRED),
        }
    }
}

/// NDJSON bodies of `batch` lines each, from the first `limit` lines of the input.
fn bodies(input: &Input, batch: usize, limit: u64) -> Result<(Vec<Vec<u8>>, u64)> {
    let text = std::fs::read(&input.path)?;
    let mut out = Vec::new();
    let mut body = Vec::with_capacity(batch * 256);
    let (mut in_body, mut n) = (0, 0u64);
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if n == limit {
            break;
        }
        body.extend_from_slice(line);
        body.push(b'\n');
        in_body += 1;
        n += 1;
        if in_body == batch {
            out.push(std::mem::replace(
                &mut body,
                Vec::with_capacity(batch * 256),
            ));
            in_body = 0;
        }
    }
    if !body.is_empty() {
        out.push(body);
    }
    Ok((out, n))
}

fn throughput(input: &Input, dir: &Path, extra: &[&str]) -> Result<Sample> {
    let probe = fsync_probe(dir)?;
    let (bodies, n) = bodies(input, BATCH, u64::MAX)?;
    let server = Server::start(&dir.join("ledger.redb"), extra)?;
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let clock = Clock::start();
    let handles: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let (bodies, next, addr) =
                (Arc::clone(&bodies), Arc::clone(&next), server.addr.clone());
            std::thread::spawn(move || -> Result<(Vec<Duration>, u64)> {
                let mut c = KeepAlive::connect(&addr)?;
                let (mut lat, mut stored) = (Vec::new(), 0);
                while let Some(b) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t = Instant::now();
                    let body = c.post(b)?;
                    lat.push(t.elapsed());
                    stored += accepted(&body)?;
                }
                Ok((lat, stored))
            })
        })
        .collect();
    let (mut lat, stored) = join_clients(handles)?;
    let timing = clock.stop();
    let commits = server.commit_metrics()?;
    let shutdown = Instant::now();
    server.stop()?;
    let mut metrics = percentiles("ack", &mut lat);
    metrics.extend(commits);
    metrics.push(Metric::new(
        "shutdown incl. final catch-up",
        shutdown.elapsed().as_secs_f64() * 1e6,
        "us",
    ));
    metrics.extend(probe);
    Ok(Sample {
        events: n,
        stored: Some(stored),
        timing,
        disk: Some(disk_use(dir)?),
        metrics,
        ..Sample::default()
    })
}

fn latency(input: &Input, dir: &Path, extra: &[&str]) -> Result<Sample> {
    let probe = fsync_probe(dir)?;
    let (bodies, n) = bodies(input, LATENCY_BATCH, LATENCY_RATE * LATENCY_SECS)?;
    let server = Server::start(&dir.join("ledger.redb"), extra)?;
    let period = Duration::from_secs_f64((LATENCY_BATCH * CLIENTS) as f64 / LATENCY_RATE as f64);
    let bodies = Arc::new(bodies);
    let start = Instant::now() + Duration::from_millis(100);
    let clock = Clock::start();
    let handles: Vec<Client> = (0..CLIENTS)
        .map(|k| {
            let (bodies, addr) = (Arc::clone(&bodies), server.addr.clone());
            std::thread::spawn(move || -> Result<(Vec<Duration>, u64)> {
                let mut c = KeepAlive::connect(&addr)?;
                let (mut lat, mut stored) = (Vec::new(), 0);
                let offset = period.mul_f64(k as f64 / CLIENTS as f64);
                for (j, i) in (k..bodies.len()).step_by(CLIENTS).enumerate() {
                    let due = start + offset + period * j as u32;
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    let t = Instant::now();
                    let body = c.post(&bodies[i])?;
                    // From when the batch was due: queueing behind a slow answer counts.
                    lat.push(t.elapsed() + t.saturating_duration_since(due));
                    stored += accepted(&body)?;
                }
                Ok((lat, stored))
            })
        })
        .collect();
    let (mut lat, stored) = join_clients(handles)?;
    let timing = clock.stop();
    let commits = server.commit_metrics()?;
    server.stop()?;
    let mut metrics = percentiles("ack", &mut lat);
    metrics.extend(commits);
    metrics.push(Metric::new("offered rate", LATENCY_RATE as f64, "events/s"));
    metrics.extend(probe);
    Ok(Sample {
        events: n,
        stored: Some(stored),
        timing,
        disk: Some(disk_use(dir)?),
        metrics,
        ..Sample::default()
    })
}

/// The disk's fdatasync latency right now (4 KiB appends): on a shared machine it moves
/// between runs, and every acknowledgement waits for one.
fn fsync_probe(dir: &Path) -> Result<Vec<Metric>> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let mut lat = Vec::with_capacity(50);
    for _ in 0..50 {
        f.write_all(&[0u8; 4096])?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    let mut m = percentiles("disk fdatasync 4 KiB", &mut lat);
    m.retain(|m| m.name.ends_with("p50") || m.name.ends_with("p99"));
    Ok(m)
}

type Client = std::thread::JoinHandle<Result<(Vec<Duration>, u64)>>;

/// Every client's latencies, and the events the server reported stored.
fn join_clients(handles: Vec<Client>) -> Result<(Vec<Duration>, u64)> {
    let (mut lat, mut stored) = (Vec::new(), 0);
    for h in handles {
        let (l, s) = h.join().map_err(|_| anyhow!("a client panicked"))??;
        lat.extend(l);
        stored += s;
    }
    Ok((lat, stored))
}

fn percentiles(name: &str, lat: &mut [Duration]) -> Vec<Metric> {
    lat.sort_unstable();
    let q = |p: f64| {
        let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len().max(1));
        lat.get(rank - 1)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    vec![
        Metric::new(format!("{name} p50"), q(0.5), "us"),
        Metric::new(format!("{name} p90"), q(0.9), "us"),
        Metric::new(format!("{name} p99"), q(0.99), "us"),
        Metric::new(format!("{name} max"), q(1.0), "us"),
        Metric::new(format!("{name} samples"), lat.len() as f64, "n"),
    ]
}

/// `N` of an ingest report starting `{"accepted":N,`, checking that nothing was rejected.
fn accepted(body: &[u8]) -> Result<u64> {
    let text = std::str::from_utf8(&body[..body.len().min(120)]).unwrap_or("");
    let n = text
        .strip_prefix("{\"accepted\":")
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow!("not an ingest report: {text}"))?;
    if !text.contains("\"rejected\":0,") {
        bail!("the server rejected events: {text}");
    }
    Ok(n)
}

/// The `runledger serve` process.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(db: &Path, extra: &[&str]) -> Result<Server> {
        let bin = server_binary()?;
        let mut child = Command::new(&bin)
            .arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUNLEDGER_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match line.split("listening on http://").nth(1) {
                    Some(a) if !sent => {
                        let _ = tx.send(a.trim().to_string());
                        sent = true;
                    }
                    _ => eprintln!("  serve: {line}"),
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Server { child, addr }),
            Err(_) => {
                let _ = child.kill();
                bail!("runledger serve did not start")
            }
        }
    }

    /// The server's own view of its group commits, from `/metrics`: how many, their mean
    /// duration, and how many took over 10 ms.
    fn commit_metrics(&self) -> Result<Vec<Metric>> {
        let mut s = TcpStream::connect(&self.addr)?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let value = |name: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        let name = "runledger_commit_latency_seconds";
        let (Some(count), Some(sum), Some(under)) = (
            value(&format!("{name}_count ")),
            value(&format!("{name}_sum ")),
            value(&format!("{name}_bucket{{le=\"0.01\"}} ")),
        ) else {
            bail!("/metrics lacks the commit latency histogram");
        };
        Ok(vec![
            Metric::new("server: group commits", count, "n"),
            Metric::new("server: commit mean", sum / count.max(1.0) * 1e6, "us"),
            Metric::new("server: commits over 10 ms", count - under, "n"),
        ])
    }

    /// SIGTERM, then waits: the server commits, catches up and exits.
    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("runledger serve exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Server {
    /// A run that failed half-way must not leave its server behind to skew the next one.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn server_binary() -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("runledger");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p runledger)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One keep-alive HTTP/1.1 connection.
struct KeepAlive {
    w: TcpStream,
    r: BufReader<TcpStream>,
    addr: String,
}

impl KeepAlive {
    fn connect(addr: &str) -> Result<KeepAlive> {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(true)?;
        let r = BufReader::new(w.try_clone()?);
        Ok(KeepAlive {
            w,
            r,
            addr: addr.to_string(),
        })
    }

    /// POSTs an NDJSON body to `/v1/events`; the response body of a 200.
    fn post(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).unwrap_or("");
        let mut len = None;
        loop {
            let mut h = String::new();
            if self.r.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut buf = vec![0; len.context("a response without Content-Length")?];
        self.r.read_exact(&mut buf)?;
        if status != "200" {
            bail!(
                "POST /v1/events: {status}: {}",
                String::from_utf8_lossy(&buf)
            );
        }
        Ok(buf)
    }
}

/// The CLI bulk path on the same events: `ingest_reader`, as `runledger ingest` runs it.
pub struct CliBulk;

impl Peer for CliBulk {
    fn key(&self) -> String {
        "cli".into()
    }
    fn label(&self) -> String {
        "runledger ingest (CLI bulk path)".into()
    }
    fn serve(&self, input: &Input, dir: &Path) -> Result<Sample> {
        let probe = fsync_probe(dir)?;
        let mut sample = crate::sys_ledger::Runledger.ingest(input, dir)?;
        sample.metrics.extend(probe);
        Ok(sample)
    }
}
