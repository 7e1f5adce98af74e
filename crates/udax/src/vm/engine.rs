//! The fault engine: one userfaultfd for the process, handler threads that read
//! it, the registry of mapped regions, and the counters.
//!
//! Handler threads never sleep on file locks: a fault whose file is being
//! truncated (its invalidate lock is held for writing) is passed to the slow
//! worker, so the handlers stay free to read the `REMAP` events that the
//! truncating thread's `mremap` waits for.
#![allow(
    unsafe_code,
    reason = "the fault handler threads read userfaultfd messages and touch faulting regions"
)]

use super::region::Region;
use super::uffd::{Msg, Uffd};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, RwLock};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering as StdOrdering};
use std::sync::mpsc;
use std::sync::Arc;

/// Counters of the fault engine (process-wide).
#[derive(Debug, Default)]
pub struct Counters {
    pub faults: AtomicU64,
    pub write_faults: AtomicU64,
    pub wp_faults: AtomicU64,
    pub pmd_maps: AtomicU64,
    pub pte_maps: AtomicU64,
    pub zero_maps: AtomicU64,
    pub fault_allocs: AtomicU64,
    pub sigbus: AtomicU64,
    pub deferred: AtomicU64,
    pub invalidations: AtomicU64,
    pub flushed_pages: AtomicU64,
    pub cow_faults: AtomicU64,
    pub kernel_faults: AtomicU64,
    pub windows: AtomicU64,
    pub continued: AtomicU64,
    pub whole_maps: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmStats {
    /// Faults handled (all kinds).
    pub faults: u64,
    /// Faults that were writes to an unpopulated page.
    pub write_faults: u64,
    /// Writes to write-protected zero pages.
    pub wp_faults: u64,
    /// 2 MiB ranges mapped at once.
    pub pmd_maps: u64,
    /// Ranges mapped with 4 KiB entries (one per fault, of one or more pages).
    pub pte_maps: u64,
    /// Zero-page installs (holes read through a mapping).
    pub zero_maps: u64,
    /// Block allocations made by write faults.
    pub fault_allocs: u64,
    /// Accesses past end of file answered with SIGBUS.
    pub sigbus: u64,
    /// Faults that had to wait for a truncate and went to the slow worker.
    pub deferred: u64,
    /// Ranges unmapped from a mapping by truncate/punch/collapse/insert/zero.
    pub invalidations: u64,
    /// Pages flushed by msync/fsync of mappings (only the written ones where
    /// dirty tracking runs).
    pub flushed_pages: u64,
    /// Faults of writable shared mappings that copied shared (reflinked)
    /// blocks first.
    pub cow_faults: u64,
    /// Faults taken by the kernel inside a system call that touched the
    /// mapping (`read(fd, mapped_buf, n)`), as opposed to a user instruction.
    pub kernel_faults: u64,
    /// Windows opened past end of file (device mappings that pages appended
    /// later are shown in without a new mapping; shmem devices).
    pub windows: u64,
    /// Ranges shown in a window with `UFFDIO_CONTINUE` (no mapping changed).
    pub continued: u64,
    /// Small mappings of one extent shown whole when made (one device
    /// mapping at mmap time: no placeholder, no fault).
    pub whole_maps: u64,
}

impl Counters {
    pub fn snapshot(&self) -> VmStats {
        // ORDERING: statistics; nothing is published through them.
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VmStats {
            faults: l(&self.faults),
            write_faults: l(&self.write_faults),
            wp_faults: l(&self.wp_faults),
            pmd_maps: l(&self.pmd_maps),
            pte_maps: l(&self.pte_maps),
            zero_maps: l(&self.zero_maps),
            fault_allocs: l(&self.fault_allocs),
            sigbus: l(&self.sigbus),
            deferred: l(&self.deferred),
            invalidations: l(&self.invalidations),
            flushed_pages: l(&self.flushed_pages),
            cow_faults: l(&self.cow_faults),
            kernel_faults: l(&self.kernel_faults),
            windows: l(&self.windows),
            continued: l(&self.continued),
            whole_maps: l(&self.whole_maps),
        }
    }
}

pub fn bump(a: &AtomicU64) {
    // ORDERING: a statistic; nothing is published through it.
    a.fetch_add(1, Ordering::Relaxed);
}

/// Tells faults taken inside a system call from faults of user instructions.
/// userfaultfd does not say; `/proc/self/task/TID/syscall` of the faulting
/// thread (blocked in the fault until woken) names the system call it is in,
/// or starts with `-1` when it entered the kernel through the fault itself.
/// One handler thread's open files of those, by thread id.
#[derive(Default)]
struct FaultContext {
    files: std::collections::HashMap<u32, std::fs::File>,
}

impl FaultContext {
    /// Bound on the open files kept (threads come and go).
    const MAX_FILES: usize = 256;

