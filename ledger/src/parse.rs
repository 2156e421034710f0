//! Parsing and validation of ingest format v1 lines into [`Event`]s.
//!
//! One pass of [`crate::json_scan`] over the line: the object's keys are read with their values
//! as borrowed raw JSON, so values the ledger does not interpret are never turned into trees;
//! known fields are then checked one by one, each failure naming the field.

mod fields;

use std::borrow::Cow;
use std::fmt;

use crate::event::{CheckpointStatus, DocChange, Event};
use crate::event_ref::{BodyRef, ErrorInfoRef, EventRef, RunFieldsRef, Text};
use crate::json_scan::{check_value, decode_string, JsonError, Raw};
use fields::{Fields, Key};

/// Default size limit of one event (one NDJSON line), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Longest `run_id` / `id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Integer `ts` values below this are seconds sent by mistake, not milliseconds.
const MIN_TS_MS: i64 = 100_000_000_000;
/// 9999-12-31T23:59:59.999Z: the last instant RFC 3339 can write.
const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Why a line was rejected: a human sentence naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Res<T> = Result<T, Rejection>;

fn reject<T>(msg: impl Into<String>) -> Res<T> {
    Err(Rejection(msg.into()))
}

/// Parses one event with the default size limit.
pub fn parse_event(line: &str) -> Res<Event> {
    parse_event_limited(line, DEFAULT_MAX_EVENT_BYTES)
}

/// Parses one event, rejecting it when it is longer than `max_bytes`.
pub fn parse_event_limited(line: &str, max_bytes: usize) -> Res<Event> {
    parse_event_ref(line, max_bytes).map(EventRef::into_owned)
}

/// Parses one event into its borrowed twin, rejecting it when it is longer than `max_bytes`:
/// what ingest archives, strings borrowed from `line`.
pub fn parse_event_ref(line: &str, max_bytes: usize) -> Res<EventRef<'_>> {
    if line.len() > max_bytes {
        return reject(format!(
            "event is {} bytes, over the size limit of {} bytes",
            line.len(),
            max_bytes
        ));
    }
    let mut fields = Fields::new();
    // `run`, the one nested object most events interpret, is read in the same pass.
    let mut run = None;
    match fields.read(line, Some(&mut run)) {
        Ok(true) => event_from_fields(&mut fields, &mut run),
        Ok(false) => match check_value(line) {
            Ok(()) => reject("not a JSON object"),
            Err(e) => Err(scan_error(&e)),
        },
        Err(e) => Err(scan_error(&e)),
    }
}

fn scan_error(e: &JsonError) -> Rejection {
    Rejection(format!("invalid JSON: {} (column {})", e.message, e.column))
}

/// Reads the object `raw` into `fields`.
fn object_of<'a>(fields: &mut Fields<'a>, raw: Raw<'a>, label: &str) -> Res<()> {
    match fields.read(raw.text(), None) {
        Ok(true) => Ok(()),
        _ => reject(format!("field `{label}` must be an object")),
    }
}

/// The `run` object, read with the event (see [`Fields::read`]).
fn run_object<'f, 'a>(run: &'f mut Option<Fields<'a>>) -> Res<&'f mut Fields<'a>> {
    match run {
        Some(fields) if fields.usable() => Ok(fields),
        _ => reject("field `run` must be an object"),
    }
}

// ---- typed field readers ---------------------------------------------------------------------
//
// The readers (and `run_fields`, `Fields::take`) are inlined into the rules on purpose: returned
// through memory, each `Result<String, _>` was copied on with loads wider than the stores that
// wrote it, which stalls the CPU (no store-to-load forwarding) once per field.

/// A string value, borrowed unless it has escapes.
#[inline(always)]
fn str_of<'a>(raw: Raw<'a>, label: &str) -> Res<Cow<'a, str>> {
    match raw.plain_str() {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => escaped_str_of(raw, label),
    }
}

