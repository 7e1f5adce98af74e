//! bind, connect: a `AF_UNIX` socket address under the mount prefix. The
//! socket file is a udax socket inode (`Vfs::mknod`, as the kernel makes
//! one at `bind`); the socket itself is bound to the inode's host twin
//! (`mknod::host_twin`), where `connect` of the udax path reaches it, from
//! any process. Abstract addresses and host paths go to libc unchanged.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::calls::mknod::host_twin;
use crate::state::mount;
use crate::state::path::{classify, Target};
use libc::{c_int, sockaddr, sockaddr_un, socklen_t};
use std::ffi::CString;

/// The path of a `AF_UNIX` address, if it has one (not abstract, not
/// unnamed), as a C string.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
unsafe fn unix_path(addr: *const sockaddr, len: socklen_t) -> Option<CString> {
    let base = std::mem::offset_of!(sockaddr_un, sun_path);
    if addr.is_null() || (len as usize) <= base {
        return None;
    }
    // SAFETY: the caller's contract: `len` bytes, more than the family field.
    if unsafe { (*addr).sa_family } != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let n = (len as usize - base).min(std::mem::size_of::<sockaddr_un>() - base);
    // SAFETY: the caller's contract: `n` bytes of `sun_path` are readable.
    let path = unsafe { std::slice::from_raw_parts(addr.cast::<u8>().add(base), n) };
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    if end == 0 {
        return None; // abstract or unnamed
    }
    CString::new(&path[..end]).ok()
}

/// A `sockaddr_un` for host path `p`.
fn host_addr(p: &CString) -> R<(sockaddr_un, socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut a: sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = p.as_bytes_with_nul();
    if b.len() > a.sun_path.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::offset_of!(sockaddr_un, sun_path) + b.len();
    Ok((a, len as socklen_t))
}

/// bind of socket `fd` to udax path `p`: the socket inode first (EADDRINUSE
/// if the name is taken, as the kernel), then the host twin; the inode goes
/// again if the bind fails.
fn bind_udax(fd: c_int, p: &str) -> R<c_int> {
    let fs = mount::fs()?;
    let mask = crate::calls::umask::umask_of_process();
    match fs.mknod(p, libc::S_IFSOCK | (0o777 & !mask), 0) {
        Err(udax::Error::Exists) => return Err(Errno(libc::EADDRINUSE)),
        r => r?,
    }
    let bound = (|| {
        let twin = host_twin("sock", &fs.stat(p)?)?;
        // A twin left by a crash of an earlier owner of the number and birth.
        // SAFETY: `twin` is a NUL-terminated path.
        unsafe { libc::unlink(twin.as_ptr()) };
        let (a, len) = host_addr(&twin)?;
        // `a` is a valid sockaddr_un of `len` bytes.
        let r = fwd!(bind(fd, (&a as *const sockaddr_un).cast(), len));
        if r < 0 {
            return Err(Errno(crate::boundary::entry::errno()));
        }
        Ok(r)
    })();
    if bound.is_err() {
        let _ = fs.unlink(p);
    }
    bound
}

/// connect of socket `fd` to the socket at udax path `p`: its host twin.
fn connect_udax(fd: c_int, p: &str) -> R<c_int> {
    let st = mount::fs()?.stat(p)?;
    if st.mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Errno(libc::ECONNREFUSED));
    }
    crate::calls::access::access_udax(p, libc::W_OK, true)?;
    let (a, len) = host_addr(&host_twin("sock", &st)?)?;
    // `a` is a valid sockaddr_un of `len` bytes.
    Ok(fwd!(connect(fd, (&a as *const sockaddr_un).cast(), len)))
}

/// `bind` or `connect` of `fd` to `addr`: a udax path through `udax`, all
/// else as given.
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
unsafe fn on_address(
    addr: *const sockaddr,
    len: socklen_t,
    host: impl FnOnce(*const sockaddr, socklen_t) -> c_int,
    udax: impl FnOnce(&str) -> R<c_int>,
) -> R<c_int> {
    // SAFETY: the caller's contract.
    let Some(path) = (unsafe { unix_path(addr, len) }) else {
        return Ok(host(addr, len));
    };
    // SAFETY: `path` is a NUL-terminated string.
    match unsafe { classify(libc::AT_FDCWD, path.as_ptr()) }? {
        Target::Udax(p) => udax(&p),
        Target::Host => Ok(host(addr, len)),
        // Relative to a udax working directory, but on the host.
        Target::HostPath(c) => {
            let (a, l) = host_addr(&c)?;
            Ok(host((&a as *const sockaddr_un).cast(), l))
        }
    }
}

/// # Safety
/// As bind(2).
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    run(
        -1,
        || fwd!(bind(fd, addr, len)),
        || {
            let host = |a, l| fwd!(bind(fd, a, l));
            // SAFETY: bind(2)'s contract.
            unsafe { on_address(addr, len, host, |p| bind_udax(fd, p)) }
        },
    )
}

/// # Safety
/// As connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    run(
        -1,
        || fwd!(connect(fd, addr, len)),
        || {
            let host = |a, l| fwd!(connect(fd, a, l));
            // SAFETY: connect(2)'s contract.
            unsafe { on_address(addr, len, host, |p| connect_udax(fd, p)) }
        },
    )
}
