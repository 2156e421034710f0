//! The one error type of the ledger crate.

use std::path::PathBuf;

/// Everything that can go wrong in the ledger. Rejections of single ingest lines are not errors
/// (they are reported per line, see [`crate::ingest::IngestReport`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    IoPlain(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    /// The storage failed to read or write (a full disk, a failing device). redb refuses every
    /// later operation on that open file: it must be opened again ([`Error::needs_reopen`]).
    #[error("storage: {0}")]
    StorageIo(String),
    #[error(
        "{path}: another process is writing this ledger (an ingest, or `runledger serve`); send \
         events to that server, or wait until the other process ends"
    )]
    Busy { path: PathBuf },
    /// The ledger was opened read-only for want of write access (a read-only file system, no
    /// permission), and a command needed to write it.
    #[error("{path}: cannot be written here ({why}); this needs a writable copy of the ledger")]
    ReadOnly { path: PathBuf, why: String },
    #[error("{path}: not a runledger database ({why})")]
    NotALedger { path: PathBuf, why: String },
    #[error("corrupt log at seq {seq}: {why}")]
    Corrupt { seq: u64, why: String },
    /// The projections file holds what this build cannot read: derived data, built again from
    /// the log by `runledger rebuild`.
    #[error(
        "the projections file is damaged: {0}; `runledger rebuild` builds it again from the log"
    )]
    DamagedProjections(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether the open ledger can no longer be used: the storage failed, and redb answers
    /// every later operation on the file with "Previous I/O error occurred" until it is opened
    /// again.
    pub fn needs_reopen(&self) -> bool {
        matches!(self, Error::StorageIo(_))
    }
}

/// Result with the ledger's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    e @ (redb::Error::Io(_) | redb::Error::PreviousIo) => {
                        Error::StorageIo(e.to_string())
                    }
                    e => Error::Storage(e.to_string()),
                }
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<rkyv::rancor::Error> for Error {
    fn from(e: rkyv::rancor::Error) -> Self {
        Error::Storage(format!("encoding: {e}"))
    }
}