#[cold]
fn escaped_str_of<'a>(raw: Raw<'a>, label: &str) -> Res<Cow<'a, str>> {
    match decode_string(raw.text()) {
        Some(s) => Ok(s),
        None => reject(format!("field `{label}` must be a string")),
    }
}

#[inline(always)]
fn opt_string<'a>(f: &mut Fields<'a>, names: &[Key], label: &str) -> Res<Option<Text<'a>>> {
    f.take(names, label)?.map(|r| str_of(r, label)).transpose()
}

#[inline(always)]
fn req_string<'a>(f: &mut Fields<'a>, names: &[Key], label: &str) -> Res<Text<'a>> {
    match opt_string(f, names, label)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => reject(format!("field `{label}` must not be empty")),
        None => reject(format!("missing required field `{label}`")),
    }
}

#[inline(always)]
fn id_string<'a>(s: Text<'a>, label: &str) -> Res<Text<'a>> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return reject(format!(
            "field `{label}` must be 1 to {MAX_ID_BYTES} bytes long (it is {})",
            s.len()
        ));
    }
    Ok(s)
}

/// A JSON integer that fits in an `i64`, as serde_json reads one: no fraction or exponent, and
/// not `-0` (which serde_json reads as a float).
fn i64_of(raw: &str) -> Option<i64> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, raw),
    };
    if digits.is_empty() {
        return None;
    }
    // Up to 19 digits cannot overflow a u64, so the common case needs no overflow checks.
    let short = digits.len() <= 19;
    let mut magnitude: u64 = 0;
    for b in digits.bytes() {
        let digit = u64::from(b.wrapping_sub(b'0'));
        if digit > 9 {
            return None;
        }
        magnitude = if short {
            magnitude * 10 + digit
        } else {
            magnitude.checked_mul(10)?.checked_add(digit)?
        };
    }
    if negative {
        match magnitude {
            0 => None,
            m => 0i64.checked_sub_unsigned(m),
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[inline(always)]
fn int_of(raw: Raw, label: &str) -> Res<i64> {
    match i64_of(raw.text()) {
        Some(n) => Ok(n),
        None => reject(format!("field `{label}` must be an integer")),
    }
}

#[inline(always)]
fn opt_int(f: &mut Fields, names: &[Key], label: &str) -> Res<Option<i64>> {
    f.take(names, label)?.map(|r| int_of(r, label)).transpose()
}

#[inline(always)]
fn opt_json<'a>(f: &mut Fields<'a>, names: &[Key], label: &str) -> Res<Option<Text<'a>>> {
    Ok(f.take(names, label)?.map(|r| Cow::Borrowed(r.text())))
}

#[inline(always)]
fn opt_object<'a>(f: &mut Fields<'a>, names: &[Key], label: &str) -> Res<Option<Text<'a>>> {
    match f.take(names, label)? {
        Some(r) if r.text().starts_with('{') => Ok(Some(Cow::Borrowed(r.text()))),
        Some(_) => reject(format!("field `{label}` must be an object")),
        None => Ok(None),
    }
}

