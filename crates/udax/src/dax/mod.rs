//! The DAX core: mapping files straight onto device memory with the semantics of
//! Linux `fs/dax.c` (SPEC M1-M14), on top of the user-space MMU in [`crate::vm`].
//!
//! * [`iomap`]: what dax asks the file system ([`iomap::DaxInode`]: extents,
//!   allocation, unsharing, media errors), the interface it owns and the file
//!   system implements; dax never names the file system.
//! * [`entry`]: per-file entries with entry locks and hashed wait queues.
//! * [`fault`]: fault resolution (holes, zero pages, allocate on write, 2 MiB).
//! * [`mapping`]: a mapping of a file range ([`mapping::Map`]): msync,
//!   protect, partial unmap, pins.
//! * [`hooks`]: what the file system calls when a file's layout changes
//!   (break layouts before blocks move, zero-page invalidation after
//!   allocation, growth, poison) and at fsync.
//! * This module: the per-file state ([`DaxFile`]), the per-device state
//!   ([`DaxDevice`]), the error type, and the fault owner of a region.
//!
//! Lock order (outermost first): file invalidate lock -> entry lock -> the
//! file system's locks (taken inside [`iomap::DaxInode`] calls); region state
//! locks are taken with no file-system lock held, and never two at a time.

pub(crate) mod entry;
mod fault;
mod grow;
pub(crate) mod hooks;
pub mod iomap;
pub(crate) mod mapping;

pub use entry::{Entry, EntryIndex, WaitTable};
pub use mapping::Pin;

#[cfg(all(test, not(loom)))]
pub(crate) use fault::FAIL_RESCUE;

use crate::device::{Device, DeviceError};
use crate::sync::{Mutex, RwLock};
use crate::vm::engine::Counters;
use crate::vm::pages::PageRefs;
use crate::vm::{self, FaultOwner, Region};
use iomap::DaxInode;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use crate::vm::{Prot, VmStats};

/// Does `[addr, addr+len)` overlap a udax mapping of this process? (Copying
/// into such a buffer may fault, and the fault may need the caller's locks.)
#[inline]
pub(crate) fn in_mapping(addr: usize, len: usize) -> bool {
    vm::engine::in_mapping(addr, len)
}

/// How long break-layouts and unmount wait for pinned pages before naming them.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the DAX layer; the file system maps each to its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("permission denied: {0}")]
    Access(&'static str),
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    /// The fault engine is unavailable, or pages stay pinned.
    #[error("resource busy: {0}")]
    Busy(String),
    #[error("system call failed: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl Error {
    /// The errno a C caller reports.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Invalid(_) => libc::EINVAL,
            Error::Access(_) => libc::EACCES,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::Busy(_) => libc::EBUSY,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Device(e) => e.errno(),
        }
    }
}

/// Result alias of the DAX layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(e: std::io::Error) -> Error {
    Error::Io(e)
}

/// The DAX state of one mounted device, shared by its files: the device, the
/// hashed wait queues of the entry locks, the fault counters and the
/// references on device pages (mappings and pins). The file system holds it.
#[derive(Debug)]
pub(crate) struct DaxDevice {
    pub dev: Arc<dyn Device>,
    pub waits: WaitTable,
    pub counters: Counters,
    pub page_refs: Arc<PageRefs>,
}

impl DaxDevice {
    pub fn new(dev: Arc<dyn Device>) -> DaxDevice {
        DaxDevice {
            dev,
            waits: WaitTable::new(256),
            counters: Counters::default(),
            page_refs: Arc::default(),
        }
    }

    /// Counters of this device's mappings (PMD vs PTE mappings, zero pages,
    /// allocations by fault, ...).
    pub fn stats(&self) -> VmStats {
        self.counters.snapshot()
    }
}

/// The DAX state of one file (lives in its inode cell).
#[derive(Debug)]
pub struct DaxFile {
    /// Faults hold it shared; truncate, punch, collapse, insert and zero-range
    /// hold it exclusive while they unmap and change extents (the kernel's
    /// `invalidate_lock` / XFS `MMAPLOCK`).
    pub invalidate: RwLock<()>,
    pub entries: EntryIndex,
    regions: Mutex<Vec<Weak<Region>>>,
    /// Set at the first mmap of the file, never cleared: a file never mapped
    /// has no regions and no entries, and the write/fsync hooks skip their
    /// locks (the common case of read/write-only programs).
    ever_mapped: crate::sync::AtomicBool,
    /// File pages `write_at` gave blocks to that are not mapped yet: mapped
    /// as one run at the next fsync (or by the first fault on them), see
    /// [`hooks::map_written`]. Only a hint: mapping goes through the fault path,
    /// which looks at the extents and the size again.
    ahead: Mutex<Range<u64>>,
    /// Growth of the file vs SIGBUS markers past its end (`grow.rs`): a
    /// growth has markers to drop only if one was ever installed, and a
    /// fault drops the marker it installed if the file grew meanwhile.
    pub(crate) grow: grow::GrowGate,
}

