//! `runledger replay RUN_ID`: the subtree's events as NDJSON (ordered by `ts`, then `seq`), with
//! `offset_ms` from the run's start; `--speed X` re-paces them, `--to URL` posts them to another
//! ledger (plain `http://` only: a minimal HTTP/1.1 client, no TLS), `--check` re-resolves a
//! templated workflow and reports where the recorded run diverged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use query::replay::{line, plan, Bounds, Item};
use serde_json::{json, Value};

use crate::ctx::{color, out_line, write_line, AtArgs, Ctx, Problem};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run whose subtree to replay (the whole tree when it is a root).
    pub run_id: String,
    /// Re-emit with the original pacing scaled by X (2 = twice as fast).
    #[arg(long, value_name = "X", value_parser = parse_speed)]
    pub speed: Option<f64>,
    /// POST the events (ingest format v1, NDJSON) to this http:// endpoint, e.g.
    /// http://127.0.0.1:7070/v1/events (the path defaults to /v1/events).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Bearer token for --to.
    #[arg(long, requires = "to")]
    pub token: Option<String>,
    /// Events per POST with --to.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Only events with seq >= this.
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Only events with seq <= this.
    #[arg(long, value_name = "SEQ")]
    pub to_seq: Option<u64>,
    /// Also replay the changes of the `Workflow Template` record the run names (up to the run's
    /// start), so that the copy can be checked with --check on its own.
    #[arg(long)]
    pub with_template: bool,
    /// Re-resolve the workflow's templated step inputs and `if:` conditions from the recorded
    /// outputs and report divergences (exit 1 when any).
    #[arg(long, conflicts_with_all = ["speed", "to", "from_seq", "to_seq", "with_template"])]
    pub check: bool,
    #[command(flatten)]
    pub at: AtArgs,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{s:?} is not a positive speed factor (e.g. 1, 2, 0.5)"
        )),
    }
}

