//! The shim's state, above `boundary`: the mounted file system, the
//! descriptor table, paths and the namespace lock. What it needs the call
//! families to do goes through `hooks`, never an import of them.
//!
//! Lowest first (each file imports only those above it in this list):
//! - `config`  `UDAX_MOUNT`, `UDAX_DEVICE`, read once
//! - `lexical` paths as text: normalisation, the prefix, `/proc/self/fd/N`
//! - `names`   the namespace lock: paths relative to udax directories vs renames
//! - `hooks`   what state has the call families do (stdio, mappings), installed at load
//! - `mount`   the file system, mounted on first use, checkpointed at exit
//! - `fds`     udax descriptors (reserved kernel fd numbers), flock
//! - `path`    path classification (udax or host), the virtual cwd
//! - `inherit` descriptors and the working directory across fork and exec
//! - `exit`    the teardown order at exit

pub mod config;
pub mod exit;
pub mod fds;
pub mod hooks;
pub mod inherit;
pub mod lexical;
pub mod mount;
pub mod names;
pub mod path;
