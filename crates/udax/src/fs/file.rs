//! Open files: read, write, truncate, fallocate, fsync.

use super::extent::Lookup;
use super::iomap::Inode;
use super::{change_time_ns, falloc, now_ns, stat_of, Cell, Error, Fs, Result, Stat, MAX_TX_OPS};
use crate::alloc::{AllocRequest, BlockRange};
use crate::device::DeviceError;
use crate::format::{Op, MAX_FILE_SIZE};
use crate::fs::state::InodeData;
use crate::sync::Ordering;
use crate::{BLOCKS_PER_HUGE, BLOCK_SHIFT, BLOCK_SIZE};
use std::sync::Arc;

/// Most bytes one write transaction covers; larger writes are split.
const WRITE_CHUNK: u64 = 64 << 20;
/// Map ops per transaction (the rest of the ops budget is for the size change).
const MAX_MAPS: usize = MAX_TX_OPS - 2;

/// An open file. `Send + Sync`; dropping it closes it.
#[derive(Debug)]
pub struct File {
    fs: Fs,
    cell: Arc<Cell>,
    read: bool,
    write: bool,
    append: bool,
}

/// Allocate with the 2 MiB policy for whole chunks, and for pieces of at least
/// 256 KiB that start a 2 MiB-aligned file range (a large file written in pieces).
fn huge_hint(fblk: u64, want: u64) -> bool {
    want >= BLOCKS_PER_HUGE || (fblk.is_multiple_of(BLOCKS_PER_HUGE) && want >= 64)
}

/// What a write fills the rest of new blocks with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Around {
    /// Nothing (the blocks are the file's own, written in place).
    Keep,
    /// Zeros (new blocks for a hole).
    Zero,
    /// The bytes of the shared blocks from this device block (copy on write).
    CopyFrom(u64),
}

fn blk(off: u64) -> u64 {
    off >> BLOCK_SHIFT
}
fn blk_up(off: u64) -> u64 {
    off.div_ceil(BLOCK_SIZE)
}

impl File {
    pub(crate) fn new(fs: Fs, cell: Arc<Cell>, read: bool, write: bool, append: bool) -> File {
        File {
            fs,
            cell,
            read,
            write,
            append,
        }
    }

