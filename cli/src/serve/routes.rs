//! The routes: ingest, the query endpoints (the CLI's JSON), health and metrics.
//!
//! Storage work runs on tokio's blocking pool or on the writer thread, never on the async
//! workers. Queries about the head wait (briefly) for the projections to reach the head as it
//! was when the request arrived, so a client reads what it has just written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ledger::encode::EncodedBatch;
use ledger::project::{RunFilter, View};
use ledger::{EventRef, Ledger, Outcome};
use serde_json::{json, value::RawValue, Value};

use super::{auth, cors, sse, AppState};

/// Most reasons listed in `errors` (every item is in `results`).
const MAX_ERRORS: usize = 100;
/// Longest a query waits for the projections to reach the head.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/tree", get(tree))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/effects", get(effects))
        .route("/v1/docs/{doctype}/{name}/trace", get(trace))
        .route("/v1/state", get(state_view))
        .route("/v1/search", get(search))
        .route("/v1/stats", get(stats))
        .route("/v1/stream", get(sse::stream))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            cors::layer,
        ))
        .with_state(state)
}

/// `{"error": msg}` with `status`.
pub fn error_response(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = json!({ "error": msg.into() });
    (status, axum::Json(body)).into_response()
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response()
}

async fn unknown_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such endpoint")
}

// ---------------------------------------------------------------------------------------------
// Ingest

/// One item of the body: where it was, and its event's position in the batch or why it was
/// rejected.
struct Item {
    index: usize,
    parsed: Result<usize, String>,
}

struct Parsed {
    /// The valid events, encoded here (off the writer thread) for the group commit.
    events: EncodedBatch,
    items: Vec<Item>,
}

/// Splits the body into events: a JSON array (when it starts with `[`), else NDJSON.
/// `Err` is a 400: the body as a whole cannot be read.
fn parse_body(body: &[u8], json_content: bool, max_event: usize) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let trimmed = text.trim_start();
    let mut out = Parsed {
        events: EncodedBatch::default(),
        items: Vec::new(),
    };
    let mut push = |index: usize, r: Result<EventRef, ledger::Rejection>| {
        let parsed = match r {
            Ok(ev) => match out.events.push(&ev) {
                Ok(()) => Ok(out.events.len() - 1),
                Err(e) => Err(format!("cannot be encoded: {e}")),
            },
            Err(rej) => Err(rej.0),
        };
        out.items.push(Item { index, parsed });
    };
    if trimmed.starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| format!("the body is not a valid JSON array: {e}"))?;
        for (i, raw) in raws.iter().enumerate() {
            push(i, ledger::parse::parse_event_ref(raw.get(), max_event));
        }
    } else if json_content && !trimmed.is_empty() {
        return Err(
            "a JSON body must be an array of events; send one event per line as \
                    Content-Type: application/x-ndjson instead"
                .into(),
        );
    } else {
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            push(i, ledger::parse::parse_event_ref(line, max_event));
        }
    }
    Ok(out)
}

fn is_plain_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

async fn ingest(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    st.metrics.add_request();
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            st.metrics.add_bad_request();
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the body is over the limit of {} bytes (--max-body)",
                    st.max_body
                )
            } else {
                rej.body_text()
            };
            return error_response(status, msg);
        }
    };
    let json_content = is_plain_json(&headers);
    let max_event = st.max_event_bytes;
    let parsed =
        tokio::task::spawn_blocking(move || parse_body(&body, json_content, max_event)).await;
    let parsed = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(msg)) => {
            st.metrics.add_bad_request();
            return error_response(StatusCode::BAD_REQUEST, msg);
        }
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("parsing failed: {e}"),
            )
        }
    };
    let rejected = parsed.items.iter().filter(|i| i.parsed.is_err()).count();
    st.metrics.add_rejected(rejected as u64);

    let outcomes = if parsed.events.is_empty() {
        Vec::new()
    } else {
        let Some(rx) = st.writer.submit(parsed.events) else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
        };
        match rx.await {
            Ok(Ok(o)) => o,
            Ok(Err(msg)) => {
                // The storage failed and the server is stopping: a retry may go to its restart.
                let status = if st.fatal.why().is_some() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                return error_response(status, msg);
            }
            Err(_) => return error_response(StatusCode::SERVICE_UNAVAILABLE, "the writer stopped"),
        }
    };
    ingest_report(&parsed.items, &outcomes)
}

