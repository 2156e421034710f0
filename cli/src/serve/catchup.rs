//! The background thread that keeps projections and the search index current: after the head
//! moves it catches the projections up at most once per `--catch-up-interval` (50 ms) and the
//! index at most once per `--index-interval` (250 ms), each sooner when a query waits for it, and
//! never for more than about half of the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Ledger;
use tokio::sync::watch;

/// Events per projection transaction: each commit makes its events visible to queries (which
/// may be waiting to read their writes), and its fsync shares the disk with the log's appends,
/// so commits stay small.
const STEP_EVENTS: u64 = 2_048;

/// How long the thread sleeps waiting for a new commit before checking for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct CatchUp {
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    nudge: Arc<AtomicBool>,
    nudge_index: Arc<AtomicBool>,
    applied_rx: watch::Receiver<u64>,
    indexed_rx: watch::Receiver<u64>,
    thread: JoinHandle<()>,
}

/// How often each derived store catches up.
#[derive(Clone, Copy)]
pub struct Cadence {
    /// Projections: at most once per this (`--catch-up-interval`).
    pub projections: Duration,
    /// The search index: at most once per this (`--index-interval`). Each index commit writes
    /// and fsyncs new segment files, and the disk flushes that carries hold up the log's own
    /// fsyncs, so the index commits less often than the projections.
    pub index: Duration,
}

impl CatchUp {
    pub fn start(
        ledger: Arc<Ledger>,
        fatal: Arc<super::fatal::Fatal>,
        cadence: Cadence,
    ) -> anyhow::Result<CatchUp> {
        let applied = ledger::project::applied(&ledger).context("reading the projections")?;
        let indexed = query::search::indexed_seq(&ledger)
            .context("reading the search index")?
            .unwrap_or(0);
        let (tx, applied_rx) = watch::channel(applied);
        let (index_tx, indexed_rx) = watch::channel(indexed);
        let stop = Arc::new(AtomicBool::new(false));
        let nudge = Arc::new(AtomicBool::new(false));
        let nudge_index = Arc::new(AtomicBool::new(false));
        let thread = {
            let ledger = Arc::clone(&ledger);
            let flags = Flags {
                stop: Arc::clone(&stop),
                nudge: Arc::clone(&nudge),
                nudge_index: Arc::clone(&nudge_index),
            };
            std::thread::Builder::new()
                .name("runledger-catchup".into())
                .spawn(move || run(&ledger, &flags, &fatal, &tx, &index_tx, cadence))
                .context("starting the catch-up thread")?
        };
        Ok(CatchUp {
            ledger,
            stop,
            nudge,
            nudge_index,
            applied_rx,
            indexed_rx,
            thread,
        })
    }

    pub fn applied_rx(&self) -> watch::Receiver<u64> {
        self.applied_rx.clone()
    }

    pub fn indexed_rx(&self) -> watch::Receiver<u64> {
        self.indexed_rx.clone()
    }

    /// A flag that cuts the current pause short (a query is waiting for the projections).
    pub fn nudge(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.nudge)
    }

    /// A flag that makes the next round index too (a search is waiting for the index).
    pub fn nudge_index(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.nudge_index)
    }

    /// Stops the thread without a last catch-up.
    pub fn abandon(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }

    /// Stops the thread and runs a last catch-up to the head.
    pub fn finish(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        query::catch_up(&self.ledger)?;
        Ok(())
    }
}

struct Flags {
    stop: Arc<AtomicBool>,
    nudge: Arc<AtomicBool>,
    nudge_index: Arc<AtomicBool>,
}

fn run(
    ledger: &Ledger,
    flags: &Flags,
    fatal: &super::fatal::Fatal,
    tx: &watch::Sender<u64>,
    index_tx: &watch::Sender<u64>,
    cadence: Cadence,
) {
    lower_priority();
    let mut failures = 0u32;
    let mut applied = *tx.borrow();
    let mut indexed = *index_tx.borrow();
    let mut last_index = Instant::now();
    while !flags.stop.load(Ordering::Relaxed) {
        let head = ledger.wait_for_append(applied, IDLE_WAIT).seq;
        let asked = flags.nudge_index.swap(false, Ordering::Relaxed);
        let index_due =
            indexed < head.max(applied) && (asked || last_index.elapsed() >= cadence.index);
        if head <= applied && !index_due {
            continue;
        }
        let started = Instant::now();
        // A panic (redb meeting a damaged page) is a failure like any other: the thread goes on.
        let result = crate::panics::catching(|| {
            ledger::project::catch_up_in_steps(ledger, STEP_EVENTS, &mut |_, _| {})
                .map_err(anyhow::Error::from)
                .and_then(|a| {
                    applied = a;
                    tx.send_replace(a);
                    // Looked at again after the projections: a search may have asked meanwhile.
                    if index_due || flags.nudge_index.swap(false, Ordering::Relaxed) {
                        last_index = Instant::now();
                        indexed = query::search::catch_up_with(ledger, &Default::default())?;
                        index_tx.send_replace(indexed);
                    }
                    Ok(())
                })
        })
        .unwrap_or_else(|panic| Err(anyhow::anyhow!("panicked: {panic}")));
        match result {
            Ok(()) => failures = 0,
            Err(e) if super::fatal::needs_reopen(&e) => {
                fatal.raise(format!("catching up projections failed: {e:#}"));
                return;
            }
            Err(e) => {
                failures += 1;
                eprintln!("runledger serve: catching up projections failed: {e:#}");
                // Back off, up to a few seconds, and try again.
                std::thread::sleep(Duration::from_millis(100 << failures.min(4)));
            }
        }
        // Debounce, waking up for shutdown. A catch-up that took longer than the interval is
        // followed by a pause as long as it took: under sustained heavy ingest the catch-up
        // uses at most about half of the time, leaving the rest to acknowledging appends, and
        // catches up in larger, cheaper steps.
        let took = started.elapsed();
        let pause_until = cadence.projections.max(took * 2);
        while !flags.stop.load(Ordering::Relaxed)
            && !flags.nudge.swap(false, Ordering::Relaxed)
            && !flags.nudge_index.load(Ordering::Relaxed)
        {
            match pause_until.checked_sub(started.elapsed()) {
                Some(rest) if !rest.is_zero() => std::thread::sleep(rest.min(IDLE_WAIT / 4)),
                _ => break,
            }
        }
    }
}

/// Lowers this thread's CPU priority (nice 10): on a small machine, acknowledging appends comes
/// before catching up. Threads it starts (the search index's indexers) inherit it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their integer arguments; on Linux
        // PRIO_PROCESS with a thread id changes that one thread.
        let r = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if r != 0 {
            eprintln!("runledger serve: could not lower the catch-up thread's priority");
        }
    }
}
