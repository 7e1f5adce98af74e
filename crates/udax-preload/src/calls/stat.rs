//! The stat family: stat, lstat, fstat, fstatat, statx and old glibc's
//! `__xstat` entries; `st_dev` major 2010, `STATX_ATTR_DAX` on files.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::{fd_call, path_call};
use crate::state::fds::Desc;
use crate::state::mount;
use libc::{c_char, c_int, c_uint};
use udax::fs::Stat;

/// `st_dev` of every udax file: major 2010 (unassigned), minor 0.
pub const DEV_MAJOR: u32 = 2010;

pub fn dev() -> u64 {
    libc::makedev(DEV_MAJOR, 0)
}

pub fn ts(ns: u64) -> (i64, i64) {
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
    st.st_rdev = s.rdev;
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
    x.stx_rdev_major = libc::major(s.rdev);
    x.stx_rdev_minor = libc::minor(s.rdev);
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

/// `stat` (`follow`) or `lstat` of a udax path.
pub fn stat_path(p: &str, follow: bool) -> R<Stat> {
    let fs = mount::fs()?;
    Ok(if follow { fs.stat(p) } else { fs.lstat(p) }?)
}

/// `AT_SYMLINK_NOFOLLOW` is not in `flags`.
fn follows(flags: c_int) -> bool {
    flags & libc::AT_SYMLINK_NOFOLLOW == 0
}

/// The AT_EMPTY_PATH case: `path` is "" and `dirfd` a udax descriptor.
///
/// # Safety
/// `path` is null or a C string.
pub unsafe fn empty_path_desc(
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
    ($name:ident, $follow:expr) => {
        /// # Safety
        /// As stat(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, out: *mut libc::stat64) -> c_int {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, out), |p| {
                fill_stat(&stat_path(&p, $follow)?, out).map(|_| 0)
            })
        }
    };
}
stat_fn!(stat, true);
stat_fn!(stat64, true);
stat_fn!(lstat, false);
stat_fn!(lstat64, false);

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
                    path_call!(@on path_call!(@classify dirfd, path), path, $name(dirfd, path, out, flags), |p| {
                        fill_stat(&stat_path(&p, follows(flags))?, out).map(|_| 0)
                    })
                },
            )
        }
    };
}
fstatat_fn!(fstatat);
fstatat_fn!(fstatat64);
// `newfstatat` is the system call's name; glibc exports it as fstatat.

macro_rules! xstat_fn {
    ($name:ident, $follow:expr) => {
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
                fill_stat(&stat_path(&p, $follow)?, out).map(|_| 0)
            })
        }
    };
}
xstat_fn!(__xstat, true);
xstat_fn!(__xstat64, true);
xstat_fn!(__lxstat, false);
xstat_fn!(__lxstat64, false);

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
                fill_stat(&stat_path(&p, follows(flags))?, out).map(|_| 0)
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
            path_call!(@on path_call!(@classify dirfd, path), path, statx(dirfd, path, flags, mask, out), |p| {
                fill_statx(&stat_path(&p, follows(flags))?, out).map(|_| 0)
            })
        },
    )
}
