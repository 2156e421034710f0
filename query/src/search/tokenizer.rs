//! The tokenizer of every searchable text: words for space-separated scripts, overlapping
//! character bigrams for the scripts written without spaces (Chinese, Japanese kana and
//! kanji, Korean hangul).
//!
//! tantivy has no CJK tokenizer of its own. A run of CJK characters `請求書を` becomes the
//! tokens `請求 求書 書を`, each one position after the other, so that a query `請求書`
//! (tokenized the same way into `請求 求書`) is a phrase query that matches wherever the three
//! characters stand together. A lone CJK character between other characters is one token.
//! Every other maximal run of alphanumeric characters is one token (like tantivy's
//! `SimpleTokenizer`); tokens are then lowercased and those over [`MAX_TOKEN_BYTES`] dropped.
//!
//! A query of a single CJK character finds only texts where that character stands alone: it
//! is not indexed on its own inside a longer run.

use tantivy::tokenizer::{
    LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The name the analyzer is registered under in the index's tokenizer manager.
pub const NAME: &str = "runledger_cjk";

/// Tokens longer than this (in bytes) are not indexed (hashes, base64 blobs).
pub const MAX_TOKEN_BYTES: usize = 64;

/// The analyzer: [`CjkBigramTokenizer`], then dropping long tokens, then lowercasing.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(CjkBigramTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES + 1))
        .filter(LowerCaser)
        .build()
}

/// Whether `c` belongs to a script written without spaces between words.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F      // Hiragana
        | 0x30A0..=0x30FF    // Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK unified ideographs extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0x1100..=0x11FF    // Hangul jamo
        | 0x3130..=0x318F    // Hangul compatibility jamo
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // Halfwidth katakana
        | 0x20000..=0x2FA1F  // CJK extensions B.., compatibility supplement
    )
}

/// Words and CJK bigrams; see the module documentation.
#[derive(Clone, Default)]
pub struct CjkBigramTokenizer {
    token: Token,
}

/// The token stream of [`CjkBigramTokenizer`].
pub struct CjkBigramStream<'a> {
    text: &'a str,
    /// Byte offset of the next character to look at.
    pos: usize,
    /// Inside a CJK run: the byte offset of the previous character, whose bigram with the next
    /// character is still to be emitted.
    prev_cjk: Option<usize>,
    token: &'a mut Token,
}

impl Tokenizer for CjkBigramTokenizer {
    type TokenStream<'a> = CjkBigramStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkBigramStream<'a> {
        self.token.reset();
        CjkBigramStream {
            text,
            pos: 0,
            prev_cjk: None,
            token: &mut self.token,
        }
    }
}

impl CjkBigramStream<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn emit(&mut self, from: usize, to: usize) -> bool {
        self.token.position = self.token.position.wrapping_add(1);
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.text.clear();
        self.token.text.push_str(&self.text[from..to]);
        true
    }
}

impl TokenStream for CjkBigramStream<'_> {
    fn advance(&mut self) -> bool {
        // Continue a CJK run: the bigram of the previous character and this one.
        if let Some(prev) = self.prev_cjk.take() {
            if let Some(c) = self.peek().filter(|c| is_cjk(*c)) {
                let start = self.pos;
                self.pos += c.len_utf8();
                self.prev_cjk = Some(start);
                return self.emit(prev, self.pos);
            }
        }
        // Skip separators.
        while let Some(c) = self.peek() {
            if is_cjk(c) || c.is_alphanumeric() {
                break;
            }
            self.pos += c.len_utf8();
        }
        let Some(c) = self.peek() else {
            return false;
        };
        let start = self.pos;
        self.pos += c.len_utf8();
        if is_cjk(c) {
            return match self.peek().filter(|c| is_cjk(*c)) {
                Some(next) => {
                    let second = self.pos;
                    self.pos += next.len_utf8();
                    self.prev_cjk = Some(second);
                    self.emit(start, self.pos)
                }
                None => self.emit(start, self.pos),
            };
        }
        while let Some(c) = self.peek() {
            if is_cjk(c) || !c.is_alphanumeric() {
                break;
            }
            self.pos += c.len_utf8();
        }
        self.emit(start, self.pos)
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut a = analyzer();
        let mut s = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = s.next() {
            out.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        out
    }

    fn texts(text: &str) -> Vec<String> {
        tokens(text).into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn words_are_split_and_lowercased() {
        assert_eq!(
            texts("Invoice 4471, Task-00001 overdue!"),
            ["invoice", "4471", "task", "00001", "overdue"]
        );
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        assert_eq!(
            texts("請求書を送って"),
            ["請求", "求書", "書を", "を送", "送っ", "って"]
        );
        let t = tokens("請求書");
        assert_eq!(t[0], ("請求".to_string(), 0, 0, 6));
        assert_eq!(t[1], ("求書".to_string(), 1, 3, 9));
    }

    #[test]
    fn mixed_scripts() {
        assert_eq!(
            texts("請求書 INV-4471 を送付"),
            ["請求", "求書", "inv", "4471", "を送", "送付"]
        );
        assert_eq!(texts("a書b"), ["a", "書", "b"]);
        assert_eq!(texts("書"), ["書"]);
        assert_eq!(texts(""), Vec::<String>::new());
        assert_eq!(texts("  ,, "), Vec::<String>::new());
    }

    #[test]
    fn positions_are_consecutive() {
        let t = tokens("abc 中文字 def");
        let pos: Vec<usize> = t.iter().map(|t| t.1).collect();
        assert_eq!(pos, [0, 1, 2, 3]);
    }

    #[test]
    fn long_tokens_are_dropped() {
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(texts(&format!("a {long} b")), ["a", "b"]);
    }
}
