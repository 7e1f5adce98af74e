//! The `_FORTIFY_SOURCE` entry points (`__open_2`, `__read_chk`, ...): programs
//! built with fortification (Debian's are) call these instead of the plain
//! functions. Each checks what glibc's checks, then does the plain call.

use libc::{c_char, c_int, c_void, off64_t, size_t, ssize_t};

fn overflow() -> ! {
    // glibc's __chk_fail: a buffer overflow was detected; the process dies.
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

macro_rules! open_2 {
    ($name:ident) => {
        /// # Safety
        /// As open(2) without a mode (glibc's fortified open).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
                overflow(); // glibc: "invalid open call: O_CREAT or O_TMPFILE without mode"
            }
            // SAFETY: the caller's contract.
            unsafe { crate::calls::open::open64(path, flags, 0) }
        }
    };
}
open_2!(__open_2);
open_2!(__open64_2);

macro_rules! openat_2 {
    ($name:ident) => {
        /// # Safety
        /// As openat(2) without a mode (glibc's fortified openat).
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
                overflow();
            }
            // SAFETY: the caller's contract.
            unsafe { crate::calls::open::openat64(dirfd, path, flags, 0) }
        }
    };
}
openat_2!(__openat_2);
openat_2!(__openat64_2);

/// # Safety
/// As read(2), with `buflen` the size of the buffer.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        overflow();
    }
    // SAFETY: the caller's contract.
    unsafe { crate::calls::read_write::read(fd, buf, n) }
}

macro_rules! pread_chk {
    ($name:ident) => {
        /// # Safety
        /// As pread(2), with `buflen` the size of the buffer.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *mut c_void,
            n: size_t,
            off: off64_t,
            buflen: size_t,
        ) -> ssize_t {
            if n > buflen {
                overflow();
            }
            // SAFETY: the caller's contract.
            unsafe { crate::calls::read_write::pread64(fd, buf, n, off) }
        }
    };
}
pread_chk!(__pread_chk);
pread_chk!(__pread64_chk);

/// # Safety
/// As readlink(2), with `buflen` the size of the buffer.
#[no_mangle]
pub unsafe extern "C" fn __readlink_chk(
    path: *const c_char,
    buf: *mut c_char,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        overflow();
    }
    // SAFETY: the caller's contract.
    unsafe { crate::calls::link::readlink(path, buf, n) }
}

/// # Safety
/// As readlinkat(2), with `buflen` the size of the buffer.
#[no_mangle]
pub unsafe extern "C" fn __readlinkat_chk(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        overflow();
    }
    // SAFETY: the caller's contract.
    unsafe { crate::calls::link::readlinkat(dirfd, path, buf, n) }
}

/// # Safety
/// As getcwd(3), with `buflen` the size of the buffer.
#[no_mangle]
pub unsafe extern "C" fn __getcwd_chk(buf: *mut c_char, n: size_t, buflen: size_t) -> *mut c_char {
    if n > buflen {
        overflow();
    }
    // SAFETY: the caller's contract.
    unsafe { crate::calls::cwd::getcwd(buf, n) }
}

/// # Safety
/// As realpath(3), with `buflen` the size of `resolved`.
#[no_mangle]
pub unsafe extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    buflen: size_t,
) -> *mut c_char {
    if !resolved.is_null() && buflen < libc::PATH_MAX as size_t {
        overflow();
    }
    // SAFETY: the caller's contract.
    unsafe { crate::calls::cwd::realpath(path, resolved) }
}
