//! The transaction overlay: a metadata operation's writes, held in DRAM
//! until the caller has logged them.
//!
//! The overlay works in 4 KiB blocks. The first write to a block loads the
//! device's copy; later reads of the block see the copy. Each block remembers
//! which of its bytes a write actually changed (a short sorted list of
//! ranges), so a 30-byte change to a node logs about 30 bytes, not 4096.
//! A block allocated by the transaction is all new: it is logged whole.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;

use super::MetaError;
use crate::device::{check_range, Device};
use crate::sync::{AtomicU64, Ordering};
use crate::BLOCK_SIZE;

const BLOCK: usize = BLOCK_SIZE as usize;

/// Two changed ranges of a block closer than this many bytes are logged as
/// one: a log entry's own header (offset, length) costs about as much.
const MERGE_GAP: usize = 16;

thread_local! {
    /// This thread's spare block buffers ([`block_buf`]).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare buffers a thread keeps.
const SPARES: usize = 32;

/// A 4 KiB buffer for a block copy that the caller overwrites whole: its
/// bytes are left from its last use. A transaction copies a dozen blocks
/// (nodes read, overlay copies); reusing their buffers saves the
/// allocator's path for 4 KiB and the zeroing, which cost more than the
/// copies that fill them.
pub(crate) fn block_buf() -> Vec<u8> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; BLOCK])
}

/// Give a buffer of [`block_buf`] back.
pub(crate) fn spare(b: Vec<u8>) {
    if b.len() == BLOCK {
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARES {
                s.push(b);
            }
        });
    }
}

/// Where metadata blocks come from (the file system's allocator).
pub(crate) trait BlockSource {
    /// A free 4 KiB device block (block number, device offset = n * 4096) for metadata.
    fn alloc_block(&mut self) -> Result<u64, MetaError>;
}

/// Blocks verified as they are stored: B-tree nodes that passed every
/// check of a read, or that a stored transaction sealed. A walk through a
/// [`Tx`] that has the set checks such a node's header only (magic, owner,
/// level), not its checksum and entries again: a node is checked once per
/// change, not once per visit. Whoever stores a write to a block or frees
/// it forgets it first ([`Verified::forget`]).
///
/// The set is a direct-mapped table of [`VERIFIED_SLOTS`] block numbers: a
/// block goes in the slot its number hashes to, putting out the one there
/// (the next visit of that one checks it again). It never grows, so no
/// insertion pays for moving the others: as a hash set cleared when full,
/// its growth rehashed up to 57,344 entries inside a create (issue 20,
/// target 3). 8 bytes a slot: 512 KiB, for 256 MiB of nodes.
#[derive(Debug)]
pub(crate) struct Verified(Box<[AtomicU64]>);

/// Slots of [`Verified`]: a power of two.
const VERIFIED_SLOTS: usize = 1 << 16;

