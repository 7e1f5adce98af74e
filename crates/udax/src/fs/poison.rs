//! Media errors in the file system (SPEC E1-E4): the persistent bad-block
//! table, the reverse lookup from a device block to its owners, and routing a
//! new media error to every mapping of the files that own it (the analogue of
//! `memory_failure` -> `dax_holder_notify_failure` -> `xfs_dax_notify_failure`
//! -> `mf_dax_kill_procs`).
//!
//! The table lives in the checkpoint (record kind 3) and the log (ops 14/15),
//! so it is crash-consistent like every other piece of metadata. A poisoned
//! block that is freed (truncate, punch, unlink) is not returned to the
//! allocator: it stays quarantined, owned by nobody, until
//! [`Fs::clear_poison`] overwrites it.

use super::iomap::Inode;
use super::{Cell, Error, Fs, Result};
use crate::alloc::BlockRange;
use crate::format::v3::{AnySuperblock, Geometry3};
use crate::format::{Geometry, Op};
use crate::sync::Ordering;
use crate::BLOCK_SIZE;
use rangemap::RangeSet;
use std::ops::Range;

/// Who owns a device block.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// File data: `ino` holds the block at byte `file_off` (more than one file
    /// when the block is shared by reflink).
    File { ino: u64, file_off: u64 },
    /// A metadata structure, and whether fsck can rebuild it.
    Metadata {
        what: &'static str,
        repair: &'static str,
    },
    /// Nobody (free, or quarantined after a media error).
    Free,
}

/// What [`Fs::notify_failure`] found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoisonReport {
    /// Device block range `(start, len)` now in the bad-block table.
    pub blocks: (u64, u64),
    /// Owners of each poisoned block: `(device block, owner)`.
    pub owners: Vec<(u64, Owner)>,
    /// Mapping pages in this process that were unmapped and now raise SIGBUS.
    pub pages_unmapped: usize,
}

/// The device blocks covering bytes `[off, off+len)`.
fn blocks_of(off: u64, len: u64) -> Range<u64> {
    off / BLOCK_SIZE..off.saturating_add(len).div_ceil(BLOCK_SIZE)
}

impl Fs {
    /// `true` when no block has a media error (the common case: one load).
    pub(crate) fn bad_blocks_empty(&self) -> bool {
        // ORDERING: pairs with the Release in `apply_bad` (fs/mod.rs, `bad_count`).
        self.inner.bad_count.load(Ordering::Acquire) == 0
    }

    /// `true` if any block of `[blk, blk+len)` is in the bad-block table.
    pub(crate) fn is_bad(&self, blk: u64, len: u64) -> bool {
        self.first_bad(blk, len).is_some()
    }

    /// The first bad block of `[blk, blk+len)`, if any. Free when the table is empty.
    pub(crate) fn first_bad(&self, blk: u64, len: u64) -> Option<u64> {
        // ORDERING: see `bad_blocks_empty`; the table is read under its lock.
        if self.inner.bad_count.load(Ordering::Acquire) == 0 || len == 0 {
            return None;
        }
        let r = blk..blk.saturating_add(len);
        self.inner
            .bad
            .read()
            .overlapping(&r)
            .next()
            .map(|b| b.start.max(blk))
    }

    /// The bad-block table: device block ranges `(start, len)`.
    pub fn bad_blocks(&self) -> Vec<(u64, u64)> {
        self.inner
            .bad
            .read()
            .iter()
            .map(|r| (r.start, r.end - r.start))
            .collect()
    }

    /// Every owner of device block `dev_blk` (SPEC E2): the files whose extent
    /// maps hold it (whether or not it is mapped into memory right now), the
    /// metadata structure it belongs to, or nobody.
    pub fn owners_of(&self, dev_blk: u64) -> Vec<Owner> {
        let meta = match &self.inner.sb {
            AnySuperblock::V2(sb) => {
                metadata_owner(&sb.geometry, self.inner.journal.stats().epoch % 2, dev_blk)
            }
            AnySuperblock::V3(sb) => metadata_owner3(&sb.geometry, dev_blk),
        };
        if let Some(m) = meta {
            return vec![m];
        }
        let mut out = Vec::new();
        let mut found = |ino: u64, e: &crate::format::Extent| {
            if (e.dev_blk..e.dev_blk + e.len).contains(&dev_blk) {
                out.push(Owner::File {
                    ino,
                    file_off: (e.file_blk + (dev_blk - e.dev_blk)) * BLOCK_SIZE,
                });
            }
        };
        let cells = self.inner.table.cells();
        for c in &cells {
            c.data.read().map.iter().for_each(|e| found(c.ino, &e));
        }
        if let super::Meta::V3(v) = &self.inner.meta {
            // Inodes not in memory, read where they lie (a cell in memory is
            // the same or newer). O(file count), as the kernel's reverse
            // mapping walk without rmap is.
            let held: std::collections::HashSet<u64> = cells.iter().map(|c| c.ino).collect();
            for (ino, slot) in v.store.all_inodes().unwrap_or_default() {
                let is_dir = slot.attr.mode & crate::format::S_IFMT == crate::format::S_IFDIR;
                if held.contains(&ino) || is_dir {
                    continue;
                }
                if let Ok(ext) = v.store.extents(ino, &slot) {
                    ext.iter().for_each(|e| found(ino, e));
                }
            }
        }
        if out.is_empty() {
            out.push(self.unowned(dev_blk));
        }
        out.sort_by_key(|o| match o {
            Owner::File { ino, file_off } => (*ino, *file_off),
            _ => (0, 0),
        });
        out
    }

