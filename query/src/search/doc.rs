//! What one run contributes to the index: the schema, and the document of a run built from its
//! folded state (projection) plus the parts of its events that the fold does not keep (waiting
//! prompts, resumed data, the records it changed).
//!
//! # What is indexed of huge values
//! Every string inside a JSON value (and every prompt) is indexed up to its first
//! [`MAX_TEXT_BYTES`] (64 KiB, cut at a character boundary). Each JSON field of a run (`input`,
//! `output`, `error`, `extra`, and all of its `resumed` data, records' `data`, records'
//! `before` taken together) is indexed up to [`MAX_FIELD_BYTES`] (256 KiB) of keys and
//! values, in document order; the run's `text` field (all of it together) up to
//! [`MAX_DOC_TEXT_BYTES`] (1 MiB). What comes after is not searchable. A 1 MiB payload
//! therefore costs at most 256 KiB of index input per field, whatever its shape (one huge
//! string, or an array of many small objects); a run records at most 1,000 changed records'
//! names in `text`.

use serde_json::Value;
use tantivy::schema::{
    Field, IndexRecordOption, JsonObjectOptions, OwnedValue, Schema, TextFieldIndexing,
    TextOptions, FAST, INDEXED, STORED, STRING,
};
use tantivy::TantivyDocument;

use ledger::event::ArchivedBody;
use ledger::event::ArchivedStoredEvent;
use ledger::project::{RunState, View};

use super::tokenizer;
use crate::Result;

/// Each string value is indexed up to this many bytes.
pub const MAX_TEXT_BYTES: usize = 64 << 10;
/// Each JSON field of a run is indexed up to this many bytes of keys and values.
pub const MAX_FIELD_BYTES: usize = 256 << 10;
/// The `text` field of a run holds up to this many bytes.
pub const MAX_DOC_TEXT_BYTES: usize = 1 << 20;
/// A run's document holds about this many bytes of text at most (its JSON fields plus `text`).
pub const MAX_DOC_WEIGHT: usize = 2 * MAX_DOC_TEXT_BYTES;

/// The fields of the index.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub run_id: Field,
    pub operation: Field,
    pub doctype: Field,
    pub status: Field,
    pub template: Field,
    pub owner: Field,
    pub agent: Field,
    /// The run's start (else its end, else its last event), ms: the time filters' key.
    pub started: Field,
    /// All the run's text, the default search field.
    pub text: Field,
    pub input: Field,
    pub output: Field,
    pub error: Field,
    pub data: Field,
    pub before: Field,
    pub resumed: Field,
    pub extra: Field,
}

impl Fields {
    /// The fields that hold the run's text (whose query terms a snippet highlights).
    pub fn text_fields(&self) -> [Field; 8] {
        [
            self.text,
            self.input,
            self.output,
            self.error,
            self.data,
            self.before,
            self.resumed,
            self.extra,
        ]
    }
}

/// Names of the searchable fields, for error messages and docs.
pub const FIELD_NAMES: &[&str] = &[
    "text",
    "input",
    "output",
    "error",
    "data",
    "before",
    "resumed",
    "extra",
    "run_id",
    "operation",
    "doctype",
    "status",
    "template",
    "owner",
    "agent",
    "started",
];

/// The schema of the index and its fields.
pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(tokenizer::NAME)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text_opts = TextOptions::default().set_indexing_options(indexing.clone());
    let json_opts = JsonObjectOptions::default()
        .set_indexing_options(indexing)
        .set_expand_dots_enabled();
    let fields = Fields {
        run_id: b.add_text_field("run_id", STRING | STORED),
        operation: b.add_text_field("operation", STRING | FAST),
        doctype: b.add_text_field("doctype", STRING | FAST),
        status: b.add_text_field("status", STRING | FAST),
        template: b.add_text_field("template", STRING | FAST),
        owner: b.add_text_field("owner", STRING | FAST),
        agent: b.add_text_field("agent", STRING | FAST),
        started: b.add_i64_field("started", INDEXED | FAST),
        text: b.add_text_field("text", text_opts),
        input: b.add_json_field("input", json_opts.clone()),
        output: b.add_json_field("output", json_opts.clone()),
        error: b.add_json_field("error", json_opts.clone()),
        data: b.add_json_field("data", json_opts.clone()),
        before: b.add_json_field("before", json_opts.clone()),
        resumed: b.add_json_field("resumed", json_opts.clone()),
        extra: b.add_json_field("extra", json_opts),
    };
    (b.build(), fields)
}

/// A record a run changed.
#[derive(Debug)]
struct DocPart {
    doctype: String,
    name: String,
}