    fn in_syscall(&mut self, tid: u32) -> bool {
        if tid == 0 {
            return false; // no THREAD_ID feature: unknown, counted as user
        }
        let mut buf = [0u8; 24];
        for fresh in [false, true] {
            if fresh || !self.files.contains_key(&tid) {
                if self.files.len() >= Self::MAX_FILES {
                    self.files.clear();
                }
                match std::fs::File::open(format!("/proc/self/task/{tid}/syscall")) {
                    Ok(f) => self.files.insert(tid, f),
                    Err(_) => return false,
                };
            }
            let Some(f) = self.files.get(&tid) else {
                return false;
            };
            // A file kept from a thread that exited (and whose id came back)
            // fails to read: open it again once.
            if let Ok(n) = std::os::unix::fs::FileExt::read_at(f, &mut buf, 0) {
                if n > 0 {
                    return !buf[..n].starts_with(b"-1") && !buf[..n].starts_with(b"running");
                }
            }
        }
        false
    }
}

struct Job {
    region: Arc<Region>,
    page: u64,
    write: bool,
    wp: bool,
}

/// The process's fault engine.
#[derive(Debug)]
pub struct Engine {
    pub uffd: Uffd,
    /// WP_ASYNC userfaultfd and `/proc/self/pagemap`, for dirty tracking of
    /// device mappings (absent on kernels without WP_ASYNC: msync then flushes
    /// every mapped page of the range).
    pub dirty: Option<(Uffd, std::fs::File)>,
    regions: RwLock<BTreeMap<usize, Arc<Region>>>,
    /// Number of entries of `regions` (lets `in_mapping` skip the lock when
    /// nothing is mapped, the common case of read/write-only programs).
    live: AtomicUsize,
    /// The slow worker's queue, started at the first deferred fault (most
    /// processes never defer one: no thread for them).
    slow: Mutex<Option<mpsc::Sender<Job>>>,
    /// Handler threads started: one at first, `HANDLERS` once faults queue up.
    handlers: AtomicUsize,
    pub counters: Counters,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fault at page {}", self.page)
    }
}

/// The engine of one process, made by `pid`.
struct Slot {
    pid: u32,
    engine: Result<Arc<Engine>, String>,
}

/// This process's engine (null: not started). A slot is leaked, never
/// freed: `engine()` hands out `'static` references to it. A forked child
/// finds its parent's slot here (whose userfaultfd and handler threads
/// belong to the parent) and replaces it ([`forget_parent`]): one small
/// leak per process that starts an engine.
static ENGINE: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

/// Set while a thread starts an engine (the others wait for its slot). A
/// flag rather than a mutex: a forked child clears it, since the thread
/// that was starting one in the parent does not exist there.
static STARTING: AtomicBool = AtomicBool::new(false);

