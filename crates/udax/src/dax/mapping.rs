//! A mapping of a file range into this process ([`Map`]): made over a
//! [`DaxInode`], unmapped when dropped; msync, protect, partial unmap, pins.
//! The file system's public `Mapping` wraps it with the open file.

use super::iomap::{DaxInode, Lookup};
use super::{io, DaxDevice, Error, MapFlags, Owner, Result};
use crate::device::DeviceKind;
use crate::sync::Mutex;
use crate::vm::engine::bump;
use crate::vm::{self, Area, FaultOwner, Prot, Region, RegionState, PAGE};
use crate::{BLOCK_SIZE, HUGE_SIZE};
use std::ops::Range;
use std::sync::Arc;

/// Flush the device ranges behind pages `r` of a region, then fence. With
/// `dirty_only`, pages under dirty tracking are flushed only if written since
/// the last such flush, and re-armed (SPEC M8: a store racing with this is
/// either flushed now or seen by the next scan).
pub(super) fn flush_pages(
    dd: &DaxDevice,
    region: &Region,
    r: Range<u64>,
    dirty_only: bool,
) -> Result<()> {
    let dev = &dd.dev;
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
    // ORDERING: a statistic; nothing is published through it.
    dd.counters
        .flushed_pages
        .fetch_add(flushed, crate::sync::Ordering::Relaxed);
    dev.fence()?;
    Ok(())
}

/// Make `region` known: to the file (whose layout changes unmap it from now
/// on) and to the engine (which resolves its faults).
fn publish(inode: &dyn DaxInode, eng: &vm::Engine, region: &Arc<Region>) {
    let file = inode.dax();
    // ORDERING: Release, before the region is published: pairs with the
    // Acquire load in `DaxFile::is_mapped`.
    file.ever_mapped.store(true, crate::sync::Ordering::Release);
    file.regions.lock().push(Arc::downgrade(region));
    eng.add(region.clone());
}

/// A mapping of a file range into this process. Dropping it unmaps it.
#[derive(Debug)]
pub(crate) struct Map {
    inode: Arc<dyn DaxInode>,
    region: Arc<Region>,
}

impl Map {
    /// Map `len` bytes of the file from `offset` (page aligned). The caller
    /// checked the file's access mode against `prot` and `flags`.
    pub fn new(
        inode: Arc<dyn DaxInode>,
        offset: u64,
        len: usize,
        prot: Prot,
        flags: MapFlags,
    ) -> Result<Map> {
        Self::new_in(inode, offset, len, prot, flags, None)
    }

    /// This mapping of the parent, inherited by a forked child, made anew
    /// at the same address over `inode` (the child's own open of the file,
    /// under its own fault engine and lease): every page faults again
    /// through the child, so a later truncate or punch by any process
    /// reaches it. The old mapping is the parent's (its file objects speak
    /// for the parent): it is never dropped or used again. Refused for a
    /// mapping of this very process. The pages the parent had unmapped
    /// stay unmapped. A private mapping keeps its private copies (the
    /// pages the parent had stored to before the fork, which the engine's
    /// fork handler let the child inherit): read out first, stored into
    /// the new mapping after (the kernel copies them again), so the child
    /// sees what the parent saw at the fork, and the file elsewhere.
    pub fn renew(self, inode: Arc<dyn DaxInode>, flags: MapFlags) -> Result<Map> {
        if self.region.private != flags.private {
            return Err(Error::Invalid("private and shared mappings differ"));
        }
        // Checked again by `new_in`, but here before the old mapping is
        // handed over: a failure must leave it as it was.
        if inode.device().dev.mapping().is_none() {
            return Err(Error::NotSupported(
                "mmap on a device that cannot be mapped",
            ));
        }
        let eng = vm::engine().map_err(|e| Error::Busy(format!("fault engine: {e}")))?;
        if eng
            .region_at(self.region.base())
            .is_some_and(|r| Arc::ptr_eq(&r, &self.region))
        {
            return Err(Error::Invalid("the mapping is this process's own"));
        }
        // The parent's: its objects are not dropped here (see above).
        let old = std::mem::ManuallyDrop::new(self);
        let (prot, gone) = {
            let st = old.region.lock();
            (st.prot.unwrap_or(Prot::Read), st.gone.clone())
        };
        let copies = if old.region.private {
            use std::os::fd::AsRawFd;
            let pm = std::fs::File::open("/proc/self/pagemap").map_err(io)?;
            old.region.copies(pm.as_raw_fd()).map_err(io)?
        } else {
            Vec::new()
        };
        let offset = old.offset();
        let area = old.region.hand_over(&eng.uffd, prot).map_err(io)?;
        let m = Self::new_in(inode, offset, area.bytes(), prot, flags, Some(area))?;
        if !copies.is_empty() {
            if prot != Prot::ReadWrite {
                m.protect(Prot::ReadWrite)?;
            }
            for (page, bytes) in copies.iter().filter(|(p, _)| !gone.contains(p)) {
                m.region.store_page(*page, bytes).map_err(io)?;
            }
            if prot != Prot::ReadWrite {
                m.protect(prot)?;
            }
        }
        for g in gone.iter() {
            let off = (g.start - m.region.first_page) as usize * PAGE;
            m.unmap_range(off, (g.end - g.start) as usize * PAGE)?;
        }
        Ok(m)
    }

