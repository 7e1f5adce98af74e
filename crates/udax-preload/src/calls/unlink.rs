//! unlink, unlinkat, remove, rmdir.

use crate::boundary::entry::{Errno, R};
use crate::calls::stat::stat_path;
use crate::dispatch::path_call;
use crate::state::mount;
use libc::{c_char, c_int};

fn unlink_udax(p: &str, flags: c_int) -> R<c_int> {
    let fs = mount::fs()?;
    if flags & !libc::AT_REMOVEDIR != 0 {
        return Err(Errno(libc::EINVAL));
    }
    if flags & libc::AT_REMOVEDIR != 0 {
        rmdir_udax(p)
    } else {
        fs.unlink(p)?;
        Ok(0)
    }
}

/// Does the path as written end in a `..` component? The kernel's rmdir
/// of one is ENOTEMPTY (its `.` is EINVAL), after the path resolved.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn ends_in_dotdot(path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    // SAFETY: the caller's contract.
    let b = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    b.rsplit(|&c| c == b'/').find(|c| !c.is_empty()) == Some(b"..")
}

fn rmdir_udax(p: &str) -> R<c_int> {
    if p == "/" {
        return Err(Errno(libc::EBUSY)); // the mount point
    }
    mount::fs()?.rmdir(p)?;
    Ok(0)
}

/// # Safety
/// As unlink(2).
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, unlink(path), |p| unlink_udax(
        &p, 0
    ))
}

/// # Safety
/// As unlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    path_call!(
        exclusive(flags & libc::AT_REMOVEDIR != 0),
        -1,
        dirfd,
        path,
        unlinkat(dirfd, path, flags),
        |p| {
            // SAFETY: unlinkat(2)'s contract.
            if flags & libc::AT_REMOVEDIR != 0 && unsafe { ends_in_dotdot(path) } {
                stat_path(&p, true)?;
                return Err(Errno(libc::ENOTEMPTY));
            }
            unlink_udax(&p, flags)
        }
    )
}

/// # Safety
/// As remove(3).
#[no_mangle]
pub unsafe extern "C" fn remove(path: *const c_char) -> c_int {
    path_call!(
        exclusive(true),
        -1,
        libc::AT_FDCWD,
        path,
        remove(path),
        |p| {
            if stat_path(&p, false)?.is_dir() {
                rmdir_udax(&p)
            } else {
                unlink_udax(&p, 0)
            }
        }
    )
}

/// # Safety
/// As rmdir(2).
#[no_mangle]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    path_call!(
        exclusive(true),
        -1,
        libc::AT_FDCWD,
        path,
        rmdir(path),
        |p| {
            // SAFETY: rmdir(2)'s contract.
            if unsafe { ends_in_dotdot(path) } {
                stat_path(&p, true)?;
                return Err(Errno(libc::ENOTEMPTY));
            }
            rmdir_udax(&p)
        }
    )
}
