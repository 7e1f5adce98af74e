//! The DAX core: mapping files straight onto device memory with the semantics of
//! Linux `fs/dax.c` (SPEC M1-M14), on top of the user-space MMU in [`crate::vm`].
//!
//! * [`entry`]: per-file entries with entry locks and hashed wait queues.
//! * [`fault`]: fault resolution (holes, zero pages, allocate on write, 2 MiB).
//! * This module: the per-file state ([`DaxFile`]), [`File::mmap`] and
//!   [`Mapping`], and the hooks the fs calls when a file's layout changes
//!   (break layouts before blocks move, zero-page invalidation after allocation).
//!
//! Lock order (outermost first): file invalidate lock -> entry lock -> fs
//! checkpoint lock -> inode data lock; region state locks are taken with no fs
//! lock held, and never two at a time.
#![allow(unsafe_code)]

pub(crate) mod entry;
mod fault;
mod grow;

pub use entry::{Entry, EntryIndex, WaitTable};

use crate::device::DeviceKind;
use crate::fs::{Cell, Error, File, Fs, Result};
use crate::sync::{Mutex, RwLock};
use crate::vm::{self, space, FaultOwner, Prot, Region, RegionState, PAGE};
use crate::{BLOCKS_PER_HUGE, BLOCK_SIZE, HUGE_SIZE};
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use crate::vm::VmStats;

