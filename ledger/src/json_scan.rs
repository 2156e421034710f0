//! A strict, one-pass scanner for the JSON object that an ingest line is.
//!
//! It walks the members of one object, handing out each key decoded and each value as its raw
//! text (an object value can be walked in the same pass), and decodes string values on request.
//! Values are skipped without building anything.
//!
//! The grammar, the checks and the error messages and positions follow serde_json's, which the
//! ledger used before (RFC 8259: no trailing commas, no leading zeros, four-hex-digit `\u`
//! escapes, no control characters in strings), so that lines are accepted and rejected exactly
//! as before:
//! - surrogate pairs are checked only where a string is decoded (keys, and the string values a
//!   caller reads); values that stay raw JSON text keep any `\u` escape;
//! - a value's nesting depth is not limited (serde_json skips raw values without a limit too);
//!   open containers are kept on a bit stack, not the call stack, so depth cannot overflow it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

mod cursor;
mod swar;

use cursor::Cursor;
use swar::has_backslash;

// serde_json's wording, so that rejection reasons read as before.
const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const EOF_VALUE: &str = "EOF while parsing a value";
const EXPECTED_COLON: &str = "expected `:`";
const EXPECTED_LIST_COMMA_OR_END: &str = "expected `,` or `]`";
const EXPECTED_OBJECT_COMMA_OR_END: &str = "expected `,` or `}`";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_VALUE: &str = "expected value";
const INVALID_ESCAPE: &str = "invalid escape";
const INVALID_NUMBER: &str = "invalid number";
const CONTROL_CHARACTER: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const KEY_MUST_BE_A_STRING: &str = "key must be a string";
const LONE_SURROGATE: &str = "lone leading surrogate in hex escape";
const TRAILING_COMMA: &str = "trailing comma";
const TRAILING_CHARACTERS: &str = "trailing characters";
const UNEXPECTED_END_OF_HEX_ESCAPE: &str = "unexpected end of hex escape";

/// A syntax error and where it is: a 1-based column, counted in bytes since the last newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: Cow<'static, str>,
    pub column: usize,
}

/// Errors are rare: boxed, they keep results small enough to be returned in registers.
pub type Scan<T> = Result<T, Box<JsonError>>;

/// The raw text of one value the scanner has checked, as it appears in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    pub fn text(self) -> &'a str {
        self.0
    }

    /// The content of a string value written without escapes: being checked already, it needs
    /// no decoding.
    pub fn plain_str(self) -> Option<&'a str> {
        let content = self.0.strip_prefix('"')?.strip_suffix('"')?;
        (!has_backslash(content.as_bytes())).then_some(content)
    }
}

/// One object key: decoded, and whether the input spelled it with escapes.
pub struct Key<'a> {
    pub text: Cow<'a, str>,
    pub escaped: bool,
    /// False for a key of a nested object whose `\u` escapes name no string (an unpaired
    /// surrogate); `text` is then its raw text.
    pub decodable: bool,
}

/// The members of one JSON object, read in order by [`members`](Self::members); then
/// [`end`](Self::end) checks that nothing follows.
pub struct ObjectScanner<'a> {
    cursor: Cursor<'a>,
    first: bool,
    /// An object inside a value: its syntax errors are reported as for any skipped value, and
    /// its keys are not required to decode.
    nested: bool,
    /// The closing `}` has been read.
    done: bool,
}

impl<'a> ObjectScanner<'a> {
    /// Starts on `text`; `None` when its first byte after whitespace is not `{` (it may still be
    /// valid JSON, just not an object).
    #[inline]
    pub fn new(text: &'a str) -> Option<Self> {
        let mut cursor = Cursor { text, pos: 0 };
        cursor.skip_whitespace();
        if cursor.peek() != Some(b'{') {
            return None;
        }
        cursor.pos += 1;
        Some(Self {
            cursor,
            first: true,
            nested: false,
            done: false,
        })
    }

    /// Whether this scans an object inside a value (see [`value_with`](Self::value_with)).
    #[inline]
    pub fn is_nested(&self) -> bool {
        self.nested
    }

