//! The source files a tree-reading test walks (shared by tests/architecture.rs
//! and tests/orderings.rs through `#[path]`).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, in a stable (sorted) order.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
