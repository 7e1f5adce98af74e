//! Byte-addressable memory devices.
//!
//! A [`Device`] is a flat range of bytes that udax carves into blocks. Every
//! backend except the crash simulator maps the whole device into this process;
//! reads and writes are plain memory copies (no page cache in between).
//!
//! Durability follows the persistent-memory model: a store is durable only after
//! [`Device::flush`] of its cache lines **and** a later [`Device::fence`]. What
//! `flush`/`fence` do depends on the backend's [`PersistenceDomain`]:
//!
//! | domain          | flush                         | fence                          |
//! |-----------------|-------------------------------|--------------------------------|
//! | `None`          | nothing (memory is volatile)  | nothing                        |
//! | `PageCache`     | remember the dirty page range | `msync(MS_SYNC)` of the ranges |
//! | `CpuCache`      | clwb/clflushopt/clflush lines | `sfence`                       |
//!
//! Writes of a page or more use non-temporal stores (they bypass the cache, so
//! only the fence is needed for them).

pub mod badblocks;
mod crash;
mod crash_mapped;
mod lock;
mod mapped;
mod open;
mod overlay;
pub mod persist;
mod ram;
mod view;

pub use badblocks::BadList;
pub use crash::{CrashDevice, Survivors};
pub use crash_mapped::MappedCrashDevice;
pub(crate) use lock::busy;
pub(crate) use mapped::point_at_null;
pub use mapped::MappedDevice;
pub use open::{classify, open, parse_size, persistence_of, OpenOptions};
pub(crate) use overlay::OverlayDevice;
pub use persist::detect_flush_instr;
pub use ram::RamDevice;
pub use view::adopt;

use std::fmt;
use std::path::PathBuf;

/// Which kind of memory backs a device. Detected from the path when opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Anonymous `memfd_create` memory (`memfd:SIZE`): gone when the process exits.
    Memfd,
    /// A file on tmpfs, e.g. under `/dev/shm`.
    Shm,
    /// A file on hugetlbfs (or a `MFD_HUGETLB` memfd): 2 MiB pages.
    Hugetlbfs,
    /// A regular file on a disk file system; durable through `msync`.
    File,
    /// A device-dax character device (`/dev/daxX.Y`): real pmem or CXL memory.
    DevDax,
    /// Heap memory for tests.
    Ram,
    /// The crash-simulating test device.
    Crash,
}

/// Where a store must reach to survive a power failure, and so what flushing costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistenceDomain {
    /// Volatile memory: nothing survives; flush and fence are no-ops.
    None,
    /// Durable once written back from the page cache (`msync`).
    PageCache,
    /// Durable once out of the CPU cache (cache-line flush + fence).
    CpuCache,
}

/// The cache-flush instruction in use, picked at run time from CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushInstr {
    Clwb,
    Clflushopt,
    Clflush,
    /// No flush is needed (or possible) for this device.
    None,
}

/// Static facts about an opened device, shown by `udax info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// The path or spec it was opened from (`memfd:1G`, `/dev/shm/x`, ...).
    pub path: String,
    /// Usable length in bytes (a multiple of [`crate::BLOCK_SIZE`]).
    pub len: u64,
    pub persistence: PersistenceDomain,
    pub flush: FlushInstr,
    /// Page size of the backing memory: 4096, or 2 MiB for hugetlbfs.
    pub page_size: u64,
}

/// Errors from the device layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("access out of range: offset {offset} + length {len} > device size {size}")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("device busy (held by pid {pid})")]
    Busy { pid: i32 },
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid device spec {spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    #[error("device I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("media error (poisoned) at device offset {offset}")]
    Poisoned { offset: u64 },
}

impl DeviceError {
    /// The errno a C caller would see.
    pub fn errno(&self) -> i32 {
        match self {
            DeviceError::OutOfRange { .. } => libc::EINVAL,
            DeviceError::Busy { .. } => libc::EBUSY,
            DeviceError::Open { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            DeviceError::BadSpec { .. } => libc::EINVAL,
            DeviceError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            DeviceError::Poisoned { .. } => libc::EIO,
        }
    }
}

/// A byte-addressable device. Implementations are internally synchronised:
/// any thread may call any method at any time. Callers serialise stores to the
/// same bytes themselves (metadata through the fs locks; file data races are the
/// program's own, exactly as with the kernel's DAX).
pub trait Device: Send + Sync + fmt::Debug {
    /// Static facts (kind, size, persistence domain).
    fn info(&self) -> &DeviceInfo;

    /// Device size in bytes.
    fn len(&self) -> u64 {
        self.info().len
    }

    /// `true` for a zero-length device.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `buf.len()` bytes starting at device offset `off` into `buf`.
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError>;

    /// Store `data` at `off`. Not durable until [`flush`](Self::flush) + [`fence`](Self::fence).
    /// Writes of a page or more may use non-temporal stores (they bypass the cache).
    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError>;

    /// [`write`](Self::write) for data that is likely to be read again soon
    /// (a file that is mapped: the program reads what it writes through its
    /// mapping, as LMDB does): ordinary cached stores, whatever the size.
    fn write_cached(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.write(off, data)
    }

    /// Store the 8-byte word `v` (little-endian) at `off`, a multiple of
    /// 8, in one store: a crash leaves the old word or the new, never a mix
    /// (the failure-atomic unit of persistent memory). Same durability
    /// rules as `write`.
    fn write_word(&self, off: u64, v: u64) -> Result<(), DeviceError> {
        self.write_cached(off, &v.to_le_bytes())
    }