/// Query errors: an unknown run or a run without template is a reported problem (exit 1).
pub(crate) fn answer<T>(r: query::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        query::Error::Ledger(ledger::Error::NotFound(m)) | query::Error::Invalid(m) => {
            Problem(m).into()
        }
        other => other.into(),
    })
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = ctx.open_for_read()?;
    let at = args.at.resolve(&ledger)?;
    let view = ledger.view(at)?;
    if args.check {
        let v = answer(query::check::check_json(&view, &args.run_id))?;
        if ctx.json {
            ctx.print_json(&v)?;
        } else {
            print_check(&v)?;
        }
        let ok = v["ok"].as_bool().unwrap_or(false);
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::ctx::EXIT_PROBLEM)
        });
    }
    let bounds = Bounds {
        from_seq: args.from_seq,
        to_seq: args.to_seq,
        with_template: args.with_template,
    };
    let replay = answer(plan(&view, &args.run_id, bounds))?;
    let pacer = Pacer::new(args.speed, replay.items.first());
    let Some(url) = &args.to else {
        for item in &replay.items {
            pacer.wait(item);
            write_line(&answer(line(view.reader(), item, true))?)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let url = Url::parse(url)?;
    let mut sent = Sent::default();
    let mut body = String::new();
    let mut pending = 0u64;
    for item in &replay.items {
        if pacer.due_in(item) > Duration::ZERO && pending > 0 {
            sent.post(&url, args.token.as_deref(), &mut body, &mut pending)?;
        }
        pacer.wait(item);
        body.push_str(&answer(line(view.reader(), item, false))?);
        body.push('\n');
        pending += 1;
        if pending >= args.batch {
            sent.post(&url, args.token.as_deref(), &mut body, &mut pending)?;
        }
    }
    if pending > 0 {
        sent.post(&url, args.token.as_deref(), &mut body, &mut pending)?;
    }
    let v = json!({
        "run_id": args.run_id,
        "url": url.text,
        "posted": sent.posted,
        "batches": sent.batches,
        "accepted": sent.accepted,
        "duplicates": sent.duplicates,
        "rejected": sent.rejected,
        "errors": sent.errors,
        "last_seq": sent.last_seq,
    });
    if ctx.json {
        ctx.print_json(&v)?;
    } else {
        out_line(&format!(
            "posted {} events of {} in {} batches to {}: {} accepted, {} duplicates, {} rejected",
            sent.posted,
            args.run_id,
            sent.batches,
            url.text,
            sent.accepted,
            sent.duplicates,
            sent.rejected
        ))?;
        for e in &sent.errors {
            out_line(&format!("  rejected: {e}"))?;
        }
    }
    Ok(if sent.rejected > 0 {
        ExitCode::from(crate::ctx::EXIT_PROBLEM)
    } else {
        ExitCode::SUCCESS
    })
}

/// Paces events: event i is due `(offset_i - offset_0) / speed` after the replay began.
struct Pacer {
    speed: Option<f64>,
    began: Instant,
    first_offset: i64,
}

impl Pacer {
    fn new(speed: Option<f64>, first: Option<&Item>) -> Self {
        Pacer {
            speed,
            began: Instant::now(),
            // Events before the run's start (a template record's changes) are not waited for.
            first_offset: first.map_or(0, |i| i.offset_ms.max(0)),
        }
    }
    fn due_in(&self, item: &Item) -> Duration {
        let Some(speed) = self.speed else {
            return Duration::ZERO;
        };
        let ms = (item.offset_ms - self.first_offset).max(0) as f64 / speed;
        let due = Duration::from_secs_f64(ms / 1000.0);
        due.saturating_sub(self.began.elapsed())
    }
    fn wait(&self, item: &Item) {
        let d = self.due_in(item);
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

#[derive(Default)]
struct Sent {
    posted: u64,
    batches: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    errors: Vec<Value>,
    last_seq: Option<u64>,
}

impl Sent {
    fn post(
        &mut self,
        url: &Url,
        token: Option<&str>,
        body: &mut String,
        pending: &mut u64,
    ) -> anyhow::Result<()> {
        let (status, text) = url.post(token, body.as_bytes())?;
        if !(200..300).contains(&status) {
            let why = text.trim();
            bail!(
                "POST {} answered HTTP {status}{}",
                url.text,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {}", why.chars().take(300).collect::<String>())
                }
            );
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        self.accepted += n("accepted");
        self.duplicates += n("duplicates");
        self.rejected += n("rejected");
        if let Some(errs) = v["errors"].as_array() {
            let base = self.posted;
            for e in errs.iter().take(100usize.saturating_sub(self.errors.len())) {
                let mut e = e.clone();
                // `index` counts within the batch; make it count within the whole replay.
                if let Some(i) = e["index"].as_u64() {
                    e["index"] = json!(base + i);
                }
                self.errors.push(e);
            }
        }
        if let Some(s) = v["last_seq"].as_u64() {
            self.last_seq = Some(s);
        }
        self.posted += *pending;
        self.batches += 1;
        *pending = 0;
        body.clear();
        Ok(())
    }
}

/// An `http://host[:port][/path]` URL.
struct Url {
    text: String,
    host: String,
    port: u16,
    path: String,
    authority: String,
}

impl Url {
    fn parse(s: &str) -> anyhow::Result<Url> {
        let Some(rest) = s.strip_prefix("http://") else {
            if s.starts_with("https://") {
                bail!("--to {s}: https is not supported (this build has no TLS); use an http:// URL, e.g. through a local proxy");
            }
            bail!("--to {s}: not an http:// URL (e.g. http://127.0.0.1:7070/v1/events)");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            "/v1/events".to_owned()
        } else {
            path.to_owned()
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .with_context(|| format!("--to {s}: bad IPv6 host"))?;
            (h.to_owned(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p),
                None => (authority.to_owned(), ""),
            }
        };
        let port = if port.is_empty() {
            80
        } else {
            port.parse::<u16>()
                .with_context(|| format!("--to {s}: bad port {port:?}"))?
        };
        if host.is_empty() {
            bail!("--to {s}: no host");
        }
        Ok(Url {
            text: s.to_owned(),
            host,
            port,
            path,
            authority: authority.to_owned(),
        })
    }

    /// One HTTP/1.1 POST of an NDJSON body; the status and the response body.
    fn post(&self, token: Option<&str>, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let what = || format!("POST {}", self.text);
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).with_context(what)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        stream.set_write_timeout(Some(Duration::from_secs(300)))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: runledger/{}\r\n\
             Content-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).with_context(what)?;
        stream.write_all(body).with_context(what)?;
        stream.flush().with_context(what)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).with_context(what)?;
        parse_response(&raw).with_context(what)
    }
}

