//! The exec family and posix_spawn: the new program inherits the udax
//! descriptors without `FD_CLOEXEC` and the virtual working directory
//! (`state::inherit`), through `UDAX_INHERIT` added to the environment it
//! is given. `execl`, `execlp` and `execle` are C-variadic, which stable
//! Rust cannot define: on x86-64 a naked entry turns their arguments into
//! an argv array and goes on as `execv`, `execvp` and `execve` (`variadic`
//! below); elsewhere they are not interposed (docs/preload.md). `system` and
//! `popen` run their shell through this `posix_spawn` (`calls::shell`).

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

/// `execl`, `execlp` and `execle` on x86-64. Their variadic arguments arrive
/// as any call's do (System V ABI): after `path` in rdi, the next five in
/// rsi, rdx, rcx, r8, r9, the rest on the stack right above the return
/// address. The entry takes the return address off the stack, pushes the
/// five registers in reverse order, so that they lie right below the stack
/// arguments, and passes that contiguous array (NULL-terminated by the
/// caller, as execl requires; `execle`'s `envp` follows the NULL) to the
/// `execv` family; then it restores the stack and returns what they return
/// (only on failure). No copy, no allocation before the real exec path.
#[cfg(target_arch = "x86_64")]
mod variadic {
    use libc::{c_char, c_int};

    /// The array from the entry: `args[..]` up to its NULL, then (execle) envp.
    unsafe extern "C" fn execl_array(path: *const c_char, args: *const *const c_char) -> c_int {
        // SAFETY: `args` is the caller's NULL-terminated argument list (execl's contract).
        unsafe { super::execv(path, args) }
    }

    unsafe extern "C" fn execlp_array(file: *const c_char, args: *const *const c_char) -> c_int {
        // SAFETY: as in `execl_array`.
        unsafe { super::execvp(file, args) }
    }

    unsafe extern "C" fn execle_array(path: *const c_char, args: *const *const c_char) -> c_int {
        // SAFETY: the list is NULL-terminated and `envp` follows its NULL
        // (execle's contract), so every read is inside the caller's arguments.
        unsafe {
            let mut i = 0;
            while !(*args.add(i)).is_null() {
                i += 1;
            }
            let envp = *args.add(i + 1) as *const *const c_char;
            super::execve(path, args, envp)
        }
    }

    /// The shared entry sequence: `$imp` gets (rdi = path, rsi = the array).
    /// Stack alignment: 8 mod 16 at entry; 0 after the pop; 8 after the
    /// five pushes; 0 after saving rbx, as a call needs. rbx (callee-saved,
    /// restored) keeps the return address across the call; the return goes
    /// to the same address the caller pushed (a shadow stack agrees).
    macro_rules! entry {
        ($name:ident, $imp:ident) => {
            /// # Safety
            /// As the libc function of this name (a NULL-terminated list).
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn $name() -> c_int {
                core::arch::naked_asm!(
                    "endbr64",
                    "pop r11",
                    "push r9",
                    "push r8",
                    "push rcx",
                    "push rdx",
                    "push rsi",
                    "mov rsi, rsp",
                    "push rbx",
                    "mov rbx, r11",
                    "call {imp}",
                    "mov r11, rbx",
                    "pop rbx",
                    "add rsp, 40",
                    "push r11",
                    "ret",
                    imp = sym $imp,
                )
            }
        };
    }

    entry!(execl, execl_array);
    entry!(execlp, execlp_array);
    entry!(execle, execle_array);
}
