//! `MappedDevice`: every real backend (memfd, tmpfs, hugetlbfs, regular file,
//! device-dax) mapped `MAP_SHARED` into this process once, whole.
#![allow(
    unsafe_code,
    reason = "the whole-device shared mapping and raw access into it"
)]

use super::lock::DeviceLock;
use super::persist::{copy_nt, flush_lines, sfence, NT_THRESHOLD};
use super::{check_range, Device, DeviceError, DeviceInfo, DeviceMapping, PersistenceDomain};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
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
    // The flock is the device fd's; this marks the device as locked.
    _lock: Option<DeviceLock>,
    info: DeviceInfo,
    fd: OwnedFd,
    base: Base,
    /// PageCache domain: ranges flushed since the last fence (to msync).
    dirty: Mutex<Vec<(u64, u64)>>,
    bad: super::BadList,
    /// Mapped read-only (a client's read-only descriptor): stores are refused.
    read_only: bool,
    /// Memory devices (memfd, tmpfs): one bit per `PREFAULT` window whose
    /// page tables this process has filled for writing (see `prefault`).
    populated: Option<Box<[AtomicU64]>>,
    /// `let_go` ran: the range no longer shows the device (no more views).
    gone: AtomicBool,
}

/// The window `MappedDevice::prefault` fills at once: 16 pages. Filling costs
/// ~0.15 us a page plus ~1 us a call, a write fault ~1.2 us a page; a larger
/// window spends more on pages a short-lived process never touches, and on a
/// sparse shmem file allocates them: 2 MiB windows made a process that
/// touches a few blocks pay ~1 ms more, 256 KiB ones a one-record `mdb_load`
/// ~35 us more than these.
const PREFAULT: u64 = 64 << 10;

/// Windows filled at once after one already filled (a writer going forward,
/// as appends do): 256 KiB a call, a quarter of the calls.
const PREFAULT_AHEAD: u64 = 4;

/// Zeroing at least this much of a memory device first asks where the
/// range's holes are (`Device::data_within`): system calls, worth
/// them where the alternative is page faults.
const HOLE_CHECK_MIN: u64 = 64 << 10;

impl MappedDevice {
    /// Map `info.len` bytes of `fd` shared, read-write.
    pub(crate) fn map(
        info: DeviceInfo,
        fd: OwnedFd,
        lock: Option<DeviceLock>,
    ) -> Result<Self, DeviceError> {
        let mut d = Self::map_shared(info, fd, true)?;
        d._lock = lock;
        Ok(d)
    }

    /// Map `info.len` bytes of `fd` shared, without the device lock (a
    /// descriptor handed over by the owner, who holds it); read-only unless
    /// `writable`.
    pub(crate) fn map_shared(
        info: DeviceInfo,
        fd: OwnedFd,
        writable: bool,
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
                if writable {
                    rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE
                } else {
                    rustix::mm::ProtFlags::READ
                },
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .map_err(|e| DeviceError::Open {
            path: info.path.clone().into(),
            source: std::io::Error::from(e),
        })?;
        let populated = matches!(info.kind, super::DeviceKind::Memfd | super::DeviceKind::Shm)
            .then(|| {
                (0..info.len.div_ceil(PREFAULT).div_ceil(64))
                    .map(|_| AtomicU64::new(0))
                    .collect()
            });
        Ok(MappedDevice {
            info,
            fd,
            base: Base(p.cast()),
            dirty: Mutex::new(Vec::new()),
            bad: Default::default(),
            populated,
            read_only: !writable,
            _lock: None,
            gone: AtomicBool::new(false),
        })
    }

