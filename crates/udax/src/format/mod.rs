//! The on-device format: every byte udax writes, and its parsers.
//!
//! All integers are little-endian and parsed from byte slices with
//! `from_le_bytes` (never by casting structs). Every metadata record carries a
//! crc32c seeded with its own device offset, so a record written to the wrong
//! place is caught as surely as a flipped bit. The byte map is in `docs/format.md`.
//!
//! ```text
//! block 0            superblock (primary, bytes 0..512)
//! block 1            superblock (backup)
//! journal_start..    journal region (owned by `journal`: anchors + redo log)
//! itable_start..     inode table: inode_count slots of 256 bytes; ino = slot index,
//!                    ino 0 unused, ino 1 = root directory
//! data_start..       data area (2 MiB aligned): file data, extent blocks, dir blocks
//! ```
//!
//! Free space is not stored: it is everything in the data area that no inode's
//! extent map, extent-block chain or directory-block chain references. Mount and
//! fsck derive it by scanning the inode table (as NOVA does), so a block can never
//! be "both free and used" on the device; fsck checks that no block has two owners.
//!
//! The types below are the contract between `fs`, `journal` users and `fsck`.

use crate::BLOCK_SIZE;

/// `b"UDAXFS01"`
pub const SB_MAGIC: [u8; 8] = *b"UDAXFS01";
/// Format version written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a superblock record (the rest of block 0 is zero).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Bytes of one inode slot.
pub const INODE_SIZE: usize = 256;
/// Inline extent slots in an inode.
pub const INLINE_EXTENTS: usize = 4;
/// Bytes of one extent record.
pub const EXTENT_SIZE: usize = 32;
/// Bytes of the header of an extent block or directory block.
pub const EXT_BLOCK_HEADER: usize = 32;
/// Extent slots in one extent block.
pub const EXTENTS_PER_BLOCK: usize = (BLOCK_SIZE as usize - EXT_BLOCK_HEADER) / EXTENT_SIZE;
/// Directory blocks are cut into 64-byte units; unit 0 holds the header.
pub const DIR_UNIT: usize = 64;
/// Units per directory block.
pub const DIR_UNITS: usize = BLOCK_SIZE as usize / DIR_UNIT;
/// Fixed part of a directory entry before the name.
pub const DIRENT_HEADER: usize = 16;
/// Longest file name in bytes.
pub const NAME_MAX: usize = 255;
/// Root directory inode number.
pub const ROOT_INO: u64 = 1;
/// Largest file size (bytes).
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// File type bits of `mode` (as in `st_mode`).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;

/// Errors from parsing on-device structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{what} corrupted at device offset {device_offset:#x}")]
    Corrupted { what: String, device_offset: u64 },
    #[error("not a udax file system (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    #[error("unsupported feature flags {0:#x}")]
    UnsupportedFeatures(u32),
    #[error("device too small: {size} bytes, need at least {min}")]
    TooSmall { size: u64, min: u64 },
    #[error("invalid geometry: {0}")]
    BadGeometry(String),
}

/// The superblock: static geometry written once by mkfs. Nothing in it changes
/// at run time (all mutable state lives in the journal anchors and inodes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Superblock {
    pub version: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    /// Device blocks covered by the file system.
    pub total_blocks: u64,
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub itable_start: u64,
    pub itable_blocks: u64,
    pub inode_count: u64,
    /// First block of the data area; a multiple of 512 (2 MiB aligned).
    pub data_start: u64,
    pub root_ino: u64,
    pub mkfs_time_ns: u64,
    pub label: [u8; 32],
}

/// One extent: `len` blocks of file starting at file block `file_blk` live at
/// device block `dev_blk`. `len == 0` marks an empty slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ExtentRec {
    pub file_blk: u64,
    pub dev_blk: u64,
    pub len: u32,
    pub flags: u32,
}

/// An inode slot. `mode == 0` marks a free slot; `nlink == 0` with a non-zero
/// mode is an orphan (unlinked while open), reclaimed at the next mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Inode {
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    /// Bumped each time the slot is reused.
    pub generation: u32,
    pub size: u64,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub btime_ns: u64,
    /// First block of this inode's extent-block chain (0 = none).
    pub ext_head: u64,
    /// First block of this directory's dirent-block chain (0 = none).
    pub dir_head: u64,
    /// Parent directory (directories only; the root is its own parent).
    pub parent: u64,
    pub inline_extents: [ExtentRec; INLINE_EXTENTS],
}

/// Which chain a metadata block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BlockKind {
    Extent,
    Dir,
}

/// Header of an extent block or a directory block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockHeader {
    pub kind: BlockKind,
    /// Inode that owns the block.
    pub owner: u64,
    /// Next block in the owner's chain (0 = end).
    pub next: u64,
}

/// A directory entry (`.` and `..` are implicit, never stored).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Dirent {
    pub ino: u64,
    /// `DT_REG` (8) or `DT_DIR` (4).
    pub file_type: u8,
    pub name: Vec<u8>,
}
