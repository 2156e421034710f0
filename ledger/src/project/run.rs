//! The state of one run, folded from its events in `(ts, seq)` order.
//!
//! The fold is the single definition of what a run's events mean; the projector stores its
//! result, and time travel recomputes it over the events up to a seq. Because events are folded
//! in `(ts, seq)` order whatever order they arrived in, the result does not depend on arrival
//! order across runs.

use std::borrow::Cow;

use rkyv::with::{AsOwned, Map};
use rkyv::{Archive, Deserialize, Serialize};
use serde_json::Value;

use crate::event::{
    ArchivedBody, ArchivedErrorInfo, ArchivedRunFields, ArchivedStoredEvent, CheckpointStatus,
    JsonText, RunFields,
};
use crate::event_ref::{owned, owned_text, RunFieldsRef, Text};

/// A run's status.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "waiting" => Status::Waiting,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

impl ArchivedStatus {
    pub fn get(&self) -> Status {
        match self {
            ArchivedStatus::Running => Status::Running,
            ArchivedStatus::Waiting => Status::Waiting,
            ArchivedStatus::Completed => Status::Completed,
            ArchivedStatus::Failed => Status::Failed,
            ArchivedStatus::Cancelled => Status::Cancelled,
        }
    }
}

/// A run's status from its deciding terminal status and whether it waits for input.
pub(crate) fn status_of(terminal: Option<Status>, waiting: bool) -> Status {
    match terminal {
        Some(t) => t,
        None if waiting => Status::Waiting,
        None => Status::Running,
    }
}

/// The duration the terminal event reported, else end minus start.
pub(crate) fn duration_of(
    reported: Option<i64>,
    started: Option<i64>,
    ended: Option<i64>,
) -> Option<i64> {
    reported.or(match (started, ended) {
        (Some(s), Some(e)) if e >= s => Some(e - s),
        _ => None,
    })
}

/// The folded state of one run, as the `runs` table stores it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RunState {
    pub run_id: String,
    /// Context fields, merged from every `run.started`/checkpoint (later non-null wins).
    pub fields: RunFields,
    pub output: Option<JsonText>,
    /// The error object of the deciding `run.failed`.
    pub error: Option<JsonText>,
    pub cancel_reason: Option<String>,
    /// The deciding terminal status, if any terminal event was seen.
    pub terminal: Option<Status>,
    /// Between `run.waiting` and `run.resumed`.
    pub waiting: bool,
    pub wait_step: Option<String>,
    pub wait_prompt: Option<String>,
    /// Client ts of the first start (`run.started`, or a pending/running checkpoint).
    pub started_ms: Option<i64>,
    /// Client ts of the deciding terminal event.
    pub ended_ms: Option<i64>,
    /// `duration_ms` as the deciding terminal event gave it.
    pub reported_duration_ms: Option<i64>,
    pub events: u32,
    /// Seqs of the run's events, ascending: what folds and time travel read.
    pub seqs: Vec<u64>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Smallest seq of a start event (fixed once known: later events have larger seqs).
    pub start_seq: Option<u64>,
    /// Smallest seq of a terminal event.
    pub terminal_seq: Option<u64>,
    /// The `(ts, seq)` of the last event folded: an event after it can be applied on top.
    pub fold_ts: i64,
    pub fold_seq: u64,
}

impl ArchivedRunState {
    /// [`RunState::is_active_at`], read in place.
    pub fn is_active_at(&self, seq: u64) -> bool {
        is_active_at(
            self.start_seq.as_ref().map(|s| s.to_native()),
            self.terminal_seq.as_ref().map(|s| s.to_native()),
            seq,
        )
    }
}

/// [`RunState`] while it is folded: strings borrowed from the events being folded (or owned,
/// where the state was read back from the tables). It archives as [`RunState`]'s archive (`as =
/// ArchivedRunState`, fields in the same order; a test compares the bytes), so a rebuild
/// encodes each run without first copying every field it merged into its own allocation.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Default)]
#[rkyv(as = ArchivedRunState)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub struct RunStateRef<'a> {
    #[rkyv(with = AsOwned, omit_bounds)]
    pub run_id: Text<'a>,
    #[rkyv(omit_bounds)]
    pub fields: RunFieldsRef<'a>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub output: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub error: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub cancel_reason: Option<Text<'a>>,
    pub terminal: Option<Status>,
    pub waiting: bool,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub wait_step: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub wait_prompt: Option<Text<'a>>,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub reported_duration_ms: Option<i64>,
    pub events: u32,
    pub seqs: Vec<u64>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub start_seq: Option<u64>,
    pub terminal_seq: Option<u64>,
    pub fold_ts: i64,
    pub fold_seq: u64,
}

