//! mmap of udax descriptors: a udax [`VMapping`] (the DAX fault engine), kept
//! alive in a table keyed by address until munmap.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use libc::{c_int, c_void, off64_t, size_t};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use udax::vfs::VMapping;
use udax::{MapFlags, Prot};

const PAGE: usize = 4096;

struct Entry {
    /// Dropped only by the process that mapped it (see `Drop`).
    map: std::mem::ManuallyDrop<VMapping>,
    born: u32,
    prot: Mutex<Prot>,
    flags: MapFlags,
    /// Pages already unmapped by a partial munmap (still reserved by udax
    /// until the whole mapping is dropped).
    gone: Mutex<rangemap::RangeSet<usize>>,
}

impl Entry {
    fn new(map: VMapping, prot: Prot, flags: MapFlags) -> Arc<Entry> {
        Arc::new(Entry {
            map: std::mem::ManuallyDrop::new(map),
            born: crate::state::mount::pid(),
            prot: Mutex::new(prot),
            flags,
            gone: Mutex::new(Default::default()),
        })
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn gone(&self) -> std::sync::MutexGuard<'_, rangemap::RangeSet<usize>> {
        self.gone.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn prot(&self) -> Prot {
        *self.prot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // In a forked child the mapping is the parent's (its fault engine
        // and, through an owner, its open handle): left alone.
        if self.born == crate::state::mount::pid() {
            // SAFETY: dropped once, here, and `map` is not used after.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.map) };
        }
    }
}

/// Base address -> mapping. The lock is held only to look up, insert or
/// remove: never across a call into udax (a fault handler thread may need
/// this table while udax waits for it), nor while a mapping is dropped.
static MAPS: Mutex<BTreeMap<usize, Arc<Entry>>> = Mutex::new(BTreeMap::new());
static NMAPS: AtomicUsize = AtomicUsize::new(0);

fn maps() -> std::sync::MutexGuard<'static, BTreeMap<usize, Arc<Entry>>> {
    MAPS.lock().unwrap_or_else(|p| p.into_inner())
}

fn entry(base: usize) -> Option<Arc<Entry>> {
    maps().get(&base).cloned()
}

fn insert(base: usize, e: Arc<Entry>) {
    maps().insert(base, e);
    // ORDERING: pairs with the Acquire in `any_overlap`.
    NMAPS.fetch_add(1, Ordering::Release);
}

/// True if `[a, a+len)` overlaps a udax mapping. Free when there are no udax
/// mappings. (udax's own fault threads, which map and unmap inside udax
/// mappings, never get here: they run inside the shim, `threads`.)
fn any_overlap(a: usize, len: usize) -> bool {
    // ORDERING: Acquire pairs with the Release in `insert`.
    if NMAPS.load(Ordering::Acquire) == 0 {
        return false;
    }
    let end = a.saturating_add(len);
    maps()
        .range(..end)
        .next_back()
        .is_some_and(|(&b, e)| b + e.len() > a)
}

/// EFAULT if `[a, a+len)` touches a udax mapping the program cannot write:
/// a read-only one, or pages a partial munmap removed. The kernel answers a
/// read(2) into such memory with EFAULT (SPEC M14, xfstests generic/462); a
/// copy by the shim would fault instead.
pub fn check_writable(a: usize, len: usize) -> R<()> {
    if len == 0 || !any_overlap(a, len) {
        return Ok(());
    }
    let end = a.saturating_add(len);
    for (b, l) in overlapping(a, end) {
        let Some(e) = entry(b) else { continue };
        if e.prot() != Prot::ReadWrite {
            return Err(Errno(libc::EFAULT));
        }
        let (s, t) = (a.max(b) - b, end.min(b + l) - b);
        if e.gone().overlaps(&(s..t)) {
            return Err(Errno(libc::EFAULT));
        }
    }
    Ok(())
}

/// The udax mappings overlapping `[a, end)`: (base, len) of each, in order.
fn overlapping(a: usize, end: usize) -> Vec<(usize, usize)> {
    let m = maps();
    let mut v: Vec<(usize, usize)> = Vec::new();
    if let Some((&b, e)) = m.range(..a).next_back() {
        if b + e.len() > a {
            v.push((b, e.len()));
        }
    }
    v.extend(m.range(a..end).map(|(&b, e)| (b, e.len())));
    v
}