    pub fn ino(&self) -> u64 {
        self.cell.ino
    }

    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    pub(crate) fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }

    /// This file as the DAX hooks take it.
    pub(crate) fn dax_inode(&self) -> Inode<&Fs, &Cell> {
        Inode::of(&self.fs, &self.cell)
    }

    /// Another handle on the same open file (as a mapping holds one).
    pub(crate) fn dup(&self) -> File {
        // ORDERING: this handle keeps the count above 0 meanwhile, so no
        // decision on it changes (fs/mod.rs, `open`).
        self.cell.open.fetch_add(1, Ordering::AcqRel);
        File::new(
            self.fs.clone(),
            self.cell.clone(),
            self.read,
            self.write,
            self.append,
        )
    }

    /// Another handle on the same open file whose calls are checked as
    /// `fs` checks (a view of the same file system): an owner's request
    /// about an open file, checked with its caller's credentials.
    pub(crate) fn dup_as(&self, fs: &Fs) -> File {
        debug_assert!(Arc::ptr_eq(&self.fs.inner, &fs.inner));
        let mut f = self.dup();
        f.fs = fs.clone();
        f
    }

    /// This handle, its calls checked as `fs` checks (a view of the same
    /// file system, e.g. [`Fs::as_thread_caller`] for a file opened
    /// through a view with one call's credentials).
    pub(crate) fn viewed_as(mut self, fs: &Fs) -> File {
        debug_assert!(Arc::ptr_eq(&self.fs.inner, &fs.inner));
        self.fs = fs.clone();
        self
    }

    pub fn readable(&self) -> bool {
        self.read
    }

    pub fn writable(&self) -> bool {
        self.write
    }

    pub fn stat(&self) -> Result<Stat> {
        let d = self.cell.data.read();
        // ORDERING: see `change_time_ns`; `mtime_pending` is a time value
        // (fs/mod.rs).
        self.cell.times_seen.store(true, Ordering::Relaxed);
        Ok(stat_of(
            self.cell.ino,
            &d,
            self.cell.mtime_pending.load(Ordering::Relaxed),
        ))
    }

    pub fn len(&self) -> u64 {
        self.cell.data.read().attr.size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device extent behind file block `fblk` (the "iomap" query): mapped
    /// blocks, or a hole and its length.
    pub fn iomap(&self, fblk: u64) -> Lookup {
        self.cell.data.read().map.lookup(fblk)
    }

    /// Read up to `buf.len()` bytes at `off`; fewer at end of file; holes read as zeros.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        if !self.read {
            return Err(Error::BadFd);
        }
        if crate::dax::in_mapping(buf.as_ptr() as usize, buf.len()) {
            // The buffer is a udax mapping: copying into it may fault, and the
            // fault handler needs this file's locks. Copy through a bounce buffer.
            let mut tmp = vec![0u8; buf.len()];
            let n = self.read_at(&mut tmp, off)?;
            buf[..n].copy_from_slice(&tmp[..n]);
            return Ok(n);
        }
        let d = self.cell.data.read();
        let size = d.attr.size;
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - off).min(buf.len() as u64) as usize;
        let dev = &self.fs.inner.dev;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let in_blk = pos % BLOCK_SIZE;
            let (run, mapped) = match d.map.lookup(blk(pos)) {
                Lookup::Mapped { dev_blk, len } => (len, Some(dev_blk)),
                Lookup::Hole { len } => (len, None),
            };
            let run_bytes = run.saturating_mul(BLOCK_SIZE) - in_blk;
            let take = run_bytes.min((n - done) as u64) as usize;
            let mut take = take;
            let mut short = false;
            if let Some(dblk) = mapped {
                let nblk = (in_blk + take as u64).div_ceil(BLOCK_SIZE);
                if let Some(bad) = self.fs.first_bad(dblk, nblk) {
                    // A media error (SPEC E3): a short read up to it, or EIO.
                    let ok = ((bad - dblk) * BLOCK_SIZE).saturating_sub(in_blk) as usize;
                    if done + ok == 0 {
                        return Err(Error::Device(DeviceError::Poisoned {
                            offset: bad * BLOCK_SIZE,
                        }));
                    }
                    take = take.min(ok);
                    short = true;
                }
            }
            let dst = &mut buf[done..done + take];
            match mapped {
                Some(dblk) => dev.read(dblk * BLOCK_SIZE + in_blk, dst)?,
                None => dst.fill(0),
            }
            done += take;
            if short {
                return Ok(done);
            }
        }
        Ok(n)
    }

    /// Write `buf` at `off` (at the end of file for an append handle). Returns the
    /// bytes written: all of them, or fewer if the device filled up part way.
    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<usize> {
        if !self.write {
            return Err(Error::BadFd);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if crate::dax::in_mapping(buf.as_ptr() as usize, buf.len()) {
            // See read_at: never fault on a udax mapping while holding file locks.
            let tmp = buf.to_vec();
            return self.write_at(&tmp, off);
        }
        self.fs.remove_privs(&self.cell)?;
        // O_APPEND: every write lands at the end of file, whatever `off` says.
        let off = if self.append { self.len() } else { off };
        let mut written = 0usize;
        while written < buf.len() {
            let piece = &buf[written..];
            let piece = &piece[..piece.len().min(WRITE_CHUNK as usize)];
            match self.write_piece(piece, off.checked_add(written as u64), written == 0) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if written > 0 && matches!(e, Error::NoSpace) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Append `buf` at the end of file; returns the offset written at.
    pub fn append(&self, buf: &[u8]) -> Result<u64> {
        let off = self.len();
        self.write_at(buf, off)?;
        Ok(off)
    }

    /// Grow the file to `end` over bytes `[off, end)` that were already
    /// copied into its blocks by another process (a client of the owner
    /// writing in place into blocks allocated past end of file with
    /// `fallocate(KEEP_SIZE)`): the size changes only after the data is
    /// on the device, as a growing `write_at` orders them. Bytes between
    /// the old size and `off` read as zeros afterwards, as after a write
    /// there. Returns `false`, changing nothing, if a block of the range is
    /// not this file's alone any more (the caller writes again).
    pub fn extend_written(&self, off: u64, end: u64) -> Result<bool> {
        if !self.write {
            return Err(Error::BadFd);
        }
        if off >= end || end > MAX_FILE_SIZE {
            return Err(Error::Invalid("extend range"));
        }
        self.fs.remove_privs(&self.cell)?;
        let (b0, b1) = (blk(off), blk_up(end));
        let t = change_time_ns(&self.cell);
        let grew = {
            let _g = self.fs.begin(1)?;
            let mut d = self.cell.data.write();
            if d.freed {
                return Err(Error::NotFound);
            }
            if !d.map.is_mapped(b0, b1 - b0) || self.fs.range_shared(&d, b0, b1) {
                return Ok(false);
            }
            if end <= d.attr.size {
                // ORDERING: a time value (fs/mod.rs, `mtime_pending`).
                self.cell.mtime_pending.store(t, Ordering::Relaxed);
                false
            } else {
                zero_past_eof(&self.fs, &d, off)?;
                let ops = [Op::SetSize {
                    ino: self.cell.ino,
                    size: end,
                    time_ns: t,
                }];
                self.fs.run_tx(&mut [(self.cell.ino, &mut *d)], &ops)?;
                true
            }
        };
        if grew {
            crate::dax::hooks::after_grow(&self.dax_inode(), end);
            crate::dax::hooks::map_written(&self.dax_inode(), b0, b1);
        }
        Ok(true)
    }

    fn write_piece(&self, data: &[u8], off: Option<u64>, first: bool) -> Result<usize> {
        let off = off.ok_or(Error::FileTooBig)?;
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            if first && off >= MAX_FILE_SIZE {
                return Err(Error::FileTooBig);
            }
            let n = (MAX_FILE_SIZE.saturating_sub(off)) as usize;
            return self.write_piece(&data[..n], Some(off), first);
        }
        // Media errors (SPEC E4): a write covering a poisoned block whole
        // clears it; one that covers it in part fails (EIO) or stops short.
        let (data, end, cleared) = self.poison_plan(data, off, end)?;
        let r = self.write_unpoisoned(data, off, end);
        if !cleared.is_empty() && r.is_ok() {
            self.fs.unpoison(&self.cell, &cleared)?;
        }
        r
    }

    /// For a write of `data` at `off..end`: the part that may be written (up to
    /// the first block with a media error that it does not cover whole), and
    /// the `(file block, device block)` pairs with media errors it overwrites.
    #[allow(clippy::type_complexity)]
    fn poison_plan<'a>(
        &self,
        data: &'a [u8],
        off: u64,
        end: u64,
    ) -> Result<(&'a [u8], u64, Vec<(u64, u64)>)> {
        let mut cleared = Vec::new();
        if self.fs.bad_blocks_empty() {
            return Ok((data, end, cleared));
        }
        let d = self.cell.data.read();
        let (b0, b1) = (blk(off), blk_up(end));
        let mut pos = b0;
        while pos < b1 {
            match d.map.lookup(pos) {
                Lookup::Mapped { dev_blk, len } => {
                    let n = len.min(b1 - pos);
                    let mut from = dev_blk;
                    while let Some(bad) = self.fs.first_bad(from, dev_blk + n - from) {
                        let f = pos + (bad - dev_blk);
                        let (a, b) = (f * BLOCK_SIZE, (f + 1) * BLOCK_SIZE);
                        if off <= a && end >= b {
                            // A shared bad block is not cleared: this write
                            // gives the file a new block (copy on write) and
                            // the old one stays bad for its other owners.
                            if self.fs.shared_in(bad, 1).is_empty() {
                                cleared.push((f, bad));
                            }
                        } else if a <= off {
                            return Err(Error::Device(DeviceError::Poisoned {
                                offset: bad * BLOCK_SIZE,
                            }));
                        } else {
                            let keep = (a - off) as usize;
                            return Ok((&data[..keep], a, cleared));
                        }
                        from = bad + 1;
                    }
                    pos += n;
                }
                Lookup::Hole { len } => pos = pos.saturating_add(len),
            }
        }
        Ok((data, end, cleared))
    }

    fn write_unpoisoned(&self, data: &[u8], off: u64, end: u64) -> Result<usize> {
        let (b0, b1) = (blk(off), blk_up(end));
        let t = change_time_ns(&self.cell);
        // Fast path: every block mapped, none shared, and no size change: no
        // metadata at all (the mtime is kept lazily, as the later of the
        // logged one and `mtime_pending`, so not over an mtime set to the
        // future: that one is replaced by a logged `Times`, as the kernel
        // stamps the present).
        {
            let d = self.cell.data.read();
            if d.freed {
                return Err(Error::NotFound);
            }
            if end <= d.attr.size
                && d.map.is_mapped(b0, b1 - b0)
                && !self.fs.range_shared(&d, b0, b1)
                && d.attr.mtime_ns <= t
            {
                self.copy_in(&d, data, off, b0, b1)?;
                // ORDERING: a time value (fs/mod.rs, `mtime_pending`).
                self.cell.mtime_pending.store(t, Ordering::Relaxed);
                return Ok(data.len());
            }
        }
        let fs = &self.fs;
        let mut cow = false;
        let (written, allocated, grew, old_size) = loop {
            // Copy on write swaps blocks under the mappings: like a layout
            // change it holds the invalidate lock and unmaps the range first.
            let _inv = cow.then(|| self.cell.dax.invalidate.write());
            if cow {
                crate::dax::hooks::zap_file_range(&self.dax_inode(), b0, b1)?;
            }
            let _g = fs.begin(MAX_TX_OPS)?;
            let mut d = self.cell.data.write();
            if !cow && fs.range_shared(&d, b0, b1) {
                cow = true;
                continue;
            }
            let old_size = d.attr.size;
            zero_past_eof(fs, &d, off)?;
            let (ops, stop) = self.fill_and_copy(&mut d, data, off)?;
            let written = stop.min(end) - off;
            let mut ops = ops;
            let new_end = off + written;
            let grew = new_end > d.attr.size;
            if grew {
                ops.push(Op::SetSize {
                    ino: self.cell.ino,
                    size: new_end,
                    time_ns: t,
                });
            } else if d.attr.mtime_ns > t {
                // ORDERING: a time value, under the inode write lock (fs/mod.rs).
                self.cell.mtime_pending.store(0, Ordering::Relaxed);
                ops.push(Op::Times {
                    ino: self.cell.ino,
                    atime_ns: d.attr.atime_ns,
                    mtime_ns: t,
                    ctime_ns: t.max(d.attr.ctime_ns),
                });
            } else {
                // ORDERING: as above.
                self.cell.mtime_pending.store(t, Ordering::Relaxed);
            }
            if let Err(e) = fs.run_tx(&mut [(self.cell.ino, &mut *d)], &ops) {
                self.free_maps(&ops);
                return Err(e);
            }
            let allocated = ops.iter().any(|o| matches!(o, Op::Map { .. }));
            break (written, allocated, grew.then_some(new_end), old_size);
        };
        // With no fs lock held (entry locks come first in the lock order).
        // Pages that were past end of file show no zero page and have no
        // entry (those past it only hold SIGBUS markers, which the growth
        // drops): only the allocated pages inside the old size are looked at.
        let inside = blk_up(off + written).min(blk_up(old_size));
        if allocated && b0 < inside {
            crate::dax::hooks::after_alloc(&self.dax_inode(), b0, inside);
        }
        if let Some(size) = grew {
            crate::dax::hooks::after_grow(&self.dax_inode(), size);
        }
        if allocated || grew.is_some() {
            crate::dax::hooks::map_written(&self.dax_inode(), b0, blk_up(off + written));
        }
        Ok(written as usize)
    }

    /// Copy `data` (file bytes `[off, off+len)`) into blocks `[b0, b1)`, all mapped.
    fn copy_in(&self, d: &InodeData, data: &[u8], off: u64, b0: u64, b1: u64) -> Result<()> {
        let mut pos = b0;
        while pos < b1 {
            match d.map.lookup(pos) {
                Lookup::Mapped { dev_blk, len } => {
                    let n = len.min(b1 - pos);
                    self.copy_run(data, off, pos, dev_blk, n, Around::Keep)?;
                    pos += n;
                }
                Lookup::Hole { .. } => {
                    return Err(Error::Corrupted {
                        what: "internal: hole in a mapped range".into(),
                        device_offset: 0,
                    })
                }
            }
        }
        Ok(())
    }

    /// Store the part of `data` (placed at file offset `off`) that falls in file
    /// blocks `[fblk, fblk+n)` at device block `dev_blk`; for new blocks also
    /// fill the bytes the data does not cover (`around`). Everything stored is
    /// flushed.
    fn copy_run(
        &self,
        data: &[u8],
        off: u64,
        fblk: u64,
        dev_blk: u64,
        n: u64,
        around: Around,
    ) -> Result<()> {
        let dev = &self.fs.inner.dev;
        let span_a = fblk * BLOCK_SIZE;
        let span_b = (fblk + n) * BLOCK_SIZE;
        let end = off + data.len() as u64;
        let a = off.clamp(span_a, span_b);
        let b = end.clamp(span_a, span_b);
        let dev_at = |fo: u64| dev_blk * BLOCK_SIZE + (fo - span_a);
        if b > a {
            let bytes = &data[(a - off) as usize..(b - off) as usize];
            if self.cell.dax.is_mapped() {
                // Read back through the mapping soon, likely: keep it cached
                // (LMDB's pwrite-then-read pattern; 0.66x -> 0.78x of tmpfs
                // with cached stores).
                dev.write_cached(dev_at(a), bytes)?;
            } else {
                dev.write(dev_at(a), bytes)?;
            }
            dev.flush(dev_at(a), b - a);
        }
        let z = b.max(a);
        for (x, y) in [(span_a, a), (z, span_b)] {
            if y <= x {
                continue;
            }
            match around {
                Around::Keep => {}
                Around::Zero => dev.zero(dev_at(x), y - x)?,
                Around::CopyFrom(old) => {
                    // Copy on write: the bytes the data leaves come from the
                    // shared block, which must be readable.
                    let old_at = |fo: u64| old * BLOCK_SIZE + (fo - span_a);
                    let (b0, b1) = (old_at(x) / BLOCK_SIZE, (old_at(y) - 1) / BLOCK_SIZE + 1);
                    if let Some(bad) = self.fs.first_bad(b0, b1 - b0) {
                        return Err(Error::Device(DeviceError::Poisoned {
                            offset: bad * BLOCK_SIZE,
                        }));
                    }
                    let mut tmp = vec![0u8; (y - x) as usize];
                    dev.read(old_at(x), &mut tmp)?;
                    dev.write(dev_at(x), &tmp)?;
                }
            }
            if around != Around::Keep {
                dev.flush(dev_at(x), y - x);
            }
        }
        Ok(())
    }

    /// Allocate the holes of the write range (zeroing what the data does not cover)
    /// and copy the data. Returns the Map ops and the file offset reached (the
    /// transaction's op budget may stop it early).
    fn fill_and_copy(&self, d: &mut InodeData, data: &[u8], off: u64) -> Result<(Vec<Op>, u64)> {
        let end = off + data.len() as u64;
        let (b0, b1) = (blk(off), blk_up(end));
        // Room for a Map and the SetSize the caller may add (no regrowth).
        let mut ops = Vec::with_capacity(4);
        let mut pos = b0;
        let mut goal = if b0 > 0 {
            match d.map.lookup(b0 - 1) {
                Lookup::Mapped { dev_blk, .. } => Some(dev_blk + 1),
                Lookup::Hole { .. } => None,
            }
        } else {
            None
        };
        while pos < b1 {
            match d.map.lookup(pos) {
                Lookup::Mapped { dev_blk, len } => {
                    let n = len.min(b1 - pos);
                    let Some(sh) = self.fs.shared_in(dev_blk, n).into_iter().next() else {
                        self.copy_run(data, off, pos, dev_blk, n, Around::Keep)?;
                        goal = Some(dev_blk + n);
                        pos += n;
                        continue;
                    };
                    // Blocks before the first shared one are written in place.
                    let k = sh.start - dev_blk;
                    if k > 0 {
                        self.copy_run(data, off, pos, dev_blk, k, Around::Keep)?;
                        pos += k;
                        goal = Some(dev_blk + k);
                        continue;
                    }
                    // Copy on write (SPEC R1): new blocks get the data, and the
                    // bytes it leaves come from the shared blocks; the extent is
                    // swapped in the same transaction.
                    if ops.len() + 2 > MAX_MAPS {
                        break;
                    }
                    let want = sh.end - sh.start;
                    let req = AllocRequest {
                        len: want,
                        goal: None,
                        huge: huge_hint(pos, want),
                    };
                    let Ok(ranges) = self.fs.inner.alloc.alloc(req) else {
                        self.free_maps(&ops);
                        return Err(Error::NoSpace);
                    };
                    let base = pos;
                    for (i, r) in ranges.iter().enumerate() {
                        if ops.len() + 2 > MAX_MAPS {
                            self.free_ranges(&ranges[i..]);
                            break;
                        }
                        let old = dev_blk + (pos - base);
                        if let Err(e) =
                            self.copy_run(data, off, pos, r.start, r.len, Around::CopyFrom(old))
                        {
                            self.free_ranges(&ranges[i..]);
                            self.free_maps(&ops);
                            return Err(e);
                        }
                        ops.push(Op::Unmap {
                            ino: self.cell.ino,
                            file_blk: pos,
                            len: r.len,
                        });
                        ops.push(Op::Map {
                            ino: self.cell.ino,
                            file_blk: pos,
                            dev_blk: r.start,
                            len: r.len,
                        });
                        pos += r.len;
                    }
                }
                Lookup::Hole { len } => {
                    if ops.len() >= MAX_MAPS {
                        break;
                    }
                    let want = len.min(b1 - pos);
                    let req = AllocRequest {
                        len: want,
                        goal,
                        huge: huge_hint(pos, want),
                    };
                    let ranges = match self.fs.inner.alloc.alloc(req) {
                        Ok(r) => r,
                        Err(_) => {
                            self.free_maps(&ops);
                            return Err(Error::NoSpace);
                        }
                    };
                    for (i, r) in ranges.iter().enumerate() {
                        if ops.len() >= MAX_MAPS {
                            self.free_ranges(&ranges[i..]);
                            break;
                        }
                        if let Err(e) = self.copy_run(data, off, pos, r.start, r.len, Around::Zero)
                        {
                            self.free_ranges(&ranges[i..]);
                            self.free_maps(&ops);
                            return Err(e);
                        }
                        ops.push(Op::Map {
                            ino: self.cell.ino,
                            file_blk: pos,
                            dev_blk: r.start,
                            len: r.len,
                        });
                        goal = Some(r.start + r.len);
                        pos += r.len;
                    }
                }
            }
        }
        Ok((ops, (pos * BLOCK_SIZE).max(off)))
    }

    /// Truncate or extend to `len` bytes. Shrinking frees whole blocks past the new
    /// end and zeroes the rest of the last partial block; growing leaves a hole.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.set_len_wait(len, true)
    }

    /// `set_len` that fails with `Busy` (EBUSY) instead of waiting when a page
    /// to be cut is pinned (the non-blocking break-layouts variant).
    pub fn set_len_nowait(&self, len: u64) -> Result<()> {
        self.set_len_wait(len, false)
    }

    fn set_len_wait(&self, len: u64, wait: bool) -> Result<()> {
        if !self.write {
            return Err(Error::BadFd);
        }
        if len > MAX_FILE_SIZE {
            return Err(Error::FileTooBig);
        }
        self.fs.remove_privs(&self.cell)?;
        let _inv = self.cell.dax.invalidate.write();
        let old = self.len();
        if len < old {
            // Pages wholly past the new end raise SIGBUS from now on (SPEC M5).
            crate::dax::hooks::break_layouts(&self.dax_inode(), blk_up(len), u64::MAX, wait)?;
        }
        // The partial last block is zeroed past the new end: a shared one is
        // copied first.
        self.unshare_edges(len, len)?;
        self.set_len_locked(len)?;
        if len > old {
            crate::dax::hooks::after_grow(&self.dax_inode(), len);
        }
        Ok(())
    }

    fn set_len_locked(&self, len: u64) -> Result<()> {
        let _g = self.fs.begin(2)?;
        let mut d = self.cell.data.write();
        let ino = self.cell.ino;
        let mut ops = Vec::new();
        zero_past_eof(&self.fs, &d, len)?;
        if len < d.attr.size || d.map.end() > blk_up(len) {
            self.zero_partial(&d, len, blk_up(len) * BLOCK_SIZE)?;
            let from = blk_up(len);
            if d.map.end() > from {
                ops.push(Op::Unmap {
                    ino,
                    file_blk: from,
                    len: d.map.end() - from,
                });
            }
        }
        ops.push(Op::SetSize {
            ino,
            size: len,
            time_ns: now_ns(),
        });
        self.fs.run_tx(&mut [(ino, &mut *d)], &ops)
    }

    /// Zero file bytes `[a, b)` within one block's mapped part (used at range edges).
    fn zero_partial(&self, d: &InodeData, a: u64, b: u64) -> Result<()> {
        if b <= a {
            return Ok(());
        }
        debug_assert!(blk(a) == blk(b - 1));
        if let Lookup::Mapped { dev_blk, .. } = d.map.lookup(blk(a)) {
            let at = dev_blk * BLOCK_SIZE + a % BLOCK_SIZE;
            self.fs.inner.dev.zero(at, b - a)?;
            self.fs.inner.dev.flush(at, b - a);
        }
        Ok(())
    }

    /// `fallocate(2)` with the Linux mode bits of [`falloc`].
    pub fn fallocate(&self, mode: u32, off: u64, len: u64) -> Result<()> {
        self.fallocate_wait(mode, off, len, true)
    }

    /// `fallocate` that fails with `Busy` (EBUSY) instead of waiting for pinned
    /// pages in a range it would unmap.
    pub fn fallocate_nowait(&self, mode: u32, off: u64, len: u64) -> Result<()> {
        self.fallocate_wait(mode, off, len, false)
    }

    fn fallocate_wait(&self, mode: u32, off: u64, len: u64, wait: bool) -> Result<()> {
        use falloc::*;
        if !self.write {
            return Err(Error::BadFd);
        }
        self.fs.remove_privs(&self.cell)?;
        let known =
            KEEP_SIZE | PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE | UNSHARE_RANGE;
        if mode & !known != 0 {
            return Err(Error::NotSupported("unknown fallocate mode bits"));
        }
        if len == 0 {
            return Err(Error::Invalid("fallocate length 0"));
        }
        let end = off.checked_add(len).ok_or(Error::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(Error::FileTooBig);
        }
        let excl = mode & (PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE | UNSHARE_RANGE);
        if excl.count_ones() > 1 {
            return Err(Error::Invalid("incompatible fallocate modes"));
        }
        // Layout changes first unmap the range from every mapping and wait for
        // pins (SPEC M12), holding the invalidate lock until the extents changed.
        let _inv = (excl != 0).then(|| self.cell.dax.invalidate.write());
        let (b0, b1) = match excl {
            COLLAPSE_RANGE | INSERT_RANGE => (blk(off), u64::MAX),
            UNSHARE_RANGE => (blk(off), blk_up(end)),
            _ => (blk_up(off), blk(end)),
        };
        if excl != 0 && b1 > b0 {
            crate::dax::hooks::break_layouts(&self.dax_inode(), b0, b1, wait)?;
        }
        match excl {
            0 => self.allocate_range(off, end, mode & KEEP_SIZE != 0),
            PUNCH_HOLE => {
                if mode & KEEP_SIZE == 0 {
                    return Err(Error::NotSupported("PUNCH_HOLE needs KEEP_SIZE"));
                }
                self.punch(off, end)
            }
            ZERO_RANGE => self.zero_range(off, end, mode & KEEP_SIZE != 0),
            UNSHARE_RANGE => {
                super::reflink::unshare(&self.fs, &self.cell, blk(off), blk_up(end))?;
                self.allocate_range(off, end, mode & KEEP_SIZE != 0)
            }
            COLLAPSE_RANGE | INSERT_RANGE => {
                if mode & KEEP_SIZE != 0 {
                    return Err(Error::Invalid("COLLAPSE/INSERT_RANGE with KEEP_SIZE"));
                }
                if !off.is_multiple_of(BLOCK_SIZE) || !len.is_multiple_of(BLOCK_SIZE) {
                    return Err(Error::Invalid("range not block aligned"));
                }
                if excl == COLLAPSE_RANGE {
                    self.collapse(off, len)
                } else {
                    self.insert(off, len)
                }
            }
            _ => Err(Error::NotSupported("fallocate mode")),
        }
    }

    /// Allocate zeroed blocks for every hole in `[off, end)`.
    fn allocate_range(&self, off: u64, end: u64, keep_size: bool) -> Result<()> {
        let old = self.len();
        let size_to = (!keep_size).then_some(end);
        alloc_zeroed(&self.fs, &self.cell, blk(off), blk_up(end), size_to)?;
        crate::dax::hooks::after_alloc(&self.dax_inode(), blk(off), blk_up(end));
        if !keep_size && end > old {
            crate::dax::hooks::after_grow(&self.dax_inode(), end);
        }
        Ok(())
    }

    /// Give back blocks allocated for a transaction that did not happen.
    fn free_ranges(&self, ranges: &[BlockRange]) {
        give_back(&self.fs, ranges, &[]);
    }

    /// Give back the blocks of the `Map` ops of a transaction that did not happen.
    fn free_maps(&self, ops: &[Op]) {
        give_back(&self.fs, &[], ops);
    }

    /// Zero the partial blocks at the edges of `[off, end)` and return the whole
    /// blocks inside it `[b0, b1)`.
    fn zero_edges(&self, d: &InodeData, off: u64, end: u64) -> Result<(u64, u64)> {
        let b0 = blk_up(off);
        let b1 = blk(end);
        if b0 > b1 {
            // Inside one block.
            self.zero_partial(d, off, end)?;
            return Ok((b0, b0));
        }
        self.zero_partial(d, off, b0 * BLOCK_SIZE)?;
        self.zero_partial(d, b1 * BLOCK_SIZE, end)?;
        Ok((b0, b1))
    }

    /// Copy on write for the partial blocks at `off` and `end` (blocks that a
    /// truncate, punch or zero range changes in part). The caller holds the
    /// invalidate lock exclusively and has unmapped the range.
    fn unshare_edges(&self, off: u64, end: u64) -> Result<()> {
        if !self.fs.has_shared() {
            return Ok(());
        }
        // The blocks holding a partial edge: one when both edges fall in it
        // (also when `off` is a block start and `end` is not).
        let first = (!off.is_multiple_of(BLOCK_SIZE)).then(|| blk(off));
        let last = (!end.is_multiple_of(BLOCK_SIZE) && first != Some(blk(end))).then(|| blk(end));
        for b in first.into_iter().chain(last) {
            crate::dax::hooks::zap_file_range(&self.dax_inode(), b, b + 1)?;
            super::reflink::unshare(&self.fs, &self.cell, b, b + 1)?;
        }
        Ok(())
    }

    fn punch(&self, off: u64, end: u64) -> Result<()> {
        self.unshare_edges(off, end)?;
        let _g = self.fs.begin(1)?;
        let mut d = self.cell.data.write();
        let (b0, b1) = self.zero_edges(&d, off, end)?;
        let mut ops = Vec::new();
        if b1 > b0 && !d.map.is_hole(b0, b1 - b0) {
            ops.push(Op::Unmap {
                ino: self.cell.ino,
                file_blk: b0,
                len: b1 - b0,
            });
        }
        if ops.is_empty() {
            self.fs.inner.journal.fence()?; // the edge zeroing
            return Ok(());
        }
        self.fs.run_tx(&mut [(self.cell.ino, &mut *d)], &ops)
    }

    /// ZERO_RANGE: the range reads as zeros and stays allocated (blocks are zeroed
    /// in place, holes are allocated zeroed); the size grows unless KEEP_SIZE.
    fn zero_range(&self, off: u64, end: u64, keep_size: bool) -> Result<()> {
        let mut cleared = Vec::new();
        // Shared blocks are not zeroed in place (their other owners keep
        // them): the edges are copied, whole blocks released and allocated anew.
        self.unshare_edges(off, end)?;
        super::reflink::release_shared(&self.fs, &self.cell, blk_up(off), blk(end))?;
        {
            let _g = self.fs.begin(1)?;
            let d = self.cell.data.write();
            let (b0, b1) = self.zero_edges(&d, off, end)?;
            let mut pos = b0;
            while pos < b1 {
                match d.map.lookup(pos) {
                    Lookup::Mapped { dev_blk, len } => {
                        let n = len.min(b1 - pos);
                        // Zeroing a whole block clears its media error (E4).
                        let mut from = dev_blk;
                        while let Some(bad) = self.fs.first_bad(from, dev_blk + n - from) {
                            cleared.push((pos + (bad - dev_blk), bad));
                            from = bad + 1;
                        }
                        self.fs
                            .inner
                            .dev
                            .zero(dev_blk * BLOCK_SIZE, n * BLOCK_SIZE)?;
                        self.fs
                            .inner
                            .dev
                            .flush(dev_blk * BLOCK_SIZE, n * BLOCK_SIZE);
                        pos += n;
                    }
                    Lookup::Hole { len } => pos = pos.saturating_add(len).min(b1),
                }
            }
        }
        self.fs.unpoison(&self.cell, &cleared)?;
        self.allocate_range(off, end, keep_size)
    }

    fn collapse(&self, off: u64, len: u64) -> Result<()> {
        let _g = self.fs.begin(3)?;
        let mut d = self.cell.data.write();
        let size = d.attr.size;
        if off + len >= size {
            return Err(Error::Invalid("COLLAPSE_RANGE reaches end of file"));
        }
        let ino = self.cell.ino;
        let (b0, n) = (blk(off), blk(len));
        let ops = [
            Op::Unmap {
                ino,
                file_blk: b0,
                len: n,
            },
            Op::Shift {
                ino,
                from_blk: b0 + n,
                delta: -(n as i64),
            },
            Op::SetSize {
                ino,
                size: size - len,
                time_ns: now_ns(),
            },
        ];
        self.fs.run_tx(&mut [(ino, &mut *d)], &ops)
    }

    fn insert(&self, off: u64, len: u64) -> Result<()> {
        let _g = self.fs.begin(2)?;
        let mut d = self.cell.data.write();
        let size = d.attr.size;
        if off >= size {
            return Err(Error::Invalid("INSERT_RANGE at or past end of file"));
        }
        if size + len > MAX_FILE_SIZE {
            return Err(Error::FileTooBig);
        }
        let ino = self.cell.ino;
        let ops = [
            Op::Shift {
                ino,
                from_blk: blk(off),
                delta: blk(len) as i64,
            },
            Op::SetSize {
                ino,
                size: size + len,
                time_ns: now_ns(),
            },
        ];
        self.fs.run_tx(&mut [(ino, &mut *d)], &ops)
    }

    /// `linkat(fd, "", dir, new, AT_EMPTY_PATH)`: a new name for this file
    /// (see [`Fs::create_unnamed`] for a file with none).
    pub fn link(&self, new: &str) -> Result<()> {
        self.fs.for_this_call().link_cell(&self.cell, new)
    }

    /// `fchmod`: set the permission bits (the file type stays).
    pub fn set_permissions(&self, perm: u32) -> Result<()> {
        self.fs.for_this_call().set_permissions_of(&self.cell, perm)
    }

    /// `fchown` (`None` leaves the owner or the group as it is), with the
    /// rules of [`Fs::set_owner`].
    pub fn set_owner(&self, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.fs.for_this_call().set_owner_of(&self.cell, uid, gid)
    }

    /// `futimens`: set the access and/or modification time (ns since the
    /// epoch; `None` leaves it); the change time becomes now. For a caller
    /// ([`Fs::as_caller`]), only the file's owner (or root) may.
    pub fn set_times(&self, atime_ns: Option<u64>, mtime_ns: Option<u64>) -> Result<()> {
        let fs = self.fs.for_this_call();
        fs.permit_times(&self.cell.data.read().attr, atime_ns, mtime_ns)?;
        fs.set_times_of(&self.cell, atime_ns, mtime_ns)
    }

    /// The modification time a write made (a client's overwrites in place,
    /// reported by it): as the kernel's `file_update_time`, for whoever
    /// may write the file, owner or not.
    pub(crate) fn note_write_time(&self, mtime_ns: u64) -> Result<()> {
        self.fs.remove_privs(&self.cell)?;
        self.fs.set_times_of(&self.cell, None, Some(mtime_ns))
    }

    /// Make this file's data and metadata durable.
    pub fn fsync(&self) -> Result<()> {
        crate::dax::hooks::sync_mappings(&self.dax_inode())?;
        self.fs.flush_times(&self.cell)?;
        self.fs.inner.journal.fence()?;
        Ok(())
    }

    /// `fdatasync`: data and the metadata needed to read it (always logged at once).
    pub fn sync_data(&self) -> Result<()> {
        crate::dax::hooks::sync_mappings(&self.dax_inode())?;
        self.fs.inner.journal.fence()?;
        Ok(())
    }
}

