//! Reflink (SPEC R1): `clone_range` / `clone_file` share extents between files,
//! `dedupe_range` shares ranges whose bytes are equal, and [`unshare`] copies
//! shared blocks for one file before it writes them (copy on write).
//!
//! The rules are those of `FICLONERANGE` / `FIDEDUPERANGE` (the kernel's
//! `generic_remap_checks`): offsets block aligned; the length block aligned
//! unless the source range ends at the source's end of file; no overlap within
//! one file; the source range inside the source file. Clone grows the
//! destination to cover the range; dedupe needs both ranges inside their files
//! and shares nothing unless every byte is equal.
//!
//! Locks: both files' invalidate locks (ascending inode number), then, per
//! transaction, the checkpoint read lock and both inode write locks (ascending).
//! Break layouts runs on both ranges first (SPEC M12): the destination's
//! blocks are about to be released, and the source's writable mappings must
//! fault again so that a store breaks the new sharing.

use super::extent::Lookup;
use super::file::give_back;
use super::iomap::Inode;
use super::{now_ns, Cell, Error, File, Fs, Result, MAX_TX_OPS};
use crate::alloc::AllocRequest;
use crate::device::DeviceError;
use crate::format::{Op, MAX_FILE_SIZE, S_IFMT, S_IFREG};
use crate::fs::state::InodeData;
use crate::{BLOCKS_PER_HUGE, BLOCK_SIZE};

/// The outcome of [`Fs::dedupe_range`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dedupe {
    /// Bytes now shared (0 when the ranges differ).
    pub bytes_deduped: u64,
    /// Some byte differed, so nothing was shared (`FILE_DEDUPE_RANGE_DIFFERS`).
    pub differs: bool,
}

/// A validated remap request, in blocks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    src_blk: u64,
    dst_blk: u64,
    blocks: u64,
    /// Destination size afterwards (clone only grows it).
    dst_size: u64,
    bytes: u64,
}

impl Fs {
    /// Share all of `src` with `dst` (`FICLONE`): `dst` gets `src`'s size and
    /// blocks; its own blocks are released.
    pub fn clone_file(&self, src: &File, dst: &File) -> Result<()> {
        if src.ino() == dst.ino() {
            return Err(Error::Invalid("clone of a file onto itself"));
        }
        let size = src.len();
        dst.set_len(0)?;
        if size > 0 {
            self.clone_range(src, 0, dst, 0, size)?;
        }
        Ok(())
    }

    /// `FICLONERANGE`: make `dst`'s bytes `[dst_off, dst_off+len)` share the
    /// blocks of `src`'s `[src_off, src_off+len)` (`len` 0 = to the end of
    /// `src`). Returns the bytes cloned.
    pub fn clone_range(
        &self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        self.remap(src, src_off, dst, dst_off, len, false)
            .map(|(n, _)| n)
    }

    /// `FIDEDUPERANGE`: share the ranges only if their bytes are equal.
    pub fn dedupe_range(
        &self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
    ) -> Result<Dedupe> {
        let (n, differs) = self.remap(src, src_off, dst, dst_off, len, true)?;
        Ok(Dedupe {
            bytes_deduped: n,
            differs,
        })
    }

