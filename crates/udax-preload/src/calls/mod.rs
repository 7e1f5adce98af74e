//! The interposed calls, the top layer: one module per call family, each
//! built from `dispatch`, `state` and `boundary`.

pub mod ctl;
pub mod dir;
pub mod extra;
pub mod fortify;
pub mod io;
pub mod mem;
pub mod meta;
pub mod stdio;
pub mod tmpfile;
