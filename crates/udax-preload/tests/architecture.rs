//! The shim's layers import only downward (docs/preload.md, "Code layout").
//!
//! Reads every file under `src/`, blanks its comments and string literals,
//! and collects the modules it names through `crate::`, `$crate::` (macros)
//! and `super::` paths, `use` groups included. Each module is in the layer of
//! its top folder, lowest first: `boundary`, `state`, `dispatch`, `calls`;
//! `lib.rs`, the crate root, wires them together (it installs the hooks) and
//! may name any of them, but none may name it. The test fails when:
//! - a module names one in a higher layer (or the crate root);
//! - two layers name each other (a cycle between layer folders);
//! - two modules name each other, directly or through others (a cycle
//!   between files, also inside one layer);
//! - a top-level module is in no layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first.
const LAYERS: [&str; 4] = ["boundary", "state", "dispatch", "calls"];

/// A module path inside the crate: `["state", "fds"]`; `[]` is the root.
type Module = Vec<String>;

fn rank(m: &Module) -> Option<usize> {
    let top = m.first()?;
    LAYERS.iter().position(|l| l == top)
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate root".into()
    } else {
        m.join("::")
    }
}

/// Every `.rs` file under `dir`, with its module path.
fn files(dir: &Path, under: &Module, out: &mut Vec<(Module, String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if p.is_dir() {
            let mut m = under.clone();
            m.push(name);
            files(&p, &m, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut m = under.clone();
            if !(stem == "mod" || (under.is_empty() && stem == "lib")) {
                m.push(stem.to_string());
            }
            let rel = p
                .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .display()
                .to_string();
            out.push((m, rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// `src` with comments removed and the contents of string and character
/// literals blanked (`"//"` in code is not a comment, `"crate::x"` in a
/// message is not a path).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\'') or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 1 + ch)
            };
            match end {
                Some(e) => {
                    i = e + 1;
                    out.push_str("' '");
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The paths a `use` tree or path expression starting at `s` names, each as
/// its segments (`a::{b, c::d}` gives `a::b` and `a::c::d`).
fn paths_at(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &[u8], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut segs = prefix.to_vec();
        loop {
            while *i < s.len() && s[*i].is_ascii_whitespace() {
                *i += 1;
            }
            if s.get(*i) == Some(&b'{') {
                *i += 1;
                loop {
                    tree(s, i, &segs, out);
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&b'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && is_ident(s[*i]) {
                *i += 1;
            }
            if *i > start {
                let seg = std::str::from_utf8(&s[start..*i]).unwrap().to_string();
                if seg != "self" {
                    segs.push(seg);
                }
            }
            if s[*i..].starts_with(b"::") {
                *i += 2;
                continue;
            }
            // The end of one path: a glob, or a rename (`x as y`).
            if s.get(*i) == Some(&b'*') {
                *i += 1;
            }
            let mut j = *i;
            while j < s.len() && s[j].is_ascii_whitespace() {
                j += 1;
            }
            if s[j..].starts_with(b"as") && s.get(j + 2).is_some_and(|c| !is_ident(*c)) {
                j += 2;
                while j < s.len() && s[j].is_ascii_whitespace() {
                    j += 1;
                }
                while j < s.len() && is_ident(s[j]) {
                    j += 1;
                }
                *i = j;
            }
            out.push(segs);
            return;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(s.as_bytes(), &mut i, &[], &mut out);
    out
}

/// The modules `from` (in a file of module `from`) names.
fn imports(from: &Module, code: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let b = code.as_bytes();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("::") {
        // The segment before "::" must be `crate` or `super`, standing alone
        // (`$crate` counts).
        let word_start = b[..at]
            .iter()
            .rposition(|&c| !is_ident(c))
            .map_or(0, |p| p + 1);
        let word = &code[word_start..at];
        let base: Module = match word {
            "crate" => Vec::new(),
            "super" => {
                // `super::super::` is handled by walking up once per `super`.
                if code[..word_start].ends_with("::") {
                    continue;
                }
                // Inside an inline `mod x { ... }` (tests), `super` is the
                // file's own module.
                let mut m = from.clone();
                m.extend(inline_mods(code, word_start));
                m.pop();
                m
            }
            _ => continue,
        };
        if word_start > 0 && b[word_start - 1] == b':' {
            continue; // `a::crate` is no crate path
        }
        for path in paths_at(&code[at + 2..]) {
            let mut base = base.clone();
            let mut path = path.as_slice();
            while path.first().map(String::as_str) == Some("super") {
                base.pop();
                path = &path[1..];
            }
            let mut full = base;
            full.extend(path.iter().cloned());
            // The longest prefix that is a module: `state::fds::lookup` is
            // in `state::fds`.
            let target = (0..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| known.contains(m))
                .unwrap_or_default();
            if &target != from {
                found.insert(target);
            }
        }
    }
    found
}

/// The inline modules (`mod x { ... }`) around byte `at` of `code`,
/// outermost first.
fn inline_mods(code: &str, at: usize) -> Vec<String> {
    let b = code.as_bytes();
    let mut around = Vec::new();
    for (start, _) in code.match_indices("mod ") {
        if start > 0 && is_ident(b[start - 1]) {
            continue;
        }
        let mut i = start + 4;
        let name_start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let name = &code[name_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if name.is_empty() || b.get(i) != Some(&b'{') {
            continue; // `mod x;`: a module in its own file
        }
        let mut depth = 0;
        let mut end = b.len();
        for (j, &c) in b.iter().enumerate().skip(i) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        if (i..end).contains(&at) {
            around.push(name.to_string());
        }
    }
    around
}

struct Graph {
    files: BTreeMap<Module, String>,
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &Vec::new(), &mut all);
    let known: BTreeSet<Module> = all.iter().map(|(m, _, _)| m.clone()).collect();
    let mut g = Graph {
        files: BTreeMap::new(),
        edges: BTreeMap::new(),
    };
    for (m, rel, text) in all {
        let e = imports(&m, &code_only(&text), &known);
        g.files.insert(m.clone(), rel);
        g.edges.insert(m, e);
    }
    g
}

/// A cycle in `edges`, if there is one (as the list of its nodes).
fn cycle<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        edges: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|x| x == n).unwrap();
                let mut c = stack[from..].to_vec();
                c.push(n.clone());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn every_module_is_in_a_layer() {
    let g = graph();
    let stray: Vec<_> = g
        .files
        .iter()
        .filter(|(m, _)| !m.is_empty() && rank(m).is_none())
        .map(|(_, f)| f.clone())
        .collect();
    assert!(
        stray.is_empty(),
        "files outside the layers {LAYERS:?}: {stray:?}"
    );
}

#[test]
fn layers_import_only_the_layers_below_them() {
    let g = graph();
    let mut bad = Vec::new();
    for (from, tos) in &g.edges {
        if from.is_empty() {
            continue; // the crate root wires the layers together
        }
        for to in tos {
            let up = match (rank(from), rank(to)) {
                (Some(a), Some(b)) => b > a,
                _ => to.is_empty(),
            };
            if up {
                bad.push(format!(
                    "{} ({}) imports {} ({})",
                    g.files[from],
                    LAYERS[rank(from).unwrap()],
                    show(to),
                    rank(to).map_or("the crate root", |r| LAYERS[r]),
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "upward imports (layers, lowest first: {LAYERS:?}):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn no_two_layers_import_each_other() {
    let g = graph();
    let mut layers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        let Some(a) = rank(from) else { continue };
        for to in tos {
            if let Some(b) = rank(to).filter(|&b| b != a) {
                layers.entry(LAYERS[a]).or_default().insert(LAYERS[b]);
            }
        }
    }
    assert_eq!(cycle(&layers), None, "layers importing each other");
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph();
    let mut edges = g.edges.clone();
    edges.remove(&Vec::new()); // the root names everything, nothing names it
    let named = cycle(&edges).map(|c| c.iter().map(|m| g.files[m].clone()).collect::<Vec<_>>());
    assert_eq!(named, None, "an import cycle between files");
}

/// The reader itself: it sees imports in `use` groups, in macros and in
/// expressions, and none in comments or strings.
#[test]
fn the_import_reader_finds_what_the_files_name() {
    let g = graph();
    let has = |from: &str, to: &str| {
        let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
        g.edges[&m(from)].contains(&m(to))
    };
    assert!(has("calls::open", "state::fds")); // use crate::state::fds::{self, ...}
    assert!(has("calls::open", "boundary::entry")); // use crate::boundary::entry::{...}
    assert!(has("dispatch", "state::names")); // $crate::state::names in path_call!
    assert!(has("state::names", "boundary::entry"));
    let known: BTreeSet<Module> = g.files.keys().cloned().collect();
    let code = code_only(
        "// crate::calls::x\nlet s = \"crate::calls::y\"; /* crate::calls */ let c = '\"';\n\
         use crate::state::{fds::{self, Desc}, mount as m};\n\
         use crate::{calls::*, dispatch as _};",
    );
    let found = imports(&vec!["boundary".into(), "entry".into()], &code, &known);
    let want: BTreeSet<Module> = [
        vec!["state", "fds"],
        vec!["state", "mount"],
        vec!["calls"],
        vec!["dispatch"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(found, want);
    // `super` in an inline module is the file's module: no import.
    let tests = code_only("mod tests {\n    use super::*;\n}\nuse super::lexical;");
    let found = imports(&vec!["state".into(), "path".into()], &tests, &known);
    let want: BTreeSet<Module> = [vec!["state".to_string(), "lexical".to_string()]].into();
    assert_eq!(found, want);
}