    fn remap(
        &self,
        src: &File,
        src_off: u64,
        dst: &File,
        dst_off: u64,
        len: u64,
        dedupe: bool,
    ) -> Result<(u64, bool)> {
        if !std::sync::Arc::ptr_eq(&src.fs().inner, &self.inner)
            || !std::sync::Arc::ptr_eq(&dst.fs().inner, &self.inner)
        {
            return Err(Error::CrossDevice);
        }
        if !src.readable() || !dst.writable() {
            return Err(Error::BadFd);
        }
        for f in [src, dst] {
            let mode = f.cell().data.read().attr.mode;
            if mode & S_IFMT != S_IFREG {
                return Err(Error::IsDir);
            }
        }
        let (sc, dc) = (src.cell().clone(), dst.cell().clone());
        let same = sc.ino == dc.ino;
        // Invalidate locks, ascending inode number.
        let (first, second) = if sc.ino <= dc.ino {
            (&sc, &dc)
        } else {
            (&dc, &sc)
        };
        let _i1 = first.dax.invalidate.write();
        let _i2 = (!same).then(|| second.dax.invalidate.write());
        let Some(plan) = plan(src, src_off, dst, dst_off, len, dedupe, same)? else {
            return Ok((0, false));
        };
        if dedupe && !self.ranges_equal(src, src_off, dst, dst_off, plan.bytes)? {
            return Ok((0, true));
        }
        let (s0, s1) = (plan.src_blk, plan.src_blk + plan.blocks);
        let (d0, d1) = (plan.dst_blk, plan.dst_blk + plan.blocks);
        crate::dax::hooks::break_layouts(&Inode::of(self, &dc), d0, d1, true)?;
        crate::dax::hooks::break_layouts(&Inode::of(self, &sc), s0, s1, true)?;
        let old_size = dst.len();
        let mut pos = 0u64;
        while pos < plan.blocks {
            let _g = self.begin(MAX_TX_OPS)?;
            // Inode locks ascending.
            let (mut sg, mut dg) = if same {
                (sc.data.write(), None)
            } else if sc.ino < dc.ino {
                let s = sc.data.write();
                (s, Some(dc.data.write()))
            } else {
                let d = dc.data.write();
                (sc.data.write(), Some(d))
            };
            let (ops, next) = {
                let sd: &InodeData = &sg;
                let dd: &InodeData = dg.as_deref().unwrap_or(sd);
                if sd.freed || dd.freed {
                    return Err(Error::NotFound);
                }
                let (ops, next) = remap_ops(sd, dc.ino, &plan, pos, plan.dst_size > dd.attr.size);
                // Growing past a gap: the old last block's tail becomes file data.
                let gap_to = plan.dst_blk * BLOCK_SIZE;
                if ops.iter().any(|o| matches!(o, Op::SetSize { .. })) && gap_to > dd.attr.size {
                    super::file::zero_past_eof(self, dd, gap_to)?;
                }
                (ops, next)
            };
            let mut held: Vec<(u64, &mut InodeData)> = vec![(sc.ino, &mut *sg)];
            if let Some(g) = dg.as_deref_mut() {
                held.push((dc.ino, g));
            }
            held.sort_by_key(|(i, _)| *i);
            self.run_tx(&mut held, &ops)?;
            pos = next;
        }
        if plan.dst_size > old_size {
            crate::dax::hooks::after_grow(&Inode::of(self, &dc), plan.dst_size);
        }
        if !dedupe {
            // The destination's content changed (as the kernel's
            // file_modified): mtime and ctime, logged lazily like overwrites.
            // ORDERING: a time value (fs/mod.rs, `mtime_pending`).
            dc.mtime_pending
                .store(now_ns(), crate::sync::Ordering::Relaxed);
        }
        Ok((plan.bytes, false))
    }

    /// Are `len` bytes of `a` at `ao` and of `b` at `bo` equal?
    fn ranges_equal(&self, a: &File, ao: u64, b: &File, bo: u64, len: u64) -> Result<bool> {
        const STEP: usize = 1 << 20;
        let mut x = vec![0u8; STEP];
        let mut y = vec![0u8; STEP];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(STEP as u64) as usize;
            let ra = a.read_at(&mut x[..n], ao + done)?;
            let rb = b.read_at(&mut y[..n], bo + done)?;
            if ra != n || rb != n || x[..n] != y[..n] {
                return Ok(false);
            }
            done += n as u64;
        }
        Ok(true)
    }
}

impl File {
    /// Blocks of this file that other files share (reflink), as `udax stat`
    /// shows them.
    pub fn shared_blocks(&self) -> u64 {
        let fs = self.fs();
        if !fs.has_shared() {
            return 0;
        }
        let d = self.cell().data.read();
        d.device_runs(0, u64::MAX)
            .flat_map(|(s, n)| fs.shared_in(s, n))
            .map(|r| r.end - r.start)
            .sum()
    }
}

