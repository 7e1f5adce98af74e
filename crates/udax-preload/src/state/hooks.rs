//! Hooks: what the state layer has the call families do, without naming
//! them (the layers import only downward).
//!
//! The crate root fills them in once, at load, before main (`at_load` in
//! `lib.rs`); until then, and in the unit-test binary, there are none. A
//! udax call made earlier than that (from another library's constructor)
//! therefore runs without them; none of them matters before the program's
//! first udax descriptor on fd 0, 1 or 2, or before exit.
//!
//! - At exit, before the descriptors are dropped (`state::exit`): flush every
//!   stdio stream (glibc flushes them only after the libraries' destructors,
//!   when the udax files would be closed), then drop the mappings.
//! - When what a standard descriptor (0, 1, 2) refers to changes: the
//!   program's standard stream on it follows (a cookie stream while it is a
//!   udax descriptor), and pending output goes out before the change.

use libc::c_int;
use std::sync::OnceLock;

/// The hooks, as the crate root installs them.
pub struct Hooks {
    /// Run in this order at exit, before the descriptor table is dropped.
    pub at_exit: &'static [fn()],
    /// The kernel is about to change what standard fd `fd` refers to.
    pub before_std_change: fn(c_int),
    /// Standard fd `fd` is now a udax descriptor.
    pub std_now_udax: fn(c_int),
    /// Standard fd `fd` is no longer a udax descriptor (closed, or replaced
    /// by a host one).
    pub std_not_udax: fn(c_int),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Install the hooks (once: a second call is ignored).
pub fn install(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

fn std_hook(fd: c_int, pick: impl FnOnce(&Hooks) -> fn(c_int)) {
    if (0..=2).contains(&fd) {
        if let Some(h) = HOOKS.get() {
            pick(h)(fd);
        }
    }
}

/// See [`Hooks::at_exit`].
pub fn at_exit() {
    for h in HOOKS.get().map_or(&[][..], |h| h.at_exit) {
        h();
    }
}

/// See [`Hooks::before_std_change`]; nothing for another fd.
pub fn before_std_change(fd: c_int) {
    std_hook(fd, |h| h.before_std_change);
}

/// See [`Hooks::std_now_udax`]; nothing for another fd.
pub fn std_now_udax(fd: c_int) {
    std_hook(fd, |h| h.std_now_udax);
}

/// See [`Hooks::std_not_udax`]; nothing for another fd.
pub fn std_not_udax(fd: c_int) {
    std_hook(fd, |h| h.std_not_udax);
}
