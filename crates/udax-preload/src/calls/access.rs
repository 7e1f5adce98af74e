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
    // SAFETY: the id calls have no preconditions.
    let (uid, gid) = unsafe {
        if effective {
            (libc::geteuid(), libc::getegid())
        } else {
            (libc::getuid(), libc::getgid())
        }
    };
    let in_group = gid == s.gid || {
        let mut g = vec![0 as libc::gid_t; 256];
        // SAFETY: `g` holds 256 ids, the count passed.
        let n = unsafe { libc::getgroups(g.len() as c_int, g.as_mut_ptr()) };
        n > 0 && g[..n as usize].contains(&s.gid)
    };
    let ok = if uid == 0 {
        mode & libc::X_OK == 0 || s.is_dir() || s.mode & 0o111 != 0
    } else {
        let bits = if uid == s.uid {
            (s.mode >> 6) & 7
        } else if in_group {
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