fn page_round(len: usize) -> R<usize> {
    len.checked_add(PAGE - 1)
        .map(|l| l / PAGE * PAGE)
        .ok_or(Errno(libc::ENOMEM))
}

fn mmap_udax(
    d: &crate::state::fds::Desc,
    len: size_t,
    prot: c_int,
    flags: c_int,
    off: off64_t,
) -> R<*mut c_void> {
    let f = d.file()?;
    if len == 0 || off < 0 || !(off as usize).is_multiple_of(PAGE) {
        return Err(Errno(libc::EINVAL));
    }
    if flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0 {
        return Err(unsupported(
            "mmap",
            "MAP_FIXED on a udax file (udax places its mappings itself)",
            libc::EOPNOTSUPP,
        ));
    }
    let kind = flags & 0x3; // MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE
    let private = match kind {
        libc::MAP_PRIVATE => true,
        libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE => false,
        _ => return Err(Errno(libc::EINVAL)),
    };
    let known = 0x3
        | libc::MAP_POPULATE
        | libc::MAP_SYNC
        | libc::MAP_NORESERVE
        | libc::MAP_NONBLOCK
        | libc::MAP_LOCKED
        | libc::MAP_DENYWRITE
        | libc::MAP_EXECUTABLE;
    if kind == libc::MAP_SHARED_VALIDATE && flags & !known != 0 {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let p = match prot & !libc::PROT_EXEC {
        _ if prot & libc::PROT_EXEC != 0 => {
            return Err(unsupported(
                "mmap",
                "PROT_EXEC on a udax file",
                libc::EOPNOTSUPP,
            ))
        }
        libc::PROT_READ => Prot::Read,
        x if x & libc::PROT_WRITE != 0 => Prot::ReadWrite,
        _ => {
            return Err(unsupported(
                "mmap",
                "PROT_NONE on a udax file",
                libc::EOPNOTSUPP,
            ))
        }
    };
    if !d.readable() {
        return Err(Errno(libc::EACCES));
    }
    if p == Prot::ReadWrite && !private && !d.writable() {
        return Err(Errno(libc::EACCES));
    }
    let mut mf = if private {
        MapFlags::PRIVATE
    } else {
        MapFlags::SHARED
    };
    if flags & libc::MAP_POPULATE != 0 {
        mf = mf.populate();
    }
    // MAP_SYNC counts only with MAP_SHARED_VALIDATE (mmap(2)); ignored otherwise.
    if flags & libc::MAP_SYNC != 0 && kind == libc::MAP_SHARED_VALIDATE {
        mf = mf.sync();
    }
    let m = f.mmap(off as u64, len, p, mf)?;
    let base = m.as_ptr() as usize;
    insert(base, Entry::new(m, p, mf));
    Ok(base as *mut c_void)
}

/// Refuse a host MAP_FIXED over part of a udax mapping; drop udax mappings it
/// covers whole (the kernel would replace them).
fn clear_for_fixed(a: usize, len: usize) -> R<()> {
    let end = a.saturating_add(len);
    for (b, l) in overlapping(a, end) {
        if b < a || b + l > end {
            return Err(unsupported(
                "mmap",
                "MAP_FIXED over part of a udax mapping",
                libc::EOPNOTSUPP,
            ));
        }
    }
    for (b, _) in overlapping(a, end) {
        remove(b);
    }
    Ok(())
}

fn remove(base: usize) {
    let e = maps().remove(&base);
    if e.is_some() {
        // ORDERING: lowered after the removal; a stale nonzero only costs a
        // lookup under the lock.
        NMAPS.fetch_sub(1, Ordering::Release);
    }
    drop(e); // outside the lock: unmapping calls munmap
}

macro_rules! mmap_fn {
    ($name:ident) => {
        /// # Safety
        /// As mmap(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            addr: *mut c_void,
            len: size_t,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: off64_t,
        ) -> *mut c_void {
            run(
                libc::MAP_FAILED,
                || fwd!($name(addr, len, prot, flags, fd, off)),
                || {
                    let udax = if flags & libc::MAP_ANONYMOUS != 0 {
                        None
                    } else {
                        crate::dispatch::lookup(fd)
                    };
                    match udax {
                        Some(d) => mmap_udax(&*d?, len, prot, flags, off),
                        None => {
                            if flags & libc::MAP_FIXED != 0 && any_overlap(addr as usize, len) {
                                clear_for_fixed(addr as usize, len)?;
                            }
                            Ok(fwd!($name(addr, len, prot, flags, fd, off)))
                        }
                    }
                },
            )
        }
    };
}
mmap_fn!(mmap);
mmap_fn!(mmap64);

