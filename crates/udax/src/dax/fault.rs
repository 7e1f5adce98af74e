//! Fault resolution (SPEC M2-M7): what `dax_iomap_pte_fault` / `_pmd_fault` do,
//! for a fault that the engine read from userfaultfd.
//!
//! With the file's invalidate lock shared and the entry lock held:
//! * past end of file: a SIGBUS marker (user access -> SIGBUS, kernel -> EFAULT);
//! * mapped blocks: map the device range (2 MiB at once where the mapping, the
//!   file range and the extent are 2 MiB aligned; else a window up to the end of
//!   the extent inside the 2 MiB chunk);
//! * a hole, read: the write-protected zero page, no block, no memory;
//! * a hole, written (a user store, a kernel store in a syscall, or a store to a
//!   write-protected zero page): allocate zeroed blocks (logged before the
//!   store can land), drop the zero page from every mapping, map the blocks;
//! * private mappings: the device range mapped `MAP_PRIVATE`, so the kernel copies
//!   a page on its first write; holes give zero pages that copy the same way.

use super::entry::{Conflict, Locked, PMD_PAGES};
use super::iomap::{DaxInode, IomapError, Lookup};
use super::{DaxDevice, DaxFile, Entry};
use crate::vm::engine::bump;
use crate::vm::{self, Engine, Region, PAGE};
use std::ops::Range;
use std::sync::Arc;

