//! udax: a direct-access (DAX) file system in user space.
//!
//! Layers, highest first; a layer imports only layers below it (checked by
//! `tests/architecture.rs`, which reads every `crate::` path):
//!
//! ```text
//!   fs       namespace, inodes, extent maps, read/write, truncate, fallocate, mmap;
//!            serves the fault engine through dax::iomap::DaxInode
//!            -> dax, journal, alloc, format, device, sync
//!   dax      fault engine with fs/dax.c semantics: entries, entry locks, faults,
//!            break layouts; owns the iomap interface and never names fs
//!            -> vm, device, sync
//!   vm       user-space MMU: regions, userfaultfd fault engine, page references
//!            -> sync
//!   journal  metadata redo log with group commit and recovery
//!            -> format, device, sync
//!   alloc    2 MiB-aware extent allocator (WineFS policy)      -> sync
//!   format   on-device byte layout, checksummed records        -> (nothing)
//!   device   Device trait and backends (memfd/shm, hugetlbfs, file, devdax,
//!            crash-sim)                                        -> sync
//!   sync     the one lock/atomic facade (std/parking_lot, or loom under `--cfg loom`)
//! ```
//!
//! The order the test enforces: sync < device < format < alloc < journal < vm <
//! dax < fs. Any layer may use the constants of the crate root (this file),
//! which also holds the public re-exports.
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

pub use dax::{persist, MapFlags};
pub use device::{Device, DeviceError, DeviceInfo, DeviceKind, PersistenceDomain};
pub use fs::{Error, Mapping, Result};
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