/// Apply `f` to each udax part of `[a, a+len)` and `host` to each gap.
fn split(
    a: usize,
    len: usize,
    mut f: impl FnMut(usize, usize, usize) -> R<()>,
    mut host: impl FnMut(usize, usize) -> R<()>,
) -> R<()> {
    let end = a.checked_add(page_round(len)?).ok_or(Errno(libc::EINVAL))?;
    let mut at = a;
    for (b, l) in overlapping(a, end) {
        let s = b.max(a);
        let e = (b + l).min(end);
        if s > at {
            host(at, s - at)?;
        }
        f(b, s - b, e - s)?;
        at = e;
    }
    if at < end {
        host(at, end - at)?;
    }
    Ok(())
}

fn host_result(r: c_int) -> R<()> {
    if r < 0 {
        Err(Errno(crate::boundary::entry::errno()))
    } else {
        Ok(())
    }
}

/// # Safety
/// As munmap(2).
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    run(
        -1,
        || fwd!(munmap(addr, len)),
        || {
            let a = addr as usize;
            if !any_overlap(a, len) {
                return Ok(fwd!(munmap(addr, len)));
            }
            if !a.is_multiple_of(PAGE) || len == 0 {
                return Err(Errno(libc::EINVAL));
            }
            split(
                a,
                len,
                |base, off, n| {
                    let Some(e) = entry(base) else {
                        return Ok(()); // unmapped meanwhile by another thread
                    };
                    let whole = if off == 0 && n == e.len() {
                        true
                    } else {
                        e.map.unmap_range(off, n)?;
                        let mut g = e.gone();
                        g.insert(off..off + n);
                        g.iter().map(|r| r.end - r.start).sum::<usize>() == e.len()
                    };
                    drop(e);
                    if whole {
                        remove(base);
                    }
                    Ok(())
                },
                |s, n| host_result(fwd!(munmap(s as *mut c_void, n))),
            )?;
            Ok(0)
        },
    )
}

/// # Safety
/// As msync(2).
#[no_mangle]
pub unsafe extern "C" fn msync(addr: *mut c_void, len: size_t, flags: c_int) -> c_int {
    run(
        -1,
        || fwd!(msync(addr, len, flags)),
        || {
            let a = addr as usize;
            if !any_overlap(a, len) {
                return Ok(fwd!(msync(addr, len, flags)));
            }
            let known = libc::MS_ASYNC | libc::MS_SYNC | libc::MS_INVALIDATE;
            if !a.is_multiple_of(PAGE)
                || flags & !known != 0
                || (flags & libc::MS_ASYNC != 0 && flags & libc::MS_SYNC != 0)
            {
                return Err(Errno(libc::EINVAL));
            }
            split(
                a,
                len,
                // MS_ASYNC is served as MS_SYNC: the flush is a few cache lines
                // per dirty page, not I/O worth scheduling.
                |base, off, n| match entry(base) {
                    Some(e) => e.map.msync(off, n).map_err(Errno::from),
                    None => Err(Errno(libc::ENOMEM)), // unmapped meanwhile
                },
                |s, n| host_result(fwd!(msync(s as *mut c_void, n, flags))),
            )?;
            Ok(0)
        },
    )
}

/// # Safety
/// As mprotect(2).
#[no_mangle]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
    run(
        -1,
        || fwd!(mprotect(addr, len, prot)),
        || {
            let a = addr as usize;
            if !any_overlap(a, len) {
                return Ok(fwd!(mprotect(addr, len, prot)));
            }
            let p = match prot {
                libc::PROT_READ => Prot::Read,
                x if x == libc::PROT_READ | libc::PROT_WRITE || x == libc::PROT_WRITE => {
                    Prot::ReadWrite
                }
                _ => {
                    return Err(unsupported(
                        "mprotect",
                        "PROT_NONE / PROT_EXEC on a udax mapping",
                        libc::EOPNOTSUPP,
                    ))
                }
            };
            let mut m = maps();
            let Some(e) = m
                .get_mut(&a)
                .filter(|e| page_round(len).ok() == Some(e.len()))
            else {
                return Err(unsupported(
                    "mprotect",
                    "part of a udax mapping (only a whole mapping can change protection)",
                    libc::EOPNOTSUPP,
                ));
            };
            let mut cur = e.prot.lock().unwrap_or_else(|p| p.into_inner());
            e.map.protect(p)?;
            *cur = p;
            Ok(0)
        },
    )
}

