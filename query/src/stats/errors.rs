//! `stats --errors`: failures grouped by normalised message.

use std::collections::{BTreeMap, HashMap};

use ledger::project::Status;
use serde_json::{json, Value};

use super::{RunRow, TimeRange};

/// Normalises an error message so that failures differing only in numbers, quoted values and
/// ids group together: quoted strings (`"…"`, `'…'`, `` `…` ``) become `"…"`; words that mix
/// digits with letters or separators (ids such as `Task-00042`, `r_17`, UUIDs, hex) become `…`;
/// remaining numbers (with `.`/`,` inside) become `N`.
///
/// # Example
/// ```
/// use query::stats::normalize_message;
/// assert_eq!(normalize_message("timeout after 30000ms"), "timeout after Nms");
/// assert_eq!(normalize_message("Task-00042 not found"), "… not found");
/// assert_eq!(normalize_message("no field 'due' in Task"), "no field '…' in Task");
/// ```
pub fn normalize_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let chars: Vec<char> = msg.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            // A quote closes on the same character; an apostrophe inside a word is not a quote.
            let in_word = c == '\'' && i > 0 && chars[i - 1].is_alphanumeric();
            if let Some(len) = chars[i + 1..].iter().position(|&d| d == c) {
                if !in_word {
                    out.push(c);
                    out.push('…');
                    out.push(c);
                    i += len + 2;
                    continue;
                }
            }
            out.push(c);
            i += 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '-' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push_str(&normalize_word(&word));
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Numbers like 2.5 or 1,000 became N.N / N,N: fold them into one N.
    let mut folded = out.replace("N.N", "N").replace("N,N", "N");
    while folded.contains("N.N") || folded.contains("N,N") {
        folded = folded.replace("N.N", "N").replace("N,N", "N");
    }
    folded
}

fn normalize_word(word: &str) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    if digits == 0 {
        return word.to_owned();
    }
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    let seps = word.chars().filter(|c| matches!(c, '_' | '-')).count();
    let is_hex = word.len() >= 8 && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    // A number with a unit: 30000ms, 5s, 2xx.
    let unit = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let with_unit = unit.len() <= 3 && unit.chars().all(|c| c.is_ascii_alphabetic());
    // An id: digits mixed with separators (Task-00042, r_17, uuid), long hex, or letters and
    // many digits (abc12345).
    if !with_unit && (is_hex || (seps > 0 && letters > 0) || (letters > 0 && digits >= 4)) {
        return "…".to_owned();
    }
    // Otherwise each run of digits is a number: 30000ms → Nms, 503 → N.
    let mut s = String::new();
    let mut prev_digit = false;
    for ch in word.chars() {
        if ch.is_ascii_digit() {
            if !prev_digit {
                s.push('N');
            }
            prev_digit = true;
        } else {
            s.push(ch);
            prev_digit = false;
        }
    }
    s
}

/// `runledger stats --errors`: failed runs grouped by normalised message, most frequent first:
/// `{"failed","errors":[{"message","count","example_run_id","example_message","operations"}]}`.
pub fn errors_json(rows: &[RunRow], range: TimeRange) -> Value {
    struct E<'a> {
        count: u64,
        example: &'a RunRow,
        ops: BTreeMap<&'a str, u64>,
    }
    let mut groups: HashMap<String, E> = HashMap::new();
    let mut failed = 0u64;
    for r in rows {
        if r.status != Status::Failed || !range.contains(r.time_ms()) {
            continue;
        }
        failed += 1;
        let key = normalize_message(r.error.as_deref().unwrap_or(""));
        let e = groups.entry(key).or_insert(E {
            count: 0,
            example: r,
            ops: BTreeMap::new(),
        });
        e.count += 1;
        *e.ops
            .entry(r.operation.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    let mut out: Vec<(String, E)> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    let errors: Vec<Value> = out
        .into_iter()
        .map(|(msg, e)| {
            json!({
                "message": msg,
                "count": e.count,
                "example_run_id": e.example.run_id,
                "example_message": e.example.error,
                "operations": e.ops,
            })
        })
        .collect();
    json!({"failed": failed, "errors": errors})
}
