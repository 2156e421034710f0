//! The template language of workflow templates (`docs/template-language.md`): resolving a
//! step's templated input and its `if:` condition against the recorded outputs of the steps
//! before it. One definition, used by the workload generator to run templates and by
//! `replay --check` to re-resolve recorded workflows.
//!
//! - `{{step-id.output.path}}` — the recorded output of the latest run of that step;
//!   `{{prev.output.path}}` — of the last step that actually ran (completed);
//!   `.length` of an array (or string) counts it; `.N` indexes an array.
//! - A string that is exactly one placeholder resolves to the value itself (null when missing);
//!   placeholders inside longer strings are interpolated as text ("" when missing).
//! - `if:` is interpolated, then compared with `>= <= == != > <` (numbers when both sides
//!   parse as numbers, else text for `==`/`!=`); without an operator it is true unless empty,
//!   `false`, `0` or `null`.

use serde_json::Value;

/// The recorded outputs of the steps that ran so far, in order: `(step id, output)`.
pub type Outputs = [(String, Value)];

/// Looks up `step.output.path[.length]` (or `prev.…`) in the outputs of the earlier steps.
pub fn lookup(path: &str, outputs: &Outputs) -> Option<Value> {
    let mut parts = path.trim().split('.');
    let head = parts.next()?;
    let out = if head == "prev" {
        outputs.last().map(|(_, o)| o)?
    } else {
        outputs
            .iter()
            .rev()
            .find(|(id, _)| id == head)
            .map(|(_, o)| o)?
    };
    if parts.next()? != "output" {
        return None;
    }
    let mut cur = out;
    for part in parts {
        cur = match (cur, part) {
            (Value::Array(a), "length") => return Some(Value::from(a.len())),
            (Value::String(s), "length") => return Some(Value::from(s.chars().count())),
            (Value::Object(m), key) => m.get(key)?,
            (Value::Array(a), idx) => a.get(idx.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur.clone())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces every `{{path}}` in `s` with the text of its value ("" when missing).
pub fn interpolate(s: &str, outputs: &Outputs) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        match rest[open + 2..].find("}}") {
            Some(close) => {
                if let Some(v) = lookup(&rest[open + 2..open + 2 + close], outputs) {
                    out.push_str(&value_text(&v));
                }
                rest = &rest[open + 2 + close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a templated input against the outputs of the earlier steps.
pub fn resolve(v: &Value, outputs: &Outputs) -> Value {
    match v {
        Value::String(s) => {
            let t = s.trim();
            if t.len() >= 4 && t.starts_with("{{") && t.ends_with("}}") && !t[2..].contains("{{") {
                lookup(&t[2..t.len() - 2], outputs).unwrap_or(Value::Null)
            } else if s.contains("{{") {
                Value::String(interpolate(s, outputs))
            } else {
                v.clone()
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, outputs)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), resolve(x, outputs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Evaluates an `if:` condition such as `{{emails.output.data.length}} > 5`.
pub fn eval_condition(expr: &str, outputs: &Outputs) -> bool {
    let text = interpolate(expr, outputs);
    for op in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some(pos) = text.find(op) {
            let lhs = text[..pos].trim();
            let rhs = text[pos + op.len()..].trim();
            return match (lhs.parse::<f64>(), rhs.parse::<f64>()) {
                (Ok(a), Ok(b)) => match op {
                    ">=" => a >= b,
                    "<=" => a <= b,
                    "==" => a == b,
                    "!=" => a != b,
                    ">" => a > b,
                    _ => a < b,
                },
                _ => match op {
                    "==" => lhs == rhs,
                    "!=" => lhs != rhs,
                    _ => false,
                },
            };
        }
    }
    let t = text.trim();
    !(t.is_empty() || t == "false" || t == "0" || t == "null")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resolution_and_conditions() {
        let outputs = vec![
            (
                "emails".to_string(),
                json!({"data": [{"name": "Email-00001"}]}),
            ),
            ("summaries".to_string(), json!({"text": "hello"})),
        ];
        assert_eq!(
            resolve(&json!({"text": "{{emails.output.data}}"}), &outputs),
            json!({"text": [{"name": "Email-00001"}]})
        );
        assert_eq!(
            resolve(&json!({"s": "{{prev.output.text}}"}), &outputs),
            json!({"s": "hello"})
        );
        assert_eq!(
            resolve(&json!("n={{emails.output.data.length}}"), &outputs),
            json!("n=1")
        );
        assert_eq!(
            resolve(&json!("{{emails.output.data.0.name}}"), &outputs),
            json!("Email-00001")
        );
        assert_eq!(resolve(&json!("{{nope.output.x}}"), &outputs), Value::Null);
        assert_eq!(
            resolve(&json!("a {{nope.output.x}}b"), &outputs),
            json!("a b")
        );
        assert_eq!(resolve(&json!("{{unclosed"), &outputs), json!("{{unclosed"));
        assert!(eval_condition(
            "{{emails.output.data.length}} > 0",
            &outputs
        ));
        assert!(!eval_condition(
            "{{emails.output.data.length}} > 5",
            &outputs
        ));
        assert!(!eval_condition(
            "{{missing.output.data.length}} > 0",
            &outputs
        ));
        assert!(eval_condition(
            "{{summaries.output.text}} == hello",
            &outputs
        ));
        assert!(!eval_condition("{{missing.output.text}}", &outputs));
    }
}