/// How long break-layouts and unmount wait for pinned pages before naming them.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// [`map_written`]. Only a hint: mapping goes through the fault path,
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

    /// The live regions mapping this file.
    pub fn regions(&self) -> Vec<Arc<Region>> {
        let mut v = self.regions.lock();
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(|w| w.upgrade()).collect()
    }

    pub(crate) fn is_mapped(&self) -> bool {
        // ORDERING: pairs with the Release store in `File::mmap`, made before
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

/// The fault owner of one region: the file system and the file.
#[derive(Debug)]
struct Owner {
    fs: Fs,
    cell: Arc<Cell>,
}

impl FaultOwner for Owner {
    fn fault(&self, region: &Arc<Region>, page: u64, write: bool, wp: bool, block: bool) -> bool {
        let how = if block {
            fault::How::Blocking
        } else {
            fault::How::Handler
        };
        fault::handle(&self.fs, &self.cell, region, page, write, wp, how)
    }

    fn flush(&self, region: &Region, pages: Range<u64>) -> std::io::Result<()> {
        flush_pages(&self.fs, region, pages, false)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn kernel_fault(&self) {
        vm::engine::bump(&self.fs.counters().kernel_faults);
    }
}

/// Counters of the fault engine, process-wide (zeros if no mapping was made yet).
pub fn stats() -> VmStats {
    vm::try_engine().map(|e| e.stats()).unwrap_or_default()
}

/// Make the caller's own stores to `[ptr, ptr+len)` durable: cache-line flush
/// and fence (or `msync` when the device is a regular file).
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

/// Flush the device ranges behind pages `r` of a region, then fence. With
/// `dirty_only`, pages under dirty tracking are flushed only if written since
/// the last such flush, and re-armed (SPEC M8: a store racing with this is
/// either flushed now or seen by the next scan).
fn flush_pages(fs: &Fs, region: &Region, r: Range<u64>, dirty_only: bool) -> Result<()> {
    let dev = fs.device();
    let mut flushed = 0u64;
    {
        let st = region.lock();
        if dirty_only && !st.ever_writable {
            // Never writable: no store went through this mapping (write_at
            // flushes its own data).
            return Ok(());
        }
        // The page runs to flush: device-mapped pages not under tracking
        // whole, and of the tracked ones those written (all of them if the
        // scan fails). A plain list: the scan's runs come sorted and apart,
        // and a range set's upkeep cost as much as the scan itself.
        let mut todo: Vec<Range<u64>> = Vec::new();
        for (k, _) in st.dev.overlapping(&r) {
            let k = k.start.max(r.start)..k.end.min(r.end);
            if dirty_only {
                todo.extend(st.tracked.gaps(&k));
            } else {
                todo.push(k);
            }
        }
        if dirty_only {
            let eng = vm::engine().map_err(Error::Busy)?;
            for t in st.tracked.overlapping(&r) {
                let t = t.start.max(r.start)..t.end.min(r.end);
                let (a, n) = (region.addr_of(t.start), (t.end - t.start) as usize * PAGE);
                match eng.take_written(a, n) {
                    Some(written) => todo.extend(written.iter().map(|w| {
                        let p0 = region.page_of(w.start);
                        let p1 = region.page_of(w.end - 1) + 1;
                        p0.max(t.start)..p1.min(t.end)
                    })),
                    None => todo.push(t),
                }
            }
        }
        for run in &todo {
            for (k, v) in st.dev.overlapping(run) {
                let a = k.start.max(run.start);
                let b = k.end.min(run.end);
                let blk = (a as i64 + v) as u64;
                dev.flush(blk * BLOCK_SIZE, (b - a) * BLOCK_SIZE);
                flushed += b - a;
            }
        }
    }
    fs.counters()
        .flushed_pages
        .fetch_add(flushed, crate::sync::Ordering::Relaxed);
    dev.fence()?;
    Ok(())
}

/// `fsync` of a file: flush what its shared mappings wrote.
pub(crate) fn sync_mappings(fs: &Fs, cell: &Arc<Cell>) -> Result<()> {
    if !cell.dax.is_mapped() {
        return Ok(());
    }
    map_pending(fs, cell);
    for r in cell.dax.regions() {
        if !r.private {
            flush_pages(fs, &r, r.pages(), true)?;
        }
    }
    Ok(())
}

/// A mapping of a file range into this process. Dropping it unmaps it.
#[derive(Debug)]
pub struct Mapping {
    file: File,
    region: Arc<Region>,
}

impl File {
    /// Map `len` bytes of the file from `offset` (page aligned) into memory.
    pub fn mmap(&self, offset: u64, len: usize, prot: Prot, flags: MapFlags) -> Result<Mapping> {
        if offset % PAGE as u64 != 0 {
            return Err(Error::Invalid("mmap offset not page aligned"));
        }
        if len == 0 {
            return Err(Error::Invalid("mmap length 0"));
        }
        let len = len.div_ceil(PAGE) * PAGE;
        if offset.checked_add(len as u64).is_none() {
            return Err(Error::Invalid("mmap range overflows"));
        }
        if flags.sync && flags.private {
            return Err(Error::Invalid("MAP_SYNC needs a shared mapping"));
        }
        if !self.readable() {
            return Err(Error::Access("mmap of a file not open for reading"));
        }
        if prot == Prot::ReadWrite && !flags.private && !self.writable() {
            return Err(Error::Access(
                "shared writable mmap of a file not open for writing",
            ));
        }
        let fs = self.fs().clone();
        let dev = fs.device().clone();
        let Some(dm) = dev.mapping() else {
            return Err(Error::NotSupported(
                "mmap on a device that cannot be mapped",
            ));
        };
        let dev_page = dev.info().page_size;
        let eng = vm::engine().map_err(|e| Error::Busy(format!("fault engine: {e}")))?;
        let cell = self.cell().clone();
        // Address congruent to the file offset modulo 2 MiB, so aligned file
        // ranges can be mapped with 2 MiB mappings.
        let phase = (offset % HUGE_SIZE) as usize;
        let base = space::reserve(len, HUGE_SIZE as usize, phase).map_err(io)?;
        if let Err(e) = space::place_placeholder(&eng.uffd, base, len, prot) {
            space::unmap(base, len);
            return Err(io(e));
        }
        let owner: Arc<dyn FaultOwner> = Arc::new(Owner {
            fs: fs.clone(),
            cell: cell.clone(),
        });
        use std::os::fd::AsRawFd;
        let region = Arc::new(Region {
            base,
            len,
            first_page: offset / PAGE as u64,
            private: flags.private,
            sync: flags.sync,
            dev_fd: dm.fd.as_raw_fd(),
            dev_page,
            owner,
            refs: fs.page_refs().clone(),
            state: Mutex::new(RegionState {
                prot: Some(prot),
                ever_writable: prot == Prot::ReadWrite && !flags.private,
                windows_ok: prot == Prot::Read
                    && !flags.private
                    && eng.uffd.has_minor_shmem()
                    && matches!(dev.info().kind, DeviceKind::Memfd | DeviceKind::Shm)
                    && dev_page == PAGE as u64,
                ..Default::default()
            }),
        });
        cell.dax
            .ever_mapped
            .store(true, crate::sync::Ordering::Release);
        cell.dax.regions.lock().push(Arc::downgrade(&region));
        eng.add(region.clone());
        let m = Mapping {
            file: self.dup(),
            region,
        };
        if flags.populate {
            m.populate(prot == Prot::ReadWrite && !flags.private);
        }
        Ok(m)
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e)
}

impl Mapping {
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.base as *mut u8
    }
    pub fn len(&self) -> usize {
        self.region.len
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// File offset shown at the first byte.
    pub fn offset(&self) -> u64 {
        self.region.first_page * PAGE as u64
    }
    pub fn file(&self) -> &File {
        &self.file
    }

    fn pages_of(&self, off: usize, len: usize) -> Result<Range<u64>> {
        if off % PAGE != 0 || off.checked_add(len).is_none_or(|e| e > self.len()) {
            return Err(Error::Invalid(
                "range outside the mapping or not page aligned",
            ));
        }
        let a = self.region.first_page + (off / PAGE) as u64;
        Ok(a..a + len.div_ceil(PAGE) as u64)
    }

    /// Resolve every page now, as `MAP_POPULATE` does.
    fn populate(&self, write: bool) {
        let r = self.region.pages();
        let mut p = r.start;
        while p < r.end {
            let next = {
                let st = self.region.lock();
                if let Some((k, _)) = st.dev.get_key_value(&p) {
                    Some(k.end)
                } else {
                    st.zero.get(&p).map(|k| k.end)
                }
            };
            match next {
                // Skip what a fault (this one or fault-around) already mapped.
                Some(n) => p = n,
                None => {
                    self.region.owner.fault(&self.region, p, write, false, true);
                    p += 1;
                }
            }
        }
    }

    /// `msync(MS_SYNC)`: make stores to `[off, off+len)` durable.
    pub fn msync(&self, off: usize, len: usize) -> Result<()> {
        let r = self.pages_of(off, len)?;
        if self.region.private {
            return Ok(());
        }
        flush_pages(self.file.fs(), &self.region, r, true)
    }

    /// Flush and fence the caller's own stores in `[off, off+len)` (any alignment).
    pub fn persist(&self, off: usize, len: usize) -> Result<()> {
        if off.checked_add(len).is_none_or(|e| e > self.len()) {
            return Err(Error::Invalid("range outside the mapping"));
        }
        persist(self.as_ptr().wrapping_add(off), len)
    }

    /// `mprotect` of the whole mapping.
    pub fn protect(&self, prot: Prot) -> Result<()> {
        let shared_rw = prot == Prot::ReadWrite && !self.region.private;
        if shared_rw && !self.file.writable() {
            return Err(Error::Access("file not open for writing"));
        }
        // Making a shared mapping writable: pages showing blocks that other
        // files share (reflink) are unmapped first, so a store faults and
        // copies them (the mapping never writes into another file's block).
        // Faults hold the invalidate lock shared: none is half way.
        let cell = self.file.cell();
        let fs = self.file.fs();
        // A writable mapping has no windows (their pages could not be under
        // dirty tracking): none opens from now on, and the open ones close.
        let windows = shared_rw && {
            let mut st = self.region.lock();
            st.windows_ok = false;
            !st.windows.is_empty()
        };
        let _inv = (shared_rw && (windows || fs.has_shared())).then(|| cell.dax.invalidate.write());
        let mut st = self.region.lock();
        if windows {
            let eng = vm::engine().map_err(Error::Busy)?;
            let all = self.region.pages();
            self.region
                .close_windows(&mut st, &eng.uffd, all)
                .map_err(io)?;
        }
        if _inv.is_some() && st.prot != Some(Prot::ReadWrite) {
            let eng = vm::engine().map_err(Error::Busy)?;
            let runs: Vec<(Range<u64>, i64)> =
                st.dev.iter().map(|(k, v)| (k.clone(), *v)).collect();
            for (k, v) in runs {
                let first = (k.start as i64 + v) as u64;
                for sh in fs.shared_in(first, k.end - k.start) {
                    let p = (sh.start as i64 - v) as u64..(sh.end as i64 - v) as u64;
                    space::replace_with_placeholder(
                        &eng.uffd,
                        self.region.addr_of(p.start),
                        (p.end - p.start) as usize * PAGE,
                        st.prot.unwrap_or(Prot::Read),
                    )
                    .map_err(io)?;
                    self.region.forget_device(&mut st, p);
                }
            }
        }
        space::protect(self.region.base, self.region.len, prot).map_err(io)?;
        st.prot = Some(prot);
        // Pages mapped while read-only are not under dirty tracking: msync
        // flushes them whole from now on (conservative).
        st.ever_writable |= shared_rw;
        Ok(())
    }

    /// `munmap` of part of the mapping: the pages become inaccessible (a store or
    /// load gets SIGSEGV) and stay reserved until the mapping is dropped.
    pub fn unmap_range(&self, off: usize, len: usize) -> Result<()> {
        let r = self.pages_of(off, len)?;
        let mut st = self.region.lock();
        let addr = self.region.addr_of(r.start);
        let n = (r.end - r.start) as usize * PAGE;
        // A fresh PROT_NONE reservation replaces the pages atomically.
        // SAFETY: the range belongs to this mapping's region.
        let p = unsafe {
            libc::mmap(
                addr as *mut _,
                n,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io(std::io::Error::last_os_error()));
        }
        self.region.forget_device(&mut st, r.clone());
        st.zero.remove(r.clone());
        st.cow.remove(r.clone());
        st.beyond_eof.remove(r.clone());
        st.windows.remove(r.clone());
        self.region.forget_poisoned(&mut st, r.clone());
        st.gone.insert(r);
        Ok(())
    }

    /// Pin `[off, off+len)` for in-flight I/O (the analogue of
    /// `get_user_pages`): fault the pages in (for writing if `write`) and take a
    /// reference on each device page behind them. A truncate or punch of the
    /// range waits until the pin is dropped. Zero pages and private copies have
    /// no device page and take no reference.
    pub fn pin(&self, off: usize, len: usize, write: bool) -> Result<Pin<'_>> {
        let r = self.pages_of(off - off % PAGE, len + off % PAGE)?;
        if write && !self.region.private && self.region.lock().prot != Some(Prot::ReadWrite) {
            return Err(Error::Access("pin for writing of a read-only mapping"));
        }
        let mut runs = Vec::new();
        for p in r.clone() {
            let mapped = Region::dev_of(&self.region.lock(), p).is_some();
            if !mapped {
                self.region.owner.fault(
                    &self.region,
                    p,
                    write && !self.region.private,
                    false,
                    true,
                );
            }
            let st = self.region.lock();
            if let Some(b) = Region::dev_of(&st, p) {
                // Taken under the region lock: a truncate unmaps under the same
                // lock first, then waits for this reference.
                self.region.refs.get(b, 1);
                runs.push(b);
            }
        }
        Ok(Pin {
            m: self,
            blocks: runs,
        })
    }

    /// A long-term pin (the analogue of `FOLL_LONGTERM`, e.g. an RDMA
    /// registration) is refused, as the kernel refuses it on fsdax pages: it
    /// would block truncate indefinitely.
    pub fn pin_longterm(&self, _off: usize, _len: usize) -> Result<Pin<'_>> {
        Err(Error::NotSupported(
            "long-term pins of DAX pages (FOLL_LONGTERM)",
        ))
    }

    /// Is file page `page` currently mapped to the device in this mapping?
    pub fn device_block_of(&self, off: usize) -> Option<u64> {
        let p = self.region.first_page + (off / PAGE) as u64;
        Region::dev_of(&self.region.lock(), p)
    }
}

