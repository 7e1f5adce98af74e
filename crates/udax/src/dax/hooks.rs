//! The hooks the file system calls: when a file's layout changes (break
//! layouts before blocks move, zero-page invalidation after allocation,
//! growth, media errors) and at fsync. Each takes the file as a
//! [`DaxInode`]; a file that was never mapped costs one atomic load.

use super::entry::PMD_PAGES;
use super::iomap::{device_runs, DaxInode};
use super::mapping::flush_pages;
use super::{fault, io, Error, Result, PIN_TIMEOUT};
use crate::vm::{self, Prot, Region, RegionState, PAGE};
use crate::{BLOCKS_PER_HUGE, BLOCK_SIZE};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// `fsync` of a file: flush what its shared mappings wrote.
pub(crate) fn sync_mappings(inode: &dyn DaxInode) -> Result<()> {
    if !inode.dax().is_mapped() {
        return Ok(());
    }
    map_pending(inode);
    for r in inode.dax().regions() {
        if !r.private {
            flush_pages(inode.device(), &r, r.pages(), true)?;
        }
    }
    Ok(())
}

/// Pages `[a, b)` of the file got blocks (write, fallocate, fault): no mapping
/// may keep showing the zero page there (SPEC M3), nor a SIGBUS marker.
pub(crate) fn after_alloc(inode: &dyn DaxInode, a: u64, b: u64) {
    if !inode.dax().is_mapped() {
        return;
    }
    let t = &inode.device().waits;
    for k in inode.dax().entries.keys_in(a, b) {
        if let Some(l) = inode.dax().entries.lock_at(t, k) {
            if l.entry.is_zero() {
                fault::zap_zero(inode.dax(), k..k + l.entry.pages());
                l.remove();
            } else {
                l.keep();
            }
        }
    }
    fault::zap_zero(inode.dax(), a..b);
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
pub(crate) fn map_written(inode: &dyn DaxInode, a: u64, b: u64) {
    if !inode.dax().is_mapped() {
        return;
    }
    let done = {
        let mut run = inode.dax().ahead.lock();
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
        map_now(inode, r);
    }
}

/// Map the pages [`map_written`] collected (at fsync).
fn map_pending(inode: &dyn DaxInode) {
    let r = std::mem::replace(&mut *inode.dax().ahead.lock(), 0..0);
    if !r.is_empty() {
        map_now(inode, r);
    }
}

/// Map file pages `r` (up to end of file) into every shared mapping that does
/// not show them yet, through the fault path: one call per extent window.
/// Pages a mapping already shows, or has given back, are left alone.
fn map_now(inode: &dyn DaxInode, r: Range<u64>) {
    let eof = inode.size().div_ceil(PAGE as u64);
    for reg in inode.dax().regions() {
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
                fault::handle(inode, &reg, p, false, false, fault::How::Ahead);
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
            open_window(inode, &reg, eof);
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
fn open_window(inode: &dyn DaxInode, reg: &Region, eof: u64) {
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
    let _inv = inode.dax().invalidate.write();
    let mut st = reg.lock();
    let Some(delta) = wanted(&st) else { return };
    let dev0 = (eof as i64 + delta) as u64;
    let dev_blocks = inode.device().dev.info().len / BLOCK_SIZE;
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
        Ok(()) => vm::engine::bump(&inode.device().counters.windows),
        Err(e) => tracing::debug!("no window past page {eof} of inode {}: {e}", inode.ino()),
    }
}

/// The file grew to `new_size`: pages that were past end of file may be
/// accessed again.
pub(crate) fn after_grow(inode: &dyn DaxInode, new_size: u64) {
    if !inode.dax().is_mapped() {
        return;
    }
    // The new size is set: either a racing fault sees this and drops its
    // marker, or the loop below does (`grow.rs`).
    if !inode.dax().grow.grew() {
        return;
    }
    let eof = new_size.div_ceil(PAGE as u64);
    for r in inode.dax().regions() {
        let st = &mut *r.lock();
        if st.dead {
            continue;
        }
        let hit: Vec<Range<u64>> = st.beyond_eof.overlapping(&(0..eof)).cloned().collect();
        for h in hit {
            let h = h.start..h.end.min(eof);
            let _ = r.discard(st, h.clone());
            st.beyond_eof.remove(h);
        }
    }
}

/// Break layouts (SPEC M12): unmap file pages `[a, b)` from every mapping, drop
/// their entries, and wait until no page behind them is pinned. The caller holds
/// the file's invalidate lock exclusively and has not yet changed the extents.
pub(crate) fn break_layouts(inode: &dyn DaxInode, a: u64, b: u64, wait: bool) -> Result<()> {
    if !inode.dax().is_mapped() {
        return Ok(());
    }
    zap_range(inode, a, b)?;
    // Pins (in-flight I/O) on the blocks about to be freed. Blocks other files
    // share stay allocated, and their references may belong to those files'
    // mappings: not waited for (a block freed later still waits, as a zombie,
    // until it is idle).
    let timeout = if wait { PIN_TIMEOUT } else { Duration::ZERO };
    let mut runs = rangemap::RangeSet::new();
    for (blk, n) in device_runs(inode, a, b) {
        runs.insert(blk..blk + n);
        for sh in inode.shared_in(blk, n) {
            runs.remove(sh);
        }
    }
    for r in runs.iter() {
        let (blk, n) = (r.start, r.end - r.start);
        if let Err((busy, count)) = inode.device().page_refs.wait_idle(blk, n, timeout) {
            return Err(Error::Busy(format!(
                "device block {busy} of inode {} is pinned ({count} references){}",
                inode.ino(),
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

/// The file system behind `inode` is gone from under this process (a
/// client whose owner ended its connection): no recall can reach it any
/// more, and a new owner may give the file's blocks to another file. Unmap
/// every page that shows the device from every mapping of the file and drop
/// the entries; a private mapping keeps the copies it made (its own data,
/// which the kernel would keep too), moved into anonymous memory so that no
/// mapping of the device file is left ([`Region::unmap_device`]). The next
/// access to an unmapped page faults, finds no owner to ask and gets
/// SIGBUS. The caller holds the invalidate lock exclusively. Returns how
/// many pages were unmapped.
pub(crate) fn unmap_device(inode: &dyn DaxInode) -> Result<u64> {
    if !inode.dax().is_mapped() {
        return Ok(0);
    }
    let eng = vm::engine().map_err(Error::Busy)?;
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(io)?;
    let mut unmapped = 0;
    for r in inode.dax().regions() {
        let st = &mut *r.lock();
        if st.dead {
            continue;
        }
        unmapped += r
            .unmap_device(st, &eng.uffd, pagemap.as_raw_fd())
            .map_err(io)?;
        vm::engine::bump(&inode.device().counters.invalidations);
    }
    remove_entries(inode, 0, u64::MAX);
    Ok(unmapped)
}

/// [`zap_range`] for the fs (copy on write): nothing to do for a file that
/// was never mapped.
pub(crate) fn zap_file_range(inode: &dyn DaxInode, a: u64, b: u64) -> Result<()> {
    if !inode.dax().is_mapped() {
        return Ok(());
    }
    zap_range(inode, a, b)
}

/// Unmap file pages `[a, b)` from every mapping and drop their entries (the
/// analogue of `unmap_mapping_range`). The caller holds the invalidate lock
/// exclusively.
fn zap_range(inode: &dyn DaxInode, a: u64, b: u64) -> Result<()> {
    let eng = vm::engine().map_err(Error::Busy)?;
    for r in inode.dax().regions() {
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
            r.to_placeholder(st, &eng.uffd, l.clone(), prot)
                .map_err(io)?;
        }
        r.forget_device(st, clip.clone());
        st.zero.remove(clip.clone());
        st.cow.remove(clip.clone());
        st.beyond_eof.remove(clip.clone());
        st.windows.remove(clip.clone());
        r.forget_poisoned(st, clip);
        vm::engine::bump(&inode.device().counters.invalidations);
    }
    remove_entries(inode, a, b);
    Ok(())
}

/// Remove the entries of file pages `[a, b)` (waking their waiters).
fn remove_entries(inode: &dyn DaxInode, a: u64, b: u64) {
    let t = &inode.device().waits;
    for k in inode.dax().entries.keys_in(a, b) {
        if let Some(l) = inode.dax().entries.lock_at(t, k) {
            l.remove();
        }
    }
}

/// A media error hit file page `page` (SPEC E3): unmap it from every mapping
/// (the whole 2 MiB chunk where a mapping showed it with a 2 MiB page, so the
/// other 511 pages fault back in as 4 KiB pages), put a SIGBUS marker on it and
/// list it in the process's poisoned-page table, with `si_addr_lsb` 21 where it
/// was part of a 2 MiB mapping and 12 elsewhere. Pins are not waited for (the
/// data is gone either way). Returns the number of mappings now showing poison.
pub(crate) fn poison_pages(inode: &dyn DaxInode, page: u64) -> usize {
    if !inode.dax().is_mapped() {
        return 0;
    }
    let Ok(eng) = vm::engine() else { return 0 };
    let _inv = inode.dax().invalidate.write();
    let chunk = page - page % PMD_PAGES;
    let pmd = chunk..chunk + PMD_PAGES;
    let regions: Vec<(Arc<Region>, bool)> = inode
        .dax()
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
            && r.addr_of(chunk).is_multiple_of(PMD_PAGES as usize * PAGE)
    };
    let span = if regions.iter().any(|(r, h)| *h || lose_chunk(r)) {
        pmd.clone()
    } else {
        page..page + 1
    };
    if let Err(e) = zap_range(inode, span.start, span.end) {
        tracing::error!(
            "unmapping poisoned page {page} of inode {}: {e}",
            inode.ino()
        );
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
        // Into the SIGBUS table before the marker: a thread that hits the
        // marker at once must find the page there (ORDERING: vm/signals.rs).
        vm::signals::add(addr, huge);
        match poison_marker(eng, addr, PAGE) {
            Ok(()) => {
                st.poisoned.insert(page..page + 1);
                n += 1;
            }
            Err(e) => {
                if !st.poisoned.contains(&page) {
                    vm::signals::forget(addr, PAGE);
                }
                tracing::error!("poison marker at {addr:#x}: {e}");
            }
        }
    }
    n
}

/// A poison marker over `[addr, addr+len)`. The ioctl fails with EAGAIN
/// while another mapping's REMAP event is unread (a handler thread reads it
/// soon): tried again, as mapping ahead does.
fn poison_marker(eng: &vm::Engine, addr: usize, len: usize) -> std::io::Result<()> {
    let mut r = eng.uffd.poison(addr, len, false);
    for _ in 0..1000 {
        match &r {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::yield_now();
                r = eng.uffd.poison(addr, len, false);
            }
            _ => break,
        }
    }
    r
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
    let addr = r.addr_of(chunk);
    // Into the SIGBUS table before the markers, as in `poison_pages`.
    vm::signals::add_chunk(addr);
    match poison_marker(eng, addr, PMD_PAGES as usize * PAGE) {
        Ok(()) => {
            st.poisoned.insert(chunk..chunk + PMD_PAGES);
            true
        }
        Err(e) => {
            if !st.poisoned.overlaps(&(chunk..chunk + PMD_PAGES)) {
                vm::signals::forget(addr, PMD_PAGES as usize * PAGE);
            }
            tracing::error!("poison markers at {addr:#x} (2 MiB): {e}");
            false
        }
    }
}

/// File page `page` no longer has a media error (SPEC E4): drop its SIGBUS
/// markers, so the next access faults the (new) block in.
pub(crate) fn unpoison_pages(inode: &dyn DaxInode, page: u64) {
    if !inode.dax().is_mapped() {
        return;
    }
    for r in inode.dax().regions() {
        let mut st = r.lock();
        if st.dead || !st.poisoned.contains(&page) {
            continue;
        }
        // A hugetlbfs device lost the whole 2 MiB page: it comes back whole.
        let span = if r.dev_page > PAGE as u64 {
            let c = page - page % PMD_PAGES;
            r.clip(c..c + PMD_PAGES)
        } else {
            page..page + 1
        };
        let _ = r.discard(&st, span.clone());
        r.forget_poisoned(&mut st, span);
    }
}
