//! Seeded, deterministic workload generator: realistic coworker traffic as ingest-format-v1
//! events (see `shared/spec/events.md`).
//!
//! The generator is a streaming [`Iterator`]: it builds one top-level run ("root") at a time,
//! merges the roots' events by client time (roots overlap), then delivers them through a small
//! reordering window and injects retried deliveries (duplicates). Memory stays bounded by the
//! window plus the events of the roots still in flight, so arbitrarily large workloads can be
//! streamed.
//!
//! Everything is derived from the seed with a private splitmix64 PRNG: the same
//! [`WorkloadConfig`] always yields the same lines. The event contents (ids, ts, runs, records)
//! depend only on `seed`, `roots`, `start_ms` and `with_templates`; `duplicate_rate` and
//! `reorder_window` only change the delivery.
//!
//! Traffic produced:
//! - Workflow Template records (`doc.created` of doctype `Workflow Template`) and later updates.
//! - Workflows following a template: step runs whose input is the template input resolved
//!   against earlier steps' recorded outputs (`{{step.output.data}}`, `{{prev.output.text}}`,
//!   `{{step.output.data.length}}`), steps skipped when their `if` is false; about 10% of the
//!   workflows diverge on purpose (a changed input, or a step run although its `if` was false).
//! - Chat chains linked step to step (`parent_run_id` = previous step, `chain_id` = root).
//! - Flows waiting for input (`run.waiting` / `run.resumed`, some cancelled, some left waiting).
//! - Failures, single CRUD runs, `run.checkpoint` context objects, records with second lives,
//!   camelCase aliases, RFC 3339 timestamps and unknown extra fields.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use serde_json::{json, Map, Value};

use crate::template::{eval_condition, resolve};

/// Parameters of a generated workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    /// Number of top-level runs (workflows, chat chains, single CRUD runs, AI steps, flows that wait).
    pub roots: usize,
    /// Client `ts` of the first event, ms since the Unix epoch.
    pub start_ms: i64,
    /// Fraction of events delivered a second time (same `id`, identical line: a retried delivery).
    pub duplicate_rate: f64,
    /// Events are delivered out of order within a sliding window of this many events (0 = in order):
    /// a child's events may come before its parent's run.started, a terminal event before its run.started.
    /// Client `ts` stays the true time.
    pub reorder_window: usize,
    /// Emit the Workflow Template records (doc.created of doctype "Workflow Template") first.
    pub with_templates: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            roots: 100,
            start_ms: 1_763_700_000_000,
            duplicate_rate: 0.02,
            reorder_window: 16,
            with_templates: true,
        }
    }
}

impl WorkloadConfig {
    /// A config with the given seed and number of roots, defaults for the rest.
    pub fn new(seed: u64, roots: usize) -> Self {
        Self {
            seed,
            roots,
            ..Self::default()
        }
    }
}

/// All lines of a workload, in delivery order, each without its newline.
pub fn ndjson_lines(cfg: &WorkloadConfig) -> Vec<String> {
    Workload::new(cfg.clone()).map(|v| v.to_string()).collect()
}

/// Writes the workload as NDJSON; returns the number of lines written.
pub fn write_ndjson(cfg: &WorkloadConfig, out: &mut impl std::io::Write) -> std::io::Result<u64> {
    let mut lines = 0u64;
    let mut buf = Vec::with_capacity(1024);
    for event in Workload::new(cfg.clone()) {
        buf.clear();
        serde_json::to_writer(&mut buf, &event)?;
        buf.push(b'\n');
        out.write_all(&buf)?;
        lines += 1;
    }
    Ok(lines)
}

/// A config that yields about `n_events` events (roots estimated from the average events per
/// root, measured on a sample of the same seed).
pub fn config_for_events(seed: u64, n_events: u64) -> WorkloadConfig {
    const SAMPLE_ROOTS: usize = 400;
    let base = WorkloadConfig::new(seed, 0);
    let fixed = Workload::new(base.clone()).count() as f64;
    let sample = Workload::new(WorkloadConfig {
        roots: SAMPLE_ROOTS,
        ..base.clone()
    })
    .count() as f64;
    let per_root = ((sample - fixed) / SAMPLE_ROOTS as f64).max(1.0);
    let wanted = (n_events as f64 - fixed).max(0.0);
    let roots = (wanted / per_root).round() as usize;
    WorkloadConfig {
        roots: if n_events > 0 { roots.max(1) } else { 0 },
        ..base
    }
}

// ---------------------------------------------------------------------------------------------
// PRNG

/// splitmix64: tiny, fast, good enough for synthetic traffic, identical on every platform.
#[derive(Clone, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (0 when n is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in [lo, hi] (inclusive).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below((hi - lo) as u64 + 1) as i64
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A random element; `items` must not be empty (all callers pass non-empty constants).
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary

const OWNERS: &[&str] = &["alice", "bob", "carol"];
const WORKFLOW_AGENTS: &[&str] = &["planner", "mailbot"];
const AI_AGENTS: &[&str] = &["planner", "mailbot", "summarizer", "triager"];
const TEMPLATE_NAMES: [&str; 4] = [
    "WT-email-to-tasks",
    "WT-summarize-inbox",
    "WT-onboard-customer",
    "WT-triage-tickets",
];
const TEMPLATE_DESCRIPTIONS: [&str; 4] = [
    "Turn unread emails into follow-up tasks",
    "Summarize the inbox into a digest note",
    "Welcome new customers and activate them",
    "Triage open tasks and purge closed ones",
];
const DOCTYPES: [&str; 4] = ["Task", "Email", "Customer", "Note"];
const CUSTOMERS: &[&str] = &[
    "ACME Corp",
    "Globex",
    "Initech",
    "Umbrella KK",
    "株式会社サクラ",
    "北京星辰科技",
    "Hooli",
    "Stark Industries",
];
const SENDERS: &[&str] = &[
    "billing@acme.example",
    "sora@sakura.example",
    "li.wei@xingchen.example",
    "ops@globex.example",
    "support@initech.example",
    "ceo@hooli.example",
];
const EMAIL_SUBJECTS: &[&str] = &[
    "invoice {inv} overdue",
    "Re: Q3 planning",
    "請求書を送ってください",
    "会议纪要を要約して",
    "Contract renewal for {cust}",
    "Shipment {inv} delayed",
    "发票 {inv} 已付款",
    "Lunch on Friday?",
    "Password reset request",
    "見積書の確認をお願いします",
    "Customer complaint: order {inv}",
    "Weekly report",
];
const TASK_SUBJECTS: &[&str] = &[
    "Follow up on invoice {inv}",
    "Call {cust} about renewal",
    "請求書 {inv} を送付する",
    "准备会议纪要",
    "Review contract draft for {cust}",
    "Fix onboarding checklist",
    "Reply to {cust}",
];
const NOTE_TITLES: &[&str] = &[
    "Meeting notes",
    "会議メモ",
    "Call summary",
    "客户反馈",
    "Renewal plan",
];
const USER_MESSAGES: &[&str] = &[
    "Can you find invoice 4471?",
    "Where is invoice {inv}?",
    "請求書を送ってください",
    "会议纪要を要約して",
    "Summarize my unread emails",
    "Create a task to call {cust} about invoice {inv}",
    "What did {cust} say about the renewal?",
    "来週の打ち合わせを設定して",
    "把发票 {inv} 发给财务",
];
const ASSISTANT_REPLIES: &[&str] = &[
    "I found invoice {inv} from {cust}; it is 12 days overdue.",
    "請求書 {inv} を {cust} に送信しました。",
    "会议纪要：讨论了发票 {inv} 和续约事宜，下一步由 bob 跟进。",
    "You have 3 unread emails; the most urgent is about invoice {inv}.",
    "Created a follow-up task for {cust}.",
    "{cust} asked for a 10% discount on the renewal.",
    "来週火曜日 10:00 に打ち合わせを設定しました。",
    "已将发票 {inv} 转发给财务部。",
];
const FLOWS: &[(&str, &str)] = &[
    ("FL-approve-invoice", "Send invoice {inv} to {cust}?"),
    ("FL-confirm-send", "Send this reply to {cust}?"),
    (
        "FL-collect-contact",
        "Which contact at {cust} should receive the contract?",
    ),
    ("FL-approve-refund", "返金 {inv} を承認しますか？"),
];
const CANCEL_REASONS: &[&str] = &[
    "user dismissed the prompt",
    "timed out waiting for input",
    "superseded by a newer run",
];

const LIVE_CAP: usize = 300;
const DEAD_CAP: usize = 64;

// ---------------------------------------------------------------------------------------------
// Internal model

/// An event waiting in the time-ordered merge of overlapping roots (min-heap on (ts, order)).
struct Pending {
    ts: i64,
    order: u64,
    value: Value,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.ts == other.ts && self.order == other.order
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.ts, other.order).cmp(&(self.ts, self.order))
    }
}

/// A live record; `last_ts` is the client time of its latest change (later runs only touch it
/// after that time, so every record's history stays causal in `ts`).
struct Rec {
    name: String,
    data: Map<String, Value>,
    last_ts: i64,
}

struct Pool {
    doctype: &'static str,
    counter: u64,
    live: Vec<Rec>,
    /// Deleted names with their deletion time: candidates for a second life.
    dead: VecDeque<(String, i64)>,
}

