//! Human output of the reading commands: short tables and indented trees, colour on a TTY.

use serde_json::Value;

use crate::ctx::{color, out_line};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `text` as a table cell at least `width` characters wide: escaped as [`out_line`] escapes it,
/// then padded (`{:<width}` pads first, so the escaping of an id's control characters shifted
/// every column after it).
pub fn cell(text: &str, width: usize) -> String {
    let safe = crate::ctx::terminal_safe(text, false);
    format!("{safe:<width$}")
}

/// [`status`] as a cell `width` characters wide: padded before it is coloured (the colour codes
/// take no columns on the terminal, but `{:<width}` counts them).
pub fn status_cell(st: &str, width: usize) -> String {
    let (mark, code) = status_mark(st);
    let text = cell(&format!("{mark} {st}"), width);
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text
    }
}

fn status_mark(st: &str) -> (&'static str, &'static str) {
    match st {
        "completed" => ("✓", "32"),
        "failed" => ("✗", "31"),
        "cancelled" => ("⊘", "33"),
        "waiting" => ("⏸", "36"),
        _ => ("…", "34"),
    }
}

/// A status with its mark, coloured on a terminal.
pub fn status(st: &str) -> String {
    status_cell(st, 0)
}

pub fn duration(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if ms >= 1000 => format!("{:.2}s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms}ms"),
        None => "-".into(),
    }
}

fn compact(v: &Value, max: usize) -> String {
    let t = v.to_string();
    if t.chars().count() > max {
        let cut: String = t.chars().take(max).collect();
        format!("{cut}…")
    } else {
        t
    }
}

pub fn show(v: &Value) -> anyhow::Result<()> {
    out_line(&format!(
        "run {}  {}",
        s(&v["run_id"]),
        status(s(&v["status"]))
    ))?;
    for k in [
        "operation",
        "doctype",
        "template",
        "flow",
        "parent_run_id",
        "chain_id",
        "step_id",
        "step_index",
        "owner",
        "agent",
        "role",
        "started_at",
        "ended_at",
    ] {
        if !v[k].is_null() {
            out_line(&format!(
                "  {k:<14} {}",
                v[k].as_str().map_or(v[k].to_string(), str::to_owned)
            ))?;
        }
    }
    out_line(&format!(
        "  {:<14} {}",
        "duration",
        duration(&v["duration_ms"])
    ))?;
    for k in ["input", "output", "error", "waiting_prompt"] {
        if !v[k].is_null() {
            out_line(&format!("  {k:<14} {}", compact(&v[k], 160)))?;
        }
    }
    if let Some(c) = v["children"].as_array() {
        if !c.is_empty() {
            let ids: Vec<&str> = c.iter().map(s).collect();
            out_line(&format!("  {:<14} {}", "children", ids.join(", ")))?;
        }
    }
    out_line(&format!("  {:<14} {}", "events", v["events"]))
}

pub fn runs(v: &Value) -> anyhow::Result<()> {
    let empty = Vec::new();
    let runs = v["runs"].as_array().unwrap_or(&empty);
    out_line(&format!(
        "{:<28} {:<12} {:<18} {:<14} {:<24} {:>9}",
        "RUN", "OPERATION", "DOCTYPE", "STATUS", "STARTED", "DURATION"
    ))?;
    for r in runs {
        out_line(&format!(
            "{} {} {} {} {:<24} {:>9}",
            cell(s(&r["run_id"]), 28),
            cell(s(&r["operation"]), 12),
            cell(s(&r["doctype"]), 18),
            status_cell(s(&r["status"]), 14),
            s(&r["started_at"]),
            duration(&r["duration_ms"])
        ))?;
    }
    out_line(&format!("{} of {} runs", runs.len(), v["total"]))
}

