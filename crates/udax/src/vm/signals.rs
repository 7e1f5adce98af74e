//! SIGBUS for poisoned pages (SPEC E3): `BUS_MCEERR_AR` with `si_addr_lsb`.
//!
//! A poisoned page of a mapping holds a userfaultfd poison marker: the kernel
//! then fails a kernel-context access with EFAULT (as it does for hardware
//! poison) and raises SIGBUS for a user access, but with `si_code = BUS_ADRERR`
//! (kernel 6.18). The kernel does not let another thread forge a positive
//! `si_code` (`rt_tgsigqueueinfo` from a handler thread gets EPERM), so the
//! faulting thread must rewrite the code itself: the engine installs a SIGBUS
//! handler that looks the faulting page up in a lock-free table of poisoned pages
//! and, on a hit, hands the signal on to the program's previous disposition as
//! `BUS_MCEERR_AR` with the mapping's `si_addr_lsb` (12 or 21). Every other
//! SIGBUS (end of file, failed faults, foreign ones) passes through unchanged.
//!
//! The handler runs first only if it is installed after the program's own
//! SIGBUS handler; a program that installs its handler later can call
//! [`install`] again to chain in front of it (see docs/limits.md).
//!
//! ORDERING: `TABLE` slots and `INSTALLED` are written only under `WRITERS`,
//! which also orders the writers' own loads (Relaxed suffices there). A slot
//! is self-contained: no other data is published through it. `add` stores it
//! (Release) before, in program order, the caller's ioctl that installs the
//! poison marker; the kernel's page-table locks order that ioctl before the
//! fault that raises SIGBUS, so the handler's load (Acquire) finds the slot.
//! `PREVIOUS` points to a leaked, never-changed `sigaction`: its Release swap
//! (before `sigaction` installs the handler) publishes the pointee to the
//! Acquire loads in the handler and in `chained_to`; the Acquire half of the
//! swap keeps that publication valid when the old pointer is stored back.
#![allow(
    unsafe_code,
    reason = "sigaction and siginfo: the SIGBUS/SIGSEGV handler and its chaining"
)]

// std atomics, not the `sync` facade: this state is read inside a signal
// handler (async-signal-safe loads only), which no model checker runs.
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Capacity of the table: poisoned pages mapped at one time in this process.
/// Pages past it still raise SIGBUS, with `BUS_ADRERR`.
const SLOTS: usize = 1024;

/// A slot: page address | 1 when the page was part of a 2 MiB mapping (lsb
/// 21) | 2 when the entry stands for the whole 2 MiB page at that (aligned)
/// address (a hugetlbfs device, where 2 MiB is the unit of loss); 0 = empty.
static TABLE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Serialises writers (readers, in the signal handler, only load).
static WRITERS: Mutex<()> = Mutex::new(());
/// The disposition found when [`install`] last ran (a leaked box).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Record that the page at `addr` is poisoned; `huge` when it was mapped by a
/// 2 MiB mapping (`si_addr_lsb` 21, else 12). Returns `false` if the table is full.
pub fn add(addr: usize, huge: bool) -> bool {
    let page = addr & !(super::PAGE - 1);
    let v = page | usize::from(huge);
    let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = TABLE.iter().find(|s| {
        let v = s.load(Ordering::Relaxed);
        v & 2 == 0 && v & !1 == page
    }) {
        s.store(v, Ordering::Release);
        return true;
    }
    match TABLE.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
        Some(s) => {
            s.store(v, Ordering::Release);
            true
        }
        None => {
            tracing::warn!("poisoned-page table full: {page:#x} will report BUS_ADRERR");
            false
        }
    }
}

/// Record that the whole 2 MiB page at `chunk` (2 MiB aligned) is lost, as a
/// hugetlb or 2 MiB device-dax page is: every access in it reports lsb 21.
pub fn add_chunk(chunk: usize) -> bool {
    let v = (chunk & !(crate::HUGE_SIZE as usize - 1)) | 3;
    let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    if TABLE.iter().any(|s| s.load(Ordering::Relaxed) == v) {
        return true;
    }
    match TABLE.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
        Some(s) => {
            s.store(v, Ordering::Release);
            true
        }
        None => false,
    }
}

/// Forget the poisoned pages in `[addr, addr + len)` (unmapped or cleared).
pub fn forget(addr: usize, len: usize) {
    let end = addr.saturating_add(len);
    let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    for s in &TABLE {
        let v = s.load(Ordering::Relaxed);
        if v != 0 && (addr..end).contains(&(v & !3)) {
            s.store(0, Ordering::Release);
        }
    }
}

/// `Some(lsb)` if the page of `addr` is poisoned. Async-signal-safe (loads only).
pub fn lookup(addr: usize) -> Option<u16> {
    let page = addr & !(super::PAGE - 1);
    let chunk = addr & !(crate::HUGE_SIZE as usize - 1);
    TABLE.iter().find_map(|s| {
        let v = s.load(Ordering::Acquire);
        let hit = v != 0
            && if v & 2 != 0 {
                v & !3 == chunk
            } else {
                v & !1 == page
            };
        hit.then_some(if v & 1 == 1 { 21 } else { 12 })
    })
}