impl DaxFile {
    pub fn new(ino: u64) -> DaxFile {
        DaxFile {
            invalidate: RwLock::new(()),
            entries: EntryIndex::new(ino),
            regions: Mutex::new(Vec::new()),
            ever_mapped: crate::sync::AtomicBool::new(false),
            ahead: Mutex::new(0..0),
            grow: grow::GrowGate::default(),
        }
    }

    /// The file was ever mapped in this process (its DAX state may hold
    /// regions or entries).
    pub fn ever_mapped(&self) -> bool {
        // ORDERING: set (Release) before the first region is registered;
        // a reader that sees false sees no region of this file.
        self.ever_mapped.load(crate::sync::Ordering::Acquire)
    }

    /// The live regions mapping this file.
    pub fn regions(&self) -> Vec<Arc<Region>> {
        let mut v = self.regions.lock();
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// The addresses in this process where a mapping of the file shows
    /// device block `dev_blk` right now.
    pub fn addresses_of(&self, dev_blk: u64) -> Vec<usize> {
        let mut out = Vec::new();
        for r in self.regions() {
            let st = r.lock();
            for (k, v) in st.dev.iter() {
                let first = (k.start as i64 + v) as u64;
                if (first..first + (k.end - k.start)).contains(&dev_blk) {
                    out.push(r.addr_of(k.start + (dev_blk - first)));
                }
            }
        }
        out
    }

    pub(crate) fn is_mapped(&self) -> bool {
        // ORDERING: pairs with the Release store in `mapping::Map::new`, made before
        // the region is published.
        if !self.ever_mapped.load(crate::sync::Ordering::Acquire) {
            return false;
        }
        !self.regions.lock().is_empty() || !self.entries.is_empty()
    }
}

/// Mapping flags (the subset of `mmap(2)` flags udax gives meaning to).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFlags {
    /// `MAP_PRIVATE`: stores go to private copies; default is `MAP_SHARED`.
    pub private: bool,
    /// `MAP_SYNC`: the allocation behind a write fault is durable before the
    /// store lands (udax logs every allocation synchronously, so this holds for
    /// every shared mapping; the flag is accepted and recorded).
    pub sync: bool,
    /// `MAP_POPULATE`: resolve every page now (write-allocating holes of a
    /// writable shared mapping, as the kernel does).
    pub populate: bool,
}

impl MapFlags {
    pub const SHARED: MapFlags = MapFlags {
        private: false,
        sync: false,
        populate: false,
    };
    pub const PRIVATE: MapFlags = MapFlags {
        private: true,
        sync: false,
        populate: false,
    };
    pub fn sync(mut self) -> MapFlags {
        self.sync = true;
        self
    }
    pub fn populate(mut self) -> MapFlags {
        self.populate = true;
        self
    }
}

/// The fault owner of one region: the file, through the interface dax owns.
#[derive(Debug)]
struct Owner {
    inode: Arc<dyn DaxInode>,
}

impl FaultOwner for Owner {
    fn fault(&self, region: &Arc<Region>, page: u64, write: bool, wp: bool, block: bool) -> bool {
        if !self.inode.prepare(block) {
            return false;
        }
        let how = if block {
            fault::How::Blocking
        } else {
            fault::How::Handler
        };
        fault::handle(&*self.inode, region, page, write, wp, how)
    }

    fn flush(&self, region: &Region, pages: Range<u64>) -> std::io::Result<()> {
        mapping::flush_pages(self.inode.device(), region, pages, false)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn kernel_fault(&self) {
        vm::engine::bump(&self.inode.device().counters.kernel_faults);
    }
}

/// Counters of the fault engine, process-wide (zeros if no mapping was made yet).
pub fn stats() -> VmStats {
    vm::try_engine().map(|e| e.stats()).unwrap_or_default()
}

/// Make the caller's own stores to `[ptr, ptr+len)` durable: cache-line flush
/// and fence (or `msync` when the device is a regular file).
#[allow(
    unsafe_code,
    reason = "cache-line flushes of the caller's range when no udax mapping holds it"
)]
pub fn persist(ptr: *const u8, len: usize) -> Result<()> {
    if let Some(r) = vm::try_engine().and_then(|e| e.region_at(ptr as usize)) {
        let a = r.page_of(ptr as usize);
        let b = r.page_of(ptr as usize + len.max(1) - 1) + 1;
        return r.owner.flush(&r, a..b).map_err(Error::Io);
    }
    let instr = crate::device::detect_flush_instr();
    // SAFETY: the caller states its stores went to `[ptr, ptr+len)`, memory it
    // can access; flushing cache lines reads nothing and changes no data.
    unsafe { crate::device::persist::flush_lines(ptr as *mut u8, len, instr) };
    crate::device::persist::sfence();
    Ok(())
}
