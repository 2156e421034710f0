//! The background thread that keeps projections and the search index current: after the head
//! moves it calls `query::catch_up`, at most once per `--catch-up-interval` (50 ms), and
//! never more than half of the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Ledger;
use tokio::sync::watch;

/// Events per projection transaction. Each holds redb's write lock, which acknowledging appends
/// needs too, for about 2 ms at this size (folding happens before, outside the lock).
const STEP_EVENTS: u64 = 2_048;

/// How long the thread sleeps waiting for a new commit before checking for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct CatchUp {
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    nudge: Arc<AtomicBool>,
    applied_rx: watch::Receiver<u64>,
    thread: JoinHandle<()>,
}

impl CatchUp {
    pub fn start(ledger: Arc<Ledger>, debounce: Duration) -> anyhow::Result<CatchUp> {
        let applied = ledger::project::applied(&ledger).context("reading the projections")?;
        let (tx, applied_rx) = watch::channel(applied);
        let stop = Arc::new(AtomicBool::new(false));
        let nudge = Arc::new(AtomicBool::new(false));
        let thread = {
            let ledger = Arc::clone(&ledger);
            let stop = Arc::clone(&stop);
            let nudge = Arc::clone(&nudge);
            std::thread::Builder::new()
                .name("runledger-catchup".into())
                .spawn(move || run(&ledger, &stop, &nudge, &tx, applied, debounce))
                .context("starting the catch-up thread")?
        };
        Ok(CatchUp {
            ledger,
            stop,
            nudge,
            applied_rx,
            thread,
        })
    }

    pub fn applied_rx(&self) -> watch::Receiver<u64> {
        self.applied_rx.clone()
    }

    /// A flag that cuts the current pause short (a query is waiting for the head).
    pub fn nudge(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.nudge)
    }

    /// Stops the thread and runs a last catch-up to the head.
    pub fn finish(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        query::catch_up(&self.ledger)?;
        Ok(())
    }
}

fn run(
    ledger: &Ledger,
    stop: &AtomicBool,
    nudge: &AtomicBool,
    tx: &watch::Sender<u64>,
    mut applied: u64,
    debounce: Duration,
) {
    lower_priority();
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let head = ledger.wait_for_append(applied, IDLE_WAIT).seq;
        if head <= applied {
            continue;
        }
        let started = Instant::now();
        let result = ledger::project::catch_up_in_steps(ledger, STEP_EVENTS, &mut |_, _| {})
            .map_err(anyhow::Error::from)
            .and_then(|_| query::search::catch_up(ledger).map_err(anyhow::Error::from))
            .and_then(|()| ledger::project::applied(ledger).map_err(anyhow::Error::from));
        match result {
            Ok(a) => {
                failures = 0;
                applied = a;
                tx.send_replace(a);
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
        // uses at most about half of the time (and the single redb writer), leaving the rest to
        // acknowledging appends, and catches up in larger, cheaper steps.
        let took = started.elapsed();
        let pause_until = debounce.max(took * 2);
        while !stop.load(Ordering::Relaxed) && !nudge.swap(false, Ordering::Relaxed) {
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
