//! Metadata calls: the stat family, access, the namespace (unlink, rename,
//! mkdir, ...), permissions, statfs, the working directory.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::{classify_pair, fd_call, path_call, Pair};
use crate::state::fds::Desc;
use crate::state::mount;
use crate::state::path::{self, classify, Target};
use libc::{c_char, c_int, c_uint, c_void, gid_t, mode_t, size_t, ssize_t, uid_t};
use udax::fs::{Rename, Stat};

/// `st_dev` of every udax file: major 2010 (unassigned), minor 0.
pub const DEV_MAJOR: u32 = 2010;
/// `f_type` of statfs: "udax".
const FS_MAGIC: i64 = 0x7564_6178;

fn dev() -> u64 {
    libc::makedev(DEV_MAJOR, 0)
}

fn ts(ns: u64) -> (i64, i64) {
    ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64)
}

pub fn fill_stat(s: &Stat, out: *mut libc::stat64) -> R<()> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: all-zero is a valid `stat64` (plain integers).
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_dev = dev();
    st.st_ino = s.ino;
    st.st_nlink = s.nlink as _;
    st.st_mode = s.mode;
    st.st_uid = s.uid;
    st.st_gid = s.gid;
    st.st_size = s.size as i64;
    st.st_blksize = s.blksize as _;
    st.st_blocks = s.blocks as i64;
    (st.st_atime, st.st_atime_nsec) = ts(s.atime_ns);
    (st.st_mtime, st.st_mtime_nsec) = ts(s.mtime_ns);
    (st.st_ctime, st.st_ctime_nsec) = ts(s.ctime_ns);
    // SAFETY: the caller's stat buffer, checked non-null above.
    unsafe { out.write(st) };
    Ok(())
}

// The kernel's struct statx is 256 bytes; never write more into the caller's.
const _: () = assert!(std::mem::size_of::<libc::statx>() == 256);

/// `STATX_ATTR_DAX` (linux/stat.h, Linux 5.8).
const STATX_ATTR_DAX: u64 = 0x0020_0000;
/// `STATX_ATTR_AUTOMOUNT`: the kernel puts it in every mask, with DAX.
const STATX_ATTR_AUTOMOUNT: u64 = 0x1000;

fn fill_statx(s: &Stat, out: *mut libc::statx) -> R<()> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: all-zero is a valid `statx` (plain integers).
    let mut x: libc::statx = unsafe { std::mem::zeroed() };
    x.stx_mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    x.stx_blksize = s.blksize;
    x.stx_nlink = s.nlink;
    x.stx_uid = s.uid;
    x.stx_gid = s.gid;
    x.stx_mode = s.mode as u16;
    x.stx_ino = s.ino;
    x.stx_size = s.size;
    x.stx_blocks = s.blocks;
    let t = |ns: u64| {
        // SAFETY: all-zero is a valid statx_timestamp.
        let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        t.tv_sec = (ns / 1_000_000_000) as i64;
        t.tv_nsec = (ns % 1_000_000_000) as u32;
        t
    };
    x.stx_atime = t(s.atime_ns);
    x.stx_btime = t(s.btime_ns);
    x.stx_ctime = t(s.ctime_ns);
    x.stx_mtime = t(s.mtime_ns);
    x.stx_dev_major = DEV_MAJOR;
    x.stx_dev_minor = 0;
    // As the kernel on an -o dax mount: every file says whether it is DAX
    // (the mask), and regular files are (loads and stores reach the device).
    x.stx_attributes_mask = STATX_ATTR_DAX | STATX_ATTR_AUTOMOUNT;
    if s.is_file() {
        x.stx_attributes = STATX_ATTR_DAX;
    }
    // SAFETY: the caller's statx buffer, checked non-null; same size as the kernel's.
    unsafe { out.write(x) };
    Ok(())
}

fn stat_path(p: &str) -> R<Stat> {
    Ok(mount::fs()?.stat(p)?)
}

