//! `MappedDevice`: every real backend (memfd, tmpfs, hugetlbfs, regular file,
//! device-dax) mapped `MAP_SHARED` into this process once, whole.
#![allow(unsafe_code)]

use super::lock::DeviceLock;
use super::persist::{copy_nt, flush_lines, sfence, NT_THRESHOLD};
use super::{check_range, Device, DeviceError, DeviceInfo, DeviceMapping, PersistenceDomain};
use crate::sync::Mutex;
use std::os::fd::{AsFd, OwnedFd};

/// The base address of the device mapping.
#[derive(Debug, Clone, Copy)]
struct Base(*mut u8);
// SAFETY: the pointer designates a MAP_SHARED mapping owned by the MappedDevice
// for its whole life; access to it from any thread is plain memory access to
// shared memory, and callers serialise stores to the same bytes (metadata under
// the fs locks; concurrent data stores are the program's own, as with DAX).
unsafe impl Send for Base {}
// SAFETY: as above; `&Base` only hands out the address.
unsafe impl Sync for Base {}

/// A device mapped into this process.
#[derive(Debug)]
pub struct MappedDevice {
    // Dropped first: the pid file goes before the fd (and its flock) is closed.
    _lock: Option<DeviceLock>,
    info: DeviceInfo,
    fd: OwnedFd,
    base: Base,
    /// PageCache domain: ranges flushed since the last fence (to msync).
    dirty: Mutex<Vec<(u64, u64)>>,
    bad: super::BadList,
}

impl MappedDevice {
    /// Map `info.len` bytes of `fd` shared, read-write.
    pub(crate) fn map(
        info: DeviceInfo,
        fd: OwnedFd,
        lock: Option<DeviceLock>,
    ) -> Result<Self, DeviceError> {
        if info.len == 0 {
            return Err(DeviceError::BadSpec {
                spec: info.path.clone(),
                reason: "device has size 0".into(),
            });
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so no existing
        // memory is replaced; `fd` is a valid descriptor of at least `len` bytes.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                info.len as usize,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(|e| DeviceError::Open {
            path: info.path.clone().into(),
            source: std::io::Error::from(e),
        })?;
        Ok(MappedDevice {
            info,
            fd,
            base: Base(p.cast()),
            dirty: Mutex::new(Vec::new()),
            bad: Default::default(),
            _lock: lock,
        })
    }

    fn ptr(&self, off: u64) -> *mut u8 {
        // SAFETY-free: pointer arithmetic only; callers bounds-check first.
        self.base.0.wrapping_add(off as usize)
    }
}

impl Drop for MappedDevice {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `map` with this base and length and
        // is unmapped exactly once, here; no reference into it outlives `self`
        // (the DAX layer holds an Arc to the device while it maps ranges).
        let _ = unsafe { rustix::mm::munmap(self.base.0.cast(), self.info.len as usize) };
    }
}

impl Device for MappedDevice {
    fn bad_list(&self) -> &super::BadList {
        &self.bad
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.info.len)?;
        // SAFETY: the range is inside the live mapping (checked above), and `buf`
        // is a distinct Rust allocation, so the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        check_range(off, data.len() as u64, self.info.len)?;
        if data.len() >= NT_THRESHOLD {
            // Large copies bypass the cache on every backend: they are faster
            // (no read-for-ownership, no eviction of the caller's working set)
            // and on pmem they need no flush afterwards.
            // SAFETY: destination inside the live mapping (checked), source a
            // distinct allocation.
            unsafe { copy_nt(self.ptr(off), data, self.info.flush) };
            if self.info.persistence != PersistenceDomain::CpuCache {
                // Non-temporal stores are weakly ordered: order them before
                // whatever publishes the data (a lock release, a log record).
                // On pmem the caller's fence does this.
                sfence();
            }
        } else {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(off), data.len()) };
        }
        Ok(())
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        check_range(off, len, self.info.len)?;
        // SAFETY: the range is inside the live mapping (checked above).
        unsafe { std::ptr::write_bytes(self.ptr(off), 0, len as usize) };
        Ok(())
    }

    fn flush(&self, off: u64, len: u64) {
        if check_range(off, len, self.info.len).is_err() || len == 0 {
            return;
        }
        match self.info.persistence {
            PersistenceDomain::None => {}
            PersistenceDomain::PageCache => self.dirty.lock().push((off, len)),
            // SAFETY: the range is inside the live mapping (checked above).
            PersistenceDomain::CpuCache => unsafe {
                flush_lines(self.ptr(off), len as usize, self.info.flush)
            },
        }
    }

    fn fence(&self) -> Result<(), DeviceError> {
        match self.info.persistence {
            PersistenceDomain::None => Ok(()),
            PersistenceDomain::CpuCache => {
                sfence();
                Ok(())
            }
            PersistenceDomain::PageCache => {
                let mut ranges = std::mem::take(&mut *self.dirty.lock());
                ranges.sort_unstable();
                let page = 4096u64;
                let mut merged: Vec<(u64, u64)> = Vec::new();
                for (o, l) in ranges {
                    let (a, b) = (o / page * page, (o + l).div_ceil(page) * page);
                    match merged.last_mut() {
                        Some(m) if a <= m.1 => m.1 = m.1.max(b),
                        _ => merged.push((a, b)),
                    }
                }
                for (a, b) in merged {
                    let b = b.min(self.info.len);
                    // SAFETY: `[a, b)` is page aligned and inside the live mapping.
                    unsafe {
                        rustix::mm::msync(
                            self.ptr(a).cast(),
                            (b - a) as usize,
                            rustix::mm::MsyncFlags::SYNC,
                        )
                    }
                    .map_err(|e| DeviceError::Io(e.into()))?;
                }
                Ok(())
            }
        }
    }

    fn mapping(&self) -> Option<DeviceMapping<'_>> {
        Some(DeviceMapping {
            fd: self.fd.as_fd(),
            base: self.base.0,
            len: self.info.len,
        })
    }
}
