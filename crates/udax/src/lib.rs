//! udax: a direct-access (DAX) file system in user space.
//!
//! Layers (data flows one way, top to bottom):
//!
//! ```text
//!   dax      mmap with fs/dax.c semantics: entries, entry locks, faults, break layouts
//!   vm       user-space MMU: regions, userfaultfd fault engine, page references
//!   fs       namespace, inodes, extent maps ("iomap"), read/write, truncate, fallocate
//!   journal  metadata redo log with group commit and recovery
//!   alloc    2 MiB-aware extent allocator (WineFS policy)
//!   format   on-device byte layout, checksummed records
//!   device   Device trait and backends (memfd/shm, hugetlbfs, file, devdax, crash-sim)
//!   sync     the one lock/atomic facade (std/parking_lot, or loom under `--cfg loom`)
//! ```
//!
//! Unsafe code is denied crate-wide and re-allowed only in the modules that map
//! memory or emit cache-flush instructions; each block carries a `// SAFETY:` note.
#![deny(unsafe_code)]

pub mod alloc;
pub mod dax;
pub mod device;
pub mod format;
pub mod fs;
pub mod journal;
pub mod sync;
pub mod vm;

pub use dax::{persist, MapFlags, Mapping};
pub use device::{Device, DeviceError, DeviceInfo, DeviceKind, PersistenceDomain};
pub use fs::{Error, Result};
pub use vm::signals::install as install_sigbus_handler;
pub use vm::{Prot, VmStats};

/// File-system block size: the unit of allocation and of the smallest mapping.
pub const BLOCK_SIZE: u64 = 4096;
/// log2 of [`BLOCK_SIZE`].
pub const BLOCK_SHIFT: u32 = 12;
/// Huge mapping size (x86-64 PMD).
pub const HUGE_SIZE: u64 = 2 << 20;
/// Blocks per 2 MiB chunk.
pub const BLOCKS_PER_HUGE: u64 = HUGE_SIZE / BLOCK_SIZE;
/// CPU cache line size: the unit of flushing and of crash simulation.
pub const CACHE_LINE: u64 = 64;
