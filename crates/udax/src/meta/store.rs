//! The format-3 metadata store (issue 20): the root block, inode slots in
//! chunks, the trees (directories, extents, inode chunks, orphans) and the
//! free-space bitmap, read where they lie and changed through a
//! [`StoreTx`] whose entries the caller logs, then stores in place
//! ([`Store::store`]). The design is in docs/architecture.md, "Metadata in
//! place"; the byte maps in docs/format.md, "Format 3".
//!
//! Concurrency: a [`StoreTx`] changes an inode's slot and trees only under
//! that inode's lock (the caller's), and takes the store's `shared` lock for
//! the structures every inode shares (the root body, the chunk and orphan
//! trees, inode numbers), holding it until its entries are stored, so the
//! next transaction on them computes from the stored bytes and logs after
//! it. Bit ranges are applied under the `bitmap` lock at store time (they
//! are idempotent and commute for the disjoint ranges concurrent
//! transactions hold).
//!
//! Lock order: the caller's inode locks, then `shared`, then `chunk_map`,
//! then `bitmap`. A thread holding a [`StoreTx`] that took `shared` must not
//! call [`Store::root`], [`Store::orphans`] or [`Store::reserve_ino`] (they
//! take `shared`; parking_lot's mutex is not reentrant): reserve inode
//! numbers before the transaction, as `Fs` does today.

use super::{BTree, BlockSource, MetaError, Tx, Verified};
use crate::device::{Device, DeviceError};
use crate::format::v3::{
    decode_dir_value, decode_pair, encode_dir_value, encode_pair, inode_place, name_hash,
    CountLine, CountPtrs, DirEntry3, Geometry3, InodeSlot, PhysOp, RootBody, RootCounts,
    RootHeader, CHUNK_BLOCKS, COUNTS_PER_BLOCK, COUNTS_PER_LINE, COUNT_PTRS_PER_LINE,
    COUNT_PTR_LINES, INODES_PER_CHUNK, INODE_SLOT_SIZE, MAX_CHUNKS, ROOT_LINE,
};
use crate::format::{Extent, FormatError, Op};
use crate::sync::{Mutex, MutexGuard, RwLock};
use crate::BLOCK_SIZE;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Owner id of the inode chunk tree's nodes (an inode's own trees carry its
/// inode number).
pub(super) const OWNER_CHUNKS: u64 = u64::MAX - 1;
/// Owner id of the orphan tree's nodes.
pub(super) const OWNER_ORPHANS: u64 = u64::MAX - 2;

/// The root body's trees of device block ranges, keyed by first block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeTree {
    /// Blocks shared by reflink: value = the run's reference count.
    Refcounts,
    /// Blocks with media errors: value 0.
    Badblocks,
}

impl RangeTree {
    pub(super) fn owner(self) -> u64 {
        match self {
            RangeTree::Refcounts => u64::MAX - 3,
            RangeTree::Badblocks => u64::MAX - 4,
        }
    }

    pub(super) fn root_of(self, r: &RootBody) -> u64 {
        match self {
            RangeTree::Refcounts => r.refcounts,
            RangeTree::Badblocks => r.badblocks,
        }
    }

    fn set_root_of(self, r: &mut RootBody, root: u64) {
        match self {
            RangeTree::Refcounts => r.refcounts = root,
            RangeTree::Badblocks => r.badblocks = root,
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            RangeTree::Refcounts => "refcount tree",
            RangeTree::Badblocks => "bad-block tree",
        }
    }
}

/// Where metadata blocks come from: single blocks (tree nodes) and runs (an
/// inode chunk). The caller gives blocks back to its allocator when a
/// transaction is dropped ([`Tx::allocated`]) or, for freed metadata blocks,
/// after the next log truncation (a replay may still write them until then).
pub(crate) trait MetaAlloc: BlockSource {
    /// `n` contiguous free blocks.
    fn alloc_run(&mut self, n: u64) -> Result<u64, MetaError>;
}

impl From<FormatError> for MetaError {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Corrupted {
                what,
                device_offset,
            } => MetaError::Corrupt {
                offset: device_offset,
                what,
            },
            other => MetaError::Corrupt {
                offset: 0,
                what: other.to_string(),
            },
        }
    }
}

/// What the store knows of one inode chunk.
#[derive(Clone, Debug)]
struct Chunk {
    blk: u64,
    used: u64,
    /// Free slots (loaded from the chunk's modes on first need); slots
    /// reserved for an inode being created are not in it.
    free: Option<SlotSet>,
}

/// Slots of one inode chunk, one bit each: 128 bytes, where a B-tree set
/// of the free ones cost up to 16 KiB a chunk and an insertion a walk of
/// cold nodes (5 % of an unlink at 10^6 files).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SlotSet([u64; SLOT_WORDS]);

const SLOT_WORDS: usize = (INODES_PER_CHUNK as usize).div_ceil(64);

impl SlotSet {
    fn empty() -> SlotSet {
        SlotSet([0; SLOT_WORDS])
    }

    /// Every slot of a chunk.
    fn all() -> SlotSet {
        let mut s = SlotSet::empty();
        for slot in 0..INODES_PER_CHUNK {
            s.insert(slot);
        }
        s
    }

    fn insert(&mut self, slot: u64) {
        self.0[(slot / 64) as usize] |= 1 << (slot % 64);
    }