fn slot() -> Option<&'static Slot> {
    // ORDERING: Acquire pairs with the Release store that published the
    // slot, so its contents are seen whole.
    let p = ENGINE.load(StdOrdering::Acquire);
    // SAFETY: a non-null pointer here came from `Box::leak` in `start_slot`
    // and is never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn start_slot() -> &'static Slot {
    loop {
        if let Some(s) = slot() {
            return s;
        }
        // ORDERING: Acquire/Relaxed: the flag only elects the starter; the
        // slot itself is published through ENGINE.
        if STARTING
            .compare_exchange(false, true, StdOrdering::Acquire, StdOrdering::Relaxed)
            .is_ok()
        {
            break;
        }
        std::thread::yield_now();
    }
    let s: &'static Slot = match slot() {
        Some(s) => s,
        None => {
            let s: &'static Slot = Box::leak(Box::new(Slot {
                pid: std::process::id(),
                engine: start(),
            }));
            // ORDERING: Release publishes the slot's contents (see `slot`).
            ENGINE.store(std::ptr::from_ref(s).cast_mut(), StdOrdering::Release);
            s
        }
    };
    // ORDERING: Release: ends the election (the slot is published above).
    STARTING.store(false, StdOrdering::Release);
    s
}

/// In a forked child (a `pthread_atfork` child handler, and the preload
/// shim's before it makes its mappings anew): the engine found is the
/// parent's, whose userfaultfd registers ranges of the *parent's* address
/// space and whose handler threads did not cross fork, so the next use
/// starts the child's own. The parent's regions are not carried over: the
/// child's copies of its mappings keep the pages that were mapped to the
/// device (and nothing else: placeholders are not inherited), and a shim
/// attached to an owner makes them anew ([`crate::vfs::VMapping::renew`]).
/// Does nothing in the process that started the engine. Call it only
/// while the calling thread is the process's only one (a child handler).
pub fn forget_parent() {
    if slot().is_some_and(|s| s.pid != std::process::id()) {
        // ORDERING: Relaxed: the child's only thread is running; later
        // starts read these stores in program order.
        STARTING.store(false, StdOrdering::Relaxed);
        ENGINE.store(std::ptr::null_mut(), StdOrdering::Relaxed);
    }
}

/// Handler threads reading the userfaultfd, at most. One starts with the
/// engine; the next when a handler finds faults queued (faults of two threads
/// read in one wake-up): a program that faults from one thread at a time (most do)
/// never pays for a second thread (~40 us to start, and a second wake-up for
/// every fault, both threads polling the one descriptor).
const HANDLERS: usize = 2;

/// The engine, started on first use.
pub fn engine() -> Result<&'static Arc<Engine>, String> {
    slot()
        .unwrap_or_else(start_slot)
        .engine
        .as_ref()
        .map_err(|e| e.clone())
}

/// The engine if it has been started.
pub fn try_engine() -> Option<&'static Arc<Engine>> {
    slot().and_then(|s| s.engine.as_ref().ok())
}

fn start() -> Result<Arc<Engine>, String> {
    let uffd = Uffd::open().map_err(|e| format!("userfaultfd: {e}"))?;
    if uffd.user_mode_only {
        tracing::warn!(
            "userfaultfd is user-mode only (vm.unprivileged_userfaultfd=0, not root): a system call \
             that touches an unpopulated page of a udax mapping fails with EFAULT"
        );
    }
    if let Err(e) = super::signals::install() {
        tracing::warn!("cannot install the SIGBUS handler ({e}): poisoned pages report BUS_ADRERR");
    }
    // Once per process image: a forked child's engine must not register
    // its handlers a second time (they are inherited).
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers handlers that only take udax locks and call
        // madvise on udax regions (`before_fork`), or clear the engine
        // pointer in the child's only thread (`after_fork_in_child`).
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(after_fork_in_child)) };
    });
    let dirty = match (
        Uffd::open_dirty_tracker(),
        std::fs::File::open("/proc/self/pagemap")
            .map(|f| std::fs::File::from(crate::fdnum::raise(f.into()))),
    ) {
        (Ok(u), Ok(f)) => Some((u, f)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("no dirty tracking for mappings ({e}): msync flushes every mapped page");
            None
        }
    };
    let eng = Arc::new(Engine {
        uffd,
        dirty,
        regions: RwLock::new(BTreeMap::new()),
        live: AtomicUsize::new(0),
        slow: Mutex::new(None),
        handlers: AtomicUsize::new(1),
        counters: Counters::default(),
    });
    start_handler(&eng, 0).map_err(|e| format!("starting fault handler: {e}"))?;
    Ok(eng)
}

