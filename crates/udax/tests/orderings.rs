//! Concurrency arguments (issue 16): every atomic ordering in the non-test code
//! of udax and the preload shim carries an `ORDERING:` argument, and every file
//! of udax that bypasses the `crate::sync` facade is listed, with its reason,
//! in the "Exceptions" section of `src/sync/mod.rs`.
//!
//! An ordering is covered by a `// ORDERING:` comment on its line or on one of
//! the `WINDOW` lines above it, or by a `//! ORDERING:` paragraph in its
//! file's module docs (which then argues for every atomic of the file). Test
//! code is exempt: a file is scanned up to its first `#[cfg(test)]` (or
//! `#[cfg(all(test, ..))]`) `mod name { .. }` block, and nothing but test
//! modules may follow that block (checked here too).
//!
//! See docs/architecture.md, "Atomic orderings".

#[path = "support/files.rs"]
mod files;

use std::path::{Path, PathBuf};

/// The atomic orderings (`Ordering::Less` and the like are not ones).
const ORDERINGS: [&str; 5] = ["Relaxed", "Acquire", "Release", "AcqRel", "SeqCst"];
/// Lines above a use where its `// ORDERING:` comment may stand.
const WINDOW: usize = 6;
/// `std::sync` items that are locks or atomics (a protocol of ours to model).
/// `Arc`, `Weak`, `OnceLock`, `LazyLock`, `Once` and `mpsc` are not listed:
/// one line of the Exceptions section covers them.
const LOCKS: [&str; 8] = [
    "atomic",
    "Mutex",
    "MutexGuard",
    "RwLock",
    "RwLockReadGuard",
    "RwLockWriteGuard",
    "Condvar",
    "Barrier",
];

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// A `#[cfg(..)]` attribute that enables its item only in tests.
fn is_test_cfg(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("#[cfg(")
        && l.split(|c: char| !c.is_alphanumeric() && c != '_')
            .any(|w| w == "test")
        && !l.contains("not(test")
}

/// `mod name {` (optionally `pub`/`pub(crate)`), at column 0.
fn is_mod_block(line: &str) -> bool {
    let l = line
        .strip_prefix("pub(crate) ")
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    l.starts_with("mod ") && l.contains('{')
}

