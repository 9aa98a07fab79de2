//! Keeps the layout honest (issue 14): reads the `crate::…` and `super::…` paths of every
//! module of every crate in the workspace and fails on an import cycle between modules,
//! or, inside `ledgerd`, on a module that imports from a layer above its own
//! (`storage` → `projections` → `log` → `scoring` → `service` → the top: `daemon`,
//! `config`, `rotate`, `alerts`; see docs/ARCHITECTURE.md).
//!
//! What counts as an import: any `crate::a::b` or `super::a` path outside comments and
//! outside the `#[cfg(test)] mod …` block at the end of a file (unit tests may set things up
//! with anything in their crate). A parent's `mod child;` is not an import. Files under
//! `src/bin/` are crates of their own and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules are checked, by their folder.
const CRATES: &[&str] =
    &["proto", "query", "ledgerd", "client", "shims", "ledgerctl", "ship", "bench", "tests"];

/// ledgerd's layers, lowest first; a module outside these folders belongs to the top.
const LEDGERD_LAYERS: &[&str] = &["storage", "projections", "log", "scoring", "service"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Every module file of a crate: (module path, source text). `lib.rs` (else `main.rs`) is
/// the root "".
fn modules(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let has_lib = src.join("lib.rs").exists();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
        if rel.starts_with("bin/") || (has_lib && rel == "main.rs") {
            continue;
        }
        let module = match rel.as_str() {
            "lib.rs" | "main.rs" => String::new(),
            r => r.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::"),
        };
        let text = std::fs::read_to_string(&file).expect("read module");
        out.push((module, text));
    }
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The source without comments and without the trailing unit-test module.
fn code(text: &str) -> String {
    let mut kept = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim_start());
        if line.trim_start().starts_with("#[cfg(test)]") && next.starts_with("mod ") {
            break;
        }
        kept.push(line.split("//").next().unwrap_or(""));
    }
    kept.join("\n")
}

/// Expands the path tree that starts at `i` (`a::b`, `a::{b, c::{d, e}}`, `a::*`).
fn tree(s: &[u8], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    ws(&mut i);
    if i < s.len() && s[i] == b'{' {
        i += 1;
        let mut all = Vec::new();
        loop {
            ws(&mut i);
            if i >= s.len() {
                break;
            }
            if s[i] == b'}' {
                i += 1;
                break;
            }
            let (paths, next) = tree(s, i);
            all.extend(paths);
            i = next;
            ws(&mut i);
            if i < s.len() && s[i] == b',' {
                i += 1;
            } else if i < s.len() && s[i] != b'}' {
                i += 1; // something unexpected (`as x`): step over it
            }
        }
        return (all, i);
    }
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    if start == i {
        return (vec![Vec::new()], i);
    }
    let ident = String::from_utf8_lossy(&s[start..i]).to_string();
    let mut j = i;
    ws(&mut j);
    if s[j..].starts_with(b"::") {
        let (subs, next) = tree(s, j + 2);
        let paths = subs.into_iter().map(|sub| std::iter::once(ident.clone()).chain(sub).collect()).collect();
        return (paths, next);
    }
    (vec![vec![ident]], i)
}

/// The modules `module` imports: each `crate::…` / `super::…` path resolved to the longest
/// module it names.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let s = code.as_bytes();
    let mut out = BTreeSet::new();
    for (keyword, from_root) in [("crate::", true), ("super::", false)] {
        let mut at = 0;
        while let Some(pos) = code[at..].find(keyword) {
            let i = at + pos;
            at = i + keyword.len();
            if i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':') {
                continue;
            }
            let base: Vec<String> = if from_root {
                Vec::new()
            } else {
                let mut parent: Vec<String> =
                    module.split("::").filter(|p| !p.is_empty()).map(str::to_string).collect();
                parent.pop();
                parent
            };
            for path in tree(s, at).0 {
                let mut full: Vec<String> = base.clone();
                for seg in path {
                    if seg == "super" {
                        full.pop();
                    } else {
                        full.push(seg);
                    }
                }
                let target = (0..=full.len())
                    .rev()
                    .map(|n| full[..n].join("::"))
                    .find(|m| known.contains(m))
                    .unwrap_or_default();
                if target != module {
                    out.insert(target);
                }
            }
        }
    }
    out
}

