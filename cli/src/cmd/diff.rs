//! `runledger diff A B`: two runs, or two trees matched step by step (by `step_id`, else
//! `step_index`, else position) — status, durations, input/output/error as path-level JSON
//! diffs, and the records each changed.

use std::process::ExitCode;

use serde_json::Value;

use crate::cmd::replay::answer;
use crate::ctx::{out_line, AtArgs, Ctx};
use crate::human;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The first run (usually a workflow root).
    pub a: String,
    /// The second run.
    pub b: String,
    #[command(flatten)]
    pub at: AtArgs,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let at = args.at.resolve(&ledger)?;
    let view = ledger.view(at)?;
    let v = answer(query::diff::diff_json(&view, &args.a, &args.b))?;
    if ctx.json {
        ctx.print_json(&v)?;
    } else {
        print(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn short(v: Option<&Value>) -> String {
    let Some(v) = v else { return "∅".into() };
    let t = v.to_string();
    if t.chars().count() > 70 {
        format!("{}…", t.chars().take(70).collect::<String>())
    } else {
        t
    }
}

fn label(side: &Value) -> String {
    if side.is_null() {
        return "(none)".into();
    }
    format!(
        "{} {}{}",
        s(&side["run_id"]),
        s(&side["operation"]),
        side["doctype"]
            .as_str()
            .map(|d| format!(" {d}"))
            .unwrap_or_default()
    )
}

fn records(v: &Value) -> String {
    let empty = Vec::new();
    let list: Vec<String> = v
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| format!("{} {} {}", s(&r["kind"]), s(&r["doctype"]), s(&r["name"])))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    let empty = Vec::new();
    let steps = v["steps"].as_array().unwrap_or(&empty);
    out_line(&format!(
        "diff {} ↔ {}: {}",
        s(&v["a"]),
        s(&v["b"]),
        if v["same"].as_bool() == Some(true) {
            "same steps, inputs, outputs, statuses and record changes".to_owned()
        } else {
            format!("{} of {} steps differ", v["differing_steps"], steps.len())
        }
    ))?;
    for row in steps {
        let indent = "  ".repeat(row["depth"].as_u64().unwrap_or(0) as usize + 1);
        let mark = if row["same"].as_bool() == Some(true) {
            "="
        } else {
            "≠"
        };
        if let Some(only) = row["only"].as_str() {
            let side = &row[only];
            out_line(&format!(
                "{indent}{mark} {}: only in {} — {} {}",
                s(&row["key"]),
                only.to_uppercase(),
                label(side),
                human::status(s(&side["status"]))
            ))?;
            continue;
        }
        out_line(&format!(
            "{indent}{mark} {}: {} ↔ {}",
            s(&row["key"]),
            label(&row["a"]),
            label(&row["b"])
        ))?;
        let st = &row["status"];
        if st["same"].as_bool() != Some(true) {
            out_line(&format!(
                "{indent}    status: {} → {}",
                human::status(s(&st["a"])),
                human::status(s(&st["b"]))
            ))?;
        }
        let d = &row["duration_ms"];
        out_line(&format!(
            "{indent}    duration: {} → {}{}",
            human::duration(&d["a"]),
            human::duration(&d["b"]),
            d["delta"]
                .as_i64()
                .map(|x| format!(" ({x:+} ms)"))
                .unwrap_or_default()
        ))?;
        for part in ["input", "output", "error"] {
            for c in row[part].as_array().unwrap_or(&empty) {
                out_line(&format!(
                    "{indent}    {part} {} {}: {} → {}",
                    s(&c["change"]),
                    s(&c["path"]),
                    short(c.get("old")),
                    short(c.get("new"))
                ))?;
            }
        }
        let r = &row["records"];
        if r["same"].as_bool() != Some(true) {
            out_line(&format!(
                "{indent}    records: {} → {}",
                records(&r["a"]),
                records(&r["b"])
            ))?;
        }
    }
    let r = &v["records"];
    out_line(&format!(
        "records changed by the trees: A {}; B {}",
        r["a"].as_array().map_or(0, Vec::len),
        r["b"].as_array().map_or(0, Vec::len)
    ))
}