/// The AT_EMPTY_PATH case: `path` is "" and `dirfd` a udax descriptor.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn empty_path_desc(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> Option<R<std::sync::Arc<Desc>>> {
    // SAFETY: the caller's contract.
    let empty = !path.is_null() && unsafe { *path } == 0;
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        return crate::dispatch::lookup(dirfd);
    }
    None
}

macro_rules! stat_fn {
    ($name:ident) => {
        /// # Safety
        /// As stat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, out: *mut libc::stat64) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, out), |p| {
                fill_stat(&stat_path(&p)?, out).map(|_| 0)
            })
        }
    };
}
stat_fn!(stat);
stat_fn!(stat64);
stat_fn!(lstat);
stat_fn!(lstat64);

macro_rules! fstat_fn {
    ($name:ident) => {
        /// # Safety
        /// As fstat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, out: *mut libc::stat64) -> c_int {
            fd_call!(-1, fd, $name(fd, out), |d| fill_stat(&d.stat()?, out)
                .map(|_| 0))
        }
    };
}
fstat_fn!(fstat);
fstat_fn!(fstat64);

macro_rules! fstatat_fn {
    ($name:ident) => {
        /// # Safety
        /// As fstatat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            out: *mut libc::stat64,
            flags: c_int,
        ) -> c_int {
            run(
                -1,
                || crate::boundary::entry::fwd!($name(dirfd, path, out, flags)),
                || {
                    // SAFETY: fstatat(2)'s contract for `path`.
                    if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
                        return fill_stat(&d?.stat()?, out).map(|_| 0);
                    }
                    // SAFETY: as above.
                    match unsafe { classify(dirfd, path) }? {
                        Target::Host => Ok(fwd!($name(dirfd, path, out, flags))),
                        Target::HostPath(c) => Ok(fwd!($name(dirfd, c.as_ptr(), out, flags))),
                        Target::Udax(p) => fill_stat(&stat_path(&p)?, out).map(|_| 0),
                    }
                },
            )
        }
    };
}
fstatat_fn!(fstatat);
fstatat_fn!(fstatat64);
// `newfstatat` is the system call's name; glibc exports it as fstatat.

macro_rules! xstat_fn {
    ($name:ident) => {
        /// glibc < 2.33 stat entry point (old binaries).
        ///
        /// # Safety
        /// As stat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            path: *const c_char,
            out: *mut libc::stat64,
        ) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(ver, path, out), |p| {
                fill_stat(&stat_path(&p)?, out).map(|_| 0)
            })
        }
    };
}
xstat_fn!(__xstat);
xstat_fn!(__xstat64);
xstat_fn!(__lxstat);
xstat_fn!(__lxstat64);

macro_rules! fxstat_fn {
    ($name:ident) => {
        /// glibc < 2.33 fstat entry point.
        ///
        /// # Safety
        /// As fstat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, out: *mut libc::stat64) -> c_int {
            fd_call!(-1, fd, $name(ver, fd, out), |d| fill_stat(&d.stat()?, out)
                .map(|_| 0))
        }
    };
}
fxstat_fn!(__fxstat);
fxstat_fn!(__fxstat64);

macro_rules! fxstatat_fn {
    ($name:ident) => {
        /// glibc < 2.33 fstatat entry point.
        ///
        /// # Safety
        /// As fstatat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            dirfd: c_int,
            path: *const c_char,
            out: *mut libc::stat64,
            flags: c_int,
        ) -> c_int {
            path_call!(-1, dirfd, path, $name(ver, dirfd, path, out, flags), |p| {
                fill_stat(&stat_path(&p)?, out).map(|_| 0)
            })
        }
    };
}
fxstatat_fn!(__fxstatat);
fxstatat_fn!(__fxstatat64);

/// # Safety
/// As statx(2).
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    out: *mut libc::statx,
) -> c_int {
    run(
        -1,
        || fwd!(statx(dirfd, path, flags, mask, out)),
        || {
            // SAFETY: statx(2)'s contract for `path`.
            if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
                return fill_statx(&d?.stat()?, out).map(|_| 0);
            }
            // SAFETY: as above.
            match unsafe { classify(dirfd, path) }? {
                Target::Host => Ok(fwd!(statx(dirfd, path, flags, mask, out))),
                Target::HostPath(c) => Ok(fwd!(statx(dirfd, c.as_ptr(), flags, mask, out))),
                Target::Udax(p) => fill_statx(&stat_path(&p)?, out).map(|_| 0),
            }
        },
    )
}

