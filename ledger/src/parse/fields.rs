//! The members of one JSON object of an event, read once: the keys the format knows go to slots
//! indexed by [`Key`] (taking a field is a lookup, not a search), any other key is kept in order
//! so that what no rule takes can be stored as it came.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{reject, Res};
use crate::event::JsonText;
use crate::json_scan::{ObjectScanner, Raw, Scan};

/// Every key that some object of the format interprets (the envelope, `run`, `run.options`,
/// `error`), aliases included: the enum, its names, and the lookup by name.
macro_rules! keys {
    ($($key:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Key {
            $($key,)*
        }

        /// Every [`Key`], by its index.
        const ALL_KEYS: &[Key] = &[$(Key::$key,)*];

        impl Key {
            fn of(name: &str) -> Option<Key> {
                Some(match name {
                    $($name => Key::$key,)*
                    _ => return None,
                })
            }

            fn name(self) -> &'static str {
                match self {
                    $(Key::$key => $name,)*
                }
            }
        }
    };
}

keys! {
    Type => "type",
    RunId => "run_id",
    RunIdCamel => "runId",
    Ts => "ts",
    Id => "id",
    Run => "run",
    Path => "path",
    Value => "value",
    Op => "op",
    StepId => "step_id",
    StepIdCamel => "stepId",
    Prompt => "prompt",
    Data => "data",
    Output => "output",
    DurationMs => "duration_ms",
    DurationMsCamel => "durationMs",
    Error => "error",
    Reason => "reason",
    Doctype => "doctype",
    Name => "name",
    Before => "before",
    Status => "status",
    Timestamp => "timestamp",
    Duration => "duration",
    Options => "options",
    Operation => "operation",
    From => "from",
    Into => "into",
    Template => "template",
    Flow => "flow",
    Owner => "owner",
    Agent => "agent",
    Role => "role",
    ParentRunId => "parent_run_id",
    ParentRunIdCamel => "parentRunId",
    ChainId => "chain_id",
    ChainIdCamel => "chainId",
    StepIndex => "step_index",
    StepIndexCamel => "stepIndex",
    Input => "input",
    Message => "message",
    Code => "code",
    Stack => "stack",
}

const KEYS: usize = ALL_KEYS.len();
// Presence is kept as one bit per key.
const _: () = assert!(KEYS <= 64);

impl Key {
    fn bit(self) -> u64 {
        1 << self as u32
    }
}

/// A key no rule knows, with its value and its place in the object.
struct Other<'a> {
    key: Cow<'a, str>,
    /// Written with escapes, so it must be escaped again when stored.
    escaped: bool,
    value: Raw<'a>,
    /// How many known keys come before it.
    known_before: u8,
}

/// Above this many unknown keys, duplicates are found by hashing rather than by comparing.
const LINEAR_DUPLICATE_CHECK: usize = 16;

/// Key/value pairs of one JSON object, values left as raw JSON.
pub(super) struct Fields<'a> {
    /// The raw value of each known key present, by [`Key`].
    values: [Option<Raw<'a>>; KEYS],
    /// The order of each known key among the known keys present.
    seqs: [u8; KEYS],
    /// Known keys present and not taken yet.
    present: u64,
    /// How many known keys were read.
    known: u8,
    others: Vec<Other<'a>>,
    /// See [`usable`](Self::usable).
    usable: bool,
}

impl<'a> Fields<'a> {
    /// No fields yet: [`read`](Self::read) fills them.
    pub(super) fn new() -> Self {
        Fields {
            values: [None; KEYS],
            seqs: [0; KEYS],
            present: 0,
            known: 0,
            others: Vec::new(),
            usable: false,
        }
    }

    /// Reads `text` as one JSON object into these (empty) fields. `Ok(false)` when it does not
    /// start with `{`, which may still be valid JSON; any other JSON value, or a key given
    /// twice, is an error. When the value of `run` is an object, its members are read into
    /// `run` in the same pass (see [`usable`](Self::usable)).
    pub(super) fn read(
        &mut self,
        text: &'a str,
        run: Option<&mut Option<Fields<'a>>>,
    ) -> Scan<bool> {
        let Some(mut object) = ObjectScanner::new(text) else {
            return Ok(false);
        };
        // At the top level a key given twice is an error, so what was read is usable.
        self.usable = self.read_members(&mut object, run)?;
        object.end()?;
        Ok(true)
    }

    /// Whether these fields hold an object read whole: an object value, which
    /// [`read`](Self::read) took apart, with no key given twice and every key decodable.
    pub(super) fn usable(&self) -> bool {
        self.usable
    }