/// What a run's events say that its folded state does not keep, bounded in size.
#[derive(Debug)]
pub struct Parts {
    prompts: Vec<String>,
    resumed: Vec<Value>,
    docs: Vec<DocPart>,
    data: Vec<Value>,
    before: Vec<Value>,
    prompt_budget: usize,
    resumed_budget: usize,
    data_budget: usize,
    before_budget: usize,
    weight: usize,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            prompts: Vec::new(),
            resumed: Vec::new(),
            docs: Vec::new(),
            data: Vec::new(),
            before: Vec::new(),
            prompt_budget: MAX_FIELD_BYTES,
            resumed_budget: MAX_FIELD_BYTES,
            data_budget: MAX_FIELD_BYTES,
            before_budget: MAX_FIELD_BYTES,
            weight: 0,
        }
    }
}

impl Parts {
    /// Takes what `ev` adds to its run's document.
    pub fn add(&mut self, ev: &ArchivedStoredEvent) {
        let w = match &ev.event.body {
            ArchivedBody::Started { run } => len(run.input.as_ref()) + len(run.extra.as_ref()),
            ArchivedBody::Checkpoint { run, output, .. } => {
                len(run.input.as_ref()) + len(run.extra.as_ref()) + len(output.as_ref())
            }
            ArchivedBody::Progress { value, .. } => value.len(),
            ArchivedBody::Completed { output, .. } => output.len(),
            ArchivedBody::Failed { error, .. } => {
                error.message.len() + len(error.stack.as_ref()) + len(error.extra.as_ref())
            }
            ArchivedBody::Waiting { prompt, .. } => len(prompt.as_ref()),
            ArchivedBody::Resumed { data, .. } => len(data.as_ref()),
            ArchivedBody::Doc { data, before, .. } => len(data.as_ref()) + len(before.as_ref()),
            ArchivedBody::Cancelled { reason } => len(reason.as_ref()),
        };
        self.weight = (self.weight + w.min(MAX_FIELD_BYTES)).min(MAX_DOC_WEIGHT);
        match &ev.event.body {
            ArchivedBody::Waiting {
                prompt: rkyv_prompt,
                ..
            } => {
                if let Some(p) = rkyv_prompt.as_ref() {
                    if self.prompt_budget > 0 {
                        let p = clip_str(p, MAX_TEXT_BYTES.min(self.prompt_budget));
                        self.prompt_budget -= p.len().min(self.prompt_budget);
                        self.prompts.push(p.to_owned());
                    }
                }
            }
            ArchivedBody::Resumed { data, .. } => {
                if let Some(v) = data
                    .as_ref()
                    .and_then(|d| bounded_json(d, &mut self.resumed_budget))
                {
                    self.resumed.push(v);
                }
            }
            ArchivedBody::Doc {
                doctype,
                name,
                data,
                before,
                ..
            } => {
                if self.docs.len() < 1000 {
                    self.docs.push(DocPart {
                        doctype: clip_str(doctype, 256).to_owned(),
                        name: clip_str(name, 256).to_owned(),
                    });
                }
                if let Some(v) = data
                    .as_ref()
                    .and_then(|d| bounded_json(d, &mut self.data_budget))
                {
                    self.data.push(v);
                }
                if let Some(v) = before
                    .as_ref()
                    .and_then(|d| bounded_json(d, &mut self.before_budget))
                {
                    self.before.push(v);
                }
            }
            _ => {}
        }
    }

    /// About how many bytes of text the run's document will hold, as far as the events
    /// added so far tell (bounded by [`MAX_DOC_WEIGHT`]): for bounding a batch's memory.
    pub fn weight(&self) -> usize {
        self.weight
    }

    /// The parts of a run, from all its events up to the view's seq.
    pub fn of_run(view: &View, run_id: &str) -> Result<Parts> {
        let mut parts = Parts::default();
        for seq in view.run_event_seqs(run_id)? {
            view.reader().with_event(seq, |ev| parts.add(ev))?;
        }
        Ok(parts)
    }
}

/// The length of an optional archived string.
fn len<S: std::ops::Deref<Target = str>>(t: Option<&S>) -> usize {
    t.map_or(0, |t| t.len())
}

/// The JSON values of a run's document, bounded.
struct Contents {
    input: Option<Value>,
    output: Option<Value>,
    error: Option<Value>,
    extra: Option<Value>,
}

impl Contents {
    fn of(st: &RunState) -> Contents {
        let take = |t: &Option<String>| {
            let mut budget = MAX_FIELD_BYTES;
            t.as_deref()
                .and_then(|t| bounded_json(t, &mut budget))
                .filter(|v| !v.is_null())
        };
        Contents {
            input: take(&st.fields.input),
            output: take(&st.output),
            error: take(&st.error),
            extra: take(&st.fields.extra),
        }
    }
}

