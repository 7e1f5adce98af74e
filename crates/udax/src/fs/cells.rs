//! The table of inode cells in memory, by inode number.
//!
//! Format 2 holds every inode here; format 3 a bounded cache of them
//! (`format3::sweep`). The table is split into [`SHARDS`] maps, each under
//! its own lock, so that growing a map (a rehash moves every entry) moves a
//! small share of the cells. With one map of the cache's 16384 cells, a
//! rehash under the table's lock, forced every few ten thousand creates by
//! the removed entries' tombstones, held a create for 0.6 to 1 ms (issue 20,
//! target 3: no create over 1 ms). The maps hash with `rustc_hash`: inode
//! numbers are handed out by the file system, not chosen by a caller.
//!
//! "The table's lock" of an inode, in the comments of `fs`, is the lock of
//! the shard that holds its number: everything said of the whole table's
//! lock before holds of it, for that inode. A thread holds at most one
//! shard's lock, except [`CellTable::contains_nested`], whose inner lock is
//! taken without waiting behind waiting writers (no writer waits for
//! anything while it holds a shard), so no cycle of waits can form.

use super::Cell;
use crate::sync::{AtomicUsize, Ordering, RwLock, RwLockReadGuard};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

/// Maps in the table: a power of two.
pub(crate) const SHARDS: usize = 64;

type Shard = FxHashMap<u64, Arc<Cell>>;

/// The cells in memory, in [`SHARDS`] locked maps.
#[derive(Debug)]
pub(crate) struct CellTable {
    shards: Box<[RwLock<Shard>]>,
    /// Cells in all shards (changed under the shard's write lock).
    len: AtomicUsize,
}

/// A shard's read lock, held to keep an inode's cell out of (or in) the
/// table while its slot is read at rest.
pub(crate) struct Held<'a> {
    ino: u64,
    guard: RwLockReadGuard<'a, Shard>,
}

impl Held<'_> {
    /// The inode's cell is in memory.
    pub fn has_cell(&self) -> bool {
        self.guard.contains_key(&self.ino)
    }
}

