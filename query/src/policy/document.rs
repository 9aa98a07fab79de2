//! The document's line structure: comments, rule headers, continuation lines and the
//! `default` line, checked and cut into rules whose conditions are compiled elsewhere.
//!
//! ```text
//! document  ::= ( blank | comment | rule | default )*     (* exactly one default, last *)
//! rule      ::= "rule" WS ID WS? ":" WS? EFFECT CONDITION? NL continuation*
//! continuation ::= comment | ( " " | "\t" ) CONDITION NL  (* a blank line ends the rule *)
//! default   ::= "default" WS EFFECT WS? comment? NL
//! comment   ::= WS? "#" ANY* NL      (* also after a rule's text, outside strings and regexes *)
//! EFFECT    ::= "allow" | "deny"
//! ID        ::= [A-Za-z0-9_.-]+      (* at most 128 characters, not "default" *)
//! ```

use std::collections::HashMap;

use super::error::{PolicyCode, PolicyError};
use super::{Effect, MAX_ID_LEN, MAX_RULES};
use crate::error::Code;
use crate::suggest::did_you_mean;

/// A rule whose header is well formed, before its condition is compiled.
pub(super) struct RawRule {
    pub(super) id: String,
    pub(super) effect: Effect,
    /// The line of the header, from 1.
    pub(super) line: usize,
    /// Byte offset of the condition text in the document.
    pub(super) cond_start: usize,
    /// The condition as written (continuation lines included), comments replaced by
    /// spaces so that byte offsets stay those of the document.
    pub(super) cond: String,
}

/// What the line structure holds.
pub(super) struct Outline {
    pub(super) rules: Vec<RawRule>,
    pub(super) default: Option<(Effect, usize)>,
}

/// A well-formed rule header: `rule ID: EFFECT`, and where the condition starts.
struct Header {
    id: String,
    effect: Effect,
    line: usize,
    cond_start: usize,
}

/// A rule line that was read, with the lines its condition may continue onto.
struct Open {
    /// The header, when it is well formed and within the rule limit.
    rule: Option<Header>,
    /// Where the header line starts and the last line of the rule ends.
    start: usize,
    end: usize,
}

/// The first `default` line, for P107 and P108.
struct DefaultSeen {
    line: usize,
    start: usize,
    end: usize,
    /// Whether P107 was reported for it.
    reported_not_last: bool,
}

struct Outliner<'d> {
    doc: &'d str,
    errors: &'d mut Vec<PolicyError>,
    rules: Vec<RawRule>,
    open: Option<Open>,
    /// Rule ids seen, with the line of their first use.
    ids: HashMap<String, usize>,
    headers: usize,
    default: Option<(Effect, usize)>,
    first_default: Option<DefaultSeen>,
    /// Whether the last rule or default line was a `default` (for the P114 help).
    after_default: bool,
    /// Where the last rule, default or stray line ends, for P106.
    content_end: usize,
    any_content: bool,
}

/// Reads the line structure of `doc`, reporting what is wrong with it into `errors`.
pub(super) fn outline(doc: &str, errors: &mut Vec<PolicyError>) -> Outline {
    let mut o = Outliner {
        doc,
        errors,
        rules: Vec::new(),
        open: None,
        ids: HashMap::new(),
        headers: 0,
        default: None,
        first_default: None,
        after_default: false,
        content_end: 0,
        any_content: false,
    };
    let mut offset = 0;
    for (index, raw) in doc.split('\n').enumerate() {
        let start = offset;
        offset += raw.len() + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        o.line(index + 1, start, content);
    }
    o.close();
    if !o.any_content {
        o.errors.push(PolicyError::new(
            PolicyCode::P109,
            doc,
            0,
            0,
            "empty policy: no rules and no `default`",
            "nothing here but blank lines and comments",
            Some(
                "write rules, one per line, as `rule ID: allow|deny CONDITION`, and end with \
                 `default allow` or `default deny`"
                    .to_string(),
            ),
        ));
    } else if o.first_default.is_none() {
        let end = o.content_end;
        o.errors.push(PolicyError::new(
            PolicyCode::P106,
            doc,
            end,
            end,
            "no `default` line",
            "expected `default allow` or `default deny` after the last rule",
            Some("end the policy with `default deny` (or `default allow`): it decides every call that no rule matches".to_string()),
        ));
    }
    Outline { rules: o.rules, default: o.default }
}

