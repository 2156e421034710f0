//! The serde_json-based parser that `ledger::parse` replaced, kept verbatim as the reference the
//! current parser is compared with (only its imports and visibility are adapted).
//!
//! One pass of serde_json over the line: the object's keys are collected with their values as
//! borrowed raw JSON ([`RawValue`]), so values the ledger does not interpret are never turned
//! into trees; known fields are then checked one by one, each failure naming the field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use ledger::event::{Body, CheckpointStatus, DocChange, ErrorInfo, Event, JsonText, RunFields};
pub use ledger::Rejection;

/// Longest `run_id` / `id`, in bytes.
const MAX_ID_BYTES: usize = 256;
/// Integer `ts` values below this are seconds sent by mistake, not milliseconds.
const MIN_TS_MS: i64 = 100_000_000_000;
/// 9999-12-31T23:59:59.999Z: the last instant RFC 3339 can write.
const MAX_TS_MS: i64 = 253_402_300_799_999;

type Res<T> = Result<T, Rejection>;

fn reject<T>(msg: impl Into<String>) -> Res<T> {
    Err(Rejection(msg.into()))
}

/// Parses one event, rejecting it when it is longer than `max_bytes`.
pub fn parse_event_limited(line: &str, max_bytes: usize) -> Res<Event> {
    if line.len() > max_bytes {
        return reject(format!(
            "event is {} bytes, over the size limit of {} bytes",
            line.len(),
            max_bytes
        ));
    }
    let fields = parse_object(line).map_err(|e| Rejection(json_error(&e)))?;
    match fields {
        Some(f) => event_from_fields(f),
        None => reject("not a JSON object"),
    }
}

fn json_error(e: &serde_json::Error) -> String {
    // serde_json's messages end with "at line 1 column N"; within one NDJSON line the column is
    // what helps.
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => format!("invalid JSON: {} (column {})", &msg[..i], e.column()),
        None => format!("invalid JSON: {msg}"),
    }
}

/// Key/value pairs of one JSON object, values left as raw JSON.
struct Fields<'a> {
    pairs: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Fields<'a> {
    /// Removes and returns the value of the first of `names` present; a second spelling of the
    /// same field is an error (which one should win would be a guess).
    fn take(&mut self, names: &[&str], label: &str) -> Res<Option<&'a RawValue>> {
        let mut found: Option<(usize, &'a RawValue)> = None;
        let mut i = 0;
        while i < self.pairs.len() {
            if names.contains(&self.pairs[i].0.as_ref()) {
                let (k, v) = self.pairs.remove(i);
                if found.is_some() {
                    return reject(format!("field `{label}` is given twice (as `{k}`)"));
                }
                found = Some((i, v));
                continue;
            }
            i += 1;
        }
        // A JSON null means "not given".
        Ok(found.map(|(_, v)| v).filter(|v| v.get() != "null"))
    }

    /// The remaining (unknown) pairs as a JSON object text, or `None` when there are none.
    fn rest(self) -> Option<JsonText> {
        if self.pairs.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(64);
        out.push('{');
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::String(k.to_string()).to_string());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        Some(out)
    }
}

/// Parses `text` as a JSON object into raw pairs; `Ok(None)` when it is valid JSON but not an
/// object.
fn parse_object(text: &str) -> Result<Option<Fields<'_>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = (&mut de).deserialize_any(ObjectVisitor)?;
    de.end()?;
    Ok(out)
}

fn object_of<'a>(raw: &'a RawValue, label: &str) -> Res<Fields<'a>> {
    match parse_object(raw.get()) {
        Ok(Some(f)) => Ok(f),
        _ => reject(format!("field `{label}` must be an object")),
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Option<Fields<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(8);
        while let Some(k) = map.next_key_seed(KeySeed)? {
            if pairs.iter().any(|(p, _): &(Cow<str>, &RawValue)| *p == k) {
                return Err(de::Error::custom(format_args!("duplicate key `{k}`")));
            }
            let v: &'de RawValue = map.next_value()?;
            pairs.push((k, v));
        }
        Ok(Some(Fields { pairs }))
    }
    // Any other JSON value: valid JSON, but not an object.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Deserializes an object key without copying it when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

// ---- typed field readers ---------------------------------------------------------------------

fn string_of(raw: &RawValue, label: &str) -> Res<String> {
    serde_json::from_str::<String>(raw.get())
        .or_else(|_| reject(format!("field `{label}` must be a string")))
}

fn opt_string(f: &mut Fields, names: &[&str], label: &str) -> Res<Option<String>> {
    f.take(names, label)?
        .map(|r| string_of(r, label))
        .transpose()
}

fn req_string(f: &mut Fields, names: &[&str], label: &str) -> Res<String> {
    match opt_string(f, names, label)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => reject(format!("field `{label}` must not be empty")),
        None => reject(format!("missing required field `{label}`")),
    }
}