    /// Before the first store of this process into a window of a memory
    /// device, fill the window's page tables in one call: the kernel does no
    /// fault-around for write faults on shared mappings, so otherwise every
    /// 4 KiB block pays a page fault at its first store (a third of the time
    /// of 4 KiB appends through the shim). `MADV_POPULATE_READ`, not `_WRITE`:
    /// read faults map 16 pages at a time, and on shmem (no dirty accounting,
    /// no write notification) the entries they make are writable, so stores
    /// take no fault afterwards: 0.16 instead of 0.89 us a page here. (Where
    /// a kernel did write-notify, a store would take a minor fault: slower,
    /// never wrong.) A window right after one already filled is filled with
    /// the `PREFAULT_AHEAD - 1` that follow it, in one call. Not for disk
    /// files nor hugetlbfs and device-dax (their faults map 2 MiB).
    fn prefault(&self, off: u64, len: u64) {
        let Some(bits) = &self.populated else { return };
        if len == 0 {
            return;
        }
        // ORDERING: only a hint (populating twice is harmless).
        let filled =
            |c: u64| bits[(c / 64) as usize].load(Ordering::Relaxed) & (1 << (c % 64)) != 0;
        let windows = self.info.len.div_ceil(PREFAULT);
        for c in off / PREFAULT..=(off + len - 1) / PREFAULT {
            if filled(c) {
                continue;
            }
            let ahead = if c > 0 && filled(c - 1) {
                PREFAULT_AHEAD
            } else {
                1
            };
            let end = (c + ahead).min(windows);
            let at = c * PREFAULT;
            let n = (end * PREFAULT).min(self.info.len) - at;
            // SAFETY: `[at, at+n)` lies inside the live device mapping; the
            // advice only fills page tables (allocating zeroed pages where the
            // file has none), it changes no data.
            let _ = unsafe {
                rustix::mm::madvise(
                    self.ptr(at).cast(),
                    n as usize,
                    rustix::mm::Advice::LinuxPopulateRead,
                )
            };
            // ORDERING: a hint, as above; the page tables it stands for are
            // the kernel's.
            for w in c..end {
                bits[(w / 64) as usize].fetch_or(1 << (w % 64), Ordering::Relaxed);
            }
        }
    }

