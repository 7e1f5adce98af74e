//! A B+tree in 4 KiB device blocks: unique `u64` keys, values of 0 to
//! [`MAX_VALUE`] bytes, used in place through a [`Tx`].
//!
//! # Node layout
//!
//! Every node is one 4096-byte block; integers are little-endian.
//!
//! ```text
//! header (32 bytes)
//!   0..2    magic      0x5442 ("BT")
//!   2       level      0 = leaf; a child's level is its parent's minus one;
//!                      at most 11 (12 levels)
//!   3       flags      0
//!   4..6    count      leaf: entries; internal: children (1..=254)
//!   6..8    heap       leaf: offset of the lowest heap byte (4096 when the
//!                      heap is empty); internal: 0
//!   8..16   owner      the tree's owner id (inode number, table id); every
//!                      read checks it
//!   16..28  reserved   0
//!   28..32  crc32c     of the whole block with these 4 bytes taken as zero,
//!                      seeded with the block's device offset
//!                      (format::codec::crc)
//!
//! leaf (slotted page)
//!   32 + 2i   slot i (u16): offset of entry i, for i < count; the slots are
//!             in ascending key order
//!   ...       free space
//!   heap..4096  entries, placed downwards from the end of the block, in any
//!             order, with holes left by removed entries:
//!               +0   key    u64
//!               +8   len    u16 (<= 1024)
//!               +10  value  len bytes
//!
//! internal
//!   32 + 16i  entry i, for i < count:
//!               +0   key    u64: the separator: every key under child i is
//!                      >= key i and < key i+1; key 0 is always 0 and has no
//!                      meaning (child 0 takes every key below key 1)
//!               +8   child  u64: block number of the child (device offset
//!                      = child * 4096), never 0
//! ```
//!
//! Bytes outside the header, the slots or entries and the live heap entries
//! are unused: left as they were (the checksum covers them all).
//!
//! # Why it looks like this
//!
//! A change is logged byte for byte (see `tx.rs`), so a leaf is a slotted
//! page: an insert writes its new entry at the bottom of the heap, shifts the
//! slots after it by two bytes and updates the header, about entry + a few
//! dozen bytes of log. A removal only drops the slot; the heap's holes are
//! reclaimed by rewriting the node compacted when an insert needs the room.
//! A value replaced by one of the same length is overwritten where it lies
//! (an inode chunk's count, an extent's length).
//! A split keeps the left half in place (only its count changes) and writes
//! the right half to a new block. An insert past the greatest key of the
//! tree splits off only the new entry, so that sequential keys fill nodes
//! rather than leave them half full.
//!
//! A node whose removal leaves it under a quarter full is merged with a
//! sibling when the two fit in one node (a quarter full, not half: so an
//! insert and a removal at the boundary do not split and merge every time).
//! An emptied node is freed, and a root that is an internal node with one
//! child gives way to that child.
//!
//! # Verification
//!
//! Every node read checks the checksum, magic, reserved bytes, owner, level
//! (the one its parent implies), count, heap and slot offsets, entry lengths
//! (and that they add up to no more than the heap holds, so no split or
//! compaction can be asked to place more than a block), that keys ascend and
//! lie within the key range the path to the node allows, and that child
//! pointers name device blocks. Levels strictly descend, so no corrupt
//! pointer can make a walk loop. A failed check is `MetaError::Corrupt`
//! naming the node's device offset. A leaf other than the root is never
//! empty (an emptied one is freed in the same transaction), so `range`
//! reads one leaf more than those it returns from, and `floor` two at most.
//! `check` (fsck) also finds nodes reached twice and overlapping entries.
//!
//! A node read through a [`Tx`] with the store's set of verified nodes
//! (`tx::Verified`), or sealed by the reading transaction itself, gets
//! only the header checks (magic, reserved bytes, owner, level) and that its
//! first and last keys lie in the range of the place it is read from (a
//! parent damaged under a valid checksum may name it from elsewhere): its
//! bytes are those that passed every check, or that this module built. `check`
//! reads without the set.
//!
//! Any error may leave the transaction half-changed: the caller drops it.

use std::collections::HashSet;
use std::ops::Range;

use super::tx::{block_buf, differing, mark, spare};
use super::{BlockSource, MetaError, Tx};
use crate::format::codec::crc;
use crate::BLOCK_SIZE;

/// The largest value, in bytes.
pub(crate) const MAX_VALUE: usize = 1024;

const BLOCK: usize = BLOCK_SIZE as usize;
const HEADER: usize = 32;
const MAGIC: u16 = 0x5442;
const CRC_AT: usize = 28;
/// Levels 0..MAX_LEVELS: a corrupt tree cannot be walked deeper.
const MAX_LEVELS: u8 = 12;
/// A leaf entry's key and length.
const ENTRY_HEAD: usize = 10;
/// Room for slots and entries in a leaf.
const LEAF_SPACE: usize = BLOCK - HEADER;
/// Children of an internal node.
const MAX_CHILDREN: usize = (BLOCK - HEADER) / 16;

/// A tree: its root block (0 = empty) and the owner id its nodes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BTree {
    pub root: u64,
    pub owner: u64,
}

/// What [`BTree::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TreeStats {
    pub nodes: usize,
    pub entries: u64,
    /// Levels (0 for an empty tree, 1 for a root leaf).
    pub depth: u32,
    /// Every node's block number, in walk order (fsck marks them used).
    pub blocks: Vec<u64>,
}

/// The keys a node may hold, from the separators on the path to it:
/// `lo <= key < hi`, `None` meaning unbounded.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    lo: Option<u64>,
    hi: Option<u64>,
}

impl Bounds {
    const ALL: Bounds = Bounds { lo: None, hi: None };

    fn contains(&self, k: u64) -> bool {
        self.lo.is_none_or(|lo| k >= lo) && self.hi.is_none_or(|hi| k < hi)
    }

    /// The range of child `i` of the internal node `n` (which lies in `self`).
    fn child(&self, n: &impl NodeBytes, i: usize) -> Bounds {
        Bounds {
            lo: if i > 0 { Some(n.ikey(i)) } else { self.lo },
            hi: if i + 1 < n.count() {
                Some(n.ikey(i + 1))
            } else {
                self.hi
            },
        }
    }
}

/// What the reader of a node expects of it.
#[derive(Clone, Copy, Debug)]
struct Want {
    /// `None` for the root (its level is whatever it says, below MAX_LEVELS).
    level: Option<u8>,
    bounds: Bounds,
}

impl Want {
    const ROOT: Want = Want {
        level: None,
        bounds: Bounds::ALL,
    };

    fn child(&self, n: &impl NodeBytes, i: usize) -> Want {
        Want {
            level: Some(n.level() - 1),
            bounds: self.bounds.child(n, i),
        }
    }
}

/// A node's bytes in DRAM (read through [`NodeBytes`]).
///
/// Every change of `b` goes through a method that notes the bytes it
/// changed since the node was read (or last stored), so [`store`] hands
/// the transaction the node and those ranges, and the transaction logs
/// them without comparing the node with the device's copy.
#[derive(Clone)]
struct Node {
    off: u64,
    b: Vec<u8>,
    /// Byte ranges changed since the node was read or stored (sorted,
    /// merged as the log merges them).
    changed: Vec<Range<usize>>,
    /// Every byte may have changed (a new node, a compacted heap).
    whole: bool,
}

impl Drop for Node {
    fn drop(&mut self) {
        spare(std::mem::take(&mut self.b));
    }
}

impl Node {
    fn new(blk: u64, owner: u64, level: u8) -> Node {
        let mut n = Node {
            off: blk * BLOCK_SIZE,
            b: block_buf(),
            changed: Vec::new(),
            whole: true,
        };
        n.b.fill(0);
        n.put_u16(0, MAGIC as usize);
        n.b[2] = level;
        if level == 0 {
            n.set_heap(BLOCK);
        }
        n.b[8..16].copy_from_slice(&owner.to_le_bytes());
        n
    }