    /// The owner of a data-area block no file holds: free, or (format 3,
    /// whose inode chunks and tree nodes live in the data area) metadata
    /// when the allocator holds it and no freed-but-mapped file block is it.
    fn unowned(&self, blk: u64) -> Owner {
        if let super::Meta::V3(_) = self.inner.meta {
            let zombie = self.inner.freed.lock().contains(blk);
            if !self.inner.alloc.is_free(blk) && !zombie && !self.is_bad(blk, 1) {
                return Owner::Metadata {
                    what: "inode chunk or tree node",
                    repair: "not rewritten in place: what it held is lost unless a backup \
                             restores it (fsck names the structure)",
                };
            }
        }
        Owner::Free
    }

    /// Emulate a media error at device bytes `[off, off+len)`: the device loses
    /// the data ([`crate::device::Device::inject_poison`]) and the file system
    /// is told ([`Fs::notify_failure`]).
    pub fn inject_poison(&self, off: u64, len: u64) -> Result<PoisonReport> {
        self.inner.dev.inject_poison(off, len)?;
        self.notify_failure(off, len)
    }

    /// A media error at device bytes `[off, off+len)` (SPEC E1-E3): record the
    /// blocks in the persistent bad-block table, take free ones out of the
    /// allocator, and unmap them from every mapping of every owning file in
    /// this process; a later access to such a page raises SIGBUS
    /// (`BUS_MCEERR_AR`), a system call touching it gets EFAULT, and `read_at`
    /// returns EIO. The rest of each file stays accessible.
    pub fn notify_failure(&self, off: u64, len: u64) -> Result<PoisonReport> {
        let total = self.inner.dev.len() / BLOCK_SIZE;
        let r = blocks_of(off, len);
        if len == 0 || r.end > total {
            return Err(Error::Invalid("poisoned range outside the device"));
        }
        self.record_bad(r.clone())?;
        let mut report = PoisonReport {
            blocks: (r.start, r.end - r.start),
            ..Default::default()
        };
        let mut by_file: Vec<(u64, u64)> = Vec::new();
        for b in r {
            for o in self.owners_of(b) {
                if let Owner::File { ino, file_off } = o {
                    by_file.push((ino, file_off / BLOCK_SIZE));
                }
                report.owners.push((b, o));
            }
        }
        by_file.sort_unstable();
        for (ino, page) in by_file {
            if let Ok(cell) = self.cell(ino) {
                report.pages_unmapped +=
                    crate::dax::hooks::poison_pages(&Inode::of(self, &cell), page);
            }
        }
        for (b, o) in &report.owners {
            tracing::warn!("media error at device block {b}: owner {o:?}");
        }
        Ok(report)
    }

    /// Log the blocks of `r` not yet in the table as bad, and quarantine the
    /// free ones.
    fn record_bad(&self, r: Range<u64>) -> Result<()> {
        let mut new = RangeSet::new();
        new.insert(r.clone());
        for b in self.inner.bad.read().overlapping(&r) {
            new.remove(b.clone());
        }
        let ops: Vec<Op> = new
            .iter()
            .map(|n| Op::Poison {
                dev_blk: n.start,
                len: n.end - n.start,
            })
            .collect();
        for chunk in ops.chunks(super::MAX_TX_OPS) {
            let _g = self.begin(chunk.len())?;
            self.run_tx(&mut [], chunk)?;
        }
        Ok(())
    }