/// Why a fault was not resolved.
#[derive(Debug)]
enum Fail {
    /// A userfaultfd ioctl returned EAGAIN: a non-cooperative event (our own
    /// `mremap` of another range) is pending and must be read first. Nothing was
    /// left half done; the thread is woken and simply faults again.
    Again,
    /// A real failure: the access gets SIGBUS, as the kernel does for ENOSPC/EIO.
    Error(String),
    /// A writable shared mapping reached file pages whose blocks other files
    /// share (reflink): they must be copied first (copy on write), under the
    /// invalidate lock held exclusively. Nothing was mapped.
    Unshare(Range<u64>),
    /// A hugetlbfs device maps 2 MiB pages only, and the 2 MiB chunk starting
    /// at this file page is not one aligned device extent (a block punched
    /// and written again, scattered small writes): the chunk must be moved to
    /// one first, under the invalidate lock held exclusively. Nothing was mapped.
    Relocate(u64),
    /// A zero page is to go at this file page, which lies in a window (a
    /// device mapping past the old end of file, `vm::RegionState::windows`):
    /// the window must be closed first, under the invalidate lock held
    /// exclusively. Nothing was mapped.
    Unwindow(u64),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Error(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Fail {
        Fail::Error(s.to_string())
    }
}

/// A failure of the file system to change blocks for a fault:
/// [`IomapError::Retry`] is [`Fail::Again`] (the locks are dropped and the
/// access faults again).
fn iomap_fail(what: impl std::fmt::Display) -> impl Fn(IomapError) -> Fail {
    move |e| match e {
        IomapError::Retry => Fail::Again,
        e => Fail::Error(format!("{what}: {e}")),
    }
}

/// A userfaultfd (or window) error: EAGAIN is [`Fail::Again`].
fn uffd_err(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> Fail {
    move |e| {
        if e.raw_os_error() == Some(libc::EAGAIN) {
            Fail::Again
        } else {
            Fail::Error(format!("{what}: {e}"))
        }
    }
}

type R<T> = std::result::Result<T, Fail>;

/// Who resolves a fault: whether it may sleep, and whether threads wait for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum How {
    /// A handler thread, for a faulting thread: never sleeps on the
    /// invalidate lock (returns `false` to defer instead); wakes the faulter.
    Handler,
    /// The slow worker (a deferred fault) or a user thread (pin, populate):
    /// may sleep; wakes whoever faulted on the page.
    Blocking,
    /// Mapping pages ahead of any access ([`super::hooks::map_written`]): may sleep,
    /// wakes no one. A thread that faulted on one of the pages meanwhile has
    /// its fault read and resolved (and woken) by a handler thread, which then
    /// finds the page mapped.
    Ahead,
}

pub(super) fn handle(
    inode: &dyn DaxInode,
    region: &Arc<Region>,
    page: u64,
    write: bool,
    wp: bool,
    how: How,
) -> bool {
    let block = how != How::Handler;
    let Ok(eng) = vm::engine() else { return true };
    let dd = inode.device();
    let _inv = if block {
        inode.dax().invalidate.read()
    } else {
        match inode.dax().invalidate.try_read() {
            Some(g) => g,
            None => {
                bump(&dd.counters.deferred);
                return false;
            }
        }
    };
    bump(&dd.counters.faults);
    if write {
        bump(&dd.counters.write_faults);
    }
    if wp {
        bump(&dd.counters.wp_faults);
    }
    let cx = Cx {
        inode,
        dd,
        region,
        eng,
        wake: how != How::Ahead,
    };
    // Mapping ahead from a user thread: an ioctl refused while a REMAP event
    // of another mapping is unread (EAGAIN) is tried again shortly (a
    // handler reads it), instead of leaving the page to a fault.
    let mut tries = 0;
    let first = loop {
        match cx.resolve(page, write, wp) {
            Err(Fail::Again) if how == How::Ahead && tries < 8 => {
                tries += 1;
                std::thread::yield_now();
            }
            r => break r,
        }
    };
    let r = match first {
        Err(f @ (Fail::Unshare(_) | Fail::Relocate(_) | Fail::Unwindow(_))) => {
            drop(_inv);
            if !block {
                // Copying takes the invalidate lock exclusively and may unmap
                // (mremap): the slow worker does it, never a handler thread.
                bump(&dd.counters.deferred);
                return false;
            }
            change_layout(inode, f).and_then(|()| {
                // Map the file's own copy now: callers that resolve a page and
                // then look at it (pin, populate) must find it mapped.
                let _inv = inode.dax().invalidate.read();
                match cx.resolve(page, write, wp) {
                    // Shared again meanwhile (a clone): the access faults again.
                    Err(Fail::Unshare(_)) => Ok(()),
                    Err(Fail::Relocate(_)) => Err(Fail::Error(
                        "hugetlbfs device: the 2 MiB chunk could not be made one aligned extent"
                            .into(),
                    )),
                    // A window opened again meanwhile: the access faults again.
                    Err(Fail::Unwindow(_)) => Ok(()),
                    other => other,
                }
            })
        }
        other => other,
    };
    if let Err(Fail::Error(e)) = r {
        // As the kernel turns a failed fault (ENOSPC, EIO) into SIGBUS.
        tracing::error!(
            "fault at file page {page} of inode {}: {e}; raising SIGBUS",
            inode.ino()
        );
        let mut st = region.lock();
        if !st.dead {
            inode.dax().grow.marking();
            let _ = eng.uffd.poison(region.addr_of(page), PAGE, false);
            st.beyond_eof.insert(page..page + 1);
        }
    }
    if cx.wake {
        let _ = eng.uffd.wake(region.addr_of(page), PAGE);
    }
    true
}

/// Change the layout a fault needs before it can map (`fail` is
/// [`Fail::Unshare`]: copy on write, SPEC R1; or [`Fail::Relocate`]: a
/// hugetlbfs chunk moved to one aligned extent, SPEC M7): with the
/// invalidate lock held exclusively, unmap the pages from every mapping of
/// the file, then change their extents. [`Fail::Unwindow`] changes only the
/// mappings: the windows at the page are closed.
fn change_layout(inode: &dyn DaxInode, fail: Fail) -> R<()> {
    if let Fail::Unwindow(page) = fail {
        let _inv = inode.dax().invalidate.write();
        let eng = vm::engine().map_err(Fail::Error)?;
        for reg in inode.dax().regions() {
            let mut st = reg.lock();
            if !st.dead {
                reg.close_windows(&mut st, &eng.uffd, page..page + 1)
                    .map_err(|e| Fail::Error(format!("closing a window at page {page}: {e}")))?;
            }
        }
        return Ok(());
    }
    let (span, what) = match &fail {
        Fail::Unshare(span) => (span.clone(), "copy on write"),
        Fail::Relocate(chunk) => (*chunk..chunk + PMD_PAGES, "moving to one 2 MiB extent"),
        _ => return Err(fail),
    };
    let _inv = inode.dax().invalidate.write();
    super::hooks::zap_file_range(inode, span.start, span.end)
        .map_err(|e| Fail::Error(format!("{what} of pages {span:?}: {e}")))?;
    match fail {
        Fail::Unshare(_) => inode.unshare(span.start, span.end),
        _ => inode.relocate_chunk(span.start),
    }
    .map_err(iomap_fail(format_args!("{what} of pages {span:?}")))?;
    if matches!(fail, Fail::Unshare(_)) {
        bump(&inode.device().counters.cow_faults);
    }
    Ok(())
}

fn pmd_eligible(region: &Region, chunk: u64, eof: u64) -> bool {
    let p = region.pages();
    if region.private && Region::occupied(&region.lock(), &(chunk..chunk + PMD_PAGES)) {
        return false;
    }
    chunk >= p.start
        && chunk + PMD_PAGES <= p.end
        && chunk + PMD_PAGES <= eof
        && region
            .addr_of(chunk)
            .is_multiple_of(PMD_PAGES as usize * PAGE)
}

/// What a fault is being resolved in: the file, its device's DAX state, the
/// region and the engine.
#[derive(Clone, Copy)]
struct Cx<'a> {
    inode: &'a dyn DaxInode,
    dd: &'a DaxDevice,
    region: &'a Arc<Region>,
    eng: &'a Engine,
    /// Wake threads waiting on the pages mapped (not when mapping ahead).
    wake: bool,
}

