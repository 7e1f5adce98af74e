//! Permissions and owners: chmod, fchmod, fchmodat, chown, lchown, fchown,
//! fchownat.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::calls::stat::{empty_path_desc, stat_path};
use crate::dispatch::{fd_call, path_call};
use crate::state::mount;
use crate::state::path::{classify, Target};
use libc::{c_char, c_int, gid_t, mode_t, uid_t};
use udax::fs::Stat;

fn chmod_udax(p: &str, mode: mode_t) -> R<c_int> {
    mount::fs()?.set_permissions(p, mode & 0o7777)?;
    Ok(0)
}

/// # Safety
/// As chmod(2).
#[no_mangle]
pub unsafe extern "C" fn chmod(path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, chmod(path, mode), |p| chmod_udax(
        &p, mode
    ))
}

/// # Safety
/// As fchmodat(2).
#[no_mangle]
pub unsafe extern "C" fn fchmodat(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    flags: c_int,
) -> c_int {
    path_call!(-1, dirfd, path, fchmodat(dirfd, path, mode, flags), |p| {
        chmod_udax(&p, mode)
    })
}

/// # Safety
/// As fchmod(2).
#[no_mangle]
pub unsafe extern "C" fn fchmod(fd: c_int, mode: mode_t) -> c_int {
    // By inode: a file renamed or unlinked since it was opened is still the
    // one changed; a directory by its current path.
    fd_call!(-1, fd, fchmod(fd, mode), |d| match &*d.kind {
        _ if d.status() & libc::O_PATH != 0 => Err(Errno(libc::EBADF)),
        crate::state::fds::Kind::File(f) => {
            f.set_permissions(mode & 0o7777)?;
            Ok(0)
        }
        crate::state::fds::Kind::Dir(_) => chmod_udax(&d.path()?, mode),
    })
}

/// udax keeps the owner of the process that created a file and has no chown:
/// a change to the current owner succeeds (nothing to do), any other change fails.
fn chown_udax(s: &Stat, uid: uid_t, gid: gid_t, call: &str) -> R<c_int> {
    let same = (uid == u32::MAX || uid == s.uid) && (gid == u32::MAX || gid == s.gid);
    if same {
        Ok(0)
    } else {
        Err(unsupported(
            call,
            "udax cannot change file owners",
            libc::EOPNOTSUPP,
        ))
    }
}

macro_rules! chown_fn {
    ($name:ident) => {
        /// # Safety
        /// As chown(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, uid, gid), |p| {
                chown_udax(&stat_path(&p)?, uid, gid, stringify!($name))
            })
        }
    };
}
chown_fn!(chown);
chown_fn!(lchown);

/// # Safety
/// As fchown(2).
#[no_mangle]
pub unsafe extern "C" fn fchown(fd: c_int, uid: uid_t, gid: gid_t) -> c_int {
    fd_call!(-1, fd, fchown(fd, uid, gid), |d| chown_udax(
        &d.stat()?,
        uid,
        gid,
        "fchown"
    ))
}

/// # Safety
/// As fchownat(2).
#[no_mangle]
pub unsafe extern "C" fn fchownat(
    dirfd: c_int,
    path: *const c_char,
    uid: uid_t,
    gid: gid_t,
    flags: c_int,
) -> c_int {
    run(
        -1,
        || fwd!(fchownat(dirfd, path, uid, gid, flags)),
        || {
            // SAFETY: fchownat(2)'s contract for `path`.
            if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
                return chown_udax(&d?.stat()?, uid, gid, "fchownat");
            }
            // SAFETY: as above.
            match unsafe { classify(dirfd, path) }? {
                Target::Host => Ok(fwd!(fchownat(dirfd, path, uid, gid, flags))),
                Target::HostPath(c) => Ok(fwd!(fchownat(dirfd, c.as_ptr(), uid, gid, flags))),
                Target::Udax(p) => chown_udax(&stat_path(&p)?, uid, gid, "fchownat"),
            }
        },
    )
}