impl File {
    /// The file's extents split where sharing changes, each with whether
    /// other files share it (reflink): what `FS_IOC_FIEMAP` reports.
    pub fn extents_shared(&self) -> Vec<(crate::format::Extent, bool)> {
        let fs = self.fs();
        let d = self.cell().data.read();
        let mut out = Vec::new();
        for e in d.map.iter() {
            let mut at = e.dev_blk;
            let end = e.dev_blk + e.len;
            let mut piece = |a: u64, b: u64, shared: bool| {
                out.push((
                    crate::format::Extent {
                        file_blk: e.file_blk + (a - e.dev_blk),
                        dev_blk: a,
                        len: b - a,
                    },
                    shared,
                ))
            };
            for sh in fs.shared_in(e.dev_blk, e.len) {
                if sh.start > at {
                    piece(at, sh.start, false);
                }
                piece(sh.start, sh.end, true);
                at = sh.end;
            }
            if at < end {
                piece(at, end, false);
            }
        }
        out
    }
}

/// Check a remap request against the kernel's rules; `None` = nothing to do.
fn plan(
    src: &File,
    so: u64,
    dst: &File,
    dof: u64,
    len: u64,
    dedupe: bool,
    same: bool,
) -> Result<Option<Plan>> {
    let (ssize, dsize) = (src.len(), dst.len());
    if !so.is_multiple_of(BLOCK_SIZE) || !dof.is_multiple_of(BLOCK_SIZE) {
        return Err(Error::Invalid("remap offsets must be block aligned"));
    }
    let mut len = len;
    if len == 0 {
        if dedupe || so == ssize {
            return Ok(None);
        }
        if so > ssize {
            return Err(Error::Invalid("remap source offset past end of file"));
        }
        len = ssize - so;
    }
    let (send, dend) = match (so.checked_add(len), dof.checked_add(len)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(Error::Invalid("remap range overflows")),
    };
    if dend > MAX_FILE_SIZE {
        return Err(Error::FileTooBig);
    }
    if dedupe && (so >= ssize || send > ssize || dof >= dsize || dend > dsize) {
        return Err(Error::Invalid("dedupe range past end of file"));
    }
    if so >= ssize || send > ssize {
        return Err(Error::Invalid("remap source range past end of file"));
    }
    let to_eof = send == ssize && (!dedupe || dend == dsize);
    let (bytes, blocks) = if to_eof {
        (len, len.div_ceil(BLOCK_SIZE))
    } else if len.is_multiple_of(BLOCK_SIZE) {
        (len, len / BLOCK_SIZE)
    } else if dedupe {
        // FIDEDUPERANGE may shorten to whole blocks.
        let l = len - len % BLOCK_SIZE;
        (l, l / BLOCK_SIZE)
    } else {
        return Err(Error::Invalid("remap length must be block aligned"));
    };
    if blocks == 0 {
        return Ok(None);
    }
    if to_eof && !len.is_multiple_of(BLOCK_SIZE) && dend < dsize {
        // The source's partial last block would bring its zeros past the
        // source's end into the middle of the destination.
        return Err(Error::Invalid(
            "remap of a partial last block into the middle of the destination",
        ));
    }
    let span = blocks * BLOCK_SIZE;
    if same && dof < so + span && so < dof + span {
        return Err(Error::Invalid("overlapping remap within one file"));
    }
    Ok(Some(Plan {
        src_blk: so / BLOCK_SIZE,
        dst_blk: dof / BLOCK_SIZE,
        blocks,
        dst_size: if dedupe { dsize } else { dsize.max(dend) },
        bytes,
    }))
}

/// The ops of one remap transaction from block `pos` of the plan: release the
/// destination's blocks of the span, share the source's extents there; the
/// last transaction also sets the size. Returns the ops and where the next
/// transaction starts.
fn remap_ops(src: &InodeData, dst_ino: u64, p: &Plan, pos: u64, grow: bool) -> (Vec<Op>, u64) {
    let budget = MAX_TX_OPS - 2;
    let mut shares = Vec::new();
    let mut at = pos;
    while at < p.blocks && shares.len() < budget {
        match src.map.lookup(p.src_blk + at) {
            Lookup::Mapped { dev_blk, len } => {
                let n = len.min(p.blocks - at);
                shares.push(Op::MapShared {
                    ino: dst_ino,
                    file_blk: p.dst_blk + at,
                    dev_blk,
                    len: n,
                });
                at += n;
            }
            Lookup::Hole { len } => at = at.saturating_add(len).min(p.blocks),
        }
    }
    let mut ops = vec![Op::Unmap {
        ino: dst_ino,
        file_blk: p.dst_blk + pos,
        len: at - pos,
    }];
    ops.extend(shares);
    if at >= p.blocks && grow {
        ops.push(Op::SetSize {
            ino: dst_ino,
            size: p.dst_size,
            time_ns: now_ns(),
        });
    }
    (ops, at)
}

