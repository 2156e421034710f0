//! Panics become one line of error, never a backtrace (the interface's promise). redb panics
//! on some damaged pages rather than returning an error; the ledger rebuilds a projections file
//! it cannot open, and a command that meets damage anywhere else says so and what to run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// The last panic's message and place.
static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default hook (several lines and a backtrace hint): a panic is recorded for the
/// error that reports it. `print` also writes each as one line, for a server, whose threads'
/// panics no command reports.
pub fn install(print: bool) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", short_path(l.file()), l.line()))
            .unwrap_or_default();
        let msg = format!("{what}{at}");
        if print {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("a thread");
            eprintln!("runledger: {name} panicked: {msg}");
        }
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
    }));
}

/// A dependency's source path from the crate on (`redb-4.5.0/src/tree_store/btree.rs`).
fn short_path(file: &str) -> &str {
    match file.rsplit_once("/registry/src/") {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, r)| r),
        None => file,
    }
}

/// The last panic, as recorded by the hook.
pub fn last() -> String {
    LAST.lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| "a panic".into())
}

/// Runs `f`; a panic in it becomes `Err` with the panic's message.
pub fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| last())
}

/// The error a command that panicked reports.
pub fn command_error(panic: String) -> anyhow::Error {
    anyhow::anyhow!(
        "stopped by an internal error ({panic}); a damaged ledger file causes this: \
         `runledger verify` checks the log and its projections, `runledger rebuild` builds the \
         projections and the search index again from the log"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dependency_is_named_from_its_crate_on() {
        let file = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/redb-4.5.0/src/tree_store/btree.rs";
        assert_eq!(
            super::short_path(file),
            "redb-4.5.0/src/tree_store/btree.rs"
        );
        assert_eq!(super::short_path("cli/src/main.rs"), "cli/src/main.rs");
    }
}
