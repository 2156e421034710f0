//! `runledger timeline RUN_ID`: a terminal waterfall of a run tree — one bar per run on a shared
//! time axis, waiting periods (`░`) and failures (`✗`) marked, the critical path (`*`, bold on a
//! terminal) highlighted. `--json` gives the rows.

use std::io::IsTerminal;
use std::process::ExitCode;

use query::timeline::{timeline, Row, Timeline};
use serde_json::json;

use crate::cmd::replay::answer;
use crate::ctx::{color, out_line, AtArgs, Ctx};
use crate::human;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run whose tree to draw.
    pub run_id: String,
    /// Total width in columns (default: $COLUMNS, else 100).
    #[arg(long, value_parser = clap::value_parser!(u16).range(40..))]
    pub width: Option<u16>,
    #[command(flatten)]
    pub at: AtArgs,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let at = args.at.resolve(&ledger)?;
    let view = ledger.view(at)?;
    let tl = answer(timeline(&view, &args.run_id))?;
    if ctx.json {
        ctx.print_json(&tl.to_json())?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = args
        .width
        .map(usize::from)
        .or_else(terminal_width)
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse::<usize>().ok())
        })
        .unwrap_or(100)
        .max(40);
    draw(&tl, width)?;
    Ok(ExitCode::SUCCESS)
}

/// The terminal's width when stdout is one (asked of `stty size` on the controlling terminal).
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse::<usize>().ok()
}

fn label(r: &Row) -> String {
    let step = match (&r.run.fields.step_id, r.run.fields.step_index) {
        (Some(id), _) => format!(" [{id}]"),
        (None, Some(i)) => format!(" [#{i}]"),
        _ => String::new(),
    };
    format!(
        "{}{} {}{step}",
        "  ".repeat(r.depth.min(12)),
        r.run.run_id,
        r.run.fields.operation.as_deref().unwrap_or("?"),
    )
}

fn fit(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len > n {
        let cut: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{s}{}", " ".repeat(n - len))
    }
}

/// The bar of one run over `cols` columns of the axis `[t0, t1]`.
fn bar(tl: &Timeline, r: &Row, cols: usize) -> String {
    let span = (tl.t1 - tl.t0).max(1) as f64;
    let col = |t: i64| ((t - tl.t0) as f64 / span * cols as f64).clamp(0.0, cols as f64);
    let c0 = (col(r.start).floor() as usize).min(cols.saturating_sub(1));
    let end = r.end.unwrap_or(tl.t1);
    let c1 = (col(end).ceil() as usize).clamp(c0 + 1, cols);
    let mut cells = vec![' '; cols];
    for cell in cells.iter_mut().take(c1).skip(c0) {
        *cell = '█';
    }
    for w in &r.waits {
        let w0 = (col(w.from).floor() as usize).min(cols.saturating_sub(1));
        let w1 = (col(w.to.unwrap_or(end)).ceil() as usize).clamp(w0 + 1, cols);
        for cell in cells.iter_mut().take(w1).skip(w0) {
            *cell = '░';
        }
    }
    let last = c1 - 1;
    match r.run.status() {
        ledger::project::Status::Failed => cells[last] = '✗',
        ledger::project::Status::Cancelled => cells[last] = '⊘',
        s if !s.is_terminal() => cells[last] = '▸',
        _ => {}
    }
    cells.into_iter().collect()
}

fn draw(tl: &Timeline, width: usize) -> anyhow::Result<()> {
    let label_w = (width / 3).clamp(16, 44);
    let tail_w = 22;
    let cols = width.saturating_sub(label_w + tail_w + 4).max(10);
    let paint = color();
    for r in &tl.rows {
        let mark = if r.critical { "*" } else { " " };
        let mut name = format!("{mark}{}", fit(&label(r), label_w));
        if paint && r.critical {
            name = format!("\x1b[1m{name}\x1b[0m");
        }
        let mut b = bar(tl, r, cols);
        if paint {
            let code = match r.run.status() {
                ledger::project::Status::Failed => "31",
                ledger::project::Status::Waiting => "36",
                ledger::project::Status::Cancelled => "33",
                _ if r.critical => "1;33",
                _ => "34",
            };
            b = format!("\x1b[{code}m{b}\x1b[0m");
        }
        let dur = human::duration(&json!(r.run.duration_ms()));
        out_line(&format!(
            "{name} │{b}│ {dur:>8} {}",
            human::status(r.run.status().as_str())
        ))?;
    }
    let span = tl.t1 - tl.t0;
    let end_label = human::duration(&json!(span));
    let axis_pad = cols.saturating_sub(1 + end_label.chars().count());
    out_line(&format!(
        " {} └0{}{end_label}┘",
        " ".repeat(label_w),
        "─".repeat(axis_pad)
    ))?;
    out_line(&format!(
        "{} runs; * critical path ({} runs); █ running  ░ waiting  ✗ failed  ⊘ cancelled  ▸ still open",
        tl.rows.len(),
        tl.rows.iter().filter(|r| r.critical).count()
    ))?;
    if tl.cycle {
        out_line("(parent links form a cycle: the walk stopped at the first run seen twice)")?;
    }
    Ok(())
}