    /// Refuse stores to a read-only mapping (they would fault).
    fn check_writable(&self) -> Result<(), DeviceError> {
        if self.read_only {
            return Err(DeviceError::Io(std::io::Error::from_raw_os_error(
                libc::EBADF,
            )));
        }
        Ok(())
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

/// Make descriptor `fd` name `/dev/null` (close-on-exec) instead of what it
/// named: the open file description it held (and the flock on it) is let go
/// of, while the number stays open and owned as before.
pub(crate) fn point_at_null(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: `fd` is an open descriptor its owner keeps (borrowed here, so
    // it is not closed meanwhile); dup3 replaces what that number names in
    // one step, so no other open can take the number in between, and the
    // owner's close later closes `/dev/null`. No memory is involved.
    let r = unsafe { libc::dup3(null.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Device for MappedDevice {
    fn bad_list(&self) -> &super::BadList {
        &self.bad
    }

    fn let_go(&self) {
        // ORDERING: Relaxed: a view is taken only by the file system's
        // metadata readers, which a process that lets go has none of; this
        // only keeps a late one from the replaced range.
        self.gone.store(true, Ordering::Relaxed);
        // SAFETY: `[base, base + len)` is this device's own mapping, made in
        // `map_shared` and unmapped only by `drop`; MAP_FIXED replaces it in
        // one step with an inaccessible anonymous mapping of the same range,
        // so the range stays reserved for `drop` (no other mapping can be
        // placed there) and udax holds no Rust reference into it (accesses
        // go through the raw base). A later access faults (a crash), it never
        // reaches the device.
        let r = unsafe {
            libc::mmap(
                self.base.0.cast(),
                self.info.len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            tracing::warn!(
                "the device mapping stays: {}",
                std::io::Error::last_os_error()
            );
        }
        if let Err(e) = point_at_null(&self.fd) {
            tracing::warn!("the device descriptor stays open: {e}");
        }
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn view(&self, off: u64, len: usize) -> Option<&[u8]> {
        // ORDERING: Relaxed: see `let_go`.
        if self.gone.load(Ordering::Relaxed) || check_range(off, len as u64, self.info.len).is_err()
        {
            return None;
        }
        // SAFETY: the range is inside the whole-device mapping (checked
        // above), which stays mapped, readable, while `self` lives (`drop`
        // unmaps it; `let_go`, checked above, is for processes without
        // readers of views); the caller guarantees nothing writes it while
        // the slice lives (`Device::view`).
        Some(unsafe { std::slice::from_raw_parts(self.ptr(off), len) })
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range(off, buf.len() as u64, self.info.len)?;
        // SAFETY: the range is inside the live mapping (checked above), and `buf`
        // is a distinct Rust allocation, so the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.check_writable()?;
        if data.len() < NT_THRESHOLD {
            return self.write_cached(off, data);
        }
        check_range(off, data.len() as u64, self.info.len)?;
        self.prefault(off, data.len() as u64);
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
        Ok(())
    }

    fn forget_range(&self, off: u64, len: u64) {
        let page = 4096;
        let (start, end) = (off.next_multiple_of(page), (off + len) / page * page);
        if end <= start || end > self.info.len {
            return;
        }
        // SAFETY: `[start, end)` lies inside the live device mapping, which
        // is MAP_SHARED: MADV_DONTNEED drops this process's page-table
        // entries and leaves the file's (or device's) pages and data as
        // they are (dirty bits go to the page cache); a later access faults
        // the same bytes in again. No Rust reference into the range is held
        // across this call (reads and writes copy in and out). A backend
        // that refuses the advice (EINVAL for an unaligned hugetlb range)
        // keeps its pages: the result is ignored, it is only a hint.
        let _ = unsafe {
            rustix::mm::madvise(
                self.ptr(start).cast(),
                (end - start) as usize,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    }

    fn write_cached(&self, off: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.check_writable()?;
        check_range(off, data.len() as u64, self.info.len)?;
        self.prefault(off, data.len() as u64);
        // SAFETY: destination inside the live mapping (checked), source a
        // distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(off), data.len()) };
        Ok(())
    }

    fn write_word(&self, off: u64, v: u64) -> Result<(), DeviceError> {
        self.check_writable()?;
        check_range(off, 8, self.info.len)?;
        if !off.is_multiple_of(8) {
            return self.write_cached(off, &v.to_le_bytes());
        }
        self.prefault(off, 8);
        // SAFETY: the 8 bytes are inside the live mapping (checked) and the
        // address is 8-aligned (the mapping is page-aligned, `off` a multiple
        // of 8): one aligned volatile store, a single instruction on x86-64.
        unsafe { std::ptr::write_volatile(self.ptr(off).cast::<u64>(), v.to_le()) };
        Ok(())
    }

    fn zero(&self, off: u64, len: u64) -> Result<(), DeviceError> {
        self.check_writable()?;
        check_range(off, len, self.info.len)?;
        for (at, n) in self.data_within(off, len) {
            self.prefault(at, n);
            // SAFETY: `[at, at + n)` lies inside `[off, off + len)`, inside
            // the live mapping (checked above).
            unsafe { std::ptr::write_bytes(self.ptr(at), 0, n as usize) };
        }
        Ok(())
    }

    /// A memory device with holes punches one: the whole pages inside the
    /// range leave the file (and every process's mapping of them: a later
    /// read maps a new zeroed page). A memfd is sparse from the start; a
    /// tmpfs file only if made so (`udax mkfs --size` allocates the whole
    /// file, so that a store never meets a full tmpfs: SIGBUS): one with
    /// every page allocated keeps them. Other devices keep the range as it
    /// is (a disk file's punch would be a metadata write of its own file
    /// system; device-dax has no holes).
    fn discard(&self, off: u64, len: u64) -> Result<bool, DeviceError> {
        const PAGE: u64 = 4096;
        let sparse = match self.info.kind {
            super::DeviceKind::Memfd => true,
            super::DeviceKind::Shm => rustix::fs::fstat(&self.fd)
                .is_ok_and(|st| (st.st_blocks as u64).saturating_mul(512) < st.st_size as u64),
            _ => false,
        };
        if !sparse {
            return Ok(false);
        }
        self.check_writable()?;
        check_range(off, len, self.info.len)?;
        let (start, end) = (off.next_multiple_of(PAGE), (off + len) / PAGE * PAGE);
        if end <= start {
            return Ok(false);
        }
        rustix::fs::fallocate(
            &self.fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            start,
            end - start,
        )
        .map_err(|e| DeviceError::Io(e.into()))?;
        Ok(true)
    }

    /// The parts of `[off, off + len)` that may hold data: on a memory
    /// device, the file's holes are left out (they have no page and read as
    /// zeros; zeroing them would allocate and clear a page per 4 KiB, ~5 us
    /// each here, only to store zeros again). An inode chunk (256 KiB)
    /// zeroed when a fill of small files added it cost ~300 us inside one
    /// create. `mincore` says which pages the file has in memory (data,
    /// even one faulted in by a read); a page it has not is a hole or a
    /// page swapped out, which `SEEK_DATA` tells apart (swap is data), one
    /// call per run of such pages. (`SEEK_HOLE` is not used: on tmpfs it
    /// walks every page up to the next hole, which can be the rest of the
    /// device.) Small ranges, and devices that are not memory (a disk
    /// file's hole may hide blocks not yet written back), are one part.
    #[allow(
        unsafe_code,
        reason = "mincore has no safe wrapper; it fills one byte per page of the mapping"
    )]
    fn data_within(&self, off: u64, len: u64) -> Vec<(u64, u64)> {
        const PAGE: u64 = 4096;
        if self.populated.is_none()
            || len < HOLE_CHECK_MIN
            || check_range(off, len, self.info.len).is_err()
        {
            return vec![(off, len)];
        }
        let end = off + len;
        let (first, last) = (off / PAGE, end.div_ceil(PAGE));
        if last * PAGE > self.info.len {
            return vec![(off, len)];
        }
        let mut resident = vec![0u8; (last - first) as usize];
        // SAFETY: `[first, last)` pages lie inside the live device mapping
        // (checked above), whose base is page-aligned; mincore writes one
        // byte per page into `resident`, which has exactly that many.
        let r = unsafe {
            libc::mincore(
                self.ptr(first * PAGE).cast(),
                ((last - first) * PAGE) as usize,
                resident.as_mut_ptr(),
            )
        };
        if r != 0 {
            return vec![(off, len)];
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut data = |a: u64, b: u64| {
            let (a, b) = (a.max(off), b.min(end));
            match out.last_mut() {
                Some((s, l)) if *s + *l == a => *l += b - a,
                _ => out.push((a, b - a)),
            }
        };
        let mut p = first;
        while p < last {
            if resident[(p - first) as usize] & 1 != 0 {
                data(p * PAGE, (p + 1) * PAGE);
                p += 1;
                continue;
            }
            // The descriptor's offset moves; nothing reads or writes
            // through it (the device is used through its mapping).
            let next = match rustix::fs::seek(&self.fd, rustix::fs::SeekFrom::Data(p * PAGE)) {
                Ok(d) => d / PAGE,
                // No data at or after this page.
                Err(rustix::io::Errno::NXIO) => last,
                // Not known: data.
                Err(_) => p,
            };
            if next <= p {
                data(p * PAGE, (p + 1) * PAGE);
                p += 1;
            } else {
                p = next.min(last);
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Pages of `[addr, addr+len)` present in this process's page tables.
    fn present(addr: usize, len: usize) -> usize {
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut buf = vec![0u8; len / 4096 * 8];
        pm.read_exact_at(&mut buf, (addr / 4096 * 8) as u64)
            .unwrap();
        buf.chunks(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count()
    }

    #[test]
    fn zeroing_a_memory_device_clears_its_data_and_allocates_no_page_in_its_holes() {
        let d = crate::device::open("memfd:8M", &Default::default()).unwrap();
        let m = d.mapping().unwrap();
        // Data in two places of a 2 MiB range (and just past it), holes
        // elsewhere.
        let (at, len) = (1u64 << 20, 2u64 << 20);
        d.write(at + 4096, &[7u8; 100]).unwrap();
        d.write(at + (1 << 20) + 5, &[8u8; 9000]).unwrap();
        d.write(at + len, &[9u8; 10]).unwrap();
        let fd = m.fd;
        let pages = |from: u64, n: u64| -> u64 {
            // Pages of the file (not of this process's tables) in the range.
            (0..n / 4096)
                .filter(|p| {
                    let o = from + p * 4096;
                    rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(o)).is_ok_and(|x| x == o)
                })
                .count() as u64
        };
        let before = pages(at, len);
        assert!(before > 0 && before < len / 4096, "{before} pages");
        d.zero(at, len).unwrap();
        let mut buf = vec![1u8; len as usize];
        d.read(at, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "a byte not zeroed");
        let mut past = [0u8; 10];
        d.read(at + len, &mut past).unwrap();
        assert_eq!(past, [9u8; 10], "zeroed past the range");
        // The read above mapped the holes' pages; before it, none were
        // allocated by the zeroing itself (checked on a fresh range).
        let fresh = 5u64 << 20;
        d.zero(fresh, 1 << 20).unwrap();
        assert_eq!(pages(fresh, 1 << 20), 0, "zeroing a hole allocated pages");
    }

    #[test]
    fn discarding_a_range_of_a_memory_device_gives_back_its_whole_pages_and_keeps_the_edges() {
        let d = crate::device::open("memfd:8M", &Default::default()).unwrap();
        let fd = d.mapping().unwrap().fd;
        let (at, len) = (1u64 << 20, 1u64 << 20);
        d.write(at - 8, &[5u8; 1 << 20]).unwrap();
        d.write(at + len - 100, &[6u8; 300]).unwrap();
        // Not page-aligned at either end: the edge pages' bytes stay.
        assert!(d.discard(at + 8, len - 16).unwrap());
        let mut buf = vec![1u8; len as usize + 16];
        d.read(at - 8, &mut buf).unwrap();
        assert_eq!(
            &buf[..16],
            &[5u8; 16],
            "the bytes before, on the first page"
        );
        assert!(
            buf[16..4096 + 8].iter().all(|&b| b == 5),
            "the first page kept"
        );
        assert!(
            buf[4096 + 8..len as usize + 8 - 4096]
                .iter()
                .all(|&b| b == 0),
            "a whole page inside not discarded"
        );
        assert!(
            buf[len as usize + 8 - 100..].iter().all(|&b| b == 6),
            "the last page kept"
        );
        // The whole pages inside are holes of the file again (the read
        // above mapped them anew: discard again, and read nothing after).
        d.write(at + 8192, &[7u8; 8192]).unwrap();
        assert!(d.discard(at + 4096, len - 8192).unwrap());
        let next = rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(at + 4096)).unwrap();
        assert_eq!(next, at + len - 4096, "pages inside still in the file");
        assert_eq!(
            d.data_within(at, len),
            vec![(at, 4096), (at + len - 4096, 4096)],
            "the holes are reported"
        );
        // Less than a page: nothing to give back.
        assert!(!d.discard(at + 10, 100).unwrap());
        // A tmpfs file with every page allocated keeps them (a store into
        // a hole could meet a full tmpfs); a sparse one gives them back.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let full = dir.path().join("full.img");
        let spec = full.to_str().unwrap();
        let f = crate::device::open(
            spec,
            &crate::device::OpenOptions {
                create_size: Some(1 << 20),
            },
        )
        .unwrap();
        f.write(0, &[4u8; 8192]).unwrap();
        assert!(!f.discard(0, 1 << 20).unwrap(), "an allocated tmpfs file");
        drop(f);
        let sparse = dir.path().join("sparse.img");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let f = crate::device::open(sparse.to_str().unwrap(), &Default::default()).unwrap();
        f.write(0, &[4u8; 8192]).unwrap();
        assert!(f.discard(0, 1 << 20).unwrap(), "a sparse tmpfs file");
        assert_eq!(f.data_within(0, 1 << 20), vec![], "pages left");
        // A device that is not memory keeps its bytes.
        let ram = crate::device::RamDevice::new(1 << 20);
        ram.write(0, &[3u8; 8192]).unwrap();
        assert!(!ram.discard(0, 8192).unwrap());
        let mut b = [0u8; 8192];
        ram.read(0, &mut b).unwrap();
        assert_eq!(b, [3u8; 8192]);
    }

    #[test]
    fn d2_first_store_into_a_window_fills_its_page_tables() {
        let d = crate::device::open("memfd:8M", &Default::default()).unwrap();
        let m = d.mapping().unwrap();
        let w = PREFAULT as usize;
        assert_eq!(present(m.base as usize + w, w), 0);
        d.write(PREFAULT + 8192, &[1u8; 4096]).unwrap();
        assert_eq!(
            present(m.base as usize + w, w),
            w / 4096,
            "the whole window, not only the page written"
        );
        assert_eq!(
            present(m.base as usize + 2 * w, w),
            0,
            "the next window untouched"
        );
    }
}
