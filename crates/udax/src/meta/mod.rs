//! In-place metadata structures (issue 20): the metadata lives in device
//! blocks and is read and changed where it is, instead of in a whole-image
//! copy in RAM that a checkpoint writes back.
//!
//! Changes are made through a [`Tx`]: it collects a metadata operation's
//! byte writes in DRAM (its reads see them), and hands back the changed byte
//! ranges ([`Tx::writes`]). The caller logs them as one durable redo record
//! and then stores them in place ([`store_entries`]); replay after a crash stores the
//! same bytes again, so every change is idempotent whatever part of the
//! in-place stores reached the device.
//!
//! [`BTree`] is the one index built on it: a B+tree of `u64` keys and small
//! values in 4 KiB blocks, for directories, extent maps, reference counts,
//! the bad-block table and the inode chunk index. Its node layout is in
//! `btree.rs`.
//!
//! Callers serialise access to a tree (a `Tx` is `&mut`), so the tree has
//! no locks. [`Store`] (`store.rs`) holds format 3's structures on top of
//! them (inode chunks and slots, directories, extents, orphans, the bitmap)
//! and has the locks for what every inode shares; `check.rs` is its
//! consistency check (fsck's core).
//!
//! -> format (checksums), device
// Not used by the file system yet: the next step of issue 20 wires it in.
#![allow(dead_code)]

mod btree;
mod check;
mod store;
mod tx;

pub(crate) use btree::{BTree, MAX_VALUE};
#[cfg(all(test, not(loom)))]
pub(crate) use store::tests as store_tests;
pub(crate) use store::{store_entries, MetaAlloc, RangeTree, Store, StoreTx};
#[cfg(test)]
pub(crate) use tx::apply;
pub(crate) use tx::{BlockSource, Tx, Verified};

use crate::device::DeviceError;

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetaError {
    /// An on-device structure failed verification (checksum, magic, owner,
    /// level, bounds, order); `offset` is the device offset of the block.
    #[error("metadata corrupted at device offset {offset:#x}: {what}")]
    Corrupt { offset: u64, what: String },
    /// The block source has no free block.
    #[error("no free block for metadata")]
    NoSpace,
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A value longer than [`MAX_VALUE`] bytes.
    #[error("metadata value longer than {MAX_VALUE} bytes")]
    TooLarge,
}
