//! Format 3 (issue 20): a transaction's ops, applied to the locked inodes as
//! [`state::apply`] does, and written in their on-device form into a
//! [`StoreTx`]: inode slots, directory entries, extents (inline, or the
//! window of the file's extent tree an op changed), orphans and the bits of
//! the blocks they allocate. The switch to format 3 calls it from
//! `Fs::run_tx` (docs/architecture.md, "Metadata in place"); its tests hold
//! it to the in-memory state.

use super::state::{apply_known, Effects, InodeData, Inodes};
use crate::format::v3::{DirEntry3, Inline, InodeSlot, INLINE_BYTES, INLINE_EXTENTS};
use crate::format::{Extent, Op, S_IFDIR, S_IFMT};
use crate::meta::{BTree, MetaAlloc, MetaError, StoreTx};

fn internal(what: String) -> MetaError {
    MetaError::Corrupt { offset: 0, what }
}

/// The slot of inode `d` (its extents inline when they fit and it has no tree).
fn slot_of(d: &InodeData) -> InodeSlot {
    let is_dir = d.attr.mode & S_IFMT == S_IFDIR;
    let (inline, tree_count) = if is_dir {
        (Inline::None, d.entry_count())
    } else if d.is_symlink() && !d.target.is_empty() && d.target.len() <= INLINE_BYTES {
        (Inline::Target(d.target.clone()), 0)
    } else if d.tree_root == 0 {
        if d.map.is_empty() {
            (Inline::None, 0)
        } else {
            (Inline::Extents(d.map.iter().collect()), 0)
        }
    } else {
        (Inline::None, d.map.len() as u64)
    };
    InodeSlot {
        tree_root: d.tree_root,
        tree_count,
        inline,
        rdev: d.rdev,
        ..InodeSlot::new(d.attr)
    }
}

/// File blocks whose extents op `op` may change (with a block either side,
/// for merges with neighbours).
fn window(op: &Op) -> Option<(u64, u64)> {
    match *op {
        Op::Map { file_blk, len, .. }
        | Op::MapShared { file_blk, len, .. }
        | Op::Unmap { file_blk, len, .. } => Some((
            file_blk.saturating_sub(1),
            file_blk.saturating_add(len).saturating_add(1),
        )),
        Op::Shift {
            from_blk, delta, ..
        } => Some((
            from_blk
                .min(from_blk.saturating_add_signed(delta))
                .saturating_sub(1),
            u64::MAX,
        )),
        _ => None,
    }
}

/// Write inode `ino`'s extents after an op changed those in `old` (the
/// window before it; `new` the same window after it).
fn store_extents(
    tx: &mut StoreTx<'_>,
    alloc: &mut dyn MetaAlloc,
    ino: u64,
    d: &mut InodeData,
    old: &[Extent],
    new: &[Extent],
) -> Result<(), MetaError> {
    let mut tree = BTree {
        root: d.tree_root,
        owner: ino,
    };
    if d.map.len() <= INLINE_EXTENTS {
        // Inline (the slot carries them): a tree, if any, goes.
        if tree.root != 0 {
            tx.free_tree(&mut tree)?;
        }
    } else if tree.root == 0 {
        let all: Vec<Extent> = d.map.iter().collect();
        tx.set_tree_extents(alloc, &mut tree, &[], &all)?;
    } else {
        tx.set_tree_extents(alloc, &mut tree, old, new)?;
    }
    d.tree_root = tree.root;
    Ok(())
}

