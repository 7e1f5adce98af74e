//! Links: link, linkat (also of an open descriptor: `AT_EMPTY_PATH`,
//! `/proc/self/fd/N`), symlink, symlinkat, readlink, readlinkat (also of
//! the kernel's links to udax descriptors).

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::calls::stat::empty_path_desc;
use crate::dispatch::{classify_pair, path_call, Pair};
use crate::state::fds::Desc;
use crate::state::mount;
use crate::state::path::{self, classify, Target};
use libc::{c_char, c_int, size_t, ssize_t};

/// # Safety
/// As link(2).
#[no_mangle]
pub unsafe extern "C" fn link(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: the caller's contract, unchanged.
    unsafe { linkat(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0) }
}

/// # Safety
/// As linkat(2).
#[no_mangle]
pub unsafe extern "C" fn linkat(
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
    flags: c_int,
) -> c_int {
    run(
        -1,
        || fwd!(linkat(fa, a, fb, b, flags)),
        || {
            // SAFETY: linkat(2)'s contract.
            if let Some(d) = unsafe { link_source_desc(fa, a, flags) } {
                return link_desc(&*d?, fb, b);
            }
            // SAFETY: linkat(2)'s contract.
            match unsafe { classify_pair(fa, a, fb, b, "link") }? {
                Pair::Host(x, y) => Ok(fwd!(linkat(
                    fa,
                    x.as_ref().map_or(a, |c| c.as_ptr()),
                    fb,
                    y.as_ref().map_or(b, |c| c.as_ptr()),
                    flags
                ))),
                Pair::Udax(x, y) => {
                    if flags & !(libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) != 0 {
                        return Err(Errno(libc::EINVAL));
                    }
                    let fs = mount::fs()?;
                    if flags & libc::AT_SYMLINK_FOLLOW != 0 {
                        fs.link_following(&x, &y)?;
                    } else {
                        fs.link(&x, &y)?;
                    }
                    Ok(0)
                }
            }
        },
    )
}

/// The udax descriptor `linkat` names as its source, if it names one by
/// descriptor: `AT_EMPTY_PATH` with an empty path, or a followed
/// `/proc/self/fd/N`-style path (how `open(2)` says to name an `O_TMPFILE`
/// file without privileges).
///
/// # Safety
/// `path` is null or a C string.
unsafe fn link_source_desc(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> Option<R<std::sync::Arc<Desc>>> {
    // SAFETY: the caller's contract.
    if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
        return Some(d);
    }
    if flags & libc::AT_SYMLINK_FOLLOW == 0 {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe { fd_link_desc(path) }
}

/// The udax descriptor `path` is exactly the kernel's link to
/// (`/proc/self/fd/N`, nothing below it), if it is one.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn fd_link_desc(path: *const c_char) -> Option<R<std::sync::Arc<Desc>>> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    let p = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    match path::fd_link(p)? {
        (fd, b"") => crate::dispatch::lookup(fd),
        _ => None,
    }
}

/// linkat of an open udax descriptor `d` to `(fb, b)`.
fn link_desc(d: &Desc, fb: c_int, b: *const c_char) -> R<c_int> {
    if d.is_dir() {
        return Err(Errno(libc::EPERM)); // no hard links to directories
    }
    // SAFETY: linkat(2)'s contract for `b`.
    match unsafe { classify(fb, b) }? {
        Target::Udax(y) => {
            d.file()?.link(&y)?;
            Ok(0)
        }
        // Another file system.
        Target::Host | Target::HostPath(_) => Err(Errno(libc::EXDEV)),
    }
}

/// symlink of `target` (stored as written) at udax path `p`.
///
/// # Safety
/// `target` is null or a C string.
unsafe fn symlink_udax(target: *const c_char, p: &str) -> R<c_int> {
    if target.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's contract.
    let t = unsafe { std::ffi::CStr::from_ptr(target) }.to_bytes();
    mount::fs()?.symlink(t, p)?;
    Ok(0)
}

