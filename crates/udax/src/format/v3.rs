//! Format 3 records (issue 20: metadata used in place; the design is in
//! docs/architecture.md, "Metadata in place"). Not mounted yet: the file
//! system still runs format 2, and these codecs are the next step's parts.
//!
//! * the **inode slot**: 256 bytes, 1024 to an inode chunk of 64 blocks;
//! * the **root block**: a header line (the log epoch, written at log
//!   truncation) and a body line (the roots of the shared trees and counters,
//!   changed only by logged writes);
//! * the **physical log entries** a format-3 log record carries: byte writes,
//!   bit-range sets and clears on the free-space bitmap, and notes (the
//!   logical op, for reports of what a dropped record changed);
//! * the **values** the B+trees (`meta::btree`) hold: directory entries under
//!   their name hash, extents, inode chunks, reference counts, bad blocks;
//! * the **name hash**: SipHash-1-3 keyed per file system, 63 bits.
//!
//! Every decoder is total: any bytes give a value or a
//! [`FormatError::Corrupted`] naming the device offset, never a panic.

use super::codec::{crc, Reader, Writer};
use super::{Attr, Extent, FormatError, Op, NAME_MAX, S_IFDIR, S_IFMT, S_IFREG};
use crate::BLOCK_SIZE;
use std::hash::Hasher;

/// Bytes of one inode slot.
pub const INODE_SLOT_SIZE: usize = 256;
/// Inode slots per inode chunk.
pub const INODES_PER_CHUNK: u64 = 1024;
/// Blocks of one inode chunk.
pub const CHUNK_BLOCKS: u64 = INODES_PER_CHUNK * INODE_SLOT_SIZE as u64 / BLOCK_SIZE;
/// Extents an inode slot holds inline (more go to the file's extent tree).
pub const INLINE_EXTENTS: usize = 6;
/// Bytes of the inline area (extents, or a short symlink target).
pub const INLINE_BYTES: usize = INLINE_EXTENTS * 24;
/// Symbolic links (`st_mode`).
pub use super::S_IFLNK;

const SLOT_CRC_AT: usize = INODE_SLOT_SIZE - 4;
const INLINE_AT: usize = 104;

/// Where each region of a format-3 device lives, in device blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Geometry3 {
    pub total_blocks: u64,
    /// The root block (block 2).
    pub root_blk: u64,
    pub log_start: u64,
    pub log_blocks: u64,
    /// The free-space bitmap: bit b (of byte b / 8, bit b % 8) = device block b.
    pub bitmap_start: u64,
    pub bitmap_blocks: u64,
    /// First data block (2 MiB aligned). Everything else (inode chunks,
    /// B+tree nodes, file data) is allocated from here on.
    pub data_start: u64,
}

impl Geometry3 {
    /// The layout mkfs uses: superblocks, root block, a log of 1/256 of the
    /// device, 1 MiB..4 MiB, the bitmap, then the data area from the next
    /// 2 MiB boundary. The log is truncated in O(1) when full, so a bigger
    /// one buys nothing but a longer replay and scan at a mount after a
    /// crash (both read the log: ~10 ms per MiB replayed; images made
    /// before keep their logs of up to 256 MiB).
    pub fn for_device(total_blocks: u64) -> Result<Self, FormatError> {
        super::superblock::check_min_size(total_blocks)?;
        let log_blocks = (total_blocks / 256).clamp(256, MAX_LOG_BLOCKS);
        let bitmap_start = 3 + log_blocks;
        let bitmap_blocks = total_blocks.div_ceil(BLOCK_SIZE * 8);
        let g = Geometry3 {
            total_blocks,
            root_blk: 2,
            log_start: 3,
            log_blocks,
            bitmap_start,
            bitmap_blocks,
            data_start: (bitmap_start + bitmap_blocks).next_multiple_of(crate::BLOCKS_PER_HUGE),
        };
        g.validate()?;
        Ok(g)
    }

    /// The regions are in order, inside the device, and leave a data area.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |m: &str| Err(FormatError::BadGeometry(m.to_string()));
        if self.root_blk != 2 || self.log_start != 3 || self.log_blocks < 2 {
            return bad("root or log region");
        }
        if self.bitmap_start != self.log_start + self.log_blocks
            || self.bitmap_blocks != self.total_blocks.div_ceil(BLOCK_SIZE * 8)
        {
            return bad("bitmap region");
        }
        if !self.data_start.is_multiple_of(crate::BLOCKS_PER_HUGE)
            || self.data_start < self.bitmap_start + self.bitmap_blocks
            || self.data_start >= self.total_blocks
        {
            return bad("data area");
        }
        super::superblock::check_max_size(self.total_blocks)
    }

    /// Whether device blocks `[dev_blk, dev_blk + len)` are a non-empty
    /// run inside the data area (where every extent must lie).
    pub fn holds_data(&self, dev_blk: u64, len: u64) -> bool {
        len > 0
            && dev_blk >= self.data_start
            && dev_blk
                .checked_add(len)
                .is_some_and(|end| end <= self.total_blocks)
    }

    pub fn root_at(&self) -> u64 {
        self.root_blk * BLOCK_SIZE
    }
    /// Device offset of the root block line naming count blocks `7 line..`
    /// (`line` < [`COUNT_PTR_LINES`]).
    pub fn count_ptr_at(&self, line: usize) -> u64 {
        self.root_at() + COUNT_PTR_OFFSET + (line * ROOT_LINE) as u64
    }
    /// Device offset of size grant line `index` (< [`GRANT_LINES`]).
    pub fn grant_line_at(&self, index: usize) -> u64 {
        self.root_at() + GRANT_OFFSET + (index * ROOT_LINE) as u64
    }
    pub fn bitmap_at(&self) -> u64 {
        self.bitmap_start * BLOCK_SIZE
    }
    pub fn log_region(&self) -> super::LogRegion {
        super::LogRegion {
            offset: self.log_start * BLOCK_SIZE,
            bytes: self.log_blocks * BLOCK_SIZE,
            total_blocks: self.total_blocks,
        }
    }
}