impl Cx<'_> {
    fn resolve(&self, page: u64, write: bool, wp: bool) -> R<()> {
        let Cx {
            dd,
            inode,
            region,
            eng,
            ..
        } = *self;
        inode.ready().map_err(iomap_fail("the file's layout"))?;
        let grown = inode.dax().grow.before_size_read();
        let eof = inode.size().div_ceil(PAGE as u64);
        if page >= eof {
            let mut st = region.lock();
            if !st.dead {
                inode.dax().grow.marking();
                let addr = region.addr_of(page);
                eng.uffd
                    .poison(addr, PAGE, false)
                    .map_err(uffd_err("poison"))?;
                st.beyond_eof.insert(page..page + 1);
                if inode.dax().grow.grew_since(grown) {
                    // The file grew since its size was read: the page may be
                    // inside it now. No marker; the access faults again.
                    let _ = region.discard(&st, page..page + 1);
                    st.beyond_eof.remove(page..page + 1);
                    return Ok(());
                }
                bump(&dd.counters.sigbus);
            }
            return Ok(());
        }
        if region.private && wp {
            // First store to a zero page of a private mapping: let the kernel copy it.
            let mut st = region.lock();
            if !st.dead {
                st.zero.remove(page..page + 1);
                st.cow.insert(page..page + 1);
                eng.uffd
                    .writeprotect(region.addr_of(page), PAGE, false, false)
                    .map_err(uffd_err("unprotect"))?;
            }
            return Ok(());
        }
        let t = &dd.waits;
        let chunk = page - page % PMD_PAGES;
        let mut pmd = pmd_eligible(region, chunk, eof);
        let huge_dev = region.dev_page > PAGE as u64;
        let store = write || wp;
        loop {
            let l = match inode.dax().entries.lock(t, page, pmd) {
                Ok(l) => l,
                Err(Conflict::Fallback) => {
                    pmd = false;
                    continue;
                }
            };
            let l = if l.entry.is_pmd() && !pmd {
                // A 4 KiB fault inside a 2 MiB entry.
                if let Some(dev) = l.entry.dev_blk() {
                    let end = (chunk + PMD_PAGES).min(region.pages().end).min(eof);
                    let r = self.map_pte(page..end, dev + (page - chunk), store);
                    l.keep();
                    return r;
                }
                if !store {
                    let r = self.install_zero(page..page + 1, false);
                    l.keep();
                    return r.map(|_| ());
                }
                // A store splits a 2 MiB zero/empty entry.
                zap_zero(inode.dax(), chunk..chunk + PMD_PAGES);
                l.downgrade(page)
            } else {
                l
            };
            match self.resolve_locked(page, chunk, eof, store, l)? {
                Done::Yes => return Ok(()),
                Done::RetrySmall => {
                    if huge_dev {
                        // Only whole chunks inside the file and the mapping
                        // can be moved and mapped.
                        if chunk + PMD_PAGES <= eof && pmd_eligible(region, chunk, eof) {
                            return Err(Fail::Relocate(chunk));
                        }
                        return Err(
                            "hugetlbfs device: this range cannot be mapped with 2 MiB pages".into(),
                        );
                    }
                    pmd = false;
                }
            }
        }
    }

    /// Resolve a fault with its entry `l` locked: by the file's extent at the
    /// entry's start, one of the cases below.
    fn resolve_locked(
        &self,
        page: u64,
        chunk: u64,
        eof: u64,
        store: bool,
        l: Locked<'_>,
    ) -> R<Done> {
        let Cx {
            dd, inode, region, ..
        } = *self;
        let pmd = l.entry.is_pmd();
        let start = if pmd { chunk } else { page };
        let mut allocated = false;
        loop {
            let look = inode.lookup(start);
            return match look {
                Lookup::Mapped { dev_blk, len } if pmd => {
                    self.mapped_pmd(chunk, dev_blk, len, store, l)
                }
                Lookup::Mapped { dev_blk, len } => {
                    self.mapped_pte(page, chunk, eof, dev_blk, len, store, l)
                }
                Lookup::Hole { .. } if store && !region.private && !allocated => {
                    let end = if pmd { chunk + PMD_PAGES } else { page + 1 };
                    // On failure `l` goes back as found (dropped).
                    inode
                        .alloc_zeroed(start, end)
                        .map_err(iomap_fail(format_args!("allocating blocks {start}..{end}")))?;
                    bump(&dd.counters.fault_allocs);
                    allocated = true;
                    continue;
                }
                Lookup::Hole { .. } if store && region.private => {
                    // The kernel copies the zero page on the retried store.
                    self.private_zero(page).map(|_| Done::Yes)
                }
                Lookup::Hole { len } if pmd && len < PMD_PAGES => {
                    l.remove();
                    Ok(Done::RetrySmall)
                }
                Lookup::Hole { len } => self.zero_hole(page, chunk, eof, len, l),
            };
        }
    }

    /// A 2 MiB entry over mapped blocks: one 2 MiB mapping where the extent
    /// is one aligned 2 MiB run without media errors; otherwise 4 KiB (retry).
    fn mapped_pmd(
        &self,
        chunk: u64,
        dev_blk: u64,
        len: u64,
        store: bool,
        l: Locked<'_>,
    ) -> R<Done> {
        let Cx {
            dd,
            inode,
            region,
            eng,
            ..
        } = *self;
        let span = chunk..chunk + PMD_PAGES;
        let whole = len >= PMD_PAGES && dev_blk.is_multiple_of(PMD_PAGES);
        if whole && region.dev_page > PAGE as u64 && inode.is_bad(dev_blk, PMD_PAGES) {
            // A hugetlbfs device loses the whole 2 MiB page.
            l.remove();
            let mut st = region.lock();
            if !st.dead && super::hooks::mark_chunk_lost(region, &mut st, chunk, eng) {
                bump(&dd.counters.sigbus);
            }
            return Ok(Done::Yes);
        }
        if l.entry.is_zero() {
            zap_zero(inode.dax(), span.clone());
        }
        if whole && !inode.is_bad(dev_blk, PMD_PAGES) {
            let r = self.map_range(span, dev_blk, true, store);
            match r {
                Ok(()) => l.unlock(Entry::block(dev_blk, true)),
                Err(_) => l.remove(),
            }
            return r.map(|_| Done::Yes);
        }
        l.remove();
        Ok(Done::RetrySmall)
    }

    /// A 4 KiB entry over mapped blocks: map up to the end of the extent
    /// inside the chunk (or the first block with a media error), and enter
    /// the neighbours mapped with it.
    #[allow(clippy::too_many_arguments)]
    fn mapped_pte(
        &self,
        page: u64,
        chunk: u64,
        eof: u64,
        dev_blk: u64,
        len: u64,
        store: bool,
        l: Locked<'_>,
    ) -> R<Done> {
        let Cx { inode, region, .. } = *self;
        if region.dev_page > PAGE as u64 {
            l.remove();
            return Ok(Done::RetrySmall);
        }
        if l.entry.is_zero() {
            zap_zero(inode.dax(), page..page + 1);
        }
        if inode.is_bad(dev_blk, 1) {
            // A media error (SPEC E3): SIGBUS for a user access, EFAULT for
            // the kernel.
            l.remove();
            self.poison_marker(page);
            return Ok(Done::Yes);
        }
        let mut end = page
            .saturating_add(len)
            .min(chunk + PMD_PAGES)
            .min(region.pages().end)
            .min(eof);
        if let Some(b) = inode.first_bad(dev_blk, end - page) {
            end = page + (b - dev_blk);
        }
        let r = self.map_pte(page..end, dev_blk, store);
        match r {
            Ok(()) => {
                l.unlock(Entry::block(dev_blk, false));
                inode
                    .dax()
                    .entries
                    .insert_run_if_vacant(page + 1..end, dev_blk + 1);
            }
            Err(_) => l.remove(),
        }
        r.map(|_| Done::Yes)
    }

    /// A load from a hole of a shared mapping: the zero page. A 4 KiB fault
    /// zero-fills the rest of the hole inside the 2 MiB chunk at once
    /// (fault-around), not page by page; the neighbours' entries are locked
    /// too (only vacant ones).
    fn zero_hole(&self, page: u64, chunk: u64, eof: u64, len: u64, l: Locked<'_>) -> R<Done> {
        let Cx {
            dd,
            inode,
            region,
            eng,
            ..
        } = *self;
        let pmd = l.entry.is_pmd();
        let mut want = if pmd {
            chunk..chunk + PMD_PAGES
        } else {
            page..page
                .saturating_add(len)
                .min(chunk + PMD_PAGES)
                .min(region.pages().end)
                .min(eof)
        };
        let mut extra = Vec::new();
        for p in want.start + 1..want.end {
            if pmd {
                break;
            }
            match inode.dax().entries.lock_vacant(&dd.waits, p) {
                Some(x) => extra.push(x),
                None => {
                    want.end = p;
                    break;
                }
            }
        }
        // On any failure from here on, `l` and `extra` put their entries
        // back as they were (removed: they were empty).
        let done = self.install_zero(want, !pmd)?;
        // A store by another thread between the zero-page install and its
        // write protection made a private copy: move it to a block.
        let raced = if region.private {
            Vec::new()
        } else {
            eng.non_zero(
                region.addr_of(done.start),
                (done.end - done.start) as usize * PAGE,
            )
        };
        // A test hook keyed by address, so a fault of another test running
        // in parallel never takes it.
        #[cfg(all(test, not(loom)))]
        if FAIL_RESCUE
            .compare_exchange(
                region.addr_of(done.start),
                0,
                // ORDERING: set before the test touches the mapping whose
                // fault reaches here; any ordering would do.
                crate::sync::Ordering::SeqCst,
                crate::sync::Ordering::SeqCst,
            )
            .is_ok()
        {
            return Err(Fail::Error(
                "rescuing a raced store failed (injected)".into(),
            ));
        }
        let mut rescued = Vec::new();
        for a in raced {
            let (p0, p1) = (region.page_of(a.start), region.page_of(a.end - 1) + 1);
            self.rescue(p0..p1)?;
            rescued.push(p0..p1);
        }
        let head = l.index;
        let kind = |p: u64| -> Entry {
            if rescued.iter().any(|r| r.contains(&p)) {
                match inode.lookup(p) {
                    Lookup::Mapped { dev_blk, .. } => Entry::block(dev_blk, false),
                    Lookup::Hole { .. } => Entry::zero(false),
                }
            } else {
                Entry::zero(pmd && p == head)
            }
        };
        if pmd && !rescued.is_empty() {
            // The 2 MiB zero entry no longer describes the chunk.
            zap_zero(inode.dax(), chunk..chunk + PMD_PAGES);
            l.remove();
        } else {
            l.unlock(kind(head));
        }
        for x in extra {
            if x.index < done.end {
                let e = kind(x.index);
                x.unlock(e);
            } else {
                x.remove();
            }
        }
        Ok(Done::Yes)
    }

    /// Put a SIGBUS marker on `page`, whose block has a media error.
    fn poison_marker(&self, page: u64) {
        let Cx {
            dd, region, eng, ..
        } = *self;
        let mut st = region.lock();
        if st.dead {
            return;
        }
        let addr = region.addr_of(page);
        // Into the SIGBUS table before the marker: a thread that hits the
        // marker at once must find the page there (ORDERING: vm/signals.rs).
        vm::signals::add(addr, false);
        match eng.uffd.poison(addr, PAGE, false) {
            Ok(()) => {
                st.poisoned.insert(page..page + 1);
                bump(&dd.counters.sigbus);
            }
            Err(e) => {
                if !st.poisoned.contains(&page) {
                    vm::signals::forget(addr, PAGE);
                }
                tracing::error!("poison marker at {addr:#x}: {e}");
            }
        }
    }

    /// Pages `r` of a shared mapping hold private copies of the zero page made by
    /// a store that raced with their write protection (they are protected now, so
    /// the content is stable): allocate blocks, copy the content, map the blocks.
    #[allow(
        unsafe_code,
        reason = "reads the raced private copies out of the faulting region"
    )]
    fn rescue(&self, r: Range<u64>) -> R<()> {
        let Cx {
            dd, inode, region, ..
        } = *self;
        let n = (r.end - r.start) as usize * PAGE;
        let mut buf = vec![0u8; n];
        // SAFETY: the pages are present, readable and write-protected in this
        // region, which is alive (its owner is resolving a fault on it).
        unsafe {
            std::ptr::copy_nonoverlapping(region.addr_of(r.start) as *const u8, buf.as_mut_ptr(), n)
        };
        inode
            .alloc_zeroed(r.start, r.end)
            .map_err(|e| format!("allocating for a raced store: {e}"))?;
        bump(&dd.counters.fault_allocs);
        let dev = &dd.dev;
        let mut p = r.start;
        while p < r.end {
            let Lookup::Mapped { dev_blk, len } = inode.lookup(p) else {
                return Err("raced store: block vanished".into());
            };
            let k = len.min(r.end - p);
            let off = ((p - r.start) as usize) * PAGE;
            let bytes = &buf[off..off + k as usize * PAGE];
            dev.write(dev_blk * PAGE as u64, bytes)
                .map_err(|e| format!("raced store: {e}"))?;
            dev.flush(dev_blk * PAGE as u64, bytes.len() as u64);
            zap_zero(inode.dax(), p..p + k);
            self.map_range(p..p + k, dev_blk, false, true)?;
            p += k;
        }
        tracing::debug!("rescued a store that raced with a zero-page install: pages {r:?}");
        Ok(())
    }

    fn map_pte(&self, r: Range<u64>, dev_blk: u64, store: bool) -> R<()> {
        self.map_range(r, dev_blk, false, store)
    }

    fn map_range(&self, r: Range<u64>, dev_blk: u64, pmd: bool, store: bool) -> R<()> {
        let Cx {
            inode,
            dd,
            region,
            eng,
            ..
        } = *self;
        let mut st = region.lock();
        if st.dead {
            return Ok(());
        }
        let mut r = without_gone(&st, r);
        if !region.private && st.prot == Some(crate::vm::Prot::ReadWrite) && !r.is_empty() {
            // A writable shared mapping never shows a block another file
            // shares: copy it first (the faulting page's run), or stop the
            // fault-around window before it.
            let n = r.end - r.start;
            let shared = inode.shared_in(dev_blk, n);
            debug_assert!(
                shared.windows(2).all(|w| w[0].end <= w[1].start),
                "shared_in out of order: {shared:?}"
            );
            if let Some(sh) = shared.into_iter().next() {
                if sh.start == dev_blk || pmd {
                    let k = if pmd { n } else { sh.end - sh.start };
                    return Err(Fail::Unshare(r.start..r.start + k));
                }
                r.end = r.start + (sh.start - dev_blk);
            }
        }
        if region.private {
            // Never map over pages this private mapping already shows: some may be
            // its private copies.
            if let Some(o) = st.first_shown(&r, false) {
                if pmd {
                    return Err("private 2 MiB range already partly mapped".into());
                }
                r.end = o;
            }
            if r.is_empty() {
                return Ok(());
            }
        }
        let continued = region
            .map_device(&mut st, &eng.uffd, r.clone(), dev_blk)
            .map_err(uffd_err(format_args!("mapping device block {dev_blk}")))?;
        // Dirty tracking: a range mapped by a read fault starts clean (protected);
        // one mapped by a store starts counted as written, which spares a
        // protection fault per page on first write at the price of flushing the
        // whole range at the next sync.
        let (a, n) = (region.addr_of(r.start), (r.end - r.start) as usize * PAGE);
        if !region.private && st.ever_writable && eng.track(a, n, !store) {
            st.tracked.insert(r.clone());
        }
        bump(if pmd {
            &dd.counters.pmd_maps
        } else {
            &dd.counters.pte_maps
        });
        if continued {
            bump(&dd.counters.continued);
        }
        if self.wake {
            let _ = eng
                .uffd
                .wake(region.addr_of(r.start), (r.end - r.start) as usize * PAGE);
        }
        Ok(())
    }

    /// Map write-protected zero pages at pages `r` (with `clip`, only up to the
    /// first page the region already shows). Returns the pages done.
    fn install_zero(&self, r: Range<u64>, clip: bool) -> R<Range<u64>> {
        let Cx {
            dd, region, eng, ..
        } = *self;
        let mut st = region.lock();
        if st.dead {
            return Ok(r.start..r.start);
        }
        let mut r = without_gone(&st, r);
        if clip {
            // The faulting page itself is unpopulated; the window ends at the
            // next page the region shows.
            if let Some(o) = st.first_shown(&(r.start + 1..r.end.max(r.start + 1)), true) {
                r.end = o;
            }
        }
        // Never a zero page in a window (on a shmem mapping it would be a
        // page of the device): the window is closed first, or a fault-around
        // range ends where one starts (a 2 MiB zero page needs all its pages).
        if let Some((w, _)) = st.windows.overlapping(&r).next() {
            if w.start <= r.start || !clip {
                return Err(Fail::Unwindow(w.start.max(r.start)));
            }
            r.end = w.start;
        }
        if r.is_empty() {
            return Ok(r);
        }
        let (addr, n) = (region.addr_of(r.start), (r.end - r.start) as usize * PAGE);
        eng.uffd
            .zeropage(addr, n, false)
            .map_err(uffd_err("zero page"))
            .and_then(|_| {
                eng.uffd
                    .writeprotect(addr, n, true, false)
                    .map_err(uffd_err("write-protect zero page"))
            })
            .inspect_err(|_| {
                // Never leave zero pages that are not write-protected (a store
                // would silently go to a private copy): drop what was installed.
                let _ = region.discard(&st, r.clone());
            })?;
        st.zero.insert(r.clone());
        bump(&dd.counters.zero_maps);
        if self.wake {
            let _ = eng.uffd.wake(addr, n);
        }
        Ok(r)
    }

    fn private_zero(&self, page: u64) -> R<()> {
        let Cx { region, eng, .. } = *self;
        let mut st = region.lock();
        if st.dead || st.gone.contains(&page) {
            return Ok(());
        }
        st.cow.insert(page..page + 1);
        eng.uffd
            .zeropage(region.addr_of(page), PAGE, false)
            .map_err(uffd_err("zero page"))
    }
}

