//! stdio streams on udax files.
//!
//! glibc's fopen and fdopen call its internal open/fcntl, out of the shim's
//! reach, so a udax stream is built with `fopencookie` over a udax descriptor:
//! the stream's reads, writes, seeks and close go through the shim's own
//! read/write/lseek/close. glibc's `fileno` of a cookie stream is -1, so
//! `fileno` / `fileno_unlocked` are interposed too: the shim keeps each udax
//! stream's descriptor (registered at fopen/fdopen, dropped at fclose).

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::fd_call;
use libc::{c_char, c_int, c_void, off64_t, size_t, ssize_t, FILE};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// udax streams: FILE* -> descriptor.
static STREAMS: Mutex<BTreeMap<usize, c_int>> = Mutex::new(BTreeMap::new());
static NSTREAMS: AtomicUsize = AtomicUsize::new(0);

fn streams() -> std::sync::MutexGuard<'static, BTreeMap<usize, c_int>> {
    STREAMS.lock().unwrap_or_else(|p| p.into_inner())
}

fn stream_fd(f: *mut FILE) -> Option<c_int> {
    // ORDERING: Acquire pairs with the Release in `stream`: a FILE* reaches
    // another thread only through synchronisation after it was registered.
    if NSTREAMS.load(Ordering::Acquire) == 0 {
        return None;
    }
    streams().get(&(f as usize)).copied()
}

#[repr(C)]
struct CookieIo {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut off64_t, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut FILE;
}

fn fd_of(cookie: *mut c_void) -> c_int {
    cookie as usize as c_int
}

/// Run a cookie callback: glibc calls these from inside its stdio functions
/// (and from the shim's own exit flush, with the guard set), so they go to the
/// descriptor directly, not through the interposers.
fn cookie<T>(fail: T, f: impl FnOnce() -> R<T>) -> T {
    crate::boundary::entry::run_always(fail, f)
}

unsafe extern "C" fn cookie_read(c: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    cookie(-1, || {
        let d = crate::dispatch::desc(fd_of(c))?;
        // SAFETY: stdio passes its own buffer of `n` bytes.
        let b = unsafe { crate::dispatch::slice_mut(buf.cast(), n) }?;
        Ok(crate::calls::read_write::read_desc(&d, b, None)? as ssize_t)
    })
}

unsafe extern "C" fn cookie_write(c: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // A cookie write returning 0 is an error to stdio (errno is kept).
    cookie(0, || {
        let d = crate::dispatch::desc(fd_of(c))?;
        // SAFETY: stdio passes its own buffer of `n` bytes.
        let b = unsafe { crate::dispatch::slice(buf.cast(), n) }?;
        Ok(crate::calls::read_write::write_desc(&d, b, None)? as ssize_t)
    })
}

