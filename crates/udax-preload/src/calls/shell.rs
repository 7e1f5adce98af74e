//! `system`, `popen` and `pclose`: glibc runs the shell through its own
//! internal `posix_spawn`, which the shim cannot see, so the shell would
//! start without the udax working directory and descriptors. When there is
//! something to hand over, the shim runs the shell itself through its
//! `posix_spawn` (`calls::exec`, which adds `UDAX_INHERIT`), with the steps
//! glibc takes: `/bin/sh -c`, SIGINT and SIGQUIT ignored and SIGCHLD
//! blocked in the caller while `system` waits, their defaults and the
//! caller's mask in the child, exit status 127 when the shell cannot run,
//! and the streams of earlier `popen`s closed in the child. Otherwise the
//! calls go to glibc unchanged.

use crate::boundary::entry::{errno, fwd, run, set_errno};
use libc::{c_char, c_int, pid_t, FILE};
use std::sync::Mutex;

extern "C" {
    static environ: *const *const c_char;
}

/// The shell glibc's `system` and `popen` run.
const SHELL: &std::ffi::CStr = c"/bin/sh";

/// Streams made by this `popen`: (FILE address, the shell's pid).
static STREAMS: Mutex<Vec<(usize, pid_t)>> = Mutex::new(Vec::new());

fn streams() -> std::sync::MutexGuard<'static, Vec<(usize, pid_t)>> {
    STREAMS.lock().unwrap_or_else(|p| p.into_inner())
}

fn hand_over() -> bool {
    run(
        false,
        || false,
        || Ok(crate::state::inherit::anything_to_hand_over()),
    )
}

/// `waitpid` until it is not interrupted; the status, or -1.
fn wait(pid: pid_t) -> c_int {
    let mut status = 0;
    loop {
        // SAFETY: a valid pointer to an int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && errno() != libc::EINTR {
            return -1;
        }
    }
}

/// Spawn `/bin/sh -c cmd` through the shim's `posix_spawn` (the
/// handover), with `attr` and `fa` (either may be null); 0 or an error
/// number, as posix_spawn.
///
/// # Safety
/// `cmd` is a C string; `attr` and `fa` are null or initialised.
unsafe fn spawn_shell(
    pid: &mut pid_t,
    cmd: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
) -> c_int {
    let argv: [*const c_char; 4] = [c"sh".as_ptr(), c"-c".as_ptr(), cmd, std::ptr::null()];
    // SAFETY: the arguments are valid (the caller's contract, and arrays
    // that live across the call); `environ` is the process's environment.
    unsafe {
        super::exec::posix_spawn(
            pid,
            SHELL.as_ptr(),
            fa,
            attr,
            argv.as_ptr().cast(),
            environ.cast(),
        )
    }
}

/// # Safety
/// As system(3).
#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    if cmd.is_null() || !hand_over() {
        return fwd!(system(cmd));
    }
    // SAFETY: plain signal calls on valid, zero-initialised structures;
    // every disposition and the mask are restored before returning.
    unsafe {
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        let mut old_int: libc::sigaction = std::mem::zeroed();
        let mut old_quit: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, &ign, &mut old_int);
        libc::sigaction(libc::SIGQUIT, &ign, &mut old_quit);
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut old_mask);
        // The child: the caller's mask, and SIGINT/SIGQUIT at their
        // defaults unless the caller ignored them.
        let mut dfl: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut dfl);
        if old_int.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut dfl, libc::SIGINT);
        }
        if old_quit.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut dfl, libc::SIGQUIT);
        }
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawnattr_setsigmask(&mut attr, &old_mask);
        libc::posix_spawnattr_setsigdefault(&mut attr, &dfl);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as _,
        );
        let mut pid: pid_t = 0;
        let r = spawn_shell(&mut pid, cmd, std::ptr::null(), &attr);
        let status = if r == 0 { wait(pid) } else { 127 << 8 };
        libc::posix_spawnattr_destroy(&mut attr);
        libc::sigaction(libc::SIGINT, &old_int, std::ptr::null_mut());
        libc::sigaction(libc::SIGQUIT, &old_quit, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
        status
    }
}

/// # Safety
/// As popen(3).
#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut FILE {
    if cmd.is_null() || mode.is_null() || !hand_over() {
        return fwd!(popen(cmd, mode));
    }
    // SAFETY: the caller's contract: `mode` is a C string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let read = match m.first() {
        Some(b'r') => true,
        Some(b'w') => false,
        _ => {
            set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
    };
    let cloexec = m[1..].contains(&b'e');
    let mut p = [0 as c_int; 2];
    // SAFETY: a valid array of two ints.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return std::ptr::null_mut();
    }
    let (mine, theirs, target) = if read {
        (p[0], p[1], 1)
    } else {
        (p[1], p[0], 0)
    };
    // SAFETY: file actions initialised here and destroyed below; the fds
    // are the pipe's and those of earlier popen streams.
    let (r, pid) = unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        // dup2 onto itself clears FD_CLOEXEC (glibc >= 2.29).
        libc::posix_spawn_file_actions_adddup2(&mut fa, theirs, target);
        for (f, _) in streams().iter() {
            let fd = libc::fileno(*f as *mut FILE);
            if fd >= 0 && fd != target {
                libc::posix_spawn_file_actions_addclose(&mut fa, fd);
            }
        }
        let mut pid: pid_t = 0;
        let r = spawn_shell(&mut pid, cmd, &fa, std::ptr::null());
        libc::posix_spawn_file_actions_destroy(&mut fa);
        (r, pid)
    };
    // SAFETY: the child's end, ours to close.
    unsafe { libc::close(theirs) };
    if r != 0 {
        // SAFETY: our end, not handed out.
        unsafe { libc::close(mine) };
        set_errno(r);
        return std::ptr::null_mut();
    }
    if !cloexec {
        // SAFETY: F_SETFD on our own fd.
        unsafe { libc::fcntl(mine, libc::F_SETFD, 0) };
    }
    let fmode = if read { c"r" } else { c"w" };
    // SAFETY: `mine` is an open pipe end; fdopen takes it over.
    let f = unsafe { libc::fdopen(mine, fmode.as_ptr()) };
    if f.is_null() {
        let e = errno();
        // SAFETY: not taken over by fdopen.
        unsafe { libc::close(mine) };
        wait(pid);
        set_errno(e);
        return std::ptr::null_mut();
    }
    streams().push((f as usize, pid));
    f
}

/// # Safety
/// As pclose(3).
#[no_mangle]
pub unsafe extern "C" fn pclose(f: *mut FILE) -> c_int {
    let pid = {
        let mut s = streams();
        s.iter()
            .position(|(p, _)| *p == f as usize)
            .map(|i| s.swap_remove(i).1)
    };
    let Some(pid) = pid else {
        return fwd!(pclose(f));
    };
    // SAFETY: a stream this popen made with fdopen, closed once.
    unsafe { libc::fclose(f) };
    wait(pid)
}