/// The ingest report, written by hand: a `Value` per item costs more than the commit.
fn ingest_report(items: &[Item], outcomes: &[Outcome]) -> Response {
    use std::fmt::Write as _;
    let (mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    let mut last_seq: Option<u64> = None;
    let mut errors = String::new();
    let mut n_errors = 0;
    let mut results = String::with_capacity(items.len() * 48);
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    for (k, it) in items.iter().enumerate() {
        if k > 0 {
            results.push(',');
        }
        let i = it.index;
        let reason = match &it.parsed {
            Ok(pos) => match outcomes.get(*pos) {
                Some(Outcome::Stored(s)) => {
                    accepted += 1;
                    last_seq = Some(last_seq.map_or(*s, |l| l.max(*s)));
                    let _ = write!(results, r#"{{"index":{i},"status":"accepted","seq":{s}}}"#);
                    continue;
                }
                Some(Outcome::Duplicate(s)) => {
                    duplicates += 1;
                    let _ = write!(results, r#"{{"index":{i},"status":"duplicate","seq":{s}}}"#);
                    continue;
                }
                None => "no outcome from the writer",
            },
            Err(reason) => reason.as_str(),
        };
        rejected += 1;
        let q = quote(reason);
        let _ = write!(
            results,
            r#"{{"index":{i},"status":"rejected","seq":null,"reason":{q}}}"#
        );
        if n_errors < MAX_ERRORS {
            if n_errors > 0 {
                errors.push(',');
            }
            n_errors += 1;
            let _ = write!(errors, r#"{{"index":{i},"reason":{q}}}"#);
        }
    }
    let last = last_seq.map_or_else(|| "null".to_string(), |s| s.to_string());
    let body = format!(
        r#"{{"accepted":{accepted},"duplicates":{duplicates},"rejected":{rejected},"errors":[{errors}],"last_seq":{last},"results":[{results}]}}"#
    );
    json_bytes(StatusCode::OK, body.into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Queries

type Params = HashMap<String, String>;

fn bad(msg: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, msg)
}

fn param_u64(q: &Params, name: &str) -> Result<Option<u64>, String> {
    match q.get(name).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={s:?} is not a non-negative integer")),
    }
}

fn param_bool(q: &Params, name: &str) -> Result<bool, String> {
    match q.get(name).map(|s| s.trim()) {
        None => Ok(false),
        Some("" | "1" | "true" | "yes") => Ok(true),
        Some("0" | "false" | "no") => Ok(false),
        Some(s) => Err(format!("{name}={s:?} is not true or false")),
    }
}

fn param_time(q: &Params, name: &str) -> Result<Option<i64>, String> {
    match q.get(name).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => crate::ctx::parse_time(s)
            .map(Some)
            .map_err(|e| format!("{name}: {e}")),
    }
}

fn param_status(q: &Params) -> Result<Option<ledger::project::Status>, String> {
    param_str(q, "status")
        .map(|s| {
            ledger::project::Status::parse(&s).ok_or_else(|| {
                format!("status={s:?} is not one of running, waiting, completed, failed, cancelled")
            })
        })
        .transpose()
}

fn param_str(q: &Params, name: &str) -> Option<String> {
    q.get(name).filter(|s| !s.is_empty()).cloned()
}

/// `at=SEQ` or `at_time=RFC3339`.
#[derive(Clone, Copy)]
enum At {
    Head,
    Seq(u64),
    Time(i64),
}

fn param_at(q: &Params) -> Result<At, String> {
    if let Some(s) = param_u64(q, "at")? {
        return Ok(At::Seq(s));
    }
    if let Some(t) = param_time(q, "at_time")? {
        return Ok(At::Time(t));
    }
    Ok(At::Head)
}

/// Waits until the projections have applied `target` (or the wait times out).
async fn wait_applied(st: &AppState, target: u64) {
    wait_watermark(st.applied_rx.clone(), &st.catch_up_nudge, target).await;
}

/// Waits until the search index holds `target` (or the wait times out).
async fn wait_indexed(st: &AppState, target: u64) {
    wait_watermark(st.indexed_rx.clone(), &st.index_nudge, target).await;
}

/// Waits until the watermark `rx` reaches `target`, asking the catch-up thread (`nudge`) to
/// get there now rather than at its next round.
async fn wait_watermark(
    mut rx: tokio::sync::watch::Receiver<u64>,
    nudge: &std::sync::atomic::AtomicBool,
    target: u64,
) {
    if *rx.borrow() >= target {
        return;
    }
    nudge.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(READ_YOUR_WRITES_WAIT, rx.wait_for(|a| *a >= target)).await;
}

/// Why a query failed, as an HTTP answer.
struct Failure(StatusCode, String);

impl From<ledger::Error> for Failure {
    fn from(e: ledger::Error) -> Self {
        match e {
            ledger::Error::NotFound(m) => Failure(StatusCode::NOT_FOUND, m),
            ledger::Error::Invalid(m) => Failure(StatusCode::BAD_REQUEST, m),
            other => Failure(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<query::Error> for Failure {
    fn from(e: query::Error) -> Self {
        match e {
            query::Error::Ledger(e) => e.into(),
            query::Error::BadQuery(m) | query::Error::Invalid(m) => {
                Failure(StatusCode::BAD_REQUEST, m)
            }
            query::Error::Index(m) if m.contains("no search index yet") => {
                Failure(StatusCode::NOT_FOUND, format!("search index: {m}"))
            }
            other => Failure(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// Runs `ask` on the blocking pool once the projections have reached the head as of the
/// request (or `at`), and answers its JSON.
async fn answer_with<T, F>(st: Arc<AppState>, at: At, ask: F) -> Response
where
    T: serde::Serialize,
    F: FnOnce(&Ledger, Option<u64>) -> Result<T, Failure> + Send + 'static,
{
    let head = st.head_rx.borrow().seq;
    let target = match at {
        At::Seq(s) => s.min(head),
        At::Head | At::Time(_) => head,
    };
    wait_applied(&st, target).await;
    let ledger = Arc::clone(&st.ledger);
    let r = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Failure> {
        let at = match at {
            At::Head => None,
            At::Seq(s) => Some(s),
            At::Time(t) => Some(ledger.seq_at_time(t)?),
        };
        let v = ask(&ledger, at)?;
        serde_json::to_vec(&v)
            .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    match r {
        Ok(Ok(body)) => json_bytes(StatusCode::OK, body),
        Ok(Err(Failure(status, m))) => error_response(status, m),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query failed: {e}"),
        ),
    }
}

/// Answers a query on a [`View`] as of `at`.
async fn answer<T, F>(st: Arc<AppState>, at: At, ask: F) -> Response
where
    T: serde::Serialize,
    F: FnOnce(&View) -> ledger::Result<T> + Send + 'static,
{
    answer_with(st, at, move |ledger, at| {
        let view = ledger.view(at)?;
        Ok(ask(&view)?)
    })
    .await
}

/// A path parameter, or the `{"error"}` answer every other bad request gets (axum's own
/// rejection is plain text: `/v1/runs/%FF` said "Invalid URL: Invalid UTF-8 in `id`").
fn path_of<T>(p: Result<Path<T>, PathRejection>) -> Result<T, String> {
    p.map(|Path(v)| v).map_err(|e| e.body_text())
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(msg) => return bad(msg),
        }
    };
}

async fn show(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<Params>,
) -> Response {
    let id = tri!(path_of(id));
    let at = tri!(param_at(&q));
    answer(st, at, move |v| v.show(&id)).await
}

async fn tree(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<Params>,
) -> Response {
    let id = tri!(path_of(id));
    let at = tri!(param_at(&q));
    let depth = tri!(param_u64(&q, "depth")).map(|d| usize::try_from(d).unwrap_or(usize::MAX));
    answer(st, at, move |v| v.tree(&id, depth)).await
}

async fn run_events(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<Params>,
) -> Response {
    let id = tri!(path_of(id));
    let at = tri!(param_at(&q));
    answer(st, at, move |v| {
        let seqs = v.run_event_seqs(&id)?;
        if seqs.is_empty() && v.run(&id)?.is_none() {
            return Err(ledger::Error::NotFound(format!("no run {id:?}")));
        }
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs {
            if let Some(ev) = v
                .reader()
                .with_event(s, |ev| ledger::render::event_value(ev, true))?
            {
                out.push(ev);
            }
        }
        Ok(Value::Array(out))
    })
    .await
}

async fn effects(
    State(st): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<Params>,
) -> Response {
    let id = tri!(path_of(id));
    let at = tri!(param_at(&q));
    let whole_tree = tri!(param_bool(&q, "tree"));
    answer(st, at, move |v| v.effects_json(&id, whole_tree)).await
}

async fn trace(
    State(st): State<Arc<AppState>>,
    names: Result<Path<(String, String)>, PathRejection>,
    Query(q): Query<Params>,
) -> Response {
    let (doctype, name) = tri!(path_of(names));
    let at = tri!(param_at(&q));
    answer(st, at, move |v| v.trace_json(&doctype, &name)).await
}

async fn state_view(State(st): State<Arc<AppState>>, Query(q): Query<Params>) -> Response {
    let at = tri!(param_at(&q));
    answer(st, at, |v| v.state()).await
}

async fn runs(State(st): State<Arc<AppState>>, Query(q): Query<Params>) -> Response {
    let at = tri!(param_at(&q));
    let status = tri!(param_status(&q));
    let f = RunFilter {
        operation: param_str(&q, "operation"),
        doctype: param_str(&q, "doctype"),
        status,
        template: param_str(&q, "template"),
        owner: param_str(&q, "owner"),
        agent: param_str(&q, "agent"),
        root: tri!(param_bool(&q, "root")),
        since_ms: tri!(param_time(&q, "since")),
        until_ms: tri!(param_time(&q, "until")),
        limit: tri!(param_u64(&q, "limit")).map_or(50, |n| usize::try_from(n).unwrap_or(50)),
        offset: tri!(param_u64(&q, "offset")).map_or(0, |n| usize::try_from(n).unwrap_or(0)),
    };
    answer(st, at, move |v| v.runs_json(&f)).await
}

async fn search(State(st): State<Arc<AppState>>, Query(q): Query<Params>) -> Response {
    let status = tri!(param_status(&q));
    let req = query::search::SearchRequest {
        query: q.get("q").cloned().unwrap_or_default(),
        operation: param_str(&q, "operation"),
        doctype: param_str(&q, "doctype"),
        status,
        template: param_str(&q, "template"),
        owner: param_str(&q, "owner"),
        agent: param_str(&q, "agent"),
        since_ms: tri!(param_time(&q, "since")),
        until_ms: tri!(param_time(&q, "until")),
        limit: tri!(param_u64(&q, "limit")).map_or(20, |n| usize::try_from(n).unwrap_or(20)),
        offset: tri!(param_u64(&q, "offset")).map_or(0, |n| usize::try_from(n).unwrap_or(0)),
    };
    // The index catches up less often than the projections: a search about the head asks it
    // to catch up first.
    let head = st.head_rx.borrow().seq;
    wait_indexed(&st, head).await;
    answer_with(st, At::Head, move |ledger, _| {
        Ok(query::search::search(ledger, &req)?)
    })
    .await
}

async fn stats(State(st): State<Arc<AppState>>, Query(q): Query<Params>) -> Response {
    let at = tri!(param_at(&q));
    let by = match param_str(&q, "by") {
        None => query::stats::GroupBy::default(),
        Some(s) => match query::stats::GroupBy::parse(&s) {
            Some(b) => b,
            None => {
                return bad(format!(
                    "by={s:?} is not one of operation, doctype, template, owner, agent, status"
                ))
            }
        },
    };
    let range = query::stats::TimeRange {
        since_ms: tri!(param_time(&q, "since")),
        until_ms: tri!(param_time(&q, "until")),
    };
    answer_with(st, at, move |ledger, at| {
        let view = ledger.view(at)?;
        Ok(query::stats::stats_json(&view, by, range)?)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Health and metrics

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let head = *st.head_rx.borrow();
    let head = json!({"seq": head.seq, "hash": head.hash_hex()});
    match st.fatal.why() {
        None => (
            StatusCode::OK,
            axum::Json(json!({"ok": true, "head": head})),
        )
            .into_response(),
        Some(why) => {
            let body = json!({"ok": false, "head": head, "error": why});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let head = st.head_rx.borrow().seq;
    let ledger = Arc::clone(&st.ledger);
    let read = tokio::task::spawn_blocking(move || {
        let applied = ledger::project::applied(&ledger).ok();
        let indexed = query::search::indexed_seq(&ledger).ok().flatten();
        (applied, indexed)
    })
    .await;
    let (applied, indexed) = read.unwrap_or((None, None));
    let applied = applied.unwrap_or_else(|| *st.applied_rx.borrow());
    let text = st.metrics.render(&super::metrics::Gauges {
        head,
        applied,
        indexed,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_bodies() {
        let ok = r#"{"type":"run.completed","run_id":"a","ts":1763700000000}"#;
        let nd = format!("{ok}\n\n{{\"type\":\"nope\"}}\r\n{ok}\n");
        let p = parse_body(nd.as_bytes(), false, 1 << 20).unwrap();
        assert_eq!(p.events.len(), 2);
        let idx: Vec<_> = p.items.iter().map(|i| i.index).collect();
        assert_eq!(idx, vec![0, 2, 3]);
        assert!(p.items[1].parsed.is_err());

        let arr = format!("[{ok}, 5, {ok}]");
        let p = parse_body(arr.as_bytes(), true, 1 << 20).unwrap();
        assert_eq!(p.events.len(), 2);
        assert!(p.items[1].parsed.is_err());

        assert!(parse_body(b"[{\"type\":", false, 1 << 20).is_err());
        assert!(parse_body(ok.as_bytes(), true, 1 << 20).is_err());
        assert!(parse_body(b"\xff\xfe", false, 1 << 20).is_err());
    }
}