// ---- statfs ----

fn fill_statfs(out: *mut libc::statfs64) -> R<()> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let s = mount::fs()?.statfs();
    // SAFETY: all-zero is a valid `statfs64`.
    let mut f: libc::statfs64 = unsafe { std::mem::zeroed() };
    f.f_type = FS_MAGIC;
    f.f_bsize = s.block_size as i64;
    f.f_frsize = s.block_size as i64;
    f.f_blocks = s.data_blocks;
    f.f_bfree = s.free_blocks;
    f.f_bavail = s.free_blocks;
    f.f_files = s.inodes + s.free_blocks;
    f.f_ffree = s.free_blocks;
    f.f_namelen = 255;
    // SAFETY: the caller's buffer, checked non-null.
    unsafe { out.write(f) };
    Ok(())
}

fn fill_statvfs(out: *mut libc::statvfs64) -> R<()> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let s = mount::fs()?.statfs();
    // SAFETY: all-zero is a valid `statvfs64`.
    let mut f: libc::statvfs64 = unsafe { std::mem::zeroed() };
    f.f_bsize = s.block_size;
    f.f_frsize = s.block_size;
    f.f_blocks = s.data_blocks;
    f.f_bfree = s.free_blocks;
    f.f_bavail = s.free_blocks;
    f.f_files = s.inodes + s.free_blocks;
    f.f_ffree = s.free_blocks;
    f.f_favail = s.free_blocks;
    f.f_fsid = dev();
    f.f_namemax = 255;
    // SAFETY: the caller's buffer, checked non-null.
    unsafe { out.write(f) };
    Ok(())
}

macro_rules! statfs_fn {
    ($name:ident, $ty:ty, $fill:ident) => {
        /// # Safety
        /// As statfs(2) / statvfs(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, out: *mut $ty) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, out), |p| {
                stat_path(&p)?;
                $fill(out).map(|_| 0)
            })
        }
    };
}
statfs_fn!(statfs, libc::statfs64, fill_statfs);
statfs_fn!(statfs64, libc::statfs64, fill_statfs);
statfs_fn!(statvfs, libc::statvfs64, fill_statvfs);
statfs_fn!(statvfs64, libc::statvfs64, fill_statvfs);

macro_rules! fstatfs_fn {
    ($name:ident, $ty:ty, $fill:ident) => {
        /// # Safety
        /// As fstatfs(2) / fstatvfs(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, out: *mut $ty) -> c_int {
            fd_call!(-1, fd, $name(fd, out), |_d| $fill(out).map(|_| 0))
        }
    };
}
fstatfs_fn!(fstatfs, libc::statfs64, fill_statfs);
fstatfs_fn!(fstatfs64, libc::statfs64, fill_statfs);
fstatfs_fn!(fstatvfs, libc::statvfs64, fill_statvfs);
fstatfs_fn!(fstatvfs64, libc::statvfs64, fill_statvfs);

// ---- access ----

/// access(2) by the permission bits, for the effective ids (root: read and
/// write always, execute if any x bit is set or it is a directory).
fn access_udax(p: &str, mode: c_int) -> R<c_int> {
    let s = stat_path(p)?;
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
                |p| access_udax(&p, mode)
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
        access_udax(&p, mode)
    })
}

// ---- namespace ----

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

fn rename_udax(a: &str, b: &str, flags: c_uint) -> R<c_int> {
    let fs = mount::fs()?;
    let how = match flags {
        0 => Rename::Replace,
        libc::RENAME_NOREPLACE => Rename::NoReplace,
        libc::RENAME_EXCHANGE => Rename::Exchange,
        f if f & libc::RENAME_WHITEOUT != 0
            && f & !(libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE) == 0 =>
        {
            return Err(unsupported(
                "renameat2",
                "RENAME_WHITEOUT (udax has no special files)",
                libc::EINVAL,
            ));
        }
        _ => return Err(Errno(libc::EINVAL)),
    };
    if a == "/" || b == "/" {
        return Err(Errno(libc::EBUSY));
    }
    fs.rename2(a, b, how)?;
    Ok(0)
}

