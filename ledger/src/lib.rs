//! The runledger ledger: the event model of ingest format v1, the durable hash-chained log in
//! redb (events encoded with rkyv, read in place), and the projections built from it.
//!
//! Storage internals stay private; the public types are re-exported here by name.

mod append;
mod block;
mod dedup;
pub mod encode;
pub mod error;
pub mod event;
pub mod event_ref;
pub mod ingest;
pub mod json;
mod json_scan;
mod log;
pub mod parse;
pub mod project;
pub mod render;
pub mod template;
pub mod verify;
pub mod workload;

pub use block::{hex, parse_hex, Hash};
pub use error::{Error, Result};
pub use event::{Body, DocChange, Event, RunFields, StoredEvent};
pub use event_ref::EventRef;
pub use log::{
    projections_path, rebuilding_path, Head, Ledger, LogReader, Outcome, FORMAT_VERSION,
};
pub use parse::{parse_event, parse_event_limited, Rejection, DEFAULT_MAX_EVENT_BYTES};
