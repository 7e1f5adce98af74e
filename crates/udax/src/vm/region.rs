//! One mapped region: a range of this process's address space that shows a
//! range of one file, and what is currently installed in each page of it.
#![allow(
    unsafe_code,
    reason = "the region's safe methods call the address-space primitives on its own area"
)]

use super::pages::PageRefs;
use super::space::{self, Area, Prot, PAGE};
use super::uffd::Uffd;
use crate::sync::{Mutex, MutexGuard};
use rangemap::{RangeMap, RangeSet};
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

/// What resolves faults for a region: the DAX layer of the file it maps.
pub trait FaultOwner: Send + Sync + std::fmt::Debug {
    /// Resolve a fault on file page `page` of `region`, then wake the faulting
    /// threads. With `block == false` the owner must not sleep on a lock that a
    /// thread waiting for the engine could hold; it returns `false` instead and
    /// the fault is retried on the engine's slow worker.
    fn fault(&self, region: &Arc<Region>, page: u64, write: bool, wp: bool, block: bool) -> bool;

    /// Make stores to pages `pages` of `region` durable (flush + fence).
    fn flush(&self, region: &Region, pages: Range<u64>) -> std::io::Result<()>;

    /// The next fault on the region (reported to [`FaultOwner::fault`]) was
    /// taken by the kernel inside a system call: for the owner's counters.
    fn kernel_fault(&self) {}
}

/// The pages of a region and what each shows. Pages are file page indexes.
#[derive(Debug, Default)]
pub struct RegionState {
    pub prot: Option<Prot>,
    /// Pages mapped to the device: value = device block - file page.
    pub dev: RangeMap<u64, i64>,
    /// Pages showing the (write-protected) zero page.
    pub zero: RangeSet<u64>,
    /// Pages of a private mapping the kernel copied (or may copy) on a store to
    /// a zero page: never mapped over by fault-around.
    pub cow: RangeSet<u64>,
    /// Pages past end of file holding a SIGBUS marker.
    pub beyond_eof: RangeSet<u64>,
    /// Pages behind a media error holding a SIGBUS marker (SPEC E3), also
    /// listed in the process's poisoned-page table ([`super::signals`]).
    pub poisoned: RangeSet<u64>,
    /// Device-mapped pages under WP_ASYNC dirty tracking.
    pub tracked: RangeSet<u64>,
    /// Pages given back by a partial unmap (inaccessible, still reserved).
    pub gone: RangeSet<u64>,
    /// Set when the mapping is being torn down.
    pub dead: bool,
    /// A shared mapping that is or was writable: only such a mapping can
    /// have dirty pages, so only its pages are put under dirty tracking and
    /// scanned by msync/fsync (a read-only mapping costs neither).
    pub ever_writable: bool,
    /// Windows: page ranges that are one read-only mapping of the device at a
    /// fixed offset (value = device block - file page), registered for minor
    /// faults, put past end of file so that appended pages can be shown with
    /// `UFFDIO_CONTINUE` instead of a new mapping. A page of a window shows
    /// the device only where `dev` lists it with the window's value; any other
    /// page of it has no page-table entry (or a SIGBUS marker) and faults to
    /// the handler exactly as a placeholder does. See `docs/dax.md`.
    pub windows: RangeMap<u64, i64>,
    /// Windows may be opened: a shared, never writable mapping of a shmem
    /// device (memfd or tmpfs file) with minor-fault support.
    pub windows_ok: bool,
    /// A window was opened at some time: some pages showing the device are
    /// not inherited by fork unless allowed again before it.
    pub had_windows: bool,
}

impl RegionState {
    /// The first page of `r` the region already shows something at: a device
    /// page, a zero page, a private copy, and with `markers` a SIGBUS marker.
    pub fn first_shown(&self, r: &Range<u64>, markers: bool) -> Option<u64> {
        [
            self.dev.overlapping(r).next().map(|(k, _)| k.start),
            self.zero.overlapping(r).next().map(|k| k.start),
            self.cow.overlapping(r).next().map(|k| k.start),
            markers
                .then(|| self.beyond_eof.overlapping(r).next().map(|k| k.start))
                .flatten(),
            markers
                .then(|| self.poisoned.overlapping(r).next().map(|k| k.start))
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|o| o.max(r.start))
    }
}

