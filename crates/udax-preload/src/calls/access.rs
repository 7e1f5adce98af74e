//! access, faccessat, euidaccess, eaccess: by the mode bits, for the real
//! ids (access, faccessat) or the effective ones (euidaccess, eaccess,
//! `AT_EACCESS`), with the supplementary groups, as the kernel.

use crate::boundary::entry::{Errno, R};
use crate::calls::stat::stat_path;
use crate::dispatch::path_call;
use libc::{c_char, c_int};

/// access(2) by the permission bits, for the effective ids (root: read and
/// write always, execute if any x bit is set or it is a directory).
pub fn access_udax(p: &str, mode: c_int, follow: bool) -> R<c_int> {
    access_as(p, mode, follow, true)
}

/// access(2) of `p` for the effective ids (`effective`) or the real ones;
/// the supplementary groups count either way.
fn access_as(p: &str, mode: c_int, follow: bool, effective: bool) -> R<c_int> {
    let s = stat_path(p, follow)?;
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    if mode == libc::F_OK {
        return Ok(0);
    }
    // The thread's supplementary groups, with the real or effective ids
    // (R_OK, W_OK, X_OK are the permission bits 4, 2, 1).
    let mut me = udax::fs::perm::Cred::of_this_thread();
    // SAFETY: the id calls have no preconditions.
    (me.uid, me.gid) = unsafe {
        if effective {
            (libc::geteuid(), libc::getegid())
        } else {
            (libc::getuid(), libc::getgid())
        }
    };
    if me.permits_stat(&s, mode as u32) {
        Ok(0)
    } else {
        Err(Errno(libc::EACCES))
    }
}

macro_rules! access_fn {
    ($name:ident, $effective:expr) => {
        /// # Safety
        /// As access(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_int) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, mode), |p| access_as(
                &p, mode, true, $effective
            ))
        }
    };
}
access_fn!(access, false);
access_fn!(euidaccess, true);
access_fn!(eaccess, true);

/// # Safety
/// As faccessat(2).
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    path_call!(-1, dirfd, path, faccessat(dirfd, path, mode, flags), |p| {
        if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EACCESS | libc::AT_EMPTY_PATH) != 0 {
            return Err(Errno(libc::EINVAL));
        }
        access_as(
            &p,
            mode,
            flags & libc::AT_SYMLINK_NOFOLLOW == 0,
            flags & libc::AT_EACCESS != 0,
        )
    })
}
