//! `runledger search QUERY`: full-text and JSON-path search over what runs took and gave.

use std::process::ExitCode;

use serde_json::Value;

use crate::cmd::read::RunFilterArgs;
use crate::ctx::{color, out_line, Ctx, Problem};
use crate::human;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "QUERY syntax (tantivy): words must all match (`invoice 4471`); \
    \"a phrase\"; `a OR b`; `-word` excludes; JSON paths `input.where.name:Task-00001`, \
    `output.data.subject:invoice`, `error.code:TIMEOUT`, `data.status:Open` (records' data); \
    `status:failed`, `operation:summarize`; an empty query or `*` matches every run. \
    Chinese and Japanese text is found by its words: `請求書`."
)]
pub struct Args {
    /// What to look for (several words are joined with spaces).
    #[arg(value_name = "QUERY", num_args = 0..)]
    pub query: Vec<String>,
    #[command(flatten)]
    pub filter: RunFilterArgs,
    /// Hits to show at most (0: only count them).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Skip this many hits (paging).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_search()?;
    let req = query::search::SearchRequest {
        query: args.query.join(" "),
        operation: args.filter.operation,
        doctype: args.filter.doctype,
        status: args.filter.status,
        template: args.filter.template,
        owner: args.filter.owner,
        agent: args.filter.agent,
        since_ms: args.filter.since,
        until_ms: args.filter.until,
        limit: args.limit,
        offset: args.offset,
    };
    let v = match query::search::search(&ledger, &req) {
        Ok(v) => v,
        Err(query::Error::BadQuery(m)) => return Err(anyhow::anyhow!(m)),
        Err(query::Error::Index(m)) if m.contains("no search index yet") => {
            return Err(Problem(m).into())
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        ctx.print_json(&v)?;
    } else {
        print_human(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The snippet on one line, its highlights in bold on a terminal.
fn snippet_line(hit: &Value) -> String {
    let text = s(&hit["snippet"]);
    let chars: Vec<char> = text.chars().collect();
    let mut marks: Vec<(usize, usize)> = hit["highlights"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r[0].as_u64()? as usize, r[1].as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    marks.sort_unstable();
    let (on, off) = if color() {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut out = String::new();
    let mut at = 0;
    for (a, b) in marks {
        let (a, b) = (a.min(chars.len()), b.min(chars.len()));
        if a < at {
            continue;
        }
        out.extend(&chars[at..a]);
        out.push_str(on);
        out.extend(&chars[a..b]);
        out.push_str(off);
        at = b;
    }
    out.extend(&chars[at..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_human(v: &Value) -> anyhow::Result<()> {
    let total = v["total"].as_u64().unwrap_or(0);
    let hits = v["hits"].as_array().map(Vec::as_slice).unwrap_or_default();
    let offset = v["offset"].as_u64().unwrap_or(0);
    if hits.is_empty() {
        out_line(&if total == 0 {
            "no runs match".to_string()
        } else {
            format!("{total} runs match (none past offset {offset})")
        })?;
        return Ok(());
    }
    out_line(&format!(
        "{total} run{} match; {}–{}:",
        if total == 1 { "" } else { "s" },
        offset + 1,
        offset + hits.len() as u64
    ))?;
    for h in hits {
        out_line(&format!(
            "{} {} {} {} {:>6.2}",
            human::status_cell(s(&h["status"]), 14),
            human::cell(s(&h["run_id"]), 26),
            human::cell(s(&h["operation"]), 12),
            human::cell(s(&h["doctype"]), 18),
            h["score"].as_f64().unwrap_or(0.0),
        ))?;
        let line = snippet_line(h);
        if !line.is_empty() {
            out_line(&format!("    {line}"))?;
        }
    }
    Ok(())
}