fn graph(mods: &[(String, String)]) -> Graph {
    let known: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    mods.iter().map(|(m, text)| (m.clone(), imports(m, text, &known))).collect()
}

/// A cycle in `g`, as the modules along it, if there is one.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(g, next, state, stack) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(found) = visit(g, m, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

fn layer(module: &str) -> usize {
    let first = module.split("::").next().unwrap_or("");
    LEDGERD_LAYERS.iter().position(|l| *l == first).unwrap_or(LEDGERD_LAYERS.len())
}

/// Every import in `g` that goes from a lower layer to a higher one.
fn upward(g: &Graph) -> Vec<String> {
    let name = |m: &str| if m.is_empty() { "the crate root".to_string() } else { m.to_string() };
    let mut bad = Vec::new();
    for (from, tos) in g {
        for to in tos {
            if layer(to) > layer(from) {
                bad.push(format!("{} imports {}, a layer above it", name(from), name(to)));
            }
        }
    }
    bad
}

fn show(c: &[String]) -> String {
    c.iter().map(|m| if m.is_empty() { "<root>" } else { m }).collect::<Vec<_>>().join(" → ")
}

#[test]
fn issue14_no_import_cycles_in_any_crate() {
    let root = workspace();
    let mut checked = 0;
    for krate in CRATES {
        let mods = modules(&root.join(krate).join("src"));
        assert!(!mods.is_empty(), "{krate}/src has no modules: is the crate list out of date?");
        checked += mods.len();
        if let Some(c) = cycle(&graph(&mods)) {
            panic!(
                "{krate}: modules import each other in a circle: {}. Move what both need into the lower one.",
                show(&c)
            );
        }
    }
    assert!(checked > 40, "only {checked} modules found: is the workspace layout what this test expects?");
}

#[test]
fn issue14_no_ledgerd_module_imports_a_layer_above_it() {
    let mods = modules(&workspace().join("ledgerd/src"));
    for layer in LEDGERD_LAYERS {
        assert!(mods.iter().any(|(m, _)| m == layer), "ledgerd/src/{layer}/mod.rs is missing");
    }
    let bad = upward(&graph(&mods));
    assert!(
        bad.is_empty(),
        "ledgerd's layers are imported upwards (see docs/ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

/// The checker itself finds what it must: braced imports, `super::`, inline paths, and
/// ignores comments and unit tests.
#[test]
fn issue14_layer_check_catches_cycles_and_upward_imports() {
    let mods = vec![
        (String::new(), "pub mod storage;\npub mod service;\n".to_string()),
        ("storage".to_string(), "pub mod store;\n".to_string()),
        ("storage::store".to_string(), "use crate::{service::{server::Access}};\n".to_string()),
        ("service".to_string(), "pub mod server;\n".to_string()),
        (
            "service::server".to_string(),
            "// use crate::nothing;\nfn f() { crate::storage::store::open(); }\n#[cfg(test)]\nmod tests {\n use crate::Config;\n}\n"
                .to_string(),
        ),
    ];
    let g = graph(&mods);
    assert_eq!(g["service::server"], BTreeSet::from(["storage::store".to_string()]));
    assert_eq!(g["storage::store"], BTreeSet::from(["service::server".to_string()]));
    let c = cycle(&g).expect("the circle store ↔ server");
    assert_eq!(c.first(), c.last());
    assert_eq!(upward(&g), vec!["storage::store imports service::server, a layer above it".to_string()]);

    let sup = vec![
        (String::new(), "mod a;\n".to_string()),
        ("a".to_string(), "mod b;\n".to_string()),
        ("a::b".to_string(), "use super::super::a;\nfn g() { super::helper(); }\n".to_string()),
    ];
    assert_eq!(graph(&sup)["a::b"], BTreeSet::from(["a".to_string()]));
    assert!(cycle(&graph(&sup)).is_none());
}
