//! A client's connection across `fork`: it stays the parent's.
//!
//! A forked child inherits the parent's connections: the same sockets, the
//! same device descriptor and mapping. A request the child sent on them
//! would interleave with the parent's on one stream. So each connection
//! knows the process it was made in, and in any other (a forked child) it
//! refuses every call with `ENOTCONN` and lets go of the device the first
//! time it is used there (its descriptor names `/dev/null`, its
//! whole-device mapping becomes inaccessible): the child connects anew.
//! Dropping the parent's `Client` in the child neither shuts the sockets
//! (the parent's too) nor waits for the listener thread (the parent's: it
//! did not cross the fork).
//!
//! "This process" is a process id kept in a page the kernel empties in a
//! child at fork (`MADV_WIPEONFORK`, Linux 4.14), so the check costs one
//! load, and is right from the fork on, in the fork's own handlers too (the
//! preload shim's child handler connects anew, then lets go of the
//! parent's connection itself). Without that page, every check asks the
//! kernel (`getpid`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The page holding this process's id (`None`: the kernel cannot wipe a
/// page at fork, ask it each time).
static PID_PAGE: OnceLock<Option<usize>> = OnceLock::new();

/// A page the kernel gives a forked child zeroed, or `None`.
fn wipe_on_fork_page() -> Option<usize> {
    #[allow(unsafe_code, reason = "an anonymous page for the process id")]
    // SAFETY: a new private anonymous mapping of one page, kept for the
    // life of the process (never unmapped); the advice only makes the
    // kernel give a forked child the page zeroed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        if libc::madvise(p, 4096, libc::MADV_WIPEONFORK) != 0 {
            libc::munmap(p, 4096);
            return None;
        }
        Some(p as usize)
    }
}

/// This process's id.
pub(super) fn pid() -> u32 {
    let Some(page) = *PID_PAGE.get_or_init(wipe_on_fork_page) else {
        return std::process::id();
    };
    #[allow(unsafe_code, reason = "the process id's word in its page")]
    // SAFETY: `page` is a live, page-aligned, writable mapping that is
    // never unmapped (`wipe_on_fork_page`), so its first 4 bytes are a
    // valid, aligned `AtomicU32` for the life of the process; only this
    // function reaches it.
    let cached = unsafe { &*(page as *const AtomicU32) };
    // ORDERING: Relaxed: a cache of a value every thread computes alike
    // (the kernel zeroes it in a child before any thread runs there).
    match cached.load(Ordering::Relaxed) {
        0 => {
            let id = std::process::id();
            // ORDERING: as above.
            cached.store(id, Ordering::Relaxed);
            id
        }
        id => id,
    }
}
