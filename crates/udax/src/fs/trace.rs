//! What one call of the file system looked up and changed, for the owner's
//! client attribute caches (docs/multiprocess.md, "Attribute cache in
//! clients").
//!
//! A caller runs a call under [`traced`]; while it runs, this thread's
//! path walk records each `(directory, name)` it looks up, and each
//! transaction records the names it links or unlinks and the inodes it
//! changes. A client keeps an answer found by a walk while none of the
//! names the walk looked up has changed; a change names exactly those.
//! Names travel as 64-bit keys ([`name_key`]): a collision only drops an
//! answer that was still good.
//!
//! The record is per thread: every file system call runs its walk and its
//! transactions in the calling thread (the journal's group commit writes
//! other threads' records, but each thread stages its own ops first).

use crate::format::Op;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};

/// Keys kept of each kind before the record gives up ([`Trace::complete`]
/// is then false and the caller treats the call as changing everything).
pub const TRACE_MAX: usize = 64;

/// What a call looked up and changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    /// `(directory, name)` keys the path walks looked up, in order.
    pub looked: Vec<u64>,
    /// Keys of the names linked or unlinked, and, for each directory whose
    /// entries changed, its listing key ([`name_key`] with an empty name).
    pub names: Vec<u64>,
    /// Inodes whose attributes a transaction changed.
    pub inos: Vec<u64>,
    /// More than [`TRACE_MAX`] lookups.
    pub looked_too_many: bool,
    /// More than [`TRACE_MAX`] names or inodes changed, or a change no key
    /// describes (a mode or owner, which decides the search permission of
    /// every path through a directory).
    pub overflow: bool,
}

impl Trace {
    /// Whether `names` and `inos` describe every change the call made.
    pub fn complete(&self) -> bool {
        !self.overflow
    }

    /// The names the call's answer depends on, if all were kept.
    pub fn deps(&self) -> Option<&[u64]> {
        (!self.looked_too_many).then_some(&self.looked)
    }

    fn add(v: &mut Vec<u64>, k: u64, overflow: &mut bool) {
        if !v.contains(&k) {
            if v.len() >= TRACE_MAX {
                *overflow = true;
            } else {
                v.push(k);
            }
        }
    }
}

thread_local! {
    static TRACE: RefCell<Option<Trace>> = const { RefCell::new(None) };
}

/// Run `f`, recording what this thread's file system calls look up and
/// change meanwhile. Not nested: an inner `traced` records for itself.
pub fn traced<R>(f: impl FnOnce() -> R) -> (R, Trace) {
    let outer = TRACE.with(|t| t.borrow_mut().replace(Trace::default()));
    let r = f();
    let got = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (r, got.unwrap_or_default())
}

/// The key of entry `name` of directory `dir` (an empty name: the
/// directory's listing).
pub fn name_key(dir: u64, name: &[u8]) -> u64 {
    // SipHash with fixed keys: the same in every thread of the owner, the
    // only process that makes keys (clients only compare them).
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// A path walk looked up `name` in `dir` (an empty name: an answer
/// depends on the directory's entries, a listing).
pub fn looked_up(dir: u64, name: &[u8]) {
    TRACE.with(|t| {
        if let Some(t) = t.borrow_mut().as_mut() {
            Trace::add(&mut t.looked, name_key(dir, name), &mut t.looked_too_many);
        }
    });
}

/// A transaction over inodes `held` runs `ops`.
pub(crate) fn changing(held: impl Iterator<Item = u64>, ops: &[Op]) {
    TRACE.with(|t| {
        let mut t = t.borrow_mut();
        let Some(t) = t.as_mut() else { return };
        for ino in held {
            Trace::add(&mut t.inos, ino, &mut t.overflow);
        }
        for op in ops {
            match op {
                Op::Link { dir, name, .. } | Op::Unlink { dir, name, .. } => {
                    Trace::add(&mut t.names, name_key(*dir, name), &mut t.overflow);
                    Trace::add(&mut t.names, name_key(*dir, b""), &mut t.overflow);
                    Trace::add(&mut t.inos, *dir, &mut t.overflow);
                }
                Op::SetMode { .. } => t.overflow = true,
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_records_only_inside_traced_and_nests_without_mixing() {
        looked_up(1, b"a");
        let ((), t) = traced(|| {
            looked_up(1, b"a");
            let ((), inner) = traced(|| looked_up(2, b"b"));
            assert_eq!(inner.looked, vec![name_key(2, b"b")]);
            looked_up(1, b"a");
        });
        assert_eq!(t.looked, vec![name_key(1, b"a")]);
        assert_eq!(t.deps(), Some(&[name_key(1, b"a")][..]));
        assert!(t.complete());
    }

    #[test]
    fn a_link_names_its_entry_and_its_directorys_listing_and_a_mode_change_is_no_key() {
        let link = Op::Link {
            dir: 1,
            ino: 5,
            file_type: 1,
            name: b"f".to_vec(),
            time_ns: 0,
        };
        let ((), t) = traced(|| changing([1, 5].into_iter(), std::slice::from_ref(&link)));
        assert_eq!(t.names, vec![name_key(1, b"f"), name_key(1, b"")]);
        assert_eq!(t.inos, vec![1, 5]);
        assert!(t.complete());
        let chmod = Op::SetMode {
            ino: 5,
            mode: 0o40755,
            uid: 0,
            gid: 0,
            time_ns: 0,
        };
        let ((), t) = traced(|| changing([5].into_iter(), &[chmod]));
        assert!(!t.complete());
    }

    #[test]
    fn more_keys_than_kept_make_the_trace_incomplete() {
        let ((), t) = traced(|| {
            for i in 0..=TRACE_MAX as u64 {
                changing([i].into_iter(), &[]);
            }
        });
        assert_eq!(t.inos.len(), TRACE_MAX);
        assert!(!t.complete());
    }
}
