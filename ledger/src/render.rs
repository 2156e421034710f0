//! Stored events back to ingest format v1 JSON (snake_case, canonical field names), plus the
//! fields the ledger added. Re-ingesting the output gives the same projections.

use crate::event::{ArchivedBody, ArchivedErrorInfo, ArchivedRunFields, ArchivedStoredEvent};
use rkyv::option::ArchivedOption;
use rkyv::string::ArchivedString;

/// Formats ms since the Unix epoch as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// JSON-quotes a string.
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }
    fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.out.push_str(json);
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(&quote(v));
    }
    fn opt_str(&mut self, k: &str, v: &ArchivedOption<ArchivedString>) {
        if let Some(v) = v.as_ref() {
            self.str(k, v);
        }
    }
    fn opt_raw(&mut self, k: &str, v: &ArchivedOption<ArchivedString>) {
        if let Some(v) = v.as_ref() {
            self.raw(k, v);
        }
    }
    fn int(&mut self, k: &str, v: i64) {
        self.key(k);
        self.out.push_str(&v.to_string());
    }
    /// Splices the members of a JSON object text into this object.
    fn splice(&mut self, obj: &ArchivedOption<ArchivedString>) {
        if let Some(o) = obj.as_ref() {
            let inner = o.trim().trim_start_matches('{');
            let inner = inner.strip_suffix('}').unwrap_or(inner).trim();
            if !inner.is_empty() {
                if !self.first {
                    self.out.push(',');
                }
                self.first = false;
                self.out.push_str(inner);
            }
        }
    }
    fn end(self) {
        self.out.push('}');
    }
}

/// Appends the event as one JSON object: its ingest format v1 form, plus `seq` and
/// `ingested_at` when `ledger_fields` is set.
pub fn write_event_json(ev: &ArchivedStoredEvent, ledger_fields: bool, out: &mut String) {
    let e = &ev.event;
    let mut o = Obj::new(out);
    o.str("type", e.body.type_name());
    if ledger_fields {
        o.int("seq", ev.seq.to_native() as i64);
        o.str("ingested_at", &rfc3339(ev.ingested_ms.to_native()));
    }
    o.opt_str("id", &e.id);
    o.str("run_id", &e.run_id);
    o.str("ts", &rfc3339(e.ts_ms.to_native()));
    match &e.body {
        ArchivedBody::Started { run } => {
            o.key("run");
            run_json(run, o.out, None);
        }
        ArchivedBody::Progress {
            path,
            value,
            append,
        } => {
            o.str("path", path);
            o.raw("value", value);
            o.str("op", if *append { "append" } else { "set" });
        }
        ArchivedBody::Waiting { step_id, prompt } => {
            o.str("step_id", step_id);
            o.opt_str("prompt", prompt);
        }
        ArchivedBody::Resumed { step_id, data } => {
            o.str("step_id", step_id);
            o.opt_raw("data", data);
        }
        ArchivedBody::Completed {
            output,
            duration_ms,
        } => {
            o.raw("output", output);
            if let Some(d) = duration_ms.as_ref() {
                o.int("duration_ms", d.to_native());
            }
        }
        ArchivedBody::Failed { error, duration_ms } => {
            o.key("error");
            error_json(error, o.out);
            if let Some(d) = duration_ms.as_ref() {
                o.int("duration_ms", d.to_native());
            }
        }
        ArchivedBody::Cancelled { reason } => o.opt_str("reason", reason),
        ArchivedBody::Doc {
            doctype,
            name,
            data,
            before,
            ..
        } => {
            o.str("doctype", doctype);
            o.str("name", name);
            o.opt_raw("data", data);
            o.opt_raw("before", before);
        }
        ArchivedBody::Checkpoint {
            run,
            status,
            output,
            error,
            duration_ms,
        } => {
            o.key("run");
            run_json(
                run,
                o.out,
                Some((status.get().as_str(), output, error.as_ref().map(|e| &**e))),
            );
            if let Some(d) = duration_ms.as_ref() {
                o.int("duration_ms", d.to_native());
            }
        }
    }
    o.splice(&e.extra);
    o.end();
}

/// The event as a `serde_json::Value` (see [`write_event_json`]).
pub fn event_value(ev: &ArchivedStoredEvent, ledger_fields: bool) -> serde_json::Value {
    let mut s = String::with_capacity(256);
    write_event_json(ev, ledger_fields, &mut s);
    crate::json::value_or_null(Some(&s))
}

type CheckpointParts<'a> = (
    &'a str,
    &'a ArchivedOption<ArchivedString>,
    Option<&'a ArchivedErrorInfo>,
);

fn run_json(run: &ArchivedRunFields, out: &mut String, checkpoint: Option<CheckpointParts>) {
    let mut o = Obj::new(out);
    o.opt_str("operation", &run.operation);
    o.opt_str("doctype", &run.doctype);
    o.opt_str("template", &run.template);
    o.opt_str("flow", &run.flow);
    o.opt_str("owner", &run.owner);
    o.opt_str("agent", &run.agent);
    o.opt_str("role", &run.role);
    o.opt_str("parent_run_id", &run.parent_run_id);
    o.opt_str("chain_id", &run.chain_id);
    o.opt_str("step_id", &run.step_id);
    if let Some(i) = run.step_index.as_ref() {
        o.int("step_index", i.to_native());
    }
    o.opt_raw("input", &run.input);
    o.opt_raw("options", &run.options);
    if let Some((status, output, error)) = checkpoint {
        o.str("status", status);
        o.opt_raw("output", output);
        if let Some(e) = error {
            o.key("error");
            error_json(e, o.out);
        }
    }
    o.splice(&run.extra);
    o.end();
}

fn error_json(e: &ArchivedErrorInfo, out: &mut String) {
    let mut o = Obj::new(out);
    o.str("message", &e.message);
    o.opt_raw("code", &e.code);
    o.opt_str("stack", &e.stack);
    o.splice(&e.extra);
    o.end();
}
