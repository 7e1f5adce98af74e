//! One file-system interface over both ways of reaching a device: mounted in
//! this process ([`Fs`], the embedded mode) or through the device's owner
//! ([`Client`], many processes on one device). The shim and the CLI take a
//! [`Vfs`] and do not care which; each method forwards to the backend's own
//! method of the same meaning (docs/multiprocess.md).
//!
//! What the two backends do differently is said at the method. A local
//! file system made by [`Fs::as_thread_caller`] checks each call with the
//! calling thread's credentials, read once per call.

use crate::client::{Client, RemoteFile, RemoteMapping};
use crate::dax::{MapFlags, Pin, Prot};
use crate::fs::extent::Lookup;
use crate::fs::{
    DirEntry, DirPage, DirRef, Error, File, Fs, Mapping, OpenOptions, Rename, Result, Stat, StatFs,
};
use std::sync::Arc;

/// A mounted file system or a connection to its owner. Cheap to clone.
#[derive(Clone)]
pub enum Vfs {
    /// Mounted in this process (the device lock is this process's).
    Local(Fs),
    /// Served by the device's owner.
    Remote(Arc<Client>),
}

/// An open file of either backend.
pub enum VFile {
    Local(File),
    Remote(RemoteFile),
}

/// A directory held by a descriptor or a working directory: it stays this
/// directory across renames.
#[derive(Clone)]
pub enum VDir {
    Local(DirRef),
    /// Held by inode number and birth time; its path is checked (and found
    /// again through the owner) at each use.
    Remote {
        ino: u64,
        btime_ns: u64,
    },
}

/// A mapping of a file of either backend.
pub enum VMapping {
    Local(Mapping),
    Remote(RemoteMapping),
}

