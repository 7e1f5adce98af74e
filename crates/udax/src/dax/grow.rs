//! The handshake between a fault that puts a SIGBUS marker past end of file
//! and a growth of the file over that page.
//!
//! A fault reads the size, finds the page past it and installs a marker; the
//! file may grow over the page in between. The growth drops the markers it
//! finds (`super::after_grow`), but one installed just after that would stay
//! and keep failing a page that is now inside the file (the kernel's fault
//! re-checks `i_size` under the page lock for the same reason). So the
//! growth bumps a counter after setting the size and then looks whether any
//! marker may exist; the fault reads the counter before the size, says it
//! marks before installing, and after installing looks whether the counter
//! moved (then it drops its own marker, and the access simply faults again).
//! Both sides touch the counter with a read-modify-write, so the two are
//! ordered by its modification order and acquire/release suffices (with a
//! plain load on the fault's side this would be the store-buffer pattern,
//! which needs SeqCst, and loom does not model SeqCst): in every interleaving
//! one of the two sides sees the other and drops the marker (model-checked
//! below; it fails with the fault's check removed).

use crate::sync::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct GrowGate {
    grown: AtomicU64,
    marked: AtomicBool,
}

impl GrowGate {
    /// A fault, before it reads the size: the growth count to compare with.
    pub fn before_size_read(&self) -> u64 {
        // ORDERING: Acquire: reading a growth's bump makes its size visible
        // to the size read that follows.
        self.grown.load(Ordering::Acquire)
    }

    /// A fault, just before it installs a marker past end of file.
    pub fn marking(&self) {
        // ORDERING: released by the RMW of `grew_since` that follows.
        self.marked.store(true, Ordering::Release);
    }

    /// A fault, after installing: did the file grow since `before`? Then it
    /// must drop the marker.
    pub fn grew_since(&self, before: u64) -> bool {
        // ORDERING: an RMW on the counter: after a growth's bump in its
        // modification order (and sees it), or before it (and the growth
        // acquires this side's `marking`).
        self.grown.fetch_add(0, Ordering::AcqRel) != before
    }

    /// The file grew (its new size is set): may markers exist that it must
    /// drop now?
    pub fn grew(&self) -> bool {
        // ORDERING: see `grew_since`: if this bump comes after the fault's
        // RMW it acquires it, and with it the `marking` store before it.
        self.grown.fetch_add(1, Ordering::AcqRel);
        self.marked.load(Ordering::Acquire)
    }
}

/// Model checks: run with `RUSTFLAGS="--cfg loom" cargo test --release -p udax --lib loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{thread, Arc, Mutex};

    /// A fault on page 1 of a file of one page, racing a write that grows it
    /// to two: afterwards page 1 must hold no marker.
    #[test]
    fn loom_sigbus_marker_never_outlives_a_racing_growth() {
        loom::model(|| {
            let gate = Arc::new(GrowGate::default());
            let size = Arc::new(Mutex::new(1u64));
            let marker = Arc::new(Mutex::new(false)); // the region state lock
            let (g2, s2, m2) = (gate.clone(), size.clone(), marker.clone());
            let fault = thread::spawn(move || {
                let before = g2.before_size_read();
                let eof = *s2.lock();
                if 1 >= eof {
                    let mut m = m2.lock();
                    g2.marking();
                    *m = true;
                    if g2.grew_since(before) {
                        *m = false;
                    }
                }
            });
            *size.lock() = 2;
            if gate.grew() {
                *marker.lock() = false;
            }
            fault.join().unwrap();
            assert!(!*marker.lock(), "a marker left on a page inside the file");
        });
    }
}