fn id_string(s: String, label: &str) -> Res<String> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return reject(format!(
            "field `{label}` must be 1 to {MAX_ID_BYTES} bytes long (it is {})",
            s.len()
        ));
    }
    Ok(s)
}

fn int_of(raw: &RawValue, label: &str) -> Res<i64> {
    serde_json::from_str::<i64>(raw.get())
        .or_else(|_| reject(format!("field `{label}` must be an integer")))
}

fn opt_int(f: &mut Fields, names: &[&str], label: &str) -> Res<Option<i64>> {
    f.take(names, label)?.map(|r| int_of(r, label)).transpose()
}

fn opt_json(f: &mut Fields, names: &[&str], label: &str) -> Res<Option<JsonText>> {
    Ok(f.take(names, label)?.map(|r| r.get().to_owned()))
}

fn opt_object(f: &mut Fields, names: &[&str], label: &str) -> Res<Option<JsonText>> {
    match f.take(names, label)? {
        Some(r) if r.get().starts_with('{') => Ok(Some(r.get().to_owned())),
        Some(_) => reject(format!("field `{label}` must be an object")),
        None => Ok(None),
    }
}

/// `ts`: an RFC 3339 string or integer milliseconds since the Unix epoch.
fn ts_of(raw: &RawValue, label: &str) -> Res<i64> {
    let text = raw.get();
    if text.starts_with('"') {
        let s = string_of(raw, label)?;
        let t = chrono::DateTime::parse_from_rfc3339(&s).or_else(|e| {
            reject(format!(
                "field `{label}`: {s:?} is not an RFC 3339 timestamp ({e})"
            ))
        })?;
        return Ok(t.timestamp_millis());
    }
    let ms = match serde_json::from_str::<i64>(text) {
        Ok(ms) => ms,
        Err(_) => {
            return reject(format!(
                "field `{label}` must be an RFC 3339 string or an integer of milliseconds since \
                 the Unix epoch (got {})",
                truncate(text, 40)
            ))
        }
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

fn event_from_fields(mut f: Fields) -> Res<Event> {
    let ty = match f.take(&["type"], "type")? {
        Some(r) => string_of(r, "type")?,
        None => return reject("missing required field `type`"),
    };
    let run_id = opt_string(&mut f, &["run_id", "runId"], "run_id")?;
    let ts = f.take(&["ts"], "ts")?.map(|r| ts_of(r, "ts")).transpose()?;
    let id = opt_string(&mut f, &["id"], "id")?
        .map(|s| id_string(s, "id"))
        .transpose()?;

    if ty == "run.checkpoint" {
        return checkpoint(f, run_id, ts, id);
    }
    let Some(kind) = TypeKind::of(&ty) else {
        return reject(format!(
            "unknown type {ty:?} (expected one of: {})",
            ledger::event::TYPES.join(", ")
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
            let Some(raw) = f.take(&["run"], "run")? else {
                return reject("missing required field `run`");
            };
            let (run, _) = run_fields(object_of(raw, "run")?, false)?;
            if run.operation.is_none() {
                return reject("missing required field `run.operation`");
            }
            Body::Started { run: Box::new(run) }
        }
        TypeKind::Progress => {
            let path = req_string(&mut f, &["path"], "path")?;
            let Some(value) = f.take(&["value"], "value")? else {
                // A present `null` is a value too.
                return reject("missing required field `value`");
            };
            let append = match opt_string(&mut f, &["op"], "op")?.as_deref() {
                None | Some("set") => false,
                Some("append") => true,
                Some(other) => {
                    return reject(format!(
                        "field `op` must be \"set\" or \"append\" (got {other:?})"
                    ))
                }
            };
            Body::Progress {
                path,
                value: value.get().to_owned(),
                append,
            }
        }
        TypeKind::Waiting => Body::Waiting {
            step_id: req_string(&mut f, &["step_id", "stepId"], "step_id")?,
            prompt: opt_string(&mut f, &["prompt"], "prompt")?,
        },
        TypeKind::Resumed => Body::Resumed {
            step_id: req_string(&mut f, &["step_id", "stepId"], "step_id")?,
            data: opt_json(&mut f, &["data"], "data")?,
        },
        TypeKind::Completed => Body::Completed {
            output: opt_json(&mut f, &["output"], "output")?.unwrap_or_else(|| "null".into()),
            duration_ms: opt_int(&mut f, &["duration_ms", "durationMs"], "duration_ms")?,
        },
        TypeKind::Failed => {
            let Some(raw) = f.take(&["error"], "error")? else {
                return reject("missing required field `error`");
            };
            Body::Failed {
                error: Box::new(error_info(raw, "error")?),
                duration_ms: opt_int(&mut f, &["duration_ms", "durationMs"], "duration_ms")?,
            }
        }
        TypeKind::Cancelled => Body::Cancelled {
            reason: opt_string(&mut f, &["reason"], "reason")?,
        },
        TypeKind::Doc(change) => {
            let doctype = req_string(&mut f, &["doctype"], "doctype")?;
            let name = req_string(&mut f, &["name"], "name")?;
            let data = opt_object(&mut f, &["data"], "data")?;
            let before = opt_object(&mut f, &["before"], "before")?;
            Body::Doc {
                change,
                doctype,
                name,
                data,
                before,
            }
        }
    };
    Ok(Event {
        ts_ms,
        run_id,
        id,
        body,
        extra: f.rest(),
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
fn error_info(raw: &RawValue, label: &str) -> Res<ErrorInfo> {
    if raw.get().starts_with('"') {
        return Ok(ErrorInfo {
            message: string_of(raw, label)?,
            code: None,
            stack: None,
            extra: None,
        });
    }
    let mut f = match parse_object(raw.get()) {
        Ok(Some(f)) => f,
        _ => {
            return reject(format!(
                "field `{label}` must be an object with a string `message`, or a string"
            ))
        }
    };
    let message = match f.take(&["message"], "message")? {
        Some(r) => string_of(r, &format!("{label}.message"))?,
        None => return reject(format!("missing required field `{label}.message`")),
    };
    Ok(ErrorInfo {
        message,
        code: opt_json(&mut f, &["code"], &format!("{label}.code"))?,
        stack: opt_string(&mut f, &["stack"], &format!("{label}.stack"))?,
        extra: f.rest(),
    })
}

/// Values taken out of a checkpoint's `run` object besides the context fields.
#[derive(Default)]
struct CheckpointExtras {
    id: Option<String>,
    status: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    output: Option<JsonText>,
    error: Option<ErrorInfo>,
}

/// Reads the context fields of a `run` object, resolving every alias. With `checkpoint`, also
/// takes the context object's own `id`, `status`, `timestamp`, `duration`, `output`, `error`.
fn run_fields(mut f: Fields, checkpoint: bool) -> Res<(RunFields, CheckpointExtras)> {
    let mut extras = CheckpointExtras::default();
    if checkpoint {
        extras.id = opt_string(&mut f, &["id"], "run.id")?;
        extras.status = opt_string(&mut f, &["status"], "run.status")?;
        extras.timestamp = f
            .take(&["timestamp"], "run.timestamp")?
            .map(|r| ts_of(r, "run.timestamp"))
            .transpose()?;
        extras.duration = opt_int(&mut f, &["duration", "duration_ms"], "run.duration")?;
        extras.output = opt_json(&mut f, &["output"], "run.output")?;
        extras.error = f
            .take(&["error"], "run.error")?
            .map(|r| error_info(r, "run.error"))
            .transpose()?;
    }
    let options = f.take(&["options"], "run.options")?;
    // Aliases that live inside `options` (coworker passes them there).
    let (mut o_parent, mut o_chain, mut o_step_index) = (None, None, None);
    if let Some(o) = options {
        let mut of = object_of(o, "run.options")?;
        o_parent = opt_string(&mut of, &["parentRunId"], "run.options.parentRunId")?;
        o_chain = opt_string(&mut of, &["chainId"], "run.options.chainId")?;
        o_step_index = opt_int(&mut of, &["stepIndex"], "run.options.stepIndex")?;
    }
    let run = RunFields {
        operation: opt_string(&mut f, &["operation"], "run.operation")?,
        doctype: opt_string(&mut f, &["doctype", "from", "into"], "run.doctype")?,
        template: opt_string(&mut f, &["template"], "run.template")?,
        flow: opt_string(&mut f, &["flow"], "run.flow")?,
        owner: opt_string(&mut f, &["owner"], "run.owner")?,
        agent: opt_string(&mut f, &["agent"], "run.agent")?,
        role: opt_string(&mut f, &["role"], "run.role")?,
        parent_run_id: opt_string(
            &mut f,
            &["parent_run_id", "parentRunId"],
            "run.parent_run_id",
        )?
        .or(o_parent),
        chain_id: opt_string(&mut f, &["chain_id", "chainId"], "run.chain_id")?.or(o_chain),
        step_id: opt_string(&mut f, &["step_id", "stepId"], "run.step_id")?,
        step_index: opt_int(&mut f, &["step_index", "stepIndex"], "run.step_index")?
            .or(o_step_index),
        input: opt_json(&mut f, &["input"], "run.input")?,
        options: options.map(|o| o.get().to_owned()),
        extra: f.rest(),
    };
    Ok((run, extras))
}

fn checkpoint(
    mut f: Fields,
    run_id: Option<String>,
    ts: Option<i64>,
    id: Option<String>,
) -> Res<Event> {
    let Some(raw) = f.take(&["run"], "run")? else {
        return reject("missing required field `run`");
    };
    let (run, x) = run_fields(object_of(raw, "run")?, true)?;
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
        opt_int(&mut f, &["duration_ms", "durationMs"], "duration_ms")?.or(x.duration);
    Ok(Event {
        ts_ms,
        run_id,
        id,
        body: Body::Checkpoint {
            run: Box::new(run),
            status,
            output: x.output,
            error: x.error.map(Box::new),
            duration_ms,
        },
        extra: f.rest(),
    })
}
