//! Counters and the commit-latency histogram, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the commit-latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
pub struct Metrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    commit_events: AtomicU64,
    /// Sum of commit latencies, in nanoseconds.
    commit_nanos: AtomicU64,
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sse_clients: AtomicU64,
}

/// Values read at scrape time.
pub struct Gauges {
    pub head: u64,
    pub applied: u64,
    /// Seq the search index has reached, when the index says.
    pub indexed: Option<u64>,
}

impl Metrics {
    pub fn observe_commit(&self, took: Duration, events: usize) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_events.fetch_add(events as u64, Relaxed);
        self.commit_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
    }

    pub fn add_ingested(&self, accepted: u64, duplicates: u64) {
        self.accepted.fetch_add(accepted, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
    }

    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Relaxed);
    }

    pub fn add_request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn add_bad_request(&self) {
        self.bad_requests.fetch_add(1, Relaxed);
    }

    pub fn add_commit_error(&self) {
        self.commit_errors.fetch_add(1, Relaxed);
    }

    pub fn sse_connected(&self) {
        self.sse_clients.fetch_add(1, Relaxed);
    }

    pub fn sse_disconnected(&self) {
        self.sse_clients.fetch_sub(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut s = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "runledger_ingest_accepted_total",
            "Events stored by POST /v1/events.",
            self.accepted.load(Relaxed),
        );
        counter(
            "runledger_ingest_duplicates_total",
            "Events answered as duplicates of a stored id.",
            self.duplicates.load(Relaxed),
        );
        counter(
            "runledger_ingest_rejected_total",
            "Events rejected by validation.",
            self.rejected.load(Relaxed),
        );
        counter(
            "runledger_ingest_requests_total",
            "POST /v1/events requests.",
            self.requests.load(Relaxed),
        );
        counter(
            "runledger_ingest_bad_requests_total",
            "POST /v1/events requests answered 400 or 413.",
            self.bad_requests.load(Relaxed),
        );
        counter(
            "runledger_commit_errors_total",
            "Group commits that failed.",
            self.commit_errors.load(Relaxed),
        );
        counter(
            "runledger_commit_events_total",
            "Events handed to group commits (stored and duplicates).",
            self.commit_events.load(Relaxed),
        );

        let name = "runledger_commit_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Duration of one durable group commit.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.commit_nanos.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(s, "{name}_count {}", self.commits.load(Relaxed));

        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "runledger_head_seq",
            "Seq of the newest stored event.",
            g.head,
        );
        gauge(
            "runledger_projection_applied_seq",
            "Seq the projections have applied.",
            g.applied,
        );
        gauge(
            "runledger_projection_lag_events",
            "Events stored but not yet projected (head - applied).",
            g.head.saturating_sub(g.applied),
        );
        if let Some(ix) = g.indexed {
            gauge(
                "runledger_search_index_lag_events",
                "Events stored but not yet in the search index.",
                g.head.saturating_sub(ix),
            );
        }
        gauge(
            "runledger_stream_clients",
            "Connected /v1/stream clients.",
            self.sse_clients.load(Relaxed),
        );
        s
    }
}
