//! The interposed calls, the top layer: one module per call family, each
//! built from `dispatch`, `state` and `boundary`.

pub mod access;
pub mod copy;
pub mod ctl;
pub mod cwd;
pub mod dir;
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