impl Default for Verified {
    fn default() -> Self {
        Verified((0..VERIFIED_SLOTS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Verified {
    /// Block `blk`'s slot, and what the slot holds when `blk` is in it
    /// (0 is an empty slot).
    fn slot(&self, blk: u64) -> (&AtomicU64, u64) {
        // Fibonacci hashing: the top bits of the product spread runs of
        // block numbers over the table.
        let i = blk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - VERIFIED_SLOTS.trailing_zeros());
        (&self.0[i as usize], blk.wrapping_add(1))
    }

    pub fn contains(&self, blk: u64) -> bool {
        let (s, v) = self.slot(blk);
        // ORDERING: pairs with the Release of `insert`: whoever sees the
        // block known verified sees the bytes stored before (the tree's
        // locks order them too; this does not lean on them).
        s.load(Ordering::Acquire) == v
    }

    pub fn insert(&self, blk: u64) {
        let (s, v) = self.slot(blk);
        // ORDERING: see `contains`.
        s.store(v, Ordering::Release);
    }

    /// Blocks `first..=last` are about to change or be freed.
    pub fn forget(&self, first: u64, last: u64) {
        for b in first..=last {
            let (s, v) = self.slot(b);
            // ORDERING: see `contains`; only `b` is put out, not a block
            // that shares its slot.
            let _ = s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// One block's copy in the overlay.
#[derive(Debug)]
struct Dirty {
    data: Vec<u8>,
    /// Allocated by this transaction: logged whole, never read from the device.
    fresh: bool,
    /// Written whole as a sealed B-tree node by [`Tx::write_node`] (and not
    /// written otherwise since): valid as it is.
    sealed: bool,
    /// Changed byte ranges, sorted, more than `MERGE_GAP` apart (unused when fresh).
    ranges: Vec<Range<usize>>,
    /// Which 64-byte lines of `data` hold the block's bytes (bit i: bytes
    /// `64 i .. 64 i + 64`; [`ALL_LINES`]: the whole block). A block first
    /// written in part (an inode slot, a root line) is not read whole: a
    /// write reads the lines it compares with. Two changed ranges merged
    /// across a gap (at most `MERGE_GAP` bytes, less than a line) have the
    /// gap in the lines of their own ends, so every logged byte is known.
    known: u64,
}

/// Lines of a block ([`Dirty::known`]).
const LINE: usize = 64;
/// Every line of a block known.
const ALL_LINES: u64 = u64::MAX;
const _: () = assert!(BLOCK / LINE == 64 && MERGE_GAP < LINE);

/// The lines of a block that bytes `r` lie in.
fn lines(r: &Range<usize>) -> u64 {
    if r.is_empty() {
        return 0;
    }
    let (first, last) = (r.start / LINE, (r.end - 1) / LINE);
    line_run(first, last - first + 1)
}

/// Lines `first..first + n` (`n` of at most 64, with `first + n <= 64`).
fn line_run(first: usize, n: usize) -> u64 {
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    mask << first
}

/// The bytes where `old` and `new` (of one length) differ, from the first
/// to the last; `None` where they are equal.
pub(crate) fn differing(old: &[u8], new: &[u8]) -> Option<Range<usize>> {
    let first = old.iter().zip(new).position(|(a, b)| a != b)?;
    let last = old.iter().zip(new).rposition(|(a, b)| a != b)?;
    Some(first..last + 1)
}

/// Add `r` to the sorted changed ranges `ranges`, merging ranges that
/// overlap or nearly touch (in place: no allocation once it has room).
pub(crate) fn mark(ranges: &mut Vec<Range<usize>>, r: Range<usize>) {
    let at = ranges.partition_point(|x| x.start < r.start);
    ranges.insert(at, r);
    let mut last = 0;
    for i in 1..ranges.len() {
        let r = ranges[i].clone();
        if r.start <= ranges[last].end + MERGE_GAP {
            ranges[last].end = ranges[last].end.max(r.end);
        } else {
            last += 1;
            ranges[last] = r;
        }
    }
    ranges.truncate(last + 1);
}

impl Drop for Dirty {
    fn drop(&mut self) {
        spare(std::mem::take(&mut self.data));
    }
}

impl Dirty {
    /// Read the lines of bytes `r` not known yet from block `blk` of `dev`.
    fn know(&mut self, dev: &dyn Device, blk: u64, r: Range<usize>) -> Result<(), MetaError> {
        let mut missing = lines(&r) & !self.known;
        while missing != 0 {
            let first = missing.trailing_zeros() as usize;
            let run = (missing >> first).trailing_ones() as usize;
            let (a, b) = (first * LINE, (first + run) * LINE);
            dev.read(blk * BLOCK_SIZE + a as u64, &mut self.data[a..b])?;
            let bits = line_run(first, run);
            self.known |= bits;
            missing &= !bits;
        }
        Ok(())
    }

    /// Bytes `at..at + buf.len()` of the block: the known lines from the
    /// copy, the others from block `blk` of `dev`.
    fn read_into(
        &self,
        dev: &dyn Device,
        blk: u64,
        at: usize,
        buf: &mut [u8],
    ) -> Result<(), MetaError> {
        let r = at..at + buf.len();
        if lines(&r) & !self.known != 0 {
            dev.read(blk * BLOCK_SIZE + at as u64, buf)?;
        }
        for line in (r.start / LINE)..r.end.div_ceil(LINE) {
            if self.known & (1u64 << line) != 0 {
                let (a, b) = ((line * LINE).max(r.start), ((line + 1) * LINE).min(r.end));
                buf[a - at..b - at].copy_from_slice(&self.data[a..b]);
            }
        }
        Ok(())
    }

    /// Store `data` at `at` in the copy, marking the bytes that differ.
    fn store(&mut self, at: usize, data: &[u8]) {
        let old = &self.data[at..at + data.len()];
        if !self.fresh {
            // Compare 64 bytes at a time (a plain slice compare), then find
            // the exact bytes inside the chunks that differ.
            let mut run: Option<Range<usize>> = None;
            for (c, (o, n)) in old.chunks(64).zip(data.chunks(64)).enumerate() {
                if o == n {
                    continue;
                }
                let Some(d) = differing(o, n) else { continue };
                let (s, e) = (at + c * 64 + d.start, at + c * 64 + d.end);
                run = match run {
                    Some(r) if s <= r.end + MERGE_GAP => Some(r.start..e),
                    Some(r) => {
                        mark(&mut self.ranges, r);
                        Some(s..e)
                    }
                    None => Some(s..e),
                };
            }
            if let Some(r) = run {
                mark(&mut self.ranges, r);
            }
        }
        self.data[at..at + data.len()].copy_from_slice(data);
    }
}

/// A metadata transaction: byte writes collected in DRAM over a device.
/// Dropping it without [`apply`]ing its writes abandons them (the caller
/// then gives [`allocated`](Tx::allocated) back to the allocator).
#[derive(Debug)]
pub(crate) struct Tx<'d> {
    dev: &'d dyn Device,
    /// The store's set of verified nodes (`None`: every read checks all).
    verified: Option<&'d Verified>,
    /// Block number -> its copy.
    blocks: BTreeMap<u64, Dirty>,
    allocated: Vec<u64>,
    freed: Vec<u64>,
}

impl<'d> Tx<'d> {
    pub fn new(dev: &'d dyn Device) -> Self {
        Self {
            dev,
            verified: None,
            blocks: BTreeMap::new(),
            allocated: Vec::new(),
            freed: Vec::new(),
        }
    }

    /// A transaction whose B-tree reads trust and extend `verified`.
    pub fn with_verified(dev: &'d dyn Device, verified: &'d Verified) -> Self {
        Self {
            verified: Some(verified),
            ..Self::new(dev)
        }
    }

    /// Block `blk` holds a valid node as far as this transaction reads it:
    /// its own sealed copy, or a stored block in the verified set.
    pub fn is_verified(&self, blk: u64) -> bool {
        match self.blocks.get(&blk) {
            Some(d) => d.sealed,
            None => self.verified.is_some_and(|v| v.contains(blk)),
        }
    }

    /// The node read from block `blk` passed every check: remember it if
    /// it was read from the device.
    pub fn note_verified(&self, blk: u64) {
        if let (Some(v), false) = (self.verified, self.blocks.contains_key(&blk)) {
            v.insert(blk);
        }
    }

    /// Blocks written whole as sealed nodes (and not written otherwise
    /// since): once stored they are valid as they are.
    pub fn sealed(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks
            .iter()
            .filter(|(_, d)| d.sealed)
            .map(|(&b, _)| b)
    }

    /// Block `blk` where it lies, to read in place: the overlay's copy,
    /// else the device's bytes ([`Device::view`]); `None` when the device
    /// has no view (read a copy). A B-tree node is stored in place only by
    /// the transaction that changed it, under the locks that its tree's
    /// readers take too (a directory's data lock, or the table's with the
    /// directory at rest; the chunk map's lock for the chunk tree;
    /// docs/architecture.md, "Lock order"), and a freed node is reused only
    /// by a tree whose own locks order it likewise: the caller, holding its
    /// tree's lock through the read, sees no store of the bytes meanwhile.
    #[allow(
        unsafe_code,
        reason = "a view of the device's bytes in place (Device::view)"
    )]
    pub fn node_view(&self, blk: u64) -> Option<&[u8]> {
        if let Some(d) = self.blocks.get(&blk) {
            return (d.known == ALL_LINES).then_some(&d.data[..]);
        }
        let off = blk.checked_mul(BLOCK_SIZE)?;
        // SAFETY: nothing writes the block while the view lives: see above
        // (the caller reads a tree under the lock its stores take).
        unsafe { self.dev.view(off, BLOCK) }
    }

    /// The device under the overlay.
    pub fn device(&self) -> &'d dyn Device {
        self.dev
    }

    /// Bytes at `off`: the device's, overlaid by this transaction's writes.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), MetaError> {
        check_range(off, buf.len() as u64, self.dev.len())?;
        let mut done = 0;
        while done < buf.len() {
            let pos = off + done as u64;
            let (blk, at) = (pos / BLOCK_SIZE, (pos % BLOCK_SIZE) as usize);
            let n = (BLOCK - at).min(buf.len() - done);
            let part = &mut buf[done..done + n];
            match self.blocks.get(&blk) {
                Some(d) if d.known == ALL_LINES => part.copy_from_slice(&d.data[at..at + n]),
                Some(d) => d.read_into(self.dev, blk, at, part)?,
                None => self.dev.read(pos, part)?,
            }
            done += n;
        }
        Ok(())
    }

    /// Record a write (not applied to the device).
    pub fn write(&mut self, off: u64, data: &[u8]) -> Result<(), MetaError> {
        check_range(off, data.len() as u64, self.dev.len())?;
        let mut done = 0;
        while done < data.len() {
            let pos = off + done as u64;
            let (blk, at) = (pos / BLOCK_SIZE, (pos % BLOCK_SIZE) as usize);
            let n = (BLOCK - at).min(data.len() - done);
            let dev = self.dev;
            let d = self.copy_of(blk);
            d.know(dev, blk, at..at + n)?;
            d.sealed = false;
            d.store(at, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Record the write of a whole sealed B-tree node at block `blk` (the
    /// caller, `btree`, built and sealed it), whose bytes differ from the
    /// block's as this transaction last read it (the overlay's copy, else
    /// the device's) only in `changed` (sorted, merged; `None`: anywhere).
    /// The node is taken as the block's copy: nothing is read from the
    /// device or compared (a node read, changed and written costs one copy
    /// of 4 KiB, not three and a comparison).
    pub fn write_node(
        &mut self,
        blk: u64,
        node: &[u8; BLOCK],
        changed: Option<&[Range<usize>]>,
    ) -> Result<(), MetaError> {
        check_range(blk.saturating_mul(BLOCK_SIZE), BLOCK_SIZE, self.dev.len())?;
        #[cfg(debug_assertions)]
        self.check_changed(blk, node, changed);
        let d = self.copy_of(blk);
        match changed {
            Some(rs) if d.known == ALL_LINES => {
                for r in rs {
                    d.data[r.clone()].copy_from_slice(&node[r.clone()]);
                }
            }
            // The node is the whole block as it is now.
            _ => {
                d.data.copy_from_slice(node);
                d.known = ALL_LINES;
            }
        }
        if !d.fresh {
            match changed {
                Some(rs) => rs.iter().for_each(|r| mark(&mut d.ranges, r.clone())),
                None => mark(&mut d.ranges, 0..BLOCK),
            }
        }
        d.sealed = true;
        Ok(())
    }

    /// Debug builds (every test): the bytes a node write says it changed
    /// are all that changed.
    #[cfg(debug_assertions)]
    fn check_changed(&self, blk: u64, node: &[u8; BLOCK], changed: Option<&[Range<usize>]>) {
        let Some(rs) = changed else { return };
        let mut before = vec![0u8; BLOCK];
        match self.blocks.get(&blk) {
            Some(d) => {
                if d.read_into(self.dev, blk, 0, &mut before).is_err() {
                    return;
                }
            }
            None => {
                if self.dev.read(blk * BLOCK_SIZE, &mut before).is_err() {
                    return;
                }
            }
        }
        for (i, (a, b)) in before.iter().zip(node.iter()).enumerate() {
            assert!(
                a == b || rs.iter().any(|r| r.contains(&i)),
                "node at block {blk}: byte {i} changed outside the changed ranges {rs:?}"
            );
        }
    }

    /// The overlay's copy of block `blk`, made on first use with no line
    /// known yet ([`Dirty::know`] reads what a write needs).
    fn copy_of(&mut self, blk: u64) -> &mut Dirty {
        self.blocks.entry(blk).or_insert_with(|| Dirty {
            data: block_buf(),
            fresh: false,
            sealed: false,
            ranges: Vec::new(),
            known: 0,
        })
    }

    /// A block from `src`, zeroed in the overlay (never read from the device).
    pub fn alloc_block(&mut self, src: &mut dyn BlockSource) -> Result<u64, MetaError> {
        let blk = src.alloc_block()?;
        let off = blk.saturating_mul(BLOCK_SIZE);
        check_range(off, BLOCK_SIZE, self.dev.len())?;
        let mut data = block_buf();
        data.fill(0);
        let d = Dirty {
            data,
            fresh: true,
            sealed: false,
            ranges: Vec::new(),
            known: ALL_LINES,
        };
        self.blocks.insert(blk, d);
        self.allocated.push(blk);
        Ok(blk)
    }

    /// A metadata block this transaction stops using (the caller returns it
    /// to the allocator once the transaction is durable). Its pending writes
    /// are dropped: nothing reads a freed block. A block allocated by this
    /// same transaction is dropped the same way and listed in both
    /// [`allocated`](Self::allocated) and [`freed`](Self::freed), so either
    /// outcome gives it back exactly once: commit returns `freed`, abort
    /// returns `allocated`. Freeing a block twice lists it once.
    pub fn free_block(&mut self, blk: u64) {
        self.blocks.remove(&blk);
        if !self.freed.contains(&blk) {
            self.freed.push(blk);
        }
    }

    /// Every block this transaction took from a [`BlockSource`], in order.
    pub fn allocated(&self) -> &[u64] {
        &self.allocated
    }

    /// Every block this transaction stopped using, in order.
    pub fn freed(&self) -> &[u64] {
        &self.freed
    }

    /// The writes to log and then apply: (device offset, bytes), only the
    /// byte ranges that changed (coalesced per 4 KiB block; a freshly
    /// allocated block is written whole), sorted by offset, non-overlapping.
    pub fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        let n = self
            .blocks
            .values()
            .map(|d| if d.fresh { 1 } else { d.ranges.len() })
            .sum();
        let mut out = Vec::with_capacity(n);
        for (&blk, d) in &self.blocks {
            let base = blk * BLOCK_SIZE;
            if d.fresh {
                out.push((base, d.data.clone()));
            } else {
                for r in &d.ranges {
                    debug_assert_eq!(lines(r) & !d.known, 0, "a logged byte not known");
                    out.push((base + r.start as u64, d.data[r.clone()].to_vec()));
                }
            }
        }
        out
    }

    /// Nothing to log and no block allocated or freed.
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
            && self.freed.is_empty()
            && self
                .blocks
                .values()
                .all(|d| !d.fresh && d.ranges.is_empty())
    }
}

/// Store `writes` in place and flush their cache lines (no fence), as a
/// test of a tree does between transactions. The file system logs a
/// transaction's writes as entries of a record and stores those
/// (`store::store_entries`).
#[cfg(test)]
pub(crate) fn apply(dev: &dyn Device, writes: &[(u64, Vec<u8>)]) -> Result<(), MetaError> {
    for (off, data) in writes {
        // Cached stores even for whole blocks: metadata is read again soon.
        dev.write_cached(*off, data)?;
        dev.flush(*off, data.len() as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_verified_block_is_known_until_forgotten_and_one_sharing_its_slot_puts_it_out() {
        let v = super::Verified::default();
        assert!(!v.contains(0) && !v.contains(5), "an empty set knows none");
        v.insert(5);
        v.insert(6);
        assert!(v.contains(5) && v.contains(6));
        v.forget(6, 6);
        assert!(v.contains(5) && !v.contains(6));
        // Another block in 5's slot: it puts 5 out, and forgetting 5 then
        // leaves it in.
        let same = (7..)
            .find(|&b| std::ptr::eq(v.slot(b).0, v.slot(5).0))
            .expect("a block in the same slot");
        v.insert(same);
        assert!(v.contains(same) && !v.contains(5));
        v.forget(5, 5);
        assert!(v.contains(same));
        v.forget(same - 1, same + 1);
        assert!(!v.contains(same));
    }
    use super::*;
    use crate::device::RamDevice;
    use proptest::prelude::*;

    /// A device whose byte `i` is `i * 7 + 3` (so no write of zeros or of a
    /// constant is accidentally "unchanged").
    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    struct OneBlock(u64);
    impl BlockSource for OneBlock {
        fn alloc_block(&mut self) -> Result<u64, MetaError> {
            Ok(self.0)
        }
    }

    #[test]
    fn overlay_reads_its_writes_across_block_boundaries() {
        let img = patterned(4 * BLOCK);
        let dev = RamDevice::from_image(img.clone());
        let mut tx = Tx::new(&dev);
        let data: Vec<u8> = (0..200).map(|i| 255 - i as u8).collect();
        let off = 2 * BLOCK_SIZE - 100; // 100 bytes in block 1, 100 in block 2
        tx.write(off, &data).unwrap();

        let mut buf = vec![0; 200];
        tx.read(off, &mut buf).unwrap();
        assert_eq!(buf, data);
        // A read that starts before and ends after the write, over three blocks.
        let mut wide = vec![0; 3 * BLOCK];
        tx.read(BLOCK_SIZE / 2, &mut wide).unwrap();
        let mut want = img[BLOCK / 2..BLOCK / 2 + 3 * BLOCK].to_vec();
        let s = off as usize - BLOCK / 2;
        want[s..s + 200].copy_from_slice(&data);
        assert_eq!(wide, want);
        // The device is untouched.
        assert_eq!(dev.image(), img);
        // Out of range is an error, not a panic.
        assert!(tx.read(4 * BLOCK_SIZE - 1, &mut [0; 2]).is_err());
        assert!(tx.write(u64::MAX - 1, &[0; 4]).is_err());
    }

    #[test]
    fn writes_hold_only_changed_bytes_and_whole_fresh_blocks() {
        let dev = RamDevice::from_image(patterned(4 * BLOCK));
        let mut tx = Tx::new(&dev);
        // A 10-byte write logs 10 bytes.
        tx.write(BLOCK_SIZE + 100, &[0xee; 10]).unwrap();
        assert_eq!(tx.writes(), vec![(BLOCK_SIZE + 100, vec![0xee; 10])]);
        // Rewriting the whole block with only one more byte changed adds one
        // range of 1 byte (far from the first).
        let mut whole = vec![0; BLOCK];
        tx.read(BLOCK_SIZE, &mut whole).unwrap();
        whole[3000] ^= 0xff;
        tx.write(BLOCK_SIZE, &whole).unwrap();
        let w = tx.writes();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].0, w[0].1.len()), (BLOCK_SIZE + 100, 10));
        assert_eq!((w[1].0, w[1].1.len()), (BLOCK_SIZE + 3000, 1));
        // Two changes a few bytes apart are one entry.
        tx.write(BLOCK_SIZE + 115, &[0xee]).unwrap();
        assert_eq!(tx.writes()[0].1.len(), 16);
        // Writing what is there logs nothing.
        let mut tx2 = Tx::new(&dev);
        let mut same = vec![0; 300];
        dev.read(10, &mut same).unwrap();
        tx2.write(10, &same).unwrap();
        assert!(tx2.writes().is_empty());
        assert!(tx2.is_empty());
        // A fresh block is logged whole, zeros included.
        let b = tx2.alloc_block(&mut OneBlock(3)).unwrap();
        tx2.write(b * BLOCK_SIZE + 8, &[1, 2, 3]).unwrap();
        let w = tx2.writes();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, 3 * BLOCK_SIZE);
        assert_eq!(w[0].1.len(), BLOCK);
        assert_eq!(&w[0].1[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0]);
        assert_eq!(tx2.allocated(), &[3]);
    }

    #[test]
    fn a_block_written_in_part_reads_only_the_lines_its_writes_compare_with() {
        let img = patterned(2 * BLOCK);
        let dev = RamDevice::from_image(img.clone());
        let mut tx = Tx::new(&dev);
        // An 8-byte write across lines 1 and 2, then a 4-byte one 10 bytes
        // on (merged with it across the gap): those lines only are read.
        tx.write(BLOCK_SIZE + 124, &[0xab; 8]).unwrap();
        tx.write(BLOCK_SIZE + 142, &[0xcd; 4]).unwrap();
        assert_eq!(tx.blocks[&1].known, 0b110);
        let mut want = img[BLOCK..2 * BLOCK].to_vec();
        want[124..132].fill(0xab);
        want[142..146].fill(0xcd);
        assert_eq!(
            tx.writes(),
            vec![(BLOCK_SIZE + 124, want[124..146].to_vec())]
        );
        // Reads of the block see the device's bytes where no line is known.
        let mut whole = vec![0; BLOCK];
        tx.read(BLOCK_SIZE, &mut whole).unwrap();
        assert_eq!(whole, want);
        let mut part = vec![0; 300];
        tx.read(BLOCK_SIZE + 20, &mut part).unwrap();
        assert_eq!(part, want[20..320]);
        // No view of a block known in part: a lookup reads a merged copy.
        assert!(tx.node_view(1).is_none());
        // A whole write makes it known whole.
        tx.write(BLOCK_SIZE, &want).unwrap();
        assert_eq!(tx.blocks[&1].known, ALL_LINES);
        assert_eq!(dev.image(), img);
    }

    #[test]
    fn fresh_block_reads_as_zeros_not_device_bytes() {
        let dev = RamDevice::from_image(patterned(2 * BLOCK));
        let mut tx = Tx::new(&dev);
        tx.alloc_block(&mut OneBlock(1)).unwrap();
        let mut buf = vec![0xff; BLOCK];
        tx.read(BLOCK_SIZE, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // A block beyond the device is refused.
        assert!(tx.alloc_block(&mut OneBlock(2)).is_err());
    }

    #[test]
    fn free_of_a_block_allocated_in_the_same_tx_drops_its_writes() {
        let dev = RamDevice::from_image(patterned(4 * BLOCK));
        let mut tx = Tx::new(&dev);
        let b = tx.alloc_block(&mut OneBlock(2)).unwrap();
        tx.write(b * BLOCK_SIZE, &[9; 100]).unwrap();
        tx.write(BLOCK_SIZE, &[9; 10]).unwrap();
        tx.free_block(b);
        tx.free_block(b);
        tx.free_block(1); // a pre-existing block: its pending writes go too
        assert!(tx.writes().is_empty());
        assert_eq!(tx.allocated(), &[2]);
        assert_eq!(tx.freed(), &[2, 1]);
        assert!(!tx.is_empty());
    }

    #[test]
    fn applying_writes_to_a_second_device_gives_identical_bytes() {
        let img = patterned(8 * BLOCK);
        let dev = RamDevice::from_image(img.clone());
        let mut tx = Tx::new(&dev);
        tx.write(100, &[1; 50]).unwrap();
        tx.write(BLOCK_SIZE - 3, &[2; 4000]).unwrap();
        tx.write(5 * BLOCK_SIZE + 17, &[3; 9000]).unwrap();
        let b = tx.alloc_block(&mut OneBlock(4)).unwrap();
        tx.write(b * BLOCK_SIZE + 40, &[4; 10]).unwrap();
        let w = tx.writes();

        apply(&dev, &w).unwrap();
        let other = RamDevice::from_image(img);
        apply(&other, &w).unwrap();
        assert_eq!(dev.image(), other.image());
        let mut all = vec![0; 8 * BLOCK];
        tx.read(0, &mut all).unwrap();
        assert_eq!(all, dev.image(), "the device now holds what the tx read");
    }

    #[test]
    fn applying_writes_twice_is_idempotent() {
        let img = patterned(4 * BLOCK);
        let dev = RamDevice::from_image(img.clone());
        let mut tx = Tx::new(&dev);
        tx.write(10, &[7; 5000]).unwrap();
        tx.write(3 * BLOCK_SIZE + 1, &[8; 3]).unwrap();
        let w = tx.writes();
        apply(&dev, &w).unwrap();
        let once = dev.image();
        apply(&dev, &w).unwrap();
        assert_eq!(dev.image(), once);
        assert_ne!(once, img);
    }

    proptest! {
        /// Random writes against a byte-array model: reads see them, the log
        /// is sorted and disjoint, and applying it reproduces the model.
        #[test]
        fn random_writes_match_a_byte_model(
            ops in proptest::collection::vec((0u64..6 * BLOCK_SIZE, 1usize..5000, any::<u8>()), 1..20),
        ) {
            let img = patterned(6 * BLOCK);
            let dev = RamDevice::from_image(img.clone());
            let mut model = img.clone();
            let mut tx = Tx::new(&dev);
            for (off, len, byte) in ops {
                let len = len.min(model.len() - off as usize);
                // Mostly the model's own bytes, a few changed: sparse diffs.
                let mut data = model[off as usize..off as usize + len].to_vec();
                for i in (0..len).step_by(97) {
                    data[i] = byte;
                }
                tx.write(off, &data).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            let mut all = vec![0; model.len()];
            tx.read(0, &mut all).unwrap();
            prop_assert_eq!(&all, &model);
            let w = tx.writes();
            for pair in w.windows(2) {
                prop_assert!(pair[0].0 + pair[0].1.len() as u64 <= pair[1].0);
            }
            let logged: usize = w.iter().map(|(_, d)| d.len()).sum();
            let changed = img.iter().zip(&model).filter(|(a, b)| a != b).count();
            prop_assert!(logged >= changed);
            apply(&dev, &w).unwrap();
            prop_assert_eq!(dev.image(), model);
        }
    }
}
