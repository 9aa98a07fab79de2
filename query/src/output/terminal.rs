//! The one escaping rule for text shown on a terminal: every human-readable writer (the
//! query table, `ledgerctl`'s tables, entry and policy views, error messages) passes what
//! it did not write itself through [`line`] or [`text`].
//!
//! Entry fields, agent names, policies and daemon messages come from writers and admins,
//! so they may hold escape sequences (ESC `[`…, OSC 8 links, a cleared screen) or
//! characters that reorder or hide what the auditor reads (U+202E RIGHT-TO-LEFT OVERRIDE
//! makes `exe.txt` read `txt.exe`). Escaped are:
//!
//! - every control character (C0 U+0000–U+001F, DEL U+007F, C1 U+0080–U+009F);
//! - the bidirectional controls: U+061C, U+200E, U+200F, the embeddings and overrides
//!   U+202A–U+202E and the isolates U+2066–U+2069;
//! - the other invisible format characters (Unicode category Cf: zero-width spaces and
//!   joiners, word joiner, invisible operators, byte-order mark, soft hyphen, tag
//!   characters, interlinear annotation marks, …) and the line and paragraph separators
//!   U+2028, U+2029.
//!
//! An escaped character is written as Rust writes it: `\n`, `\t`, `\r`, else `\u{1b}`,
//! `\u{202e}`. Everything else (any script, emoji without joiners) is shown as is.

use std::borrow::Cow;

/// `s` for one line of a terminal: nothing in it can move the cursor, change colours,
/// start a new line or reorder the text; see the module documentation.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// `s` as a multi-line document (a policy, a diff, an error with its caret lines): as
/// [`line`], except that line feeds and tabs stay as they are.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// Whether the rule escapes `c` (line feeds and tabs included).
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_format(c)
}

fn escape(s: &str, keep: fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) || keep(c) {
            out.push(c);
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.extend(c.escape_unicode());
        }
    }
    Cow::Owned(out)
}

/// Unicode general category Cf (format), as of Unicode 16, plus the line and paragraph
/// separators (Zl, Zp).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_bidi_and_invisible_characters() {
        assert_eq!(line("plain é 漢字 🙂"), "plain é 漢字 🙂");
        assert!(matches!(line("plain"), Cow::Borrowed(_)));
        assert_eq!(line("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(line("x\u{7f}\u{85}\u{9b}y"), "x\\u{7f}\\u{85}\\u{9b}y");
        assert_eq!(line("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        for c in
            ['\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{FEFF}', '\u{2028}', '\u{E0041}']
        {
            assert_eq!(line(&c.to_string()), c.escape_unicode().to_string(), "{:?}", c);
        }
        assert_eq!(line("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(text("a\nb\tc\r\u{1b}]8;;x\u{7}"), "a\nb\tc\\r\\u{1b}]8;;x\\u{7}");
    }
}