/// A mapped region. Created by the DAX layer, registered with the [`Engine`].
///
/// The region owns its [`Area`] of address space until [`Region::release`].
/// Its safe methods that change mappings act only inside that area and only
/// while the region is alive (`RegionState::dead` unset, checked under the
/// state lock, which `release` also takes): this is what makes them sound,
/// and why the `unsafe` address-space primitives of [`space`] stay inside vm.
/// Each such method takes the region's own locked state (`st`).
#[derive(Debug)]
pub struct Region {
    pub area: Area,
    /// File page shown at `base`.
    pub first_page: u64,
    pub private: bool,
    /// The device: fd for mapping ranges, and its page size (2 MiB on hugetlbfs).
    pub dev_fd: RawFd,
    pub dev_page: u64,
    pub owner: Arc<dyn FaultOwner>,
    /// Reference counts of the device's pages (shared by all regions of a device).
    pub refs: Arc<PageRefs>,
    pub state: Mutex<RegionState>,
}

impl Region {
    /// First address of the region.
    pub fn base(&self) -> usize {
        self.area.base()
    }

    /// Length of the region in bytes.
    pub fn bytes(&self) -> usize {
        self.area.bytes()
    }

    pub fn pages(&self) -> Range<u64> {
        self.first_page..self.first_page + (self.bytes() / PAGE) as u64
    }

    pub fn addr_of(&self, page: u64) -> usize {
        self.base() + ((page - self.first_page) as usize) * PAGE
    }

    pub fn page_of(&self, addr: usize) -> u64 {
        self.first_page + ((addr - self.base()) / PAGE) as u64
    }

    /// The address range of pages `r`, which must lie in the region and be
    /// alive (`st` is the region's locked state): `None` once released.
    fn span(&self, st: &RegionState, r: &Range<u64>) -> Option<(usize, usize)> {
        if st.dead || r.is_empty() {
            return None;
        }
        let (a, n) = (self.addr_of(r.start), (r.end - r.start) as usize * PAGE);
        assert!(
            r.start >= self.first_page && self.area.holds(a, n),
            "pages {r:?} outside region {:?}",
            self.pages()
        );
        Some((a, n))
    }

    /// Drop the anonymous pages (zero pages, SIGBUS markers) of pages `r`:
    /// the next access faults to the handler again. Never used on pages that
    /// show the device (a private mapping's copies would be lost).
    pub fn discard(&self, st: &RegionState, r: Range<u64>) -> std::io::Result<()> {
        let Some((a, n)) = self.span(st, &r) else {
            return Ok(());
        };
        // SAFETY: `[a, a+n)` lies in this region's area (checked by `span`),
        // which is alive under the state lock the caller holds; udax keeps no
        // Rust reference into a mapped region (users get raw pointers).
        unsafe { space::discard(a, n) }
    }

    /// Put registered placeholders over pages `r` in one step (whatever they
    /// showed is gone; the next access faults). See
    /// [`space::replace_with_placeholder`]: the caller must not block the
    /// handler threads.
    pub fn to_placeholder(
        &self,
        st: &RegionState,
        uffd: &Uffd,
        r: Range<u64>,
        prot: Prot,
    ) -> std::io::Result<()> {
        let Some((a, n)) = self.span(st, &r) else {
            return Ok(());
        };
        // SAFETY: as in `discard`: the range is this live region's own.
        unsafe { space::replace_with_placeholder(uffd, a, n, prot) }
    }

    /// Make pages `r` inaccessible while keeping them reserved (a partial
    /// unmap).
    pub fn make_inaccessible(&self, st: &RegionState, r: Range<u64>) -> std::io::Result<()> {
        let Some((a, n)) = self.span(st, &r) else {
            return Ok(());
        };
        // SAFETY: as in `discard`: the range is this live region's own.
        unsafe { space::make_inaccessible(a, n) }
    }

    /// Change the protection of the whole region.
    pub fn protect(&self, st: &RegionState, prot: Prot) -> std::io::Result<()> {
        let Some((a, n)) = self.span(st, &self.pages()) else {
            return Ok(());
        };
        // SAFETY: as in `discard`: the range is this live region's own.
        unsafe { space::protect(a, n, prot) }
    }

    /// Give the region's address space back (the mapping is torn down): it is
    /// dead from now on, and no method touches the address space again.
    pub fn release(&self, st: &mut RegionState) {
        let Some((a, n)) = self.span(st, &self.pages()) else {
            return;
        };
        st.dead = true;
        // SAFETY: the region's own area, alive until this call (checked under
        // the state lock, held); `dead` is set first, so no later call of the
        // methods above touches the range once the kernel may reuse it.
        unsafe { space::unmap(a, n) };
    }

