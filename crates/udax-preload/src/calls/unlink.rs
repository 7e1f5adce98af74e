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
        |p| unlink_udax(&p, flags)
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
            if stat_path(&p)?.is_dir() {
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
        |p| { rmdir_udax(&p) }
    )
}