/// Pinned device pages of a mapping; dropping it unpins them.
#[derive(Debug)]
pub struct Pin<'a> {
    m: &'a Mapping,
    blocks: Vec<u64>,
}

impl Pin<'_> {
    /// Device blocks held by this pin.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        for b in &self.blocks {
            self.m.region.refs.put(*b, 1);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let Ok(eng) = vm::engine() else { return };
        let mut st = self.region.lock();
        st.dead = true;
        eng.remove(self.region.base);
        let all = self.region.pages();
        self.region.forget_device(&mut st, all.clone());
        self.region.forget_poisoned(&mut st, all);
        space::unmap(self.region.base, self.region.len);
        drop(st);
        let me = Arc::as_ptr(&self.region);
        self.file
            .cell()
            .dax
            .regions
            .lock()
            .retain(|w| w.as_ptr() != me && w.strong_count() > 0);
    }
}

// ---- hooks called by the fs when a file's layout changes ----

/// Pages `[a, b)` of the file got blocks (write, fallocate, fault): no mapping
/// may keep showing the zero page there (SPEC M3), nor a SIGBUS marker.
pub(crate) fn after_alloc(fs: &Fs, cell: &Cell, a: u64, b: u64) {
    if !cell.dax.is_mapped() {
        return;
    }
    let t = fs.waits();
    for k in cell.dax.entries.keys_in(a, b) {
        if let Some(l) = cell.dax.entries.lock_at(t, k) {
            if l.entry.is_zero() {
                fault::zap_zero(cell, k..k + l.entry.pages());
                l.remove();
            } else {
                l.keep();
            }
        }
    }
    fault::zap_zero(cell, a..b);
}