/// `ts`: an RFC 3339 string or integer milliseconds since the Unix epoch.
fn ts_of(raw: Raw, label: &str) -> Res<i64> {
    let text = raw.text();
    if text.starts_with('"') {
        let s = str_of(raw, label)?;
        let t = chrono::DateTime::parse_from_rfc3339(&s).or_else(|e| {
            reject(format!(
                "field `{label}`: {s:?} is not an RFC 3339 timestamp ({e})"
            ))
        })?;
        return Ok(t.timestamp_millis());
    }
    let Some(ms) = i64_of(text) else {
        return reject(format!(
            "field `{label}` must be an RFC 3339 string or an integer of milliseconds since \
             the Unix epoch (got {})",
            truncate(text, 40)
        ));
    };
    if ms < MIN_TS_MS {
        return reject(format!(
            "field `{label}`: {ms} looks like seconds, not milliseconds, since the Unix epoch"
        ));
    }
    if ms > MAX_TS_MS {
        return reject(format!("field `{label}`: {ms} is past the year 9999"));
    }
    Ok(ms)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---- events ----------------------------------------------------------------------------------

fn event_from_fields<'a>(f: &mut Fields<'a>, run: &mut Option<Fields<'a>>) -> Res<EventRef<'a>> {
    let ty = match f.take(&[Key::Type], "type")? {
        Some(r) => str_of(r, "type")?,
        None => return reject("missing required field `type`"),
    };
    let run_id = opt_string(f, &[Key::RunId, Key::RunIdCamel], "run_id")?;
    let ts = f
        .take(&[Key::Ts], "ts")?
        .map(|r| ts_of(r, "ts"))
        .transpose()?;
    let id = opt_string(f, &[Key::Id], "id")?
        .map(|s| id_string(s, "id"))
        .transpose()?;

    if ty == "run.checkpoint" {
        return checkpoint(f, run, run_id, ts, id);
    }
    let Some(kind) = TypeKind::of(&ty) else {
        return reject(format!(
            "unknown type {ty:?} (expected one of: {})",
            crate::event::TYPES.join(", ")
        ));
    };
    let run_id = match run_id {
        Some(r) => id_string(r, "run_id")?,
        None => return reject("missing required field `run_id`"),
    };
    let Some(ts_ms) = ts else {
        return reject("missing required field `ts`");
    };
    let body = match kind {
        TypeKind::Started => {
            if f.take(&[Key::Run], "run")?.is_none() {
                return reject("missing required field `run`");
            }
            let (run, _) = run_fields(run_object(run)?, false)?;
            if run.operation.is_none() {
                return reject("missing required field `run.operation`");
            }
            BodyRef::Started { run: Box::new(run) }
        }
        TypeKind::Progress => {
            let path = req_string(f, &[Key::Path], "path")?;
            let Some(value) = f.take(&[Key::Value], "value")? else {
                // A present `null` is a value too.
                return reject("missing required field `value`");
            };
            let op = f
                .take(&[Key::Op], "op")?
                .map(|r| str_of(r, "op"))
                .transpose()?;
            let append = match op.as_deref() {
                None | Some("set") => false,
                Some("append") => true,
                Some(other) => {
                    return reject(format!(
                        "field `op` must be \"set\" or \"append\" (got {other:?})"
                    ))
                }
            };
            BodyRef::Progress {
                path,
                value: Cow::Borrowed(value.text()),
                append,
            }
        }
        TypeKind::Waiting => BodyRef::Waiting {
            step_id: req_string(f, &[Key::StepId, Key::StepIdCamel], "step_id")?,
            prompt: opt_string(f, &[Key::Prompt], "prompt")?,
        },
        TypeKind::Resumed => BodyRef::Resumed {
            step_id: req_string(f, &[Key::StepId, Key::StepIdCamel], "step_id")?,
            data: opt_json(f, &[Key::Data], "data")?,
        },
        TypeKind::Completed => BodyRef::Completed {
            output: opt_json(f, &[Key::Output], "output")?.unwrap_or(Cow::Borrowed("null")),
            duration_ms: opt_int(f, &[Key::DurationMs, Key::DurationMsCamel], "duration_ms")?,
        },
        TypeKind::Failed => {
            let Some(raw) = f.take(&[Key::Error], "error")? else {
                return reject("missing required field `error`");
            };
            BodyRef::Failed {
                error: Box::new(error_info(raw, "error")?),
                duration_ms: opt_int(f, &[Key::DurationMs, Key::DurationMsCamel], "duration_ms")?,
            }
        }
        TypeKind::Cancelled => BodyRef::Cancelled {
            reason: opt_string(f, &[Key::Reason], "reason")?,
        },
        TypeKind::Doc(change) => {
            let doctype = req_string(f, &[Key::Doctype], "doctype")?;
            let name = req_string(f, &[Key::Name], "name")?;
            let data = opt_object(f, &[Key::Data], "data")?;
            let before = opt_object(f, &[Key::Before], "before")?;
            BodyRef::Doc {
                change,
                doctype,
                name,
                data,
                before,
            }
        }
    };
    Ok(EventRef {
        ts_ms,
        run_id,
        id,
        body,
        extra: f.rest().map(Cow::Owned),
    })
}

enum TypeKind {
    Started,
    Progress,
    Waiting,
    Resumed,
    Completed,
    Failed,
    Cancelled,
    Doc(DocChange),
}

impl TypeKind {
    fn of(ty: &str) -> Option<Self> {
        Some(match ty {
            "run.started" => TypeKind::Started,
            "run.progress" => TypeKind::Progress,
            "run.waiting" => TypeKind::Waiting,
            "run.resumed" => TypeKind::Resumed,
            "run.completed" => TypeKind::Completed,
            "run.failed" => TypeKind::Failed,
            "run.cancelled" => TypeKind::Cancelled,
            "doc.created" => TypeKind::Doc(DocChange::Created),
            "doc.updated" => TypeKind::Doc(DocChange::Updated),
            "doc.deleted" => TypeKind::Doc(DocChange::Deleted),
            _ => return None,
        })
    }
}

/// `error`: an object with a string `message` (plus `code`, `stack`), or a plain string.
fn error_info<'a>(raw: Raw<'a>, label: &str) -> Res<ErrorInfoRef<'a>> {
    if raw.text().starts_with('"') {
        return Ok(ErrorInfoRef {
            message: str_of(raw, label)?,
            code: None,
            stack: None,
            extra: None,
        });
    }
    let mut fields = Fields::new();
    let f = &mut fields;
    if !matches!(f.read(raw.text(), None), Ok(true)) {
        return reject(format!(
            "field `{label}` must be an object with a string `message`, or a string"
        ));
    }
    let message = match f.take(&[Key::Message], "message")? {
        Some(r) => str_of(r, &format!("{label}.message"))?,
        None => return reject(format!("missing required field `{label}.message`")),
    };
    Ok(ErrorInfoRef {
        message,
        code: opt_json(f, &[Key::Code], &format!("{label}.code"))?,
        stack: opt_string(f, &[Key::Stack], &format!("{label}.stack"))?,
        extra: f.rest().map(Cow::Owned),
    })
}

