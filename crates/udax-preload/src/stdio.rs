//! stdio streams on udax files.
//!
//! glibc's fopen and fdopen call its internal open/fcntl, out of the shim's
//! reach, so a udax stream is built with `fopencookie` over a udax descriptor:
//! the stream's reads, writes, seeks and close go through the shim's own
//! read/write/lseek/close. Known difference: `fileno()` of such a stream is -1
//! (glibc does not expose the cookie's descriptor).

use crate::dispatch::fd_call;
use crate::entry::{fwd, run, unsupported, Errno, R};
use libc::{c_char, c_int, c_void, off64_t, size_t, ssize_t, FILE};
use std::ffi::CStr;

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

unsafe extern "C" fn cookie_read(c: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: stdio passes its own buffer of `n` bytes.
    unsafe { crate::io::read(fd_of(c), buf.cast(), n) }
}

unsafe extern "C" fn cookie_write(c: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // SAFETY: stdio passes its own buffer of `n` bytes.
    let r = unsafe { crate::io::write(fd_of(c), buf.cast(), n) };
    // A cookie write returning -1 or 0 is an error to stdio.
    if r < 0 {
        0
    } else {
        r
    }
}

unsafe extern "C" fn cookie_seek(c: *mut c_void, off: *mut off64_t, whence: c_int) -> c_int {
    // SAFETY: stdio passes a valid pointer to the requested offset.
    let want = unsafe { *off };
    // SAFETY: an lseek on the stream's own descriptor.
    let r = unsafe { crate::io::lseek64(fd_of(c), want, whence) };
    if r < 0 {
        return -1;
    }
    // SAFETY: as above.
    unsafe { *off = r };
    0
}

unsafe extern "C" fn cookie_close(c: *mut c_void) -> c_int {
    // SAFETY: the stream owns its descriptor; it is closed once, here.
    unsafe { crate::io::close(fd_of(c)) }
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
        return Err(Errno(crate::entry::errno()));
    }
    Ok(f)
}

fn fopen_udax(p: &str, mode: *const c_char) -> R<*mut FILE> {
    if mode.is_null() {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: fopen(3)'s contract: `mode` is a C string.
    let flags = mode_flags(unsafe { CStr::from_ptr(mode) }.to_bytes())?;
    let fd = crate::io::open_udax(p, flags, 0o666)?;
    stream(fd, mode).inspect_err(|_| {
        let _ = crate::fds::close(fd);
    })
}

macro_rules! fopen_fn {
    ($name:ident) => {
        /// # Safety
        /// As fopen(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE {
            crate::dispatch::path_call!(
                std::ptr::null_mut(),
                libc::AT_FDCWD,
                path,
                $name(path, mode),
                |p| fopen_udax(&p, mode)
            )
        }
    };
}
fopen_fn!(fopen);
fopen_fn!(fopen64);

/// # Safety
/// As fdopen(3).
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    fd_call!(std::ptr::null_mut(), fd, fdopen(fd, mode), |d| {
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
    })
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
            run(
                std::ptr::null_mut(),
                || fwd!($name(path, mode, f)),
                || {
                    // SAFETY: freopen(3)'s contract.
                    match unsafe { crate::path::classify(libc::AT_FDCWD, path) }? {
                        crate::path::Target::Udax(_) => Err(unsupported(
                            stringify!($name),
                            "reopening a stream onto a udax path",
                            libc::EOPNOTSUPP,
                        )),
                        crate::path::Target::HostPath(c) => Ok(fwd!($name(c.as_ptr(), mode, f))),
                        crate::path::Target::Host => Ok(fwd!($name(path, mode, f))),
                    }
                },
            )
        }
    };
}
freopen_fn!(freopen);
freopen_fn!(freopen64);
