//! A failure the server cannot go on after: the ledger's storage failed (a full disk, a failing
//! device), and redb refuses every later operation on the open files until they are opened
//! again. The server then stops, as on SIGTERM, and exits with the reason, rather than answer
//! every request with an error while `/v1/health` says ok. Every event acknowledged before is
//! stored; a restart opens the files again.

use std::sync::OnceLock;

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Fatal {
    why: OnceLock<String>,
    raised: Notify,
}

impl Fatal {
    /// Records the first reason and wakes the server to stop.
    pub fn raise(&self, why: String) {
        if self.why.set(why).is_ok() {
            eprintln!(
                "runledger serve: {}; stopping",
                crate::ctx::terminal_safe(self.why().unwrap_or_default(), false)
            );
        }
        // A permit is kept when nobody waits yet.
        self.raised.notify_one();
    }

    pub fn why(&self) -> Option<&str> {
        self.why.get().map(String::as_str)
    }

    /// Returns once [`Self::raise`] was called.
    pub async fn raised(&self) {
        if self.why.get().is_none() {
            self.raised.notified().await;
        }
    }
}

/// Whether `e` (or an error it wraps) means the ledger's files must be opened again.
pub(crate) fn needs_reopen(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ledger::Error>()
            .is_some_and(ledger::Error::needs_reopen)
            || matches!(
                c.downcast_ref::<query::Error>(),
                Some(query::Error::Ledger(l)) if l.needs_reopen()
            )
    })
}