/// # Safety
/// As rename(2).
#[no_mangle]
pub unsafe extern "C" fn rename(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: the caller's contract, unchanged.
    unsafe { renameat2(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0) }
}

/// # Safety
/// As renameat(2).
#[no_mangle]
pub unsafe extern "C" fn renameat(
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
) -> c_int {
    // SAFETY: the caller's contract, unchanged.
    unsafe { renameat2(fa, a, fb, b, 0) }
}

/// # Safety
/// As renameat2(2).
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
    flags: c_uint,
) -> c_int {
    let host = |a: *const c_char, b: *const c_char| {
        if flags == 0 && fa == libc::AT_FDCWD && fb == libc::AT_FDCWD {
            fwd!(rename(a, b))
        } else {
            fwd!(renameat2(fa, a, fb, b, flags))
        }
    };
    run(
        -1,
        || host(a, b),
        || {
            // SAFETY: renameat2(2)'s contract.
            match unsafe { classify_pair(fa, a, fb, b, "rename") }? {
                Pair::Host(x, y) => Ok(host(
                    x.as_ref().map_or(a, |c| c.as_ptr()),
                    y.as_ref().map_or(b, |c| c.as_ptr()),
                )),
                // A udax rename moves directories: no call may be using a path
                // relative to one, this one's paths included (found again).
                Pair::Udax(..) => crate::state::names::exclusive(|| {
                    // SAFETY: as above.
                    match unsafe { classify_pair(fa, a, fb, b, "rename") }? {
                        Pair::Udax(x, y) => rename_udax(&x, &y, flags),
                        // Moved out of udax meanwhile: the kernel sees two file
                        // systems, or none of ours.
                        Pair::Host(..) => Err(Errno(libc::EXDEV)),
                    }
                }),
            }
        },
    )
}

/// # Safety
/// As link(2).
#[no_mangle]
pub unsafe extern "C" fn link(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: the caller's contract, unchanged.
    unsafe { linkat(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0) }
}

/// # Safety
/// As linkat(2).
#[no_mangle]
pub unsafe extern "C" fn linkat(
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
    flags: c_int,
) -> c_int {
    run(
        -1,
        || fwd!(linkat(fa, a, fb, b, flags)),
        || {
            // SAFETY: linkat(2)'s contract.
            if let Some(d) = unsafe { link_source_desc(fa, a, flags) } {
                return link_desc(&*d?, fb, b);
            }
            // SAFETY: linkat(2)'s contract.
            match unsafe { classify_pair(fa, a, fb, b, "link") }? {
                Pair::Host(x, y) => Ok(fwd!(linkat(
                    fa,
                    x.as_ref().map_or(a, |c| c.as_ptr()),
                    fb,
                    y.as_ref().map_or(b, |c| c.as_ptr()),
                    flags
                ))),
                Pair::Udax(x, y) => {
                    if flags & !(libc::AT_SYMLINK_FOLLOW | libc::AT_EMPTY_PATH) != 0 {
                        return Err(Errno(libc::EINVAL));
                    }
                    mount::fs()?.link(&x, &y)?;
                    Ok(0)
                }
            }
        },
    )
}

/// The udax descriptor `linkat` names as its source, if it names one by
/// descriptor: `AT_EMPTY_PATH` with an empty path, or a followed
/// `/proc/self/fd/N`-style path (how `open(2)` says to name an `O_TMPFILE`
/// file without privileges).
///
/// # Safety
/// `path` is null or a C string.
unsafe fn link_source_desc(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> Option<R<std::sync::Arc<Desc>>> {
    // SAFETY: the caller's contract.
    if let Some(d) = unsafe { empty_path_desc(dirfd, path, flags) } {
        return Some(d);
    }
    if flags & libc::AT_SYMLINK_FOLLOW == 0 {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe { fd_link_desc(path) }
}

/// The udax descriptor `path` is exactly the kernel's link to
/// (`/proc/self/fd/N`, nothing below it), if it is one.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn fd_link_desc(path: *const c_char) -> Option<R<std::sync::Arc<Desc>>> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    let p = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    match path::fd_link(p)? {
        (fd, b"") => crate::dispatch::lookup(fd),
        _ => None,
    }
}