/// Index of the first line after the attributes (and comments) starting at `i`.
fn skip_attributes(lines: &[&str], mut i: usize) -> usize {
    while i < lines.len() {
        let l = lines[i].trim();
        if l.starts_with("#[") {
            // A multi-line attribute ends at the line that closes it.
            while i < lines.len() && !lines[i].trim_end().ends_with(']') {
                i += 1;
            }
            i += 1;
        } else if l.starts_with("//") {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// The number of leading lines of `src` that are not test code: up to the
/// first column-0 test `cfg` attribute whose item is a `mod name { .. }`
/// block. `Err(line)` (1-based) if anything but test modules follows it.
fn code_lines(src: &str) -> Result<usize, usize> {
    let lines: Vec<&str> = src.lines().collect();
    let Some(cut) = (0..lines.len()).find(|&i| {
        let l = lines[i];
        l.starts_with('#') && is_test_cfg(l) && {
            let j = skip_attributes(&lines, i + 1);
            j < lines.len() && is_mod_block(lines[j])
        }
    }) else {
        return Ok(lines.len());
    };
    // After it: only the insides of modules (indented), closing braces,
    // attributes, comments, and modules under a test `cfg`.
    let mut test_cfg = false;
    for (k, l) in lines.iter().enumerate().skip(cut) {
        if l.is_empty() || l.starts_with(char::is_whitespace) {
            continue;
        }
        let ok = if is_mod_block(l) {
            std::mem::take(&mut test_cfg)
        } else {
            test_cfg |= is_test_cfg(l);
            ["}", "#[", ")]", "//"].iter().any(|p| l.starts_with(p))
        };
        if !ok {
            return Err(k + 1);
        }
    }
    Ok(cut)
}

/// Lines (1-based) of atomic-ordering uses in `src` that no `ORDERING:`
/// argument covers. `Err` as [`code_lines`].
fn uncovered(src: &str) -> Result<Vec<usize>, usize> {
    let n = code_lines(src)?;
    let lines: Vec<&str> = src.lines().take(n).collect();
    if lines
        .iter()
        .any(|l| l.trim_start().starts_with("//! ORDERING:"))
    {
        return Ok(Vec::new());
    }
    let uses = |l: &str| {
        l.match_indices("Ordering::").any(|(at, m)| {
            let rest = &l[at + m.len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            ORDERINGS.contains(&word.as_str())
        })
    };
    Ok((0..lines.len())
        .filter(|&i| !is_comment(lines[i]) && uses(lines[i]))
        .filter(|&i| {
            !lines[i.saturating_sub(WINDOW)..=i]
                .iter()
                .any(|l| l.contains("// ORDERING:"))
        })
        .map(|i| i + 1)
        .collect())
}

/// The first direct use (1-based line, what) of a `std::sync` lock or atomic,
/// or of `parking_lot`, in the non-test code of `src`.
fn direct_sync(src: &str) -> Result<Option<(usize, String)>, usize> {
    let n = code_lines(src)?;
    let lines: Vec<&str> = src.lines().take(n).collect();
    for (i, l) in lines.iter().enumerate() {
        if is_comment(l) {
            continue;
        }
        if l.contains("parking_lot") {
            return Ok(Some((i + 1, "parking_lot".into())));
        }
        for prefix in ["std::sync::", "core::sync::"] {
            for (at, _) in l.match_indices(prefix) {
                let rest = &l[at + prefix.len()..];
                // `std::sync::{..}` may span lines: take the group to its `}`.
                let items: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                    let mut text = group.to_string();
                    let mut j = i + 1;
                    while !text.contains('}') && j < lines.len() {
                        text.push_str(lines[j]);
                        j += 1;
                    }
                    let text = text.split('}').next().unwrap_or("");
                    text.split(',').map(|s| s.trim().to_string()).collect()
                } else {
                    vec![rest.to_string()]
                };
                for item in items {
                    let head: String = item
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if LOCKS.contains(&head.as_str()) {
                        return Ok(Some((i + 1, format!("{prefix}{head}"))));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// The `.rs` files named (in backquotes) in the "Exceptions" section of the
/// module docs of `sync/mod.rs`.
fn exceptions(sync_doc: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for l in sync_doc.lines() {
        let Some(doc) = l.trim_start().strip_prefix("//!") else {
            if inside {
                break;
            }
            continue;
        };
        let doc = doc.trim();
        if doc.starts_with('#') {
            inside = doc.trim_start_matches('#').trim() == "Exceptions";
            continue;
        }
        if inside {
            for (k, part) in doc.split('`').enumerate() {
                if k % 2 == 1 && part.ends_with(".rs") {
                    names.push(part.to_string());
                }
            }
        }
    }
    names
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `crates/udax/...` style name of a file, for messages.
fn shown(p: &Path) -> String {
    let root = manifest_dir().join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    p.strip_prefix(&root)
        .unwrap_or(&p)
        .to_string_lossy()
        .into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn every_atomic_ordering_has_an_argument() {
    let mut files = Vec::new();
    for root in ["src", "../udax-preload/src"] {
        files::rust_files(&manifest_dir().join(root), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let src = read(f);
        match uncovered(&src) {
            Ok(lines) => {
                for n in lines {
                    let text = src.lines().nth(n - 1).unwrap_or("").trim();
                    problems.push(format!("{}:{n}: {text}", shown(f)));
                }
            }
            Err(n) => problems.push(format!(
                "{}:{n}: non-test code after a #[cfg(test)] module (the scan stops at the \
                 first test module; move it to the end of the file)",
                shown(f)
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "atomic orderings without an argument: add a `// ORDERING:` comment (at most {WINDOW} \
         lines above the use) saying why the ordering is enough, or a `//! ORDERING:` paragraph \
         in the module docs covering every atomic of the file:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn direct_std_sync_uses_are_listed_as_exceptions() {
    let src_dir = manifest_dir().join("src");
    let sync_mod = src_dir.join("sync/mod.rs");
    let listed = exceptions(&read(&sync_mod));
    assert!(
        !listed.is_empty(),
        "no Exceptions section (or no file named in it) in {}",
        shown(&sync_mod)
    );
    let mut files = Vec::new();
    files::rust_files(&src_dir, &mut files);
    let mut problems = Vec::new();
    let mut direct = Vec::new();
    for f in &files {
        if *f == sync_mod {
            continue;
        }
        let rel = f
            .strip_prefix(&src_dir)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        match direct_sync(&read(f)) {
            Ok(Some((n, what))) => {
                if !listed.contains(&rel) {
                    problems.push(format!(
                        "{}:{n}: uses {what} directly but is not in the Exceptions section of \
                         src/sync/mod.rs (use crate::sync, or list `{rel}` there with the reason)",
                        shown(f)
                    ));
                }
                direct.push(rel);
            }
            Ok(None) => {}
            Err(n) => problems.push(format!(
                "{}:{n}: non-test code after a #[cfg(test)] module",
                shown(f)
            )),
        }
    }
    for name in &listed {
        if !direct.contains(name) {
            problems.push(format!(
                "src/sync/mod.rs: Exceptions names `{name}`, which does not use std::sync \
                 locks or atomics directly (any more): drop it from the list"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks themselves, on small samples.
#[test]
fn the_checks_catch_what_they_should() {
    let sample = "\
//! A module.
use std::sync::atomic::{AtomicU64, Ordering};
static A: AtomicU64 = AtomicU64::new(0);
fn covered() {
    // ORDERING: a statistic; nothing is published through it.
    A.fetch_add(1, Ordering::Relaxed);
}
fn not_covered() -> u64 {
    let x = 1;
    let y = 2;
    let z = 3;
    // Ordering::SeqCst in a comment is not a use.
    A.load(Ordering::Acquire) + x + y + z
}
fn not_atomic(a: u32, b: u32) -> bool {
    a.cmp(&b) == std::cmp::Ordering::Less
}
#[cfg(test)]
mod aging;
#[cfg(all(test, not(loom)))]
#[allow(
    dead_code,
    reason = \"a sample\"
)]
mod tests {
    fn t() -> u64 {
        super::A.load(super::Ordering::SeqCst)
    }
}
#[cfg(all(test, loom))]
mod loom_tests {}
";
    assert_eq!(uncovered(sample), Ok(vec![13]));
    // Stopped at the test module: its SeqCst is exempt; `mod aging;` is no block.
    assert_eq!(code_lines(sample), Ok(19));
    let with_paragraph = sample.replacen(
        "//! A module.",
        "//! A module.\n//!\n//! ORDERING: `A` is a statistic.",
        1,
    );
    assert_eq!(uncovered(&with_paragraph), Ok(vec![]));
    // Too far above: not covered.
    let far = sample.replacen(
        "    // Ordering::SeqCst in a comment is not a use.",
        "    // ORDERING: too far away.\n\n\n\n\n\n",
        1,
    );
    assert_eq!(uncovered(&far), Ok(vec![19]));
    // Non-test code after the test module.
    let after = format!("{sample}fn late() {{}}\n");
    assert_eq!(uncovered(&after), Err(32));

    assert_eq!(
        direct_sync(sample),
        Ok(Some((2, "std::sync::atomic".to_string())))
    );
    let grouped = "use std::sync::{\n    Arc,\n    Mutex,\n};\n";
    assert_eq!(
        direct_sync(grouped),
        Ok(Some((1, "std::sync::Mutex".to_string())))
    );
    assert_eq!(
        direct_sync("use std::sync::{Arc, OnceLock};\nuse std::sync::mpsc;\n"),
        Ok(None)
    );
    assert_eq!(
        direct_sync("static N: parking_lot::RawRwLock = parking_lot::RawRwLock::INIT;\n"),
        Ok(Some((1, "parking_lot".to_string())))
    );

    let doc = "\
//! Facade.
//!
//! # Exceptions
//!
//! * `vm/signals.rs`: a reason; see `crate::sync` and `other.md`.
//! * `fs/mod.rs`: another.
//!
//! # Next
//!
//! * `not/listed.rs`
";
    assert_eq!(exceptions(doc), vec!["vm/signals.rs", "fs/mod.rs"]);
}
