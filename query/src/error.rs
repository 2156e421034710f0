//! The one error type of the query crate.

/// What can go wrong answering a question.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("search index: {0}")]
    Index(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::Index(e.to_string())
    }
}

/// Result with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