    /// Reads the members of `object`; says whether they are usable.
    fn read_members(
        &mut self,
        object: &mut ObjectScanner<'a>,
        mut run: Option<&mut Option<Fields<'a>>>,
    ) -> Scan<bool> {
        let mut seen_others: Option<HashSet<Cow<'a, str>>> = None;
        // In a nested object, a key given twice or not decodable only makes the object unusable
        // (the line is still valid JSON).
        let mut usable = true;
        object.members(|object, key| {
            if !key.decodable {
                usable = false;
                object.value()?;
                return Ok(());
            }
            let known = Key::of(&key.text);
            let duplicate = match known {
                Some(k) => self.present & k.bit() != 0,
                None => match &mut seen_others {
                    Some(seen) => !seen.insert(key.text.clone()),
                    None => self.others.iter().any(|o| o.key == key.text),
                },
            };
            if duplicate {
                if !object.is_nested() {
                    return Err(object.error_here(format!("duplicate key `{}`", key.text)));
                }
                usable = false;
                object.value()?;
                return Ok(());
            }
            match known {
                Some(k) => {
                    let value = match (k, run.as_deref_mut()) {
                        (Key::Run, Some(slot)) => object.value_with(|o| {
                            let inner = slot.insert(Fields::new());
                            inner.usable = inner.read_members(o, None)?;
                            Ok(())
                        })?,
                        _ => object.value()?,
                    };
                    self.values[k as usize] = Some(value);
                    self.seqs[k as usize] = self.known;
                    self.known += 1;
                    self.present |= k.bit();
                }
                None => {
                    if seen_others.is_none() && self.others.len() >= LINEAR_DUPLICATE_CHECK {
                        let mut seen: HashSet<Cow<'a, str>> =
                            self.others.iter().map(|o| o.key.clone()).collect();
                        seen.insert(key.text.clone());
                        seen_others = Some(seen);
                    }
                    let value = object.value()?;
                    self.others.push(Other {
                        key: key.text,
                        escaped: key.escaped,
                        value,
                        known_before: self.known,
                    });
                }
            }
            Ok(())
        })?;
        if !usable {
            self.present = 0;
            self.others.clear();
        }
        Ok(usable)
    }

    /// Removes and returns the value of the first of `names` present; a second spelling of the
    /// same field is an error (which one should win would be a guess).
    #[inline(always)]
    pub(super) fn take(&mut self, names: &[Key], label: &str) -> Res<Option<Raw<'a>>> {
        let mut found: Option<Key> = None;
        // The second spelling in the object's order, named by the error.
        let mut second: Option<Key> = None;
        for &k in names {
            if self.present & k.bit() == 0 {
                continue;
            }
            self.present &= !k.bit();
            let (first, later) = match found {
                Some(f) if self.seqs[f as usize] < self.seqs[k as usize] => (f, k),
                Some(f) => (k, f),
                None => {
                    found = Some(k);
                    continue;
                }
            };
            found = Some(first);
            second = match second {
                Some(s) if self.seqs[s as usize] < self.seqs[later as usize] => Some(s),
                _ => Some(later),
            };
        }
        if let Some(s) = second {
            return reject(format!(
                "field `{label}` is given twice (as `{}`)",
                s.name()
            ));
        }
        let Some(k) = found else {
            return Ok(None);
        };
        // A JSON null means "not given".
        Ok(self.values[k as usize].filter(|v| v.text() != "null"))
    }

    /// The members no rule took, in the object's order, as a JSON object text; `None` when
    /// there are none.
    #[inline(always)]
    pub(super) fn rest(&mut self) -> Option<JsonText> {
        if self.present == 0 && self.others.is_empty() {
            return None;
        }
        self.write_rest()
    }

    fn write_rest(&mut self) -> Option<JsonText> {
        // Known keys left over, by their order among the known keys.
        let mut left: [Option<Key>; KEYS] = [None; KEYS];
        let mut bits = self.present;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let (Some(k), Some(seq)) = (ALL_KEYS.get(i), self.seqs.get(i)) {
                if let Some(slot) = left.get_mut(usize::from(*seq)) {
                    *slot = Some(*k);
                }
            }
        }
        let mut out = String::with_capacity(64);
        out.push('{');
        let mut next_known = 0;
        for o in std::mem::take(&mut self.others) {
            while next_known < usize::from(o.known_before) {
                if let Some(Some(k)) = left.get(next_known) {
                    self.push_known(&mut out, *k);
                }
                next_known += 1;
            }
            push_member(&mut out, &o.key, o.escaped, o.value.text());
        }
        for k in left.iter().skip(next_known).flatten() {
            self.push_known(&mut out, *k);
        }
        out.push('}');
        Some(out)
    }

    fn push_known(&self, out: &mut String, k: Key) {
        if let Some(value) = self.values[k as usize] {
            push_member(out, k.name(), false, value.text());
        }
    }
}

/// Appends `"key":value` to an object text being written.
fn push_member(out: &mut String, key: &str, escaped: bool, value: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    if escaped {
        out.push_str(&serde_json::Value::String(key.to_owned()).to_string());
    } else {
        // A key read without escapes has no quote, backslash or control character: its text
        // is already its JSON spelling.
        out.push('"');
        out.push_str(key);
        out.push('"');
    }
    out.push(':');
    out.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_round_trip() {
        for (i, k) in ALL_KEYS.iter().enumerate() {
            assert_eq!(*k as usize, i);
            assert_eq!(Key::of(k.name()), Some(*k));
        }
    }
}
