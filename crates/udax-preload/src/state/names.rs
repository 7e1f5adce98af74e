//! The shim's namespace lock.
//!
//! A call that resolves a path relative to a udax directory (a directory
//! descriptor, the virtual working directory, `/proc/self/fd/N` of one) goes
//! through that directory's current path (`fds::DirPath`). So that the path
//! cannot change under the call, as the kernel resolves such a call from the
//! directory itself, the call holds this lock shared from its resolution to
//! its end (registered with [`entry::release_at_call_end`]: the boundary
//! releases it when the call returns), and a rename or a directory
//! removal holds it exclusively from its own resolution to its end. Calls on
//! absolute paths take nothing: the kernel resolves those by path too.
//!
//! Held across nothing that waits for another thread's interposed call: the
//! bodies under it are udax metadata operations.

use crate::boundary::entry;
use parking_lot::lock_api::RawRwLock as _;
use std::cell::Cell;

static NAMES: parking_lot::RawRwLock = parking_lot::RawRwLock::INIT;

const SHARED: u8 = 1;
const EXCLUSIVE: u8 = 2;

thread_local! {
    /// What this thread holds: 0, SHARED or EXCLUSIVE.
    static HELD: Cell<u8> = const { Cell::new(0) };
}

/// Hold the lock shared until the end of this interposed call (nothing more
/// if this thread holds it already, either way).
pub fn hold_shared() {
    let _ = HELD.try_with(|h| {
        if h.get() == 0 {
            NAMES.lock_shared();
            h.set(SHARED);
            entry::release_at_call_end(release_shared);
        }
    });
}

/// The end of an interposed call: release what [`hold_shared`] took.
fn release_shared() {
    let _ = HELD.try_with(|h| {
        if h.get() == SHARED {
            h.set(0);
            // SAFETY: this thread took a shared lock (HELD said so) and has
            // not released it.
            unsafe { NAMES.unlock_shared() };
        }
    });
}

/// Run `f` (a rename or a directory removal, with its own path resolution)
/// holding the lock exclusively.
pub fn exclusive<T>(f: impl FnOnce() -> T) -> T {
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = HELD.try_with(|h| h.set(0));
            // SAFETY: taken below by this thread, released only here.
            unsafe { NAMES.unlock_exclusive() };
        }
    }
    release_shared();
    NAMES.lock_exclusive();
    let _r = Release;
    let _ = HELD.try_with(|h| h.set(EXCLUSIVE));
    f()
}