/// A `write_at` gave file pages `[a, b)` new blocks (or made them part of the
/// file): they are to be mapped into the file's shared mappings as the read
/// fault that would come later maps them (fault-around at write time), so a
/// program that reads its own appends through a mapping (LMDB without
/// `MDB_WRITEMAP`) skips a userfaultfd round trip per window. Appends are
/// collected into one run of pages and mapped at the next fsync, when the run
/// stops growing, or when it reaches 2 MiB: one `mmap` per run instead of one
/// per write. A page accessed before that faults and the fault maps the run.
/// The caller holds no lock (mapping takes the invalidate and entry locks).
pub(crate) fn map_written(fs: &Fs, cell: &Arc<Cell>, a: u64, b: u64) {
    if !cell.dax.is_mapped() {
        return;
    }
    let done = {
        let mut run = cell.dax.ahead.lock();
        if run.is_empty() {
            *run = a..b;
            None
        } else if a <= run.end && b >= run.start {
            *run = run.start.min(a)..run.end.max(b);
            (run.end - run.start >= BLOCKS_PER_HUGE).then(|| std::mem::replace(&mut *run, 0..0))
        } else {
            Some(std::mem::replace(&mut *run, a..b))
        }
    };
    if let Some(r) = done {
        map_now(fs, cell, r);
    }
}