fn start_handler(eng: &Arc<Engine>, i: usize) -> std::io::Result<()> {
    let e = eng.clone();
    std::thread::Builder::new()
        .name(format!("udax-fault-{i}"))
        .spawn(move || e.handler_loop())
        .map(drop)
}

/// In the parent, just before fork: pages shown through windows are not
/// inherited (a window is `MADV_DONTFORK`, as placeholders are, since past
/// end of file it would show the device to a child without a fault handler);
/// let the child inherit those that show the file, as it inherits every
/// other page mapped to the device.
extern "C" fn before_fork() {
    let Some(e) = try_engine() else { return };
    for r in e.regions.read().values() {
        let st = r.lock();
        r.inherit_shown(&st);
        r.inherit_copies(&st);
    }
}

/// In a forked child: the parent's engine is not this process's.
extern "C" fn after_fork_in_child() {
    forget_parent();
}

/// Start the slow worker: it resolves the faults handler threads must not
/// wait for (their file is being truncated), blocking on the file's locks.
fn start_slow(eng: &Arc<Engine>) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let e2 = eng.clone();
    std::thread::Builder::new()
        .name("udax-fault-slow".into())
        .spawn(move || {
            while let Ok(j) = rx.recv() {
                let owner = j.region.owner.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    owner.fault(&j.region, j.page, j.write, j.wp, true)
                }));
                if r.is_err() {
                    let addr = j.region.addr_of(j.page);
                    tracing::error!("fault worker panicked at {addr:#x}; raising SIGBUS there");
                    let _ = e2.uffd.poison(addr, 4096, true);
                }
            }
        })?;
    Ok(tx)
}

