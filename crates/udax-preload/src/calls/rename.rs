//! rename, renameat, renameat2 (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`),
//! under the namespace lock held exclusively.

use crate::boundary::entry::{fwd, run, unsupported, Errno, R};
use crate::dispatch::{classify_pair, Pair};
use crate::state::mount;
use libc::{c_char, c_int, c_uint};
use udax::fs::Rename;

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
