//! The consistency check of a format-3 store (fsck's core; O(file count), as
//! fsck may be): every inode chunk and slot, every tree, link counts against
//! directory entries, the orphan list, and the free-space bitmap against what
//! the structures use. It reads only; every finding is one line naming the
//! inode or block, so fsck can report it (by path where the caller knows it).

use super::store::{RangeTree, OWNER_CHUNKS, OWNER_ORPHANS};
use super::{BTree, MetaError, Store, Tx};
use crate::format::v3::{
    decode_dir_value, decode_pair, CountLine, InodeSlot, CHUNK_BLOCKS, COUNTS_PER_BLOCK,
    COUNTS_PER_LINE, INODES_PER_CHUNK, INODE_SLOT_SIZE, ROOT_LINE,
};
use crate::format::{dtype_of, S_IFDIR, S_IFMT};
use crate::BLOCK_SIZE;
use rangemap::RangeSet;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// What [`Store::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreCheck {
    pub inodes: u64,
    pub directories: u64,
    /// Blocks holding metadata (inode chunks, tree nodes).
    pub meta_blocks: u64,
    /// Blocks holding file data.
    pub data_blocks: u64,
    /// Inconsistencies, one line each.
    pub problems: Vec<String>,
}

struct Walk<'a> {
    report: StoreCheck,
    /// Metadata block runs: first block -> count.
    meta: BTreeMap<u64, u64>,
    /// Blocks file extents use (several files may share a block: reflink;
    /// the file system's check holds those to the reference counts).
    files: RangeSet<u64>,
    tx: Tx<'a>,
}

impl Walk<'_> {
    fn problem(&mut self, p: String) {
        self.report.problems.push(p);
    }

    /// Record blocks `[b, b + n)` as metadata, reporting any block used twice.
    fn use_meta(&mut self, b: u64, n: u64) {
        let prev = self.meta.range(..b + n).next_back().map(|(&s, &l)| (s, l));
        if let Some((s, len)) = prev {
            if s + len > b {
                self.report
                    .problems
                    .push(format!("block {} used twice by metadata", b.max(s)));
                return;
            }
        }
        self.report.meta_blocks += n;
        self.meta.insert(b, n);
    }

    /// Record blocks `[b, b + n)` as file data.
    fn use_file(&mut self, b: u64, n: u64) {
        self.files.insert(b..b + n);
    }

    /// Check a tree; its nodes are metadata blocks. `None` if it is damaged.
    fn tree(&mut self, t: BTree, what: &str) -> Option<u64> {
        match t.check(&self.tx) {
            Ok(st) => {
                for b in st.blocks {
                    self.use_meta(b, 1);
                }
                Some(st.entries)
            }
            Err(e) => {
                self.problem(format!("{what}: {e}"));
                None
            }
        }
    }
}