impl RunStateRef<'_> {
    /// [`RunState::is_active`].
    pub fn is_active(&self) -> bool {
        is_active(self.start_seq, self.terminal_seq)
    }

    /// [`RunState::follows`].
    pub fn follows(&self, ts: i64, seq: u64) -> bool {
        follows(self.events, (self.fold_ts, self.fold_seq), ts, seq)
    }

    /// [`RunState::sort_key`].
    pub fn sort_key(&self) -> i64 {
        sort_key(self.started_ms, self.ended_ms, self.fold_ts)
    }

    /// [`RunState::encode_into`]: the same bytes.
    pub fn encode_into(&self, buf: Vec<u8>) -> crate::Result<Vec<u8>> {
        Ok(rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(
            self, buf,
        )?)
    }

    /// Every string copied out of what it borrowed.
    pub fn into_static(self) -> RunStateRef<'static> {
        self.into_owned().into_ref()
    }

    pub fn into_owned(self) -> RunState {
        RunState {
            run_id: self.run_id.into_owned(),
            fields: self.fields.into_owned(),
            output: owned(self.output),
            error: owned(self.error),
            cancel_reason: owned(self.cancel_reason),
            terminal: self.terminal,
            waiting: self.waiting,
            wait_step: owned(self.wait_step),
            wait_prompt: owned(self.wait_prompt),
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            reported_duration_ms: self.reported_duration_ms,
            events: self.events,
            seqs: self.seqs,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            start_seq: self.start_seq,
            terminal_seq: self.terminal_seq,
            fold_ts: self.fold_ts,
            fold_seq: self.fold_seq,
        }
    }
}

impl RunState {
    /// The same state, each string moved into a `Cow::Owned`.
    pub fn into_ref(self) -> RunStateRef<'static> {
        let t = owned_text;
        RunStateRef {
            run_id: Cow::Owned(self.run_id),
            fields: self.fields.into_ref(),
            output: t(self.output),
            error: t(self.error),
            cancel_reason: t(self.cancel_reason),
            terminal: self.terminal,
            waiting: self.waiting,
            wait_step: t(self.wait_step),
            wait_prompt: t(self.wait_prompt),
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            reported_duration_ms: self.reported_duration_ms,
            events: self.events,
            seqs: self.seqs,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            start_seq: self.start_seq,
            terminal_seq: self.terminal_seq,
            fold_ts: self.fold_ts,
            fold_seq: self.fold_seq,
        }
    }
}

/// What an event does to whether its run is active: starts it (`start_seq` is the smallest seq
/// of such an event), ends it (`terminal_seq`), or neither. The fold's `mark_start` and
/// `terminal` calls follow this (a test checks every kind of event), so `state --at` can tell
/// from a scan of the log which runs ended without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Starts,
    Ends,
    Neither,
}

impl Lifecycle {
    pub fn of(body: &ArchivedBody) -> Lifecycle {
        match body {
            ArchivedBody::Started { .. } => Lifecycle::Starts,
            ArchivedBody::Checkpoint { status, .. } => match status.get() {
                CheckpointStatus::Pending | CheckpointStatus::Running => Lifecycle::Starts,
                CheckpointStatus::Completed
                | CheckpointStatus::Failed
                | CheckpointStatus::Cancelled => Lifecycle::Ends,
            },
            ArchivedBody::Completed { .. }
            | ArchivedBody::Failed { .. }
            | ArchivedBody::Cancelled { .. } => Lifecycle::Ends,
            ArchivedBody::Progress { .. }
            | ArchivedBody::Waiting { .. }
            | ArchivedBody::Resumed { .. }
            | ArchivedBody::Doc { .. } => Lifecycle::Neither,
        }
    }
}

/// Started at or before `seq` and not ended by then.
fn is_active_at(start_seq: Option<u64>, terminal_seq: Option<u64>, seq: u64) -> bool {
    start_seq.is_some_and(|s| s <= seq) && terminal_seq.is_none_or(|t| t > seq)
}

