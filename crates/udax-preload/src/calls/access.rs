//! access, faccessat, euidaccess, eaccess: by the mode bits and the
//! effective ids.

use crate::boundary::entry::{Errno, R};
use crate::calls::stat::stat_path;
use crate::dispatch::path_call;
use libc::{c_char, c_int};

/// access(2) by the permission bits, for the effective ids (root: read and
/// write always, execute if any x bit is set or it is a directory).
pub fn access_udax(p: &str, mode: c_int, follow: bool) -> R<c_int> {
    let s = stat_path(p, follow)?;
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    if mode == libc::F_OK {
        return Ok(0);
    }
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let ok = if uid == 0 {
        mode & libc::X_OK == 0 || s.is_dir() || s.mode & 0o111 != 0
    } else {
        let bits = if uid == s.uid {
            (s.mode >> 6) & 7
        } else if gid == s.gid {
            (s.mode >> 3) & 7
        } else {
            s.mode & 7
        };
        (mode as u32) & !bits == 0
    };
    if ok {
        Ok(0)
    } else {
        Err(Errno(libc::EACCES))
    }
}

macro_rules! access_fn {
    ($name:ident) => {
        /// # Safety
        /// As access(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_int) -> c_int {
            path_call!(
                -1,
                libc::AT_FDCWD,
                path,
                $name(path, mode),
                |p| access_udax(&p, mode, true)
            )
        }
    };
}
access_fn!(access);
access_fn!(euidaccess);
access_fn!(eaccess);

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
        access_udax(&p, mode, flags & libc::AT_SYMLINK_NOFOLLOW == 0)
    })
}
