//! The C boundary, the lowest layer: what every interposed call stands on.
//! Imports no other layer.
//!
//! - `entry`   re-entrancy guard, errno, catch_unwind, the log
//! - `real`    the libc functions, by `dlsym(RTLD_NEXT)`
//! - `sig`     SIGBUS dispositions: udax's handler stays in front
//! - `threads` the shim's threads; stdio unlocked until the program has its own

pub mod entry;
pub mod real;
pub mod sig;
pub mod threads;
