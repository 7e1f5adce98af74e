//! One-way layers: reads the `crate::` paths of every file under `src/` and
//! fails when a layer names one above it (which also rules out two layer
//! folders naming each other). `docs/architecture.md` describes the layers.
//!
//! Only the top-level module after `crate::` counts (`crate::fs::File` names
//! `fs`; `crate::{device::Device, vm::PAGE}` names `device` and `vm`);
//! `crate::BLOCK_SIZE` and the other items of `lib.rs` are the crate root,
//! below every layer. Comments are skipped; test modules inside `src/` count
//! like the rest (a dax unit test that mounts an fs is an fs test).

#[path = "support/files.rs"]
mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a layer may name any layer before it, never
/// one after it.
const LAYERS: [&str; 15] = [
    "sync",    // the lock/atomic facade (std/parking_lot, or loom)
    "fdnum",   // the library's own fds kept out of the low numbers
    "device",  // Device trait and backends
    "format",  // on-device byte layout and codecs
    "proto",   // the owner protocol's messages and socket
    "alloc",   // extent allocator
    "meta",    // in-place metadata structures: transaction overlay, B+tree
    "journal", // metadata redo log
    "vm",      // user-space MMU: regions, userfaultfd engine, page references
    "dax",     // fault engine; asks the file system through `dax::iomap`
    "fs",      // the file system: implements `dax::iomap::DaxInode`
    "migrate", // a whole file system copied onto another (format 2 -> 3)
    "owner",   // the device's owner process: serves clients from an embedded fs
    "client",  // a client of an owner (starts one if asked)
    "vfs",     // one interface over an embedded fs and a client
];

/// Upward edges still in the tree: (from, to, why). Each is a debt; the test
/// fails on any upward edge not listed here, and on a listed one that is gone
/// (so the list only shrinks).
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

fn known(a: &str, b: &str) -> bool {
    KNOWN_UPWARD.iter().any(|(f, t, _)| *f == a && *t == b)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer a file belongs to: its folder (or file stem) under `src/`;
/// `None` for the crate root (`lib.rs`).
fn layer_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The source without comments (line, doc and block comments) or the
/// contents of string and char literals.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                // A raw string `r"..."`/`r#"..."#` has no escapes; the `r`
                // and hashes before the quote were copied already (harmless).
                let hashes = b[..i].iter().rev().take_while(|&&c| c == b'#').count();
                let raw = i > hashes && b[i - hashes - 1] == b'r';
                i += 1;
                while i < b.len() {
                    if !raw && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'"' && b[i + 1..].iter().take(hashes).all(|&c| c == b'#') {
                        i += 1 + if raw { hashes } else { 0 };
                        break;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a source names through `crate::`, with a line each.
fn crate_paths(src: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(k) = src[at..].find("crate::") {
        let start = at + k;
        at = start + "crate::".len();
        // `$crate::` (macros) and `foocrate::` are not this crate's paths.
        let before = src[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let line = src[..start].matches('\n').count() + 1;
        let rest = &src[at..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, c::{..}}`: the names at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        item_start = false;
                        out.push((ident_at(&group[i..]).to_string(), line));
                    }
                    _ => {}
                }
            }
        } else {
            out.push((ident_at(rest).to_string(), line));
        }
    }
    out
}

/// Every `(from layer, to layer)` edge with the places that make it.
fn edges() -> BTreeMap<(String, String), Vec<String>> {
    let src = src_dir();
    let mut files = Vec::new();
    files::rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {} files in src/", files.len());
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src/").to_path_buf();
        let Some(from) = layer_of(&rel) else { continue };
        let text = std::fs::read_to_string(&f).expect("source file");
        for (to, line) in crate_paths(&strip(&text)) {
            // Root items (`crate::BLOCK_SIZE`, `crate::HUGE_SIZE`) are below
            // every layer; so is `self`/`super` (none of these are modules).
            if to == from || !to.starts_with(|c: char| c.is_ascii_lowercase()) {
                continue;
            }
            edges
                .entry((from.clone(), to))
                .or_default()
                .push(format!("{}:{line}", rel.display()));
        }
    }
    edges
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

#[test]
fn every_module_is_a_known_layer() {
    let mut top = BTreeSet::new();
    for e in std::fs::read_dir(src_dir()).expect("src/") {
        let p = e.expect("entry").path();
        if let Some(l) = layer_of(Path::new(p.file_name().expect("name"))) {
            top.insert(l);
        }
    }
    let unknown: Vec<_> = top.iter().filter(|l| rank(l).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "modules not placed in LAYERS (tests/architecture.rs): {unknown:?}"
    );
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let mut upward = Vec::new();
    let mut known_seen = BTreeSet::new();
    for ((from, to), at) in edges() {
        let (Some(a), Some(b)) = (rank(&from), rank(&to)) else {
            // Not a layer (a root item such as `crate::persist`): below all.
            continue;
        };
        if a > b {
            continue;
        }
        if let Some(k) = KNOWN_UPWARD.iter().find(|(f, t, _)| *f == from && *t == to) {
            known_seen.insert((k.0, k.1));
            continue;
        }
        upward.push(format!("{from} -> {to} (above it), at {}", at.join(", ")));
    }
    assert!(
        upward.is_empty(),
        "layer order is {LAYERS:?} (lowest first); upward imports:\n{}",
        upward.join("\n")
    );
    let stale: Vec<_> = KNOWN_UPWARD
        .iter()
        .filter(|(f, t, _)| !known_seen.contains(&(*f, *t)))
        .collect();
    assert!(
        stale.is_empty(),
        "KNOWN_UPWARD lists edges that are gone (remove them): {stale:?}"
    );
}

#[test]
fn no_two_layers_name_each_other() {
    let e = edges();
    let cycles: Vec<String> = e
        .keys()
        .filter(|(a, b)| a < b && e.contains_key(&(b.clone(), a.clone())))
        .filter(|(a, b)| !known(a, b) && !known(b, a))
        .map(|(a, b)| {
            format!(
                "{a} <-> {b}: {a} at {}; {b} at {}",
                e[&(a.clone(), b.clone())].join(", "),
                e[&(b.clone(), a.clone())].join(", ")
            )
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "layer folders that import each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let src = strip(
        "use crate::{device::Device, vm::{self, PAGE}, BLOCK_SIZE};\n\
         // use crate::fs::File;\n\
         let s = \"crate::journal\";\n\
         fn f() { crate::alloc::free(); $crate::x(); }",
    );
    let names: Vec<String> = crate_paths(&src).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["device", "vm", "BLOCK_SIZE", "alloc"]);
}
