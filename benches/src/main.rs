//! Benchmark harness: runledger next to the systems a user would pick instead, on the same
//! seeded events in the same run.
//!
//! ```text
//! cargo run --release -p runledger-benches -- ingest --events 1000000
//! ```
//! The parent generates the input once, then runs each system in a child process of its own
//! (the same binary, hidden `child` subcommand) so that peak memory is per system. Results are
//! printed as a table and appended as JSON lines to `<dir>/results.jsonl`.

mod bench_projections;
mod bench_search;
mod bench_serve;
mod bench_stats;
mod clock;
mod gen;
mod peer;
mod qcommon;
mod report;
mod sys_file;
mod sys_ledger;
mod sys_sqlite;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::gen::Input;
use crate::peer::{Peer, Sample};
use crate::report::{Measurement, RunInfo};

#[derive(Parser)]
#[command(
    name = "harness",
    about = "runledger benchmarks next to plain files and SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Durable bulk ingest: runledger vs a plain file with fsync per batch vs SQLite.
    Ingest(RunArgs),
    /// Projection rebuild and point queries (trace, tree, show, state --at): runledger vs SQLite.
    Projections(RunArgs),
    /// Full-text index build and queries: runledger (tantivy) vs SQLite FTS5.
    Search(RunArgs),
    /// `stats --by operation`: runledger vs SQLite vs DuckDB over the Parquet export.
    Stats(RunArgs),
    /// Ingest over HTTP (`runledger serve`, several clients) next to the CLI bulk path.
    Serve(RunArgs),
    /// List the systems of every benchmark (the keys `--only` matches).
    List,
    /// Run one system of one benchmark in this process and print its measurement as JSON.
    #[command(hide = true)]
    Child(ChildArgs),
}

/// The benchmarks. Each one is a method of [`Peer`]; see `peer.rs` for how to add one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    Ingest,
    Projections,
    Search,
    Stats,
    Serve,
}

impl Bench {
    const ALL: [Bench; 5] = [
        Bench::Ingest,
        Bench::Projections,
        Bench::Search,
        Bench::Stats,
        Bench::Serve,
    ];