/// Map the pages [`map_written`] collected (at fsync).
fn map_pending(fs: &Fs, cell: &Arc<Cell>) {
    let r = std::mem::replace(&mut *cell.dax.ahead.lock(), 0..0);
    if !r.is_empty() {
        map_now(fs, cell, r);
    }
}

/// Map file pages `r` (up to end of file) into every shared mapping that does
/// not show them yet, through the fault path: one call per extent window.
/// Pages a mapping already shows, or has given back, are left alone.
fn map_now(fs: &Fs, cell: &Arc<Cell>, r: Range<u64>) {
    let eof = cell.data.read().attr.size.div_ceil(PAGE as u64);
    for reg in cell.dax.regions() {
        if reg.private {
            continue;
        }
        let clip = reg.clip(r.start..r.end.min(eof));
        let mut p = clip.start;
        while p < clip.end {
            let shown = {
                let st = reg.lock();
                if st.dead {
                    break;
                }
                st.first_shown(&(p..p + 1), true).is_some() || st.gone.contains(&p)
            };
            if !shown {
                fault::handle(fs, cell, &reg, p, false, false, fault::How::Ahead);
            }
            let st = reg.lock();
            p = match st.dev.get_key_value(&p) {
                Some((k, _)) => k.end.max(p + 1),
                // Not mapped (EAGAIN kept coming): the rest is left to faults.
                None if !shown => break,
                None => p + 1,
            };
        }
        if !clip.is_empty() && clip.end == eof {
            open_window(fs, cell, &reg, eof);
        }
    }
}

