//! umask(2): the process's file creation mask, which udax applies to the
//! files and directories it creates; kept here, as the kernel keeps it.
//!
//! ORDERING: `UMASK` is a value (the mask), not a flag: nothing is published
//! through it, so every access is Relaxed. Its compare-exchange keeps a value
//! stored by a `umask` call over the one read from `/proc`.

use libc::mode_t;
use std::sync::atomic::{AtomicU32, Ordering};

/// The process umask as last known: `u32::MAX` until first needed.
static UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// At load, in the process's only thread: the umask by setting it to 0 and
/// back (no other thread can create a file in between, and no signal handler
/// is installed yet), which saves the `/proc` read below (~25 us a process).
pub fn umask_at_load() {
    // SAFETY: umask(2) takes one integer and cannot fail (the raw system
    // call: libc's `umask` is the interposer below).
    let m = unsafe { libc::syscall(libc::SYS_umask, 0) } as u32 & 0o777;
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_umask, m) };
    UMASK.store(m, Ordering::Relaxed);
}

/// The process umask, without changing it (`umask(2)` can only set it): as
/// learnt at load, or read from `/proc/self/status` once (~20 us, which every
/// file creation used to pay), then kept by the `umask` interposer below.
pub fn umask_of_process() -> u32 {
    let known = UMASK.load(Ordering::Relaxed);
    if known != u32::MAX {
        return known;
    }
    let m = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    // A umask(2) that ran meanwhile stored the newer value: keep it.
    match UMASK.compare_exchange(u32::MAX, m, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => m,
        Err(newer) => newer,
    }
}

/// umask(2): set it (the system call; it never fails) and remember it.
#[no_mangle]
pub extern "C" fn umask(mask: mode_t) -> mode_t {
    // SAFETY: umask(2) takes one integer and cannot fail; the raw system
    // call (libc's `umask` is this very symbol).
    let old = unsafe { libc::syscall(libc::SYS_umask, mask & 0o777) };
    UMASK.store(mask & 0o777, Ordering::Relaxed);
    old as mode_t
}