    /// The lowest slot, taken out.
    fn pop_first(&mut self) -> Option<u64> {
        let (w, bits) = self.0.iter_mut().enumerate().find(|(_, b)| **b != 0)?;
        let bit = u64::from(bits.trailing_zeros());
        *bits &= *bits - 1;
        Some(w as u64 * 64 + bit)
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    #[cfg(test)]
    fn contains(&self, slot: u64) -> bool {
        self.0[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }
}

/// The structures every inode shares (under `Store::shared`).
#[derive(Debug)]
struct Shared {
    root: RootBody,
    counts: RootCounts,
    /// Every chunk, once `loaded` (the chunk tree read once: 16 bytes per
    /// 1024 inodes), its count from the count table.
    chunks: BTreeMap<u64, Chunk>,
    /// The count table's blocks, in order, once `loaded` (empty: a file
    /// system made before the table, whose counts the chunk tree holds
    /// until the first change of one makes the table).
    table: Vec<u64>,
    loaded: bool,
    /// No chunk numbered below this has a free slot to reserve: the search
    /// for one starts here (lowered when a slot comes back), so a create
    /// does not walk every full chunk.
    room_from: u64,
}

#[derive(Debug, Default)]
struct ChunkMap {
    root: u64,
    /// Chunk number -> first block.
    blocks: HashMap<u64, u64>,
}

/// A format-3 metadata store over a device.
#[derive(Debug)]
pub(crate) struct Store {
    dev: Arc<dyn Device>,
    geo: Geometry3,
    shared: Mutex<Shared>,
    /// The chunk tree's root and the chunks found in it, for inode reads
    /// (read-mostly; a transaction that changes the tree holds it for
    /// writing while it stores, so no walk sees a half-stored tree).
    chunk_map: RwLock<ChunkMap>,
    /// The directory name hash key (fixed at mkfs).
    hash_key: u64,
    /// Serialises bit-range stores into the bitmap.
    bitmap: Mutex<()>,
    /// Tree nodes verified as stored (see [`Verified`]): every change goes
    /// through [`Store::store`], which forgets the blocks it writes.
    verified: Verified,
}

fn corrupt(offset: u64, what: impl Into<String>) -> MetaError {
    MetaError::Corrupt {
        offset,
        what: what.into(),
    }
}

impl Store {
    /// Write the structures of a new file system (the caller has cleared the
    /// log; it starts the log of epoch 1 after this): the root block naming
    /// epoch 1, the bitmap with the blocks before the data area in use, and
    /// inode chunk 0 holding the root directory `root` as inode 1. Made
    /// durable (fenced) before it returns.
    pub fn format(
        dev: &dyn Device,
        geo: &Geometry3,
        root: &InodeSlot,
        hash_key: u64,
    ) -> Result<(), MetaError> {
        // The bitmap: everything free but the regions before the data area.
        dev.zero(geo.bitmap_at(), geo.bitmap_blocks * BLOCK_SIZE)?;
        set_bits_in(dev, geo.bitmap_at(), 0, geo.data_start, true)?;
        // Inode chunk 0 at the start of the data area, holding the root.
        let chunk_blk = geo.data_start;
        dev.zero(chunk_blk * BLOCK_SIZE, CHUNK_BLOCKS * BLOCK_SIZE)?;
        set_bits_in(dev, geo.bitmap_at(), chunk_blk, CHUNK_BLOCKS, true)?;
        let slot_at = chunk_blk * BLOCK_SIZE;
        dev.write(slot_at, &root.encode(slot_at))?;
        // The chunk tree: one leaf in the block after the chunk.
        let mut tx = Tx::new(dev);
        let mut next = chunk_blk + CHUNK_BLOCKS;
        let mut src = Bump(&mut next);
        let mut chunks = BTree::new(OWNER_CHUNKS);
        chunks.insert(&mut tx, &mut src, 0, &encode_pair(chunk_blk, 1))?;
        // The count table: one block after the tree's node, chunk 0
        // counting the root directory.
        let table_blk = src.alloc_block()?;
        for j in 0..BLOCK_SIZE / ROOT_LINE as u64 {
            let mut l = CountLine::default();
            if j == 0 {
                l.0[0] = 1;
            }
            let lat = table_blk * BLOCK_SIZE + j * ROOT_LINE as u64;
            dev.write(lat, &l.encode(lat))?;
        }
        let node_end = next;
        set_bits_in(
            dev,
            geo.bitmap_at(),
            chunk_blk + CHUNK_BLOCKS,
            node_end - (chunk_blk + CHUNK_BLOCKS),
            true,
        )?;
        for (at, b) in tx.writes() {
            dev.write(at, &b)?;
        }
        let body = RootBody {
            chunks: chunks.root,
            inodes: 1,
            n_chunks: 1,
            hash_key,
            ..Default::default()
        };
        let at = geo.root_at();
        dev.zero(at, BLOCK_SIZE)?;
        dev.write(at, &RootHeader { epoch: 1 }.encode(at))?;
        dev.write(at + ROOT_LINE as u64, &body.encode(at + ROOT_LINE as u64))?;
        let counts = RootCounts {
            meta_blocks: node_end - chunk_blk,
        };
        let cat = at + 2 * ROOT_LINE as u64;
        dev.write(cat, &counts.encode(cat))?;
        let mut ptrs = CountPtrs::default();
        ptrs.0[0] = table_blk;
        let pat = geo.count_ptr_at(0);
        dev.write(pat, &ptrs.encode(pat))?;
        // Only what was written: the bitmap, chunk 0, the tree node and the
        // count block after it, the root block (not the whole device: mkfs
        // of a TiB device must not flush a TiB).
        dev.flush(geo.bitmap_at(), geo.bitmap_blocks * BLOCK_SIZE);
        dev.flush(chunk_blk * BLOCK_SIZE, (node_end - chunk_blk) * BLOCK_SIZE);
        dev.flush(at, BLOCK_SIZE);
        dev.fence()?;
        Ok(())
    }

    /// The store of a device whose log has been replayed.
    pub fn open(dev: Arc<dyn Device>, geo: Geometry3) -> Result<Store, MetaError> {
        let at = geo.root_at() + ROOT_LINE as u64;
        let mut b = [0u8; ROOT_LINE];
        dev.read(at, &mut b)?;
        let root = RootBody::decode(&b, at)?;
        let cat = at + ROOT_LINE as u64;
        dev.read(cat, &mut b)?;
        let counts = RootCounts::decode(&b, cat)?;
        Ok(Store {
            dev,
            geo,
            shared: Mutex::new(Shared {
                root,
                counts,
                chunks: BTreeMap::new(),
                table: Vec::new(),
                loaded: false,
                room_from: 0,
            }),
            chunk_map: RwLock::new(ChunkMap {
                root: root.chunks,
                blocks: HashMap::new(),
            }),
            hash_key: root.hash_key,
            bitmap: Mutex::new(()),
            verified: Verified::default(),
        })
    }

    /// The root block header's epoch (for recovery), or why it does not verify.
    pub fn read_epoch(dev: &dyn Device, geo: &Geometry3) -> Result<u64, FormatError> {
        let mut b = [0u8; ROOT_LINE];
        dev.read(geo.root_at(), &mut b)
            .map_err(|e| FormatError::Corrupted {
                what: format!("root block header: {e}"),
                device_offset: geo.root_at(),
            })?;
        RootHeader::decode(&b, geo.root_at()).map(|h| h.epoch)
    }

    /// Store the root block header naming `epoch` (log truncation), flushed.
    pub fn write_epoch(&self, epoch: u64) -> Result<(), DeviceError> {
        let at = self.geo.root_at();
        self.dev.write(at, &RootHeader { epoch }.encode(at))?;
        self.dev.flush(at, ROOT_LINE as u64);
        Ok(())
    }

    pub fn geometry(&self) -> &Geometry3 {
        &self.geo
    }

    pub fn device(&self) -> &dyn Device {
        &*self.dev
    }

    /// The root body as stored.
    pub fn root(&self) -> RootBody {
        self.shared.lock().root
    }

    /// Data-area blocks holding metadata (the root block's count).
    pub fn meta_blocks(&self) -> u64 {
        self.shared.lock().counts.meta_blocks
    }

    /// Device offset of inode `ino`'s slot.
    fn slot_at(&self, ino: u64) -> Result<Option<u64>, MetaError> {
        let Some((chunk, slot)) = inode_place(ino) else {
            return Ok(None);
        };
        let at = |blk: u64| Some(blk * BLOCK_SIZE + slot * INODE_SLOT_SIZE as u64);
        let blk = {
            let m = self.chunk_map.read();
            if let Some(&blk) = m.blocks.get(&chunk) {
                return Ok(at(blk));
            }
            // Walked under the read lock: a transaction changing the tree
            // stores it under the write lock.
            let tree = BTree {
                root: m.root,
                owner: OWNER_CHUNKS,
            };
            let tx = self.tx();
            let Some(v) = tree.get(&tx, chunk)? else {
                return Ok(None);
            };
            let (blk, _) = decode_pair(&v, 0, "inode chunk")?;
            self.check_chunk(blk)?;
            blk
        };
        self.chunk_map.write().blocks.insert(chunk, blk);
        Ok(at(blk))
    }

    fn check_chunk(&self, blk: u64) -> Result<(), MetaError> {
        if blk < self.geo.data_start || blk + CHUNK_BLOCKS > self.geo.total_blocks {
            return Err(corrupt(
                self.geo.root_at(),
                format!("inode chunk at block {blk} outside the data area"),
            ));
        }
        Ok(())
    }

    /// Inode `ino` as stored (`None`: no such inode).
    pub fn inode(&self, ino: u64) -> Result<Option<InodeSlot>, MetaError> {
        let Some(at) = self.slot_at(ino)? else {
            return Ok(None);
        };
        let mut b = [0u8; INODE_SLOT_SIZE];
        self.dev.read(at, &mut b)?;
        Ok(InodeSlot::decode(&b, at)?)
    }

    /// Every extent of inode `ino` (inline, then its tree), in file order.
    pub fn extents(&self, ino: u64, slot: &InodeSlot) -> Result<Vec<Extent>, MetaError> {
        use crate::format::v3::Inline;
        let mut out = match &slot.inline {
            Inline::Extents(e) => e.clone(),
            _ => Vec::new(),
        };
        if slot.tree_root != 0 {
            let tree = BTree {
                root: slot.tree_root,
                owner: ino,
            };
            let tx = self.tx();
            for (k, v) in tree.range(&tx, 0, usize::MAX)? {
                let (dev_blk, len) = decode_pair(&v, tree.root * BLOCK_SIZE, "extent")?;
                out.push(Extent {
                    file_blk: k,
                    dev_blk,
                    len,
                });
            }
        }
        Ok(out)
    }

    /// The entry `name` of the directory whose tree is `dir`.
    pub fn dir_lookup(&self, dir: BTree, name: &[u8]) -> Result<Option<DirEntry3>, MetaError> {
        let key = name_hash(self.hash_key, name);
        let tx = self.tx();
        let Some(v) = dir.get(&tx, key)? else {
            return Ok(None);
        };
        Ok(decode_dir_value(&v, dir.root * BLOCK_SIZE)?
            .into_iter()
            .find(|e| e.name == name))
    }

    /// Up to `limit` entries of directory tree `dir` from cookie `from` on,
    /// each with its cookie (the key; entries whose names collide share one
    /// and come together, so a batch may hold a few more than `limit`).
    pub fn dir_range(
        &self,
        dir: BTree,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DirEntry3)>, MetaError> {
        let tx = self.tx();
        let mut out = Vec::new();
        for (k, v) in dir.range(&tx, from, limit)? {
            for e in decode_dir_value(&v, dir.root * BLOCK_SIZE)? {
                out.push((k, e));
            }
        }
        Ok(out)
    }

    /// The inodes in the orphan tree (unlinked while open; freed at mount).
    pub fn orphans(&self) -> Result<Vec<u64>, MetaError> {
        let tree = BTree {
            root: self.shared.lock().root.orphans,
            owner: OWNER_ORPHANS,
        };
        let tx = self.tx();
        Ok(tree
            .range(&tx, 0, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every run of range tree `which`: `(first block, count, value)`.
    pub fn ranges(&self, which: RangeTree) -> Result<Vec<(u64, u64, u64)>, MetaError> {
        let tree = BTree {
            root: which.root_of(&self.shared.lock().root),
            owner: which.owner(),
        };
        let tx = self.tx();
        tree.range(&tx, 0, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                let (n, c) = decode_pair(&v, tree.root * BLOCK_SIZE, which.what())?;
                let inside = n > 0
                    && k >= self.geo.data_start
                    && k.checked_add(n).is_some_and(|e| e <= self.geo.total_blocks);
                if !inside {
                    return Err(corrupt(
                        tree.root * BLOCK_SIZE,
                        format!("{}: run {k}+{n} outside the data area", which.what()),
                    ));
                }
                Ok((k, n, c))
            })
            .collect()
    }

    /// Every inode in use, with its slot, in inode number order: one read of
    /// each inode chunk (fsck, and the owners of a bad block). Slots that do
    /// not verify are left out ([`Store::check`] reports them).
    pub fn all_inodes(&self) -> Result<Vec<(u64, InodeSlot)>, MetaError> {
        let chunks: Vec<(u64, u64)> = {
            let mut sh = self.shared.lock();
            self.load_chunks(&mut sh)?;
            sh.chunks.iter().map(|(&n, c)| (n, c.blk)).collect()
        };
        let mut out = Vec::new();
        let mut b = vec![0u8; (CHUNK_BLOCKS * BLOCK_SIZE) as usize];
        for (n, blk) in chunks {
            self.dev.read(blk * BLOCK_SIZE, &mut b)?;
            for s in 0..INODES_PER_CHUNK {
                let at = s as usize * INODE_SLOT_SIZE;
                let off = blk * BLOCK_SIZE + at as u64;
                if let Ok(Some(slot)) = InodeSlot::decode(&b[at..at + INODE_SLOT_SIZE], off) {
                    out.push((n * INODES_PER_CHUNK + s + 1, slot));
                }
            }
        }
        Ok(out)
    }

    /// The free runs `(first block, count)` of the data area, from the bitmap:
    /// one pass over it (1 bit per block), whatever the file count.
    pub fn free_runs(&self) -> Result<Vec<(u64, u64)>, MetaError> {
        let g = &self.geo;
        let mut out = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let mut b = g.data_start;
        while b < g.total_blocks {
            let byte = b / 8;
            let page = byte / BLOCK_SIZE;
            self.dev.read(g.bitmap_at() + page * BLOCK_SIZE, &mut buf)?;
            let page_end = ((page + 1) * BLOCK_SIZE * 8).min(g.total_blocks);
            while b < page_end {
                let i = ((b / 8) % BLOCK_SIZE) as usize;
                if b.is_multiple_of(64) && page_end - b >= 64 {
                    let w = u64::from_le_bytes(buf[i..i + 8].try_into().unwrap_or([0xff; 8]));
                    if w == 0 || w == u64::MAX {
                        if w == 0 {
                            run = Some(run.map_or((b, 64), |(s, n)| (s, n + 64)));
                        } else if let Some(r) = run.take() {
                            out.push(r);
                        }
                        b += 64;
                        continue;
                    }
                }
                if buf[i] & (1 << (b % 8)) == 0 {
                    run = Some(run.map_or((b, 1), |(s, n)| (s, n + 1)));
                } else if let Some(r) = run.take() {
                    out.push(r);
                }
                b += 1;
            }
        }
        out.extend(run);
        Ok(out)
    }

    /// A free inode number in a chunk with room, reserved for a create (given
    /// back by [`Store::unreserve_ino`] if the create fails). `None`: every
    /// chunk is full; the caller adds one ([`StoreTx::add_chunk`]) and asks again.
    pub fn reserve_ino(&self) -> Result<Option<u64>, MetaError> {
        let mut sh = self.shared.lock();
        self.load_chunks(&mut sh)?;
        let Shared {
            chunks, room_from, ..
        } = &mut *sh;
        for (&n, c) in chunks.range_mut(*room_from..) {
            *room_from = n;
            if c.used >= INODES_PER_CHUNK {
                continue;
            }
            if c.free.is_none() {
                // No transaction on the shared structures runs meanwhile (it
                // holds them until its stores are done): the slots in use
                // on the device are as many as the chunk's count (from the
                // count table) says. A slot in use that reads as free
                // (zeroed) would be handed out again.
                let free = self.scan_chunk(c.blk)?;
                if INODES_PER_CHUNK - free.len() != c.used {
                    return Err(corrupt(
                        c.blk * BLOCK_SIZE,
                        format!(
                            "inode chunk {n}: {} slots in use, its count says {}",
                            INODES_PER_CHUNK - free.len(),
                            c.used
                        ),
                    ));
                }
                c.free = Some(free);
            }
            if let Some(slot) = c.free.as_mut().and_then(|f| f.pop_first()) {
                return Ok(Some(n * INODES_PER_CHUNK + slot + 1));
            }
        }
        // Every chunk is full: the next one added is the first with room.
        *room_from = chunks.last_key_value().map_or(0, |(&n, _)| n + 1);
        Ok(None)
    }

    /// Give back an inode number [`Store::reserve_ino`] reserved and no
    /// committed transaction used.
    pub fn unreserve_ino(&self, ino: u64) {
        if let Some((chunk, slot)) = inode_place(ino) {
            let mut sh = self.shared.lock();
            if let Some(f) = sh.chunks.get_mut(&chunk).and_then(|c| c.free.as_mut()) {
                f.insert(slot);
            }
            sh.room_from = sh.room_from.min(chunk);
        }
    }

    fn load_chunks(&self, sh: &mut Shared) -> Result<(), MetaError> {
        if sh.loaded {
            return Ok(());
        }
        let tree = BTree {
            root: sh.root.chunks,
            owner: OWNER_CHUNKS,
        };
        let tx = self.tx();
        for (k, v) in tree.range(&tx, 0, usize::MAX)? {
            let (blk, used) = decode_pair(&v, tree.root * BLOCK_SIZE, "inode chunk")?;
            self.check_chunk(blk)?;
            sh.chunks.insert(
                k,
                Chunk {
                    blk,
                    used,
                    free: None,
                },
            );
        }
        sh.table = self.count_table()?;
        if !sh.table.is_empty() {
            let mut line: Option<(u64, CountLine)> = None;
            for (&n, c) in sh.chunks.iter_mut() {
                c.used = self.table_count(&sh.table, n, &mut line)?;
            }
        }
        sh.loaded = true;
        Ok(())
    }

    /// The count table's blocks, as the root block names them.
    pub(super) fn count_table(&self) -> Result<Vec<u64>, MetaError> {
        let mut out = Vec::new();
        let mut ended = false;
        for l in 0..COUNT_PTR_LINES {
            let at = self.geo.count_ptr_at(l);
            let mut b = [0u8; ROOT_LINE];
            self.dev.read(at, &mut b)?;
            for p in CountPtrs::decode(&b, at)?.0 {
                match (p, ended) {
                    (0, _) => ended = true,
                    (p, false) if self.geo.holds_data(p, 1) => out.push(p),
                    (p, _) => {
                        return Err(corrupt(
                            at,
                            format!("count table: block {p} out of place or out of the data area"),
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// Chunk `n`'s count in the count table `table`; `line` keeps the last
    /// line read (a walk in chunk order reads each once).
    fn table_count(
        &self,
        table: &[u64],
        n: u64,
        line: &mut Option<(u64, CountLine)>,
    ) -> Result<u64, MetaError> {
        let Some(&blk) = table.get((n / COUNTS_PER_BLOCK) as usize) else {
            return Err(corrupt(
                self.geo.root_at(),
                format!("inode chunk {n} is past the count table"),
            ));
        };
        let at = blk * BLOCK_SIZE + (n % COUNTS_PER_BLOCK) / COUNTS_PER_LINE * ROOT_LINE as u64;
        let l = match line {
            Some((a, l)) if *a == at => *l,
            _ => {
                let mut b = [0u8; ROOT_LINE];
                self.dev.read(at, &mut b)?;
                let l = CountLine::decode(&b, at)?;
                *line = Some((at, l));
                l
            }
        };
        Ok(u64::from(l.0[(n % COUNTS_PER_LINE) as usize]))
    }

    /// The free slots of the chunk at `blk`: those of 256 zero bytes, as
    /// [`InodeSlot::decode`] tells a free slot. A damaged slot is not free
    /// (whatever its mode reads): a create must not take, and overwrite, an
    /// inode that a name still refers to.
    fn scan_chunk(&self, blk: u64) -> Result<SlotSet, MetaError> {
        let mut b = vec![0u8; (CHUNK_BLOCKS * BLOCK_SIZE) as usize];
        self.dev.read(blk * BLOCK_SIZE, &mut b)?;
        let mut free = SlotSet::empty();
        for s in 0..INODES_PER_CHUNK {
            let at = (s as usize) * INODE_SLOT_SIZE;
            if b[at..at + INODE_SLOT_SIZE].iter().all(|&x| x == 0) {
                free.insert(s);
            }
        }
        Ok(free)
    }

    /// An overlay for reading (and changing) this store's trees, sharing
    /// its verified nodes.
    fn tx(&self) -> Tx<'_> {
        Tx::with_verified(&*self.dev, &self.verified)
    }

    /// A transaction over this store.
    pub fn begin(&self) -> StoreTx<'_> {
        StoreTx {
            store: self,
            tx: self.tx(),
            shared: None,
            undo: None,
            bits: Vec::new(),
            notes: Vec::new(),
            freed_slots: Vec::new(),
            new_chunks: Vec::new(),
            ordered: false,
        }
    }

    /// Store a committed transaction's entries in place (and flush them).
    /// The blocks they write are no longer known verified.
    pub fn store(&self, entries: &[PhysOp]) -> Result<(), DeviceError> {
        for e in entries {
            if let PhysOp::Write { at, bytes } = e {
                let last = (at + bytes.len().max(1) as u64 - 1) / BLOCK_SIZE;
                self.verified.forget(at / BLOCK_SIZE, last);
            }
        }
        let _b = self.bitmap.lock();
        store_entries(&*self.dev, self.geo.bitmap_at(), entries)
    }
}

/// A block source over a bump pointer (mkfs).
struct Bump<'a>(&'a mut u64);

impl BlockSource for Bump<'_> {
    fn alloc_block(&mut self) -> Result<u64, MetaError> {
        *self.0 += 1;
        Ok(*self.0 - 1)
    }
}

/// Undo state of the shared structures: restored if the transaction is
/// dropped before [`StoreTx::finish`]ed and stored.
#[derive(Debug)]
struct Undo {
    root: RootBody,
    counts: RootCounts,
    /// Each chunk's `(blk, used)` before this transaction (`None`: added by
    /// it). Free-slot sets are not part of it: a transaction never changes
    /// them (reserve, unreserve and `stored` do), and copying one per create
    /// would cost more than the create.
    chunks: Vec<(u64, Option<(u64, u64)>)>,
    /// Count table blocks before this transaction.
    table: usize,
}

/// One metadata transaction over a [`Store`].
#[derive(Debug)]
pub(crate) struct StoreTx<'s> {
    store: &'s Store,
    tx: Tx<'s>,
    shared: Option<MutexGuard<'s, Shared>>,
    undo: Option<Undo>,
    bits: Vec<PhysOp>,
    notes: Vec<PhysOp>,
    /// Inode slots freed: free for reuse once stored.
    freed_slots: Vec<(u64, u64)>,
    /// Chunks added: their blocks join the read cache once stored.
    new_chunks: Vec<(u64, u64)>,
    /// Blocks were zeroed directly (a new chunk): the caller's commit must
    /// fence them first (`ordered_data`).
    ordered: bool,
}

impl<'s> StoreTx<'s> {
    fn shared(&mut self) -> Result<&mut Shared, MetaError> {
        if self.shared.is_none() {
            let mut g = self.store.shared.lock();
            self.store.load_chunks(&mut g)?;
            self.undo = Some(Undo {
                root: g.root,
                counts: g.counts,
                chunks: Vec::new(),
                table: g.table.len(),
            });
            self.shared = Some(g);
        }
        Ok(self.shared.as_deref_mut().expect("taken above"))
    }

    /// Remember chunk `n`'s state before its first change here.
    fn touch_chunk(&mut self, n: u64) -> Result<(), MetaError> {
        let before = self.shared()?.chunks.get(&n).map(|c| (c.blk, c.used));
        let undo = self.undo.as_mut().expect("shared() set it");
        if !undo.chunks.iter().any(|(c, _)| *c == n) {
            undo.chunks.push((n, before));
        }
        Ok(())
    }

    fn set_root(&mut self, f: impl FnOnce(&mut RootBody)) -> Result<(), MetaError> {
        let sh = self.shared()?;
        f(&mut sh.root);
        let body = sh.root;
        let at = self.store.geo.root_at() + ROOT_LINE as u64;
        self.tx.write(at, &body.encode(at))
    }

    fn set_chunk_used(
        &mut self,
        n: u64,
        delta: i64,
        alloc: &mut dyn MetaAlloc,
    ) -> Result<(), MetaError> {
        self.touch_chunk(n)?;
        let sh = self.shared()?;
        let c = sh
            .chunks
            .get_mut(&n)
            .ok_or_else(|| corrupt(0, format!("inode chunk {n} unknown")))?;
        c.used = c
            .used
            .checked_add_signed(delta)
            .filter(|&u| u <= INODES_PER_CHUNK)
            .ok_or_else(|| {
                corrupt(
                    c.blk * BLOCK_SIZE,
                    format!("inode chunk {n}: count out of range"),
                )
            })?;
        self.put_count(n, alloc)
    }

    /// Store chunk `n`'s count (as [`Chunk::used`] holds it) in the count
    /// table: one 64-byte line, where the chunk tree's count cost a leaf
    /// copied and sealed per create and per unlink (16 % of the pair).
    /// Count blocks are added first where the table does not reach the
    /// last chunk (on a file system made before the table, the first change
    /// of a count makes it from the counts the chunk tree held).
    fn put_count(&mut self, n: u64, alloc: &mut dyn MetaAlloc) -> Result<(), MetaError> {
        let geo = self.store.geo;
        let last = {
            let sh = self.shared()?;
            sh.chunks.last_key_value().map_or(0, |(&k, _)| k).max(n)
        };
        if last >= MAX_CHUNKS {
            return Err(MetaError::NoSpace);
        }
        let need = (last / COUNTS_PER_BLOCK + 1) as usize;
        while self.shared()?.table.len() < need {
            let k = self.shared()?.table.len();
            let blk = self.tx.alloc_block(alloc)?;
            self.shared()?.table.push(blk);
            for j in 0..BLOCK_SIZE / ROOT_LINE as u64 {
                self.write_count_line(k, j)?;
            }
            let l = k / COUNT_PTRS_PER_LINE;
            let table = &self.shared()?.table;
            let mut ptrs = CountPtrs::default();
            for (i, p) in ptrs.0.iter_mut().enumerate() {
                *p = table.get(l * COUNT_PTRS_PER_LINE + i).copied().unwrap_or(0);
            }
            let at = geo.count_ptr_at(l);
            self.tx.write(at, &ptrs.encode(at))?;
        }
        self.write_count_line(
            (n / COUNTS_PER_BLOCK) as usize,
            n % COUNTS_PER_BLOCK / COUNTS_PER_LINE,
        )
    }

    /// Write line `j` of count block `k` from the chunks' counts.
    fn write_count_line(&mut self, k: usize, j: u64) -> Result<(), MetaError> {
        let sh = self.shared()?;
        let blk = sh.table[k];
        let first = k as u64 * COUNTS_PER_BLOCK + j * COUNTS_PER_LINE;
        let mut l = CountLine::default();
        for (&n, c) in sh.chunks.range(first..first + COUNTS_PER_LINE) {
            // A count is at most INODES_PER_CHUNK (1024): it fits.
            l.0[(n - first) as usize] = c.used as u16;
        }
        let at = blk * BLOCK_SIZE + j * ROOT_LINE as u64;
        self.tx.write(at, &l.encode(at))
    }

    /// Add an inode chunk (when [`Store::reserve_ino`] found no room): its
    /// blocks are zeroed now (so `ordered`), its slots become free once stored.
    pub fn add_chunk(&mut self, alloc: &mut dyn MetaAlloc) -> Result<(), MetaError> {
        let n = self.shared()?.root.n_chunks;
        if n >= MAX_CHUNKS {
            return Err(MetaError::NoSpace);
        }
        let blk = alloc.alloc_run(CHUNK_BLOCKS)?;
        self.store.check_chunk(blk)?;
        let dev = self.store.dev.clone();
        dev.zero(blk * BLOCK_SIZE, CHUNK_BLOCKS * BLOCK_SIZE)?;
        dev.flush(blk * BLOCK_SIZE, CHUNK_BLOCKS * BLOCK_SIZE);
        self.ordered = true;
        self.bits.push(PhysOp::SetBits {
            first: blk,
            count: CHUNK_BLOCKS,
        });
        self.touch_chunk(n)?;
        self.shared()?.chunks.insert(
            n,
            Chunk {
                blk,
                used: 0,
                free: Some(SlotSet::all()),
            },
        );
        // Its place in the chunk tree (the count there stays 0: the count
        // table holds it), then its count.
        let mut tree = BTree {
            root: self.shared()?.root.chunks,
            owner: OWNER_CHUNKS,
        };
        tree.insert(&mut self.tx, alloc, n, &encode_pair(blk, 0))?;
        if tree.root != self.shared()?.root.chunks {
            self.set_root(|r| r.chunks = tree.root)?;
        }
        self.set_chunk_used(n, 0, alloc)?;
        self.set_root(|r| r.n_chunks += 1)?;
        self.new_chunks.push((n, blk));
        Ok(())
    }

    /// Write inode `ino`'s slot. `new`: the inode is being created (its
    /// number came from [`Store::reserve_ino`]).
    pub fn put_inode(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        ino: u64,
        slot: &InodeSlot,
        new: bool,
    ) -> Result<(), MetaError> {
        let (chunk, _) = inode_place(ino).ok_or_else(|| corrupt(0, "inode number 0"))?;
        if new {
            self.set_chunk_used(chunk, 1, alloc)?;
            self.set_root(|r| r.inodes += 1)?;
        }
        let at = self.slot_at(ino)?;
        self.tx.write(at, &slot.encode(at))
    }

    fn slot_at(&mut self, ino: u64) -> Result<u64, MetaError> {
        if let Some(&(_, blk)) = self
            .new_chunks
            .iter()
            .find(|(n, _)| Some(*n) == inode_place(ino).map(|p| p.0))
        {
            let (_, slot) = inode_place(ino).expect("checked");
            return Ok(blk * BLOCK_SIZE + slot * INODE_SLOT_SIZE as u64);
        }
        self.store
            .slot_at(ino)?
            .ok_or_else(|| corrupt(0, format!("inode {ino}: no chunk holds it")))
    }

    /// Free inode `ino`: its slot zeroed, its tree (if any) freed.
    pub fn free_inode(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        ino: u64,
        tree_root: u64,
    ) -> Result<(), MetaError> {
        let (chunk, slot) = inode_place(ino).ok_or_else(|| corrupt(0, "inode number 0"))?;
        if tree_root != 0 {
            BTree {
                root: tree_root,
                owner: ino,
            }
            .free_all(&mut self.tx)?;
        }
        let at = self.slot_at(ino)?;
        self.tx.write(at, &[0u8; INODE_SLOT_SIZE])?;
        self.set_chunk_used(chunk, -1, alloc)?;
        self.set_root(|r| r.inodes = r.inodes.saturating_sub(1))?;
        self.freed_slots.push((chunk, slot));
        Ok(())
    }

    /// Add entry `e` to the directory whose tree is `dir` (the directory's
    /// slot keeps the root and the count; the caller writes it).
    pub fn dir_insert(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        dir: &mut BTree,
        e: DirEntry3,
    ) -> Result<(), MetaError> {
        let key = name_hash(self.hash_key(), &e.name);
        let at = dir.root * BLOCK_SIZE;
        let mut e = Some(e);
        dir.insert_with(&mut self.tx, alloc, key, &mut |old| {
            let mut v = match old {
                Some(b) => decode_dir_value(b, at)?,
                None => Vec::new(),
            };
            let e = e.take().expect("called once");
            if v.iter().any(|x| x.name == e.name) {
                return Err(corrupt(at, "directory entry exists"));
            }
            v.push(e);
            Ok(encode_dir_value(&v))
        })?;
        Ok(())
    }

    /// Remove entry `name`; returns it.
    pub fn dir_remove(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        dir: &mut BTree,
        name: &[u8],
    ) -> Result<Option<DirEntry3>, MetaError> {
        let key = name_hash(self.hash_key(), name);
        let Some(b) = dir.get(&self.tx, key)? else {
            return Ok(None);
        };
        let mut v = decode_dir_value(&b, dir.root * BLOCK_SIZE)?;
        let Some(i) = v.iter().position(|x| x.name == name) else {
            return Ok(None);
        };
        let e = v.remove(i);
        if v.is_empty() {
            dir.remove(&mut self.tx, key)?;
        } else {
            dir.insert(&mut self.tx, alloc, key, &encode_dir_value(&v))?;
        }
        Ok(Some(e))
    }

    fn hash_key(&self) -> u64 {
        self.store.hash_key
    }

    /// Make the extents of inode `ino` past the inline ones (kept in its
    /// tree `tree`) go from `old` to `new` (each sorted by file block, the
    /// whole list past the inline ones; the caller passes only the part that
    /// changed when it can).
    pub fn set_tree_extents(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        tree: &mut BTree,
        old: &[Extent],
        new: &[Extent],
    ) -> Result<(), MetaError> {
        let keep: BTreeSet<&Extent> = new.iter().collect();
        let had: BTreeSet<&Extent> = old.iter().collect();
        for e in old.iter().filter(|e| !keep.contains(e)) {
            if !new.iter().any(|n| n.file_blk == e.file_blk) {
                tree.remove(&mut self.tx, e.file_blk)?;
            }
        }
        for e in new.iter().filter(|e| !had.contains(e)) {
            tree.insert(
                &mut self.tx,
                alloc,
                e.file_blk,
                &encode_pair(e.dev_blk, e.len),
            )?;
        }
        Ok(())
    }

    /// Make range tree `which` go from `old` to `new` (each a whole list of
    /// `(first block, count, value)` runs, or the part of it that changed).
    pub fn set_ranges(
        &mut self,
        alloc: &mut dyn MetaAlloc,
        which: RangeTree,
        old: &[(u64, u64, u64)],
        new: &[(u64, u64, u64)],
    ) -> Result<(), MetaError> {
        let before = which.root_of(&self.shared()?.root);
        let mut tree = BTree {
            root: before,
            owner: which.owner(),
        };
        let keep: BTreeSet<&(u64, u64, u64)> = new.iter().collect();
        let had: BTreeSet<&(u64, u64, u64)> = old.iter().collect();
        let new_starts: BTreeSet<u64> = new.iter().map(|r| r.0).collect();
        for r in old.iter().filter(|r| !keep.contains(r)) {
            if !new_starts.contains(&r.0) {
                tree.remove(&mut self.tx, r.0)?;
            }
        }
        for r in new.iter().filter(|r| !had.contains(r)) {
            tree.insert(&mut self.tx, alloc, r.0, &encode_pair(r.1, r.2))?;
        }
        if tree.root != before {
            self.set_root(|r| which.set_root_of(r, tree.root))?;
        }
        Ok(())
    }

    /// Take the lock of the shared structures now (held until stored): a
    /// caller whose own state must change in the order of their stores
    /// (the reference counts, the bad-block table) takes it before that
    /// state's lock, keeping one lock order.
    pub fn lock_shared(&mut self) -> Result<(), MetaError> {
        self.shared().map(|_| ())
    }

    /// Free every node of `tree` (its root becomes 0).
    pub fn free_tree(&mut self, tree: &mut BTree) -> Result<(), MetaError> {
        tree.free_all(&mut self.tx)
    }

    /// Inode `ino` was unlinked while open: freed at the next mount if
    /// nothing frees it before.
    pub fn orphan_add(&mut self, alloc: &mut dyn MetaAlloc, ino: u64) -> Result<(), MetaError> {
        let mut tree = BTree {
            root: self.shared()?.root.orphans,
            owner: OWNER_ORPHANS,
        };
        tree.insert(&mut self.tx, alloc, ino, &[])?;
        self.set_root(|r| r.orphans = tree.root)
    }

    /// Inode `ino` left the orphan tree (freed, or linked again).
    pub fn orphan_remove(&mut self, ino: u64) -> Result<(), MetaError> {
        let mut tree = BTree {
            root: self.shared()?.root.orphans,
            owner: OWNER_ORPHANS,
        };
        if tree.remove(&mut self.tx, ino)?.is_some() {
            self.set_root(|r| r.orphans = tree.root)?;
        }
        Ok(())
    }

    /// Data blocks `[first, first + count)` become used (or free).
    pub fn bits(&mut self, first: u64, count: u64, used: bool) -> Result<(), MetaError> {
        let g = &self.store.geo;
        if first < g.data_start || first.checked_add(count).is_none_or(|e| e > g.total_blocks) {
            return Err(corrupt(
                g.bitmap_at(),
                format!("blocks {first}+{count} outside the data area"),
            ));
        }
        if count > 0 {
            self.bits.push(if used {
                PhysOp::SetBits { first, count }
            } else {
                PhysOp::ClearBits { first, count }
            });
        }
        Ok(())
    }

    /// Name what the transaction does in the log (for reports).
    pub fn note(&mut self, op: &Op) {
        self.notes.push(PhysOp::Note(op.clone()));
    }

    /// The record's entries: notes, byte writes, then bit ranges (metadata
    /// blocks this transaction took are set, those it dropped cleared), and
    /// whether the commit must fence data stores first. The transaction stays
    /// open (holding the shared lock) until [`StoreTx::stored`].
    pub fn entries(&mut self) -> Result<(Vec<PhysOp>, bool), MetaError> {
        self.seal_counts()?;
        let writes = self.tx.writes();
        let mut out = Vec::with_capacity(self.notes.len() + writes.len() + self.bits.len() + 4);
        out.extend(self.notes.iter().cloned());
        for (at, bytes) in writes {
            out.push(PhysOp::Write { at, bytes });
        }
        out.extend(self.bits.iter().cloned());
        let freed = self.tx.freed();
        for &b in self.tx.allocated().iter().filter(|b| !freed.contains(b)) {
            out.push(PhysOp::SetBits { first: b, count: 1 });
        }
        for &b in freed.iter().filter(|b| !self.tx.allocated().contains(b)) {
            out.push(PhysOp::ClearBits { first: b, count: 1 });
        }
        Ok((out, self.ordered))
    }

    /// Keep the root block's count of metadata blocks exact: what this
    /// transaction took (tree nodes, inode chunks) less what it dropped.
    /// Idempotent (computed from the count before the transaction).
    fn seal_counts(&mut self) -> Result<(), MetaError> {
        let took = self.tx.allocated().len() as u64 + self.new_chunks.len() as u64 * CHUNK_BLOCKS;
        let delta = took as i64 - self.tx.freed().len() as i64;
        if delta == 0 {
            return Ok(());
        }
        let at = self.store.geo.root_at() + 2 * ROOT_LINE as u64;
        self.shared()?;
        let before = self.undo.as_ref().expect("shared() set it").counts;
        let meta_blocks = before
            .meta_blocks
            .checked_add_signed(delta)
            .ok_or_else(|| corrupt(at, "root block counts: metadata blocks below zero"))?;
        let counts = RootCounts { meta_blocks };
        self.shared()?.counts = counts;
        self.tx.write(at, &counts.encode(at))
    }

    /// Metadata blocks this transaction dropped (give them to the allocator
    /// after the next log truncation) and took (give them back if it is
    /// abandoned).
    pub fn blocks(&self) -> (&[u64], &[u64]) {
        (self.tx.freed(), self.tx.allocated())
    }

    /// The entries were committed: store them in place, then let the next
    /// transaction on the shared structures in.
    pub fn stored(mut self, entries: &[PhysOp]) -> Result<(), DeviceError> {
        for &b in self.tx.freed() {
            self.store.verified.forget(b, b);
        }
        match self.shared.as_deref().map(|sh| sh.root.chunks) {
            // The chunk tree may change: no inode read walks it meanwhile.
            Some(root) => {
                let mut m = self.store.chunk_map.write();
                self.store.store(entries)?;
                m.root = root;
                for &(n, blk) in &self.new_chunks {
                    m.blocks.insert(n, blk);
                }
            }
            None => self.store.store(entries)?,
        }
        // The nodes this transaction sealed are stored as it built them.
        for b in self.tx.sealed() {
            self.store.verified.insert(b);
        }
        self.undo = None;
        if let Some(sh) = self.shared.as_deref_mut() {
            for &(chunk, slot) in &self.freed_slots {
                if let Some(f) = sh.chunks.get_mut(&chunk).and_then(|c| c.free.as_mut()) {
                    f.insert(slot);
                }
                // Also a chunk not scanned yet: its count now shows room.
                sh.room_from = sh.room_from.min(chunk);
            }
        }
        Ok(())
    }
}

impl Drop for StoreTx<'_> {
    fn drop(&mut self) {
        // Abandoned (never stored): the shared structures go back to what
        // they were; the overlay's writes are simply dropped.
        if let (Some(u), Some(sh)) = (self.undo.take(), self.shared.as_deref_mut()) {
            sh.root = u.root;
            sh.counts = u.counts;
            sh.table.truncate(u.table);
            for (n, c) in u.chunks {
                match c {
                    Some((blk, used)) => {
                        if let Some(now) = sh.chunks.get_mut(&n) {
                            now.blk = blk;
                            now.used = used;
                        }
                    }
                    None => {
                        sh.chunks.remove(&n);
                    }
                }
            }
        }
    }
}

/// Store a committed (or replayed) record's entries in place and flush their
/// lines, without a fence (a later commit's or the log truncation's fence
/// makes them durable). Bit ranges change the free-space bitmap at device
/// offset `bitmap_at`; the caller serialises them. Notes are skipped.
pub(crate) fn store_entries(
    dev: &dyn Device,
    bitmap_at: u64,
    entries: &[PhysOp],
) -> Result<(), DeviceError> {
    for e in entries {
        match e {
            PhysOp::Write { at, bytes } => {
                dev.write_cached(*at, bytes)?;
                dev.flush(*at, bytes.len() as u64);
            }
            PhysOp::SetBits { first, count } => set_bits_in(dev, bitmap_at, *first, *count, true)?,
            PhysOp::ClearBits { first, count } => {
                set_bits_in(dev, bitmap_at, *first, *count, false)?
            }
            PhysOp::Note(_) => {}
        }
    }
    Ok(())
}

/// Set (or clear) bits `[first, first + count)` of the bitmap at `bitmap_at`.
fn set_bits_in(
    dev: &dyn Device,
    bitmap_at: u64,
    first: u64,
    count: u64,
    on: bool,
) -> Result<(), DeviceError> {
    if count == 0 {
        return Ok(());
    }
    let end = first + count;
    let (b0, b1) = (first / 8, end.div_ceil(8));
    let mut buf = vec![0u8; (b1 - b0) as usize];
    dev.read(bitmap_at + b0, &mut buf)?;
    for bit in first..end {
        let (i, m) = ((bit / 8 - b0) as usize, 1u8 << (bit % 8));
        if on {
            buf[i] |= m;
        } else {
            buf[i] &= !m;
        }
    }
    dev.write(bitmap_at + b0, &buf)?;
    dev.flush(bitmap_at + b0, buf.len() as u64);
    Ok(())
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {

    #[test]
    fn a_chunks_free_slots_come_out_lowest_first_and_go_back_in() {
        let mut s = super::SlotSet::all();
        assert_eq!(s.len(), INODES_PER_CHUNK);
        assert_eq!((s.pop_first(), s.pop_first()), (Some(0), Some(1)));
        let mut e = super::SlotSet::empty();
        assert_eq!((e.len(), e.pop_first()), (0, None));
        for slot in [1000, 63, 64, 5] {
            e.insert(slot);
        }
        e.insert(64);
        assert_eq!(e.len(), 4);
        let order: Vec<u64> = std::iter::from_fn(|| e.pop_first()).collect();
        assert_eq!(order, [5, 63, 64, 1000]);
        s.insert(0);
        assert_eq!((s.len(), s.pop_first()), (INODES_PER_CHUNK - 1, Some(0)));
    }
    use super::super::btree::tests::within;
    use super::*;
    use crate::device::RamDevice;
    use crate::format::{Attr, S_IFDIR, S_IFREG};

    /// A metadata allocator for tests: a bump pointer over the data area past
    /// what mkfs used, and blocks given back.
    pub(crate) struct TestAlloc {
        pub next: u64,
        pub free: Vec<u64>,
        pub end: u64,
    }

    impl TestAlloc {
        pub fn new(geo: &Geometry3) -> Self {
            // mkfs used chunk 0, one tree node and the count block after it.
            TestAlloc {
                next: geo.data_start + CHUNK_BLOCKS + 2,
                free: Vec::new(),
                end: geo.total_blocks,
            }
        }
    }

    impl BlockSource for TestAlloc {
        fn alloc_block(&mut self) -> Result<u64, MetaError> {
            if let Some(b) = self.free.pop() {
                return Ok(b);
            }
            self.alloc_run(1)
        }
    }

    impl MetaAlloc for TestAlloc {
        fn alloc_run(&mut self, n: u64) -> Result<u64, MetaError> {
            if self.next + n > self.end {
                return Err(MetaError::NoSpace);
            }
            self.next += n;
            Ok(self.next - n)
        }
    }

    pub(crate) fn slot(mode: u32, parent: u64) -> InodeSlot {
        InodeSlot::new(Attr {
            mode,
            nlink: 1,
            parent,
            ..Default::default()
        })
    }

    pub(crate) fn fresh(size: u64) -> (Arc<RamDevice>, Store, TestAlloc) {
        let dev = Arc::new(RamDevice::new(size));
        let geo = Geometry3::for_device(size / BLOCK_SIZE).unwrap();
        Store::format(&*dev, &geo, &slot(S_IFDIR | 0o755, 1), 0x1234).unwrap();
        let alloc = TestAlloc::new(&geo);
        let store = Store::open(dev.clone(), geo).unwrap();
        (dev, store, alloc)
    }

    /// Run `f` in a transaction and store its entries (as a commit would).
    pub(crate) fn run<T>(
        store: &Store,
        alloc: &mut TestAlloc,
        f: impl FnOnce(&mut StoreTx<'_>, &mut TestAlloc) -> Result<T, MetaError>,
    ) -> T {
        let mut tx = store.begin();
        let out = f(&mut tx, alloc).unwrap();
        let (entries, _) = tx.entries().unwrap();
        tx.stored(&entries).unwrap();
        out
    }

    fn create(store: &Store, alloc: &mut TestAlloc) -> u64 {
        let ino = match store.reserve_ino().unwrap() {
            Some(i) => i,
            None => {
                run(store, alloc, |t, a| t.add_chunk(a));
                store.reserve_ino().unwrap().expect("a new chunk has room")
            }
        };
        run(store, alloc, |t, a| {
            t.put_inode(a, ino, &slot(S_IFREG | 0o644, 1), true)
        });
        ino
    }

    /// A slot in use whose mode bytes were zeroed (damage) is neither read
    /// nor taken as free: a new inode would overwrite the one a name still
    /// refers to. Only 256 zero bytes are a free slot.
    #[test]
    fn a_slot_in_use_with_its_mode_zeroed_is_not_a_free_slot() {
        let (dev, store, mut alloc) = fresh(16 << 20);
        let ino = create(&store, &mut alloc);
        let at = store.slot_at(ino).unwrap().unwrap();
        dev.write(at, &[0; 4]).unwrap();
        assert!(matches!(store.inode(ino), Err(MetaError::Corrupt { .. })));
        let chunk_blk = (at - (ino - 1) * INODE_SLOT_SIZE as u64) / BLOCK_SIZE;
        let free = store.scan_chunk(chunk_blk).unwrap();
        assert!(!free.contains(ino - 1), "the damaged slot is free");
        assert!(free.contains(ino), "the next slot is free");
    }

    #[test]
    fn mkfs_writes_the_root_inode_and_creates_reuse_freed_numbers_across_chunks() {
        within(60, mkfs_and_creates);
    }

    fn mkfs_and_creates() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let root = store.inode(1).unwrap().unwrap();
        assert_eq!(root.attr.mode, S_IFDIR | 0o755);
        assert_eq!(store.inode(2).unwrap(), None, "a free slot");
        let inos: Vec<u64> = (0..1500).map(|_| create(&store, &mut alloc)).collect();
        assert_eq!(inos[0], 2);
        assert_eq!(
            *inos.last().unwrap(),
            1501,
            "the second chunk took the rest"
        );
        assert_eq!(store.root().n_chunks, 2);
        assert_eq!(store.root().inodes, 1501);
        run(&store, &mut alloc, |t, a| t.free_inode(a, 700, 0));
        assert_eq!(store.inode(700).unwrap(), None);
        assert_eq!(store.root().inodes, 1500);
        assert_eq!(
            create(&store, &mut alloc),
            700,
            "the freed number is used again"
        );
        // A store opened afresh (a mount) sees the same.
        let again = Store::open(store.dev.clone(), *store.geometry()).unwrap();
        assert_eq!(again.root(), store.root());
        assert!(again.inode(1501).unwrap().is_some());
        assert_eq!(again.reserve_ino().unwrap(), Some(1502));
    }

    #[test]
    fn a_create_writes_one_line_of_the_count_table_and_no_chunk_tree_node() {
        within(60, || {
            let (dev, store, mut alloc) = fresh(16 << 20);
            let table = store.count_table().unwrap();
            assert_eq!(table.len(), 1, "mkfs makes the table");
            create(&store, &mut alloc);
            let chunk_tree = store.root().chunks;
            let ino = store.reserve_ino().unwrap().unwrap();
            let mut tx = store.begin();
            tx.put_inode(&mut alloc, ino, &slot(S_IFREG | 0o644, 1), true)
                .unwrap();
            let (entries, _) = tx.entries().unwrap();
            let written: Vec<(u64, usize)> = entries
                .iter()
                .filter_map(|e| match e {
                    PhysOp::Write { at, bytes } => Some((*at, bytes.len())),
                    _ => None,
                })
                .collect();
            assert!(
                written.iter().all(|&(at, _)| at / BLOCK_SIZE != chunk_tree),
                "the chunk tree's leaf was written: {written:?}"
            );
            let counts: Vec<_> = written
                .iter()
                .filter(|&&(at, _)| at / BLOCK_SIZE == table[0])
                .collect();
            assert_eq!(counts.len(), 1, "{written:?}");
            assert!(counts[0].1 <= ROOT_LINE, "{written:?}");
            tx.stored(&entries).unwrap();
            // Counts read back from the table, over a second chunk.
            for _ in 0..1100 {
                create(&store, &mut alloc);
            }
            run(&store, &mut alloc, |t, a| t.free_inode(a, 5, 0));
            let again = Store::open(dev.clone(), *store.geometry()).unwrap();
            let mut line = None;
            let t = again.count_table().unwrap();
            assert_eq!(again.table_count(&t, 0, &mut line).unwrap(), 1023);
            assert_eq!(again.table_count(&t, 1, &mut line).unwrap(), 1103 - 1024);
            assert_eq!(again.reserve_ino().unwrap(), Some(5));
            let problems: Vec<String> = again
                .check()
                .unwrap()
                .problems
                .into_iter()
                .filter(|p| !p.contains("link count"))
                .collect();
            assert_eq!(problems, Vec::<String>::new());
        });
    }

    /// A file system made before the count table (its root lines zero,
    /// its counts in the chunk tree) gets one at its first change of a
    /// count, made from the tree's counts.
    #[test]
    fn a_file_system_made_before_the_count_table_gets_one_at_its_first_create() {
        within(60, || {
            let (dev, store, mut alloc) = fresh(16 << 20);
            for _ in 0..1100 {
                create(&store, &mut alloc);
            }
            // Back to the older layout: the tree holds the exact counts and
            // no root line names a count block.
            let mut tx = store.begin();
            let mut tree = BTree {
                root: store.root().chunks,
                owner: OWNER_CHUNKS,
            };
            for (n, c) in [(0u64, INODES_PER_CHUNK), (1, 1101 - 1024)] {
                let blk = store.shared.lock().chunks[&n].blk;
                tree.insert(&mut tx.tx, &mut alloc, n, &encode_pair(blk, c))
                    .unwrap();
            }
            let (entries, _) = tx.entries().unwrap();
            tx.stored(&entries).unwrap();
            let (root, g) = (tree.root, *store.geometry());
            let at = g.root_at() + ROOT_LINE as u64;
            let body = RootBody {
                chunks: root,
                ..store.root()
            };
            dev.write(at, &body.encode(at)).unwrap();
            dev.zero(g.count_ptr_at(0), ROOT_LINE as u64).unwrap();
            let old = Store::open(dev.clone(), g).unwrap();
            assert!(old.count_table().unwrap().is_empty());
            let ino = create(&old, &mut alloc);
            assert_eq!(ino, 1102);
            let t = old.count_table().unwrap();
            assert_eq!(t.len(), 1, "the first create made the table");
            let mut line = None;
            assert_eq!(old.table_count(&t, 0, &mut line).unwrap(), INODES_PER_CHUNK);
            assert_eq!(old.table_count(&t, 1, &mut line).unwrap(), 1102 - 1024);
            let again = Store::open(dev.clone(), g).unwrap();
            assert_eq!(again.reserve_ino().unwrap(), Some(1103));
        });
    }

    #[test]
    fn an_abandoned_transaction_leaves_the_shared_structures_as_they_were() {
        within(60, abandoned);
    }

    fn abandoned() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let before = store.root();
        let ino = store.reserve_ino().unwrap().unwrap();
        {
            let mut tx = store.begin();
            tx.put_inode(&mut alloc, ino, &slot(S_IFREG, 1), true)
                .unwrap();
            tx.add_chunk(&mut alloc).unwrap();
        }
        store.unreserve_ino(ino);
        assert_eq!(store.root(), before);
        assert_eq!(store.inode(ino).unwrap(), None);
        assert_eq!(store.reserve_ino().unwrap(), Some(ino));
    }

    #[test]
    fn directory_entries_are_found_listed_by_cookie_and_removed() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let mut dir = BTree::new(1);
        let n = 3000u64;
        for i in 0..n {
            run(&store, &mut alloc, |t, a| {
                t.dir_insert(
                    a,
                    &mut dir,
                    DirEntry3 {
                        ino: 100 + i,
                        file_type: 8,
                        name: format!("file-{i}").into_bytes(),
                    },
                )
            });
        }
        let e = store.dir_lookup(dir, b"file-1234").unwrap().unwrap();
        assert_eq!(e.ino, 1334);
        assert_eq!(store.dir_lookup(dir, b"file-x").unwrap(), None);
        // Listing in batches from cookies gives every entry once.
        let mut seen = BTreeSet::new();
        let mut cookie = 0;
        loop {
            let batch = store.dir_range(dir, cookie, 100).unwrap();
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            for (_, e) in batch {
                assert!(seen.insert(e.ino));
            }
            cookie = last + 1;
        }
        assert_eq!(seen.len() as u64, n);
        for i in (0..n).step_by(2) {
            let name = format!("file-{i}").into_bytes();
            let got = run(&store, &mut alloc, |t, a| t.dir_remove(a, &mut dir, &name));
            assert_eq!(got.map(|e| e.ino), Some(100 + i));
        }
        assert_eq!(store.dir_lookup(dir, b"file-0").unwrap(), None);
        assert!(store.dir_lookup(dir, b"file-1").unwrap().is_some());
        let tx = Tx::new(&*store.dev);
        assert_eq!(dir.check(&tx).unwrap().entries, n / 2);
    }

    /// Nodes are checked once, not on every visit; a store that writes a
    /// node makes the next read check it again.
    #[test]
    fn a_node_changed_through_the_store_is_checked_again() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let mut dir = BTree::new(1);
        for i in 0..50u64 {
            run(&store, &mut alloc, |t, a| {
                t.dir_insert(
                    a,
                    &mut dir,
                    DirEntry3 {
                        ino: 100 + i,
                        file_type: 8,
                        name: format!("f{i}").into_bytes(),
                    },
                )
            });
        }
        assert!(store.verified.contains(dir.root), "a stored node is known");
        assert!(store.dir_lookup(dir, b"f7").unwrap().is_some());
        // A byte of the node's heap changes, its checksum does not.
        let at = dir.root * BLOCK_SIZE + BLOCK_SIZE - 3;
        let mut b = [0u8];
        store.dev.read(at, &mut b).unwrap();
        store
            .store(&[PhysOp::Write {
                at,
                bytes: vec![b[0] ^ 0xff],
            }])
            .unwrap();
        assert!(!store.verified.contains(dir.root));
        let e = store.dir_lookup(dir, b"f7").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn tree_extents_follow_a_model_through_changes() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let mut tree = BTree::new(9);
        let mut model: Vec<Extent> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let mut new = model.clone();
            match rng.u8(0..3) {
                0 | 1 => {
                    let f = rng.u64(0..500) * 10;
                    new.retain(|e| e.file_blk != f);
                    new.push(Extent {
                        file_blk: f,
                        dev_blk: rng.u64(1000..9000),
                        len: rng.u64(1..10),
                    });
                }
                _ if !new.is_empty() => {
                    new.remove(rng.usize(0..new.len()));
                }
                _ => {}
            }
            new.sort();
            run(&store, &mut alloc, |t, a| {
                t.set_tree_extents(a, &mut tree, &model, &new)
            });
            model = new;
            let s = InodeSlot {
                tree_root: tree.root,
                ..slot(S_IFREG, 1)
            };
            assert_eq!(store.extents(9, &s).unwrap(), model);
        }
    }

    #[test]
    fn orphans_are_listed_until_removed() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        for ino in [5, 9, 7] {
            run(&store, &mut alloc, |t, a| t.orphan_add(a, ino));
        }
        assert_eq!(store.orphans().unwrap(), vec![5, 7, 9]);
        run(&store, &mut alloc, |t, _| t.orphan_remove(9));
        assert_eq!(store.orphans().unwrap(), vec![5, 7]);
    }

    #[test]
    fn free_runs_read_the_bitmap_past_what_mkfs_and_transactions_use() {
        let (_dev, store, mut alloc) = fresh(16 << 20);
        let g = *store.geometry();
        let first_free = g.data_start + CHUNK_BLOCKS + 2;
        assert_eq!(
            store.free_runs().unwrap(),
            vec![(first_free, g.total_blocks - first_free)]
        );
        run(&store, &mut alloc, |t, _| {
            t.bits(first_free + 10, 100, true)
        });
        assert_eq!(
            store.free_runs().unwrap(),
            vec![
                (first_free, 10),
                (first_free + 110, g.total_blocks - first_free - 110)
            ]
        );
        run(&store, &mut alloc, |t, _| {
            t.bits(first_free + 10, 50, false)
        });
        assert_eq!(
            store.free_runs().unwrap(),
            vec![
                (first_free, 60),
                (first_free + 110, g.total_blocks - first_free - 110)
            ]
        );
    }
}
