//! The virtual working directory (chdir, fchdir, getcwd) and realpath,
//! canonicalize_file_name.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::path_call;
use crate::state::mount;
use crate::state::path::{self, classify};
use libc::{c_char, c_int, size_t};

fn chdir_udax(p: &str) -> R<c_int> {
    let fs = mount::fs()?;
    // The directory's own path (links followed), as getcwd shows it.
    let real = fs.real_dir(p)?;
    let dir = fs.dir_ref(&real)?;
    path::set_cwd(Some((real, dir)));
    Ok(0)
}

/// # Safety
/// As chdir(2).
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    run(
        -1,
        || fwd!(chdir(path)),
        || {
            let mut in_udax = false;
            // SAFETY: chdir(2)'s contract.
            let r = path_call!(@on unsafe { classify(libc::AT_FDCWD, path) }?, path, chdir(path), |p| {
                in_udax = true;
                chdir_udax(&p)
            })?;
            if r == 0 && !in_udax {
                path::set_cwd(None);
            }
            Ok(r)
        },
    )
}

/// # Safety
/// As fchdir(2).
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    run(
        -1,
        || fwd!(fchdir(fd)),
        || match crate::dispatch::lookup(fd) {
            Some(d) => {
                let d = d?;
                let crate::state::fds::Kind::Dir(dir) = &*d.kind else {
                    return Err(Errno(libc::ENOTDIR));
                };
                path::set_cwd(Some((d.path()?, dir.clone())));
                Ok(0)
            }
            None => {
                let r = fwd!(fchdir(fd));
                if r == 0 {
                    path::set_cwd(None);
                }
                Ok(r)
            }
        },
    )
}

/// # Safety
/// As getcwd(3) (including glibc's allocation when `buf` is null).
#[no_mangle]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    run(
        std::ptr::null_mut(),
        || fwd!(getcwd(buf, size)),
        || {
            let Some(c) = path::cwd() else {
                return Ok(fwd!(getcwd(buf, size)));
            };
            let c = c?;
            let bytes = c.as_bytes();
            if buf.is_null() {
                let n = if size == 0 { bytes.len() + 1 } else { size };
                if n < bytes.len() + 1 {
                    return Err(Errno(libc::ERANGE));
                }
                // SAFETY: malloc of a non-zero size; the caller frees it, as with glibc.
                let p = unsafe { libc::malloc(n) } as *mut c_char;
                if p.is_null() {
                    return Err(Errno(libc::ENOMEM));
                }
                // SAFETY: `p` has n >= len+1 bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), p, bytes.len());
                    *p.add(bytes.len()) = 0;
                }
                return Ok(p);
            }
            if size < bytes.len() + 1 {
                return Err(Errno(if size == 0 {
                    libc::EINVAL
                } else {
                    libc::ERANGE
                }));
            }
            // SAFETY: the caller's buffer holds `size` >= len+1 bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), buf, bytes.len());
                *buf.add(bytes.len()) = 0;
            }
            Ok(buf)
        },
    )
}

/// The canonical inner path of `p`: every symbolic link followed (one
/// leaving udax: `ESCAPED`, realpath goes on on the host).
fn real_path(p: &str) -> R<String> {
    let fs = mount::fs()?;
    if fs.stat(p)?.is_dir() {
        return Ok(fs.real_dir(p)?);
    }
    // A file: its directory's real path, and its name once the links at
    // the end are followed.
    let mut cur = path::canonical(p).to_string();
    for _ in 0..udax::fs::MAX_SYMLINKS {
        if !fs.lstat(&cur)?.is_symlink() {
            let dir = fs.real_dir(path::parent(&cur))?;
            let name = &cur[cur.rfind('/').map_or(0, |i| i + 1)..];
            return Ok(format!("{}/{name}", dir.trim_end_matches('/')));
        }
        let t = String::from_utf8_lossy(&fs.readlink(&cur)?).into_owned();
        if t.starts_with('/') {
            return Err(udax::Error::Escape { path: t }.into());
        }
        cur = format!("{}/{t}", path::parent(&cur).trim_end_matches('/'));
    }
    Err(Errno(libc::ELOOP))
}

fn realpath_udax(p: &str, resolved: *mut c_char) -> R<*mut c_char> {
    let real = real_path(p)?;
    let cfg = path::config().ok_or(Errno(libc::ENODEV))?;
    let full = cfg.outer(&real);
    let b = full.as_bytes();
    if b.len() + 1 > libc::PATH_MAX as usize {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let out = if resolved.is_null() {
        // SAFETY: malloc of a non-zero size; the caller frees it (realpath(3)).
        let p = unsafe { libc::malloc(b.len() + 1) } as *mut c_char;
        if p.is_null() {
            return Err(Errno(libc::ENOMEM));
        }
        p
    } else {
        resolved
    };
    // SAFETY: `out` has PATH_MAX bytes (caller's) or len+1 (ours).
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr().cast(), out, b.len());
        *out.add(b.len()) = 0;
    }
    Ok(out)
}

/// # Safety
/// As realpath(3).
#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    path_call!(
        std::ptr::null_mut(),
        libc::AT_FDCWD,
        path,
        realpath(path, resolved),
        |p| { realpath_udax(&p, resolved) }
    )
}

/// # Safety
/// As canonicalize_file_name(3).
#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    path_call!(
        std::ptr::null_mut(),
        libc::AT_FDCWD,
        path,
        canonicalize_file_name(path),
        |p| { realpath_udax(&p, std::ptr::null_mut()) }
    )
}