/// The largest log mkfs makes (4 MiB).
pub const MAX_LOG_BLOCKS: u64 = 1024;

/// Format 3's version number in the superblock.
pub const FORMAT3_VERSION: u32 = 3;

/// A format-3 superblock: format 2's layout, its version 3, and the six
/// geometry words naming the bitmap where format 2 names checkpoint slots
/// (the root block is block 2 and the log starts at 3, fixed).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Superblock3 {
    pub compat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub geometry: Geometry3,
    pub mkfs_time_ns: u64,
    pub label: [u8; 32],
}

impl Superblock3 {
    pub fn encode(&self, at: u64) -> Vec<u8> {
        let g = &self.geometry;
        super::superblock::RawSuperblock {
            version: FORMAT3_VERSION,
            incompat: 0,
            compat: self.compat,
            ro_compat: self.ro_compat,
            uuid: self.uuid,
            words: [
                g.total_blocks,
                g.log_start,
                g.log_blocks,
                g.bitmap_start,
                g.bitmap_blocks,
                g.data_start,
            ],
            mkfs_time_ns: self.mkfs_time_ns,
            label: self.label,
        }
        .encode(at)
    }

    /// Decode the superblock read from device offset `at` of a device of
    /// `device_blocks`: any other version (a format-2 image) is refused.
    pub fn decode(buf: &[u8], at: u64, device_blocks: u64) -> Result<Self, FormatError> {
        let raw = super::superblock::RawSuperblock::decode(buf, at)?;
        if raw.version != FORMAT3_VERSION {
            return Err(FormatError::UnsupportedVersion(raw.version));
        }
        let [total_blocks, log_start, log_blocks, bitmap_start, bitmap_blocks, data_start] =
            raw.words;
        let geometry = Geometry3 {
            total_blocks,
            root_blk: 2,
            log_start,
            log_blocks,
            bitmap_start,
            bitmap_blocks,
            data_start,
        };
        geometry.validate()?;
        super::superblock::fits_device(total_blocks, device_blocks)?;
        Ok(Superblock3 {
            compat: raw.compat,
            ro_compat: raw.ro_compat,
            uuid: raw.uuid,
            geometry,
            mkfs_time_ns: raw.mkfs_time_ns,
            label: raw.label,
        })
    }
}

/// The superblock of a udax device of either format.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "format")]
pub enum AnySuperblock {
    /// Format 2: the whole metadata image in checkpoint slots.
    #[serde(rename = "2")]
    V2(super::Superblock),
    /// Format 3: metadata used in place.
    #[serde(rename = "3")]
    V3(Superblock3),
}

impl AnySuperblock {
    /// Decode a superblock of either format read from device offset `at`.
    pub fn decode(buf: &[u8], at: u64, device_blocks: u64) -> Result<Self, FormatError> {
        match Superblock3::decode(buf, at, device_blocks) {
            Err(FormatError::UnsupportedVersion(v)) if v == super::FORMAT_VERSION => {
                super::Superblock::decode(buf, at, device_blocks).map(AnySuperblock::V2)
            }
            r => r.map(AnySuperblock::V3),
        }
    }

    pub fn encode(&self, at: u64) -> Vec<u8> {
        match self {
            AnySuperblock::V2(s) => s.encode(at),
            AnySuperblock::V3(s) => s.encode(at),
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            AnySuperblock::V2(s) => s.version,
            AnySuperblock::V3(_) => FORMAT3_VERSION,
        }
    }

    pub fn uuid(&self) -> [u8; 16] {
        match self {
            AnySuperblock::V2(s) => s.uuid,
            AnySuperblock::V3(s) => s.uuid,
        }
    }

    fn label(&self) -> &[u8; 32] {
        match self {
            AnySuperblock::V2(s) => &s.label,
            AnySuperblock::V3(s) => &s.label,
        }
    }

    /// The label as text (up to the first NUL).
    pub fn label_str(&self) -> String {
        super::superblock::label_text(self.label())
    }

    /// UUID in the usual 8-4-4-4-12 form.
    pub fn uuid_str(&self) -> String {
        super::superblock::uuid_text(&self.uuid())
    }

    pub fn mkfs_time_ns(&self) -> u64 {
        match self {
            AnySuperblock::V2(s) => s.mkfs_time_ns,
            AnySuperblock::V3(s) => s.mkfs_time_ns,
        }
    }

    pub fn total_blocks(&self) -> u64 {
        match self {
            AnySuperblock::V2(s) => s.geometry.total_blocks,
            AnySuperblock::V3(s) => s.geometry.total_blocks,
        }
    }

    /// The first block of the data area.
    pub fn data_start(&self) -> u64 {
        match self {
            AnySuperblock::V2(s) => s.geometry.data_start,
            AnySuperblock::V3(s) => s.geometry.data_start,
        }
    }

    pub fn data_blocks(&self) -> u64 {
        self.total_blocks() - self.data_start()
    }

    /// Bytes of the metadata log.
    pub fn log_bytes(&self) -> u64 {
        match self {
            AnySuperblock::V2(s) => s.geometry.log_bytes(),
            AnySuperblock::V3(s) => s.geometry.log_region().log_bytes(),
        }
    }
}

/// Chunk and slot index of inode number `ino` (inode numbers start at 1).
pub fn inode_place(ino: u64) -> Option<(u64, u64)> {
    let i = ino.checked_sub(1)?;
    Some((i / INODES_PER_CHUNK, i % INODES_PER_CHUNK))
}