/// Values taken out of a checkpoint's `run` object besides the context fields.
#[derive(Default)]
struct CheckpointExtras<'a> {
    id: Option<Text<'a>>,
    status: Option<Text<'a>>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    output: Option<Text<'a>>,
    error: Option<ErrorInfoRef<'a>>,
}

/// Reads the context fields of a `run` object, resolving every alias. With `checkpoint`, also
/// takes the context object's own `id`, `status`, `timestamp`, `duration`, `output`, `error`.
#[inline(always)]
fn run_fields<'a>(
    f: &mut Fields<'a>,
    checkpoint: bool,
) -> Res<(RunFieldsRef<'a>, CheckpointExtras<'a>)> {
    let mut extras = CheckpointExtras::default();
    if checkpoint {
        extras.id = opt_string(f, &[Key::Id], "run.id")?;
        extras.status = f
            .take(&[Key::Status], "run.status")?
            .map(|r| str_of(r, "run.status"))
            .transpose()?;
        extras.timestamp = f
            .take(&[Key::Timestamp], "run.timestamp")?
            .map(|r| ts_of(r, "run.timestamp"))
            .transpose()?;
        extras.duration = opt_int(f, &[Key::Duration, Key::DurationMs], "run.duration")?;
        extras.output = opt_json(f, &[Key::Output], "run.output")?;
        extras.error = f
            .take(&[Key::Error], "run.error")?
            .map(|r| error_info(r, "run.error"))
            .transpose()?;
    }
    let options = f.take(&[Key::Options], "run.options")?;
    // Aliases that live inside `options` (coworker passes them there).
    let (mut o_parent, mut o_chain, mut o_step_index) = (None, None, None);
    if let Some(o) = options {
        let mut of = Fields::new();
        object_of(&mut of, o, "run.options")?;
        o_parent = opt_string(&mut of, &[Key::ParentRunIdCamel], "run.options.parentRunId")?;
        o_chain = opt_string(&mut of, &[Key::ChainIdCamel], "run.options.chainId")?;
        o_step_index = opt_int(&mut of, &[Key::StepIndexCamel], "run.options.stepIndex")?;
    }
    let run = RunFieldsRef {
        operation: opt_string(f, &[Key::Operation], "run.operation")?,
        doctype: opt_string(f, &[Key::Doctype, Key::From, Key::Into], "run.doctype")?,
        template: opt_string(f, &[Key::Template], "run.template")?,
        flow: opt_string(f, &[Key::Flow], "run.flow")?,
        owner: opt_string(f, &[Key::Owner], "run.owner")?,
        agent: opt_string(f, &[Key::Agent], "run.agent")?,
        role: opt_string(f, &[Key::Role], "run.role")?,
        parent_run_id: opt_string(
            f,
            &[Key::ParentRunId, Key::ParentRunIdCamel],
            "run.parent_run_id",
        )?
        .or(o_parent),
        chain_id: opt_string(f, &[Key::ChainId, Key::ChainIdCamel], "run.chain_id")?.or(o_chain),
        step_id: opt_string(f, &[Key::StepId, Key::StepIdCamel], "run.step_id")?,
        step_index: opt_int(f, &[Key::StepIndex, Key::StepIndexCamel], "run.step_index")?
            .or(o_step_index),
        input: opt_json(f, &[Key::Input], "run.input")?,
        options: options.map(|o| Cow::Borrowed(o.text())),
        extra: f.rest().map(Cow::Owned),
    };
    Ok((run, extras))
}

