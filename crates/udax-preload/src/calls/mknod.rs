//! mknod, mknodat, mkfifo, mkfifoat: regular files, FIFOs, sockets and
//! device nodes (`Vfs::mknod`; a device node needs root, as `CAP_MKNOD`).
//! Opening a udax FIFO is `open`'s (a host pipe, `calls::open`).

use crate::boundary::entry::R;
use crate::dispatch::path_call;
use crate::state::mount;
use libc::{c_char, c_int, mode_t};

/// mknod of udax path `p`: the permission bits under the process's umask,
/// as the kernel's.
fn mknod_udax(p: &str, mode: mode_t, dev: libc::dev_t) -> R<c_int> {
    let mask = crate::calls::umask::umask_of_process();
    let kind = mode & libc::S_IFMT;
    mount::fs()?.mknod(p, kind | (mode & 0o7777 & !mask), dev)?;
    Ok(0)
}

/// # Safety
/// As mknod(2).
#[no_mangle]
pub unsafe extern "C" fn mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mknod(path, mode, dev), |p| {
        mknod_udax(&p, mode, dev)
    })
}

/// # Safety
/// As mknodat(2).
#[no_mangle]
pub unsafe extern "C" fn mknodat(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: libc::dev_t,
) -> c_int {
    path_call!(-1, dirfd, path, mknodat(dirfd, path, mode, dev), |p| {
        mknod_udax(&p, mode, dev)
    })
}

/// # Safety
/// As mkfifo(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifo(path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mkfifo(path, mode), |p| {
        mknod_udax(&p, libc::S_IFIFO | (mode & 0o7777), 0)
    })
}

/// # Safety
/// As mkfifoat(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, dirfd, path, mkfifoat(dirfd, path, mode), |p| {
        mknod_udax(&p, libc::S_IFIFO | (mode & 0o7777), 0)
    })
}