    /// Reads the members to the closing `}`: `member` is given each key, and must read its
    /// value with [`value`](Self::value) or [`value_with`](Self::value_with).
    #[inline]
    pub fn members(&mut self, mut member: impl FnMut(&mut Self, Key<'a>) -> Scan<()>) -> Scan<()> {
        while self.key_start()? {
            // Most keys have no escapes: borrowed as they are.
            let c = &mut self.cursor;
            let start = c.pos;
            c.skip_plain_string_bytes();
            if c.peek() == Some(b'"') {
                let text = c.slice(start, c.pos)?;
                c.pos += 1;
                let key = Key {
                    text: Cow::Borrowed(text),
                    escaped: false,
                    decodable: true,
                };
                member(self, key)?;
            } else {
                // Escapes, or a broken key.
                c.pos = start;
                let key = self.escaped_key()?;
                member(self, key)?;
            }
        }
        Ok(())
    }

    /// Moves past the opening quote of the next key; `false` after the closing `}`.
    #[inline]
    fn key_start(&mut self) -> Scan<bool> {
        if self.done {
            return Ok(false);
        }
        let c = &mut self.cursor;
        c.skip_whitespace();
        match c.peek() {
            None => return Err(c.peek_error(EOF_OBJECT)),
            Some(b'}') => {
                c.pos += 1;
                self.done = true;
                return Ok(false);
            }
            Some(b) if self.first => {
                self.first = false;
                if b != b'"' {
                    return Err(c.peek_error(KEY_MUST_BE_A_STRING));
                }
            }
            Some(b',') => {
                c.pos += 1;
                c.skip_whitespace();
                match c.peek() {
                    Some(b'"') => {}
                    Some(b'}') if !self.nested => return Err(c.peek_error(TRAILING_COMMA)),
                    Some(_) => return Err(c.peek_error(KEY_MUST_BE_A_STRING)),
                    None if !self.nested => return Err(c.peek_error(EOF_VALUE)),
                    None => return Err(c.peek_error(EOF_OBJECT)),
                }
            }
            Some(_) => return Err(c.peek_error(EXPECTED_OBJECT_COMMA_OR_END)),
        }
        c.pos += 1;
        Ok(true)
    }

    /// The key after its opening quote, when it is not plain text.
    #[cold]
    fn escaped_key(&mut self) -> Scan<Key<'a>> {
        let c = &mut self.cursor;
        if !self.nested {
            let (text, escaped) = c.decode_string()?;
            return Ok(Key {
                text,
                escaped,
                decodable: true,
            });
        }
        // Checked as a skipped string is, then decoded apart.
        let start = c.pos - 1;
        c.skip_string()?;
        let raw = c.slice(start, c.pos)?;
        Ok(match decode_string(raw) {
            Some(text) => Key {
                escaped: matches!(text, Cow::Owned(_)),
                text,
                decodable: true,
            },
            None => Key {
                text: Cow::Borrowed(raw),
                escaped: true,
                decodable: false,
            },
        })
    }