    fn name(self) -> &'static str {
        match self {
            Bench::Ingest => "ingest",
            Bench::Projections => "projections",
            Bench::Search => "search",
            Bench::Stats => "stats",
            Bench::Serve => "serve",
        }
    }
    fn peers(self) -> Vec<Box<dyn Peer>> {
        match self {
            Bench::Ingest => peer::ingest_peers(),
            Bench::Projections | Bench::Search => peer::query_peers(),
            Bench::Stats => peer::stats_peers(),
            Bench::Serve => peer::serve_peers(),
        }
    }
    fn run(self, peer: &dyn Peer, input: &Input, dir: &Path) -> Result<Sample> {
        match self {
            Bench::Ingest => peer.ingest(input, dir),
            Bench::Projections => peer.projections(input, dir),
            Bench::Search => peer.search(input, dir),
            Bench::Stats => peer.stats(input, dir),
            Bench::Serve => peer.serve(input, dir),
        }
    }
    /// The query benchmarks read the workload plus a run tree of 10,000 children.
    fn with_big_tree(self) -> bool {
        !matches!(self, Bench::Ingest | Bench::Serve)
    }
    fn print(self, out: &mut dyn Write, input: &Input, ms: &[Measurement]) -> io::Result<()> {
        match self {
            Bench::Ingest => report::print_ingest(out, input, cores(), ms),
            Bench::Projections => report::print_metrics(
                out,
                "projections: rebuild from the log, then point queries",
                "rebuild",
                input,
                cores(),
                ms,
            ),
            Bench::Search => report::print_metrics(
                out,
                "search: full-text index build, then queries (limit 10)",
                "index build",
                input,
                cores(),
                ms,
            ),
            Bench::Stats => report::print_metrics(
                out,
                "stats --by operation",
                "first stats call (duckdb: Parquet export)",
                input,
                cores(),
                ms,
            ),
            Bench::Serve => report::print_metrics(
                out,
                "serve: durable ingest over HTTP on loopback vs the CLI bulk path",
                "until the last acknowledgement",
                input,
                cores(),
                ms,
            ),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Events to generate (underscores and a k/M suffix allowed: 1M, 250k, 1_000_000).
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    events: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory for scratch files; `results.jsonl` is appended here.
    #[arg(long, default_value = "bench-out")]
    dir: PathBuf,
    /// Keep the scratch files (input and every system's store) instead of removing them.
    #[arg(long)]
    keep: bool,
    /// Run only the systems whose key contains one of these (comma-separated; see `list`);
    /// `=KEY` matches that key alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Read events from this NDJSON file instead of generating them.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Before each system, wait up to this many seconds for the machine to be idle for 3 s
    /// (for shared machines; 0 = do not wait).
    #[arg(long, default_value_t = 0)]
    wait_idle: u64,
    /// Run each system this many times; the table shows the fastest run, results.jsonl all.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

#[derive(Args)]
struct ChildArgs {
    #[arg(long)]
    bench: Bench,
    #[arg(long)]
    system: String,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    input_events: u64,
    #[arg(long)]
    input_bytes: u64,
    #[arg(long)]
    dir: PathBuf,
}

fn parse_count(s: &str) -> Result<u64, String> {
    let clean: String = s.chars().filter(|&c| c != '_' && c != ',').collect();
    let (digits, mult) = match clean.chars().last() {
        Some('k' | 'K') => (&clean[..clean.len() - 1], 1_000),
        Some('m' | 'M') => (&clean[..clean.len() - 1], 1_000_000),
        _ => (clean.as_str(), 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("`{s}` is not a positive count")),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Ingest(args) => run(Bench::Ingest, &args),
        Cmd::Projections(args) => run(Bench::Projections, &args),
        Cmd::Search(args) => run(Bench::Search, &args),
        Cmd::Stats(args) => run(Bench::Stats, &args),
        Cmd::Serve(args) => run(Bench::Serve, &args),
        Cmd::List => list(),
        Cmd::Child(args) => child(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn list() -> Result<()> {
    let mut out = io::stdout().lock();
    for bench in Bench::ALL {
        writeln!(out, "{}:", bench.name())?;
        for p in bench.peers() {
            writeln!(out, "  {:<26} {}", p.key(), p.label())?;
        }
    }
    Ok(())
}

/// Whether `--only` term `term` selects the system `key`.
fn only_matches(term: &str, key: &str) -> bool {
    match term.strip_prefix('=') {
        Some(exact) => key == exact,
        None => key.contains(term),
    }
}

/// Runs every selected system of `bench` in a child process, then prints and records results.
fn run(bench: Bench, args: &RunArgs) -> Result<()> {
    let started = Instant::now();
    let peers: Vec<Box<dyn Peer>> = bench
        .peers()
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.iter().any(|o| only_matches(o, &p.key())))
        .collect();
    if peers.is_empty() {
        bail!(
            "--only {} matches no system of `{}` (see `harness list`)",
            args.only.join(","),
            bench.name()
        );
    }

    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let scratch = args.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let outcome = run_in(bench, args, &peers, &scratch, started);
    if !args.keep {
        // Best effort: a failed removal must not hide the run's own outcome.
        if let Err(e) = std::fs::remove_dir_all(&scratch) {
            eprintln!("warning: could not remove {}: {e}", scratch.display());
        }
    } else {
        eprintln!("kept scratch files in {}", scratch.display());
    }
    eprintln!("harness took {:.1} s", started.elapsed().as_secs_f64());
    outcome
}

fn run_in(
    bench: Bench,
    args: &RunArgs,
    peers: &[Box<dyn Peer>],
    scratch: &Path,
    started: Instant,
) -> Result<()> {
    let run_started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let input = match &args.input {
        Some(path) => Input::open(path.clone())?,
        None => {
            let t = Instant::now();
            let input = gen::generate(args.seed, args.events, scratch)?;
            eprintln!(
                "generated {} events ({:.0} MB) in {:.1} s",
                report::thousands(input.events),
                input.bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            input
        }
    };
    let input = if bench.with_big_tree() {
        let with_tree = gen::append_big_tree(&input)?;
        eprintln!(
            "appended a run tree of {} children: {} events",
            report::thousands(gen::BIG_TREE_CHILDREN),
            report::thousands(with_tree.events)
        );
        with_tree
    } else {
        input
    };

    let mut all = Vec::new();
    let mut failures = Vec::new();
    for peer in peers {
        match measure(bench, peer.as_ref(), &input, scratch, args) {
            Ok(runs) => all.extend(runs),
            Err(e) => {
                eprintln!("FAILED: {e:#}");
                failures.push(peer.key());
            }
        }
    }
    let best: Vec<Measurement> = all.iter().filter(|m| m.best).cloned().collect();

    let mut table = Vec::new();
    writeln!(table)?;
    bench.print(&mut table, &input, &best)?;
    io::stdout().lock().write_all(&table)?;

    let info = RunInfo {
        run_started,
        seed: args.seed,
        events_requested: args.events,
        input_events: input.events,
        input_path: input.path.display().to_string(),
        cores: cores(),
        harness: env!("CARGO_PKG_VERSION"),
    };
    let jsonl = args.dir.join("results.jsonl");
    report::append_jsonl(&jsonl, &info, &all)?;
    eprintln!(
        "appended {} results to {} ({:.1} s so far)",
        all.len(),
        jsonl.display(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("failed: {}", failures.join(", "));
    }
    Ok(())
}

/// Runs one system `--repeat` times, each in a fresh directory; marks the fastest run `best`.
fn measure(
    bench: Bench,
    peer: &dyn Peer,
    input: &Input,
    scratch: &Path,
    args: &RunArgs,
) -> Result<Vec<Measurement>> {
    let mut runs: Vec<Measurement> = Vec::new();
    for attempt in 1..=args.repeat.max(1) {
        let dir = scratch.join(format!("{}-{attempt}", peer.key()));
        std::fs::create_dir_all(&dir)?;
        if args.wait_idle > 0
            && !clock::wait_idle(Duration::from_secs(3), Duration::from_secs(args.wait_idle))
        {
            eprintln!("(the machine did not go idle within {} s)", args.wait_idle);
        }
        eprint!("{:<48} ", peer.label());
        let m = spawn_child(bench, peer, input, &dir);
        if !args.keep {
            std::fs::remove_dir_all(&dir)?;
        }
        let mut m = m?;
        eprintln!(
            "{:>6.2} s  {:>12} events/s  (others busy: {:.2} cores)",
            m.sample.timing.secs,
            report::thousands(m.rate() as u64),
            m.sample.timing.other_cores()
        );
        m.attempt = attempt;
        m.best = false;
        runs.push(m);
    }
    let fastest = runs
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.rate().total_cmp(&b.rate()))
        .map(|(i, _)| i);
    if let Some(i) = fastest {
        runs[i].best = true;
    }
    Ok(runs)
}

/// Re-runs this binary as `harness child …` for one system and reads its measurement.
fn spawn_child(bench: Bench, peer: &dyn Peer, input: &Input, dir: &Path) -> Result<Measurement> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let output = Command::new(exe)
        .arg("child")
        .args(["--bench", bench.name(), "--system", &peer.key()])
        .arg("--input")
        .arg(&input.path)
        .args(["--input-events", &input.events.to_string()])
        .args(["--input-bytes", &input.bytes.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the child process")?;
    if !output.status.success() {
        bail!("child exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("child printed no measurement")?;
    serde_json::from_str(line).with_context(|| format!("reading the child's measurement {line:?}"))
}

/// The child side: one system, one benchmark, one JSON line on stdout.
fn child(args: &ChildArgs) -> Result<()> {
    let peer = args
        .bench
        .peers()
        .into_iter()
        .find(|p| p.key() == args.system)
        .with_context(|| format!("no system `{}` in `{}`", args.system, args.bench.name()))?;
    let input = Input {
        path: args.input.clone(),
        bytes: args.input_bytes,
        events: args.input_events,
    };
    let sample = args.bench.run(peer.as_ref(), &input, &args.dir)?;
    let m = Measurement {
        bench: args.bench.name().into(),
        system: peer.key(),
        label: peer.label(),
        role: peer.role(),
        sample,
        input_bytes: input.bytes,
        peak_rss_bytes: report::peak_rss(),
        // The parent decides these.
        attempt: 0,
        best: false,
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("250k"), Ok(250_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("x").is_err());
    }
}
