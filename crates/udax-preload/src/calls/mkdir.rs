//! mkdir, mkdirat (the umask applies).

use crate::boundary::entry::{Errno, R};
use crate::dispatch::path_call;
use crate::state::mount;
use libc::{c_char, c_int, mode_t};

fn mkdir_udax(p: &str, mode: mode_t) -> R<c_int> {
    if p == "/" {
        return Err(Errno(libc::EEXIST));
    }
    let mask = crate::calls::umask::umask_of_process();
    mount::fs()?.mkdir(p, mode & 0o7777 & !mask)?;
    Ok(0)
}

/// # Safety
/// As mkdir(2).
#[no_mangle]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mkdir(path, mode), |p| mkdir_udax(
        &p, mode
    ))
}

/// # Safety
/// As mkdirat(2).
#[no_mangle]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, dirfd, path, mkdirat(dirfd, path, mode), |p| mkdir_udax(
        &p, mode
    ))
}