/// What an inode slot's inline area holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inline {
    /// Nothing (directories, special files, files without blocks).
    None,
    /// The first extents of a regular file (at most [`INLINE_EXTENTS`]).
    Extents(Vec<Extent>),
    /// The target of a symbolic link that fits (at most [`INLINE_BYTES`]).
    Target(Vec<u8>),
}

/// One inode as stored in its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeSlot {
    pub attr: Attr,
    /// Bumped each time the slot is reused, so a handle to an earlier inode of
    /// the same number is told apart.
    pub generation: u32,
    /// Device number of a character or block special file.
    pub rdev: u64,
    /// Root block of the extent tree (files) or the entry tree (directories);
    /// 0 = none.
    pub tree_root: u64,
    /// Entries of that tree (extents beyond the inline ones, or directory entries).
    pub tree_count: u64,
    pub inline: Inline,
}

impl InodeSlot {
    /// An inode with attributes `attr` and nothing else: no tree, nothing
    /// inline, generation and rdev 0.
    pub fn new(attr: Attr) -> InodeSlot {
        InodeSlot {
            attr,
            generation: 0,
            rdev: 0,
            tree_root: 0,
            tree_count: 0,
            inline: Inline::None,
        }
    }

    /// The slot's bytes for device offset `at`.
    pub fn encode(&self, at: u64) -> [u8; INODE_SLOT_SIZE] {
        let a = &self.attr;
        let mut w = Writer::with_capacity(INODE_SLOT_SIZE);
        w.u32(a.mode)
            .u32(a.nlink)
            .u32(a.uid)
            .u32(a.gid)
            .u32(a.flags)
            .u32(self.generation)
            .u64(a.size)
            .u64(a.atime_ns)
            .u64(a.mtime_ns)
            .u64(a.ctime_ns)
            .u64(a.btime_ns)
            .u64(a.parent)
            .u64(self.rdev)
            .u64(self.tree_root)
            .u64(self.tree_count);
        let n = match &self.inline {
            Inline::None => 0,
            Inline::Extents(e) => e.len(),
            Inline::Target(t) => t.len(),
        };
        w.u8(n as u8).pad_to(INLINE_AT);
        match &self.inline {
            Inline::None => {}
            Inline::Extents(es) => {
                for e in es {
                    w.u64(e.file_blk).u64(e.dev_blk).u64(e.len);
                }
            }
            Inline::Target(t) => {
                w.bytes(t);
            }
        }
        w.pad_to(INODE_SLOT_SIZE);
        let c = crc(at, &w.buf[..SLOT_CRC_AT]);
        w.patch_u32(SLOT_CRC_AT, c);
        let mut out = [0u8; INODE_SLOT_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Parse the slot at device offset `at`: `None` for a free slot (all zeros).
    pub fn decode(b: &[u8], at: u64) -> Result<Option<InodeSlot>, FormatError> {
        let mut r = Reader::new(b, at, "inode slot");
        if b.len() != INODE_SLOT_SIZE {
            return Err(r.corrupt("wrong size"));
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let stored = u32::from_le_bytes([
            b[SLOT_CRC_AT],
            b[SLOT_CRC_AT + 1],
            b[SLOT_CRC_AT + 2],
            b[SLOT_CRC_AT + 3],
        ]);
        if stored != crc(at, &b[..SLOT_CRC_AT]) {
            return Err(r.corrupt("checksum mismatch"));
        }
        let mode = r.u32()?;
        let attr = Attr {
            mode,
            nlink: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            flags: r.u32()?,
            ..Default::default()
        };
        let generation = r.u32()?;
        let attr = Attr {
            size: r.u64()?,
            atime_ns: r.u64()?,
            mtime_ns: r.u64()?,
            ctime_ns: r.u64()?,
            btime_ns: r.u64()?,
            parent: r.u64()?,
            ..attr
        };
        let rdev = r.u64()?;
        let tree_root = r.u64()?;
        let tree_count = r.u64()?;
        let n = usize::from(r.u8()?);
        if mode == 0 {
            return Err(r.corrupt("mode 0 in a slot in use"));
        }
        if !matches!(
            mode & S_IFMT,
            S_IFREG | S_IFDIR | S_IFLNK | 0o010000 | 0o020000 | 0o060000 | 0o140000
        ) {
            return Err(r.corrupt(format_args!("unknown file type {:o}", mode & S_IFMT)));
        }
        let pad = r.bytes(INLINE_AT - r.pos())?;
        if pad.iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        let area = r.bytes(INLINE_BYTES)?;
        // A symbolic link's target is inline when it fits; a longer one
        // lives in a data block, which the slot maps as a file's.
        let long_link = mode & S_IFMT == S_IFLNK && attr.size > INLINE_BYTES as u64;
        let inline = match mode & S_IFMT {
            _ if n == 0 => Inline::None,
            S_IFREG | S_IFLNK if n <= INLINE_EXTENTS && (mode & S_IFMT == S_IFREG || long_link) => {
                let mut e = Reader::new(area, at + INLINE_AT as u64, "inode slot extents");
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(Extent {
                        file_blk: e.u64()?,
                        dev_blk: e.u64()?,
                        len: e.u64()?,
                    });
                }
                Inline::Extents(v)
            }
            S_IFLNK if n <= INLINE_BYTES && n as u64 == attr.size => {
                Inline::Target(area[..n].to_vec())
            }
            _ => return Err(r.corrupt(format_args!("{n} inline items for mode {mode:o}"))),
        };
        let used = match &inline {
            Inline::None => 0,
            Inline::Extents(e) => e.len() * 24,
            Inline::Target(t) => t.len(),
        };
        if area[used..].iter().any(|&x| x != 0) {
            return Err(r.corrupt("inline area past its items not zero"));
        }
        Ok(Some(InodeSlot {
            attr,
            generation,
            rdev,
            tree_root,
            tree_count,
            inline,
        }))
    }
}

/// Magic of the root block's header line.
pub const ROOT_MAGIC: [u8; 8] = *b"UDAXROOT";
/// Bytes of each of the root block's two lines.
pub const ROOT_LINE: usize = 64;

/// The root block's first line: rewritten whole (one cache line) at each log
/// truncation, after a fence made every stored change durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootHeader {
    /// The epoch of the log that applies to the structures (records of an older
    /// epoch are all durable in place).
    pub epoch: u64,
}

impl RootHeader {
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        w.bytes(&ROOT_MAGIC).u64(self.epoch).pad_to(ROOT_LINE - 4);
        let c = crc(at, &w.buf);
        w.u32(c);
        line(&w.buf)
    }

