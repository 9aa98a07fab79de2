//! Runs the examples in `docs/POLICY.md`, so the page cannot drift from the code.
//!
//! - every ```policy block parses, and the calls in the table that follows it (before the
//!   next code block or heading) get the decision and rule the table says;
//! - the three complete examples each show calls that are allowed and calls that are denied;
//! - every ```policy-error block (document, `---`, rendering) renders exactly as shown;
//! - the field table lists exactly the fields a policy may use;
//! - the error code table lists exactly the P-codes there are, in order.

use std::path::Path;

use ledger_query::policy::{Call, Effect, POLICY_FIELDS, Policy, PolicyCode};

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/POLICY.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fenced block: its body, and the lines of the page after it.
struct Block {
    body: String,
    after: Vec<String>,
}

/// The fenced code blocks tagged `lang` (indented ones included, with the indentation
/// removed).
fn blocks(doc: &str, lang: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let indent = lines[i].len() - lines[i].trim_start().len();
        if lines[i].trim() == format!("```{lang}") {
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push_str(lines[i].get(indent..).unwrap_or(""));
                body.push('\n');
                i += 1;
            }
            assert!(i < lines.len(), "unclosed ```{lang} block");
            let after = lines[i + 1..].iter().map(|l| l.to_string()).collect();
            out.push(Block { body, after });
        }
        i += 1;
    }
    out
}

/// The rows of a table (cells trimmed, header and separator skipped).
fn table_rows<'l>(lines: impl Iterator<Item = &'l String>) -> Vec<Vec<String>> {
    lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The table of calls right after a policy block, if there is one before the next code
/// block or heading.
fn calls_after(block: &Block) -> Vec<Vec<String>> {
    let until: Vec<&String> = block
        .after
        .iter()
        .take_while(|l| !l.trim_start().starts_with("```") && !l.starts_with('#'))
        .collect();
    table_rows(until.into_iter())
}

/// The text of a cell written as `code`.
fn code(cell: &str) -> &str {
    cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')).unwrap_or_else(|| panic!("not code: {cell}"))
}

fn parse(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("doc policy does not parse:\n{}", e.render(text)))
}

#[test]
fn policies_parse_and_decide_their_calls_as_shown() {
    let doc = doc();
    let mut tables = 0;
    let mut calls = 0;
    for block in blocks(&doc, "policy") {
        let policy = parse(&block.body);
        let rows = calls_after(&block);
        tables += usize::from(!rows.is_empty());
        for row in &rows {
            let [tool, params, decision, rule] = row.as_slice() else {
                panic!("bad row {row:?}");
            };
            let (tool, params) = (code(tool), code(params));
            assert!(
                serde_json::from_str::<serde_json::Value>(params).is_ok(),
                "params are not JSON: {params}"
            );
            let d = policy.evaluate(&Call::new(tool, params));
            assert_eq!(
                (d.effect.as_str(), d.rule_id),
                (decision.as_str(), code(rule)),
                "{tool} {params} under\n{}",
                block.body
            );
            calls += 1;
        }
    }
    assert!(tables >= 4 && calls >= 30, "{tables} tables, {calls} calls");
}

#[test]
fn the_three_examples_allow_and_deny() {
    let doc = doc();
    let start = doc.find("## Examples").unwrap_or_else(|| panic!("no examples section"));
    let examples = &doc[start..];
    for heading in ["### A read-only analyst agent", "### A coding agent", "### A support agent"] {
        let at = examples.find(heading).unwrap_or_else(|| panic!("no example {heading:?}"));
        let section = &examples[at..];
        let block =
            blocks(section, "policy").into_iter().next().unwrap_or_else(|| panic!("{heading}: no policy"));
        let rows = calls_after(&block);
        for effect in ["allow", "deny"] {
            assert!(rows.iter().any(|r| r[2] == effect), "{heading}: no call that is {effect}ed");
        }
        // Each example says in a sentence, before the policy, what it allows and denies.
        let intro = &section[heading.len()..section.find("```policy").unwrap_or(0)];
        assert!(
            intro.contains("may") && intro.contains("may not"),
            "{heading}: say what it allows and denies"
        );
    }
}

#[test]
fn the_coding_example_hides_the_tools_it_says() {
    let doc = doc();
    let at = doc.find("### A coding agent").unwrap_or_else(|| panic!("no coding example"));
    let block = blocks(&doc[at..], "policy").into_iter().next().unwrap_or_else(|| panic!("no policy"));
    let policy = parse(&block.body);
    let sentence = block
        .after
        .iter()
        .find(|l| l.contains("`may_allow_tool` hides"))
        .unwrap_or_else(|| panic!("no may_allow_tool sentence"));
    let paragraph: String =
        block.after.iter().skip_while(|l| *l != sentence).take_while(|l| !l.is_empty()).cloned().collect();
    let (hidden, kept) = paragraph.split_once("keeps").unwrap_or_else(|| panic!("{paragraph}"));
    let tools = |text: &str| -> Vec<String> {
        text.split('`').skip(1).step_by(2).filter(|t| *t != "may_allow_tool").map(str::to_string).collect()
    };
    let (hidden, kept) = (tools(hidden), tools(kept));
    assert!(hidden.len() >= 2 && kept.len() >= 2);
    for tool in &hidden {
        assert!(!policy.may_allow_tool(tool), "{tool} should be hidden");
    }
    for tool in &kept {
        assert!(policy.may_allow_tool(tool), "{tool} should be kept");
    }
}

#[test]
fn error_examples_render_as_shown() {
    let doc = doc();
    let examples = blocks(&doc, "policy-error");
    assert!(!examples.is_empty());
    for block in &examples {
        let (text, expected) =
            block.body.split_once("---\n").unwrap_or_else(|| panic!("no --- in {}", block.body));
        let errors = match Policy::parse(text) {
            Ok(_) => panic!("doc error example parses:\n{text}"),
            Err(e) => e,
        };
        assert_eq!(errors.render(text), expected.trim_end(), "rendering of\n{text}");
    }
}

#[test]
fn the_field_table_lists_the_policy_fields() {
    let doc = doc();
    let start = doc.find("| field | what it is |").unwrap_or_else(|| panic!("no field table"));
    let lines: Vec<String> = doc[start..].lines().map(str::to_string).collect();
    let fields: Vec<String> = table_rows(lines.iter())
        .iter()
        .map(|r| code(&r[0]).to_string())
        .filter(|f| f != "params.NAME")
        .collect();
    assert_eq!(fields, POLICY_FIELDS);
    // Every field a policy may use is accepted in a rule.
    for field in POLICY_FIELDS.iter().chain(&["params.path"]) {
        parse(&format!("rule r: allow {field} = \"x\"\ndefault deny\n"));
    }
}

#[test]
fn the_error_code_table_is_complete() {
    let doc = doc();
    let start = doc.find("| code | meaning | example |").unwrap_or_else(|| panic!("no code table"));
    let lines: Vec<String> = doc[start..].lines().map(str::to_string).collect();
    let listed: Vec<String> = table_rows(lines.iter()).into_iter().map(|r| r[0].clone()).collect();
    let all: Vec<&str> = PolicyCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, all, "the table must list every P-code, in order");
    assert_eq!(Effect::parse("allow"), Some(Effect::Allow));
}
