//! Label values that come from messages (workflow names, metadata values), made fit for every
//! exposition parser and bounded in length, once, where a series or a value is first created.
//!
//! Two rules, applied in this order:
//!
//! 1. Control characters (Unicode `Cc`: C0, DEL, C1) and the line and paragraph separators
//!    U+2028/U+2029 become U+FFFD. The text format escapes only `\`, `"` and line feed; parsers that
//!    read line by line with universal newlines (Python's file reading, `str.splitlines`) break on
//!    the rest.
//! 2. A value longer than the limit keeps a prefix and ends in `~` and 16 hexadecimal digits of a
//!    hash of the whole original value, so two long values that share a prefix stay two values.
//!
//! A value that needs neither is returned borrowed: the check costs one pass over its bytes.

use std::borrow::Cow;

/// The shortest limit that leaves room for a prefix besides the `~` and the hash.
pub const MIN_LABEL_VALUE_BYTES: usize = 32;

/// `~` and 16 hexadecimal digits.
const HASH_SUFFIX_BYTES: usize = 17;

/// What was done to a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alterations {
    /// Longer than the limit: cut, with a hash.
    pub cut: bool,
    /// Control characters or line separators were replaced.
    pub replaced: bool,
}

impl Alterations {
    pub fn any(self) -> bool {
        self.cut || self.replaced
    }
}

/// Counts of altered values of one label (distinct values, not updates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlterationCounts {
    pub cut: u64,
    pub replaced: u64,
}

impl AlterationCounts {
    pub fn add(&mut self, alterations: Alterations) {
        self.cut += u64::from(alterations.cut);
        self.replaced += u64::from(alterations.replaced);
    }
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` as a label value of at most `max_bytes` bytes (at least [`MIN_LABEL_VALUE_BYTES`]).
pub fn sanitize(text: &str, max_bytes: usize) -> (Cow<'_, str>, Alterations) {
    let max_bytes = max_bytes.max(MIN_LABEL_VALUE_BYTES);
    let replaced = text.chars().any(is_unsafe);
    if !replaced && text.len() <= max_bytes {
        return (Cow::Borrowed(text), Alterations::default());
    }
    let clean: Cow<'_, str> = match replaced {
        true => Cow::Owned(
            text.chars()
                .map(|c| if is_unsafe(c) { '\u{FFFD}' } else { c })
                .collect(),
        ),
        false => Cow::Borrowed(text),
    };
    if clean.len() <= max_bytes {
        return (Cow::Owned(clean.into_owned()), Alterations { cut: false, replaced });
    }
    let mut end = max_bytes - HASH_SUFFIX_BYTES;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let value = format!("{}~{:016x}", &clean[..end], fnv1a(text.as_bytes()));
    (Cow::Owned(value), Alterations { cut: true, replaced })
}

/// FNV-1a, 64 bits: stable across builds and versions, so a cut value keeps its series across a
/// restart or an upgrade.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_are_borrowed_untouched() {
        for text in ["", "DAGWorkflow", "daily-report ünïcode ✓", &"x".repeat(128)] {
            let (value, alterations) = sanitize(text, 128);
            assert!(matches!(value, Cow::Borrowed(_)), "{text:?}");
            assert_eq!(value, text);
            assert!(!alterations.any());
        }
    }

    #[test]
    fn control_characters_and_separators_become_replacement_characters() {
        let (value, alterations) = sanitize("a\0b\rc\nd\te\u{7f}f\u{85}g\u{2028}h\u{2029}i\u{1b}", 128);
        assert_eq!(
            value,
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{FFFD}g\u{FFFD}h\u{FFFD}i\u{FFFD}"
        );
        assert_eq!(
            alterations,
            Alterations {
                cut: false,
                replaced: true
            }
        );
        assert!(!value.chars().any(is_unsafe));
    }

    #[test]
    fn long_values_are_cut_to_the_limit_and_stay_distinct() {
        let a = "w".repeat(1 << 20);
        let b = format!("{}x", "w".repeat((1 << 20) - 1));
        let (cut_a, alterations) = sanitize(&a, 128);
        let (cut_b, _) = sanitize(&b, 128);
        assert!(alterations.cut && !alterations.replaced);
        assert_eq!(cut_a.len(), 128);
        assert_eq!(cut_b.len(), 128);
        assert_ne!(cut_a, cut_b, "values that differ only past the cut stay distinct");
        assert!(cut_a.starts_with(&"w".repeat(111)), "{cut_a}");
        assert_eq!(
            sanitize(&a, 128).0,
            cut_a,
            "the same value is cut the same way every time"
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        for extra in 0..4 {
            let text = format!("{}{}", "a".repeat(extra), "é✓🦀".repeat(100));
            for max in [32, 33, 34, 35, 100] {
                let (value, alterations) = sanitize(&text, max);
                assert!(alterations.cut);
                assert!(value.len() <= max && value.len() > max - 4, "{max}: {value}");
            }
        }
    }

    #[test]
    fn a_value_both_unsafe_and_long_is_replaced_then_cut() {
        let text = format!("{}\r{}", "a".repeat(40), "b".repeat(200));
        let (value, alterations) = sanitize(&text, 64);
        assert_eq!(
            alterations,
            Alterations {
                cut: true,
                replaced: true
            }
        );
        assert!(value.len() <= 64);
        assert!(value.contains('\u{FFFD}'));
        assert!(!value.contains('\r'));
    }

    #[test]
    fn limits_below_the_minimum_are_raised_to_it() {
        let text = "z".repeat(100);
        let (value, _) = sanitize(&text, 1);
        assert_eq!(value.len(), MIN_LABEL_VALUE_BYTES);
    }
}