    pub fn decode(b: &[u8], at: u64) -> Result<RootHeader, FormatError> {
        let mut r = Reader::new(b, at, "root block header");
        let body = checked_line(b, at, &r)?;
        if body[..8] != ROOT_MAGIC {
            return Err(r.corrupt("bad magic"));
        }
        r.bytes(8)?;
        let epoch = r.u64()?;
        if body[16..].iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        Ok(RootHeader { epoch })
    }
}

/// The root block's second line: the shared trees and counters, changed by
/// logged writes like any other metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootBody {
    /// B+tree: inode chunk number -> [`ChunkValue`].
    pub chunks: u64,
    /// B+tree: inode number -> nothing (unlinked inodes still open).
    pub orphans: u64,
    /// B+tree: device block -> [`RefcountValue`] (blocks shared by reflink).
    pub refcounts: u64,
    /// B+tree: device block -> run length (blocks with media errors).
    pub badblocks: u64,
    /// Inodes in use.
    pub inodes: u64,
    /// Inode chunks allocated.
    pub n_chunks: u64,
    /// Key of the directory name hash (from mkfs).
    pub hash_key: u64,
}

impl RootBody {
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        w.u64(self.chunks)
            .u64(self.orphans)
            .u64(self.refcounts)
            .u64(self.badblocks)
            .u64(self.inodes)
            .u64(self.n_chunks)
            .u64(self.hash_key)
            .pad_to(ROOT_LINE - 4);
        let c = crc(at, &w.buf);
        w.u32(c);
        line(&w.buf)
    }

    pub fn decode(b: &[u8], at: u64) -> Result<RootBody, FormatError> {
        let mut r = Reader::new(b, at, "root block body");
        checked_line(b, at, &r)?;
        let v = RootBody {
            chunks: r.u64()?,
            orphans: r.u64()?,
            refcounts: r.u64()?,
            badblocks: r.u64()?,
            inodes: r.u64()?,
            n_chunks: r.u64()?,
            hash_key: r.u64()?,
        };
        if b[r.pos()..ROOT_LINE - 4].iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        Ok(v)
    }
}

/// The root block's third line: counts every transaction that changes them
/// keeps exact, changed by logged writes like the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootCounts {
    /// Data-area blocks holding metadata: inode chunks and tree nodes
    /// (freed ones drop out at once, though the allocator takes them back
    /// only at the next log truncation).
    pub meta_blocks: u64,
}

impl RootCounts {
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        w.u64(self.meta_blocks).pad_to(ROOT_LINE - 4);
        let c = crc(at, &w.buf);
        w.u32(c);
        line(&w.buf)
    }

    pub fn decode(b: &[u8], at: u64) -> Result<RootCounts, FormatError> {
        let mut r = Reader::new(b, at, "root block counts");
        checked_line(b, at, &r)?;
        let v = RootCounts {
            meta_blocks: r.u64()?,
        };
        if b[r.pos()..ROOT_LINE - 4].iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        Ok(v)
    }
}

/// The inode count table (docs/format.md, "Inode counts"): the root block
/// lines from this offset name its blocks, [`COUNT_PTRS_PER_LINE`] a line.
pub const COUNT_PTR_OFFSET: u64 = 3 * ROOT_LINE as u64;
/// Root block lines naming count blocks (bytes 192..1024).
pub const COUNT_PTR_LINES: usize = 13;
/// Count block numbers in one root block line.
pub const COUNT_PTRS_PER_LINE: usize = 7;
/// Inode chunk counts (u16 each) in one 64-byte line of a count block.
pub const COUNTS_PER_LINE: u64 = 30;
/// Inode chunk counts in one count block (64 lines).
pub const COUNTS_PER_BLOCK: u64 = BLOCK_SIZE / ROOT_LINE as u64 * COUNTS_PER_LINE;
/// Count blocks the root block can name.
pub const MAX_COUNT_BLOCKS: usize = COUNT_PTR_LINES * COUNT_PTRS_PER_LINE;
/// Inode chunks a file system can have (178,913,280 inodes).
pub const MAX_CHUNKS: u64 = MAX_COUNT_BLOCKS as u64 * COUNTS_PER_BLOCK;

/// One root block line naming count blocks (0: none). A line of zeros is
/// one naming none (a file system made before the table existed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountPtrs(pub [u64; COUNT_PTRS_PER_LINE]);

impl CountPtrs {
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        for &b in &self.0 {
            w.u64(b);
        }
        w.pad_to(ROOT_LINE - 4);
        let c = crc(at, &w.buf);
        w.u32(c);
        line(&w.buf)
    }

    pub fn decode(b: &[u8], at: u64) -> Result<CountPtrs, FormatError> {
        let mut r = Reader::new(b, at, "root block count table line");
        if b.len() == ROOT_LINE && b.iter().all(|&x| x == 0) {
            return Ok(CountPtrs::default());
        }
        checked_line(b, at, &r)?;
        let mut v = CountPtrs::default();
        for p in &mut v.0 {
            *p = r.u64()?;
        }
        if b[r.pos()..ROOT_LINE - 4].iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        Ok(v)
    }
}

