//! The shim's state, above `boundary`: the mounted file system, the
//! descriptor table, paths and the namespace lock.
//!
//! - `mount` the file system, mounted on first use, checkpointed at exit
//! - `fds`   udax descriptors (reserved kernel fd numbers), flock
//! - `path`  configuration, path normalisation and classification, virtual cwd
//! - `names` the namespace lock: paths relative to udax directories vs renames
//! - `hooks` what it has the call families do (stdio, mappings), installed at load
//! - `exit`  the teardown order at exit

pub mod exit;
pub mod fds;
pub mod hooks;
pub mod mount;
pub mod names;
pub mod path;
