//! What every command shares: where the ledger is, how to print, how to open it for reading,
//! and how errors become one line on stderr and an exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ledger::Ledger;

/// Exit code: the command ran and found a problem it reports.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit code: usage or I/O error.
pub const EXIT_ERROR: u8 = 2;

pub struct Ctx {
    pub db: PathBuf,
    pub json: bool,
}

/// An error that exits with code 1 (a reported problem: not found, rejected lines…) instead
/// of 2.
#[derive(Debug)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Problem {}

impl Ctx {
    pub fn new(db: PathBuf, json: bool) -> Self {
        Ctx { db, json }
    }

    /// Opens the ledger for a read command and brings the projections up to the log's head
    /// (when no other process is writing it; that process keeps them current). The search
    /// index is left to `search` ([`Self::open_for_search`]): a command that does not read it
    /// neither waits for it nor fails with it (an index that cannot grow on a full disk).
    pub fn open_for_read(&self) -> anyhow::Result<Ledger> {
        let ledger = self.open_as_is()?;
        catch_up(&ledger)?;
        Ok(ledger)
    }

    /// [`Self::open_for_read`], and the search index brought up to the head too.
    pub fn open_for_search(&self) -> anyhow::Result<Ledger> {
        let ledger = self.open_for_read()?;
        if ledger.is_writable() {
            query::search::catch_up(&ledger).context("bringing the search index up to date")?;
        }
        Ok(ledger)
    }

    /// Opens the ledger for reading, leaving projections and the search index as they are.
    pub fn open_as_is(&self) -> anyhow::Result<Ledger> {
        Ledger::open_existing(&self.db).map_err(map_ledger_error)
    }

    /// Opens (or creates) the ledger for writing.
    pub fn open_for_write(&self) -> anyhow::Result<Ledger> {
        Ledger::open(&self.db).map_err(map_ledger_error)
    }

    /// Prints a JSON document (pretty on a terminal, compact otherwise).
    pub fn print_json(&self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            serde_json::to_string_pretty(v)?
        } else {
            serde_json::to_string(v)?
        };
        write_line(&text)
    }
}

/// Brings the projections up to the log's head (when no other process is writing it; that
/// process keeps them current).
pub fn catch_up(ledger: &Ledger) -> anyhow::Result<()> {
    if ledger.is_writable() {
        ledger::project::catch_up(ledger, &mut |_, _| {})
            .context("bringing projections up to date")?;
    } else if let Some(why) = ledger.cannot_write() {
        // Nobody will bring them up to date: say that the answers are as of an earlier seq.
        let head = ledger.head()?.seq;
        let applied = ledger::project::applied(ledger)?;
        if applied < head {
            let note = format!(
                "runledger: warning: {}: {why}, so its projections stay at seq {applied} of the \
                 log's {head}: answers are as of seq {applied}",
                ledger.path().display()
            );
            eprintln!("{}", terminal_safe(&note, false));
        }
    }
    Ok(())
}

/// Whether human output is coloured: stdout is a terminal and `NO_COLOR` is not set.
pub fn color() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none()
}

/// Writes one line of human output to stdout, [`terminal_safe`]; a closed pipe (`| head`) ends
/// the program quietly.
pub fn out_line(s: &str) -> anyhow::Result<()> {
    write_line(&terminal_safe(s, color()))
}

/// `s` with every control character escaped as Rust writes it (`\u{1b}`, `\n`), except, when
/// `colours`, the colour codes this program writes (`ESC [` numbers among 0, 1 and 30–37
/// `m`). Run ids, operations, record names and prompts come from clients: written raw they
/// could move the cursor, clear the screen, set the terminal's title or clipboard, or fake
/// lines of an audit answer.
pub fn terminal_safe(s: &str, colours: bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let len = match colour_code(rest) {
            Some(len) if colours => {
                out.push_str(&rest[..len]);
                len
            }
            _ => {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
                c.len_utf8()
            }
        };
        rest = &rest[len..];
    }
    out.into()
}

/// The length of the colour code `s` starts with, if it starts with one this program writes.
fn colour_code(s: &str) -> Option<usize> {
    let body = s.strip_prefix("\x1b[")?;
    let end = body.find('m')?;
    let ours = body[..end]
        .split(';')
        .all(|n| matches!(n.parse::<u8>(), Ok(0 | 1 | 30..=37)) && n.len() <= 2);
    ours.then_some(2 + end + 1)
}

/// Writes one line to stdout as it is (JSON, NDJSON); a closed pipe ends the program quietly.
pub fn write_line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

fn map_ledger_error(e: ledger::Error) -> anyhow::Error {
    match e {
        ledger::Error::NotFound(m) => Problem(m).into(),
        other => other.into(),
    }
}

/// Turns a ledger "not found" into a reported problem (exit 1).
pub fn problem_if_not_found<T>(r: ledger::Result<T>) -> anyhow::Result<T> {
    r.map_err(map_ledger_error)
}

/// Prints the error as one line and picks the exit code.
pub fn report_error(e: &anyhow::Error) -> ExitCode {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        // Some errors already name their cause in their own message.
        if !msg.ends_with(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "runledger: {}",
        terminal_safe(&msg, false)
    );
    if e.downcast_ref::<Problem>().is_some() {
        ExitCode::from(EXIT_PROBLEM)
    } else {
        ExitCode::from(EXIT_ERROR)
    }
}

/// Parses an RFC 3339 time (or a date `YYYY-MM-DD`, as its UTC midnight) into ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "{s:?} is not an RFC 3339 time (e.g. 2025-11-21T04:40:00Z) or a date (2025-11-21)"
    ))
}

/// `--at SEQ` / `--at-time T`, shared by every reading command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AtArgs {
    /// Answer as the ledger would have right after event SEQ.
    #[arg(long, value_name = "SEQ", conflicts_with = "at_time")]
    pub at: Option<u64>,
    /// Answer as of the last event ingested at or before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub at_time: Option<i64>,
}

impl AtArgs {
    pub fn resolve(&self, ledger: &Ledger) -> anyhow::Result<Option<u64>> {
        Ok(match (self.at, self.at_time) {
            (Some(s), _) => Some(s),
            (None, Some(t)) => Some(ledger.seq_at_time(t)?),
            (None, None) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_from_events_reach_the_terminal_escaped() {
        let ours = "\x1b[32m✓ completed\x1b[0m \x1b[1;31mfirst\x1b[0m";
        assert_eq!(terminal_safe(ours, true), ours);
        assert_eq!(
            terminal_safe(ours, false),
            "\\u{1b}[32m✓ completed\\u{1b}[0m \\u{1b}[1;31mfirst\\u{1b}[0m"
        );
        // Clearing the screen, concealing text, setting the title, a C1 CSI, a fake line.
        let theirs = "a\x1b[2Jb\x1b[8mc\x1b]0;t\x07d\u{9b}31me\nf\x1b[";
        let want = "a\\u{1b}[2Jb\\u{1b}[8mc\\u{1b}]0;t\\u{7}d\\u{9b}31me\\nf\\u{1b}[";
        assert_eq!(terminal_safe(theirs, true), want);
        assert_eq!(terminal_safe(theirs, false), want);
        assert!(matches!(
            terminal_safe("plain é 🙂", true),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
