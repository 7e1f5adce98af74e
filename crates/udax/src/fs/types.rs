//! Public value types of the file-system API.

use crate::format::{S_IFDIR, S_IFMT, S_IFREG};

/// What `stat` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Stat {
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated 512-byte units, as `st_blocks`.
    pub blocks: u64,
    pub blksize: u32,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub btime_ns: u64,
    /// A character or block special file's device number (`st_rdev`).
    pub rdev: u64,
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == crate::format::S_IFLNK
    }
    pub fn is_fifo(&self) -> bool {
        self.mode & S_IFMT == crate::format::S_IFIFO
    }
}

/// One entry of [`crate::fs::Fs::read_dir`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    /// `d_type`: `DT_DIR` (4), `DT_REG` (8), `DT_LNK` (10)...
    pub file_type: u8,
}

/// File-system totals, as `statfs`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StatFs {
    pub block_size: u64,
    pub total_blocks: u64,
    pub data_blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    /// Metadata bytes in use. Format 2: the checkpoint image, bounded by
    /// `metadata_capacity` (a checkpoint slot). Format 3: the data-area
    /// blocks holding inode chunks and tree nodes (so `free_blocks +
    /// metadata_bytes / block_size` moves only with file data), and
    /// `metadata_capacity` is 0: no fixed bound, metadata grows into the
    /// data area.
    pub metadata_bytes: u64,
    pub metadata_capacity: u64,
}

/// How to open a file (a subset of `open(2)` flags).
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub create: bool,
    pub create_new: bool,
    pub truncate: bool,
    /// Permission bits for a created file.
    pub mode: u32,
    /// `O_NOFOLLOW`: a symbolic link at the end of the path fails with
    /// [`Error::Loop`](crate::fs::Error::Loop) instead of being followed.
    pub nofollow: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            read: true,
            write: false,
            append: false,
            create: false,
            create_new: false,
            truncate: false,
            mode: 0o644,
            nofollow: false,
        }
    }
}

impl OpenOptions {
    pub fn read_only() -> Self {
        Self::default()
    }
    pub fn read_write() -> Self {
        Self {
            write: true,
            ..Self::default()
        }
    }
    /// Read-write, created if missing.
    pub fn create() -> Self {
        Self {
            write: true,
            create: true,
            ..Self::default()
        }
    }
}

/// `fallocate` mode bits (the Linux values).
pub mod falloc {
    pub const KEEP_SIZE: u32 = 0x01;
    pub const PUNCH_HOLE: u32 = 0x02;
    pub const COLLAPSE_RANGE: u32 = 0x08;
    pub const ZERO_RANGE: u32 = 0x10;
    pub const INSERT_RANGE: u32 = 0x20;
    /// Give the file its own copy of every shared (reflinked) block in the
    /// range, and allocate its holes (XFS semantics).
    pub const UNSHARE_RANGE: u32 = 0x40;
}

/// Options for [`crate::fs::Fs::mkfs`].
#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    /// Up to 32 bytes.
    pub label: String,
    /// The on-device format: 3 (metadata used in place; also what 0, the
    /// default, means) or 2 (the whole metadata image in checkpoint slots,
    /// loaded at mount; kept mountable while format 3 takes over).
    pub format: u32,
}

/// Options for [`crate::fs::Fs::mount_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Write nothing to the device: no log replay is made durable, no orphan
    /// is reclaimed, no superblock copy rewritten; every change fails with
    /// EROFS (`Error::ReadOnly`). Like `mount -o ro,norecovery` of ext4/xfs.
    pub read_only: bool,
    /// Mount damaged metadata as far as it can be read, instead of failing:
    /// a damaged checkpoint header is rebuilt from its body (or the older
    /// checkpoint taken), the log is cut before a damaged record. What was
    /// worked around is in [`crate::fs::Fs::salvaged`]. With `read_only`, for
    /// salvage; without it, the repair of `udax fsck --repair` (the result is
    /// written as a new checkpoint at once).
    pub salvage: bool,
}