struct TemplateState {
    name: &'static str,
    versions: [Value; 2],
    current: usize,
}

#[derive(Clone, Default)]
struct RunSpec {
    operation: String,
    doctype: Option<String>,
    template: Option<&'static str>,
    flow: Option<&'static str>,
    owner: Option<&'static str>,
    agent: Option<&'static str>,
    role: Option<&'static str>,
    parent: Option<String>,
    chain: Option<String>,
    step_id: Option<String>,
    step_index: Option<usize>,
    input: Value,
    options: Option<Map<String, Value>>,
}

impl RunSpec {
    fn is_ai(&self) -> bool {
        matches!(self.operation.as_str(), "summarize" | "interpret")
            || (self.operation == "message" && self.role == Some("assistant"))
    }
}

struct Failure {
    message: String,
    code: &'static str,
}

struct Outcome {
    end: i64,
    output: Option<Value>,
    error: Option<String>,
}

struct DocEvent<'a> {
    kind: &'a str,
    doctype: &'a str,
    name: &'a str,
    data: Option<Map<String, Value>>,
    before: Option<Map<String, Value>>,
}

/// Streaming generator: yields events (serde_json::Value objects) in delivery order with bounded
/// memory (window + the roots in flight), so 10 million events never sit in memory at once.
pub struct Workload {
    cfg: WorkloadConfig,
    rng: SplitMix64,
    delivery: SplitMix64,
    event_counter: u64,
    run_counter: u64,
    order: u64,
    roots_done: usize,
    next_root_start: i64,
    templates_emitted: bool,
    templates: Vec<TemplateState>,
    pools: Vec<Pool>,
    batch: Vec<(i64, Value)>,
    heap: BinaryHeap<Pending>,
    window: VecDeque<(u64, Value)>,
    in_count: u64,
    out_count: u64,
    dups: Vec<(u64, Value)>,
}

impl Workload {
    pub fn new(cfg: WorkloadConfig) -> Self {
        let rng = SplitMix64::new(cfg.seed);
        let delivery = SplitMix64::new(cfg.seed.rotate_left(17) ^ 0xD1B5_4A32_D192_ED03);
        let templates = TEMPLATE_NAMES
            .iter()
            .map(|&name| TemplateState {
                name,
                versions: [template_steps(name, 0), template_steps(name, 1)],
                current: 0,
            })
            .collect();
        let pools = DOCTYPES
            .iter()
            .map(|&doctype| Pool {
                doctype,
                counter: 0,
                live: Vec::new(),
                dead: VecDeque::new(),
            })
            .collect();
        let next_root_start = cfg.start_ms + if cfg.with_templates { 200 } else { 0 };
        Self {
            cfg,
            rng,
            delivery,
            event_counter: 0,
            run_counter: 0,
            order: 0,
            roots_done: 0,
            next_root_start,
            templates_emitted: false,
            templates,
            pools,
            batch: Vec::new(),
            heap: BinaryHeap::new(),
            window: VecDeque::new(),
            in_count: 0,
            out_count: 0,
            dups: Vec::new(),
        }
    }

    // ----- delivery ---------------------------------------------------------------------------

    /// Next event in true time order (roots merged by ts, ties in generation order).
    fn merged_next(&mut self) -> Option<Value> {
        if !self.templates_emitted {
            self.templates_emitted = true;
            if self.cfg.with_templates {
                self.gen_templates();
            }
        }
        loop {
            let all_generated = self.roots_done >= self.cfg.roots;
            if let Some(top) = self.heap.peek() {
                if all_generated || top.ts < self.next_root_start {
                    return self.heap.pop().map(|p| p.value);
                }
            }
            if all_generated {
                return None;
            }
            self.gen_root();
        }
    }

    fn flush_batch(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        for (ts, value) in batch.drain(..) {
            self.order += 1;
            self.heap.push(Pending {
                ts,
                order: self.order,
                value,
            });
        }
        self.batch = batch;
    }

    // ----- event builders ---------------------------------------------------------------------

    fn next_event_id(&mut self) -> String {
        self.event_counter += 1;
        format!("e-{}-{}", self.cfg.seed, self.event_counter)
    }

    fn new_run_id(&mut self, prefix: &str) -> String {
        self.run_counter += 1;
        format!("{prefix}-{}", self.run_counter)
    }

    fn ts_value(&mut self, ms: i64) -> Value {
        let r = self.rng.unit();
        if r < 0.90 {
            Value::from(ms)
        } else if r < 0.97 {
            Value::String(rfc3339(ms, 0))
        } else {
            let offset = self.rng.pick(&[540, -300, 330, 60]);
            Value::String(rfc3339(ms, offset))
        }
    }

