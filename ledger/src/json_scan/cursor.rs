//! The scanner's position in a text, and what it can skip or decode from there.

use std::borrow::Cow;

use super::swar::{string_stops, word_at};
use super::{
    JsonError, Scan, CONTROL_CHARACTER, EOF_LIST, EOF_OBJECT, EOF_STRING, EOF_VALUE,
    EXPECTED_COLON, EXPECTED_IDENT, EXPECTED_LIST_COMMA_OR_END, EXPECTED_OBJECT_COMMA_OR_END,
    EXPECTED_VALUE, INVALID_ESCAPE, INVALID_NUMBER, KEY_MUST_BE_A_STRING, LONE_SURROGATE,
    UNEXPECTED_END_OF_HEX_ESCAPE,
};

/// A position in the text being scanned.
pub(super) struct Cursor<'a> {
    pub(super) text: &'a str,
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Consumes and returns the next byte (nothing at the end).
    #[inline]
    pub(super) fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    pub(super) fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline]
    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// `text[from..to]`. Callers cut only next to ASCII bytes (quotes, brackets, escapes,
    /// delimiters), which are always char boundaries in UTF-8, so the error is unreachable.
    pub(super) fn slice(&self, from: usize, to: usize) -> Scan<&'a str> {
        self.text
            .get(from..to)
            .ok_or_else(|| self.error("internal error: cut inside a character"))
    }

    /// An error about the byte just consumed.
    #[cold]
    pub(super) fn error(&self, message: impl Into<Cow<'static, str>>) -> Box<JsonError> {
        Box::new(JsonError {
            message: message.into(),
            column: self.column_of(self.pos),
        })
    }

    /// An error about the byte not yet consumed.
    #[cold]
    pub(super) fn peek_error(&self, message: &'static str) -> Box<JsonError> {
        Box::new(JsonError {
            message: Cow::Borrowed(message),
            column: self.column_of(self.pos.saturating_add(1)),
        })
    }

    /// The column serde_json gives for `index`: the bytes from the start of its line up to it.
    fn column_of(&self, index: usize) -> usize {
        let bytes = self.text.as_bytes();
        let before = &bytes[..index.min(bytes.len())];
        match before.iter().rposition(|&b| b == b'\n') {
            Some(newline) => before.len() - newline - 1,
            None => before.len(),
        }
    }

    /// Moves to the next `"`, `\` or control character (or the end).
    #[inline]
    pub(super) fn skip_plain_string_bytes(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(v) = word_at(bytes, self.pos) {
            let stops = string_stops(v);
            if stops != 0 {
                self.pos += stops.trailing_zeros() as usize / 8;
                return;
            }
            self.pos += 8;
        }
        while let Some(b) = self.peek() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    /// Reads a string whose opening quote was just consumed, decoding its escapes (surrogates
    /// must pair). Borrows the text when there are none; also says whether there were.
    pub(super) fn decode_string(&mut self) -> Scan<(Cow<'a, str>, bool)> {
        let mut run_start = self.pos;
        let mut owned: Option<String> = None;
        loop {
            self.skip_plain_string_bytes();
            match self.peek() {
                None => return Err(self.error(EOF_STRING)),
                Some(b'"') => {
                    let run = self.slice(run_start, self.pos)?;
                    self.pos += 1;
                    return Ok(match owned {
                        None => (Cow::Borrowed(run), false),
                        Some(mut s) => {
                            s.push_str(run);
                            (Cow::Owned(s), true)
                        }
                    });
                }
                Some(b'\\') => {
                    let run = self.slice(run_start, self.pos)?;
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(run);
                    self.pos += 1;
                    self.decode_escape(s)?;
                    run_start = self.pos;
                }
                Some(_) => {
                    self.pos += 1;
                    return Err(self.error(CONTROL_CHARACTER));
                }
            }
        }
    }

    /// Decodes the escape after a `\` into `out`.
    fn decode_escape(&mut self, out: &mut String) -> Scan<()> {
        let Some(b) = self.next() else {
            return Err(self.error(EOF_STRING));
        };
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.decode_unicode_escape()?,
            _ => return Err(self.error(INVALID_ESCAPE)),
        };
        out.push(c);
        Ok(())
    }

    /// Decodes `XXXX` after `\u`, with the second half when it is a high surrogate.
    fn decode_unicode_escape(&mut self) -> Scan<char> {
        let n = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(self.error(LONE_SURROGATE));
        }
        if !(0xD800..=0xDBFF).contains(&n) {
            return char::from_u32(u32::from(n)).ok_or_else(|| self.error(LONE_SURROGATE));
        }
        for expected in [b'\\', b'u'] {
            match self.next() {
                Some(b) if b == expected => {}
                Some(_) => return Err(self.error(UNEXPECTED_END_OF_HEX_ESCAPE)),
                None => return Err(self.error(EOF_STRING)),
            }
        }
        let low = self.hex4()?;
        if !(0xDC00..=0xDFFF).contains(&low) {
            return Err(self.error(LONE_SURROGATE));
        }
        let c = 0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
        char::from_u32(c).ok_or_else(|| self.error(LONE_SURROGATE))
    }

    /// Four hex digits.
    fn hex4(&mut self) -> Scan<u16> {
        let Some(digits) = self.text.as_bytes().get(self.pos..self.pos + 4) else {
            self.pos = self.text.len();
            return Err(self.error(EOF_STRING));
        };
        self.pos += 4;
        let mut n = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.error(INVALID_ESCAPE)),
            };
            n = (n << 4) | u16::from(v);
        }
        Ok(n)
    }

    /// Skips a string whose opening quote was just consumed, checking its escapes' form only.
    #[inline]
    pub(super) fn skip_string(&mut self) -> Scan<()> {
        loop {
            self.skip_plain_string_bytes();
            match self.peek() {
                None => return Err(self.error(EOF_STRING)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            self.hex4()?;
                        }
                        Some(_) => return Err(self.error(INVALID_ESCAPE)),
                        None => return Err(self.error(EOF_STRING)),
                    }
                }
                // serde_json points at the byte before a control character when skipping.
                Some(_) => return Err(self.error(CONTROL_CHARACTER)),
            }
        }
    }

    /// Consumes the rest of a literal (`null`, `true`, `false`) after its first byte.
    fn skip_literal_rest(&mut self, rest: &[u8]) -> Scan<()> {
        for &expected in rest {
            match self.next() {
                None => return Err(self.error(EOF_VALUE)),
                Some(b) if b != expected => return Err(self.error(EXPECTED_IDENT)),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Skips a number after its optional `-`.
    pub(super) fn skip_number(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                // Only one leading zero.
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_error(INVALID_NUMBER));
                }
            }
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.skip_digits();
            }
            Some(_) => {
                self.pos += 1;
                return Err(self.error(INVALID_NUMBER));
            }
            None => return Err(self.error(INVALID_NUMBER)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.peek_error(INVALID_NUMBER));
            }
            self.skip_digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            match self.next() {
                Some(b'0'..=b'9') => self.skip_digits(),
                _ => return Err(self.error(INVALID_NUMBER)),
            }
        }
        Ok(())
    }

    /// Skips one JSON value of any depth, starting at its first byte.
    pub(super) fn skip_value(&mut self) -> Scan<()> {
        let mut open = OpenContainers::default();
        loop {
            // A value.
            self.skip_whitespace();
            let Some(b) = self.peek() else {
                return Err(self.peek_error(EOF_VALUE));
            };
            self.pos += 1;
            match b {
                b'"' => self.skip_string()?,
                b'-' => self.skip_number()?,
                b'0'..=b'9' => {
                    self.pos -= 1;
                    self.skip_number()?;
                }
                b'n' => self.skip_literal_rest(b"ull")?,
                b't' => self.skip_literal_rest(b"rue")?,
                b'f' => self.skip_literal_rest(b"alse")?,
                b'[' | b'{' => {
                    let object = b == b'{';
                    self.skip_whitespace();
                    match self.peek() {
                        Some(b']') if !object => self.pos += 1,
                        Some(b'}') if object => self.pos += 1,
                        Some(_) => {
                            // Not empty: its first value (after its first key) comes next.
                            open.push(object);
                            if object {
                                self.skip_member_key()?;
                            }
                            continue;
                        }
                        None => {
                            return Err(self.peek_error(if object { EOF_OBJECT } else { EOF_LIST }))
                        }
                    }
                }
                _ => {
                    self.pos -= 1;
                    return Err(self.peek_error(EXPECTED_VALUE));
                }
            }
            // After a value: close the containers that end here, up to a comma.
            loop {
                let Some(object) = open.innermost() else {
                    return Ok(());
                };
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.skip_member_key()?;
                        }
                        break;
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(_) => {
                        return Err(self.peek_error(if object {
                            EXPECTED_OBJECT_COMMA_OR_END
                        } else {
                            EXPECTED_LIST_COMMA_OR_END
                        }));
                    }
                    None => {
                        return Err(self.peek_error(if object { EOF_OBJECT } else { EOF_LIST }));
                    }
                }
            }
        }
    }

    /// Skips `"key":` inside a skipped object.
    fn skip_member_key(&mut self) -> Scan<()> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'"') => self.pos += 1,
            Some(_) => return Err(self.peek_error(KEY_MUST_BE_A_STRING)),
            None => return Err(self.peek_error(EOF_OBJECT)),
        }
        self.skip_string()?;
        self.skip_whitespace();
        match self.peek() {
            Some(b':') => self.pos += 1,
            Some(_) => return Err(self.peek_error(EXPECTED_COLON)),
            None => return Err(self.peek_error(EOF_OBJECT)),
        }
        Ok(())
    }
}

/// The containers enclosing the value being skipped, innermost last (`true` = object): one bit
/// per level, the first 64 levels without allocating.
#[derive(Default)]
struct OpenContainers {
    depth: usize,
    low: u64,
    high: Vec<bool>,
}

impl OpenContainers {
    fn push(&mut self, object: bool) {
        if self.depth < 64 {
            let bit = 1u64 << self.depth;
            if object {
                self.low |= bit;
            } else {
                self.low &= !bit;
            }
        } else {
            self.high.push(object);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.high.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }

    fn innermost(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        if top < 64 {
            Some(self.low & (1u64 << top) != 0)
        } else {
            self.high.last().copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_containers_past_64_levels() {
        let mut open = OpenContainers::default();
        let kinds: Vec<bool> = (0..200).map(|i| i % 3 == 0).collect();
        for &k in &kinds {
            open.push(k);
        }
        for &k in kinds.iter().rev() {
            assert_eq!(open.innermost(), Some(k));
            open.pop();
        }
        assert_eq!(open.innermost(), None);
    }
}
