//! `replay --check`: re-resolves a templated workflow's step inputs and `if:` conditions from
//! the recorded outputs of its earlier steps, and reports where the recorded run diverges.
//!
//! The template language is [`ledger::template`] (`docs/template-language.md`).

use ledger::project::{RunState, Status, View};
use ledger::template::{eval_condition, resolve};
use serde_json::{json, Map, Value};

use crate::diff::{changes_json, input_of, json_diff, not_found, output_of};
use crate::Result;

/// Where a root's template came from.
#[derive(Debug, Clone)]
pub struct Template {
    /// `record` (the `Workflow Template` record as of the root's start) or `input`.
    pub source: &'static str,
    pub name: Option<String>,
    pub steps: Vec<Value>,
}

/// The template a root ran: its `Workflow Template` record's data as of the root's start,
/// else the `steps` (or `children`) of the root's own input.
pub fn template_for(view: &View, root: &RunState) -> Result<Option<Template>> {
    let name = root
        .fields
        .template
        .clone()
        .or_else(|| root.fields.flow.clone());
    if let Some(name) = &name {
        let start = root.started_ms.unwrap_or(i64::MAX);
        let mut data: Option<Map<String, Value>> = None;
        for row in view.doc_history("Workflow Template", name)? {
            if row.ts_ms > start {
                break;
            }
            match (row.kind, row.data) {
                ("created", Some(Value::Object(d))) => data = Some(d),
                ("created", _) => data = Some(Map::new()),
                ("updated", Some(Value::Object(d))) => {
                    data.get_or_insert_with(Map::new).extend(d);
                }
                ("deleted", _) => data = None,
                _ => {}
            }
        }
        if let Some(Value::Array(steps)) = data.and_then(|mut d| d.remove("steps")) {
            return Ok(Some(Template {
                source: "record",
                name: Some(name.clone()),
                steps,
            }));
        }
    }
    let input = input_of(root);
    for key in ["steps", "children"] {
        if let Some(Value::Array(steps)) = input.get(key) {
            return Ok(Some(Template {
                source: "input",
                name,
                steps: steps.clone(),
            }));
        }
    }
    Ok(None)
}

fn step_id_of(step: &Value, i: usize) -> String {
    step.get("id")
        .or_else(|| step.get("step_id"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("#{i}"), str::to_owned)
}

/// The runs of step `i` among the root's children: those naming its step id, else its index.
fn runs_of<'a>(children: &'a [RunState], step: &Value, i: usize) -> Vec<&'a RunState> {
    let id = step
        .get("id")
        .or_else(|| step.get("step_id"))
        .and_then(Value::as_str);
    children
        .iter()
        .filter(|c| match (&c.fields.step_id, id) {
            (Some(cid), Some(id)) => cid == id,
            (Some(_), None) => false,
            (None, _) => c.fields.step_index == Some(i as i64),
        })
        .collect()
}