thread_local! {
    /// The first page a MADV_HWPOISON of this thread poisoned, to be touched
    /// once the shim's frames are gone (see [`madvise`]); 0 = none.
    static HWPOISON_HIT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// MADV_HWPOISON on pages `[off, off+n)` of a udax mapping: a media error on
/// the device pages behind them (SPEC E1; the kernel's `madvise_inject_error`
/// on a DAX page). udax unmaps them from every mapping (E3).
fn hwpoison(e: &Entry, base: usize, off: usize, n: usize) -> R<()> {
    let fs = crate::state::mount::fs()?;
    for p in (off..off + n).step_by(PAGE) {
        let fblk = (e.map.offset() + p as u64) / udax::BLOCK_SIZE;
        let udax::fs::extent::Lookup::Mapped { dev_blk, .. } = e.map.iomap(fblk)? else {
            // No device page behind a hole (the kernel's zero page is not poisoned).
            return Err(Errno(libc::EINVAL));
        };
        fs.inject_poison(dev_blk * udax::BLOCK_SIZE, udax::BLOCK_SIZE)?;
        HWPOISON_HIT.with(|h| {
            if h.get() == 0 {
                h.set(base + p);
            }
        });
    }
    Ok(())
}

fn madvise_udax(a: usize, len: usize, advice: c_int) -> R<()> {
    let hint = [
        libc::MADV_NORMAL,
        libc::MADV_RANDOM,
        libc::MADV_SEQUENTIAL,
        libc::MADV_WILLNEED,
        libc::MADV_DONTFORK,
        libc::MADV_DOFORK,
        libc::MADV_HUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        libc::MADV_DONTDUMP,
        libc::MADV_DODUMP,
        libc::MADV_COLD,
        libc::MADV_PAGEOUT,
        // KSM merges anonymous memory only; the kernel skips file mappings.
        libc::MADV_MERGEABLE,
        libc::MADV_UNMERGEABLE,
    ];
    split(
        a,
        len,
        |base, off, n| {
            if hint.contains(&advice) {
                return Ok(());
            }
            let Some(e) = entry(base) else {
                return Err(Errno(libc::ENOMEM)); // unmapped meanwhile
            };
            if advice == libc::MADV_HWPOISON {
                return hwpoison(&e, base, off, n);
            }
            if advice == libc::MADV_POPULATE_READ || advice == libc::MADV_POPULATE_WRITE {
                // Fault the pages in (a write populate allocates holes), as
                // a pin does, and let go at once; past end of file the
                // kernel's EFAULT.
                let write = advice == libc::MADV_POPULATE_WRITE;
                if write && e.prot() == Prot::Read {
                    return Err(Errno(libc::EINVAL));
                }
                let eof = e.map.file_len()?.div_ceil(PAGE as u64) * PAGE as u64;
                if e.map.offset() + (off + n) as u64 > eof {
                    return Err(Errno(libc::EFAULT));
                }
                return match e.map.pin(off, n, write) {
                    Ok(_pin) => Ok(()),
                    Err(err) => Err(Errno(err.errno())),
                };
            }
            if advice == libc::MADV_SOFT_OFFLINE {
                // A DAX page cannot be migrated away (the kernel: EIO).
                return Err(Errno(libc::EIO));
            }
            // On a shared DAX mapping, DONTNEED only drops page-table entries:
            // the next access sees the same file data, so there is nothing to do.
            if advice == libc::MADV_DONTNEED && !e.flags.private {
                return Ok(());
            }
            Err(unsupported(
                "madvise",
                &format!("advice {advice} on a udax mapping"),
                libc::EOPNOTSUPP,
            ))
        },
        |s, n| host_result(fwd!(madvise(s as *mut c_void, n, advice))),
    )
}

/// # Safety
/// As madvise(2).
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int {
    let r = run(
        -1,
        || fwd!(madvise(addr, len, advice)),
        || {
            if !any_overlap(addr as usize, len) {
                return Ok(fwd!(madvise(addr, len, advice)));
            }
            madvise_udax(addr as usize, len, advice).map(|_| 0)
        },
    );
    let hit = HWPOISON_HIT.try_with(|h| h.replace(0)).unwrap_or(0);
    if r == 0 && hit != 0 {
        // "Action required", as the kernel's injection reports it: the caller
        // gets SIGBUS BUS_MCEERR_AR for the page now. The load is made here,
        // with no shim state on the stack (no guard, lock or value with a
        // destructor), because a handler may siglongjmp out of it.
        // SAFETY: `hit` is a page of this process's live udax mapping, which
        // now holds a poison marker: the load raises SIGBUS (rewritten to
        // BUS_MCEERR_AR by udax's handler) and reads no memory.
        unsafe { std::ptr::read_volatile(hit as *const u8) };
    }
    r
}

/// posix_madvise(3): returns the error number.
///
/// # Safety
/// As posix_madvise(3).
#[no_mangle]
pub unsafe extern "C" fn posix_madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int {
    run(
        libc::EIO,
        || fwd!(posix_madvise(addr, len, advice)),
        || {
            if !any_overlap(addr as usize, len) {
                return Ok(fwd!(posix_madvise(addr, len, advice)));
            }
            // POSIX_MADV_DONTNEED is a no-op hint in glibc; the others match MADV_*.
            let adv = if advice == libc::POSIX_MADV_DONTNEED {
                libc::MADV_NORMAL
            } else {
                advice
            };
            Ok(match madvise_udax(addr as usize, len, adv) {
                Ok(()) => 0,
                Err(Errno(e)) => e,
            })
        },
    )
}

/// # Safety
/// As mremap(2); `new_addr` is read only with MREMAP_FIXED.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    run(
        libc::MAP_FAILED,
        || fwd!(mremap(old, old_len, new_len, flags, new_addr)),
        || {
            let a = old as usize;
            if !any_overlap(a, old_len.max(1)) {
                return Ok(fwd!(mremap(old, old_len, new_len, flags, new_addr)));
            }
            let Some(e) = entry(a).filter(|e| e.gone().is_empty()) else {
                return Err(unsupported(
                    "mremap",
                    "part of a udax mapping (only a whole mapping can be remapped)",
                    libc::EOPNOTSUPP,
                ));
            };
            let (cur_len, prot, mf, file_off) = (e.len(), e.prot(), e.flags, e.map.offset());
            if page_round(old_len)? != cur_len || new_len == 0 {
                return Err(Errno(libc::EINVAL));
            }
            if page_round(new_len)? == cur_len {
                return Ok(old);
            }
            if flags & libc::MREMAP_MAYMOVE == 0 {
                // udax cannot grow or shrink a mapping in place.
                return Err(Errno(libc::ENOMEM));
            }
            if flags & (libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP) != 0 || mf.private {
                return Err(unsupported(
                    "mremap",
                    "MREMAP_FIXED / MREMAP_DONTUNMAP, or a private udax mapping (its copies would be lost)",
                    libc::EOPNOTSUPP,
                ));
            }
            // A shared mapping shows the file: a new mapping of the new length
            // shows the same bytes, so moving is mapping anew and dropping the old.
            let new = e.map.remap(file_off, new_len, prot, mf)?;
            drop(e);
            let base = new.as_ptr() as usize;
            insert(base, Entry::new(new, prot, mf));
            remove(a);
            Ok(base as *mut c_void)
        },
    )
}

