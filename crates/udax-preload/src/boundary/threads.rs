//! Threads: the shim's own, and the program's first one (stdio locking).
//!
//! glibc locks every stdio call on every stream once a second thread exists
//! (its first `pthread_create` turns locking on for good). The shim's fault
//! engine runs threads, so a single-threaded program would pay one lock pair
//! per `getc`/`fgets`/`fputs` although those threads never touch stdio
//! (`mdb_load` reading its input: ~3 % of its run). So while the program itself
//! has started no thread, its standard streams and the streams it opens with
//! fopen, fdopen and freopen are set to `FSETLOCKING_BYCALLER` (no internal
//! locking, which is what a single-threaded process gets), and just before the
//! program's first thread is created every one of them is set back to
//! `FSETLOCKING_INTERNAL`. A stream locks exactly when it would without the
//! shim.
//!
//! The program's threads are seen where they are made: `pthread_create`,
//! `thrd_create`, and the glibc calls whose internal threads run the program's
//! code: `timer_create` and `mq_notify` with `SIGEV_THREAD`, the POSIX AIO
//! calls and `getaddrinfo_a` (any use). Streams made otherwise (popen,
//! fmemopen, open_memstream, fopencookie, tmpfile) keep glibc's locking. A
//! program that creates threads with a raw `clone` is outside glibc's own
//! locking already. A stream the program sets with `__fsetlocking` is left to
//! it.
//!
//! The shim's own threads (created by a thread that is inside the shim: the
//! fault engine's, started from an interposed call or from one another) run
//! with the re-entrancy guard set for their whole life, so their libc calls go
//! straight to libc.

use crate::boundary::entry::fwd;
use libc::{c_int, c_ulong, c_void, FILE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// `__fsetlocking` types (stdio_ext.h).
const FSETLOCKING_QUERY: c_int = 0;
const FSETLOCKING_INTERNAL: c_int = 1;
const FSETLOCKING_BYCALLER: c_int = 2;

/// The program has started a thread (or may have: unknown at load): streams
/// lock as glibc decides.
static THREADED: AtomicBool = AtomicBool::new(false);

/// The streams the shim set to `FSETLOCKING_BYCALLER` (FILE addresses), while
/// not `THREADED`; empty after.
static UNLOCKED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn unlocked() -> std::sync::MutexGuard<'static, Vec<usize>> {
    UNLOCKED.lock().unwrap_or_else(|p| p.into_inner())
}

fn threaded() -> bool {
    // ORDERING: set once, by the program's only thread (before any other of
    // its threads exists); the shim's threads never read it.
    THREADED.load(Ordering::Relaxed)
}

fn set_locking(f: *mut FILE, how: c_int) -> c_int {
    fwd!(__fsetlocking(f, how))
}

/// A stream the program just opened (or reopened, or a standard stream): no
/// internal locking while the program has no thread of its own.
pub fn opened(f: *mut FILE) {
    if f.is_null() || threaded() {
        return;
    }
    let mut g = unlocked();
    if threaded() {
        return;
    }
    // __fsetlocking returns the state before: a stream already BYCALLER
    // (the program's choice) is left as it was and not tracked.
    if set_locking(f, FSETLOCKING_BYCALLER) == FSETLOCKING_INTERNAL && !g.contains(&(f as usize)) {
        g.push(f as usize);
    }
}

/// A stream about to be closed (or reopened, which closes it on failure):
/// never touched again.
pub fn closing(f: *mut FILE) {
    if !threaded() {
        unlocked().retain(|&x| x != f as usize);
    }
}

/// The program is about to start a thread: every stream the shim unlocked
/// locks again, for good.
fn program_threads() {
    if threaded() {
        return;
    }
    let mut g = unlocked();
    for &f in g.iter() {
        set_locking(f as *mut FILE, FSETLOCKING_INTERNAL);
    }
    g.clear();
    // ORDERING: see `threaded`; the program's threads start after this store
    // (thread creation orders it before them).
    THREADED.store(true, Ordering::Relaxed);
}

/// Does the process have one thread? (At load, before main: yes, unless the
/// shim was loaded late or glibc cannot tell, lacking `__libc_single_threaded`.)
pub fn single_threaded() -> bool {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT is 0.
    let single = unsafe { libc::dlsym(std::ptr::null_mut(), c"__libc_single_threaded".as_ptr()) };
    // SAFETY: glibc's `char __libc_single_threaded`, a byte it keeps for the
    // process's lifetime; read only.
    !threaded() && !single.is_null() && unsafe { *single.cast::<u8>() } != 0
}