/// # Safety
/// As symlink(2).
#[no_mangle]
pub unsafe extern "C" fn symlink(target: *const c_char, path: *const c_char) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, symlink(target, path), |p| {
        // SAFETY: symlink(2)'s contract.
        unsafe { symlink_udax(target, &p) }
    })
}

/// # Safety
/// As symlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn symlinkat(
    target: *const c_char,
    dirfd: c_int,
    path: *const c_char,
) -> c_int {
    path_call!(-1, dirfd, path, symlinkat(target, dirfd, path), |p| {
        // SAFETY: symlinkat(2)'s contract.
        unsafe { symlink_udax(target, &p) }
    })
}

/// readlink of a udax path into `buf` (`n` bytes, no NUL added, the
/// target cut to fit, as readlink(2)).
fn readlink_udax(p: &str, buf: *mut c_char, n: size_t) -> R<ssize_t> {
    let t = mount::fs()?.readlink(p)?;
    if n == 0 {
        return Err(Errno(libc::EINVAL));
    }
    // SAFETY: the caller's buffer of `n` bytes (readlink(2)'s contract).
    let out = unsafe { crate::dispatch::slice_mut(buf.cast(), n) }?;
    let k = t.len().min(out.len());
    out[..k].copy_from_slice(&t[..k]);
    Ok(k as ssize_t)
}

/// readlink of `/proc/self/fd/N` for udax descriptor N: what the kernel's
/// link says, the descriptor's path under the mount (with `" (deleted)"`
/// once the file has no name). A file renamed since it was opened has no
/// path the shim knows: EOPNOTSUPP. `None`: not such a path.
///
/// # Safety
/// `path` is null or a C string; `buf` holds `n` writable bytes.
unsafe fn readlink_fd_link(path: *const c_char, buf: *mut c_char, n: size_t) -> Option<R<ssize_t>> {
    // SAFETY: the caller's contract.
    let d = unsafe { fd_link_desc(path) }?;
    let text = || -> R<String> {
        let d = d?;
        let cfg = path::config().ok_or(Errno(libc::ENODEV))?;
        let p = d.path()?;
        let mut text = cfg.outer(&p);
        if !d.is_dir() && !d.still_named(&p)? {
            if d.stat()?.nlink != 0 {
                return Err(unsupported(
                    "readlink",
                    "/proc/self/fd/N of a udax file renamed since it was opened",
                    libc::EOPNOTSUPP,
                ));
            }
            text.push_str(" (deleted)");
        }
        Ok(text)
    };
    Some(text().and_then(|t| {
        // SAFETY: the caller's contract for `buf`.
        let out = unsafe { crate::dispatch::slice_mut(buf.cast(), n) }?;
        let k = t.len().min(out.len());
        out[..k].copy_from_slice(&t.as_bytes()[..k]);
        Ok(k as ssize_t)
    }))
}

/// # Safety
/// As readlink(2).
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: readlink(2)'s contract.
    unsafe { readlinkat(libc::AT_FDCWD, path, buf, n) }
}

/// # Safety
/// As readlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    n: size_t,
) -> ssize_t {
    run(
        -1,
        || fwd!(readlinkat(dirfd, path, buf, n)),
        || {
            // SAFETY: readlinkat(2)'s contract.
            if let Some(r) = unsafe { readlink_fd_link(path, buf, n) } {
                return r;
            }
            // SAFETY: readlinkat(2)'s contract.
            if let Some(d) = unsafe { empty_path_desc(dirfd, path, libc::AT_EMPTY_PATH) } {
                // readlinkat(fd, "") of an O_PATH|O_NOFOLLOW link.
                return readlink_udax(&d?.link_path()?, buf, n);
            }
            path_call!(@on path_call!(@classify dirfd, path), path, readlinkat(dirfd, path, buf, n), |p| {
                readlink_udax(&p, buf, n)
            })
        },
    )
}
