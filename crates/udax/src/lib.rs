//! udax: a direct-access (DAX) file system in user space.
//!
//! Layers, highest first; a layer imports only layers below it (checked by
//! `tests/architecture.rs`, which reads every `crate::` path):
//!
//! ```text
//!   vfs      one interface over both backends: an embedded Fs or an owner's Client
//!            -> client, fs
//!   client   a client of a device's owner: leases, recalls, its own fault engine
//!            -> proto, dax, fs (types)
//!   owner    the device's owner: serves clients from an embedded Fs
//!            -> proto, fs
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
//!   meta     in-place metadata: transaction overlay, B+tree    -> format, device
//!   alloc    2 MiB-aware extent allocator (WineFS policy)      -> sync
//!   format   on-device byte layout, checksummed records        -> (nothing)
//!   device   Device trait and backends (memfd/shm, hugetlbfs, file, devdax,
//!            crash-sim)                                        -> sync
//!   fdnum    the library's own long-lived fds kept out of the low numbers
//!            -> (nothing)
//!   sync     the one lock/atomic facade (std/parking_lot, or loom under `--cfg loom`)
//! ```
//!
//! The order the test enforces: sync < fdnum < device < format < proto < alloc <
//! meta < journal < vm < dax < fs < owner < client < vfs. Any layer may use the
//! constants of the crate root (this file), which also holds the public re-exports.
//!
//! Unsafe code is denied crate-wide and re-allowed only in the modules that map
//! memory or emit cache-flush instructions; each block carries a `// SAFETY:` note.
#![deny(unsafe_code)]

pub(crate) mod alloc;
pub mod client;
pub(crate) mod dax;
pub mod device;
pub(crate) mod fdnum;
pub(crate) mod format;
pub mod fs;
pub(crate) mod journal;
pub(crate) mod meta;
pub mod migrate;
pub mod owner;
pub mod proto;
pub(crate) mod sync;
pub mod vfs;
pub(crate) mod vm;

pub use dax::{persist, stats, MapFlags, Pin};
pub use device::{Device, DeviceError, DeviceInfo, DeviceKind, PersistenceDomain};
pub use fs::{Error, Mapping, Result};
pub use vm::signals::install as install_sigbus_handler;
pub use vm::{forget_parent as forget_parent_fault_engine, Prot, VmStats};

/// The process's SIGBUS/SIGSEGV handler, for programs and shims that install
/// their own handlers and must chain to (or around) udax's.
pub mod signals {
    pub use crate::vm::signals::{chained_to, install, is_ours};
}

/// Read-only views of the on-device layout, for inspection tools and tests
/// that check or deliberately damage an image (docs/format.md is the byte
/// map). Nothing here writes a device.
pub mod layout {
    pub use crate::format::codec::crc;
    pub use crate::format::v3::{AnySuperblock, Geometry3, Superblock3};
    pub use crate::format::{
        decode_checkpoint_header, decode_log_header, CheckpointHeader, FormatError, Geometry,
        LogHeader, Superblock, LOG_HEADER_SIZE,
    };
}

/// What the fault engine of this process can do, as found when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// The kernel reports minor faults on shmem to userfaultfd (Linux 5.14+):
    /// read-only mappings of a memfd or tmpfs device open map-ahead windows.
    pub minor_faults_on_shmem: bool,
}

/// Start the fault engine (if not yet started) and say what it can do. Fails
/// where userfaultfd is not available (see docs/limits.md).
pub fn engine_info() -> std::result::Result<EngineInfo, String> {
    let eng = vm::engine()?;
    Ok(EngineInfo {
        minor_faults_on_shmem: eng.uffd.has_minor_shmem(),
    })
}

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
