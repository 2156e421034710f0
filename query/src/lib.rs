//! Questions asked of a runledger log: search, replay, statistics and export, on top of the
//! `ledger` crate's log and projections.

pub mod check;
pub mod diff;
pub mod error;
pub mod export;
pub mod replay;
pub mod search;
pub mod stats;
pub mod timeline;

pub use error::{Error, Result};

use ledger::Ledger;

/// Brings every derived structure — projections, then the search index — up to the log's head.
pub fn catch_up(ledger: &Ledger) -> Result<()> {
    ledger::project::catch_up(ledger, &mut |_, _| {})?;
    search::catch_up(ledger)?;
    Ok(())
}
