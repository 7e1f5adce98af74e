//! What the fault engine asks the file system, in the spirit of the kernel's
//! `iomap_ops` (`dax_iomap_fault(vmf, ..., ops)`): dax owns this interface,
//! the file system implements it, and dax never names the file system.
//!
//! Only plain values cross it (extents as a device block and a length, holes
//! as a length, sizes, device block ranges) and errors are typed, so that an
//! owner process could later answer the same questions over IPC. The per-file
//! mapping state (entries, regions, the invalidate lock: [`DaxFile`]) and the
//! per-device state (wait table, page references, counters: [`DaxDevice`])
//! belong to dax; the file system only holds them.

use super::{DaxDevice, DaxFile};
use std::ops::Range;

/// What a file block maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Mapped to `dev_blk`, and the next `len` file blocks are contiguous on the device.
    Mapped { dev_blk: u64, len: u64 },
    /// A hole of `len` blocks (`u64::MAX` when nothing is mapped after it).
    Hole { len: u64 },
}

/// Why the file system could not change a file's blocks for a fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IomapError {
    /// No free blocks (`ENOSPC`).
    #[error("no space left on device")]
    NoSpace,
    /// The file was deleted meanwhile (`ENOENT`).
    #[error("the file was deleted")]
    Stale,
    /// The file system takes no changes (`EROFS`).
    #[error("read-only file system")]
    ReadOnly,
    /// The file is being changed by someone who waits for this process's
    /// locks (a client's fault while the owner recalls its lease): drop the
    /// locks and fault again (the kernel's `VM_FAULT_RETRY`).
    #[error("the file is being changed; fault again")]
    Retry,
    /// Anything else: the errno the file system reports and its description.
    #[error("{what}")]
    Failed { errno: i32, what: String },
}

/// One file, as the fault engine sees it. Calls may take the file system's
/// locks: the caller holds no region state lock (entry locks and the
/// invalidate lock come first in the lock order, docs/architecture.md).
pub(crate) trait DaxInode: Send + Sync + std::fmt::Debug {
    /// The inode number (for messages).
    fn ino(&self) -> u64;
    /// The file's mapping state, which dax owns and the file system holds.
    fn dax(&self) -> &DaxFile;
    /// The mapping state of the device the file lives on.
    fn device(&self) -> &DaxDevice;
    /// Before a fault takes any lock: make the answers below available (a
    /// client fetches its lease on the file's layout from the owner here).
    /// With `block` false the caller must not sleep: `false` defers the
    /// fault to a thread that may.
    fn prepare(&self, block: bool) -> bool {
        let _ = block;
        true
    }
    /// Under the invalidate lock, at the start of a fault: can the answers
    /// below be given? [`IomapError::Retry`]: fault again (a client's lease
    /// was recalled since [`DaxInode::prepare`]); any other error fails the
    /// fault (SIGBUS).
    fn ready(&self) -> Result<(), IomapError> {
        Ok(())
    }
    /// The file's size in bytes; 0 once the file is deleted.
    fn size(&self) -> u64;
    /// The extent at file block `blk`, or the hole there.
    fn lookup(&self, blk: u64) -> Lookup;
    /// Give the holes of file blocks `[a, b)` zeroed blocks; durable on return
    /// (a write fault: `MAP_SYNC`). The 2 MiB policy follows from the range.
    fn alloc_zeroed(&self, a: u64, b: u64) -> Result<(), IomapError>;
    /// Copy the blocks of file blocks `[a, b)` that other files share to
    /// blocks of the file's own (copy on write). The caller holds the
    /// invalidate lock exclusively and has unmapped the range.
    fn unshare(&self, a: u64, b: u64) -> Result<(), IomapError>;
    /// Move the 2 MiB chunk at file block `chunk` to one aligned 2 MiB
    /// extent (hugetlbfs devices map nothing smaller). The caller holds the
    /// invalidate lock exclusively and has unmapped the chunk.
    fn relocate_chunk(&self, chunk: u64) -> Result<(), IomapError>;
    /// The first device block of `[blk, blk+len)` with a media error.
    fn first_bad(&self, blk: u64, len: u64) -> Option<u64>;
    /// Does any device block of `[blk, blk+len)` have a media error?
    fn is_bad(&self, blk: u64, len: u64) -> bool {
        self.first_bad(blk, len).is_some()
    }
    /// Is any device block shared by two files (reflink)? Cheap: the fast
    /// paths skip every sharing check when not.
    fn has_shared(&self) -> bool;
    /// The device block ranges of `[blk, blk+len)` that have more than one
    /// owner, in ascending order and disjoint (empty, without allocating,
    /// when nothing is shared). The fault path relies on the order: a
    /// writable mapping maps a run up to the first range returned.
    fn shared_in(&self, blk: u64, len: u64) -> Vec<Range<u64>>;
}

/// The device runs `(block, count)` behind file blocks `[a, b)`.
pub(crate) fn device_runs(inode: &dyn DaxInode, a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut p = a;
    while p < b {
        match inode.lookup(p) {
            Lookup::Mapped { dev_blk, len } => {
                let n = len.min(b - p);
                runs.push((dev_blk, n));
                p += n;
            }
            Lookup::Hole { len } if len == u64::MAX => break,
            Lookup::Hole { len } => p = p.saturating_add(len),
        }
    }
    runs
}
