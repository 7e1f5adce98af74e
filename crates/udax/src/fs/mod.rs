//! The file system: namespace, inodes, extent maps, read/write, truncate, fallocate.

mod error;

pub use error::{Error, Result};
