//! The dispatch layer, between `state` and `calls`: the two shapes of an
//! interposed call (by descriptor, `fd_call!`; by path, `path_call!`; two
//! paths, `classify_pair`) and the helpers for C arguments (buffers,
//! offsets, descriptors).

use crate::boundary::entry::{unsupported, Errno, R};
pub use crate::state::inherit::lookup;

/// A call on a descriptor: forward it, or run `$body` with `$d: Arc<Desc>`.
macro_rules! fd_call {
    ($fail:expr, $fd:expr, $name:ident($($a:expr),* $(,)?), |$d:ident| $body:expr) => {
        $crate::boundary::entry::run(
            $fail,
            || $crate::boundary::entry::fwd!($name($($a),*)),
            || match $crate::dispatch::lookup($fd) {
                None => Ok($crate::boundary::entry::fwd!($name($($a),*))),
                Some(d) => {
                    let $d = d?;
                    $body
                }
            },
        )
    };
}
pub(crate) use fd_call;

/// A call on a path (relative to `$dirfd`): forward it (with the path made
/// absolute if the shim resolved it), or run `$body` with `$p: String`, the
/// path inside udax.
///
/// `path_call!(exclusive(cond), ...)`: a call that may remove a directory
/// (rmdir, when `cond`): a udax one runs holding the namespace lock
/// exclusively (`names`), its path found again under it.
macro_rules! path_call {
    (exclusive($x:expr), $fail:expr, $dirfd:expr, $path:ident, $name:ident($($a:expr),* $(,)?), |$p:ident| $body:expr) => {
        $crate::boundary::entry::run(
            $fail,
            || $crate::boundary::entry::fwd!($name($($a),*)),
            || match $crate::dispatch::path_call!(@classify $dirfd, $path) {
                $crate::state::path::Target::Udax(_) if $x => $crate::state::names::exclusive(|| {
                    $crate::dispatch::path_call!(@on $crate::dispatch::path_call!(@classify $dirfd, $path), $path, $name($($a),*), |$p| $body)
                }),
                t => $crate::dispatch::path_call!(@on t, $path, $name($($a),*), |$p| $body),
            },
        )
    };
    ($fail:expr, $dirfd:expr, $path:ident, $name:ident($($a:expr),* $(,)?), |$p:ident| $body:expr) => {
        $crate::boundary::entry::run(
            $fail,
            || $crate::boundary::entry::fwd!($name($($a),*)),
            || $crate::dispatch::path_call!(@on $crate::dispatch::path_call!(@classify $dirfd, $path), $path, $name($($a),*), |$p| $body),
        )
    };
    (@classify $dirfd:expr, $path:ident) => {
        // SAFETY: `$path` is the caller's path argument: null or a C string.
        unsafe { $crate::state::path::classify($dirfd, $path) }?
    };
    // A udax path that leaves the file system through a symbolic link goes
    // on where the link leads (`state::path::escaped`): on the host, or in
    // udax again.
    (@on $target:expr, $path:ident, $name:ident($($a:expr),* $(,)?), |$p:ident| $body:expr) => {{
        let mut target = $target;
        let mut hops = 0u32;
        loop {
            match target {
                $crate::state::path::Target::Host => {
                    break Ok($crate::boundary::entry::fwd!($name($($a),*)))
                }
                $crate::state::path::Target::HostPath(c) => {
                    #[allow(unused_variables)]
                    let $path = c.as_ptr();
                    break Ok($crate::boundary::entry::fwd!($name($($a),*)));
                }
                // The body in a closure of its own: its `?` and `return`
                // end it, not the loop.
                #[allow(clippy::redundant_closure_call)]
                $crate::state::path::Target::Udax($p) => match (|| $body)() {
                    Err(e) if e == $crate::boundary::entry::ESCAPED => {
                        target = $crate::state::path::escaped(&mut hops)?;
                    }
                    r => break r,
                },
            }
        }
    }};
}
pub(crate) use path_call;

/// Two paths (rename, link): both on the host, both in udax, or EXDEV.
pub enum Pair {
    Host(Option<std::ffi::CString>, Option<std::ffi::CString>),
    Udax(String, String),
}

/// # Safety
/// `a` and `b` are null or C strings.
pub unsafe fn classify_pair(
    fa: libc::c_int,
    a: *const libc::c_char,
    fb: libc::c_int,
    b: *const libc::c_char,
    call: &str,
) -> R<Pair> {
    use crate::state::path::{classify, Target};
    // SAFETY: the caller's contract.
    let (ta, tb) = unsafe { (classify(fa, a)?, classify(fb, b)?) };
    let (ua, ub) = (matches!(ta, Target::Udax(_)), matches!(tb, Target::Udax(_)));
    if ua && ub {
        let (Target::Udax(x), Target::Udax(y)) = (ta, tb) else {
            unreachable!("both checked above")
        };
        return Ok(Pair::Udax(x, y));
    }
    if (ua || ub) && (a.is_null() || b.is_null()) {
        return Err(Errno(libc::EFAULT)); // the kernel reads both names first
    }
    if ua || ub {
        // The kernel resolves both paths first: a relative host path under a
        // descriptor that is not open is EBADF, not EXDEV.
        let (hf, hp) = if ua { (fb, b) } else { (fa, a) };
        // SAFETY: `hp` is null or a C string (the caller's contract).
        let relative = !hp.is_null() && unsafe { *hp } != b'/' as libc::c_char;
        // SAFETY: F_GETFD takes no argument and only reads the fd table.
        if relative && hf != libc::AT_FDCWD && unsafe { libc::fcntl(hf, libc::F_GETFD) } < 0 {
            return Err(Errno(libc::EBADF));
        }
        let show = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: the caller's contract: a C string.
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        return Err(unsupported(
            call,
            &format!(
                "{:?} and {:?}: one is in udax and the other is not (across the mount boundary)",
                show(a),
                show(b)
            ),
            libc::EXDEV,
        ));
    }
    let h = |t| match t {
        Target::HostPath(c) => Some(c),
        _ => None,
    };
    Ok(Pair::Host(h(ta), h(tb)))
}

/// A C buffer as a byte slice (empty for a null pointer with length 0).
///
/// # Safety
/// `p` points to `n` readable bytes (the caller's buffer contract for the C call).
pub unsafe fn slice<'a>(p: *const libc::c_void, n: usize) -> R<&'a [u8]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast(), n) })
}

/// # Safety
/// `p` points to `n` writable bytes.
pub unsafe fn slice_mut<'a>(p: *mut libc::c_void, n: usize) -> R<&'a mut [u8]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), n) })
}

/// Linux caps one read/write at this many bytes (MAX_RW_COUNT).
pub const MAX_RW: usize = 0x7fff_f000;

/// A file offset argument: EINVAL if negative.
pub fn offset(o: libc::off64_t) -> R<u64> {
    u64::try_from(o).map_err(|_| Errno(libc::EINVAL))
}

/// The description of `fd` (for other modules).
pub fn desc(fd: libc::c_int) -> R<std::sync::Arc<crate::state::fds::Desc>> {
    crate::dispatch::lookup(fd).unwrap_or(Err(Errno(libc::EBADF)))
}
