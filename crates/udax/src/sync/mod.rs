//! The one facade for locks and atomics.
//!
//! Every lock and atomic in udax is taken from here, so that the same code can be
//! run under the `loom` model checker (`RUSTFLAGS="--cfg loom" cargo test --release
//! -p udax --lib loom_`), which explores every interleaving of the threads in a
//! test. Outside loom, locks are `parking_lot`'s (small, fair enough, no poisoning).
//!
//! Rule: no module may `use std::sync::{Mutex, atomic, ...}` or `parking_lot`
//! directly; import from `crate::sync` instead. Every use of an atomic
//! ordering carries an `ORDERING:` argument (docs/architecture.md, "Atomic
//! orderings"). `tests/orderings.rs` checks both rules.
//!
//! # Exceptions
//!
//! Files of `crates/udax/src` that use `std::sync` atomics or locks directly:
//! * `vm/signals.rs`: the poisoned-page table and the chained disposition are
//!   read by the SIGBUS handler, so they are `const`-initialised statics of
//!   async-signal-safe `std` atomics (loom's are not `const`, and no model
//!   checker runs a signal handler); its writers' mutex is a `static` too.
//! * `fs/mod.rs`: `PRECISE_FLOOR`, a `static` clock floor that must be
//!   `const`-constructible; a max of clock values, no protocol to model.
//! * `vfs.rs`: `REMOTE_MOVES`, a `static` counter handed out as a fresh
//!   number per call (`const`-constructible; no protocol to model).
//! * `vm/engine.rs`: `ENGINE` and `STARTING`, the `static` pointer to the
//!   process's fault engine and the flag that elects the thread starting
//!   it (`const`-constructible, and replaced in a forked child, which a
//!   `OnceLock` cannot be); a one-time publication, no protocol to model.
//! * `proto/ring.rs`: the owner's change log, atomics over memory shared
//!   with other processes (a memfd both map), which loom cannot model.
//! * `fs/perm.rs`: `KEEP` and `CHANGES`, `static`s (`const`-constructible)
//!   that say whether a thread's credentials are kept and count the
//!   announced changes of credentials; a counter compared with a kept
//!   copy, no protocol to model.
//! * `client/fork.rs`: the process id cached in a page the kernel wipes in
//!   a forked child (a `static` page, `const`-constructible; a value
//!   compared with a kept copy, no protocol to model).
//! * `device/persist.rs`: `sfence`'s stand-in off x86-64, a CPU fence for
//!   persistence ordering rather than a protocol between threads (loom's
//!   `fence` works only inside a model).
//!
//! Anywhere, `std::sync::{Arc, Weak, OnceLock, mpsc}` are used as plain
//! pointer, lazy-initialisation and channel types: no lock or atomic protocol
//! of ours.
//!
//! The preload shim (`crates/udax-preload`) has no loom models and does not
//! use this facade; its statics are `std`'s, each use with its `ORDERING:`.

#[cfg(not(loom))]
mod imp {
    pub use parking_lot::{
        Condvar, Mutex, MutexGuard, ReentrantMutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
    };
    #[allow(
        unused_imports,
        reason = "the facade's whole surface, the same under loom: some names are used only by the models"
    )]
    pub use std::sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    };
    #[allow(unused_imports, reason = "used only by the loom models")]
    pub use std::thread;
}

#[cfg(loom)]
mod imp {
    //! loom's types wrapped to expose the parking_lot-style API (no poisoning).
    pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    pub use loom::sync::Arc;
    pub use loom::thread;

    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
        /// loom has no time: one attempt.
        pub fn try_lock_for(&self, _: std::time::Duration) -> Option<MutexGuard<'_, T>> {
            self.try_lock()
        }
        pub fn into_inner(self) -> T {
            self.0.into_inner().expect("loom mutex poisoned")
        }
    }

    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);
    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
    impl<T> RwLock<T> {
        pub fn new(v: T) -> Self {
            Self(loom::sync::RwLock::new(v))
        }
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("loom rwlock poisoned")
        }
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read().ok()
        }
        /// loom's readers never wait behind a waiting writer: as `read`.
        pub fn read_recursive(&self) -> RwLockReadGuard<'_, T> {
            self.read()
        }
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().expect("loom rwlock poisoned")
        }
    }

    /// parking_lot's `ReentrantMutex` for `()` (the owner's change locks):
    /// the thread holding it may take it again; others wait.
    #[derive(Debug, Default)]
    pub struct ReentrantMutex<T> {
        held: loom::sync::Mutex<(Option<loom::thread::ThreadId>, usize)>,
        freed: loom::sync::Condvar,
        _v: std::marker::PhantomData<T>,
    }
    pub struct ReentrantMutexGuard<'a, T>(&'a ReentrantMutex<T>);
    impl ReentrantMutex<()> {
        pub fn lock(&self) -> ReentrantMutexGuard<'_, ()> {
            let me = loom::thread::current().id();
            let mut h = self.held.lock().expect("loom mutex poisoned");
            while h.0.is_some_and(|t| t != me) {
                h = self.freed.wait(h).expect("loom condvar poisoned");
            }
            *h = (Some(me), h.1 + 1);
            ReentrantMutexGuard(self)
        }
        /// loom has no time: one attempt.
        pub fn try_lock_for(&self, _: std::time::Duration) -> Option<ReentrantMutexGuard<'_, ()>> {
            let me = loom::thread::current().id();
            let mut h = self.held.lock().expect("loom mutex poisoned");
            if h.0.is_some_and(|t| t != me) {
                return None;
            }
            *h = (Some(me), h.1 + 1);
            Some(ReentrantMutexGuard(self))
        }
    }
    impl<T> Drop for ReentrantMutexGuard<'_, T> {
        fn drop(&mut self) {
            let mut h = self.0.held.lock().expect("loom mutex poisoned");
            h.1 -= 1;
            if h.1 == 0 {
                h.0 = None;
                self.0.freed.notify_one();
            }
        }
    }

    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);
    impl Condvar {
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        /// parking_lot-style wait: re-locks in place.
        pub fn wait<'a, T>(&self, guard: &mut MutexGuard<'a, T>) {
            // loom's Condvar consumes the guard; swap it through a raw read/write.
            #[allow(
                unsafe_code,
                reason = "loom's Condvar consumes the guard: swapped through a raw read/write"
            )]
            // SAFETY: `g` is moved out and a new guard for the same mutex is moved
            // back in before anyone can observe `*guard`; no unwinding point
            // lies between the read and the write except `wait`, which aborts the
            // model on panic.
            unsafe {
                let g = std::ptr::read(guard);
                let g = self.0.wait(g).expect("loom condvar poisoned");
                std::ptr::write(guard, g);
            }
        }
        pub fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }
        pub fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }
}

pub use imp::*;