/// The run's document for the index.
pub fn build(f: &Fields, st: &RunState, parts: Parts) -> TantivyDocument {
    let c = Contents::of(st);
    let text = text_of(&c, st, &parts);
    let mut doc = TantivyDocument::new();
    doc.add_text(f.run_id, &st.run_id);
    let strings = [
        (f.operation, &st.fields.operation),
        (f.doctype, &st.fields.doctype),
        (f.template, &st.fields.template),
        (f.template, &st.fields.flow),
        (f.owner, &st.fields.owner),
        (f.agent, &st.fields.agent),
    ];
    for (field, v) in strings {
        if let Some(v) = v {
            doc.add_text(field, v);
        }
    }
    doc.add_text(f.status, st.status().as_str());
    doc.add_i64(f.started, st.sort_key());
    let json = [
        (f.input, c.input),
        (f.output, c.output),
        (f.error, c.error),
        (f.extra, c.extra),
    ];
    for (field, v) in json {
        if let Some(v) = v {
            doc.add_field_value(field, &OwnedValue::from(v));
        }
    }
    for (field, vs) in [
        (f.resumed, parts.resumed),
        (f.data, parts.data),
        (f.before, parts.before),
    ] {
        for v in vs {
            doc.add_field_value(field, &OwnedValue::from(v));
        }
    }
    doc.add_text(f.text, text);
    doc
}

/// The run's text as the `text` field indexes it (and snippets are cut from).
pub fn run_text(st: &RunState, parts: &Parts) -> String {
    text_of(&Contents::of(st), st, parts)
}

fn text_of(c: &Contents, st: &RunState, parts: &Parts) -> String {
    let mut out = String::new();
    for v in [&c.input, &c.output, &c.error].into_iter().flatten() {
        push_text(&mut out, v);
    }
    if let Some(r) = &st.cancel_reason {
        push_line(&mut out, clip_str(r, MAX_TEXT_BYTES));
    }
    for p in &parts.prompts {
        push_line(&mut out, p);
    }
    for v in &parts.resumed {
        push_text(&mut out, v);
    }
    for d in &parts.docs {
        out.push_str(&d.doctype);
        out.push(' ');
        push_line(&mut out, &d.name);
    }
    for v in parts.data.iter().chain(&parts.before) {
        push_text(&mut out, v);
    }
    if let Some(v) = &c.extra {
        push_text(&mut out, v);
    }
    out
}

fn push_line(out: &mut String, s: &str) {
    let room = MAX_DOC_TEXT_BYTES.saturating_sub(out.len() + 1);
    let s = clip_str(s, room);
    if s.is_empty() {
        return;
    }
    out.push_str(s);
    out.push('\n');
}

/// Appends the string and number leaves of `v`, one per line.
fn push_text(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => push_line(out, s),
        Value::Number(n) => push_line(out, &n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| push_text(out, x)),
        Value::Object(m) => m.values().for_each(|x| push_text(out, x)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// The longest prefix of `s` of at most `max` bytes ending at a character boundary.
pub fn clip_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses JSON text and clips it to `budget` bytes (spending them); `None` when the budget is
/// spent or the text does not parse.
pub fn bounded_json(text: &str, budget: &mut usize) -> Option<Value> {
    if *budget == 0 {
        return None;
    }
    let mut v = ledger::json::value_of(text)?;
    clip(&mut v, budget);
    Some(v)
}

/// Clips `v` in place to `budget` bytes of keys and leaves; returns whether anything of it
/// was kept.
fn clip(v: &mut Value, budget: &mut usize) -> bool {
    if *budget == 0 {
        return false;
    }
    match v {
        Value::String(s) => {
            let keep = clip_str(s, MAX_TEXT_BYTES.min(*budget)).len();
            s.truncate(keep);
            *budget -= keep.max(1).min(*budget);
        }
        Value::Array(a) => {
            let mut kept = 0;
            for x in a.iter_mut() {
                if !clip(x, budget) {
                    break;
                }
                kept += 1;
            }
            a.truncate(kept);
        }
        Value::Object(m) => {
            m.retain(|k, x| {
                if *budget == 0 {
                    return false;
                }
                *budget -= k.len().min(*budget);
                clip(x, budget)
            });
        }
        Value::Number(_) | Value::Bool(_) | Value::Null => {
            *budget = budget.saturating_sub(8);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_str_keeps_char_boundaries() {
        assert_eq!(clip_str("請求書", 4), "請");
        assert_eq!(clip_str("abc", 10), "abc");
    }

    #[test]
    fn huge_values_are_bounded() {
        let big = "x ".repeat(1 << 20);
        let mut budget = MAX_FIELD_BYTES;
        let v = bounded_json(&serde_json::json!({ "a": big }).to_string(), &mut budget);
        let Some(Value::Object(m)) = v else {
            panic!("not an object")
        };
        assert_eq!(m["a"].as_str().map(str::len), Some(MAX_TEXT_BYTES));

        let many: Vec<Value> = (0..100_000)
            .map(|i| serde_json::json!({"n": format!("item {i}")}))
            .collect();
        let mut budget = MAX_FIELD_BYTES;
        let Some(Value::Array(a)) = bounded_json(&Value::Array(many).to_string(), &mut budget)
        else {
            panic!("not an array")
        };
        assert!(a.len() < 100_000 && a.len() > 1000, "{}", a.len());
        assert_eq!(budget, 0);
    }
}
