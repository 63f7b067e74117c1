//! Workflow-name globs of threshold overrides: `*` (any run of characters), `?` (one character),
//! `[abc]`, `[a-z]`, `[!a-z]` (one character in, or not in, a set) and `\x` (a literal `x`).
//!
//! A glob is parsed once, when the config is read; a glob that can never match is refused then.
//! The same glob is written as an RE2 regular expression for the alerting rules, so Prometheus
//! selects exactly the workflows the sidecar does.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

/// A parsed glob.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Parses `text`; `Err(why)` when it is malformed or can never match a workflow name.
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty glob matches no workflow name".into());
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    if tokens.last() == Some(&Token::AnyRun) {
                        continue;
                    }
                    Token::AnyRun
                }
                '?' => Token::AnyOne,
                '\\' => match chars.next() {
                    Some(escaped) => Token::Literal(escaped),
                    None => return Err(format!("{text:?} ends with a lone backslash")),
                },
                '[' => {
                    let negated = chars.next_if(|c| *c == '!' || *c == '^').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        let low = if c == '\\' {
                            chars
                                .next()
                                .ok_or_else(|| format!("{text:?} ends with a lone backslash"))?
                        } else {
                            c
                        };
                        let high = if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') | None => {
                                    return Err(format!("{text:?}: a range in [...] lacks its upper end"))
                                }
                                Some(high) => high,
                            }
                        } else {
                            low
                        };
                        if high < low {
                            return Err(format!(
                                "{text:?}: the range {low}-{high} is empty, so it can never match"
                            ));
                        }
                        ranges.push((low, high));
                    }
                    if !closed {
                        return Err(format!("{text:?}: a [ is never closed by ]"));
                    }
                    if ranges.is_empty() && !negated {
                        return Err(format!("{text:?}: [] is an empty set, so it can never match"));
                    }
                    if ranges.is_empty() {
                        return Err(format!("{text:?}: [!] excludes nothing; write ? for any one character"));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(Glob {
            text: text.to_string(),
            tokens,
        })
    }

    /// Whether the two match the same names however they are spelled (`a\-b` and `a-b`, `a**`
    /// and `a*`).
    pub fn same_match(&self, other: &Glob) -> bool {
        self.tokens == other.tokens
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// No wildcard and no set: it names exactly one workflow.
    pub fn is_exact(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// The exact name, when [`Glob::is_exact`].
    pub fn exact_name(&self) -> Option<String> {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Characters the glob pins down (literals): more means more specific.
    pub fn literal_chars(&self) -> usize {
        self.tokens.iter().filter(|t| matches!(t, Token::Literal(_))).count()
    }

    pub fn matches(&self, name: &str) -> bool {
        let chars: Vec<char> = name.chars().collect();
        matches_from(&self.tokens, &chars)
    }

    /// An RE2 expression matching the same names, for a Prometheus `=~` matcher (which anchors it).
    pub fn to_regex(&self) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Literal(c) => push_regex_literal(&mut out, *c),
                Token::AnyOne => out.push('.'),
                Token::AnyRun => out.push_str(".*"),
                Token::Class { negated, ranges } => {
                    out.push('[');
                    if *negated {
                        out.push('^');
                    }
                    for (low, high) in ranges {
                        push_class_char(&mut out, *low);
                        if high != low {
                            out.push('-');
                            push_class_char(&mut out, *high);
                        }
                    }
                    out.push(']');
                }
            }
        }
        out
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Iterative matching with backtracking to the last `*` only: linear in practice, never exponential.
fn matches_from(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match tokens.get(t) {
            Some(Token::AnyRun) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(Token::Literal(c)) => *c == name[n],
            Some(Token::AnyOne) => true,
            Some(Token::Class { negated, ranges }) => {
                ranges.iter().any(|(low, high)| (*low..=*high).contains(&name[n])) != *negated
            }
            None => false,
        };
        if step {
            t += 1;
            n += 1;
        } else if let Some((star_t, star_n)) = star {
            t = star_t + 1;
            n = star_n + 1;
            star = Some((star_t, star_n + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|token| *token == Token::AnyRun)
}

fn push_regex_literal(out: &mut String, c: char) {
    if "\\.+*?()|[]{}^$".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

fn push_class_char(out: &mut String, c: char) {
    if "\\]^-[".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::parse(text).unwrap()
    }

    #[test]
    fn wildcards_sets_and_escapes() {
        assert!(glob("billing-*").matches("billing-eu"));
        assert!(glob("billing-*").matches("billing-"));
        assert!(!glob("billing-*").matches("billing"));
        assert!(glob("*-eu").matches("billing-eu"));
        assert!(glob("a*b*c").matches("a-b-b-c"));
        assert!(!glob("a*b*c").matches("a-b-b-c-d"));
        assert!(glob("job-?").matches("job-1"));
        assert!(!glob("job-?").matches("job-12"));
        assert!(glob("job-[0-9]").matches("job-7"));
        assert!(!glob("job-[!0-9]").matches("job-7"));
        assert!(glob("job-[!0-9]").matches("job-x"));
        assert!(glob("a\\*").matches("a*"));
        assert!(!glob("a\\*").matches("ab"));
        assert!(glob("*").matches(""));
        assert!(glob("ünï*").matches("ünïcode"));
        assert!(glob("exact").is_exact());
        assert!(!glob("ex?ct").is_exact());
        assert_eq!(glob("a\\*b").exact_name().as_deref(), Some("a*b"));
        assert_eq!(glob("billing-*").literal_chars(), 8);
    }

    #[test]
    fn globs_that_can_never_match_are_refused() {
        for (text, why) in [
            ("", "empty glob"),
            ("job-[", "never closed"),
            ("job-[]", "empty set"),
            ("job-[z-a]", "is empty"),
            ("job-[a-]", "upper end"),
            ("job\\", "lone backslash"),
            ("job-[!]x", "excludes nothing"),
        ] {
            let error = Glob::parse(text).expect_err(text);
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_regex_selects_what_the_glob_matches() {
        assert_eq!(glob("billing-*").to_regex(), "billing-.*");
        assert_eq!(glob("a.b?[!x-z]").to_regex(), "a\\.b.[^x-z]");
        assert_eq!(glob("(x)|[\\]]").to_regex(), "\\(x\\)\\|[\\]]");
    }

    #[test]
    fn matching_does_not_explode_on_many_stars() {
        let pattern = glob("*a*a*a*a*a*a*a*a*b");
        let name = "a".repeat(5000);
        assert!(!pattern.matches(&name));
    }
}