/// Started and not ended: what CoworkerState calls an active run.
fn is_active(start_seq: Option<u64>, terminal_seq: Option<u64>) -> bool {
    start_seq.is_some() && terminal_seq.is_none()
}

/// Whether an event at `(ts, seq)` comes after everything folded so far.
fn follows(events: u32, fold: (i64, u64), ts: i64, seq: u64) -> bool {
    events == 0 || (ts, seq) > fold
}

/// The time a run sorts by in listings (`runs_by_start`, the search index): its start, else
/// its end, else its last event.
fn sort_key(started_ms: Option<i64>, ended_ms: Option<i64>, fold_ts: i64) -> i64 {
    started_ms.or(ended_ms).unwrap_or(fold_ts)
}

impl RunState {
    pub fn new(run_id: &str) -> Self {
        RunState {
            run_id: run_id.to_owned(),
            ..RunState::default()
        }
    }

    pub fn status(&self) -> Status {
        status_of(self.terminal, self.waiting)
    }

    /// Started and not ended: what CoworkerState calls an active run.
    pub fn is_active(&self) -> bool {
        is_active(self.start_seq, self.terminal_seq)
    }

    /// Active as of `seq`.
    pub fn is_active_at(&self, seq: u64) -> bool {
        is_active_at(self.start_seq, self.terminal_seq, seq)
    }

    pub fn duration_ms(&self) -> Option<i64> {
        duration_of(self.reported_duration_ms, self.started_ms, self.ended_ms)
    }

    /// Whether an event at `(ts, seq)` comes after everything folded so far.
    pub fn follows(&self, ts: i64, seq: u64) -> bool {
        follows(self.events, (self.fold_ts, self.fold_seq), ts, seq)
    }

    /// The time the run sorts by in listings: its start, else its end, else its last event.
    pub fn sort_key(&self) -> i64 {
        sort_key(self.started_ms, self.ended_ms, self.fold_ts)
    }

    /// Appends the stored form to `buf`: many states can share one buffer, each decodable
    /// from its own range (the archive format has no alignment, and its pointers are relative).
    pub fn encode_into(&self, buf: Vec<u8>) -> crate::Result<Vec<u8>> {
        Ok(rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(
            self, buf,
        )?)
    }

    pub fn decode(bytes: &[u8]) -> crate::Result<RunState> {
        rkyv::from_bytes::<RunState, rkyv::rancor::Error>(bytes).map_err(|_| {
            // rancor's message says nothing of use ("failed without error information").
            crate::Error::DamagedProjections("a run's stored state does not decode".into())
        })
    }
}

/// Folds events into a run's state. Strings are borrowed from the events (`'a`), which the
/// caller keeps for as long as the folder. JSON fields that streaming updates touch are kept
/// parsed while folding and written back once, so a run with many `run.progress` events costs
/// linear time.
pub struct Folder<'a> {
    s: RunStateRef<'a>,
    output: Json<'a>,
    input: Json<'a>,
    extra: Json<'a>,
}

/// A JSON field while folding: kept as text until something needs to change inside it.
#[derive(Default)]
struct Json<'a> {
    text: Option<Text<'a>>,
    parsed: Option<Value>,
}

impl<'a> Json<'a> {
    fn text(t: Option<Text<'a>>) -> Json<'a> {
        Json {
            text: t,
            parsed: None,
        }
    }
    /// The parsed value (null when absent), parsing the text on first use.
    fn value_mut(&mut self) -> &mut Value {
        if self.parsed.is_none() {
            let v = crate::json::value_or_null(self.text.take().as_deref());
            self.parsed = Some(v);
        }
        self.parsed.get_or_insert(Value::Null)
    }
    fn into_text(self) -> Option<Text<'a>> {
        match self.parsed {
            None => self.text,
            Some(v) => Some(Cow::Owned(v.to_string())),
        }
    }
    fn into_static(self) -> Json<'static> {
        Json {
            text: self.text.map(|t| Cow::Owned(t.into_owned())),
            parsed: self.parsed,
        }
    }
}

/// A string of an archived event, borrowed.
fn text(s: &rkyv::string::ArchivedString) -> Text<'_> {
    Cow::Borrowed(s.as_str())
}

impl<'a> Folder<'a> {
    pub fn new(run_id: &'a str) -> Self {
        Folder::from_ref(RunStateRef {
            run_id: Cow::Borrowed(run_id),
            ..RunStateRef::default()
        })
    }

