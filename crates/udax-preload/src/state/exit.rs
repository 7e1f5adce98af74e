//! The teardown at exit (and at `dlclose`): a `.fini_array` destructor, which
//! runs after the program's `atexit` handlers. In this order: the hooks
//! (stdio streams flushed while their udax files are open, mappings
//! dropped), the descriptors, then the file system (`mount::unmount_at_exit`:
//! pages idle, checkpoint, device closed). Skipped in a forked child.

use crate::boundary::entry;
use crate::state::{fds, hooks, mount};

extern "C" fn at_exit() {
    if mount::attached().is_none() {
        return;
    }
    // Guarded: udax's own libc calls (munmap, close) go straight to libc.
    entry::run(
        (),
        || (),
        || {
            hooks::at_exit();
            fds::drop_all();
            mount::unmount_at_exit();
            Ok(())
        },
    );
}

// Runs at exit and at dlclose, after the program's own atexit handlers.
#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;