    fn new_in(
        inode: Arc<dyn DaxInode>,
        offset: u64,
        len: usize,
        prot: Prot,
        flags: MapFlags,
        area: Option<Area>,
    ) -> Result<Map> {
        if !offset.is_multiple_of(PAGE as u64) {
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
        let dd = inode.device();
        let dev = dd.dev.clone();
        let Some(dm) = dev.mapping() else {
            return Err(Error::NotSupported(
                "mmap on a device that cannot be mapped",
            ));
        };
        let dev_page = dev.info().page_size;
        let eng = vm::engine().map_err(|e| Error::Busy(format!("fault engine: {e}")))?;
        use std::os::fd::AsRawFd;
        let dev_fd = dm.fd.as_raw_fd();
        let windows_ok = prot == Prot::Read
            && !flags.private
            && eng.uffd.has_minor_shmem()
            && matches!(dev.info().kind, DeviceKind::Memfd | DeviceKind::Shm)
            && dev_page == PAGE as u64;
        let made = |area: Area| -> Arc<Region> {
            let owner: Arc<dyn FaultOwner> = Arc::new(Owner {
                inode: inode.clone(),
            });
            Arc::new(Region {
                area,
                first_page: offset / PAGE as u64,
                private: flags.private,
                dev_fd,
                dev_page,
                owner,
                refs: dd.page_refs.clone(),
                state: Mutex::new(RegionState {
                    prot: Some(prot),
                    ever_writable: prot == Prot::ReadWrite && !flags.private,
                    windows_ok,
                    ..Default::default()
                }),
            })
        };
        if area.is_none() && (len as u64) < HUGE_SIZE && dev_page == PAGE as u64 {
            if let Some(m) = Self::shown_whole(&inode, offset, len, prot, flags, dev_fd, &made) {
                return Ok(m);
            }
        }
        // Address congruent to the file offset modulo 2 MiB, so aligned file
        // ranges can be mapped with 2 MiB mappings.
        let phase = (offset % HUGE_SIZE) as usize;
        let area = match area {
            None => Area::reserve(&eng.uffd, len, HUGE_SIZE as usize, phase, prot).map_err(io)?,
            Some(a) => a,
        };
        let region = made(area);
        publish(&*inode, eng, &region);
        let m = Map { inode, region };
        if flags.populate {
            m.populate(prot == Prot::ReadWrite && !flags.private);
        }
        Ok(m)
    }

    /// A mapping smaller than 2 MiB (so never shown with a 2 MiB page) of
    /// file pages that one extent maps, all inside the file, on a device of
    /// 4 KiB pages, made showing the device from the start: one `mmap` of
    /// the device range at a fresh address, instead of a registered
    /// placeholder whose first access faults to a handler thread (a wake-up
    /// each way, ~45 us on an idle VM) that maps the same range over it;
    /// the kernel's own faults fill its page tables.
    /// This is what that fault would do (`fault::Cx::mapped_pte`, a 4 KiB
    /// fault whose fault-around reaches the extent's end), decided under the
    /// same lock and by the same rules: the invalidate lock held shared (no
    /// truncate, punch, copy on write, clone or media error handling changes
    /// the layout meanwhile; each of them zaps this region once it is
    /// published), no media error in the range, no block shared with another
    /// file when the mapping could write it. The pages hold references
    /// (`Region::note_shown`), their entries become block entries, and a
    /// writable shared mapping's range is under dirty tracking unprotected
    /// (a page the kernel's fault maps there counts as written until the
    /// next msync flushes and protects it). Anything else (a hole, a page past end of file, two extents,
    /// a media error, a shared block, a lease not to be had) returns `None`
    /// and the mapping is made the usual way.
    fn shown_whole(
        inode: &Arc<dyn DaxInode>,
        offset: u64,
        len: usize,
        prot: Prot,
        flags: MapFlags,
        dev_fd: std::os::fd::RawFd,
        made: &dyn Fn(Area) -> Arc<Region>,
    ) -> Option<Map> {
        let eng = vm::engine().ok()?;
        if !inode.prepare(true) {
            return None;
        }
        let dax = inode.dax();
        let _inv = dax.invalidate.read();
        inode.ready().ok()?;
        let first = offset / PAGE as u64;
        let n = (len / PAGE) as u64;
        if first + n > inode.size().div_ceil(PAGE as u64) {
            return None;
        }
        let Lookup::Mapped { dev_blk, len: run } = inode.lookup(first) else {
            return None;
        };
        // Checked again once the region is published (below).
        let fits = || {
            inode.first_bad(dev_blk, n).is_none()
                && (flags.private
                    || prot != Prot::ReadWrite
                    || !inode.has_shared()
                    || inode.shared_in(dev_blk, n).is_empty())
        };
        if run < n || !fits() {
            return None;
        }
        let area = Area::map_device(
            len,
            dev_fd,
            dev_blk * PAGE as u64,
            prot,
            flags.private,
            flags.populate,
        )
        .inspect_err(|e| tracing::debug!("mapping {len} bytes whole: {e}"))
        .ok()?;
        let region = made(area);
        {
            let mut st = region.lock();
            region.note_shown(&mut st, region.pages(), dev_blk);
            if !flags.private && st.ever_writable && eng.track(region.base(), len, false) {
                st.tracked.insert(region.pages());
            }
        }
        publish(&**inode, eng, &region);
        let m = Map {
            inode: inode.clone(),
            region,
        };
        // A media error recorded after the check above found no region to
        // unmap if it looked before `publish`: looked at again now. (Either
        // this sees the error, or its handler sees the region and waits for
        // the invalidate lock to unmap it: both sides write, then read,
        // under the file's region list lock and the bad-block table's.)
        if !fits() {
            drop(m);
            return None;
        }
        dax.entries.insert_run_if_vacant(first..first + n, dev_blk);
        bump(&inode.device().counters.whole_maps);
        Some(m)
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.region.base() as *mut u8
    }
    pub fn len(&self) -> usize {
        self.region.bytes()
    }
    /// A `MAP_PRIVATE` mapping.
    pub fn private(&self) -> bool {
        self.region.private
    }
    /// File offset shown at the first byte.
    pub fn offset(&self) -> u64 {
        self.region.first_page * PAGE as u64
    }
    fn pages_of(&self, off: usize, len: usize) -> Result<Range<u64>> {
        if !off.is_multiple_of(PAGE) || off.checked_add(len).is_none_or(|e| e > self.len()) {
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
        flush_pages(self.inode.device(), &self.region, r, true)
    }

    /// Flush and fence the caller's own stores in `[off, off+len)` (any alignment).
    pub fn persist(&self, off: usize, len: usize) -> Result<()> {
        if off.checked_add(len).is_none_or(|e| e > self.len()) {
            return Err(Error::Invalid("range outside the mapping"));
        }
        super::persist(self.as_ptr().wrapping_add(off), len)
    }

    /// `mprotect` of the whole mapping. The caller checked the file's access
    /// mode against `prot`.
    pub fn protect(&self, prot: Prot) -> Result<()> {
        let shared_rw = prot == Prot::ReadWrite && !self.region.private;
        // Making a shared mapping writable: pages showing blocks that other
        // files share (reflink) are unmapped first, so a store faults and
        // copies them (the mapping never writes into another file's block).
        // Faults hold the invalidate lock shared: none is half way.
        let inode = &*self.inode;
        // A writable mapping has no windows (their pages could not be under
        // dirty tracking): none opens from now on, and the open ones close.
        let windows = shared_rw && {
            let mut st = self.region.lock();
            st.windows_ok = false;
            !st.windows.is_empty()
        };
        let _inv =
            (shared_rw && (windows || inode.has_shared())).then(|| inode.dax().invalidate.write());
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
                for sh in inode.shared_in(first, k.end - k.start) {
                    let p = (sh.start as i64 - v) as u64..(sh.end as i64 - v) as u64;
                    let prot = st.prot.unwrap_or(Prot::Read);
                    self.region
                        .to_placeholder(&st, &eng.uffd, p.clone(), prot)
                        .map_err(io)?;
                    self.region.forget_device(&mut st, p);
                }
            }
        }
        self.region.protect(&st, prot).map_err(io)?;
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
        self.region.make_inaccessible(&st, r.clone()).map_err(io)?;
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
            region: &self.region,
            blocks: runs,
        })
    }

    /// The protection the mapping has now.
    pub fn prot(&self) -> Prot {
        self.region.lock().prot.unwrap_or(Prot::Read)
    }

    /// The device block mapped at byte `off` of this mapping right now, if any.
    pub fn device_block_of(&self, off: usize) -> Option<u64> {
        let p = self.region.first_page + (off / PAGE) as u64;
        Region::dev_of(&self.region.lock(), p)
    }
}

/// Pinned device pages of a mapping; dropping it unpins them.
#[derive(Debug)]
pub struct Pin<'a> {
    region: &'a Region,
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
            self.region.refs.put(*b, 1);
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        let Ok(eng) = vm::engine() else { return };
        let mut st = self.region.lock();
        eng.remove(self.region.base());
        let all = self.region.pages();
        self.region.forget_device(&mut st, all.clone());
        self.region.forget_poisoned(&mut st, all);
        self.region.release(&mut st);
        drop(st);
        let me = Arc::as_ptr(&self.region);
        self.inode
            .dax()
            .regions
            .lock()
            .retain(|w| w.as_ptr() != me && w.strong_count() > 0);
    }
}
