//! The background thread that keeps projections and the search index current: after the head
//! moves it calls `query::catch_up`, at most once per `--catch-up-interval` (50 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger::Ledger;
use tokio::sync::watch;

/// How long the thread sleeps waiting for a new commit before checking for shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(200);

pub struct CatchUp {
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    applied_rx: watch::Receiver<u64>,
    thread: JoinHandle<()>,
}

impl CatchUp {
    pub fn start(ledger: Arc<Ledger>, debounce: Duration) -> anyhow::Result<CatchUp> {
        let applied = ledger::project::applied(&ledger).context("reading the projections")?;
        let (tx, applied_rx) = watch::channel(applied);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let ledger = Arc::clone(&ledger);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("runledger-catchup".into())
                .spawn(move || run(&ledger, &stop, &tx, applied, debounce))
                .context("starting the catch-up thread")?
        };
        Ok(CatchUp {
            ledger,
            stop,
            applied_rx,
            thread,
        })
    }

    pub fn applied_rx(&self) -> watch::Receiver<u64> {
        self.applied_rx.clone()
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
    tx: &watch::Sender<u64>,
    mut applied: u64,
    debounce: Duration,
) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let head = ledger.wait_for_append(applied, IDLE_WAIT).seq;
        if head <= applied {
            continue;
        }
        let started = Instant::now();
        let result = query::catch_up(ledger)
            .map_err(anyhow::Error::from)
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
                std::thread::sleep(Duration::from_millis(100 << failures.min(5)));
            }
        }
        if let Some(rest) = debounce.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
