//! SIGBUS dispositions (SPEC E3 for unmodified programs).
//!
//! udax raises `BUS_MCEERR_AR` for a poisoned page through its own SIGBUS
//! handler, which must run before the program's (it rewrites the code and
//! passes the signal on). Programs usually install their handler after
//! mapping the file, which would displace udax's. So while udax's handler is
//! installed, `sigaction(SIGBUS)` and `signal(SIGBUS)` install the program's
//! handler as the one udax chains to, put udax's back in front, and report the
//! program's own previous disposition, never udax's. Other signals, and
//! SIGBUS before udax installed its handler, go straight to libc.

use crate::boundary::entry::{fwd, set_errno};
use libc::c_int;

/// The disposition in force now (the kernel's view).
fn current() -> Option<libc::sigaction> {
    // SAFETY: all-zero is a valid sigaction to be filled.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    let r = fwd!(sigaction(libc::SIGBUS, std::ptr::null(), &mut cur));
    (r == 0).then_some(cur)
}

/// # Safety
/// As sigaction(2).
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if sig != libc::SIGBUS {
        return fwd!(sigaction(sig, act, old));
    }
    let Some(cur) = current() else {
        return fwd!(sigaction(sig, act, old));
    };
    // SAFETY: sigaction(2)'s contract: `act` is null or a valid sigaction.
    let installs_ours = !act.is_null() && udax::signals::is_ours(unsafe { (*act).sa_sigaction });
    if !udax::signals::is_ours(cur.sa_sigaction) || installs_ours {
        // Not in front yet, or udax itself (re)installing its handler.
        return fwd!(sigaction(sig, act, old));
    }
    let prev = udax::signals::chained_to().unwrap_or(cur);
    if !act.is_null() {
        let r = fwd!(sigaction(sig, act, std::ptr::null_mut()));
        if r != 0 {
            return r;
        }
        // Back in front, now chaining to the program's new disposition.
        let again = std::panic::catch_unwind(udax::install_sigbus_handler);
        if !matches!(again, Ok(Ok(()))) {
            tracing::warn!(
                "udax-preload: sigaction(SIGBUS): could not put udax's handler back in front; \
                 poisoned pages will report BUS_ADRERR"
            );
        }
    }
    if !old.is_null() {
        // SAFETY: sigaction(2)'s contract: `old` points to a writable sigaction.
        unsafe { old.write(prev) };
    }
    0
}

/// # Safety
/// As signal(2) (glibc: BSD semantics).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if sig != libc::SIGBUS {
        return match crate::boundary::real::signal() {
            // SAFETY: forwarding the caller's arguments to libc's signal.
            Some(f) => unsafe { f(sig, handler) },
            None => {
                set_errno(libc::ENOSYS);
                libc::SIG_ERR
            }
        };
    }
    // SAFETY: all-zero is a valid sigaction; the mask is set below.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaddset(&mut sa.sa_mask, sig);
    }
    // SAFETY: all-zero is a valid sigaction to be filled.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigactions (this module's sigaction).
    if unsafe { sigaction(sig, &sa, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
