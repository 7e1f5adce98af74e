//! statfs, fstatfs, statvfs, fstatvfs: udax's totals, `f_type` "udax".

use crate::boundary::entry::{Errno, R};
use crate::calls::stat::{dev, stat_path};
use crate::dispatch::{fd_call, path_call};
use crate::state::mount;
use libc::{c_char, c_int};

/// `f_type` of statfs: "udax".
const FS_MAGIC: i64 = 0x7564_6178;

fn fill_statfs(out: *mut libc::statfs64) -> R<()> {
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let s = mount::fs()?.statfs()?;
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
    let s = mount::fs()?.statfs()?;
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
                stat_path(&p, true)?;
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