/// At load, in the only thread: the standard streams need no locks (yet);
/// or, when the process may have threads already, every stream keeps glibc's.
pub fn at_load(single: bool) {
    if !single {
        program_threads();
        return;
    }
    extern "C" {
        static stdin: *mut FILE;
        static stdout: *mut FILE;
        static stderr: *mut FILE;
    }
    // SAFETY: glibc's standard stream variables, read in the only thread.
    for f in unsafe { [stdin, stdout, stderr] } {
        opened(f);
    }
}

/// A thread of the shim: its start routine and argument.
struct Start {
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
}

extern "C" fn shim_thread(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the Box made in `pthread_create` for this thread, handed
    // over to it alone.
    let s = unsafe { Box::from_raw(p.cast::<Start>()) };
    crate::boundary::entry::inside_for_life();
    (s.f)(s.arg)
}

/// # Safety
/// As pthread_create(3).
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    t: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    f: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    let Some(real) = crate::boundary::real::pthread_create() else {
        return libc::ENOSYS;
    };
    if !crate::boundary::entry::inside() {
        program_threads();
        // SAFETY: the caller's arguments, unchanged, to glibc's pthread_create.
        return unsafe { real(t, attr, f, arg) };
    }
    let s = Box::into_raw(Box::new(Start { f, arg }));
    // SAFETY: as above, with the start routine wrapped: `shim_thread` takes
    // ownership of `s` when the thread starts.
    let r = unsafe { real(t, attr, shim_thread, s.cast()) };
    if r != 0 {
        // SAFETY: no thread was created: `s` is still ours.
        drop(unsafe { Box::from_raw(s) });
    }
    r
}

/// # Safety
/// As thrd_create(3).
#[no_mangle]
pub unsafe extern "C" fn thrd_create(
    t: *mut c_ulong,
    f: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
) -> c_int {
    program_threads();
    match crate::boundary::real::thrd_create() {
        // SAFETY: the caller's arguments, unchanged.
        Some(real) => unsafe { real(t, f, arg) },
        None => 2, // thrd_error
    }
}

/// Does this notification run the program's code on a new thread?
///
/// # Safety
/// `ev` is null or a valid sigevent.
unsafe fn by_thread(ev: *const libc::sigevent) -> bool {
    // SAFETY: the caller's contract.
    !ev.is_null() && unsafe { (*ev).sigev_notify } == libc::SIGEV_THREAD
}

/// # Safety
/// As timer_create(2).
#[no_mangle]
pub unsafe extern "C" fn timer_create(
    clock: libc::clockid_t,
    ev: *mut libc::sigevent,
    id: *mut libc::timer_t,
) -> c_int {
    // SAFETY: timer_create's contract: `ev` is null or valid.
    if unsafe { by_thread(ev) } {
        program_threads();
    }
    fwd!(timer_create(clock, ev, id))
}

/// # Safety
/// As mq_notify(3).
#[no_mangle]
pub unsafe extern "C" fn mq_notify(q: libc::mqd_t, ev: *const libc::sigevent) -> c_int {
    // SAFETY: mq_notify's contract: `ev` is null or valid.
    if unsafe { by_thread(ev) } {
        program_threads();
    }
    fwd!(mq_notify(q, ev))
}

macro_rules! aio_fn {
    ($name:ident($($a:ident: $t:ty),*)) => {
        /// POSIX AIO: glibc serves it with its own threads (which may run the
        /// program's notification function).
        ///
        /// # Safety
        /// As the libc function.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
            program_threads();
            fwd!($name($($a),*))
        }
    };
}
aio_fn!(aio_read(cb: *mut libc::aiocb));
aio_fn!(aio_read64(cb: *mut libc::aiocb));
aio_fn!(aio_write(cb: *mut libc::aiocb));
aio_fn!(aio_write64(cb: *mut libc::aiocb));
aio_fn!(aio_fsync(op: c_int, cb: *mut libc::aiocb));
aio_fn!(aio_fsync64(op: c_int, cb: *mut libc::aiocb));
aio_fn!(lio_listio(mode: c_int, list: *const *mut libc::aiocb, n: c_int, ev: *mut libc::sigevent));
aio_fn!(lio_listio64(mode: c_int, list: *const *mut libc::aiocb, n: c_int, ev: *mut libc::sigevent));
aio_fn!(getaddrinfo_a(mode: c_int, list: *mut *mut c_void, n: c_int, ev: *mut libc::sigevent));

/// __fsetlocking(3): a stream the program sets itself is its own business.
///
/// # Safety
/// As __fsetlocking(3).
#[no_mangle]
pub unsafe extern "C" fn __fsetlocking(f: *mut FILE, how: c_int) -> c_int {
    if how != FSETLOCKING_QUERY {
        closing(f);
    }
    set_locking(f, how)
}
