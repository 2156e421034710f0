//! Answers written straight from projection state: a run's stored JSON payloads (input,
//! output, error, options, unknown fields) go out as they are stored — checked, not parsed
//! into `serde_json::Value` and written again — so an answer with thousands of runs costs
//! little more than copying their text.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use rkyv::option::ArchivedOption;
use rkyv::string::ArchivedString;

use super::run::{duration_of, status_of, ArchivedRunState, RunState, Status};
use crate::error::{Error, Result};
use crate::render::rfc3339;

/// A run as `show` and `state` print it (`state` with no children listed).
pub struct RunOut<'a> {
    pub run: &'a RunState,
    /// Ids of its children, in tree order.
    pub children: &'a [String],
}

/// `runledger show`: a run and its children's ids.
pub struct ShowAnswer {
    pub run: RunState,
    pub children: Vec<String>,
}

impl Serialize for ShowAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        RunOut {
            run: &self.run,
            children: &self.children,
        }
        .serialize(s)
    }
}

/// `CoworkerState` as of a seq: what `runledger state` answers.
pub struct StateAnswer {
    pub at_seq: u64,
    /// In run id order.
    pub active_runs: Vec<RunState>,
    /// Active run ids grouped by the root of their lineage.
    pub active_pipelines: BTreeMap<String, Vec<String>>,
    pub current_run: Option<RunState>,
}

/// Stored JSON text, written as is; `null` when absent.
struct Raw<'a>(&'a Option<String>);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Stored text was checked at ingest; the check here costs a scan, not a tree of values.
        match self
            .0
            .as_deref()
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
        {
            Some(raw) => raw.serialize(s),
            None => s.serialize_none(),
        }
    }
}

impl Serialize for RunOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let r = self.run;
        let f = &r.fields;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("run_id", &r.run_id)?;
        m.serialize_entry("operation", &f.operation)?;
        m.serialize_entry("doctype", &f.doctype)?;
        m.serialize_entry("template", &f.template)?;
        m.serialize_entry("flow", &f.flow)?;
        m.serialize_entry("status", r.status().as_str())?;
        m.serialize_entry("parent_run_id", &f.parent_run_id)?;
        m.serialize_entry("chain_id", &f.chain_id)?;
        m.serialize_entry("step_id", &f.step_id)?;
        m.serialize_entry("step_index", &f.step_index)?;
        m.serialize_entry("owner", &f.owner)?;
        m.serialize_entry("agent", &f.agent)?;
        m.serialize_entry("role", &f.role)?;
        m.serialize_entry("input", &Raw(&f.input))?;
        m.serialize_entry("output", &Raw(&r.output))?;
        m.serialize_entry("error", &Raw(&r.error))?;
        m.serialize_entry("options", &Raw(&f.options))?;
        m.serialize_entry("extra", &Raw(&f.extra))?;
        if r.status() == Status::Waiting {
            m.serialize_entry("waiting_step", &r.wait_step)?;
            m.serialize_entry("waiting_prompt", &r.wait_prompt)?;
        }
        if let Some(reason) = &r.cancel_reason {
            m.serialize_entry("cancel_reason", reason)?;
        }
        m.serialize_entry("started_at", &r.started_ms.map(rfc3339))?;
        m.serialize_entry("ended_at", &r.ended_ms.map(rfc3339))?;
        m.serialize_entry("duration_ms", &r.duration_ms())?;
        m.serialize_entry("children", self.children)?;
        m.serialize_entry("events", &r.events)?;
        m.serialize_entry("first_seq", &r.first_seq)?;
        m.serialize_entry("last_seq", &r.last_seq)?;
        m.end()
    }
}

impl Serialize for StateAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Runs<'a>(&'a [RunState]);
        impl Serialize for Runs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|run| RunOut { run, children: &[] }))
            }
        }
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("at_seq", &self.at_seq)?;
        m.serialize_entry("active_runs", &Runs(&self.active_runs))?;
        m.serialize_entry("active_pipelines", &self.active_pipelines)?;
        let current = self
            .current_run
            .as_ref()
            .map(|run| RunOut { run, children: &[] });
        m.serialize_entry("current_run", &current)?;
        m.serialize_entry("is_loading", &!self.active_runs.is_empty())?;
        m.end()
    }
}

/// `v` as a `serde_json::Value` (for the human output and callers that edit the answer).
/// `serde_json::to_value` fails on a stored payload nested deeper than 128 levels; such an
/// answer is written as text and read back by [`crate::json::value_of`], which reads any depth.
pub fn to_value(v: &impl Serialize) -> Result<serde_json::Value> {
    if let Ok(value) = serde_json::to_value(v) {
        return Ok(value);
    }
    let failed =
        |e: &dyn std::fmt::Display| Error::Storage(format!("answer does not serialise: {e}"));
    let text = serde_json::to_string(v).map_err(|e| failed(&e))?;
    crate::json::value_of(&text).ok_or_else(|| failed(&"not JSON"))
}