/// Apply `ops` to `inodes` (exactly as [`apply`]) and write what they did
/// into `tx`. The caller then settles reference counts on the returned
/// effects, stores them and the bad-block table, and clears the bits of the
/// blocks that became free ([`StoreTx::bits`]).
pub(crate) fn apply_and_store<I: Inodes + ?Sized>(
    tx: &mut StoreTx<'_>,
    alloc: &mut dyn MetaAlloc,
    inodes: &mut I,
    ops: &[Op],
) -> Result<Effects, MetaError> {
    let mut fx = Effects::default();
    let mut touched: Vec<u64> = Vec::new();
    let touch = |t: &mut Vec<u64>, i: u64| {
        if !t.contains(&i) {
            t.push(i);
        }
    };
    let mut created: Vec<u64> = Vec::new();
    for op in ops {
        tx.note(op);
        // What the op changes, captured before it applies.
        let before_window = match (window(op), op) {
            (
                Some((a, b)),
                Op::Map { ino, .. }
                | Op::MapShared { ino, .. }
                | Op::Unmap { ino, .. }
                | Op::Shift { ino, .. },
            ) => Some((
                *ino,
                a,
                b,
                inodes
                    .get(*ino)
                    .map(|d| d.map.overlapping(a, b))
                    .unwrap_or_default(),
            )),
            _ => None,
        };
        let relinked = match op {
            Op::Link { ino, .. } => inodes.get(*ino).is_some_and(|d| d.attr.nlink == 0),
            _ => false,
        };
        let tree_of_freed = match op {
            Op::FreeInode { ino } => inodes.get(*ino).map_or(0, |d| d.tree_root),
            _ => 0,
        };
        // An unlink's entry comes out of the tree first: a directory whose
        // entries are not in memory learns from it what the name pointed at.
        let unlinked = match op {
            Op::Unlink { dir, name, .. } => {
                let d = inodes
                    .get(*dir)
                    .ok_or_else(|| internal(format!("unlink in missing {dir}")))?;
                let mut tree = BTree {
                    root: d.tree_root,
                    owner: *dir,
                };
                let e = tx
                    .dir_remove(alloc, &mut tree, name)?
                    .ok_or_else(|| internal(format!("entry missing in directory {dir}")))?;
                d.tree_root = tree.root;
                Some((e.ino, e.file_type))
            }
            _ => None,
        };
        apply_known(inodes, op, &mut fx, unlinked).map_err(internal)?;
        match op {
            Op::NewInode { ino, .. } => {
                created.push(*ino);
                touch(&mut touched, *ino);
            }
            Op::Link {
                dir,
                ino,
                file_type,
                name,
                ..
            } => {
                let d = inodes
                    .get(*dir)
                    .ok_or_else(|| internal(format!("link into missing {dir}")))?;
                let mut tree = BTree {
                    root: d.tree_root,
                    owner: *dir,
                };
                tx.dir_insert(
                    alloc,
                    &mut tree,
                    DirEntry3 {
                        ino: *ino,
                        file_type: *file_type,
                        name: name.clone(),
                    },
                )?;
                d.tree_root = tree.root;
                if relinked {
                    tx.orphan_remove(*ino)?;
                }
                touch(&mut touched, *dir);
                touch(&mut touched, *ino);
            }
            Op::Unlink { dir, .. } => {
                touch(&mut touched, *dir);
                if let Some((ino, _)) = unlinked {
                    touch(&mut touched, ino);
                }
            }
            Op::Map {
                ino, dev_blk, len, ..
            } => {
                tx.bits(*dev_blk, *len, true)?;
                touch(&mut touched, *ino);
            }
            Op::MapShared { ino, .. } | Op::Unmap { ino, .. } | Op::Shift { ino, .. } => {
                touch(&mut touched, *ino)
            }
            Op::FreeInode { ino } => {
                tx.free_inode(alloc, *ino, tree_of_freed)?;
                tx.orphan_remove(*ino)?;
                touched.retain(|i| i != ino);
            }
            Op::SetSize { ino, .. }
            | Op::Times { ino, .. }
            | Op::SetParent { ino, .. }
            | Op::SetMode { ino, .. }
            | Op::Symlink { ino, .. }
            | Op::SetRdev { ino, .. } => touch(&mut touched, *ino),
            // The bad-block table changes as a whole: the caller stores it
            // from the effects (`Fs::run_tx` on format 3).
            Op::Poison { .. } | Op::Unpoison { .. } => {}
        }
        if let Some((ino, a, b, old)) = before_window {
            if let Some(d) = inodes.get(ino) {
                let new = d.map.overlapping(a, b);
                store_extents(tx, alloc, ino, d, &old, &new)?;
            }
        }
    }
    for &ino in &touched {
        let d = inodes
            .get(ino)
            .ok_or_else(|| internal(format!("touched inode {ino} missing")))?;
        if d.freed {
            continue;
        }
        let slot = slot_of(d);
        // A file without a name (unlinked while open, or made unnamed) is
        // freed at the next mount unless its last close frees it first.
        let orphan = d.attr.nlink == 0 && !d.is_dir();
        tx.put_inode(alloc, ino, &slot, created.contains(&ino))?;
        if orphan {
            tx.orphan_add(alloc, ino)?;
        }
    }
    Ok(fx)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::format::{dtype_of, DT_DIR, S_IFREG};
    use crate::meta::store_tests::{fresh, TestAlloc};
    use crate::meta::Store;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    struct World {
        store: Store,
        alloc: TestAlloc,
        model: HashMap<u64, InodeData>,
        /// Unlinked files still "open" (freed later).
        open: BTreeSet<u64>,
        freed: BTreeSet<u64>,
        next_data: u64,
        rng: fastrand::Rng,
        t: u64,
        /// Some file's extents were in a tree at a check.
        saw_tree: bool,
    }

    impl World {
        fn new(seed: u64) -> World {
            let (_dev, store, mut alloc) = fresh(64 << 20);
            let mut root = store.inode(1).unwrap().unwrap();
            root.attr.nlink = 2;
            let mut tx = store.begin();
            tx.put_inode(&mut alloc, 1, &root, false).unwrap();
            let (e, _) = tx.entries().unwrap();
            tx.stored(&e).unwrap();
            let mut model = HashMap::new();
            let mut r = InodeData::default();
            r.attr = root.attr;
            model.insert(1, r);
            World {
                store,
                alloc,
                model,
                open: BTreeSet::new(),
                freed: BTreeSet::new(),
                next_data: 8000,
                rng: fastrand::Rng::with_seed(seed),
                t: 1,
                saw_tree: false,
            }
        }

        /// Commit `ops` as `Fs::run_tx` will: apply and store, clear the
        /// bits of freed blocks, store in place.
        fn run(&mut self, ops: &[Op]) {
            let mut tx = self.store.begin();
            let fx = apply_and_store(&mut tx, &mut self.alloc, &mut self.model, ops)
                .unwrap_or_else(|e| panic!("{ops:?}: {e}"));
            for (s, l) in fx.freed {
                tx.bits(s, l, false).unwrap();
            }
            let (e, _) = tx.entries().unwrap();
            tx.stored(&e).unwrap();
        }

        fn ino(&mut self) -> u64 {
            if let Some(i) = self.store.reserve_ino().unwrap() {
                self.freed.remove(&i);
                return i;
            }
            let mut tx = self.store.begin();
            tx.add_chunk(&mut self.alloc).unwrap();
            let (e, _) = tx.entries().unwrap();
            tx.stored(&e).unwrap();
            self.store.reserve_ino().unwrap().unwrap()
        }

        fn pick(&mut self, f: impl Fn(&InodeData) -> bool) -> Option<u64> {
            let mut v: Vec<u64> = self
                .model
                .iter()
                .filter(|(_, d)| f(d))
                .map(|(&i, _)| i)
                .collect();
            v.sort_unstable();
            (!v.is_empty()).then(|| v[self.rng.usize(0..v.len())])
        }

        /// One random valid transaction.
        fn step(&mut self) {
            self.t += 1;
            let t = self.t;
            let is_dir = |d: &InodeData| d.is_dir();
            let is_file = |d: &InodeData| !d.is_dir();
            match self.rng.u8(0..12) {
                0..=2 => {
                    let dir = self.pick(is_dir).unwrap();
                    let ino = self.ino();
                    let mkdir = self.rng.u8(0..4) == 0;
                    let (mode, ft) = if mkdir {
                        (S_IFDIR | 0o755, DT_DIR)
                    } else {
                        (S_IFREG | 0o644, dtype_of(S_IFREG))
                    };
                    self.run(&[
                        Op::NewInode {
                            ino,
                            mode,
                            uid: 0,
                            gid: 0,
                            time_ns: t,
                            parent: dir,
                        },
                        Op::Link {
                            dir,
                            ino,
                            file_type: ft,
                            name: format!("n{t}").into_bytes(),
                            time_ns: t,
                        },
                    ]);
                }
                3 => {
                    // Unlink a name; free at once, or keep it open for later.
                    let Some(dir) = self.pick(|d| d.is_dir() && !d.dir.is_empty()) else {
                        return;
                    };
                    let d = &self.model[&dir];
                    let (name, &(ino, ft)) =
                        d.dir.iter().nth(self.rng.usize(0..d.dir.len())).unwrap();
                    let name = name.clone();
                    let empty_dir = self.model[&ino].dir.is_empty();
                    if ft == DT_DIR && !empty_dir {
                        return;
                    }
                    let mut ops = vec![Op::Unlink {
                        dir,
                        name,
                        time_ns: t,
                    }];
                    if ft == DT_DIR || self.rng.bool() {
                        ops.push(Op::FreeInode { ino });
                        self.freed.insert(ino);
                    } else {
                        self.open.insert(ino);
                    }
                    self.run(&ops);
                }
                4 => {
                    if let Some(&ino) = self.open.iter().next() {
                        self.open.remove(&ino);
                        self.freed.insert(ino);
                        self.run(&[Op::FreeInode { ino }]);
                    }
                }
                5..=7 => {
                    // Half the time the file with the most extents, so some
                    // outgrow the inline ones.
                    let biggest = self
                        .model
                        .iter()
                        .filter(|(_, d)| !d.is_dir())
                        .max_by_key(|(&i, d)| (d.map.len(), i))
                        .map(|(&i, _)| i);
                    let ino = match biggest {
                        Some(i) if self.rng.bool() => i,
                        _ => match self.pick(is_file) {
                            Some(i) => i,
                            None => return,
                        },
                    };
                    let end = self.model[&ino].map.end();
                    let file_blk = end + self.rng.u64(0..3);
                    let len = self.rng.u64(1..4);
                    let dev_blk = self.next_data;
                    // Not contiguous with the last one: many extents.
                    self.next_data += len + 1;
                    self.run(&[
                        Op::Map {
                            ino,
                            file_blk,
                            dev_blk,
                            len,
                        },
                        Op::SetSize {
                            ino,
                            size: (file_blk + len) * 4096,
                            time_ns: t,
                        },
                    ]);
                }
                8 => {
                    let Some(ino) = self.pick(|d| !d.is_dir() && !d.map.is_empty()) else {
                        return;
                    };
                    let end = self.model[&ino].map.end();
                    let file_blk = self.rng.u64(0..end);
                    let len = self.rng.u64(1..4);
                    self.run(&[Op::Unmap { ino, file_blk, len }]);
                }
                9 => {
                    let Some(ino) = self.pick(|d| !d.is_dir() && !d.map.is_empty()) else {
                        return;
                    };
                    let m = &self.model[&ino].map;
                    let from = self.rng.u64(0..m.end() + 1);
                    let delta = if self.rng.bool() && from > 0 && m.is_hole(from - 1, 1) {
                        -1
                    } else {
                        self.rng.i64(1..3)
                    };
                    self.run(&[Op::Shift {
                        ino,
                        from_blk: from,
                        delta,
                    }]);
                }
                _ => {
                    let Some(ino) = self.pick(|_| true) else {
                        return;
                    };
                    let a = self.model[&ino].attr;
                    self.run(&[
                        Op::Times {
                            ino,
                            atime_ns: t,
                            mtime_ns: t + 1,
                            ctime_ns: t + 2,
                        },
                        Op::SetMode {
                            ino,
                            mode: (a.mode & S_IFMT) | (t as u32 & 0o777),
                            uid: t as u32,
                            gid: 7,
                            time_ns: t,
                        },
                    ]);
                }
            }
        }

        /// The store holds exactly the model, and checks clean.
        fn verify(&mut self, step: usize) {
            self.saw_tree |= self.model.values().any(|d| d.tree_root != 0 && !d.is_dir());
            for (&ino, d) in &self.model {
                let s = self
                    .store
                    .inode(ino)
                    .unwrap()
                    .unwrap_or_else(|| panic!("step {step}: inode {ino} missing"));
                assert_eq!(s.attr, d.attr, "step {step}: inode {ino} attributes");
                assert_eq!(s.tree_root, d.tree_root, "step {step}: inode {ino} tree");
                if d.is_dir() {
                    let got: BTreeMap<Vec<u8>, (u64, u8)> = self
                        .store
                        .dir_range(
                            BTree {
                                root: s.tree_root,
                                owner: ino,
                            },
                            0,
                            usize::MAX,
                        )
                        .unwrap()
                        .into_iter()
                        .map(|(_, e)| (e.name, (e.ino, e.file_type)))
                        .collect();
                    assert_eq!(got, d.dir, "step {step}: directory {ino}");
                } else {
                    let want: Vec<Extent> = d.map.iter().collect();
                    assert_eq!(
                        self.store.extents(ino, &s).unwrap(),
                        want,
                        "step {step}: inode {ino} extents"
                    );
                }
            }
            for &ino in &self.freed {
                assert_eq!(
                    self.store.inode(ino).unwrap(),
                    None,
                    "step {step}: {ino} freed"
                );
            }
            let orphans: BTreeSet<u64> = self.store.orphans().unwrap().into_iter().collect();
            assert_eq!(orphans, self.open, "step {step}: orphans");
            let c = self.store.check().unwrap();
            assert_eq!(c.problems, Vec::<String>::new(), "step {step}");
            assert_eq!(c.inodes, self.model.len() as u64);
        }
    }

    #[test]
    fn f9_format_3_holds_exactly_what_the_ops_left_in_memory() {
        for seed in 0..8 {
            let mut w = World::new(seed);
            for step in 0..600 {
                w.step();
                if step % 25 == 24 {
                    w.verify(step);
                }
            }
            w.verify(600);
            assert!(
                w.saw_tree,
                "seed {seed}: some file's extents went to a tree"
            );
        }
    }
}