impl CellTable {
    pub fn new() -> CellTable {
        CellTable {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// A table of `cells` (a format-2 mount's).
    pub fn from_map(cells: HashMap<u64, Arc<Cell>>) -> CellTable {
        let t = CellTable::new();
        for (ino, c) in cells {
            t.shard(ino).write().insert(ino, c);
        }
        // ORDERING: before the table is shared (it is being built).
        t.len.store(t.count(), Ordering::Relaxed);
        t
    }

    fn shard(&self, ino: u64) -> &RwLock<Shard> {
        // Inode numbers are handed out in runs: their low bits spread them.
        &self.shards[(ino as usize) & (SHARDS - 1)]
    }

    fn count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Cells in memory (exact when no insertion or removal runs).
    pub fn len(&self) -> usize {
        // ORDERING: a count for the cache's bound and for statistics;
        // nothing is published through it.
        self.len.load(Ordering::Relaxed)
    }

    /// Inode `ino`'s cell, if in memory.
    pub fn get(&self, ino: u64) -> Option<Arc<Cell>> {
        self.shard(ino).read().get(&ino).cloned()
    }

    /// Inode `ino`'s cell is in memory.
    pub fn contains(&self, ino: u64) -> bool {
        self.shard(ino).read().contains_key(&ino)
    }

    /// The read lock of `ino`'s shard: while held, `ino`'s cell neither
    /// comes into memory nor goes.
    pub fn hold(&self, ino: u64) -> Held<'_> {
        Held {
            ino,
            guard: self.shard(ino).read(),
        }
    }

    /// [`CellTable::contains`] while `held` is held: through its guard if
    /// `ino` is in the same shard, else without waiting behind a writer
    /// that waits (see the module doc).
    pub fn contains_nested(&self, held: &Held<'_>, ino: u64) -> bool {
        if std::ptr::eq(self.shard(ino), self.shard(held.ino)) {
            return held.guard.contains_key(&ino);
        }
        self.shard(ino).read_recursive().contains_key(&ino)
    }

    /// Inode `ino`'s cell: the one in memory, else `make()`'s, put in. The
    /// flag says whether it was put in.
    pub fn get_or_insert(&self, ino: u64, make: impl FnOnce() -> Arc<Cell>) -> (Arc<Cell>, bool) {
        let mut s = self.shard(ino).write();
        match s.entry(ino) {
            Entry::Occupied(o) => (o.get().clone(), false),
            Entry::Vacant(v) => {
                let c = v.insert(make()).clone();
                // ORDERING: see `len`.
                self.len.fetch_add(1, Ordering::Relaxed);
                (c, true)
            }
        }
    }

    /// Put in `cell` for `ino`, replacing any (format 2's creates).
    pub fn insert(&self, ino: u64, cell: Arc<Cell>) {
        let old = self.shard(ino).write().insert(ino, cell);
        if old.is_none() {
            // ORDERING: see `len`.
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        // `old` is dropped here, the lock let go.
    }

    /// Take out inode `ino`'s cell, if in memory.
    pub fn remove(&self, ino: u64) {
        self.remove_if(ino, |_| true);
    }

    /// Take out inode `ino`'s cell if `drop_it` says so, judged under its
    /// shard's write lock (no holder can appear meanwhile: every holder got
    /// the cell through the table). `None`: no cell; else whether it went.
    pub fn remove_if(&self, ino: u64, drop_it: impl FnOnce(&Arc<Cell>) -> bool) -> Option<bool> {
        let mut s = self.shard(ino).write();
        let c = s.get(&ino)?;
        if !drop_it(c) {
            return Some(false);
        }
        let gone = s.remove(&ino);
        // ORDERING: see `len`.
        self.len.fetch_sub(1, Ordering::Relaxed);
        // The cell is dropped with the lock let go: no writer runs a cell's
        // drop under a shard's lock.
        drop(s);
        drop(gone);
        Some(true)
    }

    /// The cells in memory now, in no order.
    pub fn cells(&self) -> Vec<Arc<Cell>> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.shards.iter() {
            out.extend(s.read().values().cloned());
        }
        out
    }

    /// The inode numbers in memory now, in no order.
    pub fn inos(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.shards.iter() {
            out.extend(s.read().keys().copied());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::state::InodeData;

    fn cell(ino: u64) -> Arc<Cell> {
        Cell::new(ino, InodeData::default())
    }

    #[test]
    fn a_cell_put_in_once_is_found_counted_and_taken_out_by_its_number() {
        let t = CellTable::new();
        let (a, new) = t.get_or_insert(7, || cell(7));
        assert!(new);
        let (b, new) = t.get_or_insert(7, || panic!("made twice"));
        assert!(!new && Arc::ptr_eq(&a, &b), "the cell in memory is given");
        // Numbers in the same shard and in others.
        for ino in [7 + SHARDS as u64, 8, 9] {
            t.insert(ino, cell(ino));
        }
        t.insert(8, cell(8)); // replaced, not counted twice
        assert_eq!(t.len(), 4);
        let mut inos = t.inos();
        inos.sort_unstable();
        assert_eq!(inos, [7, 8, 9, 7 + SHARDS as u64]);
        assert_eq!(t.cells().len(), 4);
        assert!(t.contains(7 + SHARDS as u64) && !t.contains(7 + 2 * SHARDS as u64));
        t.remove(8);
        t.remove(8);
        assert_eq!((t.len(), t.get(8).is_none()), (3, true));
    }

    #[test]
    fn a_cell_is_taken_out_only_when_the_judge_says_so_under_its_shards_lock() {
        let t = CellTable::new();
        t.insert(3, cell(3));
        let held = t.get(3).expect("in");
        // Another holder: the count the judge sees is 2.
        assert_eq!(t.remove_if(3, |c| Arc::strong_count(c) == 1), Some(false));
        drop(held);
        assert_eq!(t.remove_if(3, |c| Arc::strong_count(c) == 1), Some(true));
        assert_eq!(t.remove_if(3, |_| true), None, "no cell");
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_held_shard_keeps_its_cells_and_answers_for_others_in_it_and_elsewhere() {
        let t = CellTable::new();
        t.insert(1, cell(1));
        t.insert(1 + SHARDS as u64, cell(1 + SHARDS as u64));
        t.insert(2, cell(2));
        let h = t.hold(1);
        assert!(h.has_cell());
        assert!(t.contains_nested(&h, 1 + SHARDS as u64), "same shard");
        assert!(t.contains_nested(&h, 2), "another shard");
        assert!(!t.contains_nested(&h, 3));
        assert!(!t.hold(5).has_cell());
    }
}
