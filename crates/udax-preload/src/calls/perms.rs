//! Permissions and owners: chmod, fchmod, fchmodat, chown, lchown, fchown,
//! fchownat.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::calls::stat::empty_path_desc;
use crate::dispatch::{fd_call, path_call};
use crate::state::fds::{Desc, Kind};
use crate::state::mount;
use libc::{c_char, c_int, gid_t, mode_t, uid_t};

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
        if flags & !libc::AT_SYMLINK_NOFOLLOW != 0 {
            return Err(Errno(libc::EINVAL));
        }
        if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
            // A symbolic link's own mode cannot change: EOPNOTSUPP.
            mount::fs()?.set_permissions_nofollow(&p, mode & 0o7777)?;
            return Ok(0);
        }
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
        crate::state::fds::Kind::Node { .. } => Err(Errno(libc::EBADF)),
    })
}

/// A chown id: `-1` leaves it as it is.
fn id(v: u32) -> Option<u32> {
    (v != u32::MAX).then_some(v)
}

/// chown by path (the owner applies the kernel's rules for this process's
/// credentials: only root gives a file away; docs/multiprocess.md);
/// `follow`: a symbolic link at the end is followed (`lchown`: not).
fn chown_path(p: &str, uid: uid_t, gid: gid_t, follow: bool) -> R<c_int> {
    let fs = mount::fs()?;
    if follow {
        fs.set_owner(p, id(uid), id(gid))?;
    } else {
        fs.set_owner_nofollow(p, id(uid), id(gid))?;
    }
    Ok(0)
}

/// chown of an open descriptor: a file by inode (renamed or unlinked since
/// it was opened, still that file), a directory by its current path. An
/// `O_PATH` descriptor only through `fchownat(AT_EMPTY_PATH)`, as the kernel.
fn chown_desc(d: &Desc, uid: uid_t, gid: gid_t, o_path_ok: bool) -> R<c_int> {
    match &*d.kind {
        _ if !o_path_ok && d.status() & libc::O_PATH != 0 => Err(Errno(libc::EBADF)),
        Kind::File(f) => {
            f.set_owner(id(uid), id(gid))?;
            Ok(0)
        }
        Kind::Dir(_) => chown_path(&d.path()?, uid, gid, true),
        Kind::Node { .. } => {
            mount::fs()?.set_owner_nofollow(&d.path()?, id(uid), id(gid))?;
            Ok(0)
        }
    }
}

macro_rules! chown_fn {
    ($name:ident, $follow:expr) => {
        /// # Safety
        /// As chown(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, uid, gid), |p| {
                chown_path(&p, uid, gid, $follow)
            })
        }
    };
}
chown_fn!(chown, true);
chown_fn!(lchown, false);

/// # Safety
/// As fchown(2).
#[no_mangle]
pub unsafe extern "C" fn fchown(fd: c_int, uid: uid_t, gid: gid_t) -> c_int {
    fd_call!(-1, fd, fchown(fd, uid, gid), |d| chown_desc(
        &d, uid, gid, false
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
            if flags & !(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) != 0 {
                return Err(Errno(libc::EINVAL));
            }
            // SAFETY: fchownat(2)'s contract for `path`.
            if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
                return chown_desc(&*d?, uid, gid, true);
            }
            let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
            path_call!(@on path_call!(@classify dirfd, path), path, fchownat(dirfd, path, uid, gid, flags), |p| {
                chown_path(&p, uid, gid, follow)
            })
        },
    )
}