/// Pages a window past end of file covers: as many as the file has up to the
/// window (so a growing file needs few windows, each one `mremap` that waits
/// for a handler thread to read its event, ~60 us), at least 16 MiB, at most
/// 1 GiB. A window costs no memory: it has no page-table entries.
fn window_pages(eof: u64, first: u64) -> u64 {
    (eof - first.min(eof)).clamp(8 * BLOCKS_PER_HUGE, 512 * BLOCKS_PER_HUGE)
}

/// `reg` shows the file up to its end (page `eof`): put a window over the
/// pages past it, predicting that the file grows onto the device blocks that
/// follow its last one (the allocator's goal), so that pages appended later
/// are shown with `UFFDIO_CONTINUE` instead of a new mapping each (LMDB's
/// transactions without `MDB_WRITEMAP`). Where the prediction fails the
/// pages are simply mapped over the window. Only for shared mappings that
/// were never writable, on shmem devices; taken with no lock held.
fn open_window(fs: &Fs, cell: &Cell, reg: &Region, eof: u64) {
    // The window the file's last page predicts, if none is there yet (a
    // window there that predicted other blocks is stale: replaced).
    let wanted = |st: &RegionState| -> Option<i64> {
        if !st.windows_ok || st.dead || eof == 0 {
            return None;
        }
        let delta = *st.dev.get(&(eof - 1))?;
        (st.windows.get(&eof) != Some(&delta)).then_some(delta)
    };
    if wanted(&reg.lock()).is_none() {
        return;
    }
    let Ok(eng) = vm::engine() else { return };
    // No fault of the file is resolved meanwhile (the window replaces
    // pages; the region state cannot change under it but for markers).
    let _inv = cell.dax.invalidate.write();
    let mut st = reg.lock();
    let Some(delta) = wanted(&st) else { return };
    let dev0 = (eof as i64 + delta) as u64;
    let dev_blocks = fs.device().info().len / BLOCK_SIZE;
    let mut end = (eof + window_pages(eof, reg.first_page))
        .min(reg.pages().end)
        .min(eof + dev_blocks.saturating_sub(dev0));
    // Up to the first page the region shows or gave back. SIGBUS markers past
    // end of file and older windows there are replaced: their pages show
    // nothing (past end of file no page shows the device).
    let busy = [
        st.first_shown(&(eof..end), false),
        st.poisoned.overlapping(&(eof..end)).next().map(|k| k.start),
        st.gone.overlapping(&(eof..end)).next().map(|k| k.start),
    ];
    if let Some(b) = busy.into_iter().flatten().min() {
        end = end.min(b.max(eof));
    }
    if end <= eof {
        return;
    }
    match reg.open_window(&mut st, &eng.uffd, eof..end, dev0) {
        Ok(()) => vm::engine::bump(&fs.counters().windows),
        Err(e) => tracing::debug!("no window past page {eof} of inode {}: {e}", cell.ino),
    }
}

/// The file grew to `new_size`: pages that were past end of file may be
/// accessed again.
pub(crate) fn after_grow(cell: &Cell, new_size: u64) {
    if !cell.dax.is_mapped() {
        return;
    }
    // The new size is set: either a racing fault sees this and drops its
    // marker, or the loop below does (`grow.rs`).
    if !cell.dax.grow.grew() {
        return;
    }
    let eof = new_size.div_ceil(PAGE as u64);
    for r in cell.dax.regions() {
        let st = &mut *r.lock();
        if st.dead {
            continue;
        }
        let hit: Vec<Range<u64>> = st.beyond_eof.overlapping(&(0..eof)).cloned().collect();
        for h in hit {
            let h = h.start..h.end.min(eof);
            let _ = space::discard(r.addr_of(h.start), (h.end - h.start) as usize * PAGE);
            st.beyond_eof.remove(h);
        }
    }
}