fn checkpoint<'a>(
    f: &mut Fields<'a>,
    run: &mut Option<Fields<'a>>,
    run_id: Option<Text<'a>>,
    ts: Option<i64>,
    id: Option<Text<'a>>,
) -> Res<EventRef<'a>> {
    if f.take(&[Key::Run], "run")?.is_none() {
        return reject("missing required field `run`");
    }
    let (run, x) = run_fields(run_object(run)?, true)?;
    let run_id = match run_id.or(x.id) {
        Some(r) => id_string(r, "run_id")?,
        None => return reject("missing required field `run.id` (or `run_id`)"),
    };
    let Some(ts_ms) = ts.or(x.timestamp) else {
        return reject("missing required field `run.timestamp` (or `ts`)");
    };
    let status = match x.status.as_deref() {
        None => return reject("missing required field `run.status`"),
        Some(s) => match CheckpointStatus::parse(s) {
            Some(st) => st,
            None => {
                return reject(format!(
                    "field `run.status`: {s:?} is not one of pending, running, completed, failed, \
                 cancelled"
                ))
            }
        },
    };
    if status == CheckpointStatus::Failed && x.error.is_none() {
        return reject("missing required field `run.error` (a failed checkpoint needs one)");
    }
    let duration_ms =
        opt_int(f, &[Key::DurationMs, Key::DurationMsCamel], "duration_ms")?.or(x.duration);
    Ok(EventRef {
        ts_ms,
        run_id,
        id,
        body: BodyRef::Checkpoint {
            run: Box::new(run),
            status,
            output: x.output,
            error: x.error.map(Box::new),
            duration_ms,
        },
        extra: f.rest().map(Cow::Owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Body;

    fn ok(line: &str) -> Event {
        match parse_event(line) {
            Ok(e) => e,
            Err(r) => panic!("rejected: {r}: {line}"),
        }
    }
    fn err(line: &str) -> String {
        match parse_event(line) {
            Ok(e) => panic!("accepted: {e:?}"),
            Err(r) => r.0,
        }
    }

    #[test]
    fn started_with_aliases() {
        let e = ok(
            r#"{"type":"run.started","ts":"2025-11-21T04:40:00.010Z","run_id":"r-2","run":{"operation":"select","from":"Email","parentRunId":"wf-1","options":{"chainId":"wf-1","stepIndex":0},"input":{"where":{"unread":true}},"custom":1},"x":[1]}"#,
        );
        assert_eq!(e.ts_ms, 1_763_700_000_010);
        let Body::Started { run } = &e.body else {
            panic!()
        };
        assert_eq!(run.doctype.as_deref(), Some("Email"));
        assert_eq!(run.parent_run_id.as_deref(), Some("wf-1"));
        assert_eq!(run.chain_id.as_deref(), Some("wf-1"));
        assert_eq!(run.step_index, Some(0));
        assert_eq!(run.input.as_deref(), Some(r#"{"where":{"unread":true}}"#));
        assert_eq!(run.extra.as_deref(), Some(r#"{"custom":1}"#));
        assert_eq!(e.extra.as_deref(), Some(r#"{"x":[1]}"#));
    }

    #[test]
    fn checkpoint_defaults() {
        let e = ok(
            r#"{"type":"run.checkpoint","run":{"id":"ui-9","status":"failed","operation":"select","timestamp":1763700000050,"duration":3,"error":"boom"}}"#,
        );
        assert_eq!(e.run_id, "ui-9");
        assert_eq!(e.ts_ms, 1763700000050);
        let Body::Checkpoint {
            status,
            error,
            duration_ms,
            ..
        } = &e.body
        else {
            panic!()
        };
        assert_eq!(*status, CheckpointStatus::Failed);
        assert_eq!(error.as_ref().map(|e| e.message.as_str()), Some("boom"));
        assert_eq!(*duration_ms, Some(3));
    }

    #[test]
    fn rejections_name_the_field() {
        assert!(err("[1]").contains("not a JSON object"));
        assert!(err("{").contains("invalid JSON"));
        assert!(err(r#"{"run_id":"a","ts":1763700000000}"#).contains("`type`"));
        assert!(
            err(r#"{"type":"run.nope","run_id":"a","ts":1763700000000}"#).contains("unknown type")
        );
        assert!(err(r#"{"type":"run.completed","ts":1763700000000}"#).contains("`run_id`"));
        assert!(err(r#"{"type":"run.completed","run_id":"a"}"#).contains("`ts`"));
        assert!(
            err(r#"{"type":"run.completed","run_id":"a","ts":1763700000}"#).contains("seconds")
        );
        assert!(err(r#"{"type":"run.completed","run_id":"a","ts":1.5}"#).contains("RFC 3339"));
        assert!(
            err(r#"{"type":"run.completed","run_id":"a","ts":"yesterday"}"#).contains("RFC 3339")
        );
        assert!(
            err(r#"{"type":"run.started","run_id":"a","ts":1763700000000,"run":{}}"#)
                .contains("run.operation")
        );
        assert!(
            err(r#"{"type":"run.progress","run_id":"a","ts":1763700000000,"path":"x"}"#)
                .contains("`value`")
        );
        assert!(err(r#"{"type":"run.progress","run_id":"a","ts":1763700000000,"path":"x","value":1,"op":"add"}"#).contains("`op`"));
        assert!(
            err(r#"{"type":"run.failed","run_id":"a","ts":1763700000000,"error":{"code":1}}"#)
                .contains("error.message")
        );
        assert!(err(r#"{"type":"doc.created","run_id":"a","ts":1763700000000,"doctype":"Task","name":"T","data":[1]}"#).contains("`data`"));
        assert!(err(r#"{"type":"run.checkpoint","run":{"id":"a","timestamp":1763700000000,"status":"weird"}}"#).contains("run.status"));
        assert!(
            err(r#"{"type":"run.completed","run_id":"a","run_id":"b","ts":1763700000000}"#)
                .contains("duplicate")
        );
        let long = format!(
            r#"{{"type":"run.completed","run_id":"{}","ts":1763700000000}}"#,
            "x".repeat(300)
        );
        assert!(err(&long).contains("1 to 256 bytes"));
        assert!(parse_event_limited(
            r#"{"type":"run.cancelled","run_id":"a","ts":1763700000000}"#,
            10
        )
        .is_err_and(|r| r.0.contains("size limit")));
    }

    /// Every rejection reason, with the exact sentence a client sees.
    #[test]
    fn rejection_sentences() {
        let env = r#""run_id":"a","ts":1763700000000"#;
        let cases: &[(String, &str)] = &[
            ("[1]".into(), "not a JSON object"),
            ("\"x\"".into(), "not a JSON object"),
            ("{".into(), "invalid JSON: EOF while parsing an object (column 1)"),
            ("{\"a\":1,}".into(), "invalid JSON: trailing comma (column 8)"),
            ("{\"a\":01}".into(), "invalid JSON: invalid number (column 7)"),
            ("{} x".into(), "invalid JSON: trailing characters (column 4)"),
            ("1e400".into(), "invalid JSON: number out of range (column 5)"),
            (
                "{\"a\":1,\"a\":2}".into(),
                "invalid JSON: duplicate key `a` (column 10)",
            ),
            (
                "{\"\\ud800\":1}".into(),
                "invalid JSON: unexpected end of hex escape (column 9)",
            ),
            (
                format!(r#"{{{env}}}"#),
                "missing required field `type`",
            ),
            (
                format!(r#"{{"type":1,{env}}}"#),
                "field `type` must be a string",
            ),
            (
                r#"{"type":"run.cancelled","run_id":"a","runId":"b","ts":1763700000000}"#.into(),
                "field `run_id` is given twice (as `runId`)",
            ),
            (
                r#"{"type":"run.cancelled","run_id":"","ts":1763700000000}"#.into(),
                "field `run_id` must be 1 to 256 bytes long (it is 0)",
            ),
            (
                format!(r#"{{"type":"run.cancelled",{env},"id":"{}"}}"#, "x".repeat(257)),
                "field `id` must be 1 to 256 bytes long (it is 257)",
            ),
            (
                format!(r#"{{"type":"run.cancelled",{env},"reason":"\ud800"}}"#),
                "field `reason` must be a string",
            ),
            (
                r#"{"type":"run.cancelled","run_id":"a","ts":-0}"#.into(),
                "field `ts` must be an RFC 3339 string or an integer of milliseconds since the \
                 Unix epoch (got -0)",
            ),
            (
                r#"{"type":"run.cancelled","run_id":"a","ts":253402300800000}"#.into(),
                "field `ts`: 253402300800000 is past the year 9999",
            ),
            (
                r#"{"type":"run.cancelled","run_id":"a","ts":"2025-13-01T00:00:00Z"}"#.into(),
                "field `ts`: \"2025-13-01T00:00:00Z\" is not an RFC 3339 timestamp (input is out \
                 of range)",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":[]}}"#),
                "field `run` must be an object",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":{{"operation":"o","x":1,"x":2}}}}"#),
                "field `run` must be an object",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":{{"operation":"o","\udc00":1}}}}"#),
                "field `run` must be an object",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":{{"operation":"o","options":5}}}}"#),
                "field `run.options` must be an object",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":{{"operation":"o","stepIndex":1,"step_index":2}}}}"#),
                "field `run.step_index` is given twice (as `step_index`)",
            ),
            (
                format!(r#"{{"type":"run.started",{env},"run":{{"into":"a","from":"b","doctype":"c","operation":"o"}}}}"#),
                "field `run.doctype` is given twice (as `from`)",
            ),
            (
                format!(r#"{{"type":"run.progress",{env},"path":"","value":1}}"#),
                "field `path` must not be empty",
            ),
            (
                format!(r#"{{"type":"run.waiting",{env}}}"#),
                "missing required field `step_id`",
            ),
            (
                format!(r#"{{"type":"run.completed",{env},"duration_ms":1.5}}"#),
                "field `duration_ms` must be an integer",
            ),
            (
                format!(r#"{{"type":"run.failed",{env},"error":5}}"#),
                "field `error` must be an object with a string `message`, or a string",
            ),
            (
                format!(r#"{{"type":"doc.deleted",{env},"doctype":"T"}}"#),
                "missing required field `name`",
            ),
            (
                r#"{"type":"run.checkpoint","run":{"status":"running","timestamp":1763700000000}}"#.into(),
                "missing required field `run.id` (or `run_id`)",
            ),
            (
                r#"{"type":"run.checkpoint","run":{"id":"a","status":"running"}}"#.into(),
                "missing required field `run.timestamp` (or `ts`)",
            ),
            (
                r#"{"type":"run.checkpoint","run":{"id":"a","timestamp":1763700000000}}"#.into(),
                "missing required field `run.status`",
            ),
            (
                r#"{"type":"run.checkpoint","run":{"id":"a","status":"failed","timestamp":1763700000000}}"#.into(),
                "missing required field `run.error` (a failed checkpoint needs one)",
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), *reason, "{line}");
        }
    }

    #[test]
    fn unknown_fields_are_kept_in_order_with_keys_escaped_again() {
        let e = ok(
            r#"{"a":1,"type":"run.completed","p\u0061th":"x","run_id":"r","n\"q":[true],"ts":1763700000000,"\u00e9\n":{"k":"\ud800"},"output":2,"op":null}"#,
        );
        assert_eq!(
            e.extra.as_deref(),
            Some(r#"{"a":1,"path":"x","n\"q":[true],"é\n":{"k":"\ud800"},"op":null}"#)
        );
        let Body::Completed { output, .. } = &e.body else {
            panic!()
        };
        assert_eq!(output, "2");
    }

    #[test]
    fn values_keep_their_text_and_strings_are_decoded() {
        let e = ok(
            "{ \"type\" : \"run.progress\" ,\"run_id\":\"r\\u002d1\",\"ts\":\"2025-11-21T04:40:00.010+01:00\",\n\"path\":\"a.b\",\"value\":{ \"x\" : [1, 2.5e3, \"\\ud83d\\ude00\"] },\"op\":\"append\"}\n",
        );
        assert_eq!(e.run_id, "r-1");
        assert_eq!(e.ts_ms, 1_763_696_400_010);
        let Body::Progress { value, append, .. } = &e.body else {
            panic!()
        };
        assert_eq!(value, r#"{ "x" : [1, 2.5e3, "\ud83d\ude00"] }"#);
        assert!(*append);
    }

    #[test]
    fn deep_nesting_is_no_problem() {
        let deep = "[{\"a\":".repeat(50_000) + "1" + &"}]".repeat(50_000);
        let e = ok(&format!(
            r#"{{"type":"run.resumed","run_id":"a","ts":1763700000000,"step_id":"s","data":{deep}}}"#
        ));
        let Body::Resumed { data, .. } = &e.body else {
            panic!()
        };
        assert_eq!(data.as_deref(), Some(deep.as_str()));
        assert!(err(&format!(
            r#"{{"type":"run.cancelled","run_id":"a","ts":1763700000000,"x":{}}}"#,
            &deep[..deep.len() - 1]
        ))
        .starts_with("invalid JSON: expected `,` or `]`"));
        assert_eq!(
            err(&"[".repeat(100_000)),
            "invalid JSON: EOF while parsing a list (column 100000)"
        );
    }
}