impl Engine {
    fn handler_loop(self: Arc<Self>) {
        let mut ctx = FaultContext::default();
        loop {
            let mut pfd = libc::pollfd {
                fd: self.uffd.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r < 0 {
                continue;
            }
            // The thread of the first fault read in this wake-up.
            let mut first = None;
            loop {
                match self.uffd.read() {
                    Ok(Some(Msg::Fault {
                        addr,
                        write,
                        wp,
                        tid,
                    })) => {
                        // Faults of two threads in one wake-up: they queue.
                        // (One thread's next fault often arrives before
                        // the read loop ends: that is no queue.)
                        match first {
                            None => first = Some(tid),
                            Some(t) if t != tid => self.more_handlers(),
                            Some(_) => {}
                        }
                        let kernel = ctx.in_syscall(tid);
                        self.dispatch(addr, write, wp, kernel)
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("reading userfaultfd: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Faults are queueing: start the next handler thread, up to `HANDLERS`.
    fn more_handlers(self: &Arc<Self>) {
        // ORDERING: the count only picks which thread starts one; the new
        // thread gets its Arc through spawn's own synchronisation.
        let n = self.handlers.load(Ordering::Relaxed);
        if n < HANDLERS
            && self
                .handlers
                .compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Err(e) = start_handler(self, n) {
                // Not fatal: the running handlers go on serving every fault.
                tracing::warn!("starting fault handler {n}: {e}");
            }
        }
    }

    fn dispatch(self: &Arc<Self>, addr: usize, write: bool, wp: bool, kernel: bool) {
        bump(&self.counters.faults);
        if kernel {
            bump(&self.counters.kernel_faults);
        }
        let Some(region) = self.region_at(addr) else {
            // A region being torn down, or a spare placeholder in transit: let
            // the thread retry (it will find the final state).
            let _ = self.uffd.wake(addr, 4096);
            return;
        };
        if kernel {
            region.owner.kernel_fault();
        }
        let page = region.page_of(addr);
        // A bug in fault resolution must not kill the handler thread (every
        // later fault would hang): answer this access with SIGBUS and go on.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            region.owner.fault(&region, page, write, wp, false)
        }));
        let handled = match r {
            Ok(h) => h,
            Err(_) => {
                tracing::error!("fault handler panicked at {addr:#x}; raising SIGBUS there");
                let _ = self.uffd.poison(addr, 4096, true);
                true
            }
        };
        if !handled {
            bump(&self.counters.deferred);
            let job = Job {
                region,
                page,
                write,
                wp,
            };
            let mut slow = self.slow.lock();
            if slow.is_none() {
                match start_slow(self) {
                    Ok(tx) => *slow = Some(tx),
                    Err(e) => {
                        // No worker: this access gets SIGBUS (the next
                        // deferred fault tries to start one again).
                        tracing::error!("starting the fault worker: {e}; raising SIGBUS");
                        let _ = self.uffd.poison(job.region.addr_of(job.page), 4096, true);
                        return;
                    }
                }
            }
            if let Some(tx) = slow.as_ref() {
                let _ = tx.send(job);
            }
        }
    }

    /// The region containing `addr`.
    pub fn region_at(&self, addr: usize) -> Option<Arc<Region>> {
        let m = self.regions.read();
        let (_, r) = m.range(..=addr).next_back()?;
        (addr < r.base() + r.bytes()).then(|| r.clone())
    }

    pub fn add(&self, r: Arc<Region>) {
        let mut m = self.regions.write();
        m.insert(r.base(), r);
        // ORDERING: under the registry's write lock; see `in_mapping`.
        self.live.store(m.len(), Ordering::Release);
    }

    pub fn remove(&self, base: usize) {
        let mut m = self.regions.write();
        m.remove(&base);
        // ORDERING: as in `add`.
        self.live.store(m.len(), Ordering::Release);
    }

    /// Start dirty tracking of a freshly mapped device range: register it with
    /// the WP_ASYNC descriptor, and write-protect it if `clean`. Unprotected
    /// pages count as written (the next sync flushes and arms them).
    pub fn track(&self, addr: usize, len: usize, clean: bool) -> bool {
        let Some((u, _)) = &self.dirty else {
            return false;
        };
        u.register_wp(addr, len).is_ok()
            && (!clean || u.writeprotect(addr, len, true, true).is_ok())
    }

    /// Pages of `[addr, addr+len)` holding a private copy instead of the zero page.
    pub fn non_zero(&self, addr: usize, len: usize) -> Vec<std::ops::Range<usize>> {
        use std::os::fd::AsRawFd;
        match &self.dirty {
            Some((_, pm)) => {
                super::space::non_zero_pages(pm.as_raw_fd(), addr, len).unwrap_or_default()
            }
            None => Vec::new(),
        }
    }

    /// Written pages of `[addr, addr+len)` since the last scan, re-armed.
    pub fn take_written(&self, addr: usize, len: usize) -> Option<Vec<std::ops::Range<usize>>> {
        use std::os::fd::AsRawFd;
        let (_, pm) = self.dirty.as_ref()?;
        super::space::scan_written(pm.as_raw_fd(), addr, len).ok()
    }

    pub fn stats(&self) -> VmStats {
        self.counters.snapshot()
    }
}

/// Does `[addr, addr+len)` overlap a udax mapping of this process?
pub fn in_mapping(addr: usize, len: usize) -> bool {
    let Some(e) = try_engine() else { return false };
    // A buffer can only be inside a mapping that exists before the call that
    // passes it, so a zero count read now is final for this call.
    // ORDERING: that mapping's `add` happens before this call, so this load
    // sees its count or a later one; a nonzero reader reads the registry under
    // its lock (Acquire pairs with the Release in `add`; more than needed).
    if e.live.load(Ordering::Acquire) == 0 {
        return false;
    }
    let m = e.regions.read();
    let end = addr.saturating_add(len);
    if let Some((_, r)) = m.range(..end).next_back() {
        return r.base() + r.bytes() > addr;
    }
    false
}
