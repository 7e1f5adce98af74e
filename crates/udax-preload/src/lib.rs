//! udax-preload: an LD_PRELOAD shim that puts the paths under `UDAX_MOUNT`
//! into the udax file system on `UDAX_DEVICE`, for programs that were never
//! told about udax.
//!
//! ```text
//! LD_PRELOAD=libudax_preload.so UDAX_DEVICE=/dev/shm/u.img UDAX_MOUNT=/udax cp a /udax/a
//! ```
//!
//! Layers, lowest first; a file imports only its own layer and those below
//! it, and no two files import each other (`tests/architecture.rs`; the
//! import graph is in docs/preload.md, "Code layout"):
//! - `boundary` the C boundary: re-entrancy guard, errno, catch_unwind, log
//!   (`entry`); the libc functions (`real`); SIGBUS chaining (`sig`); the
//!   shim's threads and stdio locking (`threads`)
//! - `state`    the mounted file system, descriptors, paths, the namespace
//!   lock, the teardown at exit
//! - `dispatch` the by-descriptor / by-path call shapes
//! - `calls`    the interposed calls, one module per call family
//!
//! This root wires them: at load it installs the hooks through which the
//! state layer has the call families act (`state::hooks`: the stdio flush
//! and mapping teardown at exit, the standard streams on fds 0-2).
//!
//! Every interposed function is `unsafe extern "C"` with the libc prototype;
//! its safety contract is the C function's. Each `unsafe` block in the shim
//! carries a `// SAFETY:` note.

mod boundary;
mod calls;
mod dispatch;
mod state;

/// At load, before main (the process has one thread, unless the shim was
/// loaded late): what is cheap to learn now and racy later.
#[cfg_attr(test, allow(dead_code))]
extern "C" fn at_load() {
    state::hooks::install(state::hooks::Hooks {
        at_exit: &[calls::stdio::flush_all, calls::mem::drop_all],
        before_std_change: calls::stdio::before_std_change,
        std_now_udax: calls::stdio::std_now_udax,
        std_not_udax: calls::stdio::std_not_udax,
    });
    boundary::entry::quiet_panics();
    calls::creds::keep_at_load();
    state::mount::wipe_pid_cache_on_fork();
    let single = boundary::threads::single_threaded();
    if single {
        calls::umask::umask_at_load();
    }
    boundary::threads::at_load(single);
    // SAFETY: registering the fork handlers below, which run only the
    // shim's own code (no handler is called with locks of ours held).
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        )
    };
    // What an exec handed over (UDAX_INHERIT), if anything.
    state::inherit::at_load();
}

/// The `pthread_atfork` prepare handler: through an owner, offer this
/// process's open files and shared mappings to the child about to be made
/// (nothing when it has none, and nothing for the shim's own forks). The
/// mappings last: their table stays locked across the fork.
extern "C" fn before_fork() {
    if boundary::entry::inside() {
        return;
    }
    boundary::entry::run(
        (),
        || (),
        || {
            if state::inherit::before_fork() {
                calls::mem::before_fork();
            }
            // Last: no lock of the shim is taken after it until the fork.
            state::mount::lock_for_fork();
            Ok(())
        },
    )
}

/// The `pthread_atfork` parent handler: the locks held across the fork go.
#[cfg_attr(test, allow(dead_code))]
extern "C" fn after_fork_in_parent() {
    state::mount::unlock_after_fork();
    calls::mem::after_fork_in_parent();
}

/// The `pthread_atfork` child handler: the child is a process of its own,
/// and the mappings it inherited become its own before the program
/// goes on (not for the shim's own forks, which exec at once).
extern "C" fn after_fork_in_child() {
    state::mount::after_fork_in_child();
    boundary::entry::run(
        (),
        || (),
        || {
            let parents = state::mount::parents_connection();
            calls::mem::after_fork_in_child();
            // Last: the inherited mappings are the child's own now, and an
            // inherited descriptor adopts through the child's connection
            // at its first use; nothing reads the device through the
            // parent's connection any more. Its copy here would hold the
            // device lock for as long as the child lives.
            if let Some(c) = parents {
                c.let_go_of_the_device_in_a_forked_child();
            }
            Ok(())
        },
    );
}

/// Not in the unit-test binary: its panic messages are the test failures.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;