/// At exit: drop every mapping (so unmount does not wait for them).
pub fn drop_all() {
    let all = std::mem::take(&mut *maps());
    // ORDERING: as in `remove`.
    NMAPS.store(0, Ordering::Release);
    drop(all);
}

/// Tokens the last fork's prepare handler got for the mappings of
/// this process (by base address): the child adopts each mapping's file
/// with one and makes the mapping anew ([`after_fork_in_child`]).
/// `None` unless the process is attached to an owner (embedded, the
/// child keeps its inherited mappings as they are: docs/limits.md).
static FORK_MAPS: Mutex<Option<Vec<(usize, u64)>>> = Mutex::new(None);

/// Just before fork (the prepare handler, inside the shim): offer the file
/// of each mapping this process made through an owner to the child
/// (a round trip each; nothing when no udax mapping exists).
pub fn before_fork() {
    // ORDERING: Acquire pairs with the Release in `insert`.
    if NMAPS.load(Ordering::Acquire) == 0 {
        return;
    }
    let me = crate::state::mount::pid();
    let all: Vec<(usize, Arc<Entry>)> = maps().iter().map(|(b, e)| (*b, e.clone())).collect();
    let mut tokens = Vec::new();
    for (base, e) in all {
        let udax::vfs::VMapping::Remote(m) = &*e.map else {
            continue;
        };
        if e.born != me {
            continue;
        }
        match m.file().share() {
            Ok(t) => tokens.push((base, t)),
            Err(err) => tracing::warn!(
                "udax-preload: fork: the mapping at {base:#x} is not handed to the child ({err}); \
                 it is inaccessible there"
            ),
        }
    }
    *FORK_MAPS.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokens);
    // Held across the fork itself (the shim's prepare handler runs last):
    // no other thread of the parent is inside the table when the child's
    // copy is made, so the child finds it unlocked. Released by
    // `after_fork_in_parent`, used by the child's handler.
    HELD.with(|h| *h.borrow_mut() = Some(maps()));
}