    fn blk(&self) -> u64 {
        self.off / BLOCK_SIZE
    }
    /// Note that bytes `r` changed.
    fn touch(&mut self, r: Range<usize>) {
        if !self.whole && !r.is_empty() {
            mark(&mut self.changed, r);
        }
    }
    /// Store `bytes` at `at`, noting the bytes that differ (as a
    /// comparison with the old node would: a rewritten value logs the bytes
    /// that changed in it, not all of it).
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(d) = differing(&self.b[at..at + bytes.len()], bytes) {
            self.b[at + d.start..at + d.end].copy_from_slice(&bytes[d.clone()]);
            self.touch(at + d.start..at + d.end);
        }
    }
    /// Move bytes `from` to `to` (as `copy_within`), noting the bytes that
    /// differ.
    fn shift(&mut self, from: Range<usize>, to: usize) {
        let d = differing(&self.b[to..to + from.len()], &self.b[from.clone()]);
        self.b.copy_within(from, to);
        if let Some(d) = d {
            self.touch(to + d.start..to + d.end);
        }
    }
    /// The node as it is now is what the transaction holds: nothing changed since.
    fn stored(&mut self) {
        self.changed.clear();
        self.whole = false;
    }
    fn put_u16(&mut self, at: usize, v: usize) {
        self.put(at, &(v as u16).to_le_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    fn set_count(&mut self, n: usize) {
        self.put_u16(4, n)
    }
    fn set_heap(&mut self, h: usize) {
        self.put_u16(6, h)
    }

    fn seal(&mut self) {
        let c = self.compute_crc();
        self.put(CRC_AT, &c.to_le_bytes());
    }

    // Leaves.

    /// Insert an entry at slot `pos`; the caller made sure it fits
    /// (`LEAF_SPACE - used() >= 2 + ENTRY_HEAD + value.len()`).
    fn leaf_put(&mut self, pos: usize, key: u64, value: &[u8]) {
        let size = ENTRY_HEAD + value.len();
        let count = self.count();
        if self.heap() < HEADER + 2 * (count + 1) + size {
            self.compact();
        }
        let o = self.heap() - size;
        self.put_u64(o, key);
        self.put_u16(o + 8, value.len());
        self.put(o + ENTRY_HEAD, value);
        self.set_heap(o);
        let slots = HEADER + 2 * pos..HEADER + 2 * count;
        self.shift(slots, HEADER + 2 * pos + 2);
        self.put_u16(HEADER + 2 * pos, o);
        self.set_count(count + 1);
    }

    /// Drop slot `i` (its entry becomes a hole, unless it is the heap's
    /// lowest, which is given back at once).
    fn leaf_remove(&mut self, i: usize) {
        let count = self.count();
        if self.slot(i) == self.heap() {
            self.set_heap(self.heap() + self.lsize(i));
        }
        self.shift(HEADER + 2 * (i + 1)..HEADER + 2 * count, HEADER + 2 * i);
        self.set_count(count - 1);
    }

    /// Rewrite the heap without holes, entry 0 highest (the order sequential
    /// inserts leave it in, so an already compact prefix does not move).
    fn compact(&mut self) {
        self.whole = true;
        let old = self.clone();
        let mut top = BLOCK;
        for i in 0..old.count() {
            let (o, s) = (old.slot(i), old.lsize(i));
            top -= s;
            self.b[top..top + s].copy_from_slice(&old.b[o..o + s]);
            self.put_u16(HEADER + 2 * i, top);
        }
        self.set_heap(top);
    }

    // Internal nodes.

    fn set_entry(&mut self, i: usize, key: u64, child: u64) {
        self.put_u64(HEADER + 16 * i, key);
        self.put_u64(HEADER + 16 * i + 8, child);
    }
    fn internal_insert(&mut self, pos: usize, key: u64, child: u64) {
        let count = self.count();
        self.shift(
            HEADER + 16 * pos..HEADER + 16 * count,
            HEADER + 16 * (pos + 1),
        );
        self.set_entry(pos, key, child);
        self.set_count(count + 1);
    }
    /// Drop child `i`; dropping child 0 widens child 1's range down to the
    /// node's (key 0 stays 0).
    fn internal_remove(&mut self, i: usize) {
        let count = self.count();
        self.shift(HEADER + 16 * (i + 1)..HEADER + 16 * count, HEADER + 16 * i);
        self.set_count(count - 1);
        if i == 0 && count > 1 {
            self.put_u64(HEADER, 0);
        }
    }
}

/// Reading a node: an owned copy ([`Node`]) or the block where it lies
/// ([`NodeView`]). Accessors index freely: they are used only on nodes
/// that passed [`NodeBytes::verify`] or that this module built.
trait NodeBytes {
    fn bytes(&self) -> &[u8];
    /// The node's device offset.
    fn offset(&self) -> u64;

    fn u16_at(&self, at: usize) -> usize {
        u16::from_le_bytes([self.bytes()[at], self.bytes()[at + 1]]) as usize
    }
    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes()[at..at + 8].try_into().expect("8 bytes"))
    }
    fn level(&self) -> u8 {
        self.bytes()[2]
    }
    fn is_leaf(&self) -> bool {
        self.level() == 0
    }
    fn count(&self) -> usize {
        self.u16_at(4)
    }
    fn heap(&self) -> usize {
        self.u16_at(6)
    }
    /// The checksum of the block with its checksum field taken as zero.
    fn compute_crc(&self) -> u32 {
        let b = self.bytes();
        let c = crc(self.offset(), &b[..CRC_AT]);
        let c = crc32c::crc32c_append(c, &[0; HEADER - CRC_AT]);
        crc32c::crc32c_append(c, &b[HEADER..])
    }
    fn slot(&self, i: usize) -> usize {
        self.u16_at(HEADER + 2 * i)
    }
    fn lkey(&self, i: usize) -> u64 {
        self.u64_at(self.slot(i))
    }
    fn lval(&self, i: usize) -> &[u8] {
        let o = self.slot(i);
        let n = self.u16_at(o + 8);
        &self.bytes()[o + ENTRY_HEAD..o + ENTRY_HEAD + n]
    }
    /// Heap bytes of entry `i`.
    fn lsize(&self, i: usize) -> usize {
        ENTRY_HEAD + self.u16_at(self.slot(i) + 8)
    }
    /// Slot and heap bytes in use.
    fn used(&self) -> usize {
        if self.is_leaf() {
            (0..self.count()).map(|i| 2 + self.lsize(i)).sum()
        } else {
            16 * self.count()
        }
    }
    /// `Ok(i)`: entry `i` has `key`; `Err(i)`: `key` would go at `i`.
    fn search(&self, key: u64) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.lkey(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Equal => return Ok(mid),
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Err(lo)
    }
    fn ikey(&self, i: usize) -> u64 {
        self.u64_at(HEADER + 16 * i)
    }
    fn child(&self, i: usize) -> u64 {
        self.u64_at(HEADER + 16 * i + 8)
    }
    /// The child whose range holds `key`.
    fn route(&self, key: u64) -> usize {
        let (mut lo, mut hi) = (1, self.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.ikey(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - 1
    }
    fn fill(&self) -> Fill {
        if self.count() == 0 {
            Fill::Empty
        } else if self.is_low() {
            Fill::Low
        } else {
            Fill::Fine
        }
    }
    /// Under a quarter full: worth merging with a sibling.
    fn is_low(&self) -> bool {
        if self.is_leaf() {
            self.used() < LEAF_SPACE / 4
        } else {
            self.count() < MAX_CHILDREN / 4
        }
    }
    fn corrupt(&self, what: impl Into<String>) -> MetaError {
        MetaError::Corrupt {
            offset: self.offset(),
            what: what.into(),
        }
    }
    /// Every check a read makes (see the module doc).
    fn verify(&self, owner: u64, want: Want, dev_len: u64) -> Result<(), MetaError> {
        let stored = u32::from_le_bytes(self.bytes()[CRC_AT..HEADER].try_into().expect("4 bytes"));
        if self.compute_crc() != stored {
            return Err(self.corrupt("B-tree node checksum mismatch"));
        }
        self.verify_header(owner, want)?;
        self.verify_entries(want, dev_len)
    }
    /// The checks of a node verified before (see [`Tx::is_verified`]): that
    /// it is a node of this tree at the level its parent implies.
    fn verify_header(&self, owner: u64, want: Want) -> Result<(), MetaError> {
        if self.u16_at(0) != MAGIC as usize {
            return Err(self.corrupt("not a B-tree node (bad magic)"));
        }
        if self.bytes()[3] != 0 || self.bytes()[16..CRC_AT].iter().any(|&b| b != 0) {
            return Err(self.corrupt("B-tree node reserved bytes not zero"));
        }
        if self.u64_at(8) != owner {
            return Err(self.corrupt(format!(
                "B-tree node of owner {} in the tree of owner {owner}",
                self.u64_at(8)
            )));
        }
        let level = self.level();
        if level >= MAX_LEVELS || want.level.is_some_and(|l| l != level) {
            return Err(self.corrupt(format!(
                "B-tree node at level {level}, expected {:?}",
                want.level
            )));
        }
        Ok(())
    }
    /// The checks of a node verified before against the key range of the
    /// place it is read from now: its first and last keys lie in it. Its
    /// bytes passed every check, but a parent can name it from elsewhere in
    /// the tree (a child pointer damaged under a valid checksum), where its
    /// entries would be missed silently.
    fn verify_range(&self, want: Want) -> Result<(), MetaError> {
        let (count, b) = (self.count(), want.bounds);
        let (first, last) = match (self.is_leaf(), count) {
            (true, 0) if want.level.is_some() => {
                return Err(self.corrupt("empty B-tree leaf below the root"))
            }
            (true, 0) | (false, 0..=1) => return Ok(()),
            (true, _) => (self.lkey(0), self.lkey(count - 1)),
            (false, _) => (self.ikey(1), self.ikey(count - 1)),
        };
        if !b.contains(first) || !b.contains(last) {
            return Err(self.corrupt(format!(
                "B-tree node with keys {first:#x}..={last:#x} out of the range its parent gives"
            )));
        }
        Ok(())
    }
    /// The checks of the count, heap, slots, entries, keys and children.
    fn verify_entries(&self, want: Want, dev_len: u64) -> Result<(), MetaError> {
        let level = self.level();
        let (count, heap, b) = (self.count(), self.heap(), want.bounds);
        if level == 0 {
            if count == 0 && want.level.is_some() {
                return Err(self.corrupt("empty B-tree leaf below the root"));
            }
            if heap > BLOCK || heap < HEADER + 2 * count {
                return Err(self.corrupt(format!(
                    "B-tree leaf heap start {heap} with {count} entries"
                )));
            }
            let (mut prev, mut bytes) = (None, 0);
            for i in 0..count {
                let o = self.slot(i);
                if o < heap || o + ENTRY_HEAD > BLOCK {
                    return Err(self.corrupt(format!("B-tree leaf slot {i} at {o}")));
                }
                let len = self.u16_at(o + 8);
                if len > MAX_VALUE || o + ENTRY_HEAD + len > BLOCK {
                    return Err(self.corrupt(format!("B-tree leaf entry {i} of {len} bytes")));
                }
                // Entries lie in the heap without overlapping, so they add up
                // to no more than it holds (check() tests the overlap itself;
                // this bound is what keeps splits and compaction in the block).
                bytes += ENTRY_HEAD + len;
                if bytes > BLOCK - heap {
                    return Err(self.corrupt(format!(
                        "B-tree leaf entries of {bytes} bytes in a heap of {}",
                        BLOCK - heap
                    )));
                }
                let k = self.u64_at(o);
                if prev.is_some_and(|p| k <= p) || !b.contains(k) {
                    return Err(self.corrupt(format!(
                        "B-tree leaf key {k:#x} out of order or out of the node's range"
                    )));
                }
                prev = Some(k);
            }
        } else {
            if count == 0 || count > MAX_CHILDREN || heap != 0 || self.ikey(0) != 0 {
                return Err(self.corrupt(format!("B-tree internal node with {count} children")));
            }
            for i in 0..count {
                let c = self.child(i);
                if c == 0 || c >= dev_len / BLOCK_SIZE {
                    return Err(self.corrupt(format!("B-tree child block {c} off the device")));
                }
                let k = self.ikey(i);
                if i > 0 && (!b.contains(k) || (i > 1 && k <= self.ikey(i - 1))) {
                    return Err(self.corrupt(format!(
                        "B-tree separator {k:#x} out of order or out of the node's range"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl NodeBytes for Node {
    fn bytes(&self) -> &[u8] {
        &self.b
    }
    fn offset(&self) -> u64 {
        self.off
    }
}

/// A node read where it lies ([`Tx::node_view`]): a lookup reads the few
/// lines of each node its search touches, not a copy of 4 KiB.
struct NodeView<'a> {
    off: u64,
    b: &'a [u8],
}

impl NodeBytes for NodeView<'_> {
    fn bytes(&self) -> &[u8] {
        self.b
    }
    fn offset(&self) -> u64 {
        self.off
    }
}

/// How a removal left a node, for its parent.
enum Fill {
    Empty,
    Low,
    Fine,
}

fn store(tx: &mut Tx<'_>, n: &mut Node) -> Result<(), MetaError> {
    n.seal();
    let block: &[u8; BLOCK] = n.b[..].try_into().expect("a node is one block");
    tx.write_node(n.blk(), block, (!n.whole).then_some(&n.changed[..]))?;
    n.stored();
    Ok(())
}

/// The result of inserting below a node: the old value, and the new right
/// sibling (separator, block) when the node split.
type Inserted = (Option<Vec<u8>>, Option<(u64, u64)>);

/// The value [`BTree::insert_with`] stores, from the old one (if any).
pub(crate) type NewValue<'a> = dyn FnMut(Option<&[u8]>) -> Result<Vec<u8>, MetaError> + 'a;

/// Block `blk` can hold a node: a child was checked by its parent's
/// verify; this catches a bad root.
fn on_device(tx: &Tx<'_>, blk: u64) -> Result<(), MetaError> {
    if blk == 0 || blk >= tx.device().len() / BLOCK_SIZE {
        return Err(MetaError::Corrupt {
            offset: blk.saturating_mul(BLOCK_SIZE),
            what: format!("B-tree root block {blk} off the device"),
        });
    }
    Ok(())
}

/// `value`, if it is no longer than [`MAX_VALUE`].
fn checked(value: Vec<u8>) -> Result<Vec<u8>, MetaError> {
    if value.len() > MAX_VALUE {
        return Err(MetaError::TooLarge);
    }
    Ok(value)
}

impl BTree {
    /// An empty tree.
    pub fn new(owner: u64) -> Self {
        BTree { root: 0, owner }
    }

    fn load(&self, tx: &Tx<'_>, blk: u64, want: Want) -> Result<Node, MetaError> {
        let mut n = Node {
            off: 0,
            b: block_buf(),
            changed: Vec::new(),
            whole: false,
        };
        self.load_into(tx, &mut n, blk, want)?;
        Ok(n)
    }

    /// [`BTree::load`] into the buffer of `n` (a walk down the tree reuses
    /// one).
    fn load_into(&self, tx: &Tx<'_>, n: &mut Node, blk: u64, want: Want) -> Result<(), MetaError> {
        n.off = blk.saturating_mul(BLOCK_SIZE);
        n.stored();
        on_device(tx, blk)?;
        tx.read(n.off, &mut n.b)?;
        self.check_read(tx, &*n, blk, want)
    }

    /// `f` of node `blk` (for the place `want`), read in place where the
    /// device allows ([`Tx::node_view`]), else from a copy; checked as
    /// [`BTree::load_into`] checks a copy. A writer reads the nodes it only
    /// passes through so, and copies only those it changes.
    fn peek<T>(
        &self,
        tx: &Tx<'_>,
        blk: u64,
        want: Want,
        f: impl FnOnce(&NodeView<'_>) -> T,
    ) -> Result<T, MetaError> {
        on_device(tx, blk)?;
        if let Some(b) = tx.node_view(blk) {
            let n = NodeView {
                off: blk * BLOCK_SIZE,
                b,
            };
            self.check_read(tx, &n, blk, want)?;
            return Ok(f(&n));
        }
        let n = self.load(tx, blk, want)?;
        Ok(f(&NodeView {
            off: n.off,
            b: &n.b,
        }))
    }

    /// The way down from node `blk` to `key`: `None` at a leaf, else the
    /// child's index, block and place. A node its parent places at level 0
    /// is a leaf without a look (the writer's copy of it checks it).
    fn step(
        &self,
        tx: &Tx<'_>,
        blk: u64,
        want: Want,
        key: u64,
    ) -> Result<Option<(usize, u64, Want)>, MetaError> {
        if want.level == Some(0) {
            return Ok(None);
        }
        self.peek(tx, blk, want, |n| {
            (!n.is_leaf()).then(|| {
                let i = n.route(key);
                (i, n.child(i), want.child(n, i))
            })
        })
    }

    /// The checks of node `n`, read from block `blk` for the place `want`:
    /// its header and key range if the block is known verified, else every
    /// check (and it is known verified from then on).
    fn check_read(
        &self,
        tx: &Tx<'_>,
        n: &impl NodeBytes,
        blk: u64,
        want: Want,
    ) -> Result<(), MetaError> {
        if tx.is_verified(blk) {
            n.verify_header(self.owner, want)?;
            return n.verify_range(want);
        }
        n.verify(self.owner, want, tx.device().len())?;
        tx.note_verified(blk);
        Ok(())
    }

    /// The leaf whose range holds `key`, and that range. Only for a non-empty tree.
    fn find_leaf(&self, tx: &Tx<'_>, key: u64) -> Result<(Node, Bounds), MetaError> {
        let mut want = Want::ROOT;
        let mut n = self.load(tx, self.root, want)?;
        // Levels strictly descend (verify), so this ends within MAX_LEVELS reads.
        while !n.is_leaf() {
            let i = n.route(key);
            want = want.child(&n, i);
            let child = n.child(i);
            self.load_into(tx, &mut n, child, want)?;
        }
        Ok((n, want.bounds))
    }

    /// The value of `key`. Read in place where the device allows
    /// ([`Tx::node_view`]): the search touches a few lines of each node.
    pub fn get(&self, tx: &Tx<'_>, key: u64) -> Result<Option<Vec<u8>>, MetaError> {
        if self.root == 0 {
            return Ok(None);
        }
        if let Some(found) = self.get_in_place(tx, key) {
            return found;
        }
        let (leaf, _) = self.find_leaf(tx, key)?;
        Ok(leaf.search(key).ok().map(|i| leaf.lval(i).to_vec()))
    }

    /// [`BTree::get`] through views of the nodes where they lie, checked as
    /// [`BTree::load_into`] checks a copy; `None` when a node has no view.
    fn get_in_place(&self, tx: &Tx<'_>, key: u64) -> Option<Result<Option<Vec<u8>>, MetaError>> {
        let (mut blk, mut want) = (self.root, Want::ROOT);
        // Levels strictly descend (each node is checked against the level
        // its parent implies), so this ends within MAX_LEVELS reads.
        loop {
            if let Err(e) = on_device(tx, blk) {
                return Some(Err(e));
            }
            let n = NodeView {
                off: blk * BLOCK_SIZE,
                b: tx.node_view(blk)?,
            };
            if let Err(e) = self.check_read(tx, &n, blk, want) {
                return Some(Err(e));
            }
            if n.is_leaf() {
                return Some(Ok(n.search(key).ok().map(|i| n.lval(i).to_vec())));
            }
            let i = n.route(key);
            want = want.child(&n, i);
            blk = n.child(i);
        }
    }

    /// Entries with key >= `from`, in key order, at most `limit`; for
    /// streaming (readdir cookies, extent walks).
    pub fn range(
        &self,
        tx: &Tx<'_>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, MetaError> {
        let mut out = Vec::new();
        if self.root == 0 || limit == 0 {
            return Ok(out);
        }
        let mut cursor = from;
        loop {
            // No sibling links (freeing or merging a leaf would rewrite its
            // neighbour too, and a bad link could loop): the next leaf is
            // the one holding this leaf's upper bound, found from the root.
            // The cursor only grows and every leaf below the root holds an
            // entry, so each pass but the first returns something.
            let (leaf, bounds) = self.find_leaf(tx, cursor)?;
            let start = leaf.search(cursor).unwrap_or_else(|i| i);
            for i in start..leaf.count() {
                out.push((leaf.lkey(i), leaf.lval(i).to_vec()));
                if out.len() == limit {
                    return Ok(out);
                }
            }
            match bounds.hi {
                Some(hi) => cursor = hi,
                None => return Ok(out),
            }
        }
    }

    /// The entry with the greatest key <= `key` (extent lookup: the extent
    /// starting at or before a file block).
    pub fn floor(&self, tx: &Tx<'_>, key: u64) -> Result<Option<(u64, Vec<u8>)>, MetaError> {
        if self.root == 0 {
            return Ok(None);
        }
        let mut k = key;
        // The leaf holding `key`, else the one just left of it: a leaf
        // below the root is never empty, so two passes always answer.
        for _ in 0..2 {
            let (leaf, bounds) = self.find_leaf(tx, k)?;
            match leaf.search(k) {
                Ok(i) => return Ok(Some((leaf.lkey(i), leaf.lval(i).to_vec()))),
                Err(i) if i > 0 => {
                    return Ok(Some((leaf.lkey(i - 1), leaf.lval(i - 1).to_vec())));
                }
                Err(_) => match bounds.lo.and_then(|lo| lo.checked_sub(1)) {
                    Some(below) => k = below,
                    None => return Ok(None),
                },
            }
        }
        Err(MetaError::Corrupt {
            offset: self.root * BLOCK_SIZE,
            what: "B-tree floor: no entry in the leaf left of a separator".into(),
        })
    }

    /// Insert or replace; returns the old value.
    pub fn insert(
        &mut self,
        tx: &mut Tx<'_>,
        src: &mut dyn BlockSource,
        key: u64,
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, MetaError> {
        self.insert_with(tx, src, key, &mut |_| Ok(value.to_vec()))
    }

    /// Insert or replace the value of `key` with `value(the old value)`,
    /// in one walk down the tree; returns the old value. An error from
    /// `value` changes nothing.
    pub fn insert_with(
        &mut self,
        tx: &mut Tx<'_>,
        src: &mut dyn BlockSource,
        key: u64,
        value: &mut NewValue<'_>,
    ) -> Result<Option<Vec<u8>>, MetaError> {
        if self.root == 0 {
            let value = checked(value(None)?)?;
            let blk = tx.alloc_block(src)?;
            let mut n = Node::new(blk, self.owner, 0);
            n.leaf_put(0, key, &value);
            store(tx, &mut n)?;
            self.root = blk;
            return Ok(None);
        }
        let level = self.peek(tx, self.root, Want::ROOT, |r| r.level())?;
        let (old, split) = self.insert_below(tx, src, self.root, Want::ROOT, key, value)?;
        if let Some((sep, right)) = split {
            if level + 1 >= MAX_LEVELS {
                return Err(MetaError::Corrupt {
                    offset: self.root * BLOCK_SIZE,
                    what: format!("B-tree would grow past {MAX_LEVELS} levels"),
                });
            }
            let blk = tx.alloc_block(src)?;
            let mut n = Node::new(blk, self.owner, level + 1);
            n.set_entry(0, 0, self.root);
            n.set_entry(1, sep, right);
            n.set_count(2);
            store(tx, &mut n)?;
            self.root = blk;
        }
        Ok(old)
    }

    /// Insert below node `blk` (at place `want`): an internal node is read
    /// in place on the way down and copied only if a child split.
    fn insert_below(
        &self,
        tx: &mut Tx<'_>,
        src: &mut dyn BlockSource,
        blk: u64,
        want: Want,
        key: u64,
        value: &mut NewValue<'_>,
    ) -> Result<Inserted, MetaError> {
        let Some((i, child, cw)) = self.step(tx, blk, want, key)? else {
            let n = self.load(tx, blk, want)?;
            return self.leaf_insert(tx, src, n, want, key, value);
        };
        let (old, split) = self.insert_below(tx, src, child, cw, key, value)?;
        let Some((sep, right)) = split else {
            return Ok((old, None));
        };
        let mut n = self.load(tx, blk, want)?;
        if n.count() < MAX_CHILDREN {
            n.internal_insert(i + 1, sep, right);
            store(tx, &mut n)?;
            return Ok((old, None));
        }
        // Full: the left half stays (only its count changes), the right half
        // goes to a new node whose key 0 becomes the separator pushed up.
        // At the right edge of the tree only the new child moves (see
        // `leaf_insert`).
        let mut entries: Vec<(u64, u64)> =
            (0..n.count()).map(|j| (n.ikey(j), n.child(j))).collect();
        entries.insert(i + 1, (sep, right));
        let mid = if i + 1 == n.count() && want.bounds.hi.is_none() {
            entries.len() - 1
        } else {
            entries.len() / 2
        };
        let rblk = tx.alloc_block(src)?;
        let mut r = Node::new(rblk, self.owner, n.level());
        for (j, &(k, c)) in entries[mid..].iter().enumerate() {
            r.set_entry(j, if j == 0 { 0 } else { k }, c);
        }
        r.set_count(entries.len() - mid);
        for (j, &(k, c)) in entries[..mid].iter().enumerate().skip(i + 1) {
            n.set_entry(j, k, c);
        }
        n.set_count(mid);
        store(tx, &mut n)?;
        store(tx, &mut r)?;
        Ok((old, Some((entries[mid].0, rblk))))
    }

    fn leaf_insert(
        &self,
        tx: &mut Tx<'_>,
        src: &mut dyn BlockSource,
        mut n: Node,
        want: Want,
        key: u64,
        value: &mut NewValue<'_>,
    ) -> Result<Inserted, MetaError> {
        let found = n.search(key);
        let value = checked(value(found.ok().map(|i| n.lval(i)))?)?;
        let value = &value[..];
        let (pos, old) = match found {
            Ok(i) => {
                let old = n.lval(i).to_vec();
                if old.len() == value.len() {
                    // The same length: overwritten where it lies.
                    let o = n.slot(i) + ENTRY_HEAD;
                    n.put(o, value);
                    store(tx, &mut n)?;
                    return Ok((Some(old), None));
                }
                n.leaf_remove(i);
                (i, Some(old))
            }
            Err(i) => (i, None),
        };
        let need = 2 + ENTRY_HEAD + value.len();
        // Room below the heap needs no count of the bytes in use.
        let below_heap = n.heap() >= HEADER + 2 * n.count() + need;
        if below_heap || n.used() + need <= LEAF_SPACE {
            n.leaf_put(pos, key, value);
            store(tx, &mut n)?;
            return Ok((old, None));
        }
        // Split the entries (the new one included) where half the bytes
        // are on each side. Each side then fits: an entry is at most 1036
        // bytes and all of them at most 4064 + 1036, so a side is at most
        // 2550 + 1036 bytes, and both sides have one.
        let mut sizes: Vec<usize> = (0..n.count()).map(|j| 2 + n.lsize(j)).collect();
        sizes.insert(pos, need);
        let mid = if pos == n.count() && want.bounds.hi.is_none() {
            // A key past every key of the tree (sequential inserts: appended
            // extents, new inode numbers) leaves the full leaf as it is and
            // starts the next one, so such leaves end up full, not half full.
            pos
        } else {
            let total: usize = sizes.iter().sum();
            let (mut mid, mut left) = (0, 0);
            while 2 * left < total && mid < sizes.len() - 1 {
                left += sizes[mid];
                mid += 1;
            }
            mid
        };
        // The existing entries that stay on the left.
        let keep = if pos < mid { mid - 1 } else { mid };
        let rblk = tx.alloc_block(src)?;
        let mut r = Node::new(rblk, self.owner, 0);
        for j in keep..n.count() {
            let rc = r.count();
            r.leaf_put(rc, n.lkey(j), n.lval(j));
        }
        n.set_count(keep);
        if pos < mid {
            n.leaf_put(pos, key, value);
        } else {
            r.leaf_put(pos - keep, key, value);
        }
        store(tx, &mut n)?;
        store(tx, &mut r)?;
        Ok((old, Some((r.lkey(0), rblk))))
    }

    /// Remove `key`; returns its value.
    pub fn remove(&mut self, tx: &mut Tx<'_>, key: u64) -> Result<Option<Vec<u8>>, MetaError> {
        if self.root == 0 {
            return Ok(None);
        }
        let (old, root) = self.remove_below(tx, self.root, Want::ROOT, key)?;
        if old.is_none() {
            return Ok(None);
        }
        let mut root = match root {
            Some(r) => r,
            // Unchanged: it shrinks only if it was already so (damage).
            None => {
                let shrinks = self.peek(tx, self.root, Want::ROOT, |r| {
                    r.count() == 0 || (!r.is_leaf() && r.count() == 1)
                })?;
                if !shrinks {
                    return Ok(old);
                }
                self.load(tx, self.root, Want::ROOT)?
            }
        };
        // Shrink from the top: an empty root goes; an internal root with one
        // child gives way to it (levels descend, so this ends).
        loop {
            if root.count() == 0 {
                tx.free_block(root.blk());
                self.root = 0;
                break;
            }
            if root.is_leaf() || root.count() > 1 {
                break;
            }
            let want = Want {
                level: Some(root.level() - 1),
                bounds: Bounds::ALL,
            };
            let child = self.load(tx, root.child(0), want)?;
            tx.free_block(root.blk());
            self.root = child.blk();
            root = child;
        }
        Ok(old)
    }

    /// Remove `key` below node `blk` (at place `want`); returns the old
    /// value and, if the node changed, its copy as it is now. An internal
    /// node is read in place on the way down and copied only if it changes.
    fn remove_below(
        &self,
        tx: &mut Tx<'_>,
        blk: u64,
        want: Want,
        key: u64,
    ) -> Result<(Option<Vec<u8>>, Option<Node>), MetaError> {
        let Some((i, child_blk, cw)) = self.step(tx, blk, want, key)? else {
            let mut n = self.load(tx, blk, want)?;
            let Ok(i) = n.search(key) else {
                return Ok((None, None));
            };
            let old = n.lval(i).to_vec();
            n.leaf_remove(i);
            store(tx, &mut n)?;
            return Ok((Some(old), Some(n)));
        };
        let (old, child) = self.remove_below(tx, child_blk, cw, key)?;
        if old.is_none() {
            return Ok((None, None));
        }
        let fill = match &child {
            Some(c) => c.fill(),
            None => self.peek(tx, child_blk, cw, |c| c.fill())?,
        };
        match fill {
            Fill::Fine => Ok((old, None)),
            Fill::Empty => {
                tx.free_block(child_blk);
                let mut n = self.load(tx, blk, want)?;
                n.internal_remove(i);
                store(tx, &mut n)?;
                Ok((old, Some(n)))
            }
            Fill::Low => {
                let child = match child {
                    Some(c) => c,
                    None => self.load(tx, child_blk, cw)?,
                };
                let mut n = self.load(tx, blk, want)?;
                if self.merge(tx, &mut n, want, i, child)? {
                    store(tx, &mut n)?;
                    return Ok((old, Some(n)));
                }
                Ok((old, None))
            }
        }
    }

    /// Merge child `i` of `n` (given as `child`) with its left or right
    /// sibling if the two fit in one node. Returns whether `n` changed.
    fn merge(
        &self,
        tx: &mut Tx<'_>,
        n: &mut Node,
        want: Want,
        i: usize,
        child: Node,
    ) -> Result<bool, MetaError> {
        // Two entries naming one block would free a node still in use.
        let shared = |j: usize| j < n.count() && n.child(j) == child.blk();
        if shared(i.wrapping_sub(1)) || shared(i + 1) {
            return Err(n.corrupt("B-tree node names one child twice"));
        }
        if i > 0 {
            let left = self.load(tx, n.child(i - 1), want.child(n, i - 1))?;
            if fits_in_one(&left, &child) {
                self.absorb(tx, n, i - 1, left, &child)?;
                return Ok(true);
            }
        }
        if i + 1 < n.count() {
            let right = self.load(tx, n.child(i + 1), want.child(n, i + 1))?;
            if fits_in_one(&child, &right) {
                self.absorb(tx, n, i, child, &right)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Move the entries of child `l + 1` of `n` (`right`) into child `l`
    /// (`left`), free the right one and drop it from `n`.
    fn absorb(
        &self,
        tx: &mut Tx<'_>,
        n: &mut Node,
        l: usize,
        mut left: Node,
        right: &Node,
    ) -> Result<(), MetaError> {
        if left.is_leaf() {
            for j in 0..right.count() {
                let at = left.count();
                left.leaf_put(at, right.lkey(j), right.lval(j));
            }
        } else {
            // Right's key 0 means "from its separator on": make it that.
            let at = left.count();
            for j in 0..right.count() {
                let k = if j == 0 { n.ikey(l + 1) } else { right.ikey(j) };
                left.set_entry(at + j, k, right.child(j));
            }
            left.set_count(at + right.count());
        }
        store(tx, &mut left)?;
        tx.free_block(right.blk());
        n.internal_remove(l + 1);
        Ok(())
    }

    /// Free every node (through `tx.free_block`); the tree becomes empty.
    pub fn free_all(&mut self, tx: &mut Tx<'_>) -> Result<(), MetaError> {
        if self.root != 0 {
            // Walk first, free after: a corrupt tree frees nothing.
            let mut blocks = Vec::new();
            self.walk(tx, self.root, Want::ROOT, &mut HashSet::new(), &mut |n| {
                blocks.push(n.blk());
                Ok(())
            })?;
            for b in blocks {
                tx.free_block(b);
            }
        }
        self.root = 0;
        Ok(())
    }

    /// Visit every node below `blk`, parents before children; a node
    /// reached twice is corruption (a shared or cyclic pointer).
    fn walk(
        &self,
        tx: &Tx<'_>,
        blk: u64,
        want: Want,
        seen: &mut HashSet<u64>,
        visit: &mut dyn FnMut(&Node) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let n = self.load(tx, blk, want)?;
        if !seen.insert(blk) {
            return Err(n.corrupt("B-tree node reached twice"));
        }
        visit(&n)?;
        if !n.is_leaf() {
            for i in 0..n.count() {
                self.walk(tx, n.child(i), want.child(&n, i), seen, visit)?;
            }
        }
        Ok(())
    }

    /// Verify the whole tree (fsck): every node as a read does, plus that no
    /// node is reached twice and that leaf entries do not overlap each other.
    /// Returns counts and the blocks visited.
    pub fn check(&self, tx: &Tx<'_>) -> Result<TreeStats, MetaError> {
        let mut stats = TreeStats::default();
        if self.root == 0 {
            return Ok(stats);
        }
        self.walk(tx, self.root, Want::ROOT, &mut HashSet::new(), &mut |n| {
            if stats.nodes == 0 {
                stats.depth = n.level() as u32 + 1;
            }
            if n.is_leaf() {
                let mut spans: Vec<(usize, usize)> =
                    (0..n.count()).map(|i| (n.slot(i), n.lsize(i))).collect();
                spans.sort_unstable();
                if spans.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
                    return Err(n.corrupt("B-tree leaf entries overlap"));
                }
                stats.entries += n.count() as u64;
            }
            stats.nodes += 1;
            stats.blocks.push(n.blk());
            Ok(())
        })?;
        Ok(stats)
    }
}

/// Whether two sibling nodes' contents fit in one node.
fn fits_in_one(left: &Node, right: &Node) -> bool {
    if left.is_leaf() {
        left.used() + right.used() <= LEAF_SPACE
    } else {
        left.count() + right.count() <= MAX_CHILDREN
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::device::{Device, RamDevice};
    use crate::meta::apply;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::OnceLock;
    use std::time::Duration;

    type Model = BTreeMap<u64, Vec<u8>>;

    /// Blocks `[first, end)` of the device, handed out last-freed first, so
    /// a block a transaction frees is the next one reused.
    #[derive(Clone)]
    struct Pool {
        free: Vec<u64>,
        used: BTreeSet<u64>,
    }

    impl Pool {
        fn new(first: u64, end: u64) -> Self {
            Pool {
                free: (first..end).rev().collect(),
                used: BTreeSet::new(),
            }
        }

        /// After a transaction's writes are applied: take back what it freed.
        fn commit(&mut self, tx: &Tx<'_>) {
            for &b in tx.freed() {
                assert!(self.used.remove(&b), "block {b} freed but not in use");
                self.free.push(b);
            }
        }

        /// After a transaction is dropped: take back what it allocated.
        fn abort(&mut self, tx: &Tx<'_>) {
            for &b in tx.allocated() {
                assert!(self.used.remove(&b), "block {b} allocated but not in use");
                self.free.push(b);
            }
        }
    }

    impl BlockSource for Pool {
        fn alloc_block(&mut self) -> Result<u64, MetaError> {
            let b = self.free.pop().ok_or(MetaError::NoSpace)?;
            assert!(self.used.insert(b), "block {b} handed out twice");
            Ok(b)
        }
    }

    /// Run `f` in its own transaction and apply its writes (as the file
    /// system will: log, then store in place); an error drops the
    /// transaction and its allocations instead.
    fn in_tx<R>(
        dev: &dyn Device,
        pool: &mut Pool,
        f: impl FnOnce(&mut Tx<'_>, &mut Pool) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let mut tx = Tx::new(dev);
        let r = f(&mut tx, pool);
        match r {
            Ok(_) => {
                apply(dev, &tx.writes()).unwrap();
                pool.commit(&tx);
            }
            Err(_) => pool.abort(&tx),
        }
        r
    }

    /// A value that differs with `seed` (so a replace is seen).
    fn value(seed: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seed.wrapping_mul(0x9e37_79b9) as usize).wrapping_add(i * 13) as u8)
            .collect()
    }

    fn all(t: &BTree, dev: &dyn Device) -> Vec<(u64, Vec<u8>)> {
        t.range(&Tx::new(dev), 0, usize::MAX).unwrap()
    }

    fn model_vec(m: &Model) -> Vec<(u64, Vec<u8>)> {
        m.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// The tree verifies, holds what the model holds, and its nodes are
    /// exactly the blocks the pool has handed out (no leak, no sharing).
    fn assert_consistent(t: &BTree, dev: &dyn Device, pool: &Pool, m: &Model) {
        let s = t.check(&Tx::new(dev)).unwrap();
        assert_eq!(s.entries, m.len() as u64);
        let blocks: BTreeSet<u64> = s.blocks.iter().copied().collect();
        assert_eq!(blocks.len(), s.nodes);
        assert_eq!(blocks, pool.used);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, usize),
        Remove(u64),
        Get(u64),
        Range(u64, usize),
        Floor(u64),
        /// Insert `n` keys from `start` on, in one transaction.
        Fill(u64, u64, usize),
        /// Remove up to `n` keys from `start` on, in one transaction.
        Drain(u64, usize),
    }

    /// Mostly a small clustered key space (so nodes fill, split, empty and
    /// merge), some anywhere, some at the top of the key space.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => 0u64..600,
            1 => any::<u64>(),
            1 => (u64::MAX - 40)..=u64::MAX,
        ]
    }

    fn vlen() -> impl Strategy<Value = usize> {
        prop_oneof![3 => 0usize..48, 1 => 0usize..=MAX_VALUE, 1 => Just(MAX_VALUE)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), vlen()).prop_map(|(k, l)| Op::Insert(k, l)),
            4 => key().prop_map(Op::Remove),
            1 => key().prop_map(Op::Get),
            1 => (key(), 0usize..60).prop_map(|(k, n)| Op::Range(k, n)),
            1 => key().prop_map(Op::Floor),
            1 => (0u64..600, 1u64..120, vlen()).prop_map(|(s, n, l)| Op::Fill(s, n, l)),
            1 => (0u64..600, 1usize..150).prop_map(|(s, n)| Op::Drain(s, n)),
            // Runs of 1 KiB values (three to a leaf) over a wider key space:
            // hundreds of leaves, so internal nodes split and merge too.
            1 => (0u64..3000, 100u64..600).prop_map(|(s, n)| Op::Fill(s, n, MAX_VALUE)),
            1 => (0u64..3000, 100usize..800).prop_map(|(s, n)| Op::Drain(s, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random operations against a `BTreeMap`, each in its own applied
        /// transaction, with a full check every few operations; at the end
        /// `free_all` gives every block back. Nodes read as copies.
        #[test]
        fn random_ops_match_a_btreemap_model(ops in proptest::collection::vec(op(), 1..250)) {
            model_run(&RamDevice::new(16 << 20), ops)?;
        }

        /// The same on a mapped device: lookups read nodes in place
        /// (`BTree::get`, `Tx::node_view`).
        #[test]
        fn random_ops_match_a_btreemap_model_read_in_place(ops in proptest::collection::vec(op(), 1..250)) {
            let dev = crate::device::open("memfd:16M", &Default::default()).unwrap();
            prop_assert!(dev.mapping().is_some(), "a device mapped whole");
            model_run(&*dev, ops)?;
        }
    }

    fn model_run(dev: &dyn Device, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut pool = Pool::new(1, 4096);
        let mut t = BTree::new(77);
        let mut m = Model::new();
        for (n, op) in ops.into_iter().enumerate() {
            let seed = n as u64;
            match op {
                Op::Insert(k, l) => {
                    let v = value(k ^ seed, l);
                    let old = in_tx(dev, &mut pool, |tx, p| t.insert(tx, p, k, &v)).unwrap();
                    prop_assert_eq!(old, m.insert(k, v));
                }
                Op::Remove(k) => {
                    let old = in_tx(dev, &mut pool, |tx, _| t.remove(tx, k)).unwrap();
                    prop_assert_eq!(old, m.remove(&k));
                }
                Op::Get(k) => {
                    let got = t.get(&Tx::new(dev), k).unwrap();
                    prop_assert_eq!(got.as_ref(), m.get(&k));
                }
                Op::Range(k, lim) => {
                    let got = t.range(&Tx::new(dev), k, lim).unwrap();
                    let want: Vec<_> = m
                        .range(k..)
                        .take(lim)
                        .map(|(k, v)| (*k, v.clone()))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Floor(k) => {
                    let got = t.floor(&Tx::new(dev), k).unwrap();
                    let want = m.range(..=k).next_back().map(|(k, v)| (*k, v.clone()));
                    prop_assert_eq!(got, want);
                }
                Op::Fill(s, cnt, l) => {
                    in_tx(dev, &mut pool, |tx, p| {
                        for k in s..s + cnt {
                            let v = value(k ^ seed, l);
                            // Reads inside one transaction see its own writes.
                            assert_eq!(t.insert(tx, p, k, &v)?, m.insert(k, v));
                            assert_eq!(t.get(tx, k)?.as_ref(), m.get(&k));
                        }
                        Ok(())
                    })
                    .unwrap();
                }
                Op::Drain(s, cnt) => {
                    in_tx(dev, &mut pool, |tx, _| {
                        for (k, v) in t.range(tx, s, cnt)? {
                            assert_eq!(t.remove(tx, k)?, Some(v));
                            assert!(m.remove(&k).is_some());
                        }
                        Ok(())
                    })
                    .unwrap();
                }
            }
            if n % 8 == 7 {
                assert_consistent(&t, dev, &pool, &m);
            }
        }
        assert_consistent(&t, dev, &pool, &m);
        prop_assert_eq!(all(&t, dev), model_vec(&m));
        in_tx(dev, &mut pool, |tx, _| t.free_all(tx)).unwrap();
        prop_assert_eq!(t.root, 0);
        prop_assert!(pool.used.is_empty(), "blocks never freed: {:?}", pool.used);
        Ok(())
    }

    /// Counts device reads.
    #[derive(Debug)]
    struct Counting {
        inner: RamDevice,
        reads: crate::sync::AtomicU64,
    }

    impl Counting {
        fn reads(&self) -> u64 {
            // ORDERING: Relaxed: a counter read by the thread that counts.
            self.reads.load(crate::sync::Ordering::Relaxed)
        }
    }

    impl Device for Counting {
        fn info(&self) -> &crate::device::DeviceInfo {
            self.inner.info()
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), crate::device::DeviceError> {
            // ORDERING: Relaxed: a counter read by the thread that counts.
            self.reads.fetch_add(1, crate::sync::Ordering::Relaxed);
            self.inner.read(off, buf)
        }
        fn write(&self, off: u64, data: &[u8]) -> Result<(), crate::device::DeviceError> {
            self.inner.write(off, data)
        }
        fn zero(&self, off: u64, len: u64) -> Result<(), crate::device::DeviceError> {
            self.inner.zero(off, len)
        }
        fn flush(&self, off: u64, len: u64) {
            self.inner.flush(off, len)
        }
        fn fence(&self) -> Result<(), crate::device::DeviceError> {
            self.inner.fence()
        }
        fn bad_list(&self) -> &crate::device::BadList {
            self.inner.bad_list()
        }
    }

    #[test]
    fn two_hundred_thousand_keys_stay_shallow_and_a_lookup_reads_depth_nodes() {
        let dev = Counting {
            inner: RamDevice::new(64 << 20),
            reads: Default::default(),
        };
        let mut pool = Pool::new(1, (64 << 20) / BLOCK_SIZE);
        let mut t = BTree::new(5);
        let mut rng = fastrand::Rng::with_seed(42);
        let sequential = 0..100_000u64;
        let random: Vec<u64> = (0..100_000).map(|_| rng.u64(..) | 1 << 63).collect();
        let keys: Vec<u64> = sequential.chain(random.iter().copied()).collect();
        // 16-byte values, as extents; 1000 inserts per transaction.
        for chunk in keys.chunks(1000) {
            in_tx(&dev, &mut pool, |tx, p| {
                for &k in chunk {
                    t.insert(tx, p, k, &k.to_le_bytes().repeat(2))?;
                }
                Ok(())
            })
            .unwrap();
        }
        let s = t.check(&Tx::new(&dev)).unwrap();
        assert_eq!(s.entries, 200_000);
        assert!(s.depth <= 4, "depth {}", s.depth);
        for _ in 0..2000 {
            let k = keys[rng.usize(..keys.len())];
            let before = dev.reads();
            let v = t.get(&Tx::new(&dev), k).unwrap();
            assert_eq!(v, Some(k.to_le_bytes().repeat(2)));
            assert!(dev.reads() - before <= s.depth as u64);
        }
    }

    #[test]
    fn an_insert_logs_the_entry_the_slots_and_the_header_not_the_block() {
        let dev = RamDevice::new(4 << 20);
        let mut pool = Pool::new(1, 1024);
        let mut t = BTree::new(1);
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut small, mut logged, n) = (0, 0, 3000);
        for _ in 0..n {
            let k = rng.u64(..);
            let mut tx = Tx::new(&dev);
            t.insert(&mut tx, &mut pool, k, &[0x5a; 40]).unwrap();
            let w = tx.writes();
            let bytes: usize = w.iter().map(|(_, d)| d.len()).sum();
            // The entry (50 bytes), the header's count, heap start and
            // checksum, and the slots after the new one (2 bytes each, at
            // most 78 entries of 52 bytes).
            if bytes <= 50 + 2 * 78 + 32 {
                small += 1;
            }
            logged += bytes;
            apply(&dev, &w).unwrap();
            pool.commit(&tx);
        }
        // The others split a leaf (a new block, logged whole) or compact
        // one (rewritten whole) to reclaim the holes a split leaves.
        assert!(
            small * 100 / n >= 90,
            "{small} of {n} inserts logged little"
        );
        assert!(logged / n < 400, "{} bytes per insert", logged / n);
    }

    #[test]
    fn removing_everything_merges_nodes_and_frees_them_all() {
        let dev = RamDevice::new(16 << 20);
        let mut pool = Pool::new(1, 4096);
        let mut t = BTree::new(3);
        let mut m = Model::new();
        for k in 0..20_000u64 {
            let v = value(k, (k % 61) as usize);
            in_tx(&dev, &mut pool, |tx, p| t.insert(tx, p, k * 3, &v)).unwrap();
            m.insert(k * 3, v);
        }
        let full = t.check(&Tx::new(&dev)).unwrap();
        assert!(full.depth >= 2);
        // Remove all but every 50th key: without merging, every leaf would
        // keep a few entries (hundreds of nodes); merged, 400 small entries
        // take a few leaves.
        for k in 0..20_000u64 {
            if k % 50 != 0 {
                let got = in_tx(&dev, &mut pool, |tx, _| t.remove(tx, k * 3)).unwrap();
                assert_eq!(got, m.remove(&(k * 3)));
            }
        }
        let sparse = t.check(&Tx::new(&dev)).unwrap();
        assert_eq!(sparse.entries, 400);
        assert!(
            sparse.nodes <= 12,
            "{} nodes for 400 small entries",
            sparse.nodes
        );
        assert_consistent(&t, &dev, &pool, &m);
        for k in m.keys().copied().collect::<Vec<_>>() {
            in_tx(&dev, &mut pool, |tx, _| t.remove(tx, k)).unwrap();
        }
        assert_eq!(t.root, 0);
        assert!(pool.used.is_empty());
    }

    #[test]
    fn overlapping_entries_under_a_valid_checksum_are_corrupt() {
        let dev = RamDevice::new(1 << 20);
        let mut pool = Pool::new(1, 256);
        let mut t = BTree::new(4);
        in_tx(&dev, &mut pool, |tx, p| t.insert(tx, p, 1, &[1; 8])).unwrap();
        // A root leaf whose 150 entries of up to 1 KiB start 20 bytes apart:
        // each check of a single entry passes, together they claim far more
        // than the block (a split or compaction trusting them would write
        // outside it).
        let mut n = Node::new(t.root, t.owner, 0);
        for i in 0..150 {
            let o = 1000 + 20 * i;
            n.put_u64(o, i as u64);
            n.put_u16(o + 8, MAX_VALUE.min(BLOCK - ENTRY_HEAD - o));
            n.put_u16(HEADER + 2 * i, o);
        }
        n.set_count(150);
        n.set_heap(1000);
        n.seal();
        dev.write(n.off, &n.b).unwrap();
        let r = in_tx(&dev, &mut pool, |tx, p| t.insert(tx, p, 500, &[2; 1000]));
        assert!(matches!(r, Err(MetaError::Corrupt { offset, .. }) if offset == n.off));
        assert!(matches!(
            t.get(&Tx::new(&dev), 3),
            Err(MetaError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_value_over_the_limit_is_refused() {
        let dev = RamDevice::new(1 << 20);
        let mut pool = Pool::new(1, 256);
        let mut t = BTree::new(1);
        let mut tx = Tx::new(&dev);
        assert!(matches!(
            t.insert(&mut tx, &mut pool, 1, &[0; MAX_VALUE + 1]),
            Err(MetaError::TooLarge)
        ));
        assert!(t.insert(&mut tx, &mut pool, 1, &[0; MAX_VALUE]).is_ok());
        assert!(t.insert(&mut tx, &mut pool, 2, &[]).is_ok());
        assert_eq!(t.get(&tx, 2).unwrap(), Some(vec![]));
    }

    #[test]
    fn no_space_is_reported() {
        let dev = RamDevice::new(1 << 20);
        let mut pool = Pool::new(1, 3);
        let mut t = BTree::new(1);
        let r = (0..100u64).try_for_each(|k| {
            in_tx(&dev, &mut pool, |tx, p| {
                t.insert(tx, p, k, &[1; 500]).map(drop)
            })
        });
        assert!(matches!(r, Err(MetaError::NoSpace)));
        // The split needed two blocks (a leaf and a new root); the tree is as
        // it was before the failed insert.
        let s = t.check(&Tx::new(&dev)).unwrap();
        assert_eq!((s.nodes, s.entries), (1, 7));
        assert_eq!(pool.used.len(), 1);
    }

    /// A tree of a few hundred entries of every size, depth 3 (big values
    /// keep the leaves few entries wide): its image, root and content.
    struct Built {
        image: Vec<u8>,
        tree: BTree,
        model: Model,
        pool: Pool,
    }

    fn build(keys: impl Iterator<Item = u64>, len: impl Fn(u64) -> usize) -> Built {
        let dev = RamDevice::new(8 << 20);
        let mut pool = Pool::new(1, 2048);
        let mut tree = BTree::new(9);
        let mut model = Model::new();
        let keys: Vec<u64> = keys.collect();
        for chunk in keys.chunks(50) {
            in_tx(&dev, &mut pool, |tx, p| {
                for &k in chunk {
                    let v = value(k, len(k));
                    tree.insert(tx, p, k, &v)?;
                    model.insert(k, v);
                }
                Ok(())
            })
            .unwrap();
        }
        Built {
            image: dev.image(),
            tree,
            model,
            pool,
        }
    }

    fn deep_tree() -> &'static Built {
        static B: OnceLock<Built> = OnceLock::new();
        B.get_or_init(|| {
            // Keys spread and in no order (so splits are in the middle and
            // nodes half full); values 0..=1024 bytes.
            let b = build((0..1400u64).map(|i| (i * 577 % 1400) * 1000 + i % 7), |k| {
                (k.wrapping_mul(2654435761) % (MAX_VALUE as u64 + 1)) as usize
            });
            let s = b
                .tree
                .check(&Tx::new(&RamDevice::from_image(b.image.clone())))
                .unwrap();
            assert_eq!(s.depth, 3);
            b
        })
    }

    /// Run `f` on another thread and fail if it does not finish in time
    /// (a hang must not hang the test run) or if it panics.
    pub(in crate::meta) fn within<T: Send + 'static>(
        secs: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("the operation panicked or did not finish in time")
    }

    #[derive(Clone, Debug)]
    enum Damage {
        /// Random bytes at random places; the checksum then fails.
        Bytes(Vec<(usize, u8)>),
        /// The same with the checksum recomputed (a bug that wrote a bad node
        /// validly): the structural checks must hold.
        Sealed(Vec<(usize, u8)>),
        /// A random u64 at an 8-byte aligned place (keys, pointers, owner),
        /// checksum recomputed.
        Word(usize, u64),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        // Half the places in the header and the slot or entry array, where
        // the structure is; the rest anywhere.
        let place = prop_oneof![0usize..160, 0usize..BLOCK];
        let edits = proptest::collection::vec((place, any::<u8>()), 1..8);
        prop_oneof![
            edits.clone().prop_map(Damage::Bytes),
            edits.prop_map(Damage::Sealed),
            (0usize..BLOCK / 8, any::<u64>()).prop_map(|(i, v)| Damage::Word(i * 8, v)),
        ]
    }

    fn corrupt_ok<T>(r: Result<T, MetaError>) -> bool {
        matches!(r, Ok(_) | Err(MetaError::Corrupt { .. }))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Damage one node of a valid tree: every operation returns Ok or
        /// Corrupt (never panics or hangs), and damage the checksum sees is
        /// always reported by `check`.
        #[test]
        fn a_damaged_node_gives_ok_or_corrupt_never_a_panic_or_hang(
            which in any::<prop::sample::Index>(),
            dmg in damage(),
            keys in proptest::collection::vec(0u64..1_500_000, 6),
        ) {
            let b = deep_tree();
            let stats = b.tree.check(&Tx::new(&RamDevice::from_image(b.image.clone()))).unwrap();
            let blk = stats.blocks[which.index(stats.blocks.len())];
            within(60, move || {
                let dev = RamDevice::from_image(b.image.clone());
                let off = blk * BLOCK_SIZE;
                let mut node = Node {
                    off,
                    b: vec![0; BLOCK],
                    changed: Vec::new(),
                    whole: true,
                };
                dev.read(off, &mut node.b).unwrap();
                let before = node.b.clone();
                let reseal = match &dmg {
                    Damage::Bytes(e) | Damage::Sealed(e) => {
                        for &(at, v) in e {
                            node.b[at] = v;
                        }
                        matches!(dmg, Damage::Sealed(_))
                    }
                    Damage::Word(at, v) => {
                        node.b[*at..at + 8].copy_from_slice(&v.to_le_bytes());
                        true
                    }
                };
                if reseal {
                    node.seal();
                }
                dev.write(off, &node.b).unwrap();
                let mut t = b.tree;
                let mut pool = b.pool.clone();
                let tx = Tx::new(&dev);
                let checked = t.check(&tx);
                if !reseal && node.b != before {
                    assert!(matches!(checked, Err(MetaError::Corrupt { offset, .. }) if offset == off));
                }
                assert!(corrupt_ok(checked));
                assert!(corrupt_ok(t.get(&tx, keys[0])));
                assert!(corrupt_ok(t.range(&tx, keys[1], 500)));
                assert!(corrupt_ok(t.range(&tx, 0, usize::MAX)));
                assert!(corrupt_ok(t.floor(&tx, keys[2])));
                drop(tx);
                assert!(corrupt_ok(in_tx(&dev, &mut pool, |tx, p| t.insert(tx, p, keys[3], &[7; 900]))));
                assert!(corrupt_ok(in_tx(&dev, &mut pool, |tx, p| t.insert(tx, p, keys[3] + 1, &[8; 30]))));
                assert!(corrupt_ok(in_tx(&dev, &mut pool, |tx, _| t.remove(tx, keys[4]))));
                // Remove a run of existing keys so merges and collapses run
                // over the damage too.
                for (k, _) in b.model.range(keys[5]..).take(40) {
                    assert!(corrupt_ok(in_tx(&dev, &mut pool, |tx, _| t.remove(tx, *k))));
                }
                assert!(corrupt_ok(t.check(&Tx::new(&dev))));
                assert!(corrupt_ok(in_tx(&dev, &mut pool, |tx, _| t.free_all(tx))));
            });
        }
    }

    #[test]
    fn a_node_moved_or_of_another_owner_or_level_is_corrupt() {
        let b = deep_tree();
        let dev = RamDevice::from_image(b.image.clone());
        let tx = Tx::new(&dev);
        let stats = b.tree.check(&tx).unwrap();
        // Another owner's tree over the same blocks.
        let other = BTree {
            root: b.tree.root,
            owner: 10,
        };
        assert!(matches!(other.get(&tx, 5), Err(MetaError::Corrupt { .. })));
        // A valid node copied over another (a misplaced block): its checksum
        // is seeded with its own offset.
        let (a, c) = (stats.blocks[1], stats.blocks[stats.blocks.len() - 1]);
        let mut buf = vec![0; BLOCK];
        dev.read(a * BLOCK_SIZE, &mut buf).unwrap();
        dev.write(c * BLOCK_SIZE, &buf).unwrap();
        let tx = Tx::new(&dev);
        let e = b.tree.check(&tx).unwrap_err();
        assert!(
            matches!(e, MetaError::Corrupt { offset, .. } if offset == c * BLOCK_SIZE),
            "{e}"
        );
        // The same copy resealed for its new place: now the level or the key
        // range is wrong (an internal node where a leaf belongs).
        let mut n = Node {
            off: c * BLOCK_SIZE,
            b: buf,
            changed: Vec::new(),
            whole: true,
        };
        n.seal();
        dev.write(n.off, &n.b).unwrap();
        let tx = Tx::new(&dev);
        let e = b.tree.check(&tx).unwrap_err();
        assert!(
            matches!(e, MetaError::Corrupt { offset, .. } if offset == c * BLOCK_SIZE),
            "{e}"
        );
        // A root pointer off the device.
        let lost = BTree {
            root: 1 << 40,
            owner: 9,
        };
        assert!(matches!(
            lost.range(&tx, 0, 10),
            Err(MetaError::Corrupt { .. })
        ));
    }

    /// A tree and an insert into it that splits nodes: the image before the
    /// insert, and the insert.
    struct Splitting {
        before: Built,
        key: u64,
        value: Vec<u8>,
        allocs: usize,
    }

    fn splitting(root_split: bool) -> Splitting {
        // A root leaf that splits (a new root too), or a leaf of a two-level
        // tree after its leaves have filled up with 1 KiB values.
        let mut b = if root_split {
            build(0..3u64, |_| MAX_VALUE)
        } else {
            build((0..300u64).map(|k| k * 2), |_| 200)
        };
        let dev = RamDevice::from_image(b.image.clone());
        for k in (1..600u64).step_by(2) {
            let v = value(k, MAX_VALUE);
            let mut tx = Tx::new(&dev);
            let mut tree = b.tree;
            tree.insert(&mut tx, &mut b.pool, k, &v).unwrap();
            if !tx.allocated().is_empty() {
                let allocs = tx.allocated().len();
                b.pool.abort(&tx);
                b.image = dev.image();
                return Splitting {
                    before: b,
                    key: k,
                    value: v,
                    allocs,
                };
            }
            apply(&dev, &tx.writes()).unwrap();
            b.model.insert(k, v);
            b.tree = tree;
        }
        unreachable!("no insert split a node")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A crash part way through storing a splitting insert in place (any
        /// subset of its writes, one of them torn), then replay of all of
        /// them: the tree is the model's.
        #[test]
        fn replay_after_a_crash_mid_apply_gives_the_model(
            root_split in any::<bool>(),
            mask in proptest::collection::vec(any::<bool>(), 64),
            torn in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
            partial_replay in any::<bool>(),
        ) {
            static CASES: OnceLock<[Splitting; 2]> = OnceLock::new();
            let cases = CASES.get_or_init(|| [splitting(false), splitting(true)]);
            let s = &cases[root_split as usize];
            // A leaf split allocates the right leaf; a root split also a new root.
            let min_allocs = if root_split { 2 } else { 1 };
            prop_assert!(s.allocs >= min_allocs);
            let dev = RamDevice::from_image(s.before.image.clone());
            let mut pool = s.before.pool.clone();
            let mut tree = s.before.tree;
            let mut tx = Tx::new(&dev);
            prop_assert_eq!(tree.insert(&mut tx, &mut pool, s.key, &s.value).unwrap(), None);
            let w = tx.writes();
            prop_assert!(w.len() >= 2);
            // The crash: some writes reached the device, one only partly.
            let t = torn.index(w.len());
            for (j, (off, data)) in w.iter().enumerate() {
                if j == t {
                    dev.write(*off, &data[..cut.index(data.len())]).unwrap();
                } else if mask[j % mask.len()] {
                    dev.write(*off, data).unwrap();
                }
            }
            // Replay (possibly itself interrupted once, then run again).
            if partial_replay {
                apply(&dev, &w[..w.len() / 2]).unwrap();
            }
            apply(&dev, &w).unwrap();
            pool.commit(&tx);
            let mut m = s.before.model.clone();
            m.insert(s.key, s.value.clone());
            assert_consistent(&tree, &dev, &pool, &m);
            prop_assert_eq!(all(&tree, &dev), model_vec(&m));
        }
    }
}