/// Zero the file's blocks between the end of file and `to` before a
/// transaction (which orders these stores before its record) makes the file
/// longer: the rest of the last block and blocks allocated past the end
/// (`KEEP_SIZE`). Those bytes are nobody's data but need not be zero: a write
/// that extended the file stores them before it logs the size, which a crash
/// can lose, and stores through a mapping reach the last block. Linux zeroes
/// the same range (`xfs_zero_eof`; past-EOF preallocation is unwritten there).
///
/// In place even in a shared block: past the end of file only the last block
/// can be shared, as the last block of a clone or dedupe to the source's end,
/// which keeps the offset of the end in the block; no owner writes a shared
/// block in place, so these bytes are past every owner's end or zero already.
pub(super) fn zero_past_eof(fs: &Fs, d: &InodeData, to: u64) -> Result<()> {
    let mut pos = d.attr.size;
    while pos < to {
        match d.map.lookup(blk(pos)) {
            Lookup::Mapped { dev_blk, len } => {
                let end = (blk(pos) + len).saturating_mul(BLOCK_SIZE).min(to);
                let at = dev_blk * BLOCK_SIZE + pos % BLOCK_SIZE;
                fs.inner.dev.zero(at, end - pos)?;
                fs.inner.dev.flush(at, end - pos);
                pos = end;
            }
            Lookup::Hole { len } => {
                pos = blk(pos)
                    .saturating_add(len)
                    .saturating_mul(BLOCK_SIZE)
                    .min(to);
            }
        }
    }
    Ok(())
}