    /// Apply bad-block table changes of a committed transaction (the blocks of
    /// `(start, len, poisoned)`), keeping free bad blocks out of the allocator.
    pub(crate) fn apply_bad(&self, changes: &[(u64, u64, bool)]) {
        if changes.is_empty() {
            return;
        }
        let mut t = self.inner.bad.write();
        for &(s, l, poisoned) in changes {
            if poisoned {
                t.insert(s..s + l);
                quarantine(&self.inner.alloc, s..s + l);
            } else {
                t.remove(s..s + l);
            }
        }
        // ORDERING: under the table's write lock; pairs with the Acquire loads
        // of the fast paths (fs/mod.rs, `bad_count`).
        self.inner
            .bad_count
            .store(t.iter().count() as u64, Ordering::Release);
    }

    /// Drop from `freed` (device ranges a transaction released) the bad blocks:
    /// they stay out of the allocator.
    pub(crate) fn without_bad(&self, freed: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        // ORDERING: see `bad_blocks_empty`.
        if self.inner.bad_count.load(Ordering::Acquire) == 0 {
            return freed;
        }
        let t = self.inner.bad.read();
        let mut keep = RangeSet::new();
        for (s, l) in freed {
            keep.insert(s..s + l);
        }
        for b in t.iter() {
            keep.remove(b.clone());
        }
        keep.iter().map(|r| (r.start, r.end - r.start)).collect()
    }

    /// Blocks of `cell` at device blocks `dev` (file blocks `fblk`) were
    /// overwritten whole and their data flushed: the media error is gone
    /// (SPEC E4). Logged after the data (an ordered commit), then the mappings'
    /// SIGBUS markers are dropped so the pages fault in again.
    pub(crate) fn unpoison(&self, cell: &Cell, blocks: &[(u64, u64)]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op> = blocks
            .iter()
            .map(|&(_, d)| Op::Unpoison { dev_blk: d, len: 1 })
            .collect();
        for chunk in ops.chunks(super::MAX_TX_OPS) {
            let _g = self.begin(chunk.len())?;
            self.run_tx(&mut [], chunk)?;
        }
        for &(f, d) in blocks {
            self.inner.dev.clear_poison(d * BLOCK_SIZE, BLOCK_SIZE);
            crate::dax::hooks::unpoison_pages(&Inode::of(self, cell), f);
        }
        Ok(())
    }

    /// Clear the media error of free (quarantined) device blocks covering
    /// `[off, off+len)`: zero them, drop them from the table, and give them back
    /// to the allocator. Blocks a file owns are cleared by overwriting them
    /// through the file (`write_at` of the whole block, or ZERO_RANGE).
    pub fn clear_poison(&self, off: u64, len: u64) -> Result<u64> {
        let sb = &self.inner.sb;
        let r = blocks_of(off, len);
        if len == 0 || r.start < sb.data_start() || r.end > sb.total_blocks() {
            return Err(Error::Invalid("range outside the data area"));
        }
        let bad: Vec<Range<u64>> = self.inner.bad.read().overlapping(&r).cloned().collect();
        let mut cleared = 0;
        for b in bad {
            let b = b.start.max(r.start)..b.end.min(r.end);
            for blk in b.clone() {
                if self.owners_of(blk) != vec![Owner::Free] {
                    return Err(Error::Busy(format!(
                        "device block {blk} belongs to a file: overwrite it through the file"
                    )));
                }
            }
            let (at, n) = (b.start * BLOCK_SIZE, (b.end - b.start) * BLOCK_SIZE);
            self.inner.dev.zero(at, n)?;
            self.inner.dev.flush(at, n);
            let op = Op::Unpoison {
                dev_blk: b.start,
                len: b.end - b.start,
            };
            {
                let _g = self.begin(1)?;
                self.run_tx(&mut [], &[op])?;
            }
            self.inner.dev.clear_poison(at, n);
            if let Err(e) = self.inner.alloc.free(BlockRange {
                start: b.start,
                len: b.end - b.start,
            }) {
                tracing::error!("returning cleared blocks {b:?}: {e}");
            }
            cleared += b.end - b.start;
        }
        Ok(cleared)
    }

    /// Rewrite a superblock copy that does not verify (media error, torn or
    /// stray write) from the good one, and clear its media error. The
    /// superblock never changes after mkfs, so the copies are identical.
    pub(crate) fn repair_superblocks(&self) -> Result<()> {
        let sb = &self.inner.sb;
        let dev = &self.inner.dev;
        let total = dev.len() / BLOCK_SIZE;
        for at in [0, BLOCK_SIZE] {
            let mut buf = vec![0u8; crate::format::SUPERBLOCK_SIZE];
            dev.read(at, &mut buf)?;
            let bad = self.is_bad(at / BLOCK_SIZE, 1);
            if !bad && AnySuperblock::decode(&buf, at, total).is_ok() {
                continue;
            }
            tracing::warn!("rewriting the superblock copy at {at:#x}");
            dev.zero(at, BLOCK_SIZE)?;
            dev.write(at, &sb.encode(at))?;
            dev.flush(at, BLOCK_SIZE);
            if bad {
                let _g = self.begin(1)?;
                self.run_tx(
                    &mut [],
                    &[Op::Unpoison {
                        dev_blk: at / BLOCK_SIZE,
                        len: 1,
                    }],
                )?;
                dev.clear_poison(at, BLOCK_SIZE);
            } else {
                dev.fence()?;
            }
        }
        Ok(())
    }