/// The runs that are steps of the workflow: the root's children, plus — for engines that link
/// each step to the previous one — the deeper runs whose `chain_id` is the root and that name a
/// step; in step order (index, then start time).
fn step_runs(view: &View, root: &str) -> Result<Vec<RunState>> {
    let mut out = view.children(root)?;
    let direct: std::collections::HashSet<String> = out.iter().map(|c| c.run_id.clone()).collect();
    let (ids, _) = view.subtree_ids(root)?;
    for id in ids.iter().skip(1) {
        if direct.contains(id) {
            continue;
        }
        if let Some(r) = view.run(id)? {
            let f = &r.fields;
            if f.chain_id.as_deref() == Some(root)
                && (f.step_id.is_some() || f.step_index.is_some())
            {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| {
        (a.fields.step_index, a.started_ms, &a.run_id).cmp(&(
            b.fields.step_index,
            b.started_ms,
            &b.run_id,
        ))
    });
    Ok(out)
}

/// The divergence kinds `check` reports.
pub const KINDS: [&str; 4] = [
    "input-differs",
    "ran-though-false",
    "skipped-though-true",
    "unexpected-run",
];

/// `runledger replay --check RUN_ID`.
pub fn check_json(view: &View, run_id: &str) -> Result<Value> {
    let root = view
        .run_or_placeholder(run_id)?
        .ok_or_else(|| not_found(view, run_id))?;
    let Some(tpl) = template_for(view, &root)? else {
        if let Some(parent) = &root.fields.parent_run_id {
            return Err(crate::Error::Invalid(format!(
                "run {run_id:?} is a step under {parent:?}, not a workflow root: check its root"
            )));
        }
        return Err(crate::Error::Invalid(format!(
            "run {run_id:?} has no template to check against: no `Workflow Template` record \
             named by its template/flow, and no `steps` in its input"
        )));
    };
    let children = step_runs(view, run_id)?;
    let mut used = vec![false; children.len()];
    let runs: Vec<Vec<&RunState>> = tpl
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| runs_of(&children, s, i))
        .collect();
    for rs in &runs {
        for r in rs {
            if let Some(p) = children.iter().position(|c| c.run_id == r.run_id) {
                used[p] = true;
            }
        }
    }
    let mut outputs: Vec<(String, Value)> = Vec::new();
    let mut steps = Vec::new();
    let mut divergences = Vec::new();
    for (i, step) in tpl.steps.iter().enumerate() {
        let step_id = step_id_of(step, i);
        let rs = &runs[i];
        let cond_expr = step.get("if").and_then(Value::as_str);
        let cond = cond_expr.is_none_or(|e| eval_condition(e, &outputs));
        let expected = resolve(step.get("input").unwrap_or(&Value::Null), &outputs);
        let mut row = Map::new();
        row.insert("index".into(), json!(i));
        row.insert("step_id".into(), json!(step_id));
        row.insert("if".into(), json!(cond_expr));
        row.insert("condition".into(), json!(cond_expr.map(|_| cond)));
        row.insert(
            "run_ids".into(),
            json!(rs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>()),
        );
        let mut kinds: Vec<&str> = Vec::new();
        let verdict;
        if rs.is_empty() {
            // Not run: a divergence only when the workflow went on past this step.
            let went_on =
                runs[i + 1..].iter().any(|r| !r.is_empty()) || root.status() == Status::Completed;
            verdict = if !cond {
                "skipped"
            } else if went_on {
                kinds.push("skipped-though-true");
                "skipped-though-true"
            } else {
                "not-reached"
            };
        } else {
            if !cond {
                kinds.push("ran-though-false");
            }
            let mut diffs = Vec::new();
            for r in rs {
                let d = json_diff(&expected, &input_of(r));
                if !d.is_empty() {
                    diffs.push(json!({"run_id": r.run_id, "changes": changes_json(&d)}));
                }
            }
            if !diffs.is_empty() {
                kinds.push("input-differs");
                row.insert("expected_input".into(), expected.clone());
                row.insert("input_diffs".into(), Value::Array(diffs));
            }
            if let Some(done) = rs.iter().rev().find(|r| r.status() == Status::Completed) {
                outputs.push((step_id.clone(), output_of(done)));
            }
            verdict = kinds.first().copied().unwrap_or("ok");
            row.insert(
                "status".into(),
                json!(rs.last().map(|r| r.status().as_str())),
            );
        }
        row.insert("verdict".into(), json!(verdict));
        for k in &kinds {
            divergences.push(json!({
                "kind": k,
                "step_index": i,
                "step_id": step_id,
                "run_id": rs.first().map(|r| r.run_id.clone()),
                "if": cond_expr,
            }));
        }
        steps.push(Value::Object(row));
    }
    for (c, used) in children.iter().zip(&used) {
        if !used {
            divergences.push(json!({
                "kind": "unexpected-run",
                "step_index": c.fields.step_index,
                "step_id": c.fields.step_id,
                "run_id": c.run_id,
                "if": null,
            }));
        }
    }
    Ok(json!({
        "run_id": run_id,
        "template": tpl.name,
        "template_source": tpl.source,
        "status": root.status().as_str(),
        "ok": divergences.is_empty(),
        "steps": steps,
        "first_divergence": divergences.first().cloned(),
        "divergences": divergences,
    }))
}
