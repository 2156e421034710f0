//! Eight bytes at a time ("SWAR"): each byte of a `u64` is tested at once, a match setting that
//! byte's high bit. Borrows can also flag bytes above a match, so only the lowest flag is exact.

/// Whether `bytes` holds a `\`, eight bytes at a time (strings here are short, so this beats a
/// call to `memchr`).
pub(super) fn has_backslash(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(v) = word_at(bytes, at) {
        if bytes_equal(v, b'\\') != 0 {
            return true;
        }
        at += 8;
    }
    bytes.get(at..).is_some_and(|tail| tail.contains(&b'\\'))
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// The eight bytes at `at`, first byte lowest.
#[inline]
pub(super) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    Some(u64::from_le_bytes(word))
}

/// Flags the bytes of `v` equal to `b`.
#[inline]
fn bytes_equal(v: u64, b: u8) -> u64 {
    let x = v ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Flags the bytes of `v` that end a run of plain string text: `"`, `\`, control characters.
#[inline]
pub(super) fn string_stops(v: u64) -> u64 {
    let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
    control | bytes_equal(v, b'"') | bytes_equal(v, b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_byte_tests_find_the_first_match() {
        let text = "abcdefg\"ijklmno\\qrs\u{1f}";
        let bytes = text.as_bytes();
        let stops: Vec<usize> = (0..bytes.len())
            .filter_map(|at| word_at(bytes, at))
            .map(|w| string_stops(w).trailing_zeros() as usize / 8)
            .collect();
        for (at, stop) in stops.iter().enumerate() {
            let expected = bytes[at..at + 8]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(8);
            assert_eq!(*stop, expected, "at {at}");
        }
        assert!(has_backslash(b"0123456789\\"));
        assert!(!has_backslash(b"0123456789abcdef"));
    }
}