/// Give back the blocks of `ranges` and of the `Map` ops of a transaction that
/// did not happen.
pub(super) fn give_back(fs: &Fs, ranges: &[BlockRange], ops: &[Op]) {
    for r in ranges {
        let _ = fs.inner.alloc.free(*r);
    }
    for o in ops {
        if let Op::Map { dev_blk, len, .. } = o {
            let _ = fs.inner.alloc.free(BlockRange {
                start: *dev_blk,
                len: *len,
            });
        }
    }
}

/// Allocate zeroed blocks for every hole in file blocks `[b0, b1)`, in as many
/// transactions as needed; with `size_to`, the last one also grows the size to
/// it. Used by fallocate and by write faults.
pub(crate) fn alloc_zeroed(
    fs: &Fs,
    cell: &Cell,
    b0: u64,
    b1: u64,
    size_to: Option<u64>,
) -> Result<()> {
    let dev = &fs.inner.dev;
    let mut pos = b0;
    loop {
        let _g = fs.begin(MAX_TX_OPS)?;
        let mut d = cell.data.write();
        if d.freed {
            return Err(Error::NotFound);
        }
        let mut ops = Vec::new();
        let mut goal = None;
        while pos < b1 && ops.len() < MAX_MAPS {
            match d.map.lookup(pos) {
                Lookup::Mapped { dev_blk, len } => {
                    let n = len.min(b1 - pos);
                    goal = Some(dev_blk + n);
                    pos += n;
                }
                Lookup::Hole { len } => {
                    let want = len.min(b1 - pos);
                    let req = AllocRequest {
                        len: want,
                        goal,
                        huge: huge_hint(pos, want),
                    };
                    let ranges = fs.inner.alloc.alloc(req).map_err(|_| {
                        give_back(fs, &[], &ops);
                        Error::NoSpace
                    })?;
                    for (i, r) in ranges.iter().enumerate() {
                        let (at, n) = (r.start * BLOCK_SIZE, r.len * BLOCK_SIZE);
                        if let Err(e) = dev.zero(at, n) {
                            give_back(fs, &ranges[i..], &ops);
                            return Err(e.into());
                        }
                        dev.flush(at, n);
                        ops.push(Op::Map {
                            ino: cell.ino,
                            file_blk: pos,
                            dev_blk: r.start,
                            len: r.len,
                        });
                        goal = Some(r.start + r.len);
                        pos += r.len;
                    }
                }
            }
        }
        let done = pos >= b1;
        if let Some(end) = size_to {
            if done && end > d.attr.size {
                zero_past_eof(fs, &d, end)?;
                ops.push(Op::SetSize {
                    ino: cell.ino,
                    size: end,
                    time_ns: now_ns(),
                });
            }
        }
        if let Err(e) = fs.run_tx(&mut [(cell.ino, &mut *d)], &ops) {
            give_back(fs, &[], &ops);
            return Err(e);
        }
        if done {
            return Ok(());
        }
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // ORDERING: lowered before the inode lock is taken below, which
        // orders it for unlink and `free_orphan` (fs/mod.rs, `open`).
        let last = self.cell.open.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            let orphan = {
                let d = self.cell.data.read();
                !d.freed && d.attr.nlink == 0
            };
            if orphan {
                if let Err(e) = self.fs.free_orphan(self.cell.ino) {
                    tracing::error!(
                        "freeing unlinked inode {} at close: {e}; it is reclaimed at next mount",
                        self.cell.ino
                    );
                }
            }
        }
    }
}
