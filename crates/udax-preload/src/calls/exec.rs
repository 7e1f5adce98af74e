//! The exec family and posix_spawn: the new program inherits the udax
//! descriptors without `FD_CLOEXEC` and the virtual working directory
//! (`state::inherit`), through `UDAX_INHERIT` added to the environment it
//! is given. `execl`, `execlp` and `execle` are variadic (not definable in
//! stable Rust): those programs start with the kernel's working directory
//! and no udax descriptors (docs/preload.md). `system` and `popen` run
//! their shell through this `posix_spawn` (`calls::shell`).

use crate::boundary::entry::{fwd, run};
use crate::state::inherit::{self, Handover};
use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};
use std::ffi::{CStr, CString};

extern "C" {
    static environ: *const *const c_char;
}

/// `envp` with `UDAX_INHERIT` replaced by the handover's record: the
/// strings (kept alive) and the NULL-terminated pointer array.
struct Env {
    _own: CString,
    ptrs: Vec<*const c_char>,
}

/// # Safety
/// `envp` is null or a NULL-terminated array of C strings (exec's contract).
unsafe fn with_record(envp: *const *const c_char, h: &Handover) -> Option<Env> {
    let own = CString::new(format!("{}={}", inherit::VAR, h.record)).ok()?;
    let mut ptrs = Vec::new();
    let prefix = format!("{}=", inherit::VAR);
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: the caller's contract: entries up to the NULL are readable.
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each entry is a C string.
            if !unsafe { CStr::from_ptr(p) }
                .to_bytes()
                .starts_with(prefix.as_bytes())
            {
                ptrs.push(p);
            }
            i += 1;
        }
    }
    ptrs.push(own.as_ptr());
    ptrs.push(std::ptr::null());
    Some(Env { _own: own, ptrs })
}

/// Run `exec(envp')` with the handover added to `envp` (or `envp` as it is
/// when there is nothing to hand over); undo the handover if it returns.
///
/// # Safety
/// `envp` as in [`with_record`]; `exec` is the real call with the caller's
/// other arguments.
unsafe fn handing_over(
    envp: *const *const c_char,
    exec: impl FnOnce(*const *const c_char) -> c_int,
) -> c_int {
    let h = run(None, || None, || Ok(inherit::before_exec()));
    let Some(h) = h else {
        return exec(envp);
    };
    // SAFETY: the caller's contract on `envp`.
    let Some(env) = (unsafe { with_record(envp, &h) }) else {
        h.undo();
        return exec(envp);
    };
    let r = exec(env.ptrs.as_ptr());
    let e = crate::boundary::entry::errno();
    run(
        (),
        || (),
        || {
            h.undo();
            Ok(())
        },
    );
    crate::boundary::entry::set_errno(e);
    r
}

/// vfork(2) as fork(2), which POSIX allows: a vfork child runs on its
/// parent's memory without the `pthread_atfork` handlers, so it could not
/// be handed the parent's udax descriptors for the program it execs (dash
/// runs every command this way). The cost is fork's copy of the page
/// tables, under the shim only.
///
/// # Safety
/// As vfork(2); the child may do more than vfork allows (it is a fork).
#[no_mangle]
pub unsafe extern "C" fn vfork() -> pid_t {
    fwd!(fork())
}

/// # Safety
/// As vfork(2).
#[no_mangle]
pub unsafe extern "C" fn __vfork() -> pid_t {
    fwd!(fork())
}

/// # Safety
/// As execve(2).
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let exec = |env| fwd!(execve(path, argv, env));
    // SAFETY: execve's contract.
    unsafe { handing_over(envp, exec) }
}

/// # Safety
/// As execv(3).
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    let exec = |env| fwd!(execve(path, argv, env));
    // SAFETY: `environ` is the process's environment, as execv uses it.
    unsafe { handing_over(environ, exec) }
}

/// # Safety
/// As execvp(3).
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let exec = |env| fwd!(execvpe(file, argv, env));
    // SAFETY: as in `execv`.
    unsafe { handing_over(environ, exec) }
}

/// # Safety
/// As execvpe(3).
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let exec = |env| fwd!(execvpe(file, argv, env));
    // SAFETY: execvpe's contract.
    unsafe { handing_over(envp, exec) }
}

/// # Safety
/// As fexecve(3).
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // A udax file cannot be executed by the kernel (it is not on the host).
    if crate::state::fds::is_udax(fd) {
        crate::boundary::entry::set_errno(libc::EACCES);
        return -1;
    }
    let exec = |env| fwd!(fexecve(fd, argv, env));
    // SAFETY: fexecve's contract.
    unsafe { handing_over(envp, exec) }
}

/// # Safety
/// As posix_spawn(3).
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let spawn =
        |env: *const *const c_char| fwd!(posix_spawn(pid, path, fa, attr, argv, env.cast()));
    // SAFETY: posix_spawn's contract; it returns an error number and may
    // leave errno alone, which `handing_over` restores anyway.
    unsafe { handing_over(envp.cast(), spawn) }
}

/// # Safety
/// As posix_spawnp(3).
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    fa: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let spawn =
        |env: *const *const c_char| fwd!(posix_spawnp(pid, file, fa, attr, argv, env.cast()));
    // SAFETY: as in `posix_spawn`.
    unsafe { handing_over(envp.cast(), spawn) }
}