    /// The raw text of the value of the key just read.
    #[inline]
    pub fn value(&mut self) -> Scan<Raw<'a>> {
        self.colon()?;
        let c = &mut self.cursor;
        let start = c.pos;
        // Strings and numbers, the most common values, without the container machinery.
        match c.peek() {
            Some(b'"') => {
                c.pos += 1;
                c.skip_string()?;
            }
            Some(b'0'..=b'9') => c.skip_number()?,
            _ => c.skip_value()?,
        }
        Ok(Raw(c.slice(start, c.pos)?))
    }

    #[inline]
    fn colon(&mut self) -> Scan<()> {
        let c = &mut self.cursor;
        c.skip_whitespace();
        match c.peek() {
            Some(b':') => c.pos += 1,
            Some(_) => return Err(c.peek_error(EXPECTED_COLON)),
            None => return Err(c.peek_error(EOF_OBJECT)),
        }
        c.skip_whitespace();
        Ok(())
    }

    /// Like [`value`](Self::value), but when the value is an object, `members` reads it with a
    /// nested scanner (calling its [`members`](Self::members)), so that it is not scanned twice.
    pub fn value_with(
        &mut self,
        members: impl FnOnce(&mut ObjectScanner<'a>) -> Scan<()>,
    ) -> Scan<Raw<'a>> {
        self.colon()?;
        let c = &mut self.cursor;
        let start = c.pos;
        if c.peek() == Some(b'{') {
            let mut inner = ObjectScanner {
                cursor: Cursor {
                    text: c.text,
                    pos: c.pos + 1,
                },
                first: true,
                nested: true,
                done: false,
            };
            members(&mut inner)?;
            if inner.done {
                c.pos = inner.cursor.pos;
            } else {
                // The reader stopped early: the object is checked as any skipped value.
                c.skip_value()?;
            }
        } else {
            c.skip_value()?;
        }
        Ok(Raw(c.slice(start, c.pos)?))
    }

    /// Checks that only whitespace follows the object.
    #[inline]
    pub fn end(&mut self) -> Scan<()> {
        self.cursor.skip_whitespace();
        match self.cursor.peek() {
            Some(_) => Err(self.cursor.peek_error(TRAILING_CHARACTERS)),
            None => Ok(()),
        }
    }

    /// An error about what was just read (such as a key given twice). serde_json places it
    /// where it then looks for the object's end: past whitespace, and past a `}` there.
    pub fn error_here(&self, message: String) -> Box<JsonError> {
        let mut after = Cursor {
            text: self.cursor.text,
            pos: self.cursor.pos,
        };
        after.skip_whitespace();
        if after.peek() == Some(b'}') {
            after.pos += 1;
        }
        after.error(message)
    }
}

/// Checks `text`, one JSON value that is not an object, with serde_json: such a line is rejected
/// whatever it is, and serde_json's own rules for bare values (numbers beyond `f64`, unpaired
/// surrogates in a bare string) keep the reason the same as before.
pub fn check_value(text: &str) -> Scan<()> {
    serde_json::from_str::<AnyValue>(text)
        .map(|AnyValue| ())
        .map_err(|e| {
            // serde_json's messages end with "at line L column C"; the column is kept apart.
            let mut message = e.to_string();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            Box::new(JsonError {
                message: Cow::Owned(message),
                column: e.column(),
            })
        })
}

/// Any JSON value, checked and dropped.
struct AnyValue;

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyValue)
    }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = AnyValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(AnyValue)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(AnyValue)
    }
}

