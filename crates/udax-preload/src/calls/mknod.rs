//! mknod, mkfifo: regular files only (udax holds no special files).

use crate::boundary::entry::{unsupported, Errno};
use crate::dispatch::path_call;
use libc::{c_char, c_int, mode_t};

fn no_special(call: &str) -> Errno {
    unsupported(
        call,
        "udax holds only regular files and directories",
        libc::EPERM,
    )
}

/// # Safety
/// As mknod(2).
#[no_mangle]
pub unsafe extern "C" fn mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mknod(path, mode, dev), |p| {
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            let fd = crate::calls::open::open_udax(
                &p,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                mode,
            )?;
            crate::state::fds::close(fd)
        } else {
            Err(no_special("mknod"))
        }
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
    path_call!(-1, dirfd, path, mknodat(dirfd, path, mode, dev), |_p| Err(
        no_special("mknodat")
    ))
}

/// # Safety
/// As mkfifo(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifo(path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mkfifo(path, mode), |_p| Err(
        no_special("mkfifo")
    ))
}

/// # Safety
/// As mkfifoat(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, dirfd, path, mkfifoat(dirfd, path, mode), |_p| Err(
        no_special("mkfifoat")
    ))
}
