//! mknod, mknodat, mkfifo, mkfifoat: regular files, FIFOs, sockets and
//! device nodes (`Vfs::mknod`; a device node needs root, as `CAP_MKNOD`).
//! Opening a udax FIFO is `open`'s (a host pipe, `calls::open`).

use crate::boundary::entry::{Errno, R};
use crate::dispatch::path_call;
use crate::state::mount;
use libc::{c_char, c_int, mode_t};

/// The host twin of udax special file `st` (a FIFO's pipe, a socket's
/// address): `<runtime dir>/<kind>/<uuid prefix>-<ino>-<birth ns, hex>`,
/// its directory made on first use. The inode number with its birth time
/// names it, so a new node that reuses the number gets another twin; short
/// enough for a socket address (108 bytes) under the usual runtime
/// directories.
pub fn host_twin(kind: &str, st: &udax::fs::Stat) -> R<std::ffi::CString> {
    let cfg = crate::state::path::config().ok_or(Errno(libc::ENODEV))?;
    let uuid = udax::client::uuid_of(std::path::Path::new(&cfg.device))?;
    let dir = udax::owner::runtime_dir().join(kind);
    std::fs::create_dir_all(&dir).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let name = format!(
        "{}-{}-{:x}",
        &uuid[..8.min(uuid.len())],
        st.ino,
        st.btime_ns
    );
    std::ffi::CString::new(dir.join(name).as_os_str().as_encoded_bytes())
        .map_err(|_| Errno(libc::EINVAL))
}

/// mknod of udax path `p`: the permission bits under the process's umask,
/// as the kernel's.
fn mknod_udax(p: &str, mode: mode_t, dev: libc::dev_t) -> R<c_int> {
    let mask = crate::calls::umask::umask_of_process();
    let kind = mode & libc::S_IFMT;
    mount::fs()?.mknod(p, kind | (mode & 0o7777 & !mask), dev)?;
    Ok(0)
}

/// # Safety
/// As mknod(2).
#[no_mangle]
pub unsafe extern "C" fn mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mknod(path, mode, dev), |p| {
        mknod_udax(&p, mode, dev)
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
    path_call!(-1, dirfd, path, mknodat(dirfd, path, mode, dev), |p| {
        mknod_udax(&p, mode, dev)
    })
}

/// # Safety
/// As mkfifo(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifo(path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, libc::AT_FDCWD, path, mkfifo(path, mode), |p| {
        mknod_udax(&p, libc::S_IFIFO | (mode & 0o7777), 0)
    })
}

/// # Safety
/// As mkfifoat(3).
#[no_mangle]
pub unsafe extern "C" fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    path_call!(-1, dirfd, path, mkfifoat(dirfd, path, mode), |p| {
        mknod_udax(&p, libc::S_IFIFO | (mode & 0o7777), 0)
    })
}
