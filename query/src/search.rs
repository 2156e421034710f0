//! Full-text search over what runs took and gave (tantivy). Placeholder until the index lands.
use crate::Result;
use ledger::Ledger;

/// Brings the search index up to the log's head.
pub fn catch_up(_ledger: &Ledger) -> Result<()> {
    Ok(())
}

/// Drops the search index and builds it again from the log.
pub fn rebuild(_ledger: &Ledger) -> Result<()> {
    Ok(())
}