    /// Goes on folding a stored state.
    pub fn from_state(s: RunState) -> Folder<'static> {
        Folder::from_ref(s.into_ref())
    }

    fn from_ref(mut s: RunStateRef<'a>) -> Self {
        Folder {
            output: Json::text(s.output.take()),
            input: Json::text(s.fields.input.take()),
            extra: Json::text(s.fields.extra.take()),
            s,
        }
    }

    /// The state so far, except the JSON fields being folded (`output`, `input`, `extra`).
    pub fn state(&self) -> &RunStateRef<'a> {
        &self.s
    }

    /// The same folder, borrowing nothing.
    pub fn into_static(self) -> Folder<'static> {
        Folder {
            s: self.s.into_static(),
            output: self.output.into_static(),
            input: self.input.into_static(),
            extra: self.extra.into_static(),
        }
    }

    /// Applies one event; it must come after every event folded so far in `(ts, seq)` order.
    pub fn apply(&mut self, ev: &'a ArchivedStoredEvent) {
        let seq = ev.seq.to_native();
        let ts = ev.event.ts_ms.to_native();
        let s = &mut self.s;
        if s.events == 0 || seq < s.first_seq {
            s.first_seq = seq;
        }
        s.last_seq = s.last_seq.max(seq);
        s.events += 1;
        s.seqs.push(seq);
        s.fold_ts = ts;
        s.fold_seq = seq;
        match &ev.event.body {
            ArchivedBody::Started { run } => {
                self.merge(run);
                self.mark_start(seq, ts);
            }
            ArchivedBody::Checkpoint {
                run,
                status,
                output,
                error,
                duration_ms,
            } => {
                self.merge(run);
                let duration = duration_ms.as_ref().map(|d| d.to_native());
                match status.get() {
                    CheckpointStatus::Pending | CheckpointStatus::Running => {
                        self.mark_start(seq, ts)
                    }
                    CheckpointStatus::Completed => {
                        if let Some(o) = output.as_ref() {
                            self.output = Json::text(Some(text(o)));
                        }
                        self.terminal(Status::Completed, ts, seq, duration);
                    }
                    CheckpointStatus::Failed => {
                        if let Some(e) = error.as_ref() {
                            self.s.error = Some(Cow::Owned(error_json(e)));
                        }
                        self.terminal(Status::Failed, ts, seq, duration);
                    }
                    CheckpointStatus::Cancelled => {
                        self.terminal(Status::Cancelled, ts, seq, duration)
                    }
                }
            }
            ArchivedBody::Progress {
                path,
                value,
                append,
            } => {
                let value = crate::json::value_or_null(Some(value));
                self.progress(path, value, *append);
            }
            ArchivedBody::Waiting { step_id, prompt } => {
                s.waiting = true;
                s.wait_step = Some(text(step_id));
                s.wait_prompt = prompt.as_ref().map(text);
            }
            ArchivedBody::Resumed { .. } => {
                s.waiting = false;
            }
            ArchivedBody::Completed {
                output,
                duration_ms,
            } => {
                self.output = Json::text(Some(text(output)));
                let d = duration_ms.as_ref().map(|d| d.to_native());
                self.terminal(Status::Completed, ts, seq, d);
            }
            ArchivedBody::Failed { error, duration_ms } => {
                s.error = Some(Cow::Owned(error_json(error)));
                let d = duration_ms.as_ref().map(|d| d.to_native());
                self.terminal(Status::Failed, ts, seq, d);
            }
            ArchivedBody::Cancelled { reason } => {
                s.cancel_reason = reason.as_ref().map(text);
                self.terminal(Status::Cancelled, ts, seq, None);
            }
            ArchivedBody::Doc { .. } => {}
        }
    }

    fn mark_start(&mut self, seq: u64, ts: i64) {
        let s = &mut self.s;
        s.start_seq = Some(s.start_seq.map_or(seq, |x| x.min(seq)));
        if s.started_ms.is_none() {
            s.started_ms = Some(ts);
        }
    }

    fn terminal(&mut self, st: Status, ts: i64, seq: u64, duration: Option<i64>) {
        let s = &mut self.s;
        s.terminal = Some(st);
        s.ended_ms = Some(ts);
        s.reported_duration_ms = duration;
        s.terminal_seq = Some(s.terminal_seq.map_or(seq, |x| x.min(seq)));
    }

    fn merge(&mut self, run: &'a ArchivedRunFields) {
        let f = &mut self.s.fields;
        let set =
            |dst: &mut Option<Text<'a>>,
             src: &'a rkyv::option::ArchivedOption<rkyv::string::ArchivedString>| {
                if let Some(v) = src.as_ref() {
                    *dst = Some(text(v));
                }
            };
        set(&mut f.operation, &run.operation);
        set(&mut f.doctype, &run.doctype);
        set(&mut f.template, &run.template);
        set(&mut f.flow, &run.flow);
        set(&mut f.owner, &run.owner);
        set(&mut f.agent, &run.agent);
        set(&mut f.role, &run.role);
        set(&mut f.parent_run_id, &run.parent_run_id);
        set(&mut f.chain_id, &run.chain_id);
        set(&mut f.step_id, &run.step_id);
        set(&mut f.options, &run.options);
        if let Some(i) = run.step_index.as_ref() {
            f.step_index = Some(i.to_native());
        }
        if let Some(i) = run.input.as_ref() {
            self.input = Json::text(Some(text(i)));
        }
        if let Some(x) = run.extra.as_ref() {
            if let Some(Value::Object(new)) = crate::json::value_of(x) {
                match self.extra.value_mut() {
                    Value::Object(old) => old.extend(new),
                    other => *other = Value::Object(new),
                }
            }
        }
    }

    /// `CoworkerState.updateRunField(path, value)`: `output.*` and `input.*` land in the run's
    /// output and input, any other path in its extra fields.
    ///
    /// The state stays within [`FOLD_DEPTH`] levels, so that it is written and read back as the
    /// same value wherever a span ends: at most [`PATH_DEPTH`] segments are walked (the rest
    /// stay one key), and the value is kept to the levels left below its place
    /// ([`crate::json::clip_value`]). A path of 200,000 segments overflowed the stack when the
    /// state was written, on every catch-up after it.
    fn progress(&mut self, path: &str, mut value: Value, append: bool) {
        let segments = path.splitn(PATH_DEPTH, '.');
        // The leaf's level, counting the payload's own object; an appended value is one deeper.
        let level = segments.clone().count() + 1 + usize::from(append);
        crate::json::clip_value(&mut value, FOLD_DEPTH.saturating_sub(level));
        let mut parts = segments;
        let root = parts.next().unwrap_or("");
        let slot = match root {
            "output" => self.output.value_mut(),
            "input" => self.input.value_mut(),
            _ => {
                let extra = self.extra.value_mut();
                if !extra.is_object() {
                    *extra = Value::Object(Default::default());
                }
                if let Some(leaf) = walk(extra, std::iter::once(root).chain(parts)) {
                    put(leaf, value, append);
                }
                return;
            }
        };
        if let Some(leaf) = walk(slot, parts) {
            put(leaf, value, append);
        }
    }

    /// The folded state, still borrowing from the events.
    pub fn finish(self) -> RunStateRef<'a> {
        let mut s = self.s;
        // Folded in (ts, seq) order; kept in seq order.
        s.seqs.sort_unstable();
        s.output = self.output.into_text();
        s.fields.input = self.input.into_text();
        s.fields.extra = self.extra.into_text();
        s
    }
}