type Table = std::sync::MutexGuard<'static, BTreeMap<usize, Arc<Entry>>>;

thread_local! {
    /// The mapping table, locked by the forking thread across the fork.
    static HELD: std::cell::RefCell<Option<Table>> = const { std::cell::RefCell::new(None) };
}

/// After fork, in the parent: the table is free again.
pub fn after_fork_in_parent() {
    let _ = HELD.try_with(|h| h.borrow_mut().take());
}

/// In a forked child, before the program goes on (the child handler): the
/// mappings inherited from the parent are made anew at the same
/// addresses, each over the child's own open of its file (adopted with the
/// token of [`before_fork`]), so this process resolves their faults and
/// holds their leases: a later truncate or punch by any process unmaps them
/// here too, as the kernel's `unmap_mapping_range` reaches every process.
/// Until then the child's copies show what the parent had mapped, which a
/// change made meanwhile could have freed; so a mapping that cannot be made
/// anew is made inaccessible instead (SIGSEGV, never stale data). A private
/// mapping keeps the copies the parent had made (docs/preload.md, "fork").
pub fn after_fork_in_child() {
    let tokens = FORK_MAPS.lock().unwrap_or_else(|p| p.into_inner()).take();
    let held = HELD.try_with(|h| h.borrow_mut().take()).ok().flatten();
    // ORDERING: the child's only thread.
    let Some(tokens) = tokens.filter(|_| NMAPS.load(Ordering::Acquire) > 0) else {
        return;
    };
    udax::forget_parent_fault_engine();
    let mut table = held.unwrap_or_else(maps);
    let inherited: Vec<(usize, Arc<Entry>)> = std::mem::take(&mut *table).into_iter().collect();
    drop(table);
    for (base, old) in inherited {
        let token = tokens.iter().find(|(b, _)| *b == base).map(|(_, t)| *t);
        let len = old.len();
        if let Err(Errno(e)) = renew(old, token) {
            tracing::warn!(
                "udax-preload: fork: the mapping at {base:#x} inherited from the parent could not \
                 be made anew in the child (errno {e}); it is inaccessible there"
            );
            // ORDERING: as in `remove`.
            NMAPS.fetch_sub(1, Ordering::Release);
            // The range was a udax mapping of the parent, which this child
            // no longer treats as one: PROT_NONE anonymous memory replaces
            // its inherited pages (an access gets SIGSEGV).
            let _ = fwd!(mmap(
                base as *mut c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0
            ));
        }
    }
}

/// Make inherited mapping `old` anew with the file `token` names.
fn renew(old: Arc<Entry>, token: Option<u64>) -> R<()> {
    let token = token.ok_or(Errno(libc::EIO))?;
    let Ok(mut e) = Arc::try_unwrap(old) else {
        // Held by a thread of the parent that was inside a call at the fork.
        return Err(Errno(libc::EBUSY));
    };
    let udax::vfs::Vfs::Remote(c) = crate::state::mount::fs()? else {
        return Err(Errno(libc::EIO));
    };
    let file = udax::vfs::VFile::Remote(c.adopt(token)?);
    // SAFETY: `e` is dropped below without touching `map` again (its Drop
    // leaves a mapping of another process alone: `born` is the parent's).
    let old_map = unsafe { std::mem::ManuallyDrop::take(&mut e.map) };
    let prot = e.prot();
    let gone = e.gone().clone();
    let new = old_map.renew(&file, e.flags)?;
    let base = new.as_ptr() as usize;
    let ne = Entry::new(new, prot, e.flags);
    *ne.gone() = gone;
    maps().insert(base, ne);
    Ok(())
}
