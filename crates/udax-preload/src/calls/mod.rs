//! The interposed calls, the top layer: one module per call family, each
//! built from `dispatch`, `state` and `boundary`; a family may use another
//! (`stdio` reads through `read_write`, `fortify` checks and calls the plain
//! entry points), never in a cycle.
//!
//! - files: `open`, `read_write`, `seek`, `space` (truncate, fallocate,
//!   fadvise), `sync`, `copy` (copy_file_range, sendfile, splice, tee), `umask`
//! - metadata and names: `stat`, `statfs`, `access`, `unlink`, `mkdir`,
//!   `rename`, `link` (and symlink, readlink), `mknod`, `perms` (chmod,
//!   chown), `times`, `xattr`, `cwd` (and realpath)
//! - credentials: `creds` (set*id, setgroups, setfs*id: announced to udax)
//! - the rest: `dir` (opendir, readdir, getdents), `ctl` (fcntl, flock,
//!   ioctl, dup), `mem` (mmap and friends), `stdio`, `tmpfile` (mkstemp,
//!   mkdtemp), `fortify` (`__*_chk`), `extra` (pathconf, inotify, scandir)

pub mod access;
pub mod copy;
pub mod creds;
pub mod ctl;
pub mod cwd;
pub mod dir;
pub mod exec;
pub mod extra;
pub mod fortify;
pub mod link;
pub mod mem;
pub mod mkdir;
pub mod mknod;
pub mod open;
pub mod perms;
pub mod read_write;
pub mod rename;
pub mod seek;
pub mod shell;
pub mod socket;
pub mod space;
pub mod stat;
pub mod statfs;
pub mod stdio;
pub mod sync;
pub mod times;
pub mod tmpfile;
pub mod umask;
pub mod unlink;
pub mod xattr;