    fn envelope(&mut self, kind: &str, ts: i64, run_id: &str, with_id: bool) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(kind));
        if with_id {
            let id = self.next_event_id();
            m.insert("id".into(), Value::String(id));
        }
        let tsv = self.ts_value(ts);
        m.insert("ts".into(), tsv);
        m.insert("run_id".into(), Value::from(run_id));
        m
    }

    fn push(&mut self, ts: i64, mut m: Map<String, Value>) {
        if self.rng.chance(0.03) {
            let tag = format!("tt-{:06x}", self.rng.next_u64() & 0xff_ffff);
            m.insert("trace_tag".into(), Value::String(tag));
        }
        self.batch.push((ts, Value::Object(m)));
    }

    fn run_object(&mut self, s: &RunSpec) -> Value {
        let mut m = Map::new();
        m.insert("operation".into(), Value::from(s.operation.as_str()));
        if let Some(dt) = &s.doctype {
            let key = if self.rng.chance(0.15) {
                if s.operation == "create" {
                    "into"
                } else {
                    "from"
                }
            } else {
                "doctype"
            };
            m.insert(key.into(), Value::from(dt.as_str()));
        }
        if let Some(t) = s.template {
            m.insert("template".into(), Value::from(t));
        }
        if let Some(f) = s.flow {
            m.insert("flow".into(), Value::from(f));
        }
        if let Some(o) = s.owner {
            m.insert("owner".into(), Value::from(o));
        }
        if let Some(a) = s.agent {
            m.insert("agent".into(), Value::from(a));
        }
        if let Some(r) = s.role {
            m.insert("role".into(), Value::from(r));
        }
        let mut options = s.options.clone().unwrap_or_default();
        let linked = s.parent.is_some() || s.chain.is_some() || s.step_index.is_some();
        // 0: snake_case, 1: camelCase aliases, 2: inside `options` (camelCase).
        let style = if !linked {
            0
        } else {
            let r = self.rng.unit();
            if r < 0.75 {
                0
            } else if r < 0.93 {
                1
            } else {
                2
            }
        };
        let (k_parent, k_chain, k_index) = match style {
            0 => ("parent_run_id", "chain_id", "step_index"),
            _ => ("parentRunId", "chainId", "stepIndex"),
        };
        {
            let target = if style == 2 { &mut options } else { &mut m };
            if let Some(p) = &s.parent {
                target.insert(k_parent.into(), Value::from(p.as_str()));
            }
            if let Some(c) = &s.chain {
                target.insert(k_chain.into(), Value::from(c.as_str()));
            }
        }
        if let Some(sid) = &s.step_id {
            let key = if style == 1 { "stepId" } else { "step_id" };
            m.insert(key.into(), Value::from(sid.as_str()));
        }
        if let Some(i) = s.step_index {
            let target = if style == 2 { &mut options } else { &mut m };
            target.insert(k_index.into(), Value::from(i));
        }
        m.insert("input".into(), s.input.clone());
        if !options.is_empty() || self.rng.chance(0.3) {
            m.insert("options".into(), Value::Object(options));
        }
        Value::Object(m)
    }

    fn emit_started(&mut self, ts: i64, run_id: &str, spec: &RunSpec) {
        let run = self.run_object(spec);
        let mut m = self.envelope("run.started", ts, run_id, true);
        m.insert("run".into(), run);
        self.push(ts, m);
    }

    fn emit_progress(&mut self, ts: i64, run_id: &str, path: &str, value: Value, op: Option<&str>) {
        let with_id = !self.rng.chance(0.05);
        let mut m = self.envelope("run.progress", ts, run_id, with_id);
        m.insert("path".into(), Value::from(path));
        if let Some(op) = op {
            m.insert("op".into(), Value::from(op));
        }
        m.insert("value".into(), value);
        self.push(ts, m);
    }

    fn emit_completed(&mut self, ts: i64, run_id: &str, output: Value, duration: i64) {
        let mut m = self.envelope("run.completed", ts, run_id, true);
        m.insert("output".into(), output);
        m.insert("duration_ms".into(), Value::from(duration));
        self.push(ts, m);
    }

    fn emit_failed(&mut self, ts: i64, run_id: &str, message: &str, code: &str, duration: i64) {
        let mut m = self.envelope("run.failed", ts, run_id, true);
        m.insert("error".into(), json!({"message": message, "code": code}));
        m.insert("duration_ms".into(), Value::from(duration));
        self.push(ts, m);
    }

    fn emit_cancelled(&mut self, ts: i64, run_id: &str, reason: &str) {
        let mut m = self.envelope("run.cancelled", ts, run_id, true);
        m.insert("reason".into(), Value::from(reason));
        self.push(ts, m);
    }

    fn emit_waiting(&mut self, ts: i64, run_id: &str, step_id: &str, prompt: &str) {
        let mut m = self.envelope("run.waiting", ts, run_id, true);
        m.insert("step_id".into(), Value::from(step_id));
        m.insert("prompt".into(), Value::from(prompt));
        self.push(ts, m);
    }

    fn emit_resumed(&mut self, ts: i64, run_id: &str, step_id: &str, data: Value) {
        let mut m = self.envelope("run.resumed", ts, run_id, true);
        m.insert("step_id".into(), Value::from(step_id));
        m.insert("data".into(), data);
        self.push(ts, m);
    }

    fn emit_doc(&mut self, ts: i64, run_id: &str, doc: DocEvent<'_>) {
        let mut m = self.envelope(doc.kind, ts, run_id, true);
        m.insert("doctype".into(), Value::from(doc.doctype));
        m.insert("name".into(), Value::from(doc.name));
        if let Some(d) = doc.data {
            m.insert("data".into(), Value::Object(d));
        }
        if let Some(b) = doc.before {
            m.insert("before".into(), Value::Object(b));
        }
        self.push(ts, m);
    }

    fn emit_checkpoint(&mut self, ts: i64, ctx: Map<String, Value>) {
        let mut m = Map::new();
        m.insert("type".into(), Value::from("run.checkpoint"));
        let id = self.next_event_id();
        m.insert("id".into(), Value::String(id));
        m.insert("run".into(), Value::Object(ctx));
        self.push(ts, m);
    }

    // ----- helpers ----------------------------------------------------------------------------

    fn fill(&mut self, tpl: &str) -> String {
        let mut s = tpl.to_string();
        if s.contains("{inv}") {
            let inv = self.rng.range(1000, 9999);
            s = s.replace("{inv}", &inv.to_string());
        }
        if s.contains("{cust}") {
            let c = self.rng.pick(CUSTOMERS);
            s = s.replace("{cust}", c);
        }
        s
    }

    /// Per-operation latency in ms with a skewed distribution and occasional 10x outliers.
    fn latency(&mut self, op: &str) -> i64 {
        let (lo, hi) = match op {
            "select" => (2, 20),
            "summarize" => (300, 4000),
            "interpret" => (200, 2500),
            "create" | "update" => (5, 40),
            "delete" => (3, 25),
            "message" => (1, 10),
            _ => (5, 50),
        };
        let u = self.rng.unit();
        let mut ms = lo + ((hi - lo) as f64 * u * u).round() as i64;
        if self.rng.chance(0.015) {
            ms *= 10;
        }
        ms.max(1)
    }

    fn failure_for(&mut self, op: &str) -> Failure {
        let (message, code) = match op {
            "summarize" | "interpret" | "message" if self.rng.chance(0.5) => {
                ("rate limited (429)", "RATE_LIMITED")
            }
            "summarize" | "interpret" | "message" => ("timeout after 30000ms", "TIMEOUT"),
            "create" | "update" => ("validation failed: subject is required", "VALIDATION"),
            _ => ("timeout after 30000ms", "TIMEOUT"),
        };
        Failure {
            message: message.to_string(),
            code,
        }
    }

    fn new_record_name(&mut self, pi: usize, ts: i64) -> String {
        let reuse = self.rng.chance(0.3);
        let pool = &mut self.pools[pi];
        if reuse {
            if let Some(pos) = pool.dead.iter().position(|(_, at)| *at < ts) {
                if let Some((name, _)) = pool.dead.remove(pos) {
                    return name;
                }
            }
        }
        pool.counter += 1;
        format!("{}-{:05}", pool.doctype, pool.counter)
    }

    fn new_data(&mut self, doctype: &str) -> Map<String, Value> {
        let mut m = Map::new();
        match doctype {
            "Task" => {
                let subject = self.rng.pick(TASK_SUBJECTS);
                m.insert("subject".into(), Value::String(self.fill(subject)));
                let prio = self.rng.pick(&["Low", "Medium", "High"]);
                m.insert("priority".into(), Value::from(prio));
            }
            "Email" => {
                let subject = self.rng.pick(EMAIL_SUBJECTS);
                m.insert("subject".into(), Value::String(self.fill(subject)));
                m.insert("sender".into(), Value::from(self.rng.pick(SENDERS)));
                m.insert("folder".into(), Value::from("inbox"));
            }
            "Customer" => {
                m.insert(
                    "customer_name".into(),
                    Value::from(self.rng.pick(CUSTOMERS)),
                );
                let seg = self.rng.pick(&["SMB", "Enterprise", "Startup"]);
                m.insert("segment".into(), Value::from(seg));
            }
            _ => {
                m.insert("title".into(), Value::from(self.rng.pick(NOTE_TITLES)));
                let reply = self.rng.pick(ASSISTANT_REPLIES);
                m.insert("content".into(), Value::String(self.fill(reply)));
            }
        }
        m
    }

    fn change_for(&mut self, doctype: &str, data: &Map<String, Value>) -> Map<String, Value> {
        let mut m = Map::new();
        let cur = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match doctype {
            "Task" => {
                if self.rng.chance(0.75) {
                    let next = match cur("status").as_str() {
                        "Open" => self.rng.pick(&["Triaged", "Closed"]),
                        "Triaged" => "Closed",
                        _ => "Open",
                    };
                    m.insert("status".into(), Value::from(next));
                } else {
                    let next = if cur("priority") == "High" {
                        "Medium"
                    } else {
                        "High"
                    };
                    m.insert("priority".into(), Value::from(next));
                }
            }
            "Email" => {
                if data.get("unread") == Some(&Value::Bool(true)) {
                    m.insert("unread".into(), Value::Bool(false));
                } else if cur("folder") == "archive" {
                    m.insert("folder".into(), Value::from("inbox"));
                } else {
                    m.insert("folder".into(), Value::from("archive"));
                }
            }
            "Customer" => {
                let next = match cur("status").as_str() {
                    "Lead" => "Active",
                    "Active" => "Churned",
                    _ => "Active",
                };
                m.insert("status".into(), Value::from(next));
            }
            _ => {
                let reply = self.rng.pick(ASSISTANT_REPLIES);
                let content = format!("Updated: {}", self.fill(reply));
                m.insert("content".into(), Value::String(content));
            }
        }
        m
    }

    /// Indices of live records of pool `pi` that may be touched at `ts`, newest first.
    fn candidates(&self, pi: usize, ts: i64, input: &Value, max: usize) -> Vec<usize> {
        let name = input.get("name").and_then(Value::as_str);
        let filter = input.get("where").and_then(Value::as_object);
        let mut out = Vec::new();
        // Queries look at the most recent records only (records are small maps: linear lookups).
        let scan = if name.is_some() { usize::MAX } else { 120 };
        for (i, rec) in self.pools[pi].live.iter().enumerate().rev().take(scan) {
            if rec.last_ts >= ts {
                continue;
            }
            if let Some(n) = name {
                if rec.name != n {
                    continue;
                }
            }
            if let Some(w) = filter {
                if !w
                    .iter()
                    .all(|(k, v)| rec.data.iter().any(|(rk, rv)| rk == k && rv == v))
                {
                    continue;
                }
            }
            out.push(i);
            if out.len() >= max {
                break;
            }
        }
        out
    }

    fn record_value(&self, pi: usize, i: usize) -> Value {
        let rec = &self.pools[pi].live[i];
        let mut m = Map::new();
        m.insert("name".into(), Value::from(rec.name.as_str()));
        for (k, v) in &rec.data {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    fn ai_text(&mut self, input: &Value) -> String {
        let instruction = input
            .get("instruction")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match input.get("text") {
            Some(Value::Array(items)) => {
                let labels: Vec<String> = items.iter().filter_map(record_label).collect();
                if labels.is_empty() {
                    "Nothing to summarize: no new items.".to_string()
                } else if instruction.contains("welcome") {
                    format!(
                        "Dear {}, welcome to Acme Cloud! Your workspace is ready and we will call you this week.",
                        labels.join(" and ")
                    )
                } else if instruction.contains("priorit") {
                    format!(
                        "High: {}. Medium: {}.",
                        labels[0],
                        if labels.len() > 1 {
                            labels[1..].join("; ")
                        } else {
                            "none".to_string()
                        }
                    )
                } else {
                    format!(
                        "{} new item{}: {}. Suggested next step: follow up on {}.",
                        labels.len(),
                        if labels.len() == 1 { "" } else { "s" },
                        labels.join("; "),
                        labels[0]
                    )
                }
            }
            Some(Value::String(_)) => {
                let reply = self.rng.pick(ASSISTANT_REPLIES);
                self.fill(reply)
            }
            _ => "OK.".to_string(),
        }
    }

    /// Streamed tokens: several `append`s to `output.text` spread over the run.
    fn stream_text(&mut self, run_id: &str, start: i64, end: i64, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let k = (self.rng.range(3, 9) as usize).min(chars.len().max(1));
        let dur = (end - start).max(1);
        for j in 0..k {
            let a = chars.len() * j / k;
            let b = chars.len() * (j + 1) / k;
            let piece: String = chars[a..b].iter().collect();
            let ts = start + 1 + (dur - 1) * (j as i64 + 1) / (k as i64 + 1);
            self.emit_progress(
                ts,
                run_id,
                "output.text",
                Value::String(piece),
                Some("append"),
            );
        }
        if self.rng.chance(0.25) {
            let ts = start + dur - 1;
            let tokens = (chars.len() / 3).max(1);
            self.emit_progress(
                ts.max(start + 1),
                run_id,
                "output.tokens",
                Value::from(tokens),
                None,
            );
        }
    }

    // ----- operations -------------------------------------------------------------------------

    /// Emits the body of an operation (streamed tokens, doc events) between `start` and `end`
    /// and returns its output, or the failure it ran into.
    fn op_body(
        &mut self,
        run_id: &str,
        spec: &RunSpec,
        start: i64,
        end: i64,
    ) -> Result<Value, Failure> {
        let pool = spec.doctype.as_deref().and_then(pool_index);
        match spec.operation.as_str() {
            "select" => {
                let mut data = Vec::new();
                if let Some(pi) = pool {
                    if !self.rng.chance(0.2) {
                        for i in self.candidates(pi, start, &spec.input, 3) {
                            data.push(self.record_value(pi, i));
                        }
                    }
                }
                Ok(json!({ "data": data }))
            }
            "summarize" | "interpret" | "message" if spec.is_ai() => {
                let text = self.ai_text(&spec.input);
                self.stream_text(run_id, start, end, &text);
                Ok(json!({ "text": text }))
            }
            "message" => {
                Ok(json!({ "text": spec.input.get("text").cloned().unwrap_or(Value::Null) }))
            }
            "create" => match pool {
                Some(pi) => self.create_record(run_id, pi, &spec.input, start, end),
                None => Ok(json!({ "data": [] })),
            },
            "update" => Ok(match pool {
                Some(pi) => self.update_records(run_id, pi, &spec.input, start, end),
                None => json!({ "data": [] }),
            }),
            "delete" => Ok(match pool {
                Some(pi) => self.delete_records(run_id, pi, &spec.input, start, end),
                None => json!({ "data": [] }),
            }),
            _ => Ok(json!({})),
        }
    }

    fn create_record(
        &mut self,
        run_id: &str,
        pi: usize,
        input: &Value,
        start: i64,
        end: i64,
    ) -> Result<Value, Failure> {
        let doctype = DOCTYPES[pi];
        let mut data = match input.get("data") {
            Some(Value::Object(d)) => d.clone(),
            _ => {
                return Err(Failure {
                    message: "validation failed: data is required".into(),
                    code: "VALIDATION",
                })
            }
        };
        let required = match doctype {
            "Task" | "Email" => "subject",
            "Customer" => "customer_name",
            _ => "title",
        };
        if data
            .get(required)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(Failure {
                message: format!("validation failed: {required} is required"),
                code: "VALIDATION",
            });
        }
        let defaults: &[(&str, Value)] = match doctype {
            "Task" => &[("status", Value::Null), ("priority", Value::Null)],
            "Email" => &[("unread", Value::Null)],
            "Customer" => &[("status", Value::Null)],
            _ => &[],
        };
        for (k, _) in defaults {
            if !data.contains_key(*k) {
                let v = match (doctype, *k) {
                    ("Task", "status") => json!("Open"),
                    ("Task", "priority") => json!("Medium"),
                    ("Email", "unread") => json!(true),
                    _ => json!("Lead"),
                };
                data.insert((*k).into(), v);
            }
        }
        let ts = start + ((end - start) / 2).max(1);
        let name = self.new_record_name(pi, ts);
        self.emit_doc(
            ts,
            run_id,
            DocEvent {
                kind: "doc.created",
                doctype,
                name: &name,
                data: Some(data.clone()),
                before: None,
            },
        );
        let mut out = Map::new();
        out.insert("name".into(), Value::from(name.as_str()));
        for (k, v) in &data {
            out.insert(k.clone(), v.clone());
        }
        let pool = &mut self.pools[pi];
        pool.live.push(Rec {
            name,
            data,
            last_ts: ts,
        });
        if pool.live.len() > LIVE_CAP {
            pool.live.remove(0);
        }
        Ok(json!({ "data": [Value::Object(out)] }))
    }

    fn update_records(
        &mut self,
        run_id: &str,
        pi: usize,
        input: &Value,
        start: i64,
        end: i64,
    ) -> Value {
        let doctype = DOCTYPES[pi];
        let targets = self.candidates(pi, start, input, 3);
        let changes = input
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let n = targets.len() as i64;
        let mut names = Vec::new();
        for (k, &i) in targets.iter().enumerate() {
            let ts = spread(start, end, k as i64, n);
            let rec = &mut self.pools[pi].live[i];
            let mut changed = Map::new();
            let mut before = Map::new();
            for (key, v) in &changes {
                let old = rec.data.get(key).cloned().unwrap_or(Value::Null);
                if old != *v {
                    before.insert(key.clone(), old);
                    changed.insert(key.clone(), v.clone());
                }
            }
            if changed.is_empty() {
                continue;
            }
            for (key, v) in &changed {
                rec.data.insert(key.clone(), v.clone());
            }
            rec.last_ts = ts;
            let name = rec.name.clone();
            names.push(json!({ "name": name }));
            self.emit_doc(
                ts,
                run_id,
                DocEvent {
                    kind: "doc.updated",
                    doctype,
                    name: &name,
                    data: Some(changed),
                    before: Some(before),
                },
            );
        }
        json!({ "data": names })
    }

    fn delete_records(
        &mut self,
        run_id: &str,
        pi: usize,
        input: &Value,
        start: i64,
        end: i64,
    ) -> Value {
        let doctype = DOCTYPES[pi];
        let targets: Vec<String> = self
            .candidates(pi, start, input, 2)
            .into_iter()
            .map(|i| self.pools[pi].live[i].name.clone())
            .collect();
        let n = targets.len() as i64;
        let mut names = Vec::new();
        for (k, name) in targets.iter().enumerate() {
            let ts = spread(start, end, k as i64, n);
            let Some(pos) = self.pools[pi].live.iter().position(|r| &r.name == name) else {
                continue;
            };
            let rec = self.pools[pi].live.remove(pos);
            let before = if self.rng.chance(0.5) {
                Some(rec.data)
            } else {
                None
            };
            self.emit_doc(
                ts,
                run_id,
                DocEvent {
                    kind: "doc.deleted",
                    doctype,
                    name,
                    data: None,
                    before,
                },
            );
            names.push(json!({ "name": name }));
            let pool = &mut self.pools[pi];
            pool.dead.push_back((rec.name, ts));
            if pool.dead.len() > DEAD_CAP {
                pool.dead.pop_front();
            }
        }
        json!({ "data": names })
    }

    /// A whole run: run.started, its body, and its terminal event.
    fn run_op(
        &mut self,
        run_id: &str,
        spec: &RunSpec,
        start: i64,
        fail: Option<Failure>,
    ) -> Outcome {
        self.emit_started(start, run_id, spec);
        let mut lat = self.latency(&spec.operation);
        if let Some(f) = fail {
            if f.code == "TIMEOUT" {
                lat = 30_000 + self.rng.range(0, 40);
            }
            let end = start + lat;
            if spec.is_ai() && self.rng.chance(0.5) {
                let ts = start + (lat / 3).max(1);
                self.emit_progress(
                    ts,
                    run_id,
                    "output.text",
                    json!("Looking at "),
                    Some("append"),
                );
            }
            self.emit_failed(end, run_id, &f.message, f.code, lat);
            return Outcome {
                end,
                output: None,
                error: Some(f.message),
            };
        }
        let end = start + lat;
        match self.op_body(run_id, spec, start, end) {
            Ok(output) => {
                self.emit_completed(end, run_id, output.clone(), lat);
                Outcome {
                    end,
                    output: Some(output),
                    error: None,
                }
            }
            Err(f) => {
                self.emit_failed(end, run_id, &f.message, f.code, lat);
                Outcome {
                    end,
                    output: None,
                    error: Some(f.message),
                }
            }
        }
    }

    // ----- roots ------------------------------------------------------------------------------

    fn gen_templates(&mut self) {
        let mut t = self.cfg.start_ms;
        for (ti, description) in TEMPLATE_DESCRIPTIONS.iter().enumerate() {
            let name = self.templates[ti].name;
            let steps = self.templates[ti].versions[0].clone();
            let run_id = self.new_run_id("tpl");
            let mut data = Map::new();
            data.insert("description".into(), Value::from(*description));
            data.insert("steps".into(), steps);
            let spec = RunSpec {
                operation: "create".into(),
                doctype: Some("Workflow Template".into()),
                owner: Some("alice"),
                input: json!({ "name": name, "data": Value::Object(data.clone()) }),
                ..RunSpec::default()
            };
            self.emit_started(t, &run_id, &spec);
            let doc_ts = t + self.rng.range(1, 4);
            self.emit_doc(
                doc_ts,
                &run_id,
                DocEvent {
                    kind: "doc.created",
                    doctype: "Workflow Template",
                    name,
                    data: Some(data),
                    before: None,
                },
            );
            let end = doc_ts + self.rng.range(1, 10);
            self.emit_completed(end, &run_id, json!({ "data": [{ "name": name }] }), end - t);
            t += 40;
        }
        self.flush_batch();
    }

    fn gen_root(&mut self) {
        let start = self.next_root_start;
        self.roots_done += 1;
        self.next_root_start = start + self.rng.range(50, 500);
        let r = self.rng.unit();
        if r < 0.33 {
            self.gen_workflow(start);
        } else if r < 0.47 {
            self.gen_chat(start);
        } else if r < 0.54 {
            self.gen_flow(start);
        } else if r < 0.70 {
            self.gen_crud(start);
        } else if r < 0.78 {
            self.gen_mail_sync(start);
        } else if r < 0.88 {
            self.gen_checkpoint(start);
        } else if r < 0.97 {
            self.gen_ai(start);
        } else if self.cfg.with_templates {
            self.gen_template_update(start);
        } else {
            self.gen_crud(start);
        }
        self.flush_batch();
    }

    fn gen_workflow(&mut self, start: i64) {
        let ti = self.rng.index(self.templates.len());
        let tname = self.templates[ti].name;
        let steps: Vec<Value> = match &self.templates[ti].versions[self.templates[ti].current] {
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        let root = self.new_run_id("wf");
        let owner = self.rng.pick(OWNERS);
        let agent = self.rng.pick(WORKFLOW_AGENTS);
        let trigger = self.rng.pick(&["schedule", "manual", "webhook"]);
        let root_spec = RunSpec {
            operation: "workflow".into(),
            template: Some(tname),
            owner: Some(owner),
            agent: Some(agent),
            input: json!({ "trigger": trigger }),
            ..RunSpec::default()
        };
        self.emit_started(start, &root, &root_spec);

        // ~10% diverge on purpose: half a changed input, half a step run despite a false `if`.
        let divergent = self.rng.chance(0.10);
        let mut force_if = divergent && self.rng.chance(0.5);
        let mut diverge_at = if divergent && !force_if {
            Some(self.rng.index(steps.len().max(1)))
        } else {
            None
        };
        let status_updates = self.rng.chance(0.3);
        let mut outputs: Vec<(String, Value)> = Vec::new();
        let mut t = start + self.rng.range(1, 3);
        let (mut ran, mut skipped) = (0u64, 0u64);
        let mut failure: Option<String> = None;

        for (i, step) in steps.iter().enumerate() {
            let step_id = step
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("step")
                .to_string();
            let operation = step
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("select")
                .to_string();
            let doctype = step
                .get("doctype")
                .and_then(Value::as_str)
                .map(str::to_string);
            let cond = step
                .get("if")
                .and_then(Value::as_str)
                .is_none_or(|e| eval_condition(e, &outputs));
            let status_path = format!("steps.{step_id}.status");
            if !cond {
                if force_if || diverge_at == Some(i) {
                    // Divergence: the step runs although its `if` is false.
                    force_if = false;
                    diverge_at = None;
                } else {
                    skipped += 1;
                    if status_updates {
                        self.emit_progress(t, &root, &status_path, json!("skipped"), Some("set"));
                        t += 1;
                    }
                    continue;
                }
            }
            let mut input = resolve(step.get("input").unwrap_or(&Value::Null), &outputs);
            if diverge_at == Some(i) || (force_if && i + 1 == steps.len()) {
                // Divergence: the recorded input differs from the resolution (also the fallback
                // when no `if` turned out false).
                diverge(&mut input);
                force_if = false;
            }
            if status_updates {
                self.emit_progress(t, &root, &status_path, json!("running"), None);
                t += 1;
            }
            let ai = matches!(operation.as_str(), "summarize" | "interpret");
            let step_agent = if ai { self.rng.pick(AI_AGENTS) } else { agent };
            let mut spec = RunSpec {
                operation,
                doctype,
                owner: Some(owner),
                agent: Some(step_agent),
                role: if ai { Some("assistant") } else { None },
                parent: Some(root.clone()),
                chain: Some(root.clone()),
                step_id: Some(step_id.clone()),
                step_index: Some(i),
                input,
                ..RunSpec::default()
            };
            let fail = if self.rng.chance(0.04) {
                Some(self.failure_for(&spec.operation))
            } else {
                None
            };
            let run_id = self.new_run_id("r");
            let mut out = self.run_op(&run_id, &spec, t, fail);
            t = out.end + self.rng.range(1, 5);
            if out.output.is_none() {
                let msg = out.error.clone().unwrap_or_default();
                if self.rng.chance(0.6) {
                    failure = Some(format!("step {step_id} failed: {msg}"));
                    break;
                }
                // The engine retries the step and the workflow continues.
                let mut options = Map::new();
                options.insert("retry".into(), json!(1));
                spec.options = Some(options);
                let retry_id = self.new_run_id("r");
                t += self.rng.range(100, 1000);
                out = self.run_op(&retry_id, &spec, t, None);
                t = out.end + self.rng.range(1, 5);
            }
            match out.output {
                Some(o) => {
                    ran += 1;
                    if status_updates {
                        self.emit_progress(t, &root, &status_path, json!("completed"), Some("set"));
                        t += 1;
                    }
                    outputs.push((step_id, o));
                }
                None => {
                    let msg = out.error.unwrap_or_default();
                    failure = Some(format!("step {step_id} failed: {msg}"));
                    break;
                }
            }
        }
        match failure {
            Some(msg) => self.emit_failed(t, &root, &msg, "STEP_FAILED", t - start),
            None => self.emit_completed(
                t,
                &root,
                json!({ "steps": ran, "skipped": skipped }),
                t - start,
            ),
        }
    }

    fn gen_chat(&mut self, start: i64) {
        let root = self.new_run_id("chat");
        let owner = self.rng.pick(OWNERS);
        let first = self.rng.pick(USER_MESSAGES);
        let first = self.fill(first);
        let spec = RunSpec {
            operation: "message".into(),
            owner: Some(owner),
            role: Some("user"),
            input: json!({ "text": first }),
            ..RunSpec::default()
        };
        let out = self.run_op(&root, &spec, start, None);
        let mut t = out.end;
        let mut prev_id = root.clone();
        let mut prev_text = first;
        let steps = self.rng.range(2, 6) as usize;
        for k in 1..=steps {
            let assistant = k % 2 == 1;
            let spec = if assistant {
                t += self.rng.range(5, 60);
                RunSpec {
                    operation: self.rng.pick(&["interpret", "summarize", "message"]).into(),
                    owner: Some(owner),
                    agent: Some(self.rng.pick(AI_AGENTS)),
                    role: Some("assistant"),
                    parent: Some(prev_id.clone()),
                    chain: Some(root.clone()),
                    step_index: Some(k),
                    input: json!({ "text": prev_text }),
                    ..RunSpec::default()
                }
            } else {
                t += self.rng.range(1500, 8000);
                let msg = self.rng.pick(USER_MESSAGES);
                RunSpec {
                    operation: "message".into(),
                    owner: Some(owner),
                    role: Some("user"),
                    parent: Some(prev_id.clone()),
                    chain: Some(root.clone()),
                    step_index: Some(k),
                    input: json!({ "text": self.fill(msg) }),
                    ..RunSpec::default()
                }
            };
            let fail = if assistant && self.rng.chance(0.04) {
                Some(self.failure_for("message"))
            } else {
                None
            };
            let run_id = self.new_run_id("r");
            let out = self.run_op(&run_id, &spec, t, fail);
            t = out.end;
            match out.output {
                Some(o) => {
                    prev_text = o
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                }
                None => break,
            }
            prev_id = run_id;
        }
    }

    fn gen_flow(&mut self, start: i64) {
        let root = self.new_run_id("flow");
        let (flow, prompt_tpl) = self.rng.pick(FLOWS);
        let owner = self.rng.pick(OWNERS);
        let inv = self.rng.range(1000, 9999);
        let cust = self.rng.pick(CUSTOMERS);
        let prompt = prompt_tpl
            .replace("{inv}", &inv.to_string())
            .replace("{cust}", cust);
        let spec = RunSpec {
            operation: "workflow".into(),
            flow: Some(flow),
            owner: Some(owner),
            agent: Some(self.rng.pick(WORKFLOW_AGENTS)),
            input: json!({ "invoice": inv, "customer": cust }),
            ..RunSpec::default()
        };
        self.emit_started(start, &root, &spec);
        let mut t = start + self.rng.range(1, 3);
        let lookup = RunSpec {
            operation: "select".into(),
            doctype: Some("Customer".into()),
            owner: Some(owner),
            parent: Some(root.clone()),
            chain: Some(root.clone()),
            step_id: Some("lookup".into()),
            step_index: Some(0),
            input: json!({ "where": { "customer_name": cust } }),
            ..RunSpec::default()
        };
        let run_id = self.new_run_id("r");
        let out = self.run_op(&run_id, &lookup, t, None);
        t = out.end + self.rng.range(1, 5);
        self.emit_waiting(t, &root, "approve", &prompt);
        let r = self.rng.unit();
        if r < 0.65 {
            t += self.rng.range(2_000, 60_000);
            let approved = self.rng.chance(0.85);
            let comment = self
                .rng
                .pick(&["looks good", "OK", "承認します", "go ahead", ""]);
            self.emit_resumed(
                t,
                &root,
                "approve",
                json!({ "approved": approved, "comment": comment }),
            );
            t += self.rng.range(1, 5);
            let output = if approved {
                let send = RunSpec {
                    operation: "create".into(),
                    doctype: Some("Email".into()),
                    owner: Some(owner),
                    parent: Some(root.clone()),
                    chain: Some(root.clone()),
                    step_id: Some("send".into()),
                    step_index: Some(2),
                    input: json!({ "data": {
                        "subject": format!("Invoice {inv} for {cust}"),
                        "sender": "billing@ourco.example",
                        "folder": "sent",
                        "unread": false
                    }}),
                    ..RunSpec::default()
                };
                let run_id = self.new_run_id("r");
                let out = self.run_op(&run_id, &send, t, None);
                t = out.end + self.rng.range(1, 5);
                json!({ "approved": true, "sent": out.output.is_some() })
            } else {
                json!({ "approved": false })
            };
            self.emit_completed(t, &root, output, t - start);
        } else if r < 0.83 {
            t += self.rng.range(5_000, 120_000);
            let reason = self.rng.pick(CANCEL_REASONS);
            self.emit_cancelled(t, &root, reason);
        }
        // else: left waiting for good.
    }

    /// The mailbot delivering an inbound email (unread, in the inbox).
    fn gen_mail_sync(&mut self, start: i64) {
        let run_id = self.new_run_id("sync");
        let data = self.new_data("Email");
        let spec = RunSpec {
            operation: "create".into(),
            doctype: Some("Email".into()),
            owner: Some(self.rng.pick(OWNERS)),
            agent: Some("mailbot"),
            input: json!({ "data": Value::Object(data) }),
            ..RunSpec::default()
        };
        self.run_op(&run_id, &spec, start, None);
    }

    fn gen_ai(&mut self, start: i64) {
        let root = self.new_run_id("ai");
        let text = if self.rng.chance(0.5) {
            self.rng.pick(USER_MESSAGES)
        } else {
            self.rng.pick(EMAIL_SUBJECTS)
        };
        let spec = RunSpec {
            operation: self.rng.pick(&["summarize", "interpret"]).into(),
            owner: Some(self.rng.pick(OWNERS)),
            agent: Some(self.rng.pick(AI_AGENTS)),
            role: Some("assistant"),
            input: json!({ "text": self.fill(text) }),
            ..RunSpec::default()
        };
        let fail = if self.rng.chance(0.06) {
            Some(self.failure_for(&spec.operation))
        } else {
            None
        };
        self.run_op(&root, &spec, start, fail);
    }

    /// Picks a CRUD operation for a top-level run: (operation, doctype index, input).
    fn choose_crud(&mut self, now: i64) -> (&'static str, usize, Value) {
        let r = self.rng.unit();
        let pi = if r < 0.4 {
            0
        } else if r < 0.7 {
            1
        } else if r < 0.85 {
            2
        } else {
            3
        };
        let doctype = DOCTYPES[pi];
        let r = self.rng.unit();
        let mut op = if r < 0.35 {
            "select"
        } else if r < 0.70 {
            "create"
        } else if r < 0.90 {
            "update"
        } else {
            "delete"
        };
        if op == "update" || op == "delete" {
            let avail: Vec<usize> = self.pools[pi]
                .live
                .iter()
                .enumerate()
                .filter(|(_, rec)| rec.last_ts < now)
                .map(|(i, _)| i)
                .collect();
            if avail.is_empty() {
                op = "create";
            } else {
                let i = avail[self.rng.index(avail.len())];
                let name = self.pools[pi].live[i].name.clone();
                if op == "delete" {
                    return (op, pi, json!({ "name": name }));
                }
                let data = self.pools[pi].live[i].data.clone();
                let change = self.change_for(doctype, &data);
                return (
                    op,
                    pi,
                    json!({ "name": name, "data": Value::Object(change) }),
                );
            }
        }
        if op == "create" {
            let mut data = self.new_data(doctype);
            if self.rng.chance(0.04) {
                // A client bug: the required field is missing (validation failure).
                data.shift_remove("subject");
                data.shift_remove("customer_name");
                data.shift_remove("title");
            }
            return (op, pi, json!({ "data": Value::Object(data) }));
        }
        let filter = match doctype {
            "Task" => {
                if self.rng.chance(0.5) {
                    json!({ "status": "Open" })
                } else {
                    json!({ "priority": "High" })
                }
            }
            "Email" => json!({ "unread": true }),
            "Customer" => json!({ "status": "Lead" }),
            _ => json!({}),
        };
        (op, pi, json!({ "where": filter, "limit": 20 }))
    }

    fn gen_crud(&mut self, start: i64) {
        let (op, pi, input) = self.choose_crud(start);
        let run_id = self.new_run_id("run");
        let spec = RunSpec {
            operation: op.into(),
            doctype: Some(DOCTYPES[pi].into()),
            owner: Some(self.rng.pick(OWNERS)),
            input,
            ..RunSpec::default()
        };
        let fail = if self.rng.chance(0.02) {
            Some(self.failure_for(op))
        } else {
            None
        };
        self.run_op(&run_id, &spec, start, fail);
    }

    fn gen_checkpoint(&mut self, start: i64) {
        let (op, pi, input) = self.choose_crud(start);
        let run_id = self.new_run_id("ui");
        let owner = self.rng.pick(OWNERS);
        let doctype = DOCTYPES[pi];
        let two_phase = self.rng.chance(0.4);
        let base = |status: &str, ts: i64| {
            let mut ctx = Map::new();
            ctx.insert("id".into(), Value::from(run_id.as_str()));
            ctx.insert("status".into(), Value::from(status));
            ctx.insert("operation".into(), Value::from(op));
            ctx.insert("doctype".into(), Value::from(doctype));
            ctx.insert("timestamp".into(), Value::from(ts));
            ctx
        };
        if two_phase {
            let mut ctx = base("running", start);
            ctx.insert("input".into(), input.clone());
            ctx.insert("options".into(), json!({}));
            ctx.insert("owner".into(), Value::from(owner));
            self.emit_checkpoint(start, ctx);
        }
        let spec = RunSpec {
            operation: op.into(),
            doctype: Some(doctype.into()),
            owner: Some(owner),
            input: input.clone(),
            ..RunSpec::default()
        };
        let mut lat = self.latency(op);
        let result = if self.rng.chance(0.1) {
            let message = self.rng.pick(&[
                "rate limited (429)",
                "timeout after 30000ms",
                "permission denied",
            ]);
            if message.starts_with("timeout") {
                lat = 30_000 + self.rng.range(0, 40);
            }
            Err(message.to_string())
        } else {
            self.op_body(&run_id, &spec, start, start + lat)
                .map_err(|f| f.message)
        };
        let end = start + lat;
        let mut ctx = match &result {
            Ok(_) => base("completed", end),
            Err(_) => base("failed", end),
        };
        ctx.insert("duration".into(), Value::from(lat));
        if !two_phase && self.rng.chance(0.5) {
            ctx.insert("input".into(), input);
        }
        match result {
            Ok(output) => ctx.insert("output".into(), output),
            Err(message) => ctx.insert("error".into(), Value::String(message)),
        };
        ctx.insert("options".into(), json!({}));
        if self.rng.chance(0.5) {
            ctx.insert("owner".into(), Value::from(owner));
        }
        self.emit_checkpoint(end, ctx);
    }

    fn gen_template_update(&mut self, start: i64) {
        let ti = self.rng.index(self.templates.len());
        let name = self.templates[ti].name;
        let cur = self.templates[ti].current;
        let old = self.templates[ti].versions[cur].clone();
        let new = self.templates[ti].versions[1 - cur].clone();
        self.templates[ti].current = 1 - cur;
        let run_id = self.new_run_id("tpl");
        let spec = RunSpec {
            operation: "update".into(),
            doctype: Some("Workflow Template".into()),
            owner: Some(self.rng.pick(OWNERS)),
            input: json!({ "name": name, "data": { "steps": new } }),
            ..RunSpec::default()
        };
        self.emit_started(start, &run_id, &spec);
        // Finishes well before the next root starts (>= 50 ms later), so workflows started
        // after this update follow the new version.
        let doc_ts = start + self.rng.range(2, 10);
        let mut data = Map::new();
        data.insert("steps".into(), new);
        let mut before = Map::new();
        before.insert("steps".into(), old);
        self.emit_doc(
            doc_ts,
            &run_id,
            DocEvent {
                kind: "doc.updated",
                doctype: "Workflow Template",
                name,
                data: Some(data),
                before: Some(before),
            },
        );
        let end = doc_ts + self.rng.range(2, 20);
        self.emit_completed(
            end,
            &run_id,
            json!({ "data": [{ "name": name }] }),
            end - start,
        );
    }
}

impl Iterator for Workload {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        // A retried delivery that is due comes first.
        if let Some(pos) = self.dups.iter().position(|(due, _)| *due <= self.out_count) {
            let (_, v) = self.dups.remove(pos);
            self.out_count += 1;
            return Some(v);
        }
        let cap = self.cfg.reorder_window.max(1);
        while self.window.len() < cap {
            match self.merged_next() {
                Some(v) => {
                    self.window.push_back((self.in_count, v));
                    self.in_count += 1;
                }
                None => break,
            }
        }
        let v = if self.window.is_empty() {
            // Source exhausted: flush the duplicates still scheduled, earliest first.
            let pos = self
                .dups
                .iter()
                .enumerate()
                .min_by_key(|(_, (due, _))| *due)
                .map(|(i, _)| i)?;
            let (_, v) = self.dups.remove(pos);
            self.out_count += 1;
            return Some(v);
        } else {
            let len = self.window.len();
            let front_age = self
                .window
                .front()
                .map_or(0, |(arrival, _)| self.in_count - arrival);
            let idx = if len == 1 || front_age > 2 * cap as u64 || self.delivery.chance(0.5) {
                0
            } else {
                self.delivery.index(len)
            };
            self.window.remove(idx).map(|(_, v)| v)?
        };
        if self.cfg.duplicate_rate > 0.0
            && v.get("id").is_some()
            && self.delivery.chance(self.cfg.duplicate_rate)
        {
            let due = self.out_count + self.delivery.range(1, 8) as u64;
            self.dups.push((due, v.clone()));
        }
        self.out_count += 1;
        Some(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Templates and their language

fn template_steps(name: &str, version: usize) -> Value {
    match (name, version) {
        ("WT-email-to-tasks", v) => json!([
            {"id": "emails", "operation": "select", "doctype": "Email",
             "input": if v == 0 { json!({"where": {"unread": true}}) }
                      else { json!({"where": {"unread": true}, "limit": 10}) }},
            {"id": "summaries", "operation": "summarize",
             "if": "{{emails.output.data.length}} > 0",
             "input": {"text": "{{emails.output.data}}"}},
            {"id": "create-tasks", "operation": "create", "doctype": "Task",
             "if": "{{emails.output.data.length}} > 0",
             "input": {"data": {"subject": "{{prev.output.text}}"}}},
            {"id": "mark-read", "operation": "update", "doctype": "Email",
             "if": "{{emails.output.data.length}} > 0",
             "input": {"where": {"unread": true}, "data": {"unread": false}}}
        ]),
        ("WT-summarize-inbox", v) => json!([
            {"id": "inbox", "operation": "select", "doctype": "Email",
             "input": if v == 0 { json!({"where": {"folder": "inbox"}}) }
                      else { json!({"where": {"folder": "inbox"}, "limit": 5}) }},
            {"id": "digest", "operation": "summarize",
             "if": "{{inbox.output.data.length}} > 0",
             "input": {"text": "{{inbox.output.data}}"}},
            {"id": "save", "operation": "create", "doctype": "Note",
             "if": "{{inbox.output.data.length}} > 0",
             "input": {"data": {"title": "Inbox digest", "content": "{{digest.output.text}}"}}}
        ]),
        ("WT-onboard-customer", v) => json!([
            {"id": "leads", "operation": "select", "doctype": "Customer",
             "input": {"where": {"status": "Lead"}}},
            {"id": "welcome", "operation": "interpret",
             "if": "{{leads.output.data.length}} > 0",
             "input": {"text": "{{leads.output.data}}",
                       "instruction": if v == 0 { "Draft a welcome email" }
                                      else { "Draft a short, friendly welcome email" }}},
            {"id": "send", "operation": "create", "doctype": "Email",
             "if": "{{leads.output.data.length}} > 0",
             "input": {"data": {"subject": "Welcome to Acme Cloud", "body": "{{prev.output.text}}",
                                "folder": "sent", "unread": false}}},
            {"id": "activate", "operation": "update", "doctype": "Customer",
             "if": "{{leads.output.data.length}} > 0",
             "input": {"where": {"status": "Lead"}, "data": {"status": "Active"}}}
        ]),
        (_, v) => json!([
            {"id": "open", "operation": "select", "doctype": "Task",
             "input": {"where": {"status": "Open"}}},
            {"id": "triage", "operation": "interpret",
             "if": "{{open.output.data.length}} > 0",
             "input": {"text": "{{open.output.data}}", "instruction": "Assign priorities"}},
            {"id": "mark", "operation": "update", "doctype": "Task",
             "if": "{{open.output.data.length}} > 0",
             "input": {"where": {"status": "Open"}, "data": {"status": "Triaged"}}},
            {"id": "report", "operation": "create", "doctype": "Note",
             "if": "{{open.output.data.length}} > 0",
             "input": {"data": {"title": "Triage report", "content": "{{triage.output.text}}"}}},
            {"id": "purge", "operation": "delete", "doctype": "Task",
             "input": if v == 0 { json!({"where": {"status": "Closed"}}) }
                      else { json!({"where": {"status": "Closed", "priority": "Low"}}) }}
        ]),
    }
}

/// Deliberately changes a resolved step input (a divergent workflow).
fn diverge(input: &mut Value) {
    let Some(obj) = input.as_object_mut() else {
        *input = json!({ "override": true });
        return;
    };
    if let Some(Value::Object(data)) = obj.get_mut("data") {
        for key in ["subject", "title", "content", "body"] {
            if let Some(Value::String(s)) = data.get_mut(key) {
                let edited = format!("(edited) {s}");
                *s = edited;
                return;
            }
        }
        data.insert("status".into(), json!("Closed"));
        return;
    }
    if let Some(Value::Array(items)) = obj.get_mut("text") {
        if items.len() > 1 {
            items.truncate(1);
            return;
        }
    }
    obj.insert("limit".into(), json!(1));
}

fn record_label(v: &Value) -> Option<String> {
    ["subject", "customer_name", "title", "name"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

fn pool_index(doctype: &str) -> Option<usize> {
    DOCTYPES.iter().position(|d| *d == doctype)
}

/// Time of the k-th of n changes spread over (start, end].
fn spread(start: i64, end: i64, k: i64, n: i64) -> i64 {
    let dur = (end - start).max(1);
    start + 1 + (dur - 1) * (k + 1) / (n + 1).max(1)
}

/// RFC 3339 with milliseconds; `offset_min` 0 gives `Z`, otherwise `±hh:mm` (same instant).
fn rfc3339(ms: i64, offset_min: i32) -> String {
    let local = ms + i64::from(offset_min) * 60_000;
    let days = local.div_euclid(86_400_000);
    let rem = local.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, f) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let offset = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let a = offset_min.abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:03}{offset}")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    const TYPES: [&str; 11] = [
        "run.started",
        "run.progress",
        "run.waiting",
        "run.resumed",
        "run.completed",
        "run.failed",
        "run.cancelled",
        "doc.created",
        "doc.updated",
        "doc.deleted",
        "run.checkpoint",
    ];

    fn is_rfc3339(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && (s.ends_with('Z') || s[s.len() - 6..].starts_with(['+', '-']))
    }

    fn check_ts(v: Option<&Value>) -> Result<(), String> {
        match v {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(ms) if ms >= 100_000_000_000 => Ok(()),
                _ => Err(format!("bad integer ts {n}")),
            },
            Some(Value::String(s)) if is_rfc3339(s) => Ok(()),
            other => Err(format!("bad ts {other:?}")),
        }
    }

    fn nonempty_str(v: Option<&Value>) -> bool {
        v.and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty() && s.len() <= 256)
    }

    /// Validation of one event against the required fields of events.md.
    fn validate(v: &Value) -> Result<(), String> {
        let obj = v.as_object().ok_or("not an object")?;
        let ty = obj.get("type").and_then(Value::as_str).ok_or("no type")?;
        if !TYPES.contains(&ty) {
            return Err(format!("unknown type {ty}"));
        }
        if let Some(id) = obj.get("id") {
            if !nonempty_str(Some(id)) {
                return Err("bad id".into());
            }
        }
        if ty == "run.checkpoint" {
            let run = obj.get("run").and_then(Value::as_object).ok_or("no run")?;
            if !nonempty_str(run.get("id")) {
                return Err("checkpoint without run.id".into());
            }
            let status = run
                .get("status")
                .and_then(Value::as_str)
                .ok_or("no status")?;
            if !["pending", "running", "completed", "failed", "cancelled"].contains(&status) {
                return Err(format!("bad status {status}"));
            }
            check_ts(run.get("timestamp"))?;
            if status == "failed" && !run.get("error").is_some_and(Value::is_string) {
                return Err("failed checkpoint without string error".into());
            }
            return Ok(());
        }
        if !nonempty_str(obj.get("run_id")) {
            return Err("no run_id".into());
        }
        check_ts(obj.get("ts"))?;
        match ty {
            "run.started" => {
                let run = obj.get("run").and_then(Value::as_object).ok_or("no run")?;
                if !run.get("operation").is_some_and(Value::is_string) {
                    return Err("no operation".into());
                }
            }
            "run.progress" => {
                if !nonempty_str(obj.get("path")) || !obj.contains_key("value") {
                    return Err("bad progress".into());
                }
                if let Some(op) = obj.get("op") {
                    if op != "set" && op != "append" {
                        return Err("bad op".into());
                    }
                }
            }
            "run.waiting" | "run.resumed" if !obj.get("step_id").is_some_and(Value::is_string) => {
                return Err("no step_id".into());
            }
            "run.failed" => {
                let e = obj.get("error").ok_or("no error")?;
                if !(e.is_string() || e.get("message").is_some_and(Value::is_string)) {
                    return Err("bad error".into());
                }
            }
            "doc.created" | "doc.updated" | "doc.deleted" => {
                if !obj.get("doctype").is_some_and(Value::is_string)
                    || !obj.get("name").is_some_and(Value::is_string)
                {
                    return Err("doc without doctype/name".into());
                }
                if let Some(d) = obj.get("data") {
                    if !d.is_object() {
                        return Err("data not an object".into());
                    }
                }
            }
            _ => {}
        }
        if let Some(d) = obj.get("duration_ms") {
            if d.as_i64().is_none_or(|d| d < 0) {
                return Err("bad duration_ms".into());
            }
        }
        Ok(())
    }

    #[test]
    fn rfc3339_matches_spec_example() {
        assert_eq!(rfc3339(1_763_700_000_000, 0), "2025-11-21T04:40:00.000Z");
        assert_eq!(rfc3339(1_763_700_000_010, 0), "2025-11-21T04:40:00.010Z");
        assert_eq!(
            rfc3339(1_763_700_000_010, 540),
            "2025-11-21T13:40:00.010+09:00"
        );
        assert_eq!(rfc3339(0, -300), "1969-12-31T19:00:00.000-05:00");
        assert_eq!(rfc3339(951_782_400_000, 0), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn deterministic_per_seed() {
        let a = ndjson_lines(&WorkloadConfig::new(42, 150));
        let b = ndjson_lines(&WorkloadConfig::new(42, 150));
        let c = ndjson_lines(&WorkloadConfig::new(43, 150));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut out = Vec::new();
        let n = write_ndjson(&WorkloadConfig::new(42, 150), &mut out).unwrap();
        assert_eq!(n as usize, a.len());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), a);
    }

    #[test]
    fn every_line_valid_and_all_types_present() {
        let lines = ndjson_lines(&WorkloadConfig::new(42, 200));
        let mut seen = BTreeSet::new();
        for (i, line) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Err(e) = validate(&v) {
                panic!("line {}: {e}: {line}", i + 1);
            }
            seen.insert(v["type"].as_str().unwrap().to_string());
        }
        for t in TYPES {
            assert!(seen.contains(t), "type {t} missing");
        }
    }

    #[test]
    fn variety_of_shapes() {
        let lines = ndjson_lines(&WorkloadConfig::new(5, 400));
        let all = lines.join("\n");
        for needle in [
            "\"parentRunId\"",
            "\"chainId\"",
            "\"stepIndex\"",
            "\"stepId\"",
            "\"from\":",
            "\"into\":",
            "\"trace_tag\"",
            "Z\"",
            "+09:00\"",
            "\"status\":\"running\"",
            "\"before\"",
            "請求書を送ってください",
            "会议纪要を要約して",
            "invoice 4471",
            "\"Workflow Template\"",
            "rate limited (429)",
            "timeout after 30000ms",
            "validation failed: subject is required",
        ] {
            assert!(all.contains(needle), "{needle} missing");
        }
        // Some progress events carry no id.
        let no_id = lines
            .iter()
            .filter(|l| l.contains("\"run.progress\"") && !l.contains("\"id\""))
            .count();
        assert!(no_id > 0);
    }

    #[test]
    fn duplicates_repeat_an_earlier_identical_line() {
        let cfg = WorkloadConfig {
            duplicate_rate: 0.05,
            ..WorkloadConfig::new(9, 300)
        };
        let lines = ndjson_lines(&cfg);
        let mut first: HashMap<String, (usize, &String)> = HashMap::new();
        let mut dups = 0;
        for (i, line) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            let Some(id) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            match first.get(id) {
                Some((j, earlier)) => {
                    assert_eq!(*earlier, line, "dup of {id} differs");
                    assert!(*j < i && i - j <= 40, "dup of {id} too far: {j} -> {i}");
                    dups += 1;
                }
                None => {
                    first.insert(id.to_string(), (i, line));
                }
            }
        }
        let rate = dups as f64 / lines.len() as f64;
        assert!(rate > 0.02 && rate < 0.08, "dup rate {rate}");
    }

    #[test]
    fn delivery_only_reorders_and_duplicates() {
        let base = WorkloadConfig {
            duplicate_rate: 0.0,
            reorder_window: 0,
            ..WorkloadConfig::new(11, 200)
        };
        let in_order = ndjson_lines(&base);
        // In order means sorted by true time.
        let ts_of = |l: &String| {
            let v: Value = serde_json::from_str(l).unwrap();
            v.get("ts")
                .and_then(Value::as_i64)
                .or_else(|| v["run"]["timestamp"].as_i64())
        };
        let mut last = i64::MIN;
        for l in &in_order {
            if let Some(ts) = ts_of(l) {
                assert!(ts >= last, "not in time order: {l}");
                last = ts;
            }
        }
        let shuffled = ndjson_lines(&WorkloadConfig {
            reorder_window: 16,
            ..base.clone()
        });
        assert_ne!(in_order, shuffled);
        let mut a = in_order.clone();
        let mut b = shuffled;
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let with_dups = ndjson_lines(&WorkloadConfig {
            duplicate_rate: 0.1,
            ..base
        });
        let unique: BTreeSet<&String> = with_dups.iter().collect();
        assert!(with_dups.len() > in_order.len());
        assert_eq!(unique.len(), in_order.iter().collect::<BTreeSet<_>>().len());
    }

    #[test]
    fn some_children_arrive_before_parents() {
        let lines = ndjson_lines(&WorkloadConfig::new(42, 300));
        let mut started = BTreeSet::new();
        let mut early_child = 0;
        let mut early_terminal = 0;
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            let run_id = v["run_id"].as_str().unwrap_or("").to_string();
            match v["type"].as_str().unwrap() {
                "run.started" => {
                    let run = &v["run"];
                    let parent = run
                        .get("parent_run_id")
                        .or_else(|| run.get("parentRunId"))
                        .or_else(|| run["options"].get("parentRunId"))
                        .and_then(Value::as_str);
                    if let Some(p) = parent {
                        if !started.contains(p) {
                            early_child += 1;
                        }
                    }
                    started.insert(run_id);
                }
                "run.completed" | "run.failed" if !started.contains(&run_id) => {
                    early_terminal += 1;
                }
                _ => {}
            }
        }
        assert!(early_child > 0 && early_terminal > 0);
    }

    #[test]
    fn ids_unique_and_ts_causal_per_run() {
        let cfg = WorkloadConfig {
            duplicate_rate: 0.0,
            ..WorkloadConfig::new(3, 300)
        };
        let lines = ndjson_lines(&cfg);
        let mut ids = BTreeSet::new();
        let mut runs: BTreeMap<String, (i64, i64, Option<i64>)> = BTreeMap::new();
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            if let Some(id) = v.get("id").and_then(Value::as_str) {
                assert!(ids.insert(id.to_string()), "id {id} repeated");
            }
            let Some(ts) = v.get("ts").and_then(Value::as_i64) else {
                continue;
            };
            let run_id = v["run_id"].as_str().unwrap().to_string();
            let e = runs.entry(run_id).or_insert((i64::MAX, i64::MIN, None));
            match v["type"].as_str().unwrap() {
                "run.started" => e.0 = e.0.min(ts),
                "run.completed" | "run.failed" => {
                    e.1 = ts;
                    e.2 = v["duration_ms"].as_i64();
                }
                _ => {}
            }
        }
        let mut checked = 0;
        for (run, (s, end, dur)) in runs {
            if s != i64::MAX && end != i64::MIN {
                assert!(end >= s, "{run} ends before it starts");
                if let Some(d) = dur {
                    assert_eq!(d, end - s, "{run} duration");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn workflows_mostly_follow_their_templates() {
        // Faithful workflows: the first step input equals the template input.
        let cfg = WorkloadConfig {
            duplicate_rate: 0.0,
            reorder_window: 0,
            ..WorkloadConfig::new(21, 400)
        };
        let mut templates: HashMap<String, Value> = HashMap::new();
        let mut root_template: HashMap<String, String> = HashMap::new();
        let (mut same, mut total) = (0, 0);
        for v in Workload::new(cfg) {
            if v["type"] == "doc.created" && v["doctype"] == "Workflow Template" {
                templates.insert(
                    v["name"].as_str().unwrap().into(),
                    v["data"]["steps"].clone(),
                );
            }
            if v["type"] != "run.started" {
                continue;
            }
            let run = &v["run"];
            if let Some(t) = run.get("template").and_then(Value::as_str) {
                root_template.insert(v["run_id"].as_str().unwrap().into(), t.into());
            }
            let index = run
                .get("step_index")
                .or_else(|| run.get("stepIndex"))
                .or_else(|| run["options"].get("stepIndex"));
            let parent = run
                .get("parent_run_id")
                .or_else(|| run.get("parentRunId"))
                .or_else(|| run["options"].get("parentRunId"))
                .and_then(Value::as_str);
            if index.and_then(Value::as_u64) == Some(0) {
                if let Some(t) = parent.and_then(|p| root_template.get(p)) {
                    if let Some(steps) = templates.get(t) {
                        total += 1;
                        if steps[0]["input"] == run["input"] {
                            same += 1;
                        }
                    }
                }
            }
        }
        assert!(total > 50);
        // Template updates change step 0 of some templates, so only most match v0.
        assert!(same * 2 > total, "{same}/{total}");
    }

    #[test]
    fn config_for_events_is_close() {
        let cfg = config_for_events(7, 100_000);
        let n = Workload::new(cfg).count();
        assert!((80_000..=120_000).contains(&n), "{n}");
    }

    #[test]
    fn streams_200k_events() {
        let cfg = WorkloadConfig::new(1, 40_000);
        let mut count = 0usize;
        let mut bytes = 0usize;
        for v in Workload::new(cfg).take(200_000) {
            bytes += v.to_string().len();
            count += 1;
        }
        assert_eq!(count, 200_000);
        let avg = bytes / count;
        assert!((100..=400).contains(&avg), "avg {avg} bytes");
    }
}