pub fn tree(v: &Value) -> anyhow::Result<()> {
    fn node(v: &Value, prefix: &str, last: bool, top: bool) -> anyhow::Result<()> {
        let branch = if top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let step = match (v["step_id"].as_str(), v["step_index"].as_i64()) {
            (Some(id), _) => format!(" [{id}]"),
            (None, Some(i)) => format!(" [#{i}]"),
            _ => String::new(),
        };
        let doctype = v["doctype"]
            .as_str()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        let mut line = format!(
            "{prefix}{branch}{} {}{doctype}{step}  {}  {}",
            s(&v["run_id"]),
            s(&v["operation"]),
            status(s(&v["status"])),
            duration(&v["duration_ms"])
        );
        if let Some(m) = v["error"]["message"].as_str() {
            line.push_str(&format!("  — {m}"));
        }
        if let Some(p) = v["waiting_prompt"].as_str() {
            line.push_str(&format!("  — waiting: {p}"));
        }
        if let Some(n) = v["more_children"].as_u64() {
            line.push_str(&format!("  (+{n} children below --depth)"));
        }
        out_line(&line)?;
        let kids = v["children"].as_array().cloned().unwrap_or_default();
        let child_prefix = if top {
            prefix.to_string()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        for (i, k) in kids.iter().enumerate() {
            node(k, &child_prefix, i + 1 == kids.len(), false)?;
        }
        Ok(())
    }
    node(v, "", true, true)?;
    if v["cycle"].as_bool() == Some(true) {
        out_line("(parent links form a cycle: the walk stopped at the first run seen twice)")?;
    }
    Ok(())
}

fn provenance(label: &str, p: &Value) -> anyhow::Result<()> {
    if p.is_null() {
        return Ok(());
    }
    let template = p["template"]
        .as_str()
        .map(|t| format!(" from template {t}"))
        .unwrap_or_default();
    out_line(&format!(
        "{label} run {} in workflow {}{template}",
        s(&p["run_id"]),
        s(&p["root_run"])
    ))?;
    let steps: Vec<String> = p["lineage"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| match x["step_id"].as_str() {
                    Some(st) => format!("{} ({} {st})", s(&x["run_id"]), s(&x["operation"])),
                    None => format!("{} ({})", s(&x["run_id"]), s(&x["operation"])),
                })
                .collect()
        })
        .unwrap_or_default();
    out_line(&format!("  lineage: {}", steps.join(" → ")))?;
    if p["cycle"].as_bool() == Some(true) {
        out_line("  (parent links form a cycle)")?;
    }
    Ok(())
}

pub fn trace(v: &Value) -> anyhow::Result<()> {
    let deleted = if v["deleted"].as_bool() == Some(true) {
        "  (deleted)"
    } else {
        ""
    };
    out_line(&format!("{} {}{deleted}", s(&v["doctype"]), s(&v["name"])))?;
    provenance("created by", &v["created_by"])?;
    provenance("last modified by", &v["last_modified_by"])?;
    out_line("history:")?;
    if let Some(h) = v["history"].as_array() {
        for e in h {
            let data = if e["data"].is_null() {
                String::new()
            } else {
                compact(&e["data"], 100)
            };
            out_line(&format!(
                "  seq {:<8} {}  {:<8} by {}  {data}",
                e["seq"],
                s(&e["ts"]),
                s(&e["kind"]),
                s(&e["run_id"])
            ))?;
        }
    }
    Ok(())
}

pub fn effects(v: &Value) -> anyhow::Result<()> {
    let empty = Vec::new();
    let changes = v["changes"].as_array().unwrap_or(&empty);
    for c in changes {
        out_line(&format!(
            "seq {:<8} {:<8} {} {}  (run {})",
            c["seq"],
            s(&c["kind"]),
            s(&c["doctype"]),
            s(&c["name"]),
            s(&c["run_id"])
        ))?;
    }
    out_line(&format!("{} record changes", changes.len()))
}

pub fn state(v: &Value) -> anyhow::Result<()> {
    out_line(&format!(
        "as of seq {}: loading {}",
        v["at_seq"],
        v["is_loading"].as_bool().unwrap_or(false)
    ))?;
    match v["current_run"].as_object() {
        Some(_) => out_line(&format!(
            "current run: {} {} {}",
            s(&v["current_run"]["run_id"]),
            s(&v["current_run"]["operation"]),
            s(&v["current_run"]["doctype"])
        ))?,
        None => out_line("current run: none")?,
    }
    if let Some(p) = v["active_pipelines"].as_object() {
        out_line(&format!("active pipelines: {}", p.len()))?;
        for (root, ids) in p.iter().take(20) {
            let n = ids.as_array().map_or(0, |a| a.len());
            out_line(&format!("  {root}: {n} active"))?;
        }
    }
    let empty = Vec::new();
    let active = v["active_runs"].as_array().unwrap_or(&empty);
    out_line(&format!("active runs: {}", active.len()))?;
    for r in active.iter().take(20) {
        out_line(&format!(
            "  {} {} {}",
            s(&r["run_id"]),
            s(&r["operation"]),
            status(s(&r["status"]))
        ))?;
    }
    Ok(())
}