    /// Hand the region's address range over to a new area, covered by a
    /// placeholder registered with `uffd` (a forked child making its
    /// parent's mapping anew): the region is dead from now on, so it never
    /// touches the range again, not even to release it. Whatever the range
    /// showed is gone; no thread of this process may be using it (in a
    /// child's fork handler none runs), or an access between the
    /// placeholder and its registration reads zeros.
    pub fn hand_over(&self, uffd: &Uffd, prot: Prot) -> std::io::Result<Area> {
        let mut st = self.lock();
        let Some((a, n)) = self.span(&st, &self.pages()) else {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        };
        st.dead = true;
        // SAFETY: the region's own area, alive until now (checked by
        // `span` under the state lock, held) and dead from now on, so the
        // new area is the range's only owner; udax keeps no Rust reference
        // into a mapped region.
        unsafe { Area::take_over(uffd, a, n, prot) }
    }

    pub fn lock(&self) -> MutexGuard<'_, RegionState> {
        self.state.lock()
    }

    /// Clip `r` to the region's pages.
    pub fn clip(&self, r: Range<u64>) -> Range<u64> {
        let p = self.pages();
        r.start.max(p.start)..r.end.min(p.end).max(r.start.max(p.start))
    }

    /// Map device blocks `dev_blk..` at pages `r` (called with the state lock).
    /// The part of `r` inside a window that shows these very blocks gets
    /// page-table entries with `UFFDIO_CONTINUE` (no mapping changes); the
    /// rest is mapped over whatever is there (cutting windows). EAGAIN (a
    /// REMAP event pending) leaves nothing installed. Returns true if no
    /// mapping had to change (all of `r` was shown through a window).
    pub fn map_device(
        &self,
        st: &mut RegionState,
        uffd: &Uffd,
        r: Range<u64>,
        dev_blk: u64,
    ) -> std::io::Result<bool> {
        let delta = dev_blk as i64 - r.start as i64;
        let mut r = r;
        if let Some((w, &d)) = st.windows.get_key_value(&r.start) {
            if d == delta {
                let end = r.end.min(w.end);
                let (a, n) = (self.addr_of(r.start), (end - r.start) as usize * PAGE);
                match uffd.continue_range(a, n) {
                    Ok(()) => {
                        self.note_shown(st, r.start..end, dev_blk);
                        if end == r.end {
                            return Ok(true);
                        }
                        r = end..r.end;
                    }
                    Err(e) => {
                        // Drop what was installed before the failure, so no
                        // page shows the device unrecorded.
                        let _ = self.discard(st, r.start..end);
                        if e.raw_os_error() == Some(libc::EAGAIN) {
                            return Err(e);
                        }
                        // Else (a device page not yet in the page cache):
                        // mapped as outside a window.
                        tracing::debug!("UFFDIO_CONTINUE at {a:#x}: {e}; mapping instead");
                    }
                }
            }
        }
        let prot = st.prot.unwrap_or(Prot::Read);
        let first = (r.start as i64 + delta) as u64;
        let Some((a, n)) = self.span(st, &r) else {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        };
        // SAFETY: as in `discard`: the range is this live region's own; its
        // old pages are replaced (udax holds no reference into them) and
        // `dev_fd` is the device, open while any region of it lives.
        unsafe {
            space::map_device(
                a,
                n,
                self.dev_fd,
                first * PAGE as u64,
                prot,
                self.private,
                !self.private,
            )
        }?;
        st.windows.remove(r.clone());
        self.note_shown(st, r, first);
        Ok(false)
    }

    /// Pages `r` now show device blocks `dev_blk..`: record it (and the page
    /// references) in the state.
    pub fn note_shown(&self, st: &mut RegionState, r: Range<u64>, dev_blk: u64) {
        // Pages that held zeros or markers now show the device; tracking (if
        // any) must be armed again by the caller.
        for set in [&mut st.tracked, &mut st.zero, &mut st.beyond_eof] {
            if !set.is_empty() {
                set.remove(r.clone());
            }
        }
        self.forget_poisoned(st, r.clone());
        if st.dev.overlapping(&r).next().is_none() {
            // Pages that showed nothing (the common case: no other block to
            // let go of, none shown twice).
            self.refs.get(dev_blk, r.end - r.start);
            st.dev.insert(r.clone(), dev_blk as i64 - r.start as i64);
            return;
        }
        // Re-mapping the same block over itself must not take a second reference.
        let mut fresh = RangeSet::new();
        fresh.insert(r.clone());
        for (k, v) in st.dev.overlapping(&r) {
            if *v == dev_blk as i64 - r.start as i64 {
                fresh.remove(k.clone());
            }
        }
        for (k, v) in st.dev.overlapping(&r) {
            let k = k.start.max(r.start)..k.end.min(r.end);
            if *v != dev_blk as i64 - r.start as i64 {
                self.refs.put((k.start as i64 + v) as u64, k.end - k.start);
            }
        }
        for f in fresh.iter() {
            self.refs
                .get(dev_blk + (f.start - r.start), f.end - f.start);
        }
        st.dev.insert(r.clone(), dev_blk as i64 - r.start as i64);
    }

    /// Put a window over pages `r`, showing device blocks `dev_blk..` once
    /// `UFFDIO_CONTINUE`d. The caller holds the file's invalidate lock
    /// exclusively (no fault of the file is being resolved) and has checked
    /// that the region shows nothing in `r` but SIGBUS markers past end of
    /// file (which the window replaces: its pages fault to the handler).
    pub fn open_window(
        &self,
        st: &mut RegionState,
        uffd: &Uffd,
        r: Range<u64>,
        dev_blk: u64,
    ) -> std::io::Result<()> {
        let Some((a, n)) = self.span(st, &r) else {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        };
        // SAFETY: as in `map_device`; the caller does not block the handler
        // threads (it holds no lock they take).
        unsafe { space::place_window(uffd, a, n, self.dev_fd, dev_blk * PAGE as u64) }?;
        st.beyond_eof.remove(r.clone());
        st.windows
            .insert(r.clone(), dev_blk as i64 - r.start as i64);
        st.had_windows = true;
        Ok(())
    }

    /// Close the windows overlapping pages `r`: their pages that show nothing
    /// become placeholders again (so a zero page can go there, or the mapping
    /// be made writable); the pages they show stay as they are, mapped. The
    /// caller holds the file's invalidate lock exclusively.
    pub fn close_windows(
        &self,
        st: &mut RegionState,
        uffd: &Uffd,
        r: Range<u64>,
    ) -> std::io::Result<()> {
        let hit: Vec<Range<u64>> = st.windows.overlapping(&r).map(|(k, _)| k.clone()).collect();
        let prot = st.prot.unwrap_or(Prot::Read);
        for w in hit {
            let mut empty = RangeSet::new();
            empty.insert(w.clone());
            for (k, _) in st.dev.overlapping(&w) {
                empty.remove(k.clone());
            }
            for e in empty.iter() {
                self.to_placeholder(st, uffd, e.clone(), prot)?;
                st.beyond_eof.remove(e.clone());
                self.forget_poisoned(st, e.clone());
            }
            st.windows.remove(w);
        }
        Ok(())
    }

    /// Unmap every page of this region that shows the device, through a
    /// page of `dev` or a window: the next access to one faults to the
    /// handler. The copies a `MAP_PRIVATE` mapping made of device pages
    /// (found in `pagemap`, an open `/proc/self/pagemap`) are its own data:
    /// they are moved into anonymous memory at the same addresses
    /// ([`space::replace_with_copy`]) and kept as private copies (`cow`), so
    /// that nothing of the region maps the device file any more. Returns
    /// how many pages were unmapped.
    pub fn unmap_device(
        &self,
        st: &mut RegionState,
        uffd: &Uffd,
        pagemap: RawFd,
    ) -> std::io::Result<u64> {
        let mut shown = RangeSet::new();
        for (k, _) in st.dev.iter().chain(st.windows.iter()) {
            shown.insert(k.clone());
        }
        let mut keep = RangeSet::new();
        if self.private {
            for k in shown.iter() {
                let Some((a, n)) = self.span(st, k) else {
                    return Ok(0);
                };
                for c in space::private_copies(pagemap, a, n)? {
                    keep.insert(self.page_of(c.start)..self.page_of(c.end));
                }
            }
        }
        let prot = st.prot.unwrap_or(Prot::Read);
        let mut unmapped = 0;
        for k in shown.iter() {
            let mut zap = RangeSet::new();
            zap.insert(k.clone());
            for c in keep.overlapping(k) {
                let c = c.start.max(k.start)..c.end.min(k.end);
                let (a, n) = self.span(st, &c).expect("a live region's pages");
                // SAFETY: `[a, a+n)` lies in this region's area (`span`),
                // alive under the state lock the caller holds, and is
                // readable (a region is never mapped without read access);
                // udax keeps no Rust reference into a mapped region.
                unsafe { space::replace_with_copy(uffd, a, n, prot) }?;
                zap.remove(c);
            }
            for z in zap.iter() {
                self.to_placeholder(st, uffd, z.clone(), prot)?;
                unmapped += z.end - z.start;
            }
            self.forget_device(st, k.clone());
            st.windows.remove(k.clone());
        }
        for c in keep.iter() {
            st.cow.insert(c.clone());
        }
        Ok(unmapped)
    }

    /// Before fork: let the child inherit the private copies a `MAP_PRIVATE`
    /// mapping made of zero pages (they live in `MADV_DONTFORK`
    /// placeholders): they are resolved pages, the mapping's own data,
    /// which a child keeps as after a kernel fork.
    pub fn inherit_copies(&self, st: &RegionState) {
        if !self.private || st.dead {
            return;
        }
        for k in st.cow.iter() {
            let Some((a, n)) = self.span(st, k) else {
                return;
            };
            // SAFETY: as in `discard`: the range is this live region's own.
            let _ = unsafe { space::inherit(a, n) };
        }
    }

    /// The private copies this (inherited) private mapping holds, as (file
    /// page, its bytes): read before the mapping is made anew in a forked
    /// child, and written into the new one after.
    pub fn copies(&self, pagemap: RawFd) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let st = self.lock();
        let Some((a, n)) = self.span(&st, &self.pages()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for r in space::private_copies(pagemap, a, n)? {
            for addr in r.step_by(PAGE) {
                let mut page = vec![0u8; PAGE];
                // SAFETY: `addr` is a present anonymous page of this live
                // region (the scan above, under its state lock, held);
                // read as raw bytes, no reference into it kept.
                unsafe {
                    std::ptr::copy_nonoverlapping(addr as *const u8, page.as_mut_ptr(), PAGE)
                };
                out.push((self.page_of(addr), page));
            }
        }
        Ok(out)
    }

    /// Write `bytes` (one page) over file page `page` of this live region
    /// with a store, as the program would: the fault maps the page and, in
    /// a private mapping, the kernel copies it first. The region must be
    /// writable now. From a thread that is not a fault handler.
    pub fn store_page(&self, page: u64, bytes: &[u8]) -> std::io::Result<()> {
        let a = {
            let st = self.lock();
            if st.gone.contains(&page) || bytes.len() != PAGE {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            match self.span(&st, &(page..page + 1)) {
                Some((a, _)) => a,
                None => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
        };
        // SAFETY: one page of this region, which was alive just above and
        // is being made by the caller (no one unmaps it meanwhile); the
        // store may fault, which the fault engine resolves (the caller is
        // not one of its threads); raw bytes, no reference kept.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a as *mut u8, PAGE) };
        Ok(())
    }

    /// Before fork: let the child inherit every page that shows the device
    /// (pages shown through a window would not be).
    pub fn inherit_shown(&self, st: &RegionState) {
        if !st.had_windows || st.dead {
            return;
        }
        for (k, _) in st.dev.iter() {
            let Some((a, n)) = self.span(st, k) else {
                return;
            };
            // SAFETY: as in `discard`: the range is this live region's own.
            let _ = unsafe { space::inherit(a, n) };
        }
    }

    /// Drop the device references of pages `r` from the state (after unmapping).
    pub fn forget_device(&self, st: &mut RegionState, r: Range<u64>) {
        let runs: Vec<_> = st
            .dev
            .overlapping(&r)
            .map(|(k, v)| (k.start.max(r.start)..k.end.min(r.end), *v))
            .collect();
        for (k, v) in runs {
            self.refs.put((k.start as i64 + v) as u64, k.end - k.start);
        }
        st.tracked.remove(r.clone());
        st.dev.remove(r);
    }

    /// Pages `r` no longer hold poison markers (they were unmapped or remapped).
    pub fn forget_poisoned(&self, st: &mut RegionState, r: Range<u64>) {
        if st.poisoned.overlaps(&r) {
            st.poisoned.remove(r.clone());
            super::signals::forget(self.addr_of(r.start), (r.end - r.start) as usize * PAGE);
        }
    }

    /// Device block behind page `page`, if mapped.
    pub fn dev_of(st: &RegionState, page: u64) -> Option<u64> {
        st.dev.get(&page).map(|v| (page as i64 + v) as u64)
    }

    /// Does anything sit in pages `r` that an invalidation must remove?
    pub fn occupied(st: &RegionState, r: &Range<u64>) -> bool {
        st.dev.overlaps(r)
            || st.zero.overlaps(r)
            || st.beyond_eof.overlaps(r)
            || st.cow.overlaps(r)
            || st.poisoned.overlaps(r)
    }
}
