//! The writer thread: the only place that appends. Requests hand it their events, parsed and
//! encoded, through a channel; it drains everything pending into one `Ledger::append_encoded`
//! (one durable commit) and answers each request through its oneshot once that commit is on
//! disk.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use ledger::encode::EncodedBatch;
use ledger::{Ledger, Outcome};
use tokio::sync::{oneshot, watch};

use super::fatal::Fatal;
use super::metrics::Metrics;

/// Most events gathered into one commit (a single larger request still commits whole).
const MAX_GROUP_EVENTS: usize = 100_000;

/// The answer to one request: an outcome per event, or why the commit failed.
pub type Reply = Result<Vec<Outcome>, String>;

struct Job {
    events: EncodedBatch,
    reply: oneshot::Sender<Reply>,
}

/// The sending side, shared by the handlers.
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Hands `events` to the writer; the receiver yields once they are durable.
    /// `None` when the writer has stopped.
    pub fn submit(&self, events: EncodedBatch) -> Option<oneshot::Receiver<Reply>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { events, reply }).ok()?;
        Some(rx)
    }
}

/// Starts the writer thread. It ends once every [`WriterHandle`] is dropped and it has
/// committed everything it was handed.
pub fn start(
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    head_tx: watch::Sender<ledger::Head>,
    fatal: Arc<Fatal>,
) -> anyhow::Result<(WriterHandle, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("runledger-writer".into())
        .spawn(move || writer_loop(&ledger, &metrics, &head_tx, &fatal, &rx))
        .context("starting the writer thread")?;
    Ok((WriterHandle { tx }, thread))
}

fn writer_loop(
    ledger: &Ledger,
    metrics: &Metrics,
    head_tx: &watch::Sender<ledger::Head>,
    fatal: &Fatal,
    rx: &mpsc::Receiver<Job>,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every sender is gone and the queue is empty
            },
        };
        let mut total = first.events.len();
        let mut jobs = vec![first];
        while total < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(j) => {
                    if total + j.events.len() > MAX_GROUP_EVENTS {
                        carry = Some(j);
                        break;
                    }
                    total += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        commit(ledger, metrics, head_tx, fatal, jobs);
    }
}

fn commit(
    ledger: &Ledger,
    metrics: &Metrics,
    head_tx: &watch::Sender<ledger::Head>,
    fatal: &Fatal,
    jobs: Vec<Job>,
) {
    let mut all: Option<EncodedBatch> = None;
    let mut parts = Vec::with_capacity(jobs.len());
    for mut j in jobs {
        parts.push((j.events.len(), j.reply));
        match &mut all {
            None => all = Some(j.events),
            Some(all) => all.append(&mut j.events),
        }
    }
    let mut all = all.unwrap_or_default();
    let n = all.len();
    let started = Instant::now();
    let result = ledger.append_encoded(&mut all);
    metrics.observe_commit(started.elapsed(), n);

    match result {
        Ok(outcomes) => {
            let mut stored = 0u64;
            let mut dups = 0u64;
            for o in &outcomes {
                match o {
                    Outcome::Stored(_) => stored += 1,
                    Outcome::Duplicate(_) => dups += 1,
                }
            }
            metrics.add_ingested(stored, dups);
            if let Ok(h) = ledger.head() {
                head_tx.send_replace(h);
            }
            let mut rest = outcomes.into_iter();
            for (n, reply) in parts {
                let mine: Vec<Outcome> = rest.by_ref().take(n).collect();
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            metrics.add_commit_error();
            let mut msg = format!("storing the events failed: {e}");
            if e.needs_reopen() {
                fatal.raise(msg.clone());
                msg.push_str("; the server is stopping");
            } else {
                eprintln!("runledger serve: {msg}");
            }
            for (_, reply) in parts {
                let _ = reply.send(Err(msg.clone()));
            }
        }
    }
}
