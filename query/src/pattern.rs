//! The right-hand side of `~`: globs (anchored) and regular expressions (unanchored).
//!
//! Compiled with `regex-automata`'s meta engine (the one inside `regex`, same syntax and
//! semantics) because it reports how much memory a compiled pattern holds, which bounds a
//! whole policy's patterns ([`crate::policy::MAX_REGEX_BYTES`]).

use regex_automata::meta::Regex;

/// Compiled regexes may not grow past this, so a query cannot exhaust the daemon's memory.
const SIZE_LIMIT: usize = 1 << 20;

/// The lazy DFA's cache per pattern and thread (the cache `regex` calls `dfa_size_limit`).
const DFA_CACHE_BYTES: usize = 1 << 20;

/// A compiled pattern. Cloning is cheap (the compiled program is shared).
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    re: Regex,
}

impl Matcher {
    /// Compiles a glob. See [`glob_to_regex`] for the rules.
    pub(crate) fn glob(glob: &str) -> Result<Matcher, String> {
        Matcher::regex(&glob_to_regex(glob))
    }

    /// Compiles a regular expression (Rust `regex` syntax, unanchored).
    pub(crate) fn regex(pattern: &str) -> Result<Matcher, String> {
        Regex::builder()
            .configure(
                Regex::config()
                    .nfa_size_limit(Some(SIZE_LIMIT))
                    .onepass_size_limit(Some(SIZE_LIMIT))
                    .hybrid_cache_capacity(DFA_CACHE_BYTES),
            )
            .build(pattern)
            .map(|re| Matcher { re })
            .map_err(|e| describe(&e))
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }

    /// Heap bytes the compiled pattern holds (its automata; caches come on top, at most
    /// [`DFA_CACHE_BYTES`] per thread that uses it).
    pub(crate) fn memory_usage(&self) -> usize {
        self.re.memory_usage()
    }
}

/// The last line of a regex error ("unclosed group"), without the pattern excerpt that
/// the caret rendering already shows.
fn describe(e: &regex_automata::meta::BuildError) -> String {
    if e.size_limit().is_some() {
        return "the pattern is too large".to_string();
    }
    let text = match e.syntax_error() {
        Some(syntax) => syntax.to_string(),
        None => e.to_string(),
    };
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid regex");
    last.trim().trim_start_matches("error: ").to_string()
}

/// Translates a glob into an anchored regex.
///
/// - `*` matches any run of characters within one path segment (not `/`);
/// - `**` matches across segments (anything, `/` and newlines included); `/**/` also matches
///   a single `/`;
/// - `?` matches one character other than `/`;
/// - `\` makes the next character literal;
/// - every other character, `.` included, matches itself.
pub fn glob_to_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                // `/**/` may stand for no directory at all. `(?s)`: `**` matches anything,
                // newlines included, as `*` and `?` do (their classes include `\n`).
                if re.ends_with('/') && chars.get(i) == Some(&'/') {
                    re.push_str("(?s:.*/)?");
                    i += 1;
                } else {
                    re.push_str("(?s:.*)");
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => {
                i += 1;
                let c = chars.get(i).copied().unwrap_or('\\');
                re.push_str(&regex::escape(&c.to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, text: &str) -> bool {
        Matcher::glob(glob).map(|g| g.is_match(text)).unwrap_or(false)
    }

    #[test]
    fn globs() {
        assert!(m("shell.*", "shell.exec"));
        assert!(!m("shell.*", "shellxexec"));
        assert!(m("*write_file", "fs.write_file"));
        assert!(m("/etc/*", "/etc/passwd"));
        assert!(!m("/etc/*", "/etc/ssh/sshd_config"));
        assert!(m("/etc/**", "/etc/ssh/sshd_config"));
        assert!(m("/srv/**/x", "/srv/x"));
        assert!(m("/srv/**/x", "/srv/a/b/x"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m("", ""));
        assert!(m(r"x\", r"x\"));
    }

    /// Issue 13: `**` matched no newline while `*` and `?` did, so `not reason ~ "**"`
    /// counted every multi-line reason as missing.
    #[test]
    fn double_star_matches_newlines() {
        assert!(m("**", "line one\nline two"));
        assert!(m("*", "a\nb"));
        assert!(m("a?b", "a\nb"));
        assert!(m("**rm -rf**", "echo\nrm -rf /\n"));
        assert!(m("/srv/**/x", "/srv/a\nb/x"));
        assert!(m("a/**", "a/\n"));
    }
}