/// Install the SIGBUS handler in front of the current disposition (which it
/// chains to). Idempotent while it stays installed; call it again after
/// installing a SIGBUS handler of your own, to put it back in front.
pub fn install() -> std::io::Result<()> {
    let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: querying the current disposition into a zeroed struct.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigaction to fill; null new action = query.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if INSTALLED.load(Ordering::Acquire) && cur.sa_sigaction == on_sigbus as *const () as usize {
        return Ok(());
    }
    let prev = Box::into_raw(Box::new(cur));
    // SAFETY: a zeroed sigaction with a valid SA_SIGINFO handler, an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigbus as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // Publish the previous disposition before the handler can run.
    let old = PREVIOUS.swap(prev, Ordering::AcqRel);
    // SAFETY: installing a valid action for SIGBUS.
    if unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) } != 0 {
        let e = std::io::Error::last_os_error();
        PREVIOUS.store(old, Ordering::Release);
        // SAFETY: `prev` came from Box::into_raw above and was never shared
        // (the store above put `old` back).
        drop(unsafe { Box::from_raw(prev) });
        return Err(e);
    }
    INSTALLED.store(true, Ordering::Release);
    // `old` is leaked on purpose: a handler running on another thread may still
    // be reading it.
    Ok(())
}

/// Is `handler` (a `sa_sigaction` value) udax's own SIGBUS handler?
pub fn is_ours(handler: usize) -> bool {
    handler == on_sigbus as *const () as usize
}

/// The disposition udax's SIGBUS handler passes signals on to (the program's
/// own), if the handler was ever installed. For an interposer that keeps
/// udax's handler in front and shows the program its own disposition.
pub fn chained_to() -> Option<libc::sigaction> {
    let p = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is null or a leaked box that is never freed.
    (!p.is_null()).then(|| unsafe { *p })
}

/// Offset of `si_addr_lsb` in the kernel's `siginfo_t` on 64-bit Linux: after
/// signo, errno, code (+ padding) and the 8-byte `si_addr`.
const ADDR_LSB_OFFSET: usize = 24;
const _: () = assert!(std::mem::size_of::<libc::siginfo_t>() == 128);

/// The kernel's `struct sigaction` for `rt_sigaction` on x86-64 and
/// aarch64 (handler, flags, restorer, a 64-bit mask).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

extern "C" fn on_sigbus(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; we copy it.
    let mut si: libc::siginfo_t = unsafe { std::ptr::read(info) };
    // SAFETY: `si` is a SIGBUS siginfo, whose union starts with si_addr.
    let addr = unsafe { si.si_addr() } as usize;
    if si.si_code == libc::BUS_ADRERR {
        if let Some(lsb) = lookup(addr) {
            si.si_code = libc::BUS_MCEERR_AR;
            // SAFETY: ADDR_LSB_OFFSET + 2 <= 128 = size of siginfo_t (asserted
            // above); the field is a naturally aligned i16 in the SIGBUS layout.
            unsafe {
                (&raw mut si)
                    .cast::<u8>()
                    .add(ADDR_LSB_OFFSET)
                    .cast::<i16>()
                    .write(lsb as i16)
            };
        }
    }
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: PREVIOUS is set before the handler is installed and never freed.
    let prev = unsafe { &*prev };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Default action (a synchronous SIGBUS cannot be ignored): die by this
        // SIGBUS, carrying the rewritten siginfo. Sending a positive si_code to
        // the calling thread itself is allowed.
        // SAFETY: plain syscalls with valid arguments; `si` is a full siginfo.
        unsafe {
            // The system call itself, not libc's `sigaction`: an interposer
            // of that (the preload shim's keeps udax's handler in front of
            // whatever the program installs) would put this handler back.
            let dfl = KernelSigaction {
                handler: libc::SIG_DFL,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            libc::syscall(
                libc::SYS_rt_sigaction,
                libc::SIGBUS,
                &raw const dfl,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            );
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGBUS);
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                libc::getpid(),
                libc::gettid(),
                libc::SIGBUS,
                &si as *const libc::siginfo_t,
            );
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            // Delivered on unblocking; if not, the default action by raise.
            libc::raise(libc::SIGBUS);
        }
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous disposition is an SA_SIGINFO handler of this type.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, &mut si, ctx);
    } else {
        // SAFETY: the previous disposition is a plain handler of this type.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_add_lookup_forget() {
        let a = 0x7f00_0000_0000usize;
        assert!(add(a + 5, false));
        assert!(add(a + 4096, true));
        assert_eq!(lookup(a + 100), Some(12));
        assert_eq!(lookup(a + 4096 + 7), Some(21));
        assert_eq!(lookup(a + 8192), None);
        forget(a, 8192);
        assert_eq!(lookup(a), None);
        assert_eq!(lookup(a + 4096), None);
        // A whole 2 MiB page: every address in it, lsb 21.
        let c = 0x7f00_0040_0000usize;
        assert!(add_chunk(c));
        assert_eq!(lookup(c + 5), Some(21));
        assert_eq!(lookup(c + (2 << 20) - 1), Some(21));
        assert_eq!(lookup(c + (2 << 20)), None);
        forget(c, 2 << 20);
        assert_eq!(lookup(c + 5), None);
    }
}
