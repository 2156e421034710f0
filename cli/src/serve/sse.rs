//! `GET /v1/stream`: the live tail as Server-Sent Events.
//!
//! Each event is sent as `id: SEQ` and `data: <the event's JSON>`. A client resumes with the
//! `Last-Event-ID` header (or `?from=SEQ`) and receives every event after that seq exactly
//! once, in seq order, then new ones as they are committed. Without either it starts at the
//! head (new events only). The stream reads the log from the last sent seq in chunks on the
//! blocking pool and sleeps on the writer's head watch in between.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use ledger::Ledger;

use super::routes::error_response;
use super::AppState;

/// Most events read from the log per step.
const CHUNK: u64 = 1024;

/// Decrements the connected-clients gauge when the stream is dropped.
struct Connected(Arc<AppState>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.metrics.sse_disconnected();
    }
}

struct Tail {
    conn: Connected,
    last: u64,
    head_rx: tokio::sync::watch::Receiver<ledger::Head>,
    shutdown_rx: tokio::sync::watch::Receiver<bool>,
}

pub async fn stream(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let from_param = q.get("from").map(|s| s.trim()).filter(|s| !s.is_empty());
    let last = match from_header.or(from_param) {
        Some(s) => match s.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID / from={s:?} is not a seq"),
                )
            }
        },
        None => st.head_rx.borrow().seq,
    };
    st.metrics.sse_connected();
    let tail = Tail {
        head_rx: st.head_rx.clone(),
        shutdown_rx: st.shutdown_rx.clone(),
        conn: Connected(st),
        last,
    };
    let events = stream::unfold(tail, next_chunk).flat_map(stream::iter);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

type Items = Vec<Result<Event, Infallible>>;

/// The next non-empty chunk of events after `tail.last`; `None` ends the stream (shutdown or
/// a storage error).
async fn next_chunk(mut tail: Tail) -> Option<(Items, Tail)> {
    loop {
        if *tail.shutdown_rx.borrow() {
            return None;
        }
        let head = tail.head_rx.borrow_and_update().seq;
        if head > tail.last {
            let ledger = Arc::clone(&tail.conn.0.ledger);
            let from = tail.last + 1;
            let to = head.min(tail.last.saturating_add(CHUNK));
            let read = tokio::task::spawn_blocking(move || read_events(&ledger, from, to)).await;
            let events = match read {
                Ok(Ok(ev)) => ev,
                Ok(Err(e)) => {
                    eprintln!("runledger serve: live tail stopped: {e}");
                    return None;
                }
                Err(_) => return None,
            };
            if let Some((seq, _)) = events.last() {
                tail.last = *seq;
                let items = events
                    .into_iter()
                    .map(|(seq, json)| Ok(Event::default().id(seq.to_string()).data(json)))
                    .collect();
                return Some((items, tail));
            }
            // The head moved but the snapshot did not show it yet: wait for the next commit.
        }
        tokio::select! {
            r = tail.head_rx.changed() => if r.is_err() { return None },
            r = tail.shutdown_rx.changed() => if r.is_err() { return None },
        }
    }
}

/// Events `from..=to` as `(seq, JSON text)`.
fn read_events(ledger: &Ledger, from: u64, to: u64) -> ledger::Result<Vec<(u64, String)>> {
    let reader = ledger.reader()?;
    let mut out = Vec::with_capacity((to + 1 - from) as usize);
    reader.scan(from, to, |_, ev| {
        let mut s = String::with_capacity(256);
        ledger::render::write_event_json(ev, true, &mut s);
        out.push((ev.seq.to_native(), s));
        Ok(true)
    })?;
    Ok(out)
}