    /// Merge the device's own bad list (the kernel's badblocks for devdax, or
    /// what was injected) into the table at mount.
    pub(crate) fn merge_device_badblocks(&self) -> Result<()> {
        for r in self.inner.dev.badblocks() {
            self.notify_failure(r.start, r.end - r.start)?;
        }
        Ok(())
    }
}

/// The metadata structure device block `blk` belongs to, if any (`active` =
/// the checkpoint slot in use).
pub(crate) fn metadata_owner(g: &Geometry, active: u64, blk: u64) -> Option<Owner> {
    let meta = |what, repair| Some(Owner::Metadata { what, repair });
    if blk == 0 {
        return meta(
            "primary superblock",
            "rewritten from the backup at the next mount",
        );
    }
    if blk == 1 {
        return meta(
            "backup superblock",
            "rewritten from the primary at the next mount",
        );
    }
    if (g.log_start..g.log_start + g.log_blocks).contains(&blk) {
        return meta(
            "metadata log",
            "not rewritten in place; the next checkpoint makes the log's old content \
             redundant (committed operations after a damaged record are lost if the file \
             system is not mounted before)",
        );
    }
    for slot in 0..2 {
        let s = g.cp_start + slot * g.cp_blocks;
        if (s..s + g.cp_blocks).contains(&blk) {
            return if active == slot {
                meta(
                    "active checkpoint slot",
                    "metadata in the damaged part is lost if not mounted; while mounted, the \
                     next checkpoint goes to the other slot",
                )
            } else {
                meta(
                    "inactive checkpoint slot",
                    "holds no live metadata; the next checkpoint rewrites it",
                )
            };
        }
    }
    if blk < g.data_start {
        return meta("unused padding before the data area", "nothing to repair");
    }
    None
}

/// The format-3 metadata structure device block `blk` belongs to, if any
/// (the inode chunks and tree nodes in the data area are found by
/// [`Fs::owners_of`]).
pub(crate) fn metadata_owner3(g: &Geometry3, blk: u64) -> Option<Owner> {
    let meta = |what, repair| Some(Owner::Metadata { what, repair });
    match blk {
        0 => meta(
            "primary superblock",
            "rewritten from the backup at the next mount",
        ),
        1 => meta(
            "backup superblock",
            "rewritten from the primary at the next mount",
        ),
        2 => meta(
            "root block",
            "not repairable in place: it names every tree; the file system does not mount \
             until it is restored",
        ),
        b if (g.log_start..g.log_start + g.log_blocks).contains(&b) => meta(
            "metadata log",
            "not rewritten in place; the next log truncation makes its old content redundant \
             (committed operations after a damaged record are lost if the file system is not \
             mounted before)",
        ),
        b if (g.bitmap_start..g.bitmap_start + g.bitmap_blocks).contains(&b) => meta(
            "free-space bitmap",
            "not rewritten in place: the blocks it describes cannot be told free or used",
        ),
        b if b < g.data_start => meta("unused padding before the data area", "nothing to repair"),
        _ => None,
    }
}

/// Take the free blocks of `r` out of the allocator.
pub(crate) fn quarantine(alloc: &crate::alloc::Allocator, r: Range<u64>) {
    for b in r {
        if alloc.is_free(b) {
            let _ = alloc.mark_used(BlockRange { start: b, len: 1 });
        }
    }
}

impl super::File {
    /// The file's extent map: `(file block, device block, length in blocks)`.
    pub fn extents(&self) -> Vec<crate::format::Extent> {
        self.cell().data.read().map.iter().collect()
    }

    /// Byte ranges `(offset, len)` of this file that sit on blocks with media
    /// errors (SPEC E4: `udax stat` lists them).
    pub fn poisoned_ranges(&self) -> Vec<(u64, u64)> {
        let fs = self.fs();
        let d = self.cell().data.read();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for e in d.map.iter() {
            let mut b = e.dev_blk;
            while let Some(x) = fs.first_bad(b, e.dev_blk + e.len - b) {
                let off = (e.file_blk + (x - e.dev_blk)) * BLOCK_SIZE;
                match out.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += BLOCK_SIZE,
                    _ => out.push((off, BLOCK_SIZE)),
                }
                b = x + 1;
            }
        }
        out
    }
}