/// Break layouts (SPEC M12): unmap file pages `[a, b)` from every mapping, drop
/// their entries, and wait until no page behind them is pinned. The caller holds
/// the file's invalidate lock exclusively and has not yet changed the extents.
pub(crate) fn break_layouts(fs: &Fs, cell: &Cell, a: u64, b: u64, wait: bool) -> Result<()> {
    if !cell.dax.is_mapped() {
        return Ok(());
    }
    zap_range(fs, cell, a, b)?;
    // Pins (in-flight I/O) on the blocks about to be freed. Blocks other files
    // share stay allocated, and their references may belong to those files'
    // mappings: not waited for (a block freed later still waits, as a zombie,
    // until it is idle).
    let timeout = if wait { PIN_TIMEOUT } else { Duration::ZERO };
    let mut runs = rangemap::RangeSet::new();
    for (blk, n) in fs.device_runs(cell, a, b) {
        runs.insert(blk..blk + n);
        for sh in fs.shared_in(blk, n) {
            runs.remove(sh);
        }
    }
    for r in runs.iter() {
        let (blk, n) = (r.start, r.end - r.start);
        if let Err((busy, count)) = fs.page_refs().wait_idle(blk, n, timeout) {
            return Err(Error::Busy(format!(
                "device block {busy} of inode {} is pinned ({count} references){}",
                cell.ino,
                if wait {
                    format!(" after waiting {PIN_TIMEOUT:?}")
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(())
}

/// [`zap_range`] for the fs (copy on write): nothing to do for a file that
/// was never mapped.
pub(crate) fn zap_file_range(fs: &Fs, cell: &Cell, a: u64, b: u64) -> Result<()> {
    if !cell.dax.is_mapped() {
        return Ok(());
    }
    zap_range(fs, cell, a, b)
}

/// Unmap file pages `[a, b)` from every mapping and drop their entries (the
/// analogue of `unmap_mapping_range`). The caller holds the invalidate lock
/// exclusively.
fn zap_range(fs: &Fs, cell: &Cell, a: u64, b: u64) -> Result<()> {
    let eng = vm::engine().map_err(Error::Busy)?;
    for r in cell.dax.regions() {
        let st = &mut *r.lock();
        if st.dead {
            continue;
        }
        let clip = r.clip(a..b);
        if clip.is_empty() || !Region::occupied(st, &clip) {
            continue;
        }
        let mut live = rangemap::RangeSet::new();
        live.insert(clip.clone());
        for g in st.gone.overlapping(&clip) {
            live.remove(g.clone());
        }
        let prot = st.prot.unwrap_or(Prot::Read);
        for l in live.iter() {
            space::replace_with_placeholder(
                &eng.uffd,
                r.addr_of(l.start),
                (l.end - l.start) as usize * PAGE,
                prot,
            )
            .map_err(io)?;
        }
        r.forget_device(st, clip.clone());
        st.zero.remove(clip.clone());
        st.cow.remove(clip.clone());
        st.beyond_eof.remove(clip.clone());
        st.windows.remove(clip.clone());
        r.forget_poisoned(st, clip);
        vm::engine::bump(&fs.counters().invalidations);
    }
    let t = fs.waits();
    for k in cell.dax.entries.keys_in(a, b) {
        if let Some(l) = cell.dax.entries.lock_at(t, k) {
            l.remove();
        }
    }
    Ok(())
}

/// A media error hit file page `page` (SPEC E3): unmap it from every mapping
/// (the whole 2 MiB chunk where a mapping showed it with a 2 MiB page, so the
/// other 511 pages fault back in as 4 KiB pages), put a SIGBUS marker on it and
/// list it in the process's poisoned-page table, with `si_addr_lsb` 21 where it
/// was part of a 2 MiB mapping and 12 elsewhere. Pins are not waited for (the
/// data is gone either way). Returns the number of mappings now showing poison.
pub(crate) fn poison_pages(fs: &Fs, cell: &Cell, page: u64) -> usize {
    if !cell.dax.is_mapped() {
        return 0;
    }
    use entry::PMD_PAGES;
    let Ok(eng) = vm::engine() else { return 0 };
    let _inv = cell.dax.invalidate.write();
    let chunk = page - page % PMD_PAGES;
    let pmd = chunk..chunk + PMD_PAGES;
    let regions: Vec<(Arc<Region>, bool)> = cell
        .dax
        .regions()
        .into_iter()
        .filter(|r| r.pages().contains(&page))
        .map(|r| {
            let huge = {
                let st = r.lock();
                !st.dead
                    && r.clip(pmd.clone()) == pmd
                    && r.addr_of(chunk) % (PMD_PAGES as usize * PAGE) == 0
                    && st
                        .dev
                        .get_key_value(&chunk)
                        .is_some_and(|(k, _)| k.start <= pmd.start && k.end >= pmd.end)
            };
            (r, huge)
        })
        .collect();
    // On a hugetlbfs device the 2 MiB page is the unit of mapping, so it is
    // the unit of loss too (as for a hugetlb or 2 MiB device-dax page).
    let lose_chunk = |r: &Region| {
        r.dev_page > PAGE as u64
            && r.clip(pmd.clone()) == pmd
            && r.addr_of(chunk) % (PMD_PAGES as usize * PAGE) == 0
    };
    let span = if regions.iter().any(|(r, h)| *h || lose_chunk(r)) {
        pmd.clone()
    } else {
        page..page + 1
    };
    if let Err(e) = zap_range(fs, cell, span.start, span.end) {
        tracing::error!("unmapping poisoned page {page} of inode {}: {e}", cell.ino);
    }
    let mut n = 0;
    for (r, huge) in regions {
        let mut st = r.lock();
        if st.dead {
            continue;
        }
        if lose_chunk(&r) {
            if mark_chunk_lost(&r, &mut st, chunk, eng) {
                n += 1;
            }
            continue;
        }
        let addr = r.addr_of(page);
        match eng.uffd.poison(addr, PAGE, false) {
            Ok(()) => {
                st.poisoned.insert(page..page + 1);
                vm::signals::add(addr, huge);
                n += 1;
            }
            Err(e) => tracing::error!("poison marker at {addr:#x}: {e}"),
        }
    }
    n
}

/// Put poison markers on the whole 2 MiB page of file pages `chunk..` of a
/// hugetlbfs-device region (its unit of loss): every access in it gets
/// `BUS_MCEERR_AR` with `si_addr_lsb` 21.
pub(crate) fn mark_chunk_lost(
    r: &Region,
    st: &mut RegionState,
    chunk: u64,
    eng: &vm::Engine,
) -> bool {
    use entry::PMD_PAGES;
    let addr = r.addr_of(chunk);
    match eng.uffd.poison(addr, PMD_PAGES as usize * PAGE, false) {
        Ok(()) => {
            st.poisoned.insert(chunk..chunk + PMD_PAGES);
            vm::signals::add_chunk(addr);
            true
        }
        Err(e) => {
            tracing::error!("poison markers at {addr:#x} (2 MiB): {e}");
            false
        }
    }
}

/// File page `page` no longer has a media error (SPEC E4): drop its SIGBUS
/// markers, so the next access faults the (new) block in.
pub(crate) fn unpoison_pages(cell: &Cell, page: u64) {
    if !cell.dax.is_mapped() {
        return;
    }
    for r in cell.dax.regions() {
        let mut st = r.lock();
        if st.dead || !st.poisoned.contains(&page) {
            continue;
        }
        // A hugetlbfs device lost the whole 2 MiB page: it comes back whole.
        let span = if r.dev_page > PAGE as u64 {
            let c = page - page % entry::PMD_PAGES;
            r.clip(c..c + entry::PMD_PAGES)
        } else {
            page..page + 1
        };
        let _ = space::discard(
            r.addr_of(span.start),
            (span.end - span.start) as usize * PAGE,
        );
        r.forget_poisoned(&mut st, span);
    }
}