/// One line of a count block: the inodes in use in [`COUNTS_PER_LINE`]
/// consecutive inode chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountLine(pub [u16; COUNTS_PER_LINE as usize]);

impl CountLine {
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        for &c in &self.0 {
            w.u16(c);
        }
        let c = crc(at, &w.buf);
        w.u32(c);
        line(&w.buf)
    }

    pub fn decode(b: &[u8], at: u64) -> Result<CountLine, FormatError> {
        let mut r = Reader::new(b, at, "inode count line");
        checked_line(b, at, &r)?;
        let mut v = CountLine::default();
        for c in &mut v.0 {
            *c = r.u16()?;
            if u64::from(*c) > INODES_PER_CHUNK {
                return Err(r.corrupt(format!("{c} inodes in a chunk of {INODES_PER_CHUNK}")));
            }
        }
        Ok(v)
    }
}

/// Size grant lines: from this offset in the root block, [`GRANT_LINES`]
/// lines of [`ROOT_LINE`] bytes (docs/format.md, "Size grants").
pub const GRANT_OFFSET: u64 = 1024;
/// Size grants that may be out at once.
pub const GRANT_LINES: usize = 48;
/// Magic of a size grant line in use (its first 8 bytes, stored last).
pub const GRANT_MAGIC: [u8; 8] = *b"UDAXGRNT";
/// Offset of the size word in a grant line.
pub const GRANT_WORD: usize = 40;
/// Sizes a grant word holds: below 2^48 bytes.
pub const GRANT_MAX_SIZE: u64 = 1 << 48;

/// A size grant line (owner-written; the size word at [`GRANT_WORD`] is
/// the grantee's, outside the checksum): client of the device's owner may
/// grow inode `ino` (of `generation`) from `base` up to `limit` bytes into
/// blocks allocated for it, by storing the new size in the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantLine {
    pub ino: u64,
    pub generation: u32,
    /// Picked per grant: it seeds the size word's check bits, so a word
    /// stored by the holder of an earlier grant on the same line (a client
    /// that outlived its owner) never verifies.
    pub serial: u32,
    pub base: u64,
    pub limit: u64,
}

/// What a grant line holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantState {
    /// 64 zero bytes.
    Free,
    /// No magic but other bytes: a line whose writing a crash cut (the
    /// magic is stored last, after a fence): the grant was never handed out.
    Torn,
    /// A grant, and the size its word holds.
    Held(GrantLine, u64),
}

impl GrantLine {
    /// The line at device offset `at`, with the size word holding `base`
    /// (the caller stores the magic, its first 8 bytes, last).
    pub fn encode(&self, at: u64) -> [u8; ROOT_LINE] {
        let mut w = Writer::with_capacity(ROOT_LINE);
        w.bytes(&GRANT_MAGIC)
            .u64(self.ino)
            .u32(self.generation)
            .u32(self.serial)
            .u64(self.base)
            .u64(self.limit)
            .u64(0)
            .pad_to(ROOT_LINE - 4);
        let c = crc(at, &w.buf);
        w.u32(c);
        let mut out = line(&w.buf);
        let word = grant_word(self.base, at + GRANT_WORD as u64, self.serial);
        out[GRANT_WORD..GRANT_WORD + 8].copy_from_slice(&word.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8], at: u64) -> Result<GrantState, FormatError> {
        let r = Reader::new(b, at, "size grant line");
        if b.len() != ROOT_LINE {
            return Err(r.corrupt("wrong size"));
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(GrantState::Free);
        }
        if b[..8] == [0; 8] {
            return Ok(GrantState::Torn);
        }
        if b[..8] != GRANT_MAGIC {
            return Err(r.corrupt("bad magic"));
        }
        let mut body = [0u8; ROOT_LINE];
        body.copy_from_slice(b);
        let word = u64::from_le_bytes(body[GRANT_WORD..GRANT_WORD + 8].try_into().expect("8"));
        body[GRANT_WORD..GRANT_WORD + 8].fill(0);
        let mut r = Reader::new(&body, at, "size grant line");
        checked_line(&body, at, &r)?;
        r.bytes(8)?;
        let g = GrantLine {
            ino: r.u64()?,
            generation: r.u32()?,
            serial: r.u32()?,
            base: r.u64()?,
            limit: r.u64()?,
        };
        if body[r.pos()..ROOT_LINE - 4].iter().any(|&x| x != 0) {
            return Err(r.corrupt("reserved bytes not zero"));
        }
        if g.ino == 0 || g.base > g.limit || g.limit > GRANT_MAX_SIZE {
            return Err(r.corrupt("inode 0, or a base past the limit"));
        }
        match grant_word_size(word, at + GRANT_WORD as u64, g.serial) {
            Some(size) if (g.base..=g.limit).contains(&size) => Ok(GrantState::Held(g, size)),
            Some(_) => Err(r.corrupt("size word outside the grant")),
            None => Err(r.corrupt("size word does not verify")),
        }
    }
}

/// The size word stored at device offset `at` under a grant of `serial`:
/// `size` (below [`GRANT_MAX_SIZE`]) in the low 48 bits, 16 bits of
/// crc32c(seed = `at` ^ `serial` << 32) of it above: one 8-byte store, so a
/// crash leaves the old word or the new.
pub fn grant_word(size: u64, at: u64, serial: u32) -> u64 {
    debug_assert!(size < GRANT_MAX_SIZE);
    let check = u64::from(crc(at ^ u64::from(serial) << 32, &size.to_le_bytes()) & 0xffff);
    size | check << 48
}

/// The size a grant word at `at` of grant `serial` holds, if it verifies.
pub fn grant_word_size(word: u64, at: u64, serial: u32) -> Option<u64> {
    let size = word & (GRANT_MAX_SIZE - 1);
    (grant_word(size, at, serial) == word).then_some(size)
}