/// The first run of shared blocks behind file blocks `[pos, b)` of `d`, as
/// `(file block, device block, length)`.
fn next_shared(fs: &Fs, d: &InodeData, mut pos: u64, b: u64) -> Option<(u64, u64, u64)> {
    while pos < b {
        match d.map.lookup(pos) {
            Lookup::Mapped { dev_blk, len } => {
                let n = len.min(b - pos);
                if let Some(sh) = fs.shared_in(dev_blk, n).into_iter().next() {
                    return Some((pos + (sh.start - dev_blk), sh.start, sh.end - sh.start));
                }
                pos += n;
            }
            Lookup::Hole { len } => pos = pos.saturating_add(len),
        }
    }
    None
}

/// Copy on write: give `cell` private copies of every shared block behind file
/// blocks `[a, b)` (allocate, copy, swap the extent in one transaction per
/// batch). The caller holds the file's invalidate lock exclusively and has
/// unmapped the range from every mapping. A shared block with a media error
/// is not copied: EIO (SPEC E3, never copy bad data silently).
pub(crate) fn unshare(fs: &Fs, cell: &Cell, a: u64, b: u64) -> Result<()> {
    if !fs.has_shared() {
        return Ok(());
    }
    let mut pos = a;
    while pos < b {
        let _g = fs.begin(MAX_TX_OPS)?;
        let mut d = cell.data.write();
        if d.freed {
            return Err(Error::NotFound);
        }
        // On failure, the blocks of the batch's `Map` ops go back.
        let mut ops = Vec::new();
        while ops.len() + 2 <= MAX_TX_OPS {
            let Some((f, old, mut k)) = next_shared(fs, &d, pos, b) else {
                pos = b;
                break;
            };
            if let Some(bad) = fs.first_bad(old, k) {
                if bad == old {
                    give_back(fs, &[], &ops);
                    return Err(Error::Device(DeviceError::Poisoned {
                        offset: bad * BLOCK_SIZE,
                    }));
                }
                k = bad - old;
            }
            let req = AllocRequest {
                len: k,
                goal: None,
                huge: k >= BLOCKS_PER_HUGE && f % BLOCKS_PER_HUGE == 0,
            };
            let Ok(ranges) = fs.inner.alloc.alloc(req) else {
                give_back(fs, &[], &ops);
                return Err(Error::NoSpace);
            };
            let mut off = 0u64;
            for (i, r) in ranges.iter().enumerate() {
                if ops.len() + 2 > MAX_TX_OPS {
                    // The op budget is full: the rest waits for the next batch.
                    give_back(fs, &ranges[i..], &[]);
                    break;
                }
                if let Err(e) = copy_blocks(fs, old + off, r.start, r.len) {
                    give_back(fs, &ranges[i..], &ops);
                    return Err(e);
                }
                ops.push(Op::Unmap {
                    ino: cell.ino,
                    file_blk: f + off,
                    len: r.len,
                });
                ops.push(Op::Map {
                    ino: cell.ino,
                    file_blk: f + off,
                    dev_blk: r.start,
                    len: r.len,
                });
                off += r.len;
            }
            pos = f + off;
        }
        if let Err(e) = fs.run_tx(&mut [(cell.ino, &mut *d)], &ops) {
            give_back(fs, &[], &ops);
            return Err(e);
        }
    }
    Ok(())
}