/// linkat of an open udax descriptor `d` to `(fb, b)`.
fn link_desc(d: &Desc, fb: c_int, b: *const c_char) -> R<c_int> {
    if d.is_dir() {
        return Err(Errno(libc::EPERM)); // no hard links to directories
    }
    // SAFETY: linkat(2)'s contract for `b`.
    match unsafe { classify(fb, b) }? {
        Target::Udax(y) => {
            d.file()?.link(&y)?;
            Ok(0)
        }
        // Another file system.
        Target::Host | Target::HostPath(_) => Err(Errno(libc::EXDEV)),
    }
}

fn no_symlinks(call: &str) -> Errno {
    unsupported(call, "udax has no symbolic links", libc::EPERM)
}

/// # Safety
/// As symlink(2).
#[no_mangle]
pub unsafe extern "C" fn symlink(target: *const c_char, path: *const c_char) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, symlink(target, path), |_p| Err(
        no_symlinks("symlink")
    ))
}

/// # Safety
/// As symlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn symlinkat(
    target: *const c_char,
    dirfd: c_int,
    path: *const c_char,
) -> c_int {
    path_call!(-1, dirfd, path, symlinkat(target, dirfd, path), |_p| Err(
        no_symlinks("symlinkat")
    ))
}

/// readlink of a udax path: nothing there is a link (EINVAL), as the kernel
/// says for a file that is not one.
fn readlink_udax(p: &str) -> R<ssize_t> {
    stat_path(p)?;
    Err(Errno(libc::EINVAL))
}

/// readlink of `/proc/self/fd/N` for udax descriptor N: what the kernel's
/// link says, the descriptor's path under the mount (with `" (deleted)"`
/// once the file has no name). A file renamed since it was opened has no
/// path the shim knows: EOPNOTSUPP. `None`: not such a path.
///
/// # Safety
/// `path` is null or a C string; `buf` holds `n` writable bytes.
unsafe fn readlink_fd_link(path: *const c_char, buf: *mut c_char, n: size_t) -> Option<R<ssize_t>> {
    // SAFETY: the caller's contract.
    let d = unsafe { fd_link_desc(path) }?;
    let text = || -> R<String> {
        let d = d?;
        let cfg = path::config().ok_or(Errno(libc::ENODEV))?;
        let p = d.path()?;
        let mut text = cfg.outer(&p);
        if !d.is_dir() && !d.still_named(&p)? {
            if d.stat()?.nlink != 0 {
                return Err(unsupported(
                    "readlink",
                    "/proc/self/fd/N of a udax file renamed since it was opened",
                    libc::EOPNOTSUPP,
                ));
            }
            text.push_str(" (deleted)");
        }
        Ok(text)
    };
    Some(text().and_then(|t| {
        // SAFETY: the caller's contract for `buf`.
        let out = unsafe { crate::dispatch::slice_mut(buf.cast(), n) }?;
        let k = t.len().min(out.len());
        out[..k].copy_from_slice(&t.as_bytes()[..k]);
        Ok(k as ssize_t)
    }))
}

/// # Safety
/// As readlink(2).
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: readlink(2)'s contract.
    unsafe { readlinkat(libc::AT_FDCWD, path, buf, n) }
}

/// # Safety
/// As readlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    n: size_t,
) -> ssize_t {
    run(
        -1,
        || fwd!(readlinkat(dirfd, path, buf, n)),
        || {
            // SAFETY: readlinkat(2)'s contract.
            if let Some(r) = unsafe { readlink_fd_link(path, buf, n) } {
                return r;
            }
            // SAFETY: as above.
            match unsafe { classify(dirfd, path) }? {
                Target::Host => Ok(fwd!(readlinkat(dirfd, path, buf, n))),
                Target::HostPath(c) => Ok(fwd!(readlinkat(dirfd, c.as_ptr(), buf, n))),
                Target::Udax(p) => readlink_udax(&p),
            }
        },
    )
}

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

