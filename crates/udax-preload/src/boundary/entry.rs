//! The C boundary: the re-entrancy guard, errno, panics, and the log.
//!
//! Every interposed function runs its body through [`run`]:
//! - if this thread is already inside the shim (udax itself, or Rust std used
//!   by the shim, called an interposed libc function), the call goes straight
//!   to the real function: the shim never recurses into itself;
//! - otherwise the body runs with the guard set, under `catch_unwind` (a panic
//!   never crosses the FFI boundary: it becomes EIO and one log line), and an
//!   `Err(errno)` is returned to C as the call's failure value with `errno` set.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    // A const-initialised Cell without Drop: no allocation, no destructor, and
    // readable during thread teardown.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// What this thread's interposed call releases at its end (see
    /// [`release_at_call_end`]); const and without Drop, as `INSIDE`.
    static AT_CALL_END: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// An errno value to report to the C caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// The errno of a udax path whose resolution left the file system through
/// a symbolic link (or `..` at its root): not a real errno; the path it
/// goes on at waits in [`take_escape`] for `path_call!` to resolve it on
/// the host (or in udax again). Any call that cannot reports `EXDEV`.
pub const ESCAPED: Errno = Errno(-2);

thread_local! {
    /// Where this thread's last udax call's path left the file system.
    static ESCAPE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

impl From<udax::Error> for Errno {
    fn from(e: udax::Error) -> Self {
        match e {
            udax::Error::Escape { path } => {
                match ESCAPE.try_with(|c| *c.borrow_mut() = Some(path)) {
                    Ok(()) => ESCAPED,
                    Err(_) => Errno(libc::EXDEV),
                }
            }
            e => Errno(e.errno()),
        }
    }
}

/// The path the last [`ESCAPED`] error of this thread goes on at.
pub fn take_escape() -> Option<String> {
    ESCAPE.try_with(|c| c.borrow_mut().take()).ok().flatten()
}

pub type R<T> = Result<T, Errno>;

/// True if this thread is inside the shim (or cannot tell: TLS already gone).
pub fn inside() -> bool {
    INSIDE.try_with(|c| c.get()).unwrap_or(true)
}

/// This thread is one of the shim's: inside it for good (set at its start).
pub fn inside_for_life() {
    let _ = INSIDE.try_with(|c| c.set(true));
}

struct Guard;

impl Guard {
    fn enter() -> Guard {
        let _ = INSIDE.try_with(|c| c.set(true));
        Guard
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|c| c.set(false));
    }
}

/// Have `release` run when this thread's interposed call ends ([`run`],
/// [`run_always`]): for a resource a layer above takes during a call and
/// holds to its end (the namespace lock, `state::names`). One slot: a call
/// holds at most one such resource; registering again replaces it.
pub fn release_at_call_end(release: fn()) {
    let _ = AT_CALL_END.try_with(|c| c.set(Some(release)));
}

/// The end of an interposed call: run what [`release_at_call_end`] registered.
fn call_end() {
    if let Ok(Some(release)) = AT_CALL_END.try_with(Cell::take) {
        release();
    }
}

pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

pub fn errno() -> i32 {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// Run an interposed call: `forward` if re-entered, else `body` guarded.
/// `Ok(v)` is returned as is (errno untouched: a forwarded real call has set it).
pub fn run<T>(fail: T, forward: impl FnOnce() -> T, body: impl FnOnce() -> R<T>) -> T {
    if inside() {
        return forward();
    }
    let g = Guard::enter();
    let r = catch_unwind(AssertUnwindSafe(body));
    call_end();
    drop(g);
    finish(fail, r)
}

/// Run `body` as the shim whether or not this thread is already inside it
/// (stdio cookie callbacks: glibc calls them from the program's fwrite, and
/// from the shim's own exit flush). Same errno and panic handling as [`run`].
pub fn run_always<T>(fail: T, body: impl FnOnce() -> R<T>) -> T {
    let g = (!inside()).then(Guard::enter);
    let r = catch_unwind(AssertUnwindSafe(body));
    if g.is_some() {
        call_end();
    }
    drop(g);
    finish(fail, r)
}

/// The C result of a guarded body: its value, or `fail` with errno set (EIO
/// for a panic, which never crosses into C).
fn finish<T>(fail: T, r: std::thread::Result<R<T>>) -> T {
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(Errno(e))) => {
            // An escape no caller went on with: another file system.
            let e = if Errno(e) == ESCAPED {
                let _ = take_escape();
                libc::EXDEV
            } else {
                e
            };
            set_errno(e);
            fail
        }
        Err(_) => {
            // Logged by the panic hook (`quiet_panics`).
            set_errno(libc::EIO);
            fail
        }
    }
}

/// Call a real libc function, or fail with ENOSYS if libc has none.
macro_rules! fwd {
    ($name:ident($($a:expr),* $(,)?)) => {
        match $crate::boundary::real::$name() {
            // SAFETY: forwarding the caller's own arguments, unchanged, to the
            // libc function with the same prototype: its contract is the caller's.
            Some(f) => unsafe { f($($a),*) },
            None => {
                $crate::boundary::entry::set_errno(libc::ENOSYS);
                $crate::boundary::entry::Failure::failure()
            }
        }
    };
}
pub(crate) use fwd;

/// The value a C function returns on failure, for [`fwd!`] when libc lacks it.
pub trait Failure {
    fn failure() -> Self;
}
impl Failure for i32 {
    fn failure() -> Self {
        -1
    }
}
impl Failure for isize {
    fn failure() -> Self {
        -1
    }
}
impl Failure for i64 {
    fn failure() -> Self {
        -1
    }
}
impl Failure for () {
    fn failure() -> Self {}
}
impl<T> Failure for *mut T {
    fn failure() -> Self {
        std::ptr::null_mut()
    }
}

/// Start the log (`UDAX_LOG`, an env-filter directive such as `warn` or
/// `udax_preload=debug`; unset = silent), once.
pub fn init_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(spec) = std::env::var("UDAX_LOG") else {
            return;
        };
        let filter = tracing_subscriber::EnvFilter::try_new(&spec)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
            .without_time()
            .try_init();
    });
}

/// A panic inside the shim is one log line (`UDAX_LOG`), never std's default
/// message and backtrace on the program's stderr. (The shim's std is its own:
/// the hook sees only the shim's panics.)
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        init_log();
        let p = info.payload();
        let what = p
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| p.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!("udax-preload: internal panic at {at}: {what} (the call fails with EIO)");
    }));
}

/// A call the shim cannot serve on a udax path or descriptor: one log line and
/// the errno to fail with.
pub fn unsupported(call: &str, what: &str, errno: i32) -> Errno {
    init_log();
    tracing::warn!("udax-preload: {call}: {what} (failing with errno {errno})");
    Errno(errno)
}