/// Segments of a `run.progress` path walked at most; the rest stay joined as one key.
const PATH_DEPTH: usize = 64;

/// Levels a folded payload keeps at most: below serde_json's limit (128), so that its text
/// reads back as the same value.
const FOLD_DEPTH: usize = 120;

/// Walks `path` from `v`, creating objects on the way; `None` when an array index is out of
/// range.
fn walk<'v, 'p>(
    mut v: &'v mut Value,
    path: impl Iterator<Item = &'p str>,
) -> Option<&'v mut Value> {
    for seg in path {
        if let (Value::Array(a), Ok(i)) = (&*v, seg.parse::<usize>()) {
            if i >= a.len() {
                return None;
            }
            let Value::Array(a) = v else { return None };
            v = &mut a[i];
            continue;
        }
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        let Value::Object(m) = v else { return None };
        // Streaming updates hit the same keys again: allocate a key only when it is new.
        if !m.contains_key(seg) {
            m.insert(seg.to_owned(), Value::Null);
        }
        v = m.get_mut(seg)?;
    }
    Some(v)
}

fn put(leaf: &mut Value, value: Value, append: bool) {
    if !append {
        *leaf = value;
        return;
    }
    match (leaf, value) {
        (Value::String(s), Value::String(add)) => s.push_str(&add),
        (Value::Array(a), v) => a.push(v),
        (leaf @ Value::Null, Value::String(add)) => *leaf = Value::String(add),
        (leaf @ Value::Null, v) => *leaf = Value::Array(vec![v]),
        (leaf, v) => *leaf = v,
    }
}