fn line(b: &[u8]) -> [u8; ROOT_LINE] {
    let mut out = [0u8; ROOT_LINE];
    out.copy_from_slice(b);
    out
}

/// The line's first 60 bytes, once its size and checksum verify.
fn checked_line<'a>(b: &'a [u8], at: u64, r: &Reader<'_>) -> Result<&'a [u8], FormatError> {
    if b.len() != ROOT_LINE {
        return Err(r.corrupt("wrong size"));
    }
    let (body, c) = b.split_at(ROOT_LINE - 4);
    if u32::from_le_bytes([c[0], c[1], c[2], c[3]]) != crc(at, body) {
        return Err(r.corrupt("checksum mismatch"));
    }
    Ok(body)
}

/// One entry of a format-3 log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhysOp {
    /// Store `bytes` at device offset `at` (within one block).
    Write { at: u64, bytes: Vec<u8> },
    /// Mark device blocks `[first, first + count)` used in the free-space bitmap.
    SetBits { first: u64, count: u64 },
    /// Mark them free.
    ClearBits { first: u64, count: u64 },
    /// What the record does, in the file system's terms (not replayed: the
    /// writes are; fsck names the changes a dropped record carried).
    Note(Op),
}

const P_WRITE: u8 = 1;
const P_SET: u8 = 2;
const P_CLEAR: u8 = 3;
const P_NOTE: u8 = 4;

impl super::Entry for PhysOp {
    fn encode(&self, w: &mut Writer) {
        match self {
            PhysOp::Write { at, bytes } => {
                debug_assert!(bytes.len() as u64 <= BLOCK_SIZE);
                w.u8(P_WRITE).u64(*at).u16(bytes.len() as u16).bytes(bytes);
            }
            PhysOp::SetBits { first, count } => {
                w.u8(P_SET).u64(*first).u64(*count);
            }
            PhysOp::ClearBits { first, count } => {
                w.u8(P_CLEAR).u64(*first).u64(*count);
            }
            PhysOp::Note(op) => {
                w.u8(P_NOTE);
                op.encode(w);
            }
        }
    }

    /// Parse one entry. Writes must lie inside one block of a device of
    /// `total_blocks`, bit ranges inside the device; the caller checks that
    /// they touch only the regions a record may change.
    fn decode(r: &mut Reader<'_>, total_blocks: u64) -> Result<PhysOp, FormatError> {
        let at_tag = r.device_offset();
        let bad = |what: String| FormatError::Corrupted {
            what: format!("log entry: {what}"),
            device_offset: at_tag,
        };
        Ok(match r.u8()? {
            P_WRITE => {
                let at = r.u64()?;
                let len = u64::from(r.u16()?);
                let end = at
                    .checked_add(len)
                    .ok_or_else(|| bad("write past u64".into()))?;
                if len == 0 || len > BLOCK_SIZE || (at / BLOCK_SIZE) != (end - 1) / BLOCK_SIZE {
                    return Err(bad(format!(
                        "write of {len} bytes at {at:#x} crosses a block"
                    )));
                }
                if end > total_blocks.saturating_mul(BLOCK_SIZE) {
                    return Err(bad(format!("write at {at:#x} past the device")));
                }
                PhysOp::Write {
                    at,
                    bytes: r.bytes(len as usize)?.to_vec(),
                }
            }
            t @ (P_SET | P_CLEAR) => {
                let first = r.u64()?;
                let count = r.u64()?;
                match first.checked_add(count) {
                    Some(e) if count > 0 && e <= total_blocks => {}
                    _ => return Err(bad(format!("bit range {first}+{count} outside the device"))),
                }
                if t == P_SET {
                    PhysOp::SetBits { first, count }
                } else {
                    PhysOp::ClearBits { first, count }
                }
            }
            P_NOTE => PhysOp::Note(Op::decode(r)?),
            t => return Err(bad(format!("unknown entry tag {t}"))),
        })
    }
}

/// The 63-bit hash of a directory entry name, keyed per file system: the
/// entry's key in its directory's tree and its readdir cookie. Never 0 or 1
/// (the cookies of `.` and `..`).
pub fn name_hash(key: u64, name: &[u8]) -> u64 {
    #[cfg(test)]
    if let Some(h) = forced_collision(name) {
        return h;
    }
    let mut h = siphasher::sip::SipHasher13::new_with_keys(key, key.rotate_left(32) ^ 0x7564_6178);
    h.write(name);
    (h.finish() >> 1).max(2)
}

/// Test builds only: names starting with [`COLLIDE_PREFIX`] all hash to one
/// value (per their byte after the prefix), so tests can make names collide.
#[cfg(test)]
pub(crate) const COLLIDE_PREFIX: &[u8] = b"collide\x01";

#[cfg(test)]
fn forced_collision(name: &[u8]) -> Option<u64> {
    let rest = name.strip_prefix(COLLIDE_PREFIX)?;
    Some(0x4000_0000_0000_0000 | u64::from(*rest.first().unwrap_or(&0)))
}

/// One directory entry in a directory tree's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry3 {
    pub ino: u64,
    pub file_type: u8,
    pub name: Vec<u8>,
}

/// A directory tree's value: the entries whose names share one hash (almost
/// always one).
pub fn encode_dir_value(entries: &[DirEntry3]) -> Vec<u8> {
    let mut w = Writer::new();
    for e in entries {
        w.u64(e.ino).u8(e.file_type).name(&e.name);
    }
    w.buf
}

