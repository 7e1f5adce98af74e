//! Address-space primitives of the user-space MMU: reserve, place placeholders,
//! map device ranges over them, swap ranges back to placeholders atomically.
//!
//! Every function that changes a mapping works on page-aligned ranges that the
//! caller owns (a region created by [`reserve`] and not yet released); that
//! ownership is what makes the `MAP_FIXED` calls below sound: they only ever
//! replace udax's own pages. Because a wrong range would replace or unmap any
//! memory of the process (the heap, a stack, code), those functions are
//! `unsafe fn`: the contract each states under `# Safety` is the caller's to
//! keep, as rustix does for `mmap` and `munmap`. [`reserve`] (a fresh mapping)
//! and the page-table queries are safe.
#![allow(
    unsafe_code,
    reason = "the address-space primitives themselves: mmap, mremap, madvise, mprotect, munmap, PAGEMAP_SCAN"
)]

use super::uffd::Uffd;
use linux_raw_sys::general as g;
use std::io::{Error, Result};
use std::os::fd::RawFd;

pub const PAGE: usize = 4096;

/// Protection of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    Read,
    ReadWrite,
}

impl Prot {
    fn bits(self) -> libc::c_int {
        match self {
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

fn check(p: *mut libc::c_void) -> Result<usize> {
    if p == libc::MAP_FAILED {
        Err(Error::last_os_error())
    } else {
        Ok(p as usize)
    }
}

/// Reserve `len` bytes of address space such that `addr % align == phase`.
/// The reservation is inaccessible (`PROT_NONE`) until placeholders go over it.
pub fn reserve(len: usize, align: usize, phase: usize) -> Result<usize> {
    let span = len + align;
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address replaces nothing.
    let p = check(unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    })?;
    let start = p + ((phase + align - p % align) % align);
    // Give back the slack on both sides.
    if start > p {
        // SAFETY: `[p, start)` is part of the reservation just made, unused.
        unsafe { libc::munmap(p as *mut _, start - p) };
    }
    let end = start + len;
    if p + span > end {
        // SAFETY: `[end, p+span)` is part of the reservation just made, unused.
        unsafe { libc::munmap(end as *mut _, p + span - end) };
    }
    Ok(start)
}

/// A range of this process's address space reserved by udax: made only by
/// [`Area::reserve`] (a fresh mapping, so it replaces nothing), given back only
/// by the owner of the region over it (`Region::release`). Its fields are
/// private, so safe code cannot name a range udax does not own: the safe
/// methods of `Region` that change mappings act only inside their `Area`.
#[derive(Debug)]
pub struct Area {
    base: usize,
    len: usize,
}

impl Area {
    /// Reserve `len` bytes (`addr % align == phase`) and put a registered
    /// placeholder over all of it (see [`place_placeholder`]).
    pub fn reserve(
        uffd: &Uffd,
        len: usize,
        align: usize,
        phase: usize,
        prot: Prot,
    ) -> Result<Area> {
        let base = reserve(len, align, phase)?;
        // SAFETY: `[base, base+len)` was reserved just above and is not yet
        // known to anyone else.
        if let Err(e) = unsafe { place_placeholder(uffd, base, len, prot) } {
            // SAFETY: the same fresh reservation, given back unused.
            unsafe { unmap(base, len) };
            return Err(e);
        }
        Ok(Area { base, len })
    }

    /// Map device bytes `[dev_off, dev_off+len)` of `fd` at a fresh address
    /// the kernel chooses, as an area that shows the device from the start
    /// (no placeholder: a small mapping of one extent, shown whole when
    /// made). Unless `populate` (the program asked for `MAP_POPULATE`; a
    /// shared mapping), nothing is populated: the kernel's own faults fill
    /// the page tables (with its fault-around, as for a tmpfs file; a
    /// private mapping's copy a page at its first store), where
    /// `MAP_POPULATE` walks every page through `get_user_pages`.
    ///
    /// # References
    ///
    /// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html) (`MAP_SHARED`/`MAP_PRIVATE`, `MAP_POPULATE`)
    pub fn map_device(
        len: usize,
        fd: RawFd,
        dev_off: u64,
        prot: Prot,
        private: bool,
        populate: bool,
    ) -> Result<Area> {
        if len == 0 || !len.is_multiple_of(PAGE) {
            return Err(Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = match (private, populate) {
            (true, _) => libc::MAP_PRIVATE,
            (false, false) => libc::MAP_SHARED,
            (false, true) => libc::MAP_SHARED | libc::MAP_POPULATE,
        };
        // SAFETY: a fresh mapping at a kernel-chosen address (no MAP_FIXED)
        // replaces nothing; a bad `fd` or offset only makes the call fail.
        let base = check(unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot.bits(),
                flags,
                fd,
                dev_off as i64,
            )
        })?;
        Ok(Area { base, len })
    }

    /// Take `[base, base+len)` over as an area, replacing what is mapped
    /// there with a registered placeholder (see `Region::hand_over`).
    ///
    /// # Safety
    ///
    /// `[base, base+len)` is page-aligned and is the area of a region that
    /// is dead from now on (its methods never touch the range again), so
    /// the new area is its only owner; no live Rust reference points into
    /// it.
    pub(super) unsafe fn take_over(
        uffd: &Uffd,
        base: usize,
        len: usize,
        prot: Prot,
    ) -> Result<Area> {
        if !base.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 {
            return Err(Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: the caller owns the range and nothing else runs (above).
        unsafe { place_placeholder(uffd, base, len, prot) }?;
        Ok(Area { base, len })
    }

    pub fn base(&self) -> usize {
        self.base
    }

    pub fn bytes(&self) -> usize {
        self.len
    }

    /// `[addr, addr+len)` lies inside the area (page-aligned).
    pub fn holds(&self, addr: usize, len: usize) -> bool {
        addr >= self.base
            && len <= self.len
            && addr - self.base <= self.len - len
            && addr.is_multiple_of(PAGE)
            && len.is_multiple_of(PAGE)
    }
}

/// Put a registered anonymous placeholder over `[addr, addr+len)` of a fresh
/// reservation (no one can touch it yet, so map-then-register is safe here).
///
/// Placeholders are not inherited by fork: a child has no fault handler (the
/// userfaultfd registration does not cross fork), so an unresolved page would
/// read as silent zeros and swallow stores. The child gets SIGSEGV there
/// instead; pages already mapped to the device are inherited and stay right.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released, and that no one else accesses yet (the placeholder is put before the range is handed out).
///
/// # References
///
/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html), [madvise(2)](https://man7.org/linux/man-pages/man2/madvise.2.html) (`MADV_DONTFORK`), [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html) (`UFFDIO_REGISTER`)
pub unsafe fn place_placeholder(uffd: &Uffd, addr: usize, len: usize, prot: Prot) -> Result<()> {
    // SAFETY: the range is a reservation owned by the caller and not yet handed
    // to anyone, so replacing it affects no other memory.
    check(unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            prot.bits(),
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    })?;
    no_fork(addr, len)?;
    uffd.register(addr, len)
}

/// `MADV_DONTFORK` on `[addr, addr+len)`, a range of the caller's region.
fn no_fork(addr: usize, len: usize) -> Result<()> {
    // SAFETY: the range belongs to the caller's region; MADV_DONTFORK only
    // changes what fork copies.
    if unsafe { libc::madvise(addr as *mut _, len, libc::MADV_DONTFORK) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// Map device bytes `[dev_off, dev_off+len)` at `addr` (replacing what was there,
/// atomically), shared or private, optionally populating the page tables.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; whatever was mapped there is replaced, so no live Rust reference may point into it, and `fd` is an open descriptor of the device.
///
/// # References
///
/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html) (`MAP_FIXED`, `MAP_SHARED`/`MAP_PRIVATE`, `MAP_POPULATE`)
pub unsafe fn map_device(
    addr: usize,
    len: usize,
    fd: RawFd,
    dev_off: u64,
    prot: Prot,
    private: bool,
    populate: bool,
) -> Result<()> {
    let mut flags = libc::MAP_FIXED;
    flags |= if private {
        libc::MAP_PRIVATE
    } else {
        libc::MAP_SHARED
    };
    if populate {
        flags |= libc::MAP_POPULATE;
    }
    // SAFETY: `[addr, addr+len)` belongs to a udax region owned by the caller;
    // MAP_FIXED replaces only those pages, atomically, with the device range.
    check(unsafe { libc::mmap(addr as *mut _, len, prot.bits(), flags, fd, dev_off as i64) })?;
    Ok(())
}

/// Atomically turn `[addr, addr+len)` back into an empty registered placeholder:
/// a new placeholder is made and registered at a spare address, then moved over
/// the target with `mremap` (no instant where the range is unregistered memory).
/// The uffd's `EVENT_REMAP` means this waits until a handler thread reads the
/// event, so the caller must not block the handler threads.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; what was there is discarded, so no live Rust reference may point into it. The caller must not block the uffd handler threads (the `REMAP` event is read by them).
///
/// # References
///
/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html), [mremap(2)](https://man7.org/linux/man-pages/man2/mremap.2.html) (`MREMAP_FIXED`), [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html) (`UFFD_EVENT_REMAP`)
pub unsafe fn replace_with_placeholder(
    uffd: &Uffd,
    addr: usize,
    len: usize,
    prot: Prot,
) -> Result<()> {
    let spare = reserve(len, PAGE, 0)?;
    // SAFETY: `spare` was reserved just above; no one else knows it.
    let made = unsafe { place_placeholder(uffd, spare, len, prot) };
    // SAFETY: the caller owns `[addr, addr+len)` (this function's contract);
    // `spare` is the fresh range made above.
    unsafe { move_in(spare, addr, len, made) }
}

/// Replace `[addr, addr+len)` of the caller's region with anonymous memory
/// holding the same bytes, registered with `uffd` as a placeholder is: a
/// private mapping's copies of device pages, kept as the mapping's own data
/// when the device goes from under it. The bytes are copied, then the new
/// range moved over the old one in one `mremap`; a store another thread
/// makes into the range between the two is lost.
///
/// # Safety
///
/// As [`replace_with_placeholder`], for `[addr, addr+len)`, which must be
/// readable.
pub unsafe fn replace_with_copy(uffd: &Uffd, addr: usize, len: usize, prot: Prot) -> Result<()> {
    let spare = reserve(len, PAGE, 0)?;
    // SAFETY: `spare` was reserved just above; no one else knows it. The
    // source is the caller's readable range (this function's contract).
    let made = unsafe { fill_with_copy(uffd, spare, addr, len, prot) };
    // SAFETY: the caller owns `[addr, addr+len)`; `spare` is the fresh range
    // made above.
    unsafe { move_in(spare, addr, len, made) }
}

/// Make `[spare, spare+len)` private anonymous memory holding the bytes of
/// `[src, src+len)`, with protection `prot`, not inherited by fork and
/// registered with `uffd`.
///
/// # Safety
///
/// `spare` is a reservation the caller made and owns; `[src, src+len)` is
/// readable memory of the caller's region.
unsafe fn fill_with_copy(
    uffd: &Uffd,
    spare: usize,
    src: usize,
    len: usize,
    prot: Prot,
) -> Result<()> {
    // SAFETY: the range is the caller's fresh reservation, known to no one
    // else, so replacing it affects no other memory.
    check(unsafe {
        libc::mmap(
            spare as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    })?;
    // SAFETY: both ranges are `len` bytes, mapped and distinct (the spare is
    // a fresh reservation); the source is readable (the contract), the
    // destination was made writable just above; raw bytes, no reference
    // kept.
    unsafe { std::ptr::copy_nonoverlapping(src as *const u8, spare as *mut u8, len) };
    if prot == Prot::Read {
        // SAFETY: the caller's fresh range; only its protection changes.
        if unsafe { libc::mprotect(spare as *mut _, len, libc::PROT_READ) } != 0 {
            return Err(Error::last_os_error());
        }
    }
    no_fork(spare, len)?;
    uffd.register(spare, len)
}

/// Move the range made at `spare` (if `made` is Ok) over `[addr, addr+len)`
/// of the caller's region in one `mremap` (atomic: the target shows either
/// what it showed or the new range); on any failure `spare` is released.
///
/// # Safety
///
/// As [`replace_with_placeholder`], for `[addr, addr+len)`; `spare` is a fresh
/// range of `len` bytes the caller made and hands over.
unsafe fn move_in(spare: usize, addr: usize, len: usize, made: Result<()>) -> Result<()> {
    if let Err(e) = made {
        // SAFETY: `spare` is the caller's fresh range, handed over.
        unsafe { unmap(spare, len) };
        return Err(e);
    }
    // SAFETY: `spare` is ours (just made); the target range belongs to the
    // caller's region; MREMAP_FIXED replaces it atomically and frees `spare`.
    let p = unsafe {
        libc::mremap(
            spare as *mut _,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            addr as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        let e = Error::last_os_error();
        // SAFETY: `spare` is the caller's fresh range, not moved.
        unsafe { unmap(spare, len) };
        return Err(e);
    }
    Ok(())
}

/// Atomically put a *window* over `[addr, addr+len)`: a read-only shared
/// mapping of device bytes `[dev_off, dev_off+len)` of a shmem device,
/// registered for minor and missing faults, with no page-table entries. Every
/// access faults to the handler, as on a placeholder, and pages are shown
/// later by `UFFDIO_CONTINUE` without changing any mapping. The window is
/// made at a spare address and moved over the target with `mremap`, so no
/// instant exists where the device pages are reachable without a fault.
/// Not inherited by fork (the child has no handler). Waits, as
/// [`replace_with_placeholder`], until a handler thread reads the REMAP event.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; what was there is discarded, so no live Rust reference may point into it; `fd` is an open descriptor of a shmem device. The caller must not block the uffd handler threads.
///
/// # References
///
/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html), [mremap(2)](https://man7.org/linux/man-pages/man2/mremap.2.html), [userfaultfd(2)](https://man7.org/linux/man-pages/man2/userfaultfd.2.html) (`UFFDIO_REGISTER_MODE_MINOR`)
pub unsafe fn place_window(
    uffd: &Uffd,
    addr: usize,
    len: usize,
    fd: RawFd,
    dev_off: u64,
) -> Result<()> {
    let spare = reserve(len, PAGE, 0)?;
    // SAFETY: `spare` was reserved just above; no one else knows it; `fd` is
    // the device (this function's contract).
    let made = unsafe { map_device(spare, len, fd, dev_off, Prot::Read, false, false) }
        .and_then(|()| no_fork(spare, len))
        .and_then(|()| uffd.register_window(spare, len));
    // SAFETY: the caller owns `[addr, addr+len)` (this function's contract);
    // `spare` is the fresh range made above.
    unsafe { move_in(spare, addr, len, made) }
}

/// Let fork copy `[addr, addr+len)` again (pages of a window that show the
/// file: the child sees them as the parent does).
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released.
///
/// # References
///
/// [madvise(2)](https://man7.org/linux/man-pages/man2/madvise.2.html) (`MADV_DOFORK`)
pub unsafe fn inherit(addr: usize, len: usize) -> Result<()> {
    // The system call itself: this runs in a fork handler, where an
    // interposer of `madvise` (the preload shim's, which serves a program's
    // advice on udax mappings) would take it for the program's own call.
    // SAFETY: the range belongs to the caller's region; MADV_DOFORK only
    // changes what fork copies.
    if unsafe { libc::syscall(libc::SYS_madvise, addr, len, libc::MADV_DOFORK) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// Drop the pages of an anonymous placeholder range (zero pages, poison
/// markers): the next access faults to the handler again.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; the range holds anonymous placeholder pages (zero pages, poison markers), whose contents may be dropped: `MADV_DONTNEED` on a private mapping of the device would drop stores not yet written back.
///
/// # References
///
/// [madvise(2)](https://man7.org/linux/man-pages/man2/madvise.2.html) (`MADV_DONTNEED`)
pub unsafe fn discard(addr: usize, len: usize) -> Result<()> {
    // SAFETY: the range belongs to the caller's region; MADV_DONTNEED on it only
    // drops page-table entries of udax's own anonymous placeholder pages.
    if unsafe { libc::madvise(addr as *mut _, len, libc::MADV_DONTNEED) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// Change the protection of a range of a region.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; no live Rust reference into the range may be used for an access the new protection forbids.
///
/// # References
///
/// [mprotect(2)](https://man7.org/linux/man-pages/man2/mprotect.2.html)
pub unsafe fn protect(addr: usize, len: usize, prot: Prot) -> Result<()> {
    // SAFETY: the range belongs to the caller's region.
    if unsafe { libc::mprotect(addr as *mut _, len, prot.bits()) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// Make `[addr, addr+len)` inaccessible (a load or store gets SIGSEGV), as
/// `munmap` would, but keep the address range reserved: a fresh `PROT_NONE`
/// reservation replaces the pages atomically.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; what was there is discarded, so no live Rust reference
/// may point into it.
///
/// # References
///
/// [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html) (`MAP_FIXED`, `PROT_NONE`)
pub unsafe fn make_inaccessible(addr: usize, len: usize) -> Result<()> {
    // SAFETY: the caller owns the range (this function's contract); MAP_FIXED
    // replaces only those pages.
    check(unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    })?;
    Ok(())
}

/// Release a range of address space.
///
/// # Safety
///
/// `[addr, addr+len)` is page-aligned and lies in an address range the caller
/// owns: a reservation from [`reserve`] (or a udax region made over one) that
/// is not yet released; after the call nothing may refer to the range (it may be reused by any later mapping).
///
/// # References
///
/// [munmap(2)](https://man7.org/linux/man-pages/man2/munmap.2.html)
pub unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: the range belongs to the caller's region, which is being released;
    // nothing of udax refers to it afterwards.
    unsafe { libc::munmap(addr as *mut _, len) };
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u32 =
    (3 << 30) | ((size_of::<g::pm_scan_arg>() as u32) << 16) | (0x66 << 8) | 16;

/// Pages of `[addr, addr+len)` that are present but not the shared zero page
/// (pure query). Used after installing zero pages to catch a store that raced
/// in between `UFFDIO_ZEROPAGE` and `UFFDIO_WRITEPROTECT` and made a private copy.
pub fn non_zero_pages(
    pagemap: RawFd,
    addr: usize,
    len: usize,
) -> Result<Vec<std::ops::Range<usize>>> {
    pagemap_query(
        pagemap,
        addr,
        len,
        0,
        (g::PAGE_IS_PFNZERO | g::PAGE_IS_PRESENT) as u64,
        g::PAGE_IS_PFNZERO as u64,
        g::PAGE_IS_PRESENT as u64,
    )
}

/// Pages of `[addr, addr+len)` holding anonymous memory of their own: the
/// private copies of a `MAP_PRIVATE` mapping (present or swapped, not a
/// file page, not the shared zero page). Pure query.
pub fn private_copies(
    pagemap: RawFd,
    addr: usize,
    len: usize,
) -> Result<Vec<std::ops::Range<usize>>> {
    let (file, zero) = (g::PAGE_IS_FILE as u64, g::PAGE_IS_PFNZERO as u64);
    let any = (g::PAGE_IS_PRESENT | g::PAGE_IS_SWAPPED) as u64;
    pagemap_query_any(pagemap, addr, len, 0, (file | zero, file | zero, any), any)
}

/// Report the pages of `[addr, addr+len)` written since they were last
/// write-protected (WP_ASYNC tracking), and write-protect them again in the same
/// walk. `pagemap` is an open `/proc/self/pagemap`. Returns page-aligned ranges.
pub fn scan_written(
    pagemap: RawFd,
    addr: usize,
    len: usize,
) -> Result<Vec<std::ops::Range<usize>>> {
    pagemap_query(
        pagemap,
        addr,
        len,
        (g::PM_SCAN_WP_MATCHING | g::PM_SCAN_CHECK_WPASYNC) as u64,
        g::PAGE_IS_WRITTEN as u64,
        0,
        g::PAGE_IS_WRITTEN as u64,
    )
}

fn pagemap_query(
    pagemap: RawFd,
    addr: usize,
    len: usize,
    flags: u64,
    mask: u64,
    inverted: u64,
    ret: u64,
) -> Result<Vec<std::ops::Range<usize>>> {
    pagemap_query_any(pagemap, addr, len, flags, (mask, inverted, 0), ret)
}

/// `PAGEMAP_SCAN` of `[addr, addr+len)`: pages matching every category of
/// `mask` (after flipping those of `inverted`) and one of `anyof`.
fn pagemap_query_any(
    pagemap: RawFd,
    addr: usize,
    len: usize,
    flags: u64,
    (mask, inverted, anyof): (u64, u64, u64),
    ret: u64,
) -> Result<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut vec = vec![
        g::page_region {
            start: 0,
            end: 0,
            categories: 0
        };
        512
    ];
    let end = (addr + len) as u64;
    let mut at = addr as u64;
    while at < end {
        let mut arg = g::pm_scan_arg {
            size: size_of::<g::pm_scan_arg>() as u64,
            flags,
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: anyof,
            return_mask: ret,
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` entries
        // into `vec`, which holds that many; it only inspects and write-protects
        // page tables of the caller's own range.
        let n = unsafe { libc::ioctl(pagemap, PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(Error::last_os_error());
        }
        for r in &vec[..n as usize] {
            out.push(r.start as usize..r.end as usize);
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn non_zero_pages_finds_a_private_copy_among_zero_pages() {
        let u = Uffd::open().unwrap();
        let len = 16 * PAGE;
        let area = Area::reserve(&u, len, PAGE, 0, Prot::ReadWrite).unwrap();
        let a = area.base();
        u.zeropage(a, len, true).unwrap();
        // No protection yet: a store makes a private copy of the zero page.
        // SAFETY: inside the placeholder just made.
        unsafe { (a as *mut u8).add(5 * PAGE + 3).write_volatile(1) };
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let v = non_zero_pages(pm.as_raw_fd(), a, len).unwrap();
        assert_eq!(v, vec![a + 5 * PAGE..a + 6 * PAGE]);
        // SAFETY: the test's own area, not used after this.
        unsafe { unmap(a, len) };
    }
}