impl Store {
    /// Check every structure. Only an unreadable root or chunk tree is an
    /// error; everything else is a finding in the report.
    pub fn check(&self) -> Result<StoreCheck, MetaError> {
        let geo = *self.geometry();
        let root = self.root();
        let mut w = Walk {
            report: StoreCheck::default(),
            meta: BTreeMap::new(),
            files: RangeSet::new(),
            tx: Tx::new(self.device()),
        };
        // The chunk tree, then every chunk's slots.
        let chunks = BTree {
            root: root.chunks,
            owner: OWNER_CHUNKS,
        };
        let st = chunks.check(&w.tx)?;
        for b in st.blocks {
            w.use_meta(b, 1);
        }
        let mut slots: BTreeMap<u64, InodeSlot> = BTreeMap::new();
        let list = chunks.range(&w.tx, 0, usize::MAX)?;
        if list.len() as u64 != root.n_chunks {
            w.problem(format!(
                "the root block counts {} inode chunks, the chunk tree holds {}",
                root.n_chunks,
                list.len()
            ));
        }
        // The count table (none on a file system made before it: the chunk
        // tree's counts then).
        let table = match self.count_table() {
            Ok(t) => t,
            Err(e) => {
                w.problem(format!("count table: {e}"));
                Vec::new()
            }
        };
        // Every line of every count block verifies, and counts no chunk
        // that does not exist; the counts of those that do are compared
        // with their slots below (read here once).
        let mut table_counts: HashMap<u64, u64> = HashMap::new();
        for (k, &b) in table.iter().enumerate() {
            w.use_meta(b, 1);
            for j in 0..BLOCK_SIZE / ROOT_LINE as u64 {
                let at = b * BLOCK_SIZE + j * ROOT_LINE as u64;
                let mut bytes = [0u8; ROOT_LINE];
                self.device().read(at, &mut bytes)?;
                match CountLine::decode(&bytes, at) {
                    Err(e) => w.problem(format!("count table block {b}, line {j}: {e}")),
                    Ok(l) => {
                        let first = k as u64 * COUNTS_PER_BLOCK + j * COUNTS_PER_LINE;
                        for (i, &c) in l.0.iter().enumerate() {
                            let n = first + i as u64;
                            if n < root.n_chunks {
                                table_counts.insert(n, u64::from(c));
                            } else if c != 0 {
                                w.problem(format!(
                                    "count table: {c} inodes counted in chunk {n}, which does not exist"
                                ));
                            }
                        }
                    }
                }
            }
        }
        let past_table = table.len() as u64 * COUNTS_PER_BLOCK;
        for (n, v) in list {
            let (blk, tree_count) = decode_pair(&v, 0, "inode chunk")?;
            // No count to compare where its line did not verify (reported
            // above) or the table ends before it.
            let used = if table.is_empty() {
                Some(tree_count)
            } else {
                let c = table_counts.get(&n).copied();
                if c.is_none() && n >= past_table {
                    w.problem(format!("inode chunk {n} is past the count table"));
                }
                c
            };
            if blk < geo.data_start || blk + CHUNK_BLOCKS > geo.total_blocks {
                w.problem(format!(
                    "inode chunk {n} at block {blk}: outside the data area"
                ));
                continue;
            }
            w.use_meta(blk, CHUNK_BLOCKS);
            let mut b = vec![0u8; (CHUNK_BLOCKS * BLOCK_SIZE) as usize];
            self.device().read(blk * BLOCK_SIZE, &mut b)?;
            let mut in_use = 0;
            for s in 0..INODES_PER_CHUNK {
                let at = s as usize * INODE_SLOT_SIZE;
                let ino = n * INODES_PER_CHUNK + s + 1;
                match InodeSlot::decode(&b[at..at + INODE_SLOT_SIZE], blk * BLOCK_SIZE + at as u64)
                {
                    Ok(Some(slot)) => {
                        in_use += 1;
                        slots.insert(ino, slot);
                    }
                    Ok(None) => {}
                    Err(e) => w.problem(format!("inode {ino}: {e}")),
                }
            }
            if let Some(used) = used.filter(|&u| u != in_use) {
                w.problem(format!(
                    "inode chunk {n}: {in_use} slots in use, its count says {used}"
                ));
            }
        }
        w.report.inodes = slots.len() as u64;
        if root.inodes != slots.len() as u64 {
            w.problem(format!(
                "the root block counts {} inodes, the slots hold {}",
                root.inodes,
                slots.len()
            ));
        }
        if slots
            .get(&1)
            .is_none_or(|s| s.attr.mode & S_IFMT != S_IFDIR)
        {
            w.problem("inode 1 (the root directory) is missing or not a directory".into());
        }
        // Each inode's trees; directory entries give the expected link counts.
        let mut links: HashMap<u64, u32> = HashMap::new();
        links.insert(1, 2);
        for (&ino, slot) in &slots {
            let is_dir = slot.attr.mode & S_IFMT == S_IFDIR;
            let tree = BTree {
                root: slot.tree_root,
                owner: ino,
            };
            if is_dir {
                w.report.directories += 1;
                let Some(_) = w.tree(tree, &format!("directory {ino}")) else {
                    continue;
                };
                let mut count = 0u64;
                for (_, v) in tree.range(&w.tx, 0, usize::MAX)? {
                    let entries = match decode_dir_value(&v, tree.root * BLOCK_SIZE) {
                        Ok(e) => e,
                        Err(e) => {
                            w.problem(format!("directory {ino}: {e}"));
                            continue;
                        }
                    };
                    for e in entries {
                        count += 1;
                        let name = String::from_utf8_lossy(&e.name).into_owned();
                        let Some(target) = slots.get(&e.ino) else {
                            w.problem(format!(
                                "directory {ino}: entry {name:?} names inode {}, which is free",
                                e.ino
                            ));
                            continue;
                        };
                        let target_dir = target.attr.mode & S_IFMT == S_IFDIR;
                        if e.file_type != dtype_of(target.attr.mode) {
                            w.problem(format!(
                                "directory {ino}: entry {name:?} has the wrong file type"
                            ));
                        }
                        if target_dir {
                            // Its own "." and its entry here, and our "..".
                            *links.entry(e.ino).or_default() += 2;
                            *links.entry(ino).or_default() += 1;
                        } else {
                            *links.entry(e.ino).or_default() += 1;
                        }
                    }
                }
                if count != slot.tree_count {
                    w.problem(format!(
                        "directory {ino}: {count} entries, its inode counts {}",
                        slot.tree_count
                    ));
                }
            } else {
                let extents = match self.extents(ino, slot) {
                    Ok(e) => e,
                    Err(e) => {
                        w.problem(format!("inode {ino}: extents: {e}"));
                        continue;
                    }
                };
                if slot.tree_root != 0 {
                    w.tree(tree, &format!("inode {ino}: extent tree"));
                }
                let mut end = 0;
                for e in extents {
                    if !geo.holds_data(e.dev_blk, e.len) || e.file_blk < end {
                        w.problem(format!("inode {ino}: bad extent {e:?}"));
                        continue;
                    }
                    end = e.file_blk + e.len;
                    w.use_file(e.dev_blk, e.len);
                }
            }
        }
        for (&ino, slot) in &slots {
            let want = links.get(&ino).copied().unwrap_or(0);
            if slot.attr.nlink != want {
                w.problem(format!(
                    "inode {ino}: link count {}, the directories give {want}",
                    slot.attr.nlink
                ));
            }
        }
        // Orphans: exactly the inodes no directory names.
        let orphans = BTree {
            root: root.orphans,
            owner: OWNER_ORPHANS,
        };
        w.tree(orphans, "orphan tree");
        let listed: Vec<u64> = orphans
            .range(&w.tx, 0, usize::MAX)
            .map(|v| v.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default();
        for &ino in &listed {
            match slots.get(&ino) {
                Some(s) if s.attr.nlink == 0 => {}
                Some(_) => w.problem(format!("inode {ino}: an orphan, but linked")),
                None => w.problem(format!("orphan {ino}: no such inode")),
            }
        }
        for (&ino, s) in &slots {
            if s.attr.nlink == 0 && !listed.contains(&ino) {
                w.problem(format!("inode {ino}: unlinked and not an orphan (leaked)"));
            }
        }
        // The reference count and bad-block trees: runs inside the data area.
        for which in [RangeTree::Refcounts, RangeTree::Badblocks] {
            let t = BTree {
                root: which.root_of(&root),
                owner: which.owner(),
            };
            if w.tree(t, which.what()).is_some() {
                if let Err(e) = self.ranges(which) {
                    w.problem(e.to_string());
                }
            }
        }
        // File blocks after every metadata block is known (a tree walked
        // later may hold a block an earlier file claimed).
        let clashes: Vec<u64> = w
            .meta
            .iter()
            .filter_map(|(&s, &n)| {
                w.files
                    .overlapping(&(s..s + n))
                    .next()
                    .map(|f| f.start.max(s))
            })
            .collect();
        for b in clashes {
            w.problem(format!("block {b} used by metadata and by a file"));
        }
        w.report.data_blocks = w.files.iter().map(|r| r.end - r.start).sum();
        let counted = self.meta_blocks();
        if counted != w.report.meta_blocks {
            w.problem(format!(
                "the root block counts {counted} metadata blocks, the structures hold {}",
                w.report.meta_blocks
            ));
        }
        // The bitmap against what is used: its free runs (the allocator's
        // reading of it) must be exactly the data area less the used runs.
        let mut head = vec![0u8; geo.data_start.div_ceil(8) as usize];
        self.device().read(geo.bitmap_at(), &mut head)?;
        if let Some(b) = (0..geo.data_start).find(|&b| head[(b / 8) as usize] & (1 << (b % 8)) == 0)
        {
            w.problem(format!(
                "bitmap: block {b} before the data area marked free"
            ));
        }
        let free: RangeSet<u64> = self
            .free_runs()?
            .into_iter()
            .map(|(s, n)| s..s + n)
            .collect();
        let mut used: RangeSet<u64> = w.meta.iter().map(|(&s, &n)| s..s + n).collect();
        used.extend(w.files.iter().cloned());
        let marked_free: Vec<Range<u64>> = used
            .iter()
            .flat_map(|u| {
                free.overlapping(u)
                    .map(|f| f.start.max(u.start)..f.end.min(u.end))
            })
            .collect();
        let leaked: Vec<Range<u64>> = used
            .gaps(&(geo.data_start..geo.total_blocks))
            .flat_map(|g| free.gaps(&g).collect::<Vec<_>>())
            .collect();
        let count = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
        if let Some(first) = marked_free.first() {
            w.problem(format!(
                "bitmap: {} blocks in use are marked free (first: block {})",
                count(&marked_free),
                first.start
            ));
        }
        if let Some(first) = leaked.first() {
            w.problem(format!(
                "bitmap: {} blocks marked in use that nothing uses (first: block {})",
                count(&leaked),
                first.start
            ));
        }
        Ok(w.report)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::store::tests::{fresh, run, slot, TestAlloc};
    use super::*;
    use crate::device::{Device, RamDevice};
    use crate::format::v3::{DirEntry3, Inline};
    use crate::format::{Extent, DT_DIR, S_IFREG};
    use std::sync::Arc;

    /// Root with a subdirectory "d" holding a file "f" with two extents
    /// (inline) and a file "g" with 20 (in a tree).
    fn populated() -> (Arc<RamDevice>, Store, TestAlloc) {
        let (dev, store, mut alloc) = fresh(16 << 20);
        let d = store.reserve_ino().unwrap().unwrap();
        let f = store.reserve_ino().unwrap().unwrap();
        let g = store.reserve_ino().unwrap().unwrap();
        let data = alloc.next + 100;
        run(&store, &mut alloc, |t, a| {
            let mut root = store.inode(1).unwrap().unwrap();
            let mut rtree = BTree::new(1);
            t.dir_insert(
                a,
                &mut rtree,
                DirEntry3 {
                    ino: d,
                    file_type: DT_DIR,
                    name: b"d".to_vec(),
                },
            )?;
            root.tree_root = rtree.root;
            root.tree_count = 1;
            root.attr.nlink = 3;
            t.put_inode(a, 1, &root, false)?;
            let mut dtree = BTree::new(d);
            for (ino, name) in [(f, "f"), (g, "g")] {
                t.dir_insert(
                    a,
                    &mut dtree,
                    DirEntry3 {
                        ino,
                        file_type: 8,
                        name: name.into(),
                    },
                )?;
            }
            let mut ds = slot(S_IFDIR | 0o755, 1);
            ds.attr.nlink = 2;
            ds.tree_root = dtree.root;
            ds.tree_count = 2;
            t.put_inode(a, d, &ds, true)?;
            let mut fs = slot(S_IFREG | 0o644, d);
            fs.inline = Inline::Extents(vec![
                Extent {
                    file_blk: 0,
                    dev_blk: data,
                    len: 2,
                },
                Extent {
                    file_blk: 5,
                    dev_blk: data + 2,
                    len: 1,
                },
            ]);
            t.bits(data, 3, true)?;
            t.put_inode(a, f, &fs, true)?;
            let mut gtree = BTree::new(g);
            let ext: Vec<Extent> = (0..20)
                .map(|i| Extent {
                    file_blk: i * 2,
                    dev_blk: data + 10 + i,
                    len: 1,
                })
                .collect();
            t.set_tree_extents(a, &mut gtree, &[], &ext)?;
            t.bits(data + 10, 20, true)?;
            let mut gs = slot(S_IFREG | 0o644, d);
            gs.tree_root = gtree.root;
            gs.tree_count = 20;
            t.put_inode(a, g, &gs, true)
        });
        (dev, store, alloc)
    }

    #[test]
    fn f9_a_consistent_format_3_store_checks_clean() {
        let (_dev, store, _alloc) = populated();
        let r = store.check().unwrap();
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!((r.inodes, r.directories, r.data_blocks), (4, 2, 23));
    }

    #[test]
    fn f9_a_damaged_slot_a_wrong_link_count_and_bitmap_errors_are_each_reported() {
        let (dev, store, mut alloc) = populated();
        // A bit flipped in inode 3's slot.
        let chunk0 = store.geometry().data_start * BLOCK_SIZE;
        let at = chunk0 + 2 * INODE_SLOT_SIZE as u64 + 30;
        let mut b = [0u8; 1];
        dev.read(at, &mut b).unwrap();
        dev.write(at, &[b[0] ^ 4]).unwrap();
        // The root's link count off by one.
        run(&store, &mut alloc, |t, a| {
            let mut root = store.inode(1).unwrap().unwrap();
            root.attr.nlink = 4;
            t.put_inode(a, 1, &root, false)
        });
        // A data block marked free, and a free block marked used.
        let data = store.geometry().data_start + CHUNK_BLOCKS + 2 + 100;
        run(&store, &mut alloc, |t, _| {
            t.bits(data + 10, 1, false)?;
            t.bits(data + 500, 1, true)
        });
        let p = store.check().unwrap().problems;
        let has = |s: &str| p.iter().any(|x| x.contains(s));
        assert!(has("inode 3: inode slot: checksum mismatch"), "{p:?}");
        assert!(
            has("inode 1: link count 4, the directories give 3"),
            "{p:?}"
        );
        assert!(has("blocks in use are marked free"), "{p:?}");
        assert!(has("marked in use that nothing uses"), "{p:?}");
    }

    #[test]
    fn f9_an_unlinked_inode_must_be_an_orphan_and_an_entry_must_name_a_live_inode() {
        let (_dev, store, mut alloc) = populated();
        let lost = store.reserve_ino().unwrap().unwrap();
        run(&store, &mut alloc, |t, a| {
            let mut s = slot(S_IFREG, 1);
            s.attr.nlink = 0;
            t.put_inode(a, lost, &s, true)
        });
        let p = store.check().unwrap().problems;
        assert!(
            p.iter()
                .any(|x| x.contains(&format!("inode {lost}: unlinked and not an orphan"))),
            "{p:?}"
        );
        run(&store, &mut alloc, |t, a| t.orphan_add(a, lost));
        assert_eq!(store.check().unwrap().problems, Vec::<String>::new());
        // Free inode 3 ("f") without removing its entry.
        run(&store, &mut alloc, |t, a| t.free_inode(a, 3, 0));
        let p = store.check().unwrap().problems;
        assert!(
            p.iter()
                .any(|x| x.contains("entry \"f\" names inode 3, which is free")),
            "{p:?}"
        );
    }
}
