//! udax-preload: an LD_PRELOAD shim that puts the paths under `UDAX_MOUNT`
//! into the udax file system on `UDAX_DEVICE`, for programs that were never
//! told about udax.
//!
//! ```text
//! LD_PRELOAD=libudax_preload.so UDAX_DEVICE=/dev/shm/u.img UDAX_MOUNT=/udax cp a /udax/a
//! ```
//!
//! Layout:
//! - `entry`    the C boundary: re-entrancy guard, errno, catch_unwind, log
//! - `real`     the libc functions, by `dlsym(RTLD_NEXT)`
//! - `path`     configuration, path normalisation and classification, virtual cwd
//! - `names`    the namespace lock: paths relative to udax directories vs renames
//! - `mount`    the file system, mounted on first use, checkpointed at exit
//! - `fds`      udax descriptors (reserved kernel fd numbers), flock
//! - `dispatch` the by-descriptor / by-path call shapes
//! - `io`, `meta`, `dir`, `ctl`, `mem`, `stdio`, `sig`: the interposed calls
//! - `threads`  the shim's threads; stdio unlocked until the program has its own
//!
//! Every interposed function is `unsafe extern "C"` with the libc prototype;
//! its safety contract is the C function's. Each `unsafe` block in the shim
//! carries a `// SAFETY:` note.

mod ctl;
mod dir;
mod dispatch;
mod entry;
mod extra;
mod fds;
mod fortify;
mod io;
mod mem;
mod meta;
mod mount;
mod names;
mod path;
mod real;
mod sig;
mod stdio;
mod threads;
mod tmpfile;

/// At load, before main (the process has one thread, unless the shim was
/// loaded late): what is cheap to learn now and racy later.
#[cfg_attr(test, allow(dead_code))]
extern "C" fn at_load() {
    entry::quiet_panics();
    let single = threads::single_threaded();
    if single {
        io::umask_at_load();
    }
    threads::at_load(single);
}

/// Not in the unit-test binary: its panic messages are the test failures.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;
