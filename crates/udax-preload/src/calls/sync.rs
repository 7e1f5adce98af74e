//! fsync, fdatasync, syncfs, sync_file_range, sync.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::dispatch::fd_call;
use crate::state::fds::{Desc, Kind};
use crate::state::mount;
use libc::{c_int, c_uint, off64_t};

fn sync_desc(d: &Desc, data_only: bool) -> R<c_int> {
    match &*d.kind {
        Kind::Dir(_) => mount::fs()?.sync()?,
        Kind::File(f) if data_only => f.sync_data()?,
        Kind::File(f) => f.fsync()?,
        Kind::Node { .. } => return Err(crate::boundary::entry::Errno(libc::EBADF)),
    }
    Ok(0)
}

/// # Safety
/// As fsync(2).
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    fd_call!(-1, fd, fsync(fd), |d| sync_desc(&d, false))
}

/// # Safety
/// As fdatasync(2).
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    fd_call!(-1, fd, fdatasync(fd), |d| sync_desc(&d, true))
}

/// # Safety
/// As syncfs(2).
#[no_mangle]
pub unsafe extern "C" fn syncfs(fd: c_int) -> c_int {
    fd_call!(-1, fd, syncfs(fd), |_d| {
        mount::fs()?.sync()?;
        Ok(0)
    })
}

/// # Safety
/// As sync_file_range(2).
#[no_mangle]
pub unsafe extern "C" fn sync_file_range(
    fd: c_int,
    off: off64_t,
    n: off64_t,
    flags: c_uint,
) -> c_int {
    fd_call!(-1, fd, sync_file_range(fd, off, n, flags), |d| {
        let known = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        if off < 0 || n < 0 || flags & !known != 0 {
            return Err(Errno(libc::EINVAL));
        }
        sync_desc(&d, true)
    })
}

/// # Safety
/// As sync(2).
#[no_mangle]
pub unsafe extern "C" fn sync() {
    run(
        (),
        || fwd!(sync()),
        || {
            fwd!(sync());
            if let Ok(fs) = mount::fs() {
                if let Err(e) = fs.sync() {
                    tracing::warn!("udax-preload: sync: {e}");
                }
            }
            Ok(())
        },
    )
}
