//! The file system's side of [`crate::dax::iomap`]: [`Inode`] answers the
//! fault engine's questions about one file (extents, size, media errors,
//! sharing) and changes its blocks for it (allocation on a write fault, copy
//! on write, moving a hugetlbfs chunk).

use super::{file, reflink, Cell, Error, Fs};
use crate::dax::iomap::{DaxInode, IomapError, Lookup};
use crate::dax::{DaxDevice, DaxFile};
use std::borrow::Borrow;
use std::fmt::Debug;
use std::ops::Range;

/// One file of a mounted file system, as the fault engine sees it. Owned
/// (`Inode<Fs, Arc<Cell>>`) where a mapping's region keeps it for the
/// fault handler threads; borrowed (`Inode<&Fs, &Cell>`, built on the stack)
/// where the file system calls a dax hook.
#[derive(Debug)]
pub(crate) struct Inode<F = Fs, C = std::sync::Arc<Cell>> {
    pub fs: F,
    pub cell: C,
}

impl<'a> Inode<&'a Fs, &'a Cell> {
    pub fn of(fs: &'a Fs, cell: &'a Cell) -> Self {
        Inode { fs, cell }
    }
}

impl From<Error> for IomapError {
    fn from(e: Error) -> IomapError {
        match e {
            Error::NoSpace | Error::NoInodes => IomapError::NoSpace,
            Error::NotFound => IomapError::Stale,
            Error::ReadOnly => IomapError::ReadOnly,
            e => IomapError::Failed {
                errno: e.errno(),
                what: e.to_string(),
            },
        }
    }
}

impl<F, C> DaxInode for Inode<F, C>
where
    F: Borrow<Fs> + Send + Sync + Debug,
    C: Borrow<Cell> + Send + Sync + Debug,
{
    fn ino(&self) -> u64 {
        self.cell.borrow().ino
    }

    fn dax(&self) -> &DaxFile {
        &self.cell.borrow().dax
    }

    fn device(&self) -> &DaxDevice {
        &self.fs.borrow().inner.dax
    }

    fn size(&self) -> u64 {
        let d = self.cell.borrow().data.read();
        if d.freed {
            0
        } else {
            d.attr.size
        }
    }

    fn lookup(&self, blk: u64) -> Lookup {
        self.cell.borrow().data.read().map.lookup(blk)
    }

    fn alloc_zeroed(&self, a: u64, b: u64) -> Result<(), IomapError> {
        Ok(file::alloc_zeroed(
            self.fs.borrow(),
            self.cell.borrow(),
            a,
            b,
            None,
        )?)
    }

    fn unshare(&self, a: u64, b: u64) -> Result<(), IomapError> {
        Ok(reflink::unshare(
            self.fs.borrow(),
            self.cell.borrow(),
            a,
            b,
        )?)
    }

    fn relocate_chunk(&self, chunk: u64) -> Result<(), IomapError> {
        Ok(reflink::relocate_chunk(
            self.fs.borrow(),
            self.cell.borrow(),
            chunk,
        )?)
    }

    fn first_bad(&self, blk: u64, len: u64) -> Option<u64> {
        self.fs.borrow().first_bad(blk, len)
    }

    fn has_shared(&self) -> bool {
        self.fs.borrow().has_shared()
    }

    fn shared_in(&self, blk: u64, len: u64) -> Vec<Range<u64>> {
        self.fs.borrow().shared_in(blk, len)
    }
}