/// Parse a directory tree's value (at device offset `at`, for errors).
pub fn decode_dir_value(b: &[u8], at: u64) -> Result<Vec<DirEntry3>, FormatError> {
    let mut r = Reader::new(b, at, "directory entry");
    let mut v: Vec<DirEntry3> = Vec::new();
    while r.remaining() > 0 {
        let ino = r.u64()?;
        let file_type = r.u8()?;
        let n = usize::from(r.u8()?);
        let name = r.bytes(n)?;
        if ino == 0 || n == 0 || n > NAME_MAX || name.contains(&b'/') || name.contains(&0) {
            return Err(r.corrupt("bad entry"));
        }
        if name == b"." || name == b".." {
            return Err(r.corrupt("entry named . or .."));
        }
        if v.iter().any(|e| e.name == name) {
            return Err(r.corrupt("name twice"));
        }
        v.push(DirEntry3 {
            ino,
            file_type,
            name: name.to_vec(),
        });
    }
    if v.is_empty() {
        return Err(r.corrupt("empty value"));
    }
    Ok(v)
}

/// Two `u64`s: an extent's (device block, length) under its file block, an
/// inode chunk's (block, inodes in use) under its number, a bad-block run's
/// (length, 0) under its first block.
pub fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..8].copy_from_slice(&a.to_le_bytes());
    o[8..].copy_from_slice(&b.to_le_bytes());
    o
}