enum Done {
    Yes,
    /// The 2 MiB attempt was abandoned (entry removed): retry with 4 KiB.
    RetrySmall,
}

/// `r` cut at the first page given back by a partial unmap.
fn without_gone(st: &vm::RegionState, r: Range<u64>) -> Range<u64> {
    match st.gone.overlapping(&r).next() {
        Some(g) if g.start <= r.start => r.start..r.start,
        Some(g) => r.start..g.start,
        None => r,
    }
}

/// Drop zero pages (and SIGBUS markers left by failed faults) of file pages `r`
/// from every mapping of the file: the next access faults and finds the block.
pub(super) fn zap_zero(file: &DaxFile, r: Range<u64>) {
    for reg in file.regions() {
        let st = &mut *reg.lock();
        if st.dead {
            continue;
        }
        let hit: Vec<Range<u64>> = st
            .zero
            .overlapping(&r)
            .chain(st.beyond_eof.overlapping(&r))
            .cloned()
            .collect();
        for h in hit {
            let h = h.start.max(r.start)..h.end.min(r.end);
            let _ = reg.discard(st, h.clone());
            st.zero.remove(h.clone());
            st.beyond_eof.remove(h);
        }
    }
}

/// Makes the next zero-page fault-around whose range starts at this address
/// fail where a raced store's rescue would (as ENOSPC would), inside the
/// locked region. Zero: no failure armed.
#[cfg(all(test, not(loom)))]
pub(crate) static FAIL_RESCUE: crate::sync::AtomicUsize = crate::sync::AtomicUsize::new(0);