    /// Store zeros over `[off, off + len)`. Same durability rules as `write`.
    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError>;

    /// Start write-back of the cache lines covering `[off, off + len)`.
    fn flush(&self, off: u64, len: u64);

    /// Wait until every flush (and non-temporal store) issued before it is durable.
    fn fence(&self) -> Result<(), DeviceError>;

    /// `true` when [`fence`](Self::fence) makes durable every flush issued before it
    /// by any thread (msync, the crash simulator, volatile memory); `false` when it
    /// only orders the calling thread's own flushes (`sfence` on devdax).
    fn fence_is_global(&self) -> bool {
        self.info().persistence != PersistenceDomain::CpuCache
    }

    /// `flush` + `fence`.
    fn persist(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        self.flush(off, len);
        self.fence()
    }

    /// `[off, off+len)` was read once and will not be soon again (recovery's
    /// scan of the whole log): a backend that maps the device may drop the
    /// range's page-table entries, so what it read does not stay resident in
    /// this process. A hint: the data stays on the device; no-op by default.
    fn forget_range(&self, _off: u64, _len: u64) {}

    /// The parts of `[off, off + len)` (in order, within it) outside which
    /// the device reads as zeros, for a caller that would otherwise read or
    /// zero a large range whole: a memory device leaves out its file's
    /// holes, which have no pages (and would get them if read through the
    /// mapping). The whole range by default.
    fn data_within(&self, off: u64, len: u64) -> Vec<(u64, u64)> {
        vec![(off, len)]
    }

    /// Give back the storage behind `[off, off + len)`, whose contents are
    /// no longer needed (the log past its head after a clean unmount),
    /// where the backend can do it cheaply: a memory device punches a hole
    /// over the whole pages inside the range (they return to the system;
    /// the range reads as zeros and [`data_within`](Self::data_within)
    /// leaves it out). Returns whether it did; `false` (the default)
    /// changes nothing. Same durability rules as `write` (a crash may
    /// leave any part of it undone).
    fn discard(&self, _off: u64, _len: u64) -> Result<bool, DeviceError> {
        Ok(false)
    }

    /// This process is done with the device for good (a client whose owner
    /// ended its connection, its mappings of the device's pages undone): let
    /// go of it, so its open and its mapping no longer hold the owner's
    /// device lock and a new owner can start. What maps the device whole
    /// keeps its address range, inaccessible (an access is a crash, never a
    /// read or a store of the device); its descriptor then names
    /// `/dev/null`. A backend that holds nothing open does nothing.
    fn let_go(&self) {}

    /// The device's bytes `[off, off + len)` where they lie, for a reader
    /// that would otherwise copy them out (a B-tree lookup reads a few lines
    /// of each node it passes, not 4 KiB); `None`: the backend has no such
    /// view (it is not mapped whole, or it tracks reads), use
    /// [`Device::read`].
    ///
    /// # Safety
    ///
    /// While the slice lives, nothing may write those bytes: the caller's
    /// locks order its reads after the last store of them and before the
    /// next (as they order a [`Device::read`] of them).
    #[allow(
        unsafe_code,
        reason = "a view's caller must keep writes of its bytes out while it lives"
    )]
    unsafe fn view(&self, _off: u64, _len: usize) -> Option<&[u8]> {
        None
    }

    /// For backends that map the device: the file descriptor and the base address of
    /// the whole-device mapping in this process (the DAX engine maps ranges of it).
    fn mapping(&self) -> Option<DeviceMapping<'_>> {
        None
    }

    /// The device's list of bad (poisoned) byte ranges.
    fn bad_list(&self) -> &BadList;

    /// Emulate a media error (SPEC E1) over `[off, off + len)`, widened to
    /// 512-byte sectors: the data there is lost (overwritten with
    /// [`badblocks::POISON_PATTERN`]) and the range joins the bad list. The file
    /// system on the device learns of it through `Fs::notify_failure`
    /// (`Fs::inject_poison` does both).
    fn inject_poison(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        check_range(off, len, self.len())?;
        let r = badblocks::round_out(off..off + len);
        let junk: Vec<u8> = badblocks::POISON_PATTERN
            .iter()
            .copied()
            .cycle()
            .take((r.end - r.start) as usize)
            .collect();
        self.write(r.start, &junk)?;
        self.persist(r.start, r.end - r.start)?;
        self.bad_list().insert(r);
        Ok(())
    }

    /// Forget the media error of `[off, off + len)`: the range was overwritten
    /// whole (on pmem a full overwrite clears poison).
    fn clear_poison(&self, off: u64, len: u64) {
        self.bad_list().remove(off..off.saturating_add(len));
    }

    /// The bad byte ranges the device reports.
    fn badblocks(&self) -> Vec<std::ops::Range<u64>> {
        self.bad_list().ranges()
    }
}

/// A device that is mapped into this process.
#[derive(Clone, Copy, Debug)]
pub struct DeviceMapping<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// Base address of the whole-device `MAP_SHARED` mapping.
    pub base: *mut u8,
    pub len: u64,
}

/// Check `[off, off + len)` lies inside a device of `size` bytes (overflow-safe).
pub fn check_range(off: u64, len: u64, size: u64) -> Result<(), DeviceError> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange {
            offset: off,
            len,
            size,
        }),
    }
}