/// Parse [`encode_pair`]'s bytes.
pub fn decode_pair(b: &[u8], at: u64, what: &'static str) -> Result<(u64, u64), FormatError> {
    let mut r = Reader::new(b, at, what);
    let v = (r.u64()?, r.u64()?);
    if r.remaining() != 0 {
        return Err(r.corrupt("trailing bytes"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Entry;
    use proptest::prelude::*;

    fn attr(mode: u32) -> Attr {
        Attr {
            mode,
            nlink: 1,
            uid: 1000,
            gid: 100,
            flags: 0,
            size: 12345,
            atime_ns: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            btime_ns: 4,
            parent: 1,
        }
    }

    #[test]
    fn an_inode_slot_round_trips_with_extents_and_with_a_symlink_target() {
        let at = 7 * BLOCK_SIZE + 3 * INODE_SLOT_SIZE as u64;
        let s = InodeSlot {
            attr: attr(S_IFREG | 0o644),
            generation: 9,
            rdev: 0,
            tree_root: 0,
            tree_count: 0,
            inline: Inline::Extents(
                (0..INLINE_EXTENTS as u64)
                    .map(|i| Extent {
                        file_blk: i * 10,
                        dev_blk: 1000 + i,
                        len: 1,
                    })
                    .collect(),
            ),
        };
        assert_eq!(InodeSlot::decode(&s.encode(at), at), Ok(Some(s.clone())));
        let l = InodeSlot {
            attr: Attr {
                size: INLINE_BYTES as u64,
                ..attr(S_IFLNK | 0o777)
            },
            inline: Inline::Target(vec![b'x'; INLINE_BYTES]),
            ..s.clone()
        };
        assert_eq!(InodeSlot::decode(&l.encode(at), at), Ok(Some(l.clone())));
        // A longer target lives in a data block the slot maps.
        let long = InodeSlot {
            attr: Attr {
                size: 4095,
                ..attr(S_IFLNK | 0o777)
            },
            inline: Inline::Extents(vec![Extent {
                file_blk: 0,
                dev_blk: 900,
                len: 1,
            }]),
            ..s
        };
        assert_eq!(InodeSlot::decode(&long.encode(at), at), Ok(Some(long)));
    }

    #[test]
    fn a_symlink_slot_whose_inline_length_disagrees_with_its_size_is_corrupt() {
        let at = 4096;
        let l = InodeSlot {
            attr: Attr {
                size: 10,
                ..attr(S_IFLNK | 0o777)
            },
            generation: 1,
            rdev: 0,
            tree_root: 0,
            tree_count: 0,
            inline: Inline::Target(b"short".to_vec()),
        };
        assert!(InodeSlot::decode(&l.encode(at), at).is_err());
        // Extents for a target that would fit inline: not a form udax writes.
        let e = InodeSlot {
            inline: Inline::Extents(vec![Extent {
                file_blk: 0,
                dev_blk: 9,
                len: 1,
            }]),
            ..l
        };
        assert!(InodeSlot::decode(&e.encode(at), at).is_err());
    }

    #[test]
    fn a_zeroed_slot_is_free_and_a_moved_slot_fails_its_checksum() {
        assert_eq!(InodeSlot::decode(&[0; INODE_SLOT_SIZE], 4096), Ok(None));
        let s = InodeSlot {
            attr: attr(S_IFDIR | 0o755),
            generation: 1,
            rdev: 0,
            tree_root: 77,
            tree_count: 3,
            inline: Inline::None,
        };
        let b = s.encode(4096);
        assert!(InodeSlot::decode(&b, 4096 + 256).is_err());
    }

    #[test]
    fn the_root_lines_round_trip_and_check_their_offset() {
        let h = RootHeader { epoch: 42 };
        assert_eq!(RootHeader::decode(&h.encode(8192), 8192), Ok(h));
        assert!(RootHeader::decode(&h.encode(8192), 0).is_err());
        let b = RootBody {
            chunks: 1,
            orphans: 2,
            refcounts: 3,
            badblocks: 4,
            inodes: 5,
            n_chunks: 6,
            hash_key: 7,
        };
        assert_eq!(RootBody::decode(&b.encode(8256), 8256), Ok(b));
    }

    #[test]
    fn the_format_3_layout_fits_the_smallest_and_a_large_device() {
        let g = Geometry3::for_device(1024).unwrap();
        assert_eq!((g.log_blocks, g.bitmap_blocks, g.data_start), (256, 1, 512));
        let g = Geometry3::for_device(1 << 28).unwrap();
        assert_eq!(g.log_blocks, MAX_LOG_BLOCKS);
        assert_eq!(g.bitmap_blocks, 8192);
        assert!(Geometry3::for_device(1023).is_err());
    }

    #[test]
    fn a_format_3_superblock_round_trips_and_each_format_refuses_the_others() {
        let sb = Superblock3 {
            compat: 0,
            ro_compat: 0,
            uuid: [9; 16],
            geometry: Geometry3::for_device(16384).unwrap(),
            mkfs_time_ns: 5,
            label: [b'x'; 32],
        };
        let b = sb.encode(4096);
        assert_eq!(Superblock3::decode(&b, 4096, 16384), Ok(sb.clone()));
        assert!(
            Superblock3::decode(&b, 0, 16384).is_err(),
            "seeded with its offset"
        );
        assert!(
            Superblock3::decode(&b, 4096, 16383).is_err(),
            "larger than the device"
        );
        assert_eq!(
            crate::format::Superblock::decode(&b, 4096, 16384),
            Err(FormatError::UnsupportedVersion(3))
        );
        let old = crate::format::Superblock {
            version: crate::format::FORMAT_VERSION,
            incompat: 0,
            compat: 0,
            ro_compat: 0,
            uuid: [1; 16],
            geometry: crate::format::Geometry::for_device(16384).unwrap(),
            mkfs_time_ns: 1,
            label: [0; 32],
        };
        assert_eq!(
            Superblock3::decode(&old.encode(0), 0, 16384),
            Err(FormatError::UnsupportedVersion(2))
        );
        for byte in 0..crate::format::SUPERBLOCK_SIZE {
            let mut c = b.clone();
            c[byte] ^= 0x10;
            assert!(
                Superblock3::decode(&c, 4096, 16384).is_err(),
                "flip at {byte}"
            );
        }
    }

    #[test]
    fn name_hashes_differ_by_key_and_skip_the_dot_cookies() {
        assert_ne!(name_hash(1, b"a"), name_hash(2, b"a"));
        assert_ne!(name_hash(1, b"a"), name_hash(1, b"b"));
        assert!(name_hash(1, b"a") >= 2 && name_hash(1, b"a") < 1 << 63);
    }

    #[test]
    fn a_directory_value_refuses_dot_names_and_duplicates() {
        let e = |n: &[u8]| DirEntry3 {
            ino: 5,
            file_type: 8,
            name: n.to_vec(),
        };
        let v = vec![e(b"a"), e(b"b")];
        assert_eq!(decode_dir_value(&encode_dir_value(&v), 0), Ok(v));
        assert!(decode_dir_value(&encode_dir_value(&[e(b"a"), e(b"a")]), 0).is_err());
        assert!(decode_dir_value(&encode_dir_value(&[e(b"..")]), 0).is_err());
        assert!(decode_dir_value(&[], 0).is_err());
    }

    #[test]
    fn a_write_entry_may_not_cross_a_block_or_leave_the_device() {
        let total = 100;
        let enc = |p: &PhysOp| {
            let mut w = Writer::new();
            p.encode(&mut w);
            w.buf
        };
        let ok = PhysOp::Write {
            at: 4096 * 5 + 4000,
            bytes: vec![1; 96],
        };
        let b = enc(&ok);
        assert_eq!(PhysOp::decode(&mut Reader::new(&b, 0, "t"), total), Ok(ok));
        let cross = enc(&PhysOp::Write {
            at: 4096 * 5 + 4000,
            bytes: vec![1; 97],
        });
        assert!(PhysOp::decode(&mut Reader::new(&cross, 0, "t"), total).is_err());
        let past = enc(&PhysOp::SetBits {
            first: 99,
            count: 2,
        });
        assert!(PhysOp::decode(&mut Reader::new(&past, 0, "t"), total).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..300), at in 0u64..1 << 40) {
            let _ = InodeSlot::decode(&b, at);
            let _ = RootHeader::decode(&b, at);
            let _ = RootBody::decode(&b, at);
            let _ = GrantLine::decode(&b, at);
            let _ = decode_dir_value(&b, at);
            let _ = decode_pair(&b, at, "t");
            let mut r = Reader::new(&b, at, "t");
            while r.remaining() > 0 && PhysOp::decode(&mut r, 1 << 20).is_ok() {}
        }

        #[test]
        fn a_flipped_bit_in_a_slot_never_decodes_as_another_inode(bit in 0usize..INODE_SLOT_SIZE * 8) {
            let s = InodeSlot {
                attr: attr(S_IFREG | 0o600),
                generation: 3,
                rdev: 0,
                tree_root: 0,
                tree_count: 0,
                inline: Inline::Extents(vec![Extent { file_blk: 0, dev_blk: 600, len: 4 }]),
            };
            let mut b = s.encode(4096);
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(InodeSlot::decode(&b, 4096).is_err());
        }

        #[test]
        fn a_grant_line_round_trips_and_a_flipped_bit_never_decodes_as_another_grant(
            ino in 1u64..1 << 40,
            generation in any::<u32>(),
            serial in any::<u32>(),
            base in 0u64..1 << 40,
            room in 0u64..1 << 30,
            grown in 0u64..1 << 30,
            bit in 0usize..ROOT_LINE * 8,
        ) {
            let at = 8192 + 1024;
            let line = GrantLine { ino, generation, serial, base, limit: base + room };
            let mut b = line.encode(at);
            prop_assert_eq!(GrantLine::decode(&b, at), Ok(GrantState::Held(line, base)));
            let size = base + grown.min(room);
            let w = grant_word(size, at + GRANT_WORD as u64, serial);
            b[GRANT_WORD..GRANT_WORD + 8].copy_from_slice(&w.to_le_bytes());
            prop_assert_eq!(GrantLine::decode(&b, at), Ok(GrantState::Held(line, size)));
            b[bit / 8] ^= 1 << (bit % 8);
            match GrantLine::decode(&b, at) {
                // The magic's bits: a line that lost part of its magic is
                // damage, except one that lost all of it (torn: never
                // handed out); nothing decodes as a different grant.
                Ok(GrantState::Held(l, s)) => prop_assert!(l == line && s == size, "{l:?} {s}"),
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(_) => {}
            }
        }
    }
}