unsafe extern "C" fn cookie_seek(c: *mut c_void, off: *mut off64_t, whence: c_int) -> c_int {
    cookie(-1, || {
        let d = crate::dispatch::desc(fd_of(c))?;
        if off.is_null() {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: stdio passes a valid pointer to the requested offset.
        let r = crate::calls::seek::lseek_desc(&d, unsafe { *off }, whence)?;
        // SAFETY: as above.
        unsafe { *off = r };
        Ok(0)
    })
}

unsafe extern "C" fn cookie_close(c: *mut c_void) -> c_int {
    // The stream owns its descriptor; it is closed once, here.
    cookie(-1, || {
        let fd = fd_of(c);
        if DETACHING.try_with(|d| d.get()) == Ok(fd) {
            return Ok(0);
        }
        if !crate::state::fds::is_udax(fd) {
            return Err(Errno(libc::EBADF));
        }
        crate::state::fds::close(fd)
    })
}

/// fopen(3) mode string -> open(2) flags.
fn mode_flags(mode: &[u8]) -> R<c_int> {
    let (base, rest) = match mode.first() {
        Some(b'r') => (0, &mode[1..]),
        Some(b'w') => (libc::O_CREAT | libc::O_TRUNC, &mode[1..]),
        Some(b'a') => (libc::O_CREAT | libc::O_APPEND, &mode[1..]),
        _ => return Err(Errno(libc::EINVAL)),
    };
    let plus = rest.contains(&b'+');
    let acc = match (mode[0], plus) {
        (_, true) => libc::O_RDWR,
        (b'r', false) => libc::O_RDONLY,
        _ => libc::O_WRONLY,
    };
    let mut f = base | acc;
    for &c in rest {
        match c {
            b'x' => f |= libc::O_EXCL,
            b'e' => f |= libc::O_CLOEXEC,
            _ => {} // 'b', '+', 'm', 'c', ",ccs=..." have no meaning here
        }
    }
    Ok(f)
}

fn stream(fd: c_int, mode: *const c_char) -> R<*mut FILE> {
    let io = CookieIo {
        read: Some(cookie_read),
        write: Some(cookie_write),
        seek: Some(cookie_seek),
        close: Some(cookie_close),
    };
    // SAFETY: `mode` is the caller's mode string; the cookie is the fd number
    // (no allocation to free), valid until cookie_close.
    let f = unsafe { fopencookie(fd as usize as *mut c_void, mode, io) };
    if f.is_null() {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    streams().insert(f as usize, fd);
    // ORDERING: pairs with the Acquire in `stream_fd`; raised after the insert.
    NSTREAMS.fetch_add(1, Ordering::Release);
    Ok(f)
}

fn fopen_udax(p: &str, mode: *const c_char) -> R<*mut FILE> {
    if mode.is_null() {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: fopen(3)'s contract: `mode` is a C string.
    let flags = mode_flags(unsafe { CStr::from_ptr(mode) }.to_bytes())?;
    let fd = crate::calls::open::open_udax(p, flags, 0o666)?;
    stream(fd, mode).inspect_err(|_| {
        let _ = crate::state::fds::close(fd);
    })
}

macro_rules! fopen_fn {
    ($name:ident) => {
        /// # Safety
        /// As fopen(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE {
            let f = crate::dispatch::path_call!(
                std::ptr::null_mut(),
                libc::AT_FDCWD,
                path,
                $name(path, mode),
                |p| fopen_udax(&p, mode)
            );
            crate::boundary::threads::opened(f);
            f
        }
    };
}
fopen_fn!(fopen);
fopen_fn!(fopen64);

/// # Safety
/// As fdopen(3).
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    let f = fd_call!(std::ptr::null_mut(), fd, fdopen(fd, mode), |d| {
        if mode.is_null() {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: fdopen(3)'s contract.
        let flags = mode_flags(unsafe { CStr::from_ptr(mode) }.to_bytes())?;
        // The mode must be allowed by the descriptor's access mode (EINVAL).
        let acc = flags & libc::O_ACCMODE;
        let wants_read = acc != libc::O_WRONLY;
        let wants_write = acc != libc::O_RDONLY;
        if (wants_read && !d.readable()) || (wants_write && !d.writable()) {
            return Err(Errno(libc::EINVAL));
        }
        stream(fd, mode)
    });
    crate::boundary::threads::opened(f);
    f
}

macro_rules! freopen_fn {
    ($name:ident) => {
        /// freopen(3): on the host as before; a udax path is refused (glibc
        /// reopens into the same FILE object, which cannot become a cookie stream).
        ///
        /// # Safety
        /// As freopen(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            mode: *const c_char,
            f: *mut FILE,
        ) -> *mut FILE {
            // On failure glibc closes `f`; on success its locking is reset.
            crate::boundary::threads::closing(f);
            let r = run(
                std::ptr::null_mut(),
                || fwd!($name(path, mode, f)),
                || {
                    // SAFETY: freopen(3)'s contract.
                    match unsafe { crate::state::path::classify(libc::AT_FDCWD, path) }? {
                        crate::state::path::Target::Udax(_) => Err(unsupported(
                            stringify!($name),
                            "reopening a stream onto a udax path",
                            libc::EOPNOTSUPP,
                        )),
                        crate::state::path::Target::HostPath(c) => {
                            Ok(fwd!($name(c.as_ptr(), mode, f)))
                        }
                        crate::state::path::Target::Host => Ok(fwd!($name(path, mode, f))),
                    }
                },
            );
            crate::boundary::threads::opened(r);
            r
        }
    };
}
freopen_fn!(freopen);
freopen_fn!(freopen64);

macro_rules! fclose_fn {
    ($name:ident) => {
        /// # Safety
        /// As fclose(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(f: *mut FILE) -> c_int {
            // SAFETY: the caller's contract.
            unsafe { close_stream(f) }
        }
    };
}
fclose_fn!(fclose);
fclose_fn!(_IO_fclose);

/// # Safety
/// As fclose(3).
unsafe fn close_stream(f: *mut FILE) -> c_int {
    crate::boundary::threads::closing(f);
    run(
        libc::EOF,
        || fwd!(fclose(f)),
        || {
            // Unregistered before glibc frees the FILE (its address may be
            // reused by the next fopen); the cookie's close closes the fd.
            // ORDERING: as in `stream_fd`; lowered after the removal (a stale
            // nonzero only costs a lookup under the lock).
            if NSTREAMS.load(Ordering::Acquire) != 0 && streams().remove(&(f as usize)).is_some() {
                NSTREAMS.fetch_sub(1, Ordering::Release);
            }
            Ok(fwd!(fclose(f)))
        },
    )
}

