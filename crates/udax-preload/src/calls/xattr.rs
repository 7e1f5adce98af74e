//! Extended attributes: udax has none (ENOTSUP, empty lists).

use crate::boundary::entry::Errno;
use crate::calls::stat::stat_path;
use crate::dispatch::{fd_call, path_call};
use libc::{c_char, c_int, c_void, size_t, ssize_t};

fn no_xattr(call: &str) -> Errno {
    // ENOTSUP (= EOPNOTSUPP) is what a file system without xattrs reports;
    // programs (ls, cp, tar) treat it as "no attributes". Not logged: asking
    // is routine.
    let _ = call;
    Errno(libc::EOPNOTSUPP)
}

macro_rules! xattr_path_fn {
    ($name:ident($($a:ident: $t:ty),*) -> $ret:ty, $follow:expr) => {
        /// # Safety
        /// As the xattr(7) call of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, $($a: $t),*) -> $ret {
            path_call!(-1, libc::AT_FDCWD, path, $name(path, $($a),*), |p| {
                stat_path(&p, $follow)?;
                Err(no_xattr(stringify!($name)))
            })
        }
    };
}
xattr_path_fn!(getxattr(name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t, true);
xattr_path_fn!(lgetxattr(name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t, false);
xattr_path_fn!(setxattr(name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int, true);
xattr_path_fn!(lsetxattr(name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int, false);
xattr_path_fn!(removexattr(name: *const c_char) -> c_int, true);
xattr_path_fn!(lremovexattr(name: *const c_char) -> c_int, false);

macro_rules! listxattr_fn {
    ($name:ident, $follow:expr) => {
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
                stat_path(&p, $follow)?;
                Ok(0)
            })
        }
    };
}
listxattr_fn!(listxattr, true);
listxattr_fn!(llistxattr, false);

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