/// Each call of [`Vfs::dir_moves`] on a client: a new value (a client is
/// not told of other processes' renames, so a directory's path is checked
/// at every use; the check is a cached `stat`).
static REMOTE_MOVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Vfs {
    pub fn is_remote(&self) -> bool {
        matches!(self, Vfs::Remote(_))
    }

    pub fn stat(&self, path: &str) -> Result<Stat> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().stat(path),
            Vfs::Remote(c) => c.stat(path),
        }
    }

    /// `lstat`: a symbolic link at the end of `path` itself.
    pub fn lstat(&self, path: &str) -> Result<Stat> {
        match self {
            Vfs::Local(fs) => fs.lstat(path),
            Vfs::Remote(c) => c.lstat(path),
        }
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink(&self, path: &str) -> Result<Vec<u8>> {
        match self {
            Vfs::Local(fs) => fs.readlink(path),
            Vfs::Remote(c) => c.readlink(path),
        }
    }

    /// A new symbolic link at `path` to `target`.
    pub fn symlink(&self, target: &[u8], path: &str) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.symlink(target, path),
            Vfs::Remote(c) => c.symlink(target, path),
        }
    }

    /// `mknod` ([`Fs::mknod`]).
    pub fn mknod(&self, path: &str, mode: u32, rdev: u64) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.mknod(path, mode, rdev),
            Vfs::Remote(c) => c.mknod(path, mode, rdev),
        }
    }

    /// The canonical path of directory `path` ([`Fs::real_dir`]).
    pub fn real_dir(&self, path: &str) -> Result<String> {
        match self {
            Vfs::Local(fs) => fs.real_dir(path),
            Vfs::Remote(c) => c.real_dir(path),
        }
    }

    pub fn open(&self, path: &str, opts: &OpenOptions) -> Result<VFile> {
        match self {
            Vfs::Local(fs) => fs
                .for_this_call()
                .open(path, opts)
                .map(|f| VFile::Local(f.viewed_as(fs))),
            Vfs::Remote(c) => c.open_with(path, opts).map(VFile::Remote),
        }
    }

    /// An unnamed file in directory `dir` (`O_TMPFILE`).
    pub fn create_unnamed(&self, dir: &str, mode: u32, linkable: bool) -> Result<VFile> {
        match self {
            Vfs::Local(fs) => fs
                .for_this_call()
                .create_unnamed(dir, mode, linkable)
                .map(|f| VFile::Local(f.viewed_as(fs))),
            Vfs::Remote(c) => c.open_unnamed(dir, mode, linkable).map(VFile::Remote),
        }
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().mkdir(path, mode),
            Vfs::Remote(c) => c.mkdir(path, mode),
        }
    }

    pub fn unlink(&self, path: &str) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().unlink(path),
            Vfs::Remote(c) => c.unlink(path),
        }
    }

    pub fn rmdir(&self, path: &str) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().rmdir(path),
            Vfs::Remote(c) => c.rmdir(path),
        }
    }

    pub fn rename2(&self, from: &str, to: &str, how: Rename) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().rename2(from, to, how),
            Vfs::Remote(c) => c.rename2(from, to, how),
        }
    }

    pub fn link(&self, existing: &str, new: &str) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().link(existing, new),
            Vfs::Remote(c) => c.link(existing, new),
        }
    }

    /// `linkat(AT_SYMLINK_FOLLOW)`: [`Vfs::link`] of where a symbolic link
    /// at the end of `existing` leads.
    pub fn link_following(&self, existing: &str, new: &str) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.link_following(existing, new),
            Vfs::Remote(c) => c.link_following(existing, new),
        }
    }

    /// chown (`None` leaves the owner or group, as -1).
    pub fn set_owner(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().set_owner(path, uid, gid),
            Vfs::Remote(c) => c.set_owner(path, uid, gid),
        }
    }

    /// `lchown`.
    pub fn set_owner_nofollow(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.set_owner_nofollow(path, uid, gid),
            Vfs::Remote(c) => c.set_owner_nofollow(path, uid, gid),
        }
    }

    pub fn set_permissions(&self, path: &str, mode: u32) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().set_permissions(path, mode),
            Vfs::Remote(c) => c.set_permissions(path, mode),
        }
    }

    /// `fchmodat(AT_SYMLINK_NOFOLLOW)`.
    pub fn set_permissions_nofollow(&self, path: &str, mode: u32) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.set_permissions_nofollow(path, mode),
            Vfs::Remote(c) => c.set_permissions_nofollow(path, mode),
        }
    }

    /// `utimensat(AT_SYMLINK_NOFOLLOW)`.
    pub fn set_times_nofollow(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.set_times_nofollow(path, atime_ns, mtime_ns),
            Vfs::Remote(c) => c.set_times_nofollow(path, atime_ns, mtime_ns),
        }
    }

    pub fn set_times(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().set_times(path, atime_ns, mtime_ns),
            Vfs::Remote(c) => c.set_times(path, atime_ns, mtime_ns),
        }
    }

    /// Totals. Through an owner the metadata fields read 0.
    pub fn statfs(&self) -> Result<StatFs> {
        match self {
            Vfs::Local(fs) => Ok(fs.statfs()),
            Vfs::Remote(c) => c.statfs(),
        }
    }

    pub fn sync(&self) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.sync(),
            Vfs::Remote(c) => c.sync(),
        }
    }

    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().read_dir(path),
            Vfs::Remote(c) => c.read_dir(path),
        }
    }

    /// One page of directory `path`'s listing from cookie `from` on
    /// ([`Fs::read_dir_page`]): at most `max` cookies locally; through the
    /// owner, what fits one reply (bounded by the message size).
    pub fn read_dir_page(&self, path: &str, from: u64, max: usize) -> Result<DirPage> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().read_dir_page(path, from, max),
            Vfs::Remote(c) => c.read_dir_page(path, from),
        }
    }

    /// The directory at `path`, held.
    pub fn dir_ref(&self, path: &str) -> Result<VDir> {
        match self {
            Vfs::Local(fs) => fs.for_this_call().dir_ref(path).map(VDir::Local),
            Vfs::Remote(c) => {
                let st = c.stat(path)?;
                if !st.is_dir() {
                    return Err(Error::NotDir);
                }
                Ok(VDir::Remote {
                    ino: st.ino,
                    btime_ns: st.btime_ns,
                })
            }
        }
    }

    /// The current path of `d` (`hint` if it still names it); NotFound once
    /// it is removed.
    pub fn dir_path(&self, d: &VDir, hint: &str) -> Result<String> {
        match (self, d) {
            (Vfs::Local(fs), VDir::Local(d)) => fs.for_this_call().dir_path(d, hint),
            (Vfs::Remote(c), VDir::Remote { ino, btime_ns }) => {
                c.dir_path_of(*ino, *btime_ns, hint)
            }
            _ => Err(Error::BadFd),
        }
    }

    /// A count that stays unchanged while every path found by
    /// [`Vfs::dir_path`] still names its directory (in this process: renames
    /// and removals of directories; through an owner: never, see
    /// `REMOTE_MOVES`).
    pub fn dir_moves(&self) -> u64 {
        match self {
            Vfs::Local(fs) => fs.dir_moves(),
            // ORDERING: a fresh number per call; nothing is published by it.
            Vfs::Remote(_) => REMOTE_MOVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// `FICLONERANGE` (see [`Fs::clone_range`]).
    pub fn clone_range(
        &self,
        src: &VFile,
        src_off: u64,
        dst: &VFile,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        match (self, src, dst) {
            (Vfs::Local(fs), VFile::Local(s), VFile::Local(d)) => {
                fs.clone_range(s, src_off, d, dst_off, len)
            }
            (Vfs::Remote(c), VFile::Remote(s), VFile::Remote(d)) => {
                c.clone_range(s, src_off, d, dst_off, len)
            }
            _ => Err(Error::CrossDevice),
        }
    }

    /// `FIDEDUPERANGE`: the bytes shared, and whether the ranges differed.
    pub fn dedupe_range(
        &self,
        src: &VFile,
        src_off: u64,
        dst: &VFile,
        dst_off: u64,
        len: u64,
    ) -> Result<(u64, bool)> {
        match (self, src, dst) {
            (Vfs::Local(fs), VFile::Local(s), VFile::Local(d)) => {
                let r = fs.dedupe_range(s, src_off, d, dst_off, len)?;
                Ok((r.bytes_deduped, r.differs))
            }
            (Vfs::Remote(c), VFile::Remote(s), VFile::Remote(d)) => {
                c.dedupe_range(s, src_off, d, dst_off, len)
            }
            _ => Err(Error::CrossDevice),
        }
    }

    /// A media error on `[offset, offset+len)` of the device: every mapping
    /// of its pages, in every process, is unmapped.
    pub fn inject_poison(&self, offset: u64, len: u64) -> Result<()> {
        match self {
            Vfs::Local(fs) => fs.inject_poison(offset, len).map(|_| ()),
            Vfs::Remote(c) => c.inject_poison(offset, len).map(|_| ()),
        }
    }

    /// The fault engine's counters for this file system's mappings.
    pub fn dax_stats(&self) -> Option<crate::dax::VmStats> {
        match self {
            Vfs::Local(fs) => Some(fs.dax_stats()),
            Vfs::Remote(c) => c.dax_stats(),
        }
    }
}

impl VFile {
    pub fn ino(&self) -> u64 {
        match self {
            VFile::Local(f) => f.ino(),
            VFile::Remote(f) => f.ino(),
        }
    }

    pub fn len(&self) -> Result<u64> {
        match self {
            VFile::Local(f) => Ok(f.len()),
            VFile::Remote(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    pub fn stat(&self) -> Result<Stat> {
        match self {
            VFile::Local(f) => f.stat(),
            VFile::Remote(f) => f.stat(),
        }
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        match self {
            VFile::Local(f) => f.read_at(buf, off),
            VFile::Remote(f) => f.read_at(buf, off),
        }
    }

    pub fn write_at(&self, data: &[u8], off: u64) -> Result<usize> {
        match self {
            VFile::Local(f) => f.write_at(data, off),
            VFile::Remote(f) => f.write_at(data, off),
        }
    }

    /// An `O_APPEND` write: at the end of file, atomically against other
    /// appends (through an owner, in every process). Returns the offset
    /// written at and the bytes written.
    pub fn append(&self, data: &[u8]) -> Result<(u64, usize)> {
        match self {
            VFile::Local(f) => {
                let at = f.len();
                Ok((at, f.write_at(data, at)?))
            }
            VFile::Remote(f) => f.append(data),
        }
    }

    pub fn fsync(&self) -> Result<()> {
        match self {
            VFile::Local(f) => f.fsync(),
            VFile::Remote(f) => f.fsync(),
        }
    }

    pub fn sync_data(&self) -> Result<()> {
        match self {
            VFile::Local(f) => f.sync_data(),
            VFile::Remote(f) => f.sync_data(),
        }
    }

    pub fn set_len(&self, len: u64) -> Result<()> {
        match self {
            VFile::Local(f) => f.set_len(len),
            VFile::Remote(f) => f.set_len(len),
        }
    }

    pub fn fallocate(&self, mode: u32, off: u64, len: u64) -> Result<()> {
        match self {
            VFile::Local(f) => f.fallocate(mode, off, len),
            VFile::Remote(f) => f.fallocate(mode, off, len),
        }
    }

    pub fn set_times(&self, atime_ns: Option<u64>, mtime_ns: Option<u64>) -> Result<()> {
        match self {
            VFile::Local(f) => f.set_times(atime_ns, mtime_ns),
            VFile::Remote(f) => f.set_times(atime_ns, mtime_ns),
        }
    }

    /// fchown (`None` leaves the owner or group, as -1).
    pub fn set_owner(&self, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        match self {
            VFile::Local(f) => f.set_owner(uid, gid),
            VFile::Remote(f) => f.set_owner(uid, gid),
        }
    }

    pub fn set_permissions(&self, mode: u32) -> Result<()> {
        match self {
            VFile::Local(f) => f.set_permissions(mode),
            VFile::Remote(f) => f.set_permissions(mode),
        }
    }

    /// `linkat` of this (possibly unnamed) file to `path`.
    pub fn link(&self, path: &str) -> Result<()> {
        match self {
            VFile::Local(f) => f.link(path),
            VFile::Remote(f) => f.link(path),
        }
    }

    /// What is at file block `fblk`.
    pub fn iomap(&self, fblk: u64) -> Result<Lookup> {
        match self {
            VFile::Local(f) => Ok(f.iomap(fblk)),
            VFile::Remote(f) => f.iomap(fblk),
        }
    }

    /// The extents as (file block, device block, blocks, shared with another
    /// file), in file order.
    pub fn extents(&self) -> Result<Vec<(u64, u64, u64, bool)>> {
        match self {
            VFile::Local(f) => Ok(f
                .extents_shared()
                .into_iter()
                .map(|(e, s)| (e.file_blk, e.dev_blk, e.len, s))
                .collect()),
            VFile::Remote(f) => f.extents(),
        }
    }

    pub fn mmap(&self, offset: u64, len: usize, prot: Prot, flags: MapFlags) -> Result<VMapping> {
        match self {
            VFile::Local(f) => f.mmap(offset, len, prot, flags).map(VMapping::Local),
            VFile::Remote(f) => f.mmap(offset, len, prot, flags).map(VMapping::Remote),
        }
    }
}

impl VMapping {
    pub fn as_ptr(&self) -> *mut u8 {
        match self {
            VMapping::Local(m) => m.as_ptr(),
            VMapping::Remote(m) => m.as_ptr(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            VMapping::Local(m) => m.len(),
            VMapping::Remote(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// File offset shown at the first byte.
    pub fn offset(&self) -> u64 {
        match self {
            VMapping::Local(m) => m.offset(),
            VMapping::Remote(m) => m.offset(),
        }
    }

    /// The mapped file's size now.
    pub fn file_len(&self) -> Result<u64> {
        match self {
            VMapping::Local(m) => Ok(m.file().len()),
            VMapping::Remote(m) => m.file().len(),
        }
    }

    /// What is at block `fblk` of the mapped file.
    pub fn iomap(&self, fblk: u64) -> Result<Lookup> {
        match self {
            VMapping::Local(m) => Ok(m.file().iomap(fblk)),
            VMapping::Remote(m) => m.file().iomap(fblk),
        }
    }

    /// A forked child's copy of its parent's mapping, made anew at
    /// the same address over `file`, the child's own open of the file
    /// (see [`RemoteMapping::renew`]). Through an owner only: an embedded
    /// file system belongs to the parent.
    pub fn renew(self, file: &VFile, flags: MapFlags) -> Result<VMapping> {
        match (self, file) {
            (VMapping::Remote(m), VFile::Remote(f)) => m.renew(f, flags).map(VMapping::Remote),
            (m, _) => {
                // The parent's: not dropped here either.
                std::mem::forget(m);
                Err(Error::NotSupported(
                    "a mapping inherited from the process that mounted udax",
                ))
            }
        }
    }

    /// A mapping of `len` bytes of the same file from `offset` (mremap).
    pub fn remap(&self, offset: u64, len: usize, prot: Prot, flags: MapFlags) -> Result<VMapping> {
        match self {
            VMapping::Local(m) => m.file().mmap(offset, len, prot, flags).map(VMapping::Local),
            VMapping::Remote(m) => m
                .file()
                .mmap(offset, len, prot, flags)
                .map(VMapping::Remote),
        }
    }

    pub fn msync(&self, off: usize, len: usize) -> Result<()> {
        match self {
            VMapping::Local(m) => m.msync(off, len),
            VMapping::Remote(m) => m.msync(off, len),
        }
    }

    pub fn protect(&self, prot: Prot) -> Result<()> {
        match self {
            VMapping::Local(m) => m.protect(prot),
            VMapping::Remote(m) => m.protect(prot),
        }
    }

    pub fn unmap_range(&self, off: usize, len: usize) -> Result<()> {
        match self {
            VMapping::Local(m) => m.unmap_range(off, len),
            VMapping::Remote(m) => m.unmap_range(off, len),
        }
    }

    pub fn pin(&self, off: usize, len: usize, write: bool) -> Result<Pin<'_>> {
        match self {
            VMapping::Local(m) => m.pin(off, len, write),
            VMapping::Remote(m) => m.pin(off, len, write),
        }
    }

    /// The device block mapped at byte `off` right now, if any.
    pub fn device_block_of(&self, off: usize) -> Option<u64> {
        match self {
            VMapping::Local(m) => m.device_block_of(off),
            VMapping::Remote(m) => m.device_block_of(off),
        }
    }
}