// ---- permissions, owners, times ----

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
    fd_call!(-1, fd, fchmod(fd, mode), |d| match &d.kind {
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

/// The `(atime, mtime)` a utimensat-style `times` argument asks for (ns since
/// the epoch; `None` = `UTIME_OMIT`; a null pointer or `UTIME_NOW` = now).
/// Times before 1970 cannot be stored (EINVAL).
///
/// # Safety
/// `times` is null or points to two timespecs.
unsafe fn wanted_times(times: *const libc::timespec) -> R<(Option<u64>, Option<u64>)> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    if times.is_null() {
        let t = now();
        return Ok((Some(t), Some(t)));
    }
    // SAFETY: the caller's contract.
    let t = unsafe { std::slice::from_raw_parts(times, 2) };
    let one = |ts: &libc::timespec| -> R<Option<u64>> {
        match ts.tv_nsec {
            libc::UTIME_OMIT => Ok(None),
            libc::UTIME_NOW => Ok(Some(now())),
            n if (0..1_000_000_000).contains(&n) && ts.tv_sec >= 0 => Ok(Some(
                (ts.tv_sec as u64).saturating_mul(1_000_000_000) + n as u64,
            )),
            _ => Err(Errno(libc::EINVAL)),
        }
    };
    Ok((one(&t[0])?, one(&t[1])?))
}

/// `timeval`s (utimes, futimes) as timespecs.
///
/// # Safety
/// `t` is null or points to two timevals.
unsafe fn timevals(t: *const libc::timeval) -> R<Option<[libc::timespec; 2]>> {
    if t.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let v = unsafe { std::slice::from_raw_parts(t, 2) };
    let mut out = [libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }; 2];
    for (o, i) in out.iter_mut().zip(v) {
        if !(0..1_000_000).contains(&i.tv_usec) {
            return Err(Errno(libc::EINVAL));
        }
        o.tv_sec = i.tv_sec;
        o.tv_nsec = i.tv_usec * 1000;
    }
    Ok(Some(out))
}

fn set_times_path(p: &str, times: *const libc::timespec) -> R<c_int> {
    // SAFETY: the interposed call's contract for `times`.
    let (a, m) = unsafe { wanted_times(times) }?;
    crate::state::mount::fs()?.set_times(p, a, m)?;
    Ok(0)
}

fn set_times_fd(d: &crate::state::fds::Desc, times: *const libc::timespec) -> R<c_int> {
    // SAFETY: the interposed call's contract for `times`.
    let (a, m) = unsafe { wanted_times(times) }?;
    match &d.kind {
        // O_PATH descriptors may set times too (by path, as the kernel allows).
        crate::state::fds::Kind::File(f) => f.set_times(a, m)?,
        crate::state::fds::Kind::Dir(_) => {
            crate::state::mount::fs()?.set_times(&d.path()?, a, m)?
        }
    }
    Ok(0)
}

/// # Safety
/// As utimensat(2).
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    run(
        -1,
        || fwd!(utimensat(dirfd, path, times, flags)),
        || {
            if path.is_null() {
                // utimensat(fd, NULL, ...) is futimens(fd).
                return match crate::dispatch::lookup(dirfd) {
                    None => Ok(fwd!(utimensat(dirfd, path, times, flags))),
                    Some(d) => set_times_fd(&*d?, times),
                };
            }
            // SAFETY: utimensat(2)'s contract.
            match unsafe { classify(dirfd, path) }? {
                Target::Host => Ok(fwd!(utimensat(dirfd, path, times, flags))),
                Target::HostPath(c) => Ok(fwd!(utimensat(dirfd, c.as_ptr(), times, flags))),
                Target::Udax(p) => set_times_path(&p, times),
            }
        },
    )
}