/// Give file blocks `[c, c + 512)` of `cell` one 2 MiB-aligned device extent:
/// a hugetlbfs device maps whole 2 MiB pages only, so a chunk whose blocks
/// are scattered (a block punched and written again, small writes out of
/// order) could not be mapped at all. The blocks the chunk has are copied,
/// its holes become zeroed blocks (as a write fault over the chunk would
/// allocate them), and the extents are swapped in one transaction; the old
/// blocks are freed (or lose a reference, if shared). The caller holds the
/// invalidate lock exclusively and has unmapped the range.
pub(crate) fn relocate_chunk(fs: &Fs, cell: &Cell, c: u64) -> Result<()> {
    let n = BLOCKS_PER_HUGE;
    let _g = fs.begin(2)?;
    let mut d = cell.data.write();
    if d.freed {
        return Err(Error::NotFound);
    }
    let mut runs = Vec::new(); // (file block, device block, length)
    let mut pos = c;
    while pos < c + n {
        match d.map.lookup(pos) {
            Lookup::Mapped { dev_blk, len } => {
                let k = len.min(c + n - pos);
                if pos == c && k == n && dev_blk % n == 0 {
                    return Ok(()); // already one aligned extent
                }
                if let Some(bad) = fs.first_bad(dev_blk, k) {
                    return Err(Error::Device(DeviceError::Poisoned {
                        offset: bad * BLOCK_SIZE,
                    }));
                }
                runs.push((pos, dev_blk, k));
                pos += k;
            }
            Lookup::Hole { len } => pos = pos.saturating_add(len),
        }
    }
    let req = AllocRequest {
        len: n,
        goal: None,
        huge: true,
    };
    let ranges = fs.inner.alloc.alloc(req).map_err(|_| Error::NoSpace)?;
    let new = match ranges[..] {
        [r] if r.start % n == 0 => r.start,
        _ => {
            give_back(fs, &ranges, &[]);
            return Err(Error::NoSpace); // no free aligned 2 MiB extent
        }
    };
    let ops = [
        Op::Unmap {
            ino: cell.ino,
            file_blk: c,
            len: n,
        },
        Op::Map {
            ino: cell.ino,
            file_blk: c,
            dev_blk: new,
            len: n,
        },
    ];
    let dev = fs.device();
    let copied = dev
        .zero(new * BLOCK_SIZE, n * BLOCK_SIZE)
        .map_err(Error::from)
        .and_then(|()| {
            dev.flush(new * BLOCK_SIZE, n * BLOCK_SIZE);
            runs.iter()
                .try_for_each(|&(f, old, k)| copy_blocks(fs, old, new + (f - c), k))
        });
    if let Err(e) = copied.and_then(|()| fs.run_tx(&mut [(cell.ino, &mut *d)], &ops)) {
        give_back(fs, &[], &ops[1..]);
        return Err(e);
    }
    Ok(())
}

/// Release (unmap) every shared block behind file blocks `[a, b)` of `cell`,
/// leaving holes: for an operation that would otherwise change them in place
/// (zero range). The caller holds the invalidate lock exclusively and has
/// unmapped the range.
pub(crate) fn release_shared(fs: &Fs, cell: &Cell, a: u64, b: u64) -> Result<()> {
    if !fs.has_shared() {
        return Ok(());
    }
    let mut pos = a;
    while pos < b {
        let _g = fs.begin(MAX_TX_OPS)?;
        let mut d = cell.data.write();
        let mut ops = Vec::new();
        while ops.len() < MAX_TX_OPS {
            let Some((f, _, k)) = next_shared(fs, &d, pos, b) else {
                pos = b;
                break;
            };
            ops.push(Op::Unmap {
                ino: cell.ino,
                file_blk: f,
                len: k,
            });
            pos = f + k;
        }
        fs.run_tx(&mut [(cell.ino, &mut *d)], &ops)?;
    }
    Ok(())
}

/// Copy `n` device blocks from `from` to `to` and flush the copy.
fn copy_blocks(fs: &Fs, from: u64, to: u64, n: u64) -> Result<()> {
    const STEP: u64 = 256; // 1 MiB
    let dev = fs.device();
    let mut buf = vec![0u8; (STEP.min(n) * BLOCK_SIZE) as usize];
    let mut i = 0;
    while i < n {
        let k = STEP.min(n - i);
        let bytes = &mut buf[..(k * BLOCK_SIZE) as usize];
        dev.read((from + i) * BLOCK_SIZE, bytes)?;
        dev.write((to + i) * BLOCK_SIZE, bytes)?;
        dev.flush((to + i) * BLOCK_SIZE, k * BLOCK_SIZE);
        i += k;
    }
    Ok(())
}
