//! The interposed calls, the top layer: one module per call family, each
//! built from `dispatch`, `state` and `boundary`.

pub mod copy;
pub mod ctl;
pub mod dir;
pub mod extra;
pub mod fortify;
pub mod mem;
pub mod meta;
pub mod open;
pub mod read_write;
pub mod seek;
pub mod space;
pub mod stdio;
pub mod sync;
pub mod tmpfile;
pub mod umask;