/// # Safety
/// As futimens(3).
#[no_mangle]
pub unsafe extern "C" fn futimens(fd: c_int, times: *const libc::timespec) -> c_int {
    fd_call!(-1, fd, futimens(fd, times), |d| set_times_fd(&d, times))
}

/// # Safety
/// As utime(2).
#[no_mangle]
pub unsafe extern "C" fn utime(path: *const c_char, t: *const libc::utimbuf) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, utime(path, t), |p| {
        if t.is_null() {
            return set_times_path(&p, std::ptr::null());
        }
        // SAFETY: utime(2)'s contract: `t` points to a struct utimbuf.
        let u = unsafe { t.read() };
        let ts = [
            libc::timespec {
                tv_sec: u.actime,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: u.modtime,
                tv_nsec: 0,
            },
        ];
        set_times_path(&p, ts.as_ptr())
    })
}

macro_rules! utimes_fn {
    ($name:ident) => {
        /// # Safety
        /// As utimes(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, t: *const libc::timeval) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, t), |p| {
                // SAFETY: utimes(2)'s contract for `t`.
                let ts = unsafe { timevals(t) }?;
                set_times_path(&p, ts.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()))
            })
        }
    };
}
utimes_fn!(utimes);
utimes_fn!(lutimes);

/// # Safety
/// As futimes(3).
#[no_mangle]
pub unsafe extern "C" fn futimes(fd: c_int, t: *const libc::timeval) -> c_int {
    fd_call!(-1, fd, futimes(fd, t), |d| {
        // SAFETY: futimes(3)'s contract for `t`.
        let ts = unsafe { timevals(t) }?;
        set_times_fd(&d, ts.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()))
    })
}

// ---- extended attributes: udax has none ----

fn no_xattr(call: &str) -> Errno {
    // ENOTSUP (= EOPNOTSUPP) is what a file system without xattrs reports;
    // programs (ls, cp, tar) treat it as "no attributes". Not logged: asking
    // is routine.
    let _ = call;
    Errno(libc::EOPNOTSUPP)
}

macro_rules! xattr_path_fn {
    ($name:ident($($a:ident: $t:ty),*) -> $ret:ty) => {
        /// # Safety
        /// As the xattr(7) call of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, $($a: $t),*) -> $ret {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, $($a),*), |p| {
                stat_path(&p)?;
                Err(no_xattr(stringify!($name)))
            })
        }
    };
}
xattr_path_fn!(getxattr(name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t);
xattr_path_fn!(lgetxattr(name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t);
xattr_path_fn!(setxattr(name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int);
xattr_path_fn!(lsetxattr(name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int);
xattr_path_fn!(removexattr(name: *const c_char) -> c_int);
xattr_path_fn!(lremovexattr(name: *const c_char) -> c_int);

macro_rules! listxattr_fn {
    ($name:ident) => {
        /// A udax file has no extended attributes: an empty list.
        ///
        /// # Safety
        /// As listxattr(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            list: *mut c_char,
            n: size_t,
        ) -> ssize_t {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, list, n), |p| {
                stat_path(&p)?;
                Ok(0)
            })
        }
    };
}
listxattr_fn!(listxattr);
listxattr_fn!(llistxattr);

macro_rules! xattr_fd_fn {
    ($name:ident($($a:ident: $t:ty),*) -> $ret:ty) => {
        /// # Safety
        /// As the xattr(7) call of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, $($a: $t),*) -> $ret {
            fd_call!(-1, fd, $name(fd, $($a),*), |_d| Err(no_xattr(stringify!($name))))
        }
    };
}
xattr_fd_fn!(fgetxattr(name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t);
xattr_fd_fn!(fsetxattr(name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int);
xattr_fd_fn!(fremovexattr(name: *const c_char) -> c_int);

/// # Safety
/// As flistxattr(2).
#[no_mangle]
pub unsafe extern "C" fn flistxattr(fd: c_int, list: *mut c_char, n: size_t) -> ssize_t {
    fd_call!(-1, fd, flistxattr(fd, list, n), |_d| Ok(0))
}

// ---- working directory ----

fn chdir_udax(p: &str) -> R<c_int> {
    let dir = mount::fs()?.dir_ref(p)?;
    path::set_cwd(Some((p.to_string(), dir)));
    Ok(0)
}

/// # Safety
/// As chdir(2).
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    run(
        -1,
        || fwd!(chdir(path)),
        || {
            // SAFETY: chdir(2)'s contract.
            let (r, host) = match unsafe { classify(libc::AT_FDCWD, path) }? {
                Target::Udax(p) => return chdir_udax(&p),
                Target::Host => (fwd!(chdir(path)), true),
                Target::HostPath(c) => (fwd!(chdir(c.as_ptr())), true),
            };
            if r == 0 && host {
                path::set_cwd(None);
            }
            Ok(r)
        },
    )
}

/// # Safety
/// As fchdir(2).
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    run(
        -1,
        || fwd!(fchdir(fd)),
        || match crate::dispatch::lookup(fd) {
            Some(d) => {
                let d = d?;
                let crate::state::fds::Kind::Dir(dir) = &d.kind else {
                    return Err(Errno(libc::ENOTDIR));
                };
                path::set_cwd(Some((d.path()?, dir.clone())));
                Ok(0)
            }
            None => {
                let r = fwd!(fchdir(fd));
                if r == 0 {
                    path::set_cwd(None);
                }
                Ok(r)
            }
        },
    )
}

