//! The on-device format: every byte udax writes, and its parsers.
//!
//! All integers are little-endian and parsed from byte slices through
//! [`codec::Reader`] (never by casting structs). Every metadata record carries a
//! crc32c seeded with its own device offset (and epoch), so a record written to the
//! wrong place, or left over from an older checkpoint, is caught as surely as a
//! flipped bit. The byte map is in `docs/format.md`.
//!
//! ```text
//! block 0              superblock (primary; static, written once by mkfs)
//! block 1              superblock (backup)
//! log_start..          metadata redo log (records of logical operations)
//! cp_start..           checkpoint slot 0   } the whole metadata image, written
//! cp_start+cp_blocks.. checkpoint slot 1   } alternately (slot = epoch % 2)
//! data_start..         data area, 2 MiB aligned: file data only
//! ```
//!
//! The metadata (inode table, extent maps, directories) is a checkpoint image plus
//! the log of operations applied since; mount loads the newest valid checkpoint
//! and replays the log. Free space is not stored: it is every data-area block that
//! no extent references, derived at mount.

pub mod codec;
mod image;
mod ops;
pub(crate) mod superblock;
// Format 3 (issue 20), wired in by the next step: used by its own tests only.
#[allow(dead_code)]
pub(crate) mod v3;

pub use image::{
    decode_checkpoint_header, encode_badblocks_record, encode_checkpoint_header,
    encode_inode_record, encode_refcount_record, inode_record_bytes, parse_record, Attr,
    CheckpointHeader, DirentImage, Extent, InodeImage, Record, BADBLOCK_RANGE_BYTES,
    CKPT_HEADER_SIZE, DIRENT_RECORD_BYTES, EXTENT_RECORD_BYTES, RANGES_RECORD_BYTES,
    REFCOUNT_RANGE_BYTES,
};
pub use ops::{
    decode_log_header, decode_log_tail, encode_log_record, encode_log_record_into, encode_log_tail,
    symlink_reserve_ops, Entry, LogHeader, LogTail, Op, LOG_HEADER_SIZE, LOG_MAGIC, LOG_TAIL_SIZE,
    MAX_OP_BYTES,
};
pub use superblock::{Geometry, LogRegion, Superblock};

/// `b"UDAXFS01"`
pub const SB_MAGIC: [u8; 8] = *b"UDAXFS01";
/// Format version written by this code.
/// Version 2: log records carry (and checksum) how many records before them
/// were not yet durable, and each checkpoint is followed by an empty record
/// of its epoch (see docs/format.md, "Telling a torn tail from damage").
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of a superblock record (the rest of its block is zero).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Longest file name in bytes.
pub const NAME_MAX: usize = 255;
/// Longest path the file system resolves (bytes). The kernel limits what
/// one call passes to PATH_MAX (the shim checks that of the caller's own
/// string); a path relative to a deep directory is longer once joined to
/// it, and it resolves as long as the whole fits here.
pub const MAX_PATH: usize = 4 * 4096 - 1;
/// Root directory inode number.
pub const ROOT_INO: u64 = 1;
/// Largest file size (bytes): 2^50, so every block number fits comfortably in u64.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// File type bits of `mode` (as in `st_mode`).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFSOCK: u32 = 0o140000;
/// Directory entry types (as `d_type`).
pub const DT_DIR: u8 = 4;
pub const DT_LNK: u8 = 10;
/// Longest target of a symbolic link in bytes (PATH_MAX less its NUL).
pub const SYMLINK_MAX: usize = 4095;

/// The directory entry type (`d_type`) of an inode of `mode`.
pub fn dtype_of(mode: u32) -> u8 {
    // As the kernel's fs_umode_to_dtype: the file type bits shifted down.
    ((mode & S_IFMT) >> 12) as u8
}

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
