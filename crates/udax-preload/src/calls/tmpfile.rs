//! mkstemp and friends: glibc creates the file with its internal open (and
//! mkdtemp with its internal mkdir), out of the shim's reach, so templates
//! under the mount are served here: the trailing "XXXXXX" (before an optional
//! suffix) is replaced by random letters until an exclusive create succeeds,
//! as glibc's __gen_tempname does.

use crate::boundary::entry::{fwd, run, Errno, R};
use crate::state::path::{classify, Target};
use libc::{c_char, c_int};
use std::ffi::CStr;

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// glibc tries 62^3 names before it gives up with EEXIST.
const ATTEMPTS: u32 = 62 * 62 * 62;

/// Fill the six X before `suffix` bytes of `template` and call `make` with the
/// udax path, until it does not fail with EEXIST.
///
/// # Safety
/// `template` is a writable C string.
unsafe fn gen(template: *mut c_char, suffix: c_int, make: impl Fn(&str) -> R<c_int>) -> R<c_int> {
    // SAFETY: the caller's contract.
    let bytes = unsafe { CStr::from_ptr(template) }.to_bytes();
    let suffix = usize::try_from(suffix).map_err(|_| Errno(libc::EINVAL))?;
    let len = bytes.len();
    if len < 6 + suffix || &bytes[len - 6 - suffix..len - suffix] != b"XXXXXX" {
        return Err(Errno(libc::EINVAL));
    }
    let at = len - 6 - suffix;
    let mut rng = fastrand::Rng::new();
    for _ in 0..ATTEMPTS {
        for i in 0..6 {
            let c = LETTERS[rng.usize(..LETTERS.len())];
            // SAFETY: `at + i < len`: inside the caller's writable string.
            unsafe { *template.add(at + i) = c as c_char };
        }
        // SAFETY: still a C string: only the X were replaced, by letters.
        let Target::Udax(p) = (unsafe { classify(libc::AT_FDCWD, template) })? else {
            return Err(Errno(libc::EINVAL)); // the template left udax: cannot happen with letters
        };
        match make(&p) {
            Err(Errno(libc::EEXIST)) => continue,
            r => return r,
        }
    }
    Err(Errno(libc::EEXIST))
}

fn create(p: &str, flags: c_int) -> R<c_int> {
    let extra =
        flags & (libc::O_APPEND | libc::O_CLOEXEC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME);
    if flags & !extra != 0 {
        return Err(Errno(libc::EINVAL));
    }
    crate::calls::open::open_udax(
        p,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | extra,
        0o600,
    )
}

macro_rules! mkostemps_fn {
    ($name:ident, $($arg:ident: $t:ty),* => $suffix:expr, $flags:expr) => {
        /// # Safety
        /// As mkstemp(3): `template` is a writable C string.
        #[no_mangle]
        pub unsafe extern "C" fn $name(template: *mut c_char $(, $arg: $t)*) -> c_int {
            run(
                -1,
                || fwd!($name(template $(, $arg)*)),
                || {
                    // SAFETY: the caller's contract for `template`.
                    match unsafe { classify(libc::AT_FDCWD, template) }? {
                        Target::Udax(_) => {
                            // SAFETY: as above.
                            unsafe { gen(template, $suffix, |p| create(p, $flags)) }
                        }
                        _ => Ok(fwd!($name(template $(, $arg)*))),
                    }
                },
            )
        }
    };
}
mkostemps_fn!(mkstemp, => 0, 0);
mkostemps_fn!(mkstemp64, => 0, 0);
mkostemps_fn!(mkostemp, flags: c_int => 0, flags);
mkostemps_fn!(mkostemp64, flags: c_int => 0, flags);
mkostemps_fn!(mkstemps, suffix: c_int => suffix, 0);
mkostemps_fn!(mkstemps64, suffix: c_int => suffix, 0);
mkostemps_fn!(mkostemps, suffix: c_int, flags: c_int => suffix, flags);
mkostemps_fn!(mkostemps64, suffix: c_int, flags: c_int => suffix, flags);

/// # Safety
/// As mkdtemp(3): `template` is a writable C string.
#[no_mangle]
pub unsafe extern "C" fn mkdtemp(template: *mut c_char) -> *mut c_char {
    run(
        std::ptr::null_mut(),
        || fwd!(mkdtemp(template)),
        || {
            // SAFETY: the caller's contract for `template`.
            match unsafe { classify(libc::AT_FDCWD, template) }? {
                Target::Udax(_) => {
                    // SAFETY: as above.
                    unsafe {
                        gen(template, 0, |p| {
                            crate::state::mount::fs()?.mkdir(p, 0o700)?;
                            Ok(0)
                        })
                    }?;
                    Ok(template)
                }
                _ => Ok(fwd!(mkdtemp(template))),
            }
        },
    )
}