/// Decodes `raw`, the full text of a JSON string value (quotes included); `None` when it is not
/// one, or when it holds a `\u` escape of an unpaired surrogate (no such `String` exists).
pub fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    if raw.as_bytes().first() != Some(&b'"') {
        return None;
    }
    let mut cursor = Cursor { text: raw, pos: 1 };
    match cursor.decode_string() {
        Ok((s, _)) if cursor.pos == raw.len() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The members of `text` as (key, raw value) pairs, and the syntax error if any.
    fn members(text: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let Some(mut object) = ObjectScanner::new(text) else {
            return Err("not an object".into());
        };
        let read = object
            .members(|o, key| {
                let value = o.value()?;
                out.push((key.text.into_owned(), value.text().to_owned()));
                Ok(())
            })
            .and_then(|()| object.end());
        match read {
            Ok(()) => Ok(out),
            Err(e) => Err(format!("{} (column {})", e.message, e.column)),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn members_come_with_raw_values() {
        assert_eq!(
            members(" {\"a\" : [1, {\"b\":null}] ,\"c\\u0064\":\"x\\ty\",\"e\":-1.5e-3}\n"),
            Ok(pairs(&[
                ("a", "[1, {\"b\":null}]"),
                ("cd", "\"x\\ty\""),
                ("e", "-1.5e-3"),
            ]))
        );
        assert_eq!(members("{}"), Ok(vec![]));
        assert!(ObjectScanner::new("[]").is_none());
        assert!(ObjectScanner::new("  ").is_none());
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        let cases = [
            ("{", "EOF while parsing an object (column 1)"),
            ("{\"a\"", "EOF while parsing an object (column 4)"),
            ("{\"a\":", "EOF while parsing a value (column 5)"),
            ("{\"a\":1,", "EOF while parsing a value (column 7)"),
            ("{\"a\":1,}", "trailing comma (column 8)"),
            ("{\"a\":1 \"b\":2}", "expected `,` or `}` (column 8)"),
            ("{\"a\" 1}", "expected `:` (column 6)"),
            ("{1:2}", "key must be a string (column 2)"),
            ("{\"a\":[1,]}", "expected value (column 9)"),
            ("{\"a\":[1}", "expected `,` or `]` (column 8)"),
            ("{\"a\":{\"b\":1,}}", "key must be a string (column 13)"),
            ("{\"a\":01}", "invalid number (column 7)"),
            ("{\"a\":1.}", "invalid number (column 8)"),
            ("{\"a\":1e}", "invalid number (column 8)"),
            ("{\"a\":-x}", "invalid number (column 7)"),
            ("{\"a\":nul}", "expected ident (column 9)"),
            ("{\"a\":\"\\x\"}", "invalid escape (column 8)"),
            ("{\"a\":\"\\u12x4\"}", "invalid escape (column 12)"),
            ("{\"a\":\"\u{1}\"}", control_in_value()),
            (
                "{\"a\u{1}\":1}",
                "control character (\\u0000-\\u001F) found while parsing a string (column 4)",
            ),
            (
                "{\"\\udc00\":1}",
                "lone leading surrogate in hex escape (column 8)",
            ),
            (
                "{\"\\ud800\\u0041\":1}",
                "lone leading surrogate in hex escape (column 14)",
            ),
            ("{\"a\":\"abc", "EOF while parsing a string (column 9)"),
            ("{} {}", "trailing characters (column 4)"),
        ];
        for (text, error) in cases {
            assert_eq!(members(text), Err(error.to_owned()), "{text:?}");
        }
    }

    fn control_in_value() -> &'static str {
        // A skipped string reports the byte before the control character, as serde_json does.
        "control character (\\u0000-\\u001F) found while parsing a string (column 6)"
    }

    #[test]
    fn nested_objects_are_read_in_the_same_pass() {
        let text = r#"{"o":{"x":1,"x":2,"\udc00":3},"p":0}"#;
        let mut object = ObjectScanner::new(text).expect("an object");
        let mut nested = Vec::new();
        object
            .members(|o, key| {
                if key.text == "o" {
                    let raw = o.value_with(|inner| {
                        assert!(inner.is_nested());
                        inner.members(|i, key| {
                            nested.push((key.text.into_owned(), key.decodable));
                            i.value().map(drop)
                        })
                    })?;
                    assert_eq!(raw.text(), r#"{"x":1,"x":2,"\udc00":3}"#);
                } else {
                    o.value()?;
                }
                Ok(())
            })
            .expect("valid JSON");
        object.end().expect("nothing after");
        assert_eq!(
            nested,
            [
                ("x".to_owned(), true),
                ("x".to_owned(), true),
                (r#""\udc00""#.to_owned(), false)
            ]
        );
    }

    #[test]
    fn strings_are_decoded_only_when_they_must_be() {
        assert_eq!(decode_string(r#""plain""#), Some(Cow::Borrowed("plain")));
        assert_eq!(
            decode_string(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#).as_deref(),
            Some("a\"b\\c/d\u{8}\u{c}\n\r\té😀")
        );
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
        ] {
            assert_eq!(decode_string(bad), None, "{bad}");
        }
        for not_a_string in ["", "\"", "x", "\"a\"b\"", "1"] {
            assert_eq!(decode_string(not_a_string), None, "{not_a_string}");
        }
        assert_eq!(Raw("\"abc\"").plain_str(), Some("abc"));
        assert_eq!(Raw("\"abcdefghijk\\n\"").plain_str(), None);
        assert_eq!(Raw("5").plain_str(), None);
    }
}
