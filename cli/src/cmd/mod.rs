//! One module per command (or family of reading commands).
pub mod demo;
pub mod diff;
pub mod export;
pub mod ingest;
pub mod read;
pub mod rebuild;
pub mod replay;
pub mod search;
pub mod stats;
pub mod timeline;
pub mod verify;
