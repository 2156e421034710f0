//! Stored JSON text as a `serde_json::Value`, at any nesting depth.
//!
//! Ingest accepts payloads nested to any depth (the scanner keeps open containers on a bit
//! stack), and answers that pass stored text through (`show --json`, replay, export) keep it as
//! it is. But serde_json refuses to build a `Value` deeper than 128 levels, to protect the call
//! stack; a plain `from_str` made such a payload `null` — in a fold, in `trace`'s record data —
//! or failed a whole answer. [`value_of`] keeps the first [`VALUE_DEPTH`] levels as JSON and each
//! container below them as a string holding its JSON text: nothing is lost, and what walks the
//! value (folds, diffs, the search index, human output) stays within a bounded depth.

use serde_json::Value;

/// Levels of nesting kept as JSON when a text is too deep for serde_json (whose limit is 128).
pub const VALUE_DEPTH: usize = 100;

/// `text` as a value; `None` when it is not JSON. Containers nested deeper than serde_json
/// accepts are kept as strings of their JSON text below [`VALUE_DEPTH`] levels.
pub fn value_of(text: &str) -> Option<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(_) => serde_json::from_str(&clip_depth(text, VALUE_DEPTH)?).ok(),
    }
}

/// Replaces each container of `v` below `levels` levels with a string of its JSON text (with
/// `levels` 0, `v` itself).
pub fn clip_value(v: &mut Value, levels: usize) {
    match v {
        Value::Array(_) | Value::Object(_) if levels == 0 => *v = Value::String(v.to_string()),
        Value::Array(a) => a.iter_mut().for_each(|x| clip_value(x, levels - 1)),
        Value::Object(m) => m.values_mut().for_each(|x| clip_value(x, levels - 1)),
        _ => {}
    }
}

/// [`value_of`], `null` when the text is absent or not JSON.
pub fn value_or_null(text: Option<&str>) -> Value {
    text.and_then(value_of).unwrap_or(Value::Null)
}

/// Rewrites `text` so that every container opened at depth `max + 1` becomes a JSON string of
/// its text. `None` when there was nothing to clip (the text is not too deep, so it failed to
/// parse for another reason) or the brackets do not match.
fn clip_depth(text: &str, max: usize) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut depth = 0usize;
    // Where the container being clipped starts, while inside one.
    let mut clip_start: Option<usize> = None;
    // Where the text not yet copied to `out` starts.
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth == max + 1 {
                        out.push_str(text.get(copied..i)?);
                        clip_start = Some(i);
                    }
                }
                b'}' | b']' => {
                    if depth == max + 1 {
                        let start = clip_start.take()?;
                        let inner = text.get(start..=i)?;
                        out.push_str(&serde_json::to_string(inner).ok()?);
                        copied = i + 1;
                    }
                    depth = depth.checked_sub(1)?;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if copied == 0 || depth != 0 {
        return None;
    }
    out.push_str(text.get(copied..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `leaf` inside levels `from..to` of containers: objects `{"k": …}` at even levels,
    /// arrays at odd ones.
    fn levels(from: usize, to: usize, leaf: &str) -> String {
        let mut s = String::new();
        for i in from..to {
            s.push_str(if i % 2 == 0 { "{\"k\":" } else { "[" });
        }
        s.push_str(leaf);
        for i in (from..to).rev() {
            s.push(if i % 2 == 0 { '}' } else { ']' });
        }
        s
    }

    fn nested(depth: usize, leaf: &str) -> String {
        levels(0, depth, leaf)
    }

    #[test]
    fn text_serde_json_reads_is_read_as_it_is() {
        for text in [r#"{"a":[1,2,{"b":"}]\"["}]}"#, "[]", "\"x\"", "3"] {
            assert_eq!(
                value_of(text),
                serde_json::from_str::<Value>(text).ok(),
                "{text}"
            );
        }
        let ok = nested(120, "1");
        assert_eq!(value_of(&ok), serde_json::from_str::<Value>(&ok).ok());
        assert_eq!(value_of("{\"a\":"), None);
        assert_eq!(value_or_null(None), Value::Null);
    }

    #[test]
    fn values_are_clipped_to_their_levels() {
        let mut v = value_of(&nested(5, "1")).expect("a value");
        clip_value(&mut v, 2);
        assert_eq!(bottom(&v), (2, &Value::String(levels(2, 5, "1"))));
        let mut flat = Value::from(3);
        clip_value(&mut flat, 0);
        assert_eq!(flat, Value::from(3));
        let mut top = value_of("[1]").expect("a value");
        clip_value(&mut top, 0);
        assert_eq!(top, Value::from("[1]"));
    }

    /// Follows the first member down to a value that is not a container: how many levels
    /// that took, and the value.
    fn bottom(mut v: &Value) -> (usize, &Value) {
        let mut levels = 0;
        loop {
            v = match v {
                Value::Object(m) => &m["k"],
                Value::Array(a) => &a[0],
                leaf => return (levels, leaf),
            };
            levels += 1;
        }
    }

    /// Below `VALUE_DEPTH` levels, each container is its JSON text: nothing is lost, and
    /// brackets and quotes inside strings do not count.
    #[test]
    fn deep_text_keeps_its_bottom_as_text() {
        let leaf = r#""a \"quoted\" ] } [ { word""#;
        for depth in [129, 300, 100_000] {
            let v = value_of(&nested(depth, leaf)).expect("a value");
            let rest = levels(VALUE_DEPTH, depth, leaf);
            assert_eq!(bottom(&v), (VALUE_DEPTH, &Value::String(rest)), "{depth}");
        }
        // Two deep siblings in an array (level 1), each clipped on its own.
        let v = value_of(&format!("[{},{}]", nested(200, "1"), nested(150, "2"))).expect("a value");
        let kept = VALUE_DEPTH - 1;
        let first = Value::String(levels(kept, 200, "1"));
        let second = Value::String(levels(kept, 150, "2"));
        assert_eq!(bottom(&v[0]), (kept, &first));
        assert_eq!(bottom(&v[1]), (kept, &second));
    }
}