/// What trees and lineages show of a run: read from the stored run in place (no decoding of its payloads)
/// unless it must be folded as of an earlier seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub run_id: String,
    pub parent_run_id: Option<String>,
    pub operation: Option<String>,
    pub doctype: Option<String>,
    pub template: Option<String>,
    pub flow: Option<String>,
    pub owner: Option<String>,
    pub status: Status,
    pub started_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub step_id: Option<String>,
    pub step_index: Option<i64>,
    /// The error's JSON text, for a failed run.
    pub error: Option<String>,
    /// The prompt, for a waiting run.
    pub waiting_prompt: Option<String>,
}

impl NodeSummary {
    pub fn of(r: &RunState) -> NodeSummary {
        let status = r.status();
        let f = &r.fields;
        NodeSummary {
            run_id: r.run_id.clone(),
            parent_run_id: f.parent_run_id.clone(),
            operation: f.operation.clone(),
            doctype: f.doctype.clone(),
            template: f.template.clone(),
            flow: f.flow.clone(),
            owner: f.owner.clone(),
            status,
            started_ms: r.started_ms,
            duration_ms: r.duration_ms(),
            step_id: f.step_id.clone(),
            step_index: f.step_index,
            error: r.error.clone().filter(|_| status == Status::Failed),
            waiting_prompt: r.wait_prompt.clone().filter(|_| status == Status::Waiting),
        }
    }

    pub fn of_archived(r: &ArchivedRunState) -> NodeSummary {
        let text = |s: &ArchivedOption<ArchivedString>| s.as_ref().map(|s| s.as_str().to_owned());
        let int =
            |v: &ArchivedOption<rkyv::rend::unaligned::i64_ule>| v.as_ref().map(|v| v.to_native());
        let status = status_of(r.terminal.as_ref().map(|t| t.get()), r.waiting);
        let f = &r.fields;
        NodeSummary {
            run_id: r.run_id.as_str().to_owned(),
            parent_run_id: text(&f.parent_run_id),
            operation: text(&f.operation),
            doctype: text(&f.doctype),
            template: text(&f.template),
            flow: text(&f.flow),
            owner: text(&f.owner),
            status,
            started_ms: int(&r.started_ms),
            duration_ms: duration_of(
                int(&r.reported_duration_ms),
                int(&r.started_ms),
                int(&r.ended_ms),
            ),
            step_id: text(&f.step_id),
            step_index: int(&f.step_index),
            error: text(&r.error).filter(|_| status == Status::Failed),
            waiting_prompt: text(&r.wait_prompt).filter(|_| status == Status::Waiting),
        }
    }
}

/// A run tree as `runledger tree` answers it.
pub struct TreeNode {
    pub run: NodeSummary,
    pub children: Vec<TreeNode>,
    /// Children left out below `--depth`.
    pub more_children: usize,
}

/// [`TreeNode`] at the root, with whether the walk met a cycle.
pub struct TreeAnswer {
    pub root: TreeNode,
    pub cycle: bool,
}

impl TreeNode {
    fn write<M: SerializeMap>(&self, m: &mut M) -> std::result::Result<(), M::Error> {
        let r = &self.run;
        m.serialize_entry("run_id", &r.run_id)?;
        m.serialize_entry("operation", &r.operation)?;
        m.serialize_entry("doctype", &r.doctype)?;
        m.serialize_entry("status", r.status.as_str())?;
        m.serialize_entry("started_at", &r.started_ms.map(rfc3339))?;
        m.serialize_entry("duration_ms", &r.duration_ms)?;
        m.serialize_entry("step_id", &r.step_id)?;
        m.serialize_entry("step_index", &r.step_index)?;
        m.serialize_entry("children", &self.children)?;
        if self.more_children > 0 {
            m.serialize_entry("more_children", &self.more_children)?;
        }
        if r.status == Status::Failed {
            m.serialize_entry("error", &Raw(&r.error))?;
        }
        if r.status == Status::Waiting {
            m.serialize_entry("waiting_prompt", &r.waiting_prompt)?;
        }
        Ok(())
    }
}

impl Serialize for TreeNode {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.write(&mut m)?;
        m.end()
    }
}

impl Serialize for TreeAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.root.write(&mut m)?;
        m.serialize_entry("cycle", &self.cycle)?;
        m.end()
    }
}