fn error_json(e: &ArchivedErrorInfo) -> JsonText {
    let mut m = serde_json::Map::new();
    m.insert("message".into(), Value::String(e.message.to_string()));
    if let Some(c) = e.code.as_ref() {
        m.insert("code".into(), crate::json::value_or_null(Some(c)));
    }
    if let Some(s) = e.stack.as_ref() {
        m.insert("stack".into(), Value::String(s.to_string()));
    }
    if let Some(x) = e.extra.as_ref() {
        if let Some(Value::Object(x)) = crate::json::value_of(x) {
            for (k, v) in x {
                m.entry(k).or_insert(v);
            }
        }
    }
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed twin encodes to the owned state's bytes, every field set (a field moved,
    /// dropped or of another archived type changes them).
    #[test]
    fn borrowed_state_encodes_as_the_owned_state() {
        // Longer than 8 bytes: shorter strings are stored inline, so their order would not show.
        let t = |s: &str| Some(format!("{s}-0123456789"));
        let owned = RunState {
            run_id: "r-1".into(),
            fields: RunFields {
                operation: t("create"),
                doctype: t("Task"),
                template: t("tpl"),
                flow: t("flow"),
                owner: t("ann"),
                agent: t("bot"),
                role: t("assistant"),
                parent_run_id: t("r-0"),
                chain_id: t("c-1"),
                step_id: t("s-1"),
                step_index: Some(3),
                input: t(r#"{"a":1}"#),
                options: t(r#"{"o":true}"#),
                extra: t(r#"{"x":"y"}"#),
            },
            output: t(r#"{"done":1}"#),
            error: t(r#"{"message":"m"}"#),
            cancel_reason: t("stop"),
            terminal: Some(Status::Failed),
            waiting: true,
            wait_step: t("ask"),
            wait_prompt: t("ok?"),
            started_ms: Some(10),
            ended_ms: Some(20),
            reported_duration_ms: Some(7),
            events: 4,
            seqs: vec![2, 5, 9, 11],
            first_seq: 2,
            last_seq: 11,
            start_seq: Some(2),
            terminal_seq: Some(11),
            fold_ts: 20,
            fold_seq: 11,
        };
        let expected = owned.encode_into(Vec::new()).unwrap();
        let twin = owned.clone().into_ref();
        assert_eq!(twin.encode_into(Vec::new()).unwrap(), expected);
        assert_eq!(twin.into_owned(), owned);
        assert_eq!(RunState::decode(&expected).unwrap(), owned);
    }

    /// [`Lifecycle::of`] says what the fold does: one event alone sets `start_seq` exactly when
    /// it starts the run and `terminal_seq` exactly when it ends it.
    #[test]
    fn lifecycle_agrees_with_the_fold() {
        let cfg = crate::workload::WorkloadConfig::new(3, 30);
        let mut lines = crate::workload::ndjson_lines(&cfg);
        for status in ["pending", "running", "completed", "failed", "cancelled"] {
            lines.push(format!(
                r#"{{"type":"run.checkpoint","run":{{"id":"c","status":"{status}","operation":"select","timestamp":1763700000000,"error":"e"}}}}"#
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, line) in lines.iter().enumerate() {
            let event = crate::parse_event(line).unwrap();
            let stored = crate::StoredEvent {
                seq: i as u64 + 1,
                ingested_ms: 0,
                event,
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&stored).unwrap();
            let archived = crate::block::access(stored.seq, &bytes).unwrap();
            let mut folder = Folder::new(&stored.event.run_id);
            folder.apply(archived);
            let s = folder.finish().into_owned();
            let kind = Lifecycle::of(&archived.event.body);
            seen.insert(format!("{kind:?}"));
            assert_eq!(s.start_seq.is_some(), kind == Lifecycle::Starts, "{line}");
            assert_eq!(s.terminal_seq.is_some(), kind == Lifecycle::Ends, "{line}");
        }
        assert_eq!(seen.len(), 3);
    }
}