impl Outliner<'_> {
    fn err(
        &mut self,
        code: PolicyCode,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) {
        self.errors.push(PolicyError::new(code, self.doc, start, end, message, label, help));
    }

    /// Handles one line (without its line end) starting at byte `start`.
    fn line(&mut self, line_no: usize, start: usize, content: &str) {
        let trimmed = content.trim_start_matches([' ', '\t']);
        if content.trim().is_empty() {
            // A blank line ends the rule above.
            self.close();
            return;
        }
        if trimmed.starts_with('#') {
            return;
        }
        let blanked = blank_comments(content);
        let indented = trimmed.len() < content.len();
        if indented {
            let lead = content.len() - trimmed.len();
            if looks_like_header(&blanked[lead..]) {
                let word_end = start + lead + trimmed.find([' ', '\t', ':']).unwrap_or(trimmed.len());
                self.err(
                    PolicyCode::P114,
                    start + lead,
                    word_end,
                    format!("indented `{}` line", &self.doc[start + lead..word_end]),
                    "rules and the default start at the beginning of a line",
                    Some("an indented line continues the rule above it; remove the indentation".to_string()),
                );
                self.header(line_no, start + lead, &blanked[lead..]);
                return;
            }
            if let Some(open) = &mut self.open {
                open.end = start + content.len();
                self.content_end = start + blanked.trim_end().len();
                return;
            }
            self.any_content = true;
            let text_end = start + blanked.trim_end().len();
            let help = if self.after_default {
                "`default` takes no condition; write a rule above it instead"
            } else {
                "an indented line continues the rule above it, and a blank line ends a rule; \
                 start rules and `default` at the beginning of a line"
            };
            self.err(
                PolicyCode::P114,
                start + lead,
                text_end.max(start + lead),
                "indented line continues no rule",
                "no rule above to continue",
                Some(help.to_string()),
            );
            return;
        }
        self.header(line_no, start, &blanked);
    }

    /// Handles a line that starts with a word: a rule, a default, or a mistake.
    fn header(&mut self, line_no: usize, start: usize, blanked: &str) {
        self.close();
        self.any_content = true;
        self.after_default = false;
        self.content_end = start + blanked.trim_end().len();
        let word_len = blanked.find(|c: char| !is_id_char(c)).unwrap_or(blanked.len());
        let word = &blanked[..word_len];
        match word {
            "rule" => self.rule(line_no, start, blanked),
            "default" => self.default_line(line_no, start, blanked),
            _ => {
                let (found_len, found) = found(blanked);
                let help = match word.to_ascii_lowercase().as_str() {
                    "allow" | "deny" => format!("a rule needs an id: `rule ID: {word} CONDITION`"),
                    "rule" | "default" => format!("write `{}` in lowercase", word.to_ascii_lowercase()),
                    _ => "each line is a rule (`rule ID: allow|deny CONDITION`), the `default allow|deny` line, \
                          a `# comment`, or an indented continuation of the rule above"
                        .to_string(),
                };
                self.err(
                    PolicyCode::P100,
                    start,
                    start + found_len,
                    format!("expected `rule`, `default` or a comment, found {found}"),
                    "not a rule or a default",
                    Some(help),
                );
            }
        }
    }

    /// `rule ID: EFFECT CONDITION`
    fn rule(&mut self, line_no: usize, start: usize, blanked: &str) {
        self.headers += 1;
        let mut open = Open { rule: None, start, end: start + blanked.len() };
        if self.headers == MAX_RULES + 1 {
            self.err(
                PolicyCode::P113,
                start,
                start + 4,
                format!("too many rules: a policy has at most {MAX_RULES}"),
                format!("rule number {}", MAX_RULES + 1),
                Some("merge rules with `in [...]`, `or` and patterns, or split the agent's work between agents".to_string()),
            );
        }
        if let Some(first) = &mut self.first_default {
            if !first.reported_not_last {
                first.reported_not_last = true;
                let (first_start, first_end) = (first.start, first.end);
                self.err(
                    PolicyCode::P107,
                    first_start,
                    first_end,
                    "`default` is not the last line",
                    format!("a rule follows it on line {line_no}"),
                    Some(
                        "move the `default` line to the end: it decides the calls no rule matched, \
                         so rules after it would never be reached"
                            .to_string(),
                    ),
                );
            }
        }
        let parsed = self.rule_header(line_no, start, blanked);
        if let Some((id, effect, cond_offset)) = parsed {
            if self.headers <= MAX_RULES {
                open.rule = Some(Header { id, effect, line: line_no, cond_start: start + cond_offset });
            }
        }
        self.open = Some(open);
    }

    /// Reads the id, the colon and the effect; returns them and the offset of the condition
    /// in the line, or `None` after reporting what is wrong.
    fn rule_header(&mut self, line_no: usize, start: usize, b: &str) -> Option<(String, Effect, usize)> {
        let id_at = skip_blanks(b, 4);
        let mut id_len = b[id_at..].find(|c: char| c.is_whitespace() || c == ':').unwrap_or(b.len() - id_at);
        // `rule no shell: …` is one id with a space in it rather than a missing colon.
        let mut spaced = false;
        if id_len > 0 && !b[skip_blanks(b, id_at + id_len)..].starts_with(':') {
            if let Some(colon) = b[id_at..].find(':') {
                let words = b[id_at..id_at + colon].trim_end_matches([' ', '\t']);
                if words.chars().all(|c| is_id_char(c) || c == ' ' || c == '\t') {
                    id_len = words.len();
                    spaced = true;
                }
            }
        }
        let id = &b[id_at..id_at + id_len];
        let mut ok = true;
        if id.is_empty() {
            let (len, found) = found(&b[id_at..]);
            self.err(
                PolicyCode::P101,
                start + id_at,
                start + id_at + len,
                format!("expected a rule id, found {found}"),
                "expected a rule id",
                Some(
                    "write `rule ID: allow|deny CONDITION`; ids use letters, digits, `_`, `.` and `-`"
                        .to_string(),
                ),
            );
            return None;
        }
        let id_span = (start + id_at, start + id_at + id_len);
        if spaced {
            self.err(
                PolicyCode::P101,
                id_span.0,
                id_span.1,
                format!("invalid rule id `{id}`"),
                "a rule id has no spaces",
                Some("rule ids use letters, digits, `_`, `.` and `-`; a rule is `rule ID: allow|deny CONDITION`".to_string()),
            );
            ok = false;
        } else if let Some(bad) = id.chars().find(|c| !is_id_char(*c)) {
            self.err(
                PolicyCode::P101,
                id_span.0,
                id_span.1,
                format!("invalid rule id `{id}`"),
                format!("`{bad}` is not allowed in a rule id"),
                Some("rule ids use letters, digits, `_`, `.` and `-`".to_string()),
            );
            ok = false;
        } else if id == "default" {
            self.err(
                PolicyCode::P101,
                id_span.0,
                id_span.1,
                "`default` cannot be a rule id",
                "reserved",
                Some("decisions made by the `default` line are recorded with the rule id `default`; choose another id".to_string()),
            );
            ok = false;
        } else if id.chars().count() > MAX_ID_LEN {
            self.err(
                PolicyCode::P101,
                id_span.0,
                id_span.1,
                format!("rule id is too long: {} characters, the limit is {MAX_ID_LEN}", id.chars().count()),
                "too long",
                Some("every decision records its rule id; keep ids short".to_string()),
            );
            ok = false;
        } else if let Some(first) = self.ids.get(id) {
            let first = *first;
            self.err(
                PolicyCode::P103,
                id_span.0,
                id_span.1,
                format!("duplicate rule id `{id}`"),
                format!("already used on line {first}"),
                None,
            );
            ok = false;
        } else {
            self.ids.insert(id.to_string(), line_no);
        }
        let colon_at = skip_blanks(b, id_at + id_len);
        if !b[colon_at..].starts_with(':') {
            let (len, found) = found(&b[colon_at..]);
            self.err(
                PolicyCode::P102,
                start + colon_at,
                start + colon_at + len,
                format!("expected `:` after the rule id, found {found}"),
                "expected `:`",
                Some(format!("write `rule {id}: allow CONDITION` or `rule {id}: deny CONDITION`")),
            );
            return None;
        }
        let (effect, cond_at) = self.effect(start, b, colon_at + 1, &format!("`rule {id}:`"))?;
        if b[cond_at..].trim().is_empty() && !self.continues(start + b.len()) {
            self.err(
                PolicyCode::P105,
                start + cond_at,
                start + cond_at,
                format!("rule `{id}` has no condition"),
                "expected a condition",
                Some(format!(
                    "write the calls it decides, such as `rule {id}: {effect} tool = \"db.query\"`; \
                     to decide every remaining call, use `default {effect}`"
                )),
            );
            return None;
        }
        ok.then(|| (id.to_string(), effect, cond_at))
    }

    /// Whether the rule whose header ends at byte `end` goes on to a continuation line
    /// (comment lines may come in between; a blank line ends it).
    fn continues(&self, end: usize) -> bool {
        let Some(rest) = self.doc.get(end..) else {
            return false;
        };
        for raw in rest.split('\n').skip(1) {
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = content.trim_start_matches([' ', '\t']);
            if trimmed.starts_with('#') {
                continue;
            }
            if trimmed.trim().is_empty() || trimmed.len() == content.len() {
                return false;
            }
            return !looks_like_header(&blank_comments(trimmed));
        }
        false
    }

    /// Reads the effect word after byte `at` of line `b`; returns it and the byte after it.
    fn effect(&mut self, start: usize, b: &str, at: usize, after: &str) -> Option<(Effect, usize)> {
        let at = skip_blanks(b, at);
        let len = b[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(b.len() - at);
        let word = &b[at..at + len];
        if let Some(effect) = Effect::parse(word) {
            return Some((effect, at + len));
        }
        if word.is_empty() {
            let (found_len, found) = found(&b[at..]);
            self.err(
                PolicyCode::P104,
                start + at,
                start + at + found_len,
                format!("expected `allow` or `deny` after {after}, found {found}"),
                "expected `allow` or `deny`",
                None,
            );
            return None;
        }
        let help = match did_you_mean(word, &["allow", "deny"]) {
            Some(s) => format!("did you mean `{s}`?"),
            None if after.starts_with("`rule") => {
                "write the effect before the condition: `allow` or `deny`".to_string()
            }
            None => "write `default allow` or `default deny`".to_string(),
        };
        self.err(
            PolicyCode::P104,
            start + at,
            start + at + len,
            format!("unknown effect `{word}`"),
            "expected `allow` or `deny`",
            Some(help),
        );
        None
    }

    /// `default EFFECT`
    fn default_line(&mut self, line_no: usize, start: usize, b: &str) {
        let keyword = (start, start + "default".len());
        if let Some(first) = &self.first_default {
            let first_line = first.line;
            self.err(
                PolicyCode::P108,
                keyword.0,
                keyword.1,
                "a second `default` line",
                format!("the first is on line {first_line}"),
                Some("a policy has exactly one `default`, on its last line".to_string()),
            );
        } else {
            self.first_default = Some(DefaultSeen {
                line: line_no,
                start: keyword.0,
                end: keyword.1,
                reported_not_last: false,
            });
        }
        self.after_default = true;
        let Some((effect, after)) = self.effect(start, b, "default".len(), "`default`") else {
            return;
        };
        let rest_at = skip_blanks(b, after);
        let rest = b[rest_at..].trim_end();
        if !rest.is_empty() {
            self.err(
                PolicyCode::P115,
                start + rest_at,
                start + rest_at + rest.len(),
                format!("unexpected text after `default {effect}`"),
                "the default takes no condition",
                Some(
                    "the default decides every call that no rule matched; to decide calls by a condition, \
                     write a rule above it"
                        .to_string(),
                ),
            );
            return;
        }
        if self.default.is_none() {
            self.default = Some((effect, line_no));
        }
    }

    /// Ends the open rule, if any, and hands its condition on.
    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let Some(Header { id, effect, line, cond_start }) = open.rule else {
            return;
        };
        let region = &self.doc[open.start..open.end];
        let (blanked, unterminated) = blank_region(region);
        if let Some((at, end, kind)) = unterminated {
            if open.start + at >= cond_start {
                let (code, what, close) = match kind {
                    Quote::Str => (Code::Q103, "string", "\""),
                    Quote::Regex => (Code::Q104, "regex", "/"),
                };
                self.err(
                    PolicyCode::Query(code),
                    open.start + at,
                    open.start + end,
                    format!("unterminated {what}"),
                    format!("this {what} has no closing `{close}` on its line"),
                    Some(
                        "a string or regex ends on the line it starts on; write a line break in it as `\\n`"
                            .to_string(),
                    ),
                );
                return;
            }
        }
        let cond = blanked[cond_start - open.start..].to_string();
        self.rules.push(RawRule { id, effect, line, cond_start, cond });
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The offset of the first character at or after `at` that is not a space or tab.
fn skip_blanks(s: &str, at: usize) -> usize {
    let at = at.min(s.len());
    at + (s[at..].len() - s[at..].trim_start_matches([' ', '\t']).len())
}

/// The length of the token at the start of `rest` and how a message names it.
fn found(rest: &str) -> (usize, String) {
    let trimmed = rest.trim_end();
    if trimmed.is_empty() {
        return (0, "the end of the line".to_string());
    }
    let len = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let len = if len == 0 { trimmed.chars().next().map_or(0, char::len_utf8) } else { len };
    let tok = &trimmed[..len];
    if tok.chars().count() > 30 {
        let short: String = tok.chars().take(27).collect();
        (len, format!("`{short}...`"))
    } else {
        (len, format!("`{tok}`"))
    }
}

/// Whether an (unindented) line reads as a rule or default header: `rule ID:` or
/// `default allow|deny` with nothing after.
fn looks_like_header(b: &str) -> bool {
    if let Some(rest) = b.strip_prefix("rule") {
        let after_blanks = rest.trim_start_matches([' ', '\t']);
        if after_blanks.len() == rest.len() {
            return false;
        }
        let id_len = after_blanks.find(|c: char| !is_id_char(c)).unwrap_or(after_blanks.len());
        return id_len > 0 && after_blanks[id_len..].trim_start_matches([' ', '\t']).starts_with(':');
    }
    if let Some(rest) = b.strip_prefix("default") {
        let effect = rest.trim();
        return rest.len() > effect.len() && (effect == "allow" || effect == "deny");
    }
    false
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Str,
    Regex,
}

/// Where a line's comment starts, or where a string or regex that the line does not close
/// opens. Strings and regexes are skipped as the query tokenizer reads them, so a `#`
/// inside one is text.
fn scan(line: &[u8]) -> (Option<usize>, Option<(usize, Quote)>) {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'#' => return (Some(i), None),
            q @ (b'"' | b'/') => {
                let open = i;
                i += 1;
                loop {
                    match line.get(i) {
                        None => {
                            let kind = if q == b'"' { Quote::Str } else { Quote::Regex };
                            return (None, Some((open, kind)));
                        }
                        Some(b'\\') => i += 2,
                        Some(c) if *c == q => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ => i += 1,
        }
    }
    (None, None)
}

/// A line with its comment, if any, replaced by spaces (byte for byte).
fn blank_comments(line: &str) -> String {
    match scan(line.as_bytes()).0 {
        Some(at) => {
            let mut out = line[..at].to_string();
            out.extend(std::iter::repeat_n(' ', line.len() - at));
            out
        }
        None => line.to_string(),
    }
}

/// A rule's lines with comments blanked, and the first string or regex left open at the
/// end of a line: its offset, the offset of the end of its line, and its kind.
fn blank_region(region: &str) -> (String, Option<(usize, usize, Quote)>) {
    let mut out = String::with_capacity(region.len());
    let mut unterminated = None;
    let mut offset = 0;
    for (i, raw) in region.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        let (comment, open) = scan(content.as_bytes());
        match comment {
            Some(at) => {
                out.push_str(&content[..at]);
                out.extend(std::iter::repeat_n(' ', content.len() - at));
            }
            None => out.push_str(content),
        }
        out.push_str(&raw[content.len()..]);
        if let (Some((at, kind)), None) = (open, unterminated) {
            unterminated = Some((offset + at, offset + content.len(), kind));
        }
        offset += raw.len() + 1;
    }
    (out, unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_outside_strings_and_regexes() {
        assert_eq!(blank_comments(r#"a = "x#y" # c"#), r#"a = "x#y"    "#);
        assert_eq!(blank_comments(r"a ~ /x\/#/ #"), r"a ~ /x\/#/  ");
        assert_eq!(blank_comments(r##"a = "\"#""##), r##"a = "\"#""##);
        assert_eq!(scan(br#"a = "x"#).1, Some((4, Quote::Str)));
        assert_eq!(scan(br"a ~ /x\/").1, Some((4, Quote::Regex)));
        assert_eq!(scan("é # ü".as_bytes()).0, Some(3));
    }

    #[test]
    fn headers_are_recognised() {
        assert!(looks_like_header("rule a-1.b: allow x"));
        assert!(looks_like_header("rule a :deny"));
        assert!(looks_like_header("default deny"));
        assert!(looks_like_header("default deny  "));
        assert!(!looks_like_header("rule = \"x\""));
        assert!(!looks_like_header("rules: x"));
        assert!(!looks_like_header("defaultdeny"));
        assert!(!looks_like_header("default denyx"));
    }
}