macro_rules! fileno_fn {
    ($name:ident) => {
        /// # Safety
        /// As fileno(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(f: *mut FILE) -> c_int {
            run(
                -1,
                || fwd!($name(f)),
                || match stream_fd(f) {
                    Some(fd) => Ok(fd),
                    None => Ok(fwd!($name(f))),
                },
            )
        }
    };
}
fileno_fn!(fileno);
fileno_fn!(fileno_unlocked);

// ---- the standard streams on udax descriptors ----
//
// glibc's stdin/stdout/stderr do their I/O with its internal read/write, out
// of the shim's reach. When a udax descriptor lands on fd 0, 1 or 2 (dup2, or
// open after close), the program's `stdin`/`stdout`/`stderr` variable is
// pointed at a cookie stream on that fd, and back at the original FILE when a
// host descriptor replaces it or it is closed. Pending output is flushed before
// the descriptor under a stream changes, as the kernel would have written it.

extern "C" {
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
    static mut stderr: *mut FILE;
}

/// Per standard fd: (original FILE*, cookie FILE*) while swapped.
static STD: Mutex<[Option<(usize, usize)>; 3]> = Mutex::new([None; 3]);

/// The address of the program's `stdin`/`stdout`/`stderr` variable (taking
/// it is safe; the callers read and write through it as C programs do).
fn std_slot(fd: c_int) -> *mut *mut FILE {
    match fd {
        0 => &raw mut stdin,
        1 => &raw mut stdout,
        _ => &raw mut stderr,
    }
}

/// At exit (a `state::hooks` exit hook): flush every output stream while
/// the udax files under them are still open (glibc flushes only after the
/// libraries' destructors).
pub fn flush_all() {
    // SAFETY: fflush(NULL) flushes every open output stream.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// Before the kernel changes what fd `fd` (0..=2) refers to: flush its stream.
pub fn before_std_change(fd: c_int) {
    if !(1..=2).contains(&fd) {
        return;
    }
    // SAFETY: reading the program's stdout/stderr variable; fflush accepts
    // any stream pointer glibc handed out.
    unsafe {
        let f = *std_slot(fd);
        if !f.is_null() {
            libc::fflush(f);
        }
    }
}

/// Fd `fd` (0..=2) is now a udax descriptor: its standard stream goes through
/// a cookie stream.
pub fn std_now_udax(fd: c_int) {
    if !(0..=2).contains(&fd) {
        return;
    }
    let mut g = STD.lock().unwrap_or_else(|p| p.into_inner());
    if g[fd as usize].is_some() {
        return; // the cookie stream works by fd number: it follows the new description
    }
    let mode: &CStr = if fd == 0 { c"r" } else { c"w" };
    let Ok(cookie) = stream(fd, mode.as_ptr()) else {
        return;
    };
    // (fopen and fdopen streams are seen by their interposers.)
    crate::boundary::threads::opened(cookie);
    if fd == 2 {
        // SAFETY: a stream just created, not used yet; stderr is unbuffered.
        unsafe { libc::setvbuf(cookie, std::ptr::null_mut(), libc::_IONBF, 0) };
    }
    // SAFETY: swapping the program's standard stream variable (see above).
    let orig = unsafe { std::mem::replace(&mut *std_slot(fd), cookie) };
    g[fd as usize] = Some((orig as usize, cookie as usize));
}

/// Fd `fd` (0..=2) no longer is a udax descriptor (replaced by a host fd, or
/// closed): give the program its original stream back.
pub fn std_not_udax(fd: c_int) {
    if !(0..=2).contains(&fd) {
        return;
    }
    let taken = STD.lock().unwrap_or_else(|p| p.into_inner())[fd as usize].take();
    let Some((orig, cookie)) = taken else {
        return;
    };
    // SAFETY: restoring the variable saved by `std_now_udax`.
    unsafe { *std_slot(fd) = orig as *mut FILE };
    // Free the cookie stream without closing its fd (the caller closes or
    // has replaced it): unregister it, and tell its close callback.
    if streams().remove(&cookie).is_some() {
        // ORDERING: as in `close_stream`.
        NSTREAMS.fetch_sub(1, Ordering::Release);
    }
    let f = cookie as *mut FILE;
    crate::boundary::threads::closing(f);
    let _ = DETACHING.try_with(|d| d.set(fd));
    // SAFETY: the cookie FILE was created by `stream` and is no longer
    // reachable by the program (its variable was restored above).
    unsafe { libc::fflush(f) };
    fwd!(fclose(f));
    let _ = DETACHING.try_with(|d| d.set(-1));
}

thread_local! {
    /// The fd whose standard cookie stream this thread is freeing: its close
    /// callback must not close the fd.
    static DETACHING: std::cell::Cell<c_int> = const { std::cell::Cell::new(-1) };
}