/// Status and body of a raw HTTP/1.1 response (`Content-Length`, chunked, or until close).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the server closed the connection without a complete HTTP response");
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                if let Ok(n) = v.parse::<usize>() {
                    body = &body[..n.min(body.len())];
                }
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            break;
        };
        b = &b[eol + 2..];
        if size == 0 || size > b.len() {
            out.extend_from_slice(&b[..size.min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
    out
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

fn short(v: &Value) -> String {
    let t = v.to_string();
    if t.chars().count() > 80 {
        format!("{}…", t.chars().take(80).collect::<String>())
    } else {
        t
    }
}

fn print_check(v: &Value) -> anyhow::Result<()> {
    let n = v["divergences"].as_array().map_or(0, Vec::len);
    out_line(&format!(
        "workflow {} ({}, template {} from its {}): {}",
        v["run_id"].as_str().unwrap_or("-"),
        v["status"].as_str().unwrap_or("-"),
        v["template"].as_str().unwrap_or("-"),
        v["template_source"].as_str().unwrap_or("-"),
        if n == 0 {
            paint("32", "follows its template")
        } else {
            paint("31", &format!("{n} divergence(s)"))
        }
    ))?;
    let first = &v["first_divergence"];
    let empty = Vec::new();
    for s in v["steps"].as_array().unwrap_or(&empty) {
        let verdict = s["verdict"].as_str().unwrap_or("-");
        let mark = match verdict {
            "ok" => paint("32", "✓"),
            "skipped" => "·".to_owned(),
            "not-reached" => "…".to_owned(),
            _ => paint("31", "✗"),
        };
        let runs: Vec<&str> = s["run_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let is_first = !first.is_null()
            && first["step_index"] == s["index"]
            && first["kind"] != "unexpected-run";
        let what = match verdict {
            "ran-though-false" => format!(
                "ran although its condition was false: {}",
                s["if"].as_str().unwrap_or("")
            ),
            "skipped-though-true" => format!(
                "did not run although its condition was true: {}",
                s["if"].as_str().unwrap_or("(none)")
            ),
            "input-differs" => "recorded input differs from the re-resolved template input".into(),
            "skipped" => format!(
                "skipped (condition false: {})",
                s["if"].as_str().unwrap_or("")
            ),
            "not-reached" => "not reached (the workflow stopped earlier)".into(),
            "ok" => match s["status"].as_str() {
                Some(st) if st != "completed" => format!("ok (its last run {st})"),
                _ => "ok".into(),
            },
            other => other.to_owned(),
        };
        let mut text = format!(
            "  {mark} {:>2} {:<16} {:<24} {what}",
            s["index"],
            s["step_id"].as_str().unwrap_or("-"),
            runs.join(",")
        );
        if is_first {
            text = paint("1;31", &format!("{text}   ◀ first divergence"));
        }
        out_line(&text)?;
        if let Some(diffs) = s["input_diffs"].as_array() {
            for d in diffs {
                for c in d["changes"].as_array().unwrap_or(&empty) {
                    out_line(&format!(
                        "         {} {} {}: {} → {}",
                        d["run_id"].as_str().unwrap_or("-"),
                        c["change"].as_str().unwrap_or("-"),
                        c["path"].as_str().unwrap_or("-"),
                        c.get("old").map_or("-".into(), short),
                        c.get("new").map_or("-".into(), short),
                    ))?;
                }
            }
        }
    }
    for d in v["divergences"].as_array().unwrap_or(&empty) {
        if d["kind"] == "unexpected-run" {
            out_line(&paint(
                "31",
                &format!(
                    "  ✗ run {} matches no step of the template",
                    d["run_id"].as_str().unwrap_or("-")
                ),
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses() {
        let u = Url::parse("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 7070, "/v1/events")
        );
        let u = Url::parse("http://[::1]:9/x/y").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9, "/x/y")
        );
        assert!(Url::parse("https://a").is_err());
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_str()), (200, "abcde"));
        let (s, b) =
            parse_response(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno").unwrap();
        assert_eq!((s, b.as_str()), (401, "no"));
    }
}