/// # Safety
/// As getcwd(3) (including glibc's allocation when `buf` is null).
#[no_mangle]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    run(
        std::ptr::null_mut(),
        || fwd!(getcwd(buf, size)),
        || {
            let Some(c) = path::cwd() else {
                return Ok(fwd!(getcwd(buf, size)));
            };
            let c = c?;
            let bytes = c.as_bytes();
            if buf.is_null() {
                let n = if size == 0 { bytes.len() + 1 } else { size };
                if n < bytes.len() + 1 {
                    return Err(Errno(libc::ERANGE));
                }
                // SAFETY: malloc of a non-zero size; the caller frees it, as with glibc.
                let p = unsafe { libc::malloc(n) } as *mut c_char;
                if p.is_null() {
                    return Err(Errno(libc::ENOMEM));
                }
                // SAFETY: `p` has n >= len+1 bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), p, bytes.len());
                    *p.add(bytes.len()) = 0;
                }
                return Ok(p);
            }
            if size < bytes.len() + 1 {
                return Err(Errno(if size == 0 {
                    libc::EINVAL
                } else {
                    libc::ERANGE
                }));
            }
            // SAFETY: the caller's buffer holds `size` >= len+1 bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), buf, bytes.len());
                *buf.add(bytes.len()) = 0;
            }
            Ok(buf)
        },
    )
}

fn realpath_udax(p: &str, resolved: *mut c_char) -> R<*mut c_char> {
    stat_path(p)?;
    let cfg = path::config().ok_or(Errno(libc::ENODEV))?;
    let full = cfg.outer(path::canonical(p));
    let b = full.as_bytes();
    if b.len() + 1 > libc::PATH_MAX as usize {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let out = if resolved.is_null() {
        // SAFETY: malloc of a non-zero size; the caller frees it (realpath(3)).
        let p = unsafe { libc::malloc(b.len() + 1) } as *mut c_char;
        if p.is_null() {
            return Err(Errno(libc::ENOMEM));
        }
        p
    } else {
        resolved
    };
    // SAFETY: `out` has PATH_MAX bytes (caller's) or len+1 (ours).
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr().cast(), out, b.len());
        *out.add(b.len()) = 0;
    }
    Ok(out)
}

/// # Safety
/// As realpath(3).
#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    path_call!(
        std::ptr::null_mut(),
        libc::AT_FDCWD,
        path,
        realpath(path, resolved),
        |p| { realpath_udax(&p, resolved) }
    )
}

/// # Safety
/// As canonicalize_file_name(3).
#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    path_call!(
        std::ptr::null_mut(),
        libc::AT_FDCWD,
        path,
        canonicalize_file_name(path),
        |p| { realpath_udax(&p, std::ptr::null_mut()) }
    )
}
