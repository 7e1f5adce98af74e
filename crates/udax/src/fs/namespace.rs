//! Paths and directories: lookup (with symbolic links), create, mkdir,
//! symlink, unlink, rmdir, rename, link.

use super::{now_ns, stat_of, Cell, Error, File, Fs, OpenOptions, Result, Stat};
use crate::alloc::AllocRequest;
use crate::format::{
    dtype_of, symlink_reserve_ops, Op, DT_DIR, DT_LNK, NAME_MAX, ROOT_INO, SYMLINK_MAX, S_IFBLK,
    S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
};
use crate::fs::perm::{R, S_ISGID, S_ISUID, W, X};
use crate::fs::state::InodeData;
use crate::fs::DirEntry;
use crate::sync::{Ordering, RwLockWriteGuard};
use std::borrow::Cow;
use std::sync::Arc;

/// A directory, held: what a directory descriptor or a working directory
/// refers to. It stays this directory across renames, and once removed it
/// is seen removed, never as a newer directory that reuses its inode number.
#[derive(Clone)]
pub struct DirRef(Arc<Cell>);

impl DirRef {
    pub fn ino(&self) -> u64 {
        self.0.ino
    }
}

/// What [`Fs::rename2`] does with an existing destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rename {
    /// Replace it (`rename`).
    Replace,
    /// Fail with `Exists` (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two, which must both exist (`RENAME_EXCHANGE`).
    Exchange,
}

/// Highest link count of an inode (as ext4's 65000).
const LINK_MAX: u32 = 65000;

/// A time for [`Fs::set_times`] and its kin that means "now" (as
/// `UTIME_NOW`): the file system's clock when the change is made, and, with
/// both times so, the permission rule of a touch (write permission
/// suffices, as the kernel's).
pub const TIME_NOW: u64 = u64::MAX;

/// Most symbolic links one path resolution follows (the kernel's
/// `MAXSYMLINKS`); one more fails with [`Error::Loop`].
pub const MAX_SYMLINKS: u32 = 40;

/// Where a walk along a path ended.
struct Walked {
    ino: u64,
    /// A symbolic link or a `..` was on the way: the path as written is not
    /// the inode's own (canonical) path.
    detour: bool,
}

/// [`Error::Escape`] at `first` (a link's absolute target, or `..` at the
/// root), then the components still to walk (`rest`, the next last).
fn escape(first: &[u8], rest: &[Cow<'_, [u8]>]) -> Error {
    let mut p = first.to_vec();
    for c in rest.iter().rev() {
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(c);
    }
    Error::Escape {
        path: String::from_utf8_lossy(&p).into_owned(),
    }
}

/// `e`, and if it is an escape, with `more` (path text) after its path.
fn escaped_with(e: Error, more: &str) -> Error {
    match e {
        Error::Escape { mut path } => {
            if !path.ends_with('/') && !more.starts_with('/') {
                path.push('/');
            }
            path.push_str(more);
            Error::Escape { path }
        }
        e => e,
    }
}

/// The directory part of a path as written: all but its last component
/// ("/a/b/c" -> "/a/b", "c" -> "").
fn dir_part(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// The path of entry `name` of directory `dir` (an absolute path).
pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub use crate::format::MAX_PATH;

/// Split a path into components; `.` is dropped, `..` kept for the walk.
fn components(path: &str) -> Result<Vec<&[u8]>> {
    if path.len() > MAX_PATH {
        return Err(Error::NameTooLong);
    }
    let mut v = Vec::new();
    for c in path.as_bytes().split(|&b| b == b'/') {
        if c.is_empty() || c == b"." {
            continue;
        }
        if c.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if c.contains(&0) {
            return Err(Error::Invalid("NUL in path"));
        }
        v.push(c);
    }
    Ok(v)
}

/// The path can only name a directory: it ends in `/`, `.` or `..` (so
/// "f/" of a file is `NotDir`, as in the kernel).
fn names_dir(path: &str) -> bool {
    matches!(path.rsplit('/').next(), Some("" | "." | ".."))
}

/// A path that names a directory but no entry in one, so no call can
/// create, remove or rename it: the root, or a last component `.` or `..`.
#[derive(Clone, Copy, Debug)]
enum NoEntry {
    Root,
    Dot,
    DotDot,
}

impl NoEntry {
    fn what(self) -> &'static str {
        match self {
            NoEntry::Root => "the root directory",
            NoEntry::Dot => "'.'",
            NoEntry::DotDot => "'..'",
        }
    }
}

/// The last component of a path and the directory holding it.
struct Leaf<'p> {
    dir: u64,
    name: &'p [u8],
    /// The path ends in `/`: the entry must be a directory.
    slash: bool,
}

impl Fs {
    /// Inode number of the entry `name` in directory `dir`.
    pub(crate) fn lookup_in(&self, dir: u64, name: &[u8]) -> Result<u64> {
        self.lookup_entry(dir, name).map(|(i, _)| i)
    }

    /// Inode number and type (`d_type`) of the entry `name` in directory `dir`.
    fn lookup_entry(&self, dir: u64, name: &[u8]) -> Result<(u64, u8)> {
        super::trace::looked_up(dir, name);
        self.lookup_entry_untraced(dir, name)
    }

    fn lookup_entry_untraced(&self, dir: u64, name: &[u8]) -> Result<(u64, u8)> {
        let cache = self.lookups();
        if name != b".." {
            if let Some(hit) = cache.and_then(|c| c.get(dir, name)) {
                // A cached entry's directory exists and is one (the entry
                // would have been forgotten with it); only the caller's
                // search permission is left to check.
                if self.cred.is_some() {
                    let a = self.cell(dir)?.data.read().attr;
                    self.permit(&a, X, "search permission on a directory of the path")?;
                }
                return Ok(hit);
            }
        }
        if let Some(found) = self.lookup_at_rest(dir, name) {
            return found;
        }
        let cell = self.cell(dir)?;
        let d = cell.data.read();
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        self.permit(&d.attr, X, "search permission on a directory of the path")?;
        if name == b".." {
            return Ok((d.attr.parent, DT_DIR));
        }
        let e = self.entry_in(dir, &d, name)?.ok_or(Error::NotFound)?;
        self.named_in_use(dir, name, e.0)?;
        if let Some(c) = cache {
            // Under the directory's read lock (`dirs::LookupCache`).
            c.put(dir, name, e);
        }
        Ok(e)
    }

    /// Walk `comps` from directory `start`: every symbolic link met before
    /// the last component is followed, the last one too with `follow`, as
    /// the kernel's path walk does; a relative target goes on from the
    /// link's directory, an absolute one (or `..` at the root) leaves the
    /// file system ([`Error::Escape`]). More than [`MAX_SYMLINKS`] links
    /// fail with [`Error::Loop`].
    fn walk(&self, start: u64, comps: &[&[u8]], follow: bool) -> Result<Walked> {
        // Components still to walk, the next last; a target's are owned.
        let mut todo: Vec<Cow<'_, [u8]>> = comps.iter().rev().map(|&c| Cow::Borrowed(c)).collect();
        let mut at = Walked {
            ino: start,
            detour: false,
        };
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if &*c == b".." {
                at.detour = true;
                if at.ino == ROOT_INO {
                    return Err(escape(b"..", &todo));
                }
            }
            let (next, t) = self.lookup_entry(at.ino, &c)?;
            if t != DT_LNK || (todo.is_empty() && !follow) {
                at.ino = next;
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::Loop);
            }
            at.detour = true;
            let target = self.link_target(next)?;
            if target.first() == Some(&b'/') {
                return Err(escape(&target, &todo));
            }
            todo.extend(
                target
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty() && *c != b".")
                    .rev()
                    .map(|c| Cow::Owned(c.to_vec())),
            );
        }
        Ok(at)
    }

    /// The target of symbolic link `ino`.
    fn link_target(&self, ino: u64) -> Result<Vec<u8>> {
        let cell = self.cell(ino)?;
        let d = cell.data.read();
        if !d.is_symlink() || d.target.is_empty() {
            return Err(Error::Invalid("not a symbolic link"));
        }
        Ok(d.target.clone())
    }

    /// Walk a whole path from the root; a path ending in `/`, `.` or `..`
    /// must name a directory, and a link at its end is then followed.
    fn walk_path(&self, path: &str, follow: bool) -> Result<Walked> {
        let comps = components(path)?;
        let dir = names_dir(path);
        let w = self.walk(ROOT_INO, &comps, follow || dir).map_err(|e| {
            if dir && !path.ends_with('/') {
                escaped_with(e, "/")
            } else {
                e
            }
        })?;
        if dir && !self.cell(w.ino)?.data.read().is_dir() {
            return Err(Error::NotDir);
        }
        Ok(w)
    }

    /// Resolve a path to an inode number (paths are relative to the root),
    /// following symbolic links, the last one too.
    pub fn resolve(&self, path: &str) -> Result<u64> {
        self.walk_path(path, true).map(|w| w.ino)
    }

    /// [`Fs::resolve`], but a symbolic link at the end is the answer, not
    /// followed (`lstat`, `lchown`, `readlink`, `O_NOFOLLOW`).
    pub fn resolve_nofollow(&self, path: &str) -> Result<u64> {
        self.walk_path(path, false).map(|w| w.ino)
    }

    /// The canonical path of directory `path`: symbolic links followed,
    /// without `.` or `..`. The shim asks it for what a `..` after `path`
    /// goes back to (the kernel's `..` is the parent of where the walk
    /// went, not of the path as written).
    pub fn real_dir(&self, path: &str) -> Result<String> {
        let comps = components(path)?;
        let w = self.walk(ROOT_INO, &comps, true)?;
        let cell = self.cell(w.ino)?;
        if !cell.data.read().is_dir() {
            return Err(Error::NotDir);
        }
        if !w.detour {
            let mut p = String::new();
            for c in comps {
                p.push('/');
                p.push_str(&String::from_utf8_lossy(c));
            }
            if p.is_empty() {
                p.push('/');
            }
            return Ok(p);
        }
        self.dir_path(&DirRef(cell), "/")
    }

    /// Resolve all but the last component. A path that names no entry (see
    /// [`NoEntry`]) is resolved whole, then fails with `no_entry`'s error:
    /// each call has the kernel's own (EISDIR for unlink, EBUSY for rename...).
    fn resolve_parent<'p>(
        &self,
        path: &'p str,
        no_entry: impl FnOnce(NoEntry) -> Error,
    ) -> Result<Leaf<'p>> {
        let comps = components(path)?;
        let which = match (
            path.trim_end_matches('/').rsplit('/').next(),
            comps.split_last(),
        ) {
            (Some("."), _) => NoEntry::Dot,
            (Some(".."), _) => NoEntry::DotDot,
            (_, None) => NoEntry::Root,
            (_, Some((last, dirs))) => {
                let ino = self
                    .walk(ROOT_INO, dirs, true)
                    .map_err(|e| {
                        let slash = if path.ends_with('/') { "/" } else { "" };
                        escaped_with(e, &format!("{}{slash}", String::from_utf8_lossy(last)))
                    })?
                    .ino;
                if !self.cell(ino)?.data.read().is_dir() {
                    return Err(Error::NotDir);
                }
                return Ok(Leaf {
                    dir: ino,
                    name: last,
                    slash: path.ends_with('/'),
                });
            }
        };
        // A missing or non-directory component fails first, as in the kernel.
        self.resolve(path)?;
        Err(no_entry(which))
    }

    /// Directory renames and removals since mount: a path found for a
    /// directory (`dir_path`) names it while this count is unchanged.
    pub fn dir_moves(&self) -> u64 {
        // ORDERING: Acquire pairs with the Release after each rename or rmdir
        // commits: a caller that sees the count unchanged also sees every
        // namespace change made before the last bump.
        self.inner.dir_moves.load(Ordering::Acquire)
    }

    fn moved_dirs(&self) {
        // ORDERING: see `dir_moves`.
        self.inner.dir_moves.fetch_add(1, Ordering::Release);
    }

    /// The directory at `path`, held (see [`DirRef`]).
    pub fn dir_ref(&self, path: &str) -> Result<DirRef> {
        let cell = self.cell(self.resolve(path)?)?;
        if !cell.data.read().is_dir() {
            return Err(Error::NotDir);
        }
        Ok(DirRef(cell))
    }

    /// The current path of directory `d` ("/" for the root): `hint` if it
    /// still names it (this directory, not a newer one that reuses its inode
    /// number), otherwise found from the parent links: the directory or one
    /// above it was renamed. NotFound once it has been removed.
    pub fn dir_path(&self, d: &DirRef, hint: &str) -> Result<String> {
        // Serialised with renames and removals: the walk sees one namespace.
        let _ns = self.inner.ns.lock();
        if d.0.data.read().freed {
            return Err(Error::NotFound);
        }
        // The hint only if it is the directory's own path (no link or `..`
        // on the way): a working directory's path is canonical, as getcwd's.
        if let Ok(Walked {
            ino: i,
            detour: false,
        }) = self.walk_path(hint, true)
        {
            if i == d.0.ino && self.cell(i).is_ok_and(|c| Arc::ptr_eq(&c, &d.0)) {
                return Ok(hint.to_string());
            }
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut at = d.0.clone();
        while at.ino != ROOT_INO {
            let parent = self.cell(at.data.read().attr.parent)?;
            let name = {
                let pd = parent.data.read();
                self.name_in(parent.ino, &pd, at.ino)?
                    .ok_or(Error::NotFound)?
            };
            names.push(name);
            at = parent;
        }
        let mut path = String::new();
        for n in names.iter().rev() {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(n));
        }
        if path.is_empty() {
            path.push('/');
        }
        Ok(path)
    }

    /// The current path of directory inode `ino` born at `btime_ns` (as
    /// [`Fs::dir_path`], for a directory held by number and birth time, as
    /// a client holds one): NotFound if no such directory exists now.
    pub fn dir_path_of(&self, ino: u64, btime_ns: u64, hint: &str) -> Result<String> {
        let cell = self.cell(ino).map_err(|_| Error::NotFound)?;
        {
            let d = cell.data.read();
            if !d.is_dir() || d.attr.btime_ns != btime_ns {
                return Err(Error::NotFound);
            }
        }
        self.dir_path(&DirRef(cell), hint)
    }

    /// `stat` of a path.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let ino = self.resolve(path)?;
        self.stat_ino(ino)
    }

    /// `lstat`: as [`Fs::stat`], but of a symbolic link itself.
    pub fn lstat(&self, path: &str) -> Result<Stat> {
        let ino = self.resolve_nofollow(path)?;
        self.stat_ino(ino)
    }

    /// `readlink`: the target of the symbolic link at `path` (`Invalid`
    /// for anything else).
    pub fn readlink(&self, path: &str) -> Result<Vec<u8>> {
        self.link_target(self.resolve_nofollow(path)?)
    }

    /// `symlink(target, path)`: a new symbolic link at `path` (which must
    /// not exist) to `target`, stored as written (1 to 4095 bytes, never
    /// resolved here). Mode `0777` as the kernel's; a target of up to 144
    /// bytes lives in the inode's slot, a longer one in a data block.
    /// Format 2 has no symbolic links (`NotSupported`).
    pub fn symlink(&self, target: &[u8], path: &str) -> Result<()> {
        if target.is_empty() {
            return Err(Error::NotFound); // symlink(2): ENOENT
        }
        if target.len() > SYMLINK_MAX {
            return Err(Error::NameTooLong);
        }
        if target.contains(&0) {
            return Err(Error::Invalid("NUL in a symbolic link's target"));
        }
        if !self.has_symlinks() {
            return Err(Error::NotSupported(
                "symbolic links need format 3 (this file system is format 2)",
            ));
        }
        let _g = self.begin(2 + symlink_reserve_ops(target.len()))?;
        let _ns = self.inner.ns.lock();
        let Leaf { dir, name, slash } = self.resolve_parent(path, |_| Error::Exists)?;
        let dcell = self.cell(dir)?;
        let mut dg = dcell.data.write();
        if dg.freed {
            return Err(Error::NotFound);
        }
        if self.entry_in(dir, &dg, name)?.is_some() {
            return Err(Error::Exists);
        }
        if slash {
            return Err(Error::NotFound); // a new name "l/": the kernel's ENOENT
        }
        self.permit(&dg.attr, W | X, "write permission on the directory")?;
        // A target longer than the slot holds goes to a data block, written
        // and flushed before the transaction that maps it commits.
        let block = if target.len() > crate::format::v3::INLINE_BYTES {
            let r = self
                .inner
                .alloc
                .alloc(AllocRequest {
                    len: 1,
                    goal: None,
                    huge: false,
                })
                .map_err(|_| Error::NoSpace)?[0];
            let at = r.start * crate::BLOCK_SIZE;
            let mut b = vec![0u8; crate::BLOCK_SIZE as usize];
            b[..target.len()].copy_from_slice(target);
            if let Err(e) = self.inner.dev.write(at, &b) {
                let _ = self.inner.alloc.free(r);
                return Err(e.into());
            }
            self.inner.dev.flush(at, crate::BLOCK_SIZE);
            Some(r)
        } else {
            None
        };
        let made = self.make_node(dir, &mut dg, S_IFLNK | 0o777, Some(name), |ino| {
            let mut ops = Vec::new();
            if let Some(r) = block {
                ops.push(Op::Map {
                    ino,
                    file_blk: 0,
                    dev_blk: r.start,
                    len: 1,
                });
            }
            ops.push(Op::Symlink {
                ino,
                target: target.to_vec(),
            });
            ops
        });
        if made.is_err() {
            if let Some(r) = block {
                let _ = self.inner.alloc.free(r);
            }
        }
        made.map(|_| ())
    }

    pub(crate) fn stat_ino(&self, ino: u64) -> Result<Stat> {
        let cell = match self.cell_in_memory(ino) {
            Some(c) => c,
            None => match self.stat_at_rest(ino) {
                Some(s) => return s,
                None => self.cell(ino)?,
            },
        };
        let d = cell.data.read();
        // ORDERING: see `change_time_ns`; `mtime_pending` is a time value
        // (fs/mod.rs).
        cell.times_seen.store(true, Ordering::Relaxed);
        Ok(stat_of(ino, &d, cell.mtime_pending.load(Ordering::Relaxed)))
    }

    /// The entries of a directory, sorted by name (`.` and `..` not included).
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let ino = self.resolve(path)?;
        let cell = self.cell(ino)?;
        let d = cell.data.read();
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        self.permit(&d.attr, R, "read permission on the directory")?;
        self.all_entries(ino, &d)
    }

    /// Lock cells for writing in ascending inode order (duplicates allowed).
    fn lock_cells(cells: &[Arc<Cell>]) -> Vec<(u64, RwLockWriteGuard<'_, InodeData>)> {
        let mut order: Vec<&Arc<Cell>> = cells.iter().collect();
        order.sort_by_key(|c| c.ino);
        order.dedup_by_key(|c| c.ino);
        order.into_iter().map(|c| (c.ino, c.data.write())).collect()
    }

    /// From the locks of exactly `dir` and one other inode (as taken by
    /// [`Self::lock_cells`]), the directory's data and the other's, in that order.
    fn dir_and_target<'g>(
        locks: &'g mut [(u64, RwLockWriteGuard<'_, InodeData>)],
        dir: u64,
    ) -> (&'g mut InodeData, &'g mut InodeData) {
        let (a, b) = locks.split_at_mut(1);
        if a[0].0 == dir {
            (&mut *a[0].1, &mut *b[0].1)
        } else {
            (&mut *b[0].1, &mut *a[0].1)
        }
    }

    fn new_node(&self, path: &str, mode: u32) -> Result<u64> {
        self.new_node_with(path, mode, |_| Vec::new())
    }

    /// [`Self::new_node`], with `more(ino)`'s ops in its transaction.
    fn new_node_with(
        &self,
        path: &str,
        mode: u32,
        more: impl FnOnce(u64) -> Vec<Op>,
    ) -> Result<u64> {
        let _g = self.begin(2)?;
        let _ns = self.inner.ns.lock();
        let is_dir = mode & S_IFMT == S_IFDIR;
        let Leaf { dir, name, slash } =
            self.resolve_parent(path, |_| if is_dir { Error::Exists } else { Error::IsDir })?;
        if slash && !is_dir {
            return Err(Error::IsDir); // the kernel's open("name/", O_CREAT)
        }
        let dcell = self.cell(dir)?;
        let mut dg = dcell.data.write();
        if dg.freed {
            return Err(Error::NotFound);
        }
        if self.entry_in(dir, &dg, name)?.is_some() {
            return Err(Error::Exists);
        }
        self.permit(&dg.attr, W | X, "write permission on the directory")?;
        if is_dir && dg.attr.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        self.make_node(dir, &mut dg, mode, Some(name), more)
    }

    /// `mknod`: a special file at `path` of the type in `mode`'s file type
    /// bits: a FIFO, a socket, or a character or block device of number
    /// `rdev` (no type, or `S_IFREG`: an empty regular file). A device node
    /// needs root (the kernel's `CAP_MKNOD`: `NotPermitted` for any other
    /// caller); `S_IFDIR` is `NotPermitted` and any other type `Invalid`, as
    /// the kernel's `may_mknod`. Format 2 has no special files
    /// (`NotSupported`). Opening one is not the library's to do: a FIFO's
    /// pipe lives on the host (the shim, the FUSE mount), and a device node
    /// does not open (udax is `nodev`).
    pub fn mknod(&self, path: &str, mode: u32, rdev: u64) -> Result<()> {
        let perm = mode & 0o7777;
        let kind = mode & S_IFMT;
        match kind {
            0 | S_IFREG => return self.new_node(path, S_IFREG | perm).map(|_| ()),
            S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK => {}
            S_IFDIR => return Err(Error::NotPermitted("mknod of a directory")),
            _ => return Err(Error::Invalid("mknod of an unknown file type")),
        }
        if !self.has_symlinks() {
            return Err(Error::NotSupported(
                "special files need format 3 (this file system is format 2)",
            ));
        }
        let device = matches!(kind, S_IFCHR | S_IFBLK);
        if device && self.who().is_some_and(|c| !c.is_root()) {
            return Err(Error::NotPermitted("only root makes device nodes"));
        }
        self.new_node_with(path, kind | perm, |ino| {
            if device {
                vec![Op::SetRdev { ino, rdev }]
            } else {
                Vec::new()
            }
        })
        .map(|_| ())
    }

    /// A new inode of `mode` in directory `dir` (its lock `dg` held) and its
    /// entry `name` there, or none (an unnamed file): one transaction, with
    /// `more(ino)`'s ops between the inode's creation and its entry.
    fn make_node(
        &self,
        dir: u64,
        dg: &mut InodeData,
        mode: u32,
        name: Option<&[u8]>,
        more: impl FnOnce(u64) -> Vec<Op>,
    ) -> Result<u64> {
        let ino = self.take_ino()?;
        let t = now_ns();
        let (uid, gid, extra) = self.new_owner(&dg.attr, mode & S_IFMT == S_IFDIR);
        let mut ops = vec![Op::NewInode {
            ino,
            mode: mode | extra,
            uid,
            gid,
            time_ns: t,
            parent: dir,
        }];
        ops.extend(more(ino));
        if let Some(name) = name {
            ops.push(Op::Link {
                dir,
                ino,
                file_type: dtype_of(mode),
                name: name.to_vec(),
                time_ns: t,
            });
        }
        if let Err(e) = self.run_tx(&mut [(dir, dg)], &ops) {
            self.return_ino(ino);
            return Err(e);
        }
        Ok(ino)
    }

    /// `O_TMPFILE`: a new regular file in directory `dir` with no name (link
    /// count 0), open read-write: freed at its last close, or by the next
    /// mount after a crash, unless [`File::link`] names it first (only if
    /// `linkable`: `O_TMPFILE` without `O_EXCL`).
    pub fn create_unnamed(&self, dir: &str, mode: u32, linkable: bool) -> Result<File> {
        let ino = {
            let _g = self.begin(1)?;
            let _ns = self.inner.ns.lock();
            let dir = self.resolve(dir)?;
            let dcell = self.cell(dir)?;
            let mut dg = dcell.data.write();
            if !dg.is_dir() {
                return Err(Error::NotDir);
            }
            if dg.freed {
                return Err(Error::NotFound);
            }
            self.permit(&dg.attr, W | X, "write permission on the directory")?;
            self.make_node(dir, &mut dg, S_IFREG | (mode & 0o7777), None, |_| {
                Vec::new()
            })?
        };
        // Nothing else can reach a file without a name: opening it now is
        // opening it at creation.
        let f = self.open_ino(ino, true, true, false)?;
        // ORDERING: before the handle is handed out (fs/mod.rs, `linkable`).
        f.cell().linkable.store(linkable, Ordering::Release);
        Ok(f)
    }

    /// `linkat(fd, "", ..., AT_EMPTY_PATH)`: the name `new` for open file
    /// `cell`. A file whose names were all removed cannot get one again
    /// (`NotFound`), except one made by [`Self::create_unnamed`] as linkable
    /// (once: the kernel's `I_LINKABLE`).
    pub(crate) fn link_cell(&self, cell: &Arc<Cell>, new: &str) -> Result<()> {
        let _g = self.begin(1)?;
        let _ns = self.inner.ns.lock();
        let Leaf { dir, name, slash } = self.resolve_parent(new, |_| Error::Exists)?;
        if cell.data.read().is_dir() {
            // Never a second name for a directory (which may be `dir`
            // itself); as linkat(2), a taken name is reported first.
            let dcell = self.cell(dir)?;
            let taken = self.entry_in(dir, &dcell.data.read(), name)?.is_some();
            return Err(if taken {
                Error::Exists
            } else {
                Error::NotPermitted("hard link to a directory")
            });
        }
        let cells = [self.cell(dir)?, cell.clone()];
        let mut locks = Self::lock_cells(&cells);
        let (dg, tg) = Self::dir_and_target(&mut locks, dir);
        if dg.freed || tg.freed {
            return Err(Error::NotFound);
        }
        // The order of linkat(2): the new name, then the file (vfs_link).
        if self.entry_in(dir, dg, name)?.is_some() {
            return Err(Error::Exists);
        }
        self.permit(&dg.attr, W | X, "write permission on the directory")?;
        if slash {
            return Err(Error::NotFound); // a new name "g/": the kernel's ENOENT
        }
        // ORDERING: under the namespace and inode locks (fs/mod.rs, `linkable`).
        if tg.attr.nlink == 0 && !cell.linkable.load(Ordering::Acquire) {
            return Err(Error::NotFound);
        }
        if tg.attr.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let op = Op::Link {
            dir,
            ino: cell.ino,
            file_type: dtype_of(tg.attr.mode),
            name: name.to_vec(),
            time_ns: now_ns(),
        };
        self.run_tx(&mut [(dir, dg), (cell.ino, tg)], &[op])?;
        // ORDERING: still under the namespace and inode locks.
        cell.linkable.store(false, Ordering::Release);
        Ok(())
    }

    /// Create a new regular file (fails with `Exists` if the name is taken) and open it read-write.
    pub fn create(&self, path: &str, mode: u32) -> Result<File> {
        let ino = self.new_node(path, S_IFREG | (mode & 0o7777))?;
        self.open_ino(ino, true, true, false)
    }

    /// Open a file. A symbolic link at the end of `path` is followed
    /// (`O_NOFOLLOW`: fails with `Loop`); with `create`, a link to nothing
    /// creates its target, as the kernel's `open(O_CREAT)`.
    pub fn open(&self, path: &str, opts: &OpenOptions) -> Result<File> {
        let mut path = Cow::Borrowed(path);
        for _ in 0..=MAX_SYMLINKS {
            match self.open_once(&path, opts)? {
                Ok(f) => return Ok(f),
                Err(next) => path = Cow::Owned(next),
            }
        }
        Err(Error::Loop)
    }

    /// [`Fs::open`] of `path`; `Ok(Err(p))`: `path` ends in a symbolic link
    /// to nothing, and `O_CREAT` creates its target: open `p` instead.
    fn open_once(&self, path: &str, opts: &OpenOptions) -> Result<Result<File, String>> {
        if (opts.create || opts.create_new) && names_dir(path) {
            // O_CREAT of "name/": EISDIR once the directory is found.
            self.resolve_parent(path, |_| Error::IsDir)?;
            return Err(Error::IsDir);
        }
        let existing = |ino: u64| -> Result<u64> {
            if self.cred.is_some() {
                // O_TRUNC needs write permission, even read-only (Linux).
                let want =
                    if opts.read { R } else { 0 } | if opts.write || opts.truncate { W } else { 0 };
                let a = self.cell(ino)?.data.read().attr;
                self.permit(&a, want, "permission to open the file")?;
            }
            Ok(ino)
        };
        let found = if opts.nofollow || opts.create_new {
            self.resolve_nofollow(path)
        } else {
            self.resolve(path)
        };
        let ino = match found {
            Ok(_) if opts.create_new => return Err(Error::Exists),
            Ok(ino) if opts.nofollow && self.cell(ino)?.data.read().is_symlink() => {
                return Err(Error::Loop)
            }
            Ok(ino) => existing(ino)?,
            Err(Error::NotFound) if opts.create || opts.create_new => {
                match self.new_node(path, S_IFREG | (opts.mode & 0o7777)) {
                    Ok(ino) => ino,
                    Err(Error::Exists) if !opts.create_new => {
                        // A link to nothing: create its target. Or a race
                        // lost to another creator: open theirs.
                        if let Some(next) = self.dangling_target(path, opts.nofollow)? {
                            return Ok(Err(next));
                        }
                        existing(self.resolve(path)?)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let f = self.open_ino(ino, opts.read, opts.write, opts.append)?;
        if opts.truncate {
            if opts.write {
                f.set_len(0)?;
            } else {
                // O_RDONLY | O_TRUNC truncates too, as Linux does.
                self.open_ino(ino, false, true, false)?.set_len(0)?;
            }
        }
        Ok(Ok(f))
    }

    /// If `path` ends in a symbolic link to nothing, where `open(O_CREAT)`
    /// creates the file: the link's target (an absolute one leaves the file
    /// system: `Escape`), as a path from the root. `nofollow`: `Loop`.
    fn dangling_target(&self, path: &str, nofollow: bool) -> Result<Option<String>> {
        let ino = self.resolve_nofollow(path)?;
        if !self.cell(ino)?.data.read().is_symlink() {
            return Ok(None);
        }
        if nofollow {
            return Err(Error::Loop);
        }
        let target = String::from_utf8_lossy(&self.link_target(ino)?).into_owned();
        if target.starts_with('/') {
            return Err(Error::Escape { path: target });
        }
        Ok(Some(format!("{}/{target}", dir_part(path))))
    }

    /// Open inode `ino` (a regular file) as a handle.
    pub(crate) fn open_ino(&self, ino: u64, read: bool, write: bool, append: bool) -> Result<File> {
        if write && self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let cell = self.cell(ino)?;
        {
            let d = cell.data.read();
            if d.freed {
                return Err(Error::NotFound);
            }
            if d.is_dir() {
                return Err(Error::IsDir);
            }
            if d.is_symlink() {
                return Err(Error::Loop); // only a followed link is opened
            }
            match d.attr.mode & S_IFMT {
                S_IFREG => {}
                S_IFCHR | S_IFBLK => {
                    return Err(Error::Access("device nodes do not open: udax is nodev"))
                }
                S_IFSOCK => return Err(Error::NoDevice("a socket file does not open")),
                _ => {
                    return Err(Error::NotSupported(
                        "a FIFO opens through the shim or a FUSE mount (a host pipe)",
                    ))
                }
            }
            // Counted under the inode lock: unlink decides "free now or at last
            // close" under the same lock.
            // ORDERING: the inode lock orders the count (fs/mod.rs, `open`).
            cell.open.fetch_add(1, Ordering::AcqRel);
        }
        Ok(File::new(self.clone(), cell, read, write, append))
    }

    /// Create a directory.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<()> {
        // As the kernel's mkdir: the permission bits and the sticky bit;
        // set-group-ID only from a set-group-ID parent (`new_owner`).
        self.new_node(path, S_IFDIR | (mode & 0o1777)).map(|_| ())
    }

    /// Remove a file name; the file lives on while open.
    pub fn unlink(&self, path: &str) -> Result<()> {
        let _g = self.begin(2)?;
        let _ns = self.inner.ns.lock();
        let Leaf { dir, name, slash } = self.resolve_parent(path, |_| Error::IsDir)?;
        let ino = self.lookup_in(dir, name)?;
        let cells = [self.cell(dir)?, self.cell(ino)?];
        let mut locks = Self::lock_cells(&cells);
        let (dg, tg) = Self::dir_and_target(&mut locks, dir);
        if tg.is_dir() {
            return Err(Error::IsDir);
        }
        if slash {
            return Err(Error::NotDir);
        }
        self.permit_remove(&dg.attr, &tg.attr)?;
        let mut ops = vec![Op::Unlink {
            dir,
            name: name.to_vec(),
            time_ns: now_ns(),
        }];
        // ORDERING: read under the inode write lock (fs/mod.rs, `open`).
        if tg.attr.nlink == 1 && cells[1].open.load(Ordering::Acquire) == 0 {
            ops.push(Op::FreeInode { ino });
        }
        self.run_tx(&mut [(dir, dg), (ino, tg)], &ops)
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, path: &str) -> Result<()> {
        let _g = self.begin(2)?;
        let _ns = self.inner.ns.lock();
        let Leaf { dir, name, .. } = self.resolve_parent(path, |n| match n {
            NoEntry::Root => Error::Busy("cannot remove the root directory".into()),
            NoEntry::Dot => Error::Invalid("cannot remove '.'"),
            NoEntry::DotDot => Error::NotEmpty,
        })?;
        let ino = self.lookup_in(dir, name)?;
        let cells = [self.cell(dir)?, self.cell(ino)?];
        let mut locks = Self::lock_cells(&cells);
        let (dg, tg) = Self::dir_and_target(&mut locks, dir);
        if !tg.is_dir() {
            return Err(Error::NotDir);
        }
        self.permit_remove(&dg.attr, &tg.attr)?;
        if !self.dir_is_empty(ino, tg)? {
            return Err(Error::NotEmpty);
        }
        let ops = [
            Op::Unlink {
                dir,
                name: name.to_vec(),
                time_ns: now_ns(),
            },
            Op::FreeInode { ino },
        ];
        self.run_tx(&mut [(dir, dg), (ino, tg)], &ops)?;
        self.moved_dirs();
        Ok(())
    }

    /// A new name `new` for the file `existing` (a symbolic link there is
    /// linked itself, as Linux's `link(2)`; [`Fs::link_following`] follows it).
    pub fn link(&self, existing: &str, new: &str) -> Result<()> {
        let cell = self.cell(self.resolve_nofollow(existing)?)?;
        // A rename or unlink of `existing` meanwhile: the link finds the file
        // without a name (NotFound) or under its new one, as in the kernel.
        self.link_cell(&cell, new)
    }

    /// `linkat(..., AT_SYMLINK_FOLLOW)`: as [`Fs::link`], following a
    /// symbolic link at the end of `existing`.
    pub fn link_following(&self, existing: &str, new: &str) -> Result<()> {
        let cell = self.cell(self.resolve(existing)?)?;
        // A rename or unlink of `existing` meanwhile: the link finds the file
        // without a name (NotFound) or under its new one, as in the kernel.
        self.link_cell(&cell, new)
    }

    /// Rename `from` to `to`, replacing `to` if it exists (a file by a file, an
    /// empty directory by a directory), atomically.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename2(from, to, Rename::Replace)
    }

    /// `renameat2`: rename as [`Rename`] says, atomically.
    pub fn rename2(&self, from: &str, to: &str, how: Rename) -> Result<()> {
        if how == Rename::Exchange {
            return self.exchange(from, to);
        }
        let _g = self.begin(5)?;
        let _ns = self.inner.ns.lock();
        let s =
            self.resolve_parent(from, |n| Error::Busy(format!("cannot rename {}", n.what())))?;
        let d = self.resolve_parent(to, |n| Error::Busy(format!("cannot replace {}", n.what())))?;
        let (sdir, sname, ddir, dname) = (s.dir, s.name, d.dir, d.name);
        let (src, src_type) = self.lookup_entry(sdir, sname)?;
        let src_is_dir = src_type == DT_DIR;
        if (s.slash || d.slash) && !src_is_dir {
            return Err(Error::NotDir);
        }
        let dst = match self.lookup_in(ddir, dname) {
            Ok(i) => Some(i),
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        if dst.is_some() && how == Rename::NoReplace {
            return Err(Error::Exists);
        }
        if dst == Some(src) {
            return Ok(()); // same file: POSIX says do nothing
        }
        if src_is_dir {
            self.not_under(ddir, src)?;
        }
        if let Some(d) = dst {
            // A destination above the source (the kernel's "target should
            // not be an ancestor of source"), also when the source is a file.
            if self.cell(d)?.data.read().is_dir() && self.not_under(sdir, d).is_err() {
                return Err(Error::NotEmpty);
            }
        }
        let mut cells = vec![self.cell(sdir)?, self.cell(ddir)?, self.cell(src)?];
        if let Some(d) = dst {
            cells.push(self.cell(d)?);
        }
        let dst_cell = dst.map(|_| cells[3].clone());
        let mut locks = Self::lock_cells(&cells);
        if self.cred.is_some() {
            let attr = |i: u64| locks.iter().find(|(j, _)| *j == i).expect("locked").1.attr;
            self.permit_remove(&attr(sdir), &attr(src))?;
            match dst {
                Some(d) => self.permit_remove(&attr(ddir), &attr(d))?,
                None => self.permit(&attr(ddir), W | X, "write permission on the directory")?,
            }
            if src_is_dir && sdir != ddir {
                // Its `..` changes.
                self.permit(&attr(src), W, "write permission on the moved directory")?;
            }
        }
        let t = now_ns();
        let mut ops = Vec::with_capacity(5);
        if let Some(d) = dst {
            let dg = &locks.iter().find(|(i, _)| *i == d).expect("locked").1;
            match (src_is_dir, dg.is_dir()) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.dir_is_empty(d, dg)? => return Err(Error::NotEmpty),
                _ => {}
            }
            ops.push(Op::Unlink {
                dir: ddir,
                name: dname.to_vec(),
                time_ns: t,
            });
            // ORDERING: read under the inode write lock (fs/mod.rs, `open`).
            let last = dg.is_dir()
                || (dg.attr.nlink == 1
                    && dst_cell
                        .as_ref()
                        .is_some_and(|c| c.open.load(Ordering::Acquire) == 0));
            if last {
                ops.push(Op::FreeInode { ino: d });
            }
        }
        ops.push(Op::Unlink {
            dir: sdir,
            name: sname.to_vec(),
            time_ns: t,
        });
        ops.push(Op::Link {
            dir: ddir,
            ino: src,
            file_type: src_type,
            name: dname.to_vec(),
            time_ns: t,
        });
        if src_is_dir && sdir != ddir {
            ops.push(Op::SetParent {
                ino: src,
                parent: ddir,
            });
        }
        let mut held: Vec<_> = locks.iter_mut().map(|(i, g)| (*i, &mut **g)).collect();
        self.run_tx(&mut held, &ops)?;
        // A directory moved (and the one it replaced, if any, is gone).
        if src_is_dir {
            self.moved_dirs();
        }
        Ok(())
    }

    /// Refuse to move directory `dir` into `into` when that is `dir` or
    /// below it.
    fn not_under(&self, into: u64, dir: u64) -> Result<()> {
        let mut p = into;
        loop {
            if p == dir {
                return Err(Error::Invalid("cannot move a directory into itself"));
            }
            if p == ROOT_INO {
                return Ok(());
            }
            p = self.cell(p)?.data.read().attr.parent;
        }
    }

    /// `RENAME_EXCHANGE`: swap the entries `a` and `b` (files or
    /// directories, both existing) in one transaction.
    fn exchange(&self, a: &str, b: &str) -> Result<()> {
        let _g = self.begin(6)?;
        let _ns = self.inner.ns.lock();
        let busy = |n: NoEntry| Error::Busy(format!("cannot exchange {}", n.what()));
        let a = self.resolve_parent(a, busy)?;
        let b = self.resolve_parent(b, busy)?;
        let (adir, aname, bdir, bname) = (a.dir, a.name, b.dir, b.name);
        let entry = |dir: u64, name: &[u8]| -> Result<(u64, u8)> {
            let cell = self.cell(dir)?;
            let d = cell.data.read();
            self.entry_in(dir, &d, name)?.ok_or(Error::NotFound)
        };
        let (ai, at) = entry(adir, aname)?;
        let (bi, bt) = entry(bdir, bname)?;
        if (a.slash && at != DT_DIR) || (b.slash && bt != DT_DIR) {
            return Err(Error::NotDir);
        }
        if ai == bi {
            return Ok(()); // one file under two names: nothing to swap
        }
        if adir != bdir {
            if at == DT_DIR {
                self.not_under(bdir, ai)?;
            }
            if bt == DT_DIR {
                self.not_under(adir, bi)?;
            }
        }
        let cells = [
            self.cell(adir)?,
            self.cell(bdir)?,
            self.cell(ai)?,
            self.cell(bi)?,
        ];
        let mut locks = Self::lock_cells(&cells);
        if self.cred.is_some() {
            let attr = |i: u64| locks.iter().find(|(j, _)| *j == i).expect("locked").1.attr;
            self.permit_remove(&attr(adir), &attr(ai))?;
            self.permit_remove(&attr(bdir), &attr(bi))?;
        }
        let t = now_ns();
        let mut ops = vec![
            Op::Unlink {
                dir: adir,
                name: aname.to_vec(),
                time_ns: t,
            },
            Op::Unlink {
                dir: bdir,
                name: bname.to_vec(),
                time_ns: t,
            },
            Op::Link {
                dir: adir,
                ino: bi,
                file_type: bt,
                name: aname.to_vec(),
                time_ns: t,
            },
            Op::Link {
                dir: bdir,
                ino: ai,
                file_type: at,
                name: bname.to_vec(),
                time_ns: t,
            },
        ];
        if adir != bdir {
            if at == DT_DIR {
                ops.push(Op::SetParent {
                    ino: ai,
                    parent: bdir,
                });
            }
            if bt == DT_DIR {
                ops.push(Op::SetParent {
                    ino: bi,
                    parent: adir,
                });
            }
        }
        let mut held: Vec<_> = locks.iter_mut().map(|(i, g)| (*i, &mut **g)).collect();
        self.run_tx(&mut held, &ops)?;
        if at == DT_DIR || bt == DT_DIR {
            self.moved_dirs();
        }
        Ok(())
    }

    /// chmod.
    pub fn set_permissions(&self, path: &str, perm: u32) -> Result<()> {
        let ino = self.resolve(path)?;
        let cell = self.cell(ino)?;
        self.set_permissions_of(&cell, perm)
    }

    /// `fchmodat(AT_SYMLINK_NOFOLLOW)`: as [`Fs::set_permissions`]; a
    /// symbolic link's own mode cannot change (`NotSupported`, as Linux).
    pub fn set_permissions_nofollow(&self, path: &str, perm: u32) -> Result<()> {
        let ino = self.resolve_nofollow(path)?;
        let cell = self.cell(ino)?;
        if cell.data.read().is_symlink() {
            return Err(Error::NotSupported("changing the mode of a symbolic link"));
        }
        self.set_permissions_of(&cell, perm)
    }

    pub(crate) fn set_permissions_of(&self, cell: &Cell, perm: u32) -> Result<()> {
        let _g = self.begin(1)?;
        let ino = cell.ino;
        let mut d = cell.data.write();
        if d.freed {
            return Err(Error::NotFound);
        }
        self.permit_owner(&d.attr)?;
        // As chmod(2): a caller outside the file's group cannot set its
        // set-group-ID bit (it is cleared, not refused).
        let perm = match self.who() {
            Some(c) if !c.is_root() && c.gid != d.attr.gid && !c.groups.contains(&d.attr.gid) => {
                perm & !S_ISGID
            }
            _ => perm,
        };
        let (mode, uid, gid) = (
            (d.attr.mode & S_IFMT) | (perm & 0o7777),
            d.attr.uid,
            d.attr.gid,
        );
        self.set_mode_tx(ino, &mut d, mode, uid, gid)
    }

    /// Log and apply a new mode and owner of inode `ino` (`d` its data,
    /// locked); the change time becomes now.
    fn set_mode_tx(
        &self,
        ino: u64,
        d: &mut InodeData,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let op = Op::SetMode {
            ino,
            mode,
            uid,
            gid,
            time_ns: now_ns(),
        };
        self.run_tx(&mut [(ino, d)], &[op])
    }

    /// chown (`None` leaves the owner or the group as it is, as -1 does).
    pub fn set_owner(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let ino = self.resolve(path)?;
        let cell = self.cell(ino)?;
        self.set_owner_of(&cell, uid, gid)
    }

    /// `lchown`: as [`Fs::set_owner`], of a symbolic link itself.
    pub fn set_owner_nofollow(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let ino = self.resolve_nofollow(path)?;
        let cell = self.cell(ino)?;
        self.set_owner_of(&cell, uid, gid)
    }

    /// chown of `cell`, with the kernel's rules for a caller
    /// ([`Fs::as_caller`]): only root gives a file to another user; the
    /// owner may give it to one of their own groups; anything else is
    /// EPERM. A chown of a file that is not a directory clears its
    /// set-user-ID bit, and its set-group-ID bit where group execution is
    /// on (as the kernel's `chown_common`: for root too, and for -1/-1);
    /// the change time becomes now, even when nothing changes.
    pub(crate) fn set_owner_of(
        &self,
        cell: &Cell,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let _g = self.begin(1)?;
        let ino = cell.ino;
        let mut d = cell.data.write();
        if d.freed {
            return Err(Error::NotFound);
        }
        let a = &d.attr;
        if let Some(c) = self.who() {
            if !c.is_root() {
                let uid_ok = uid.is_none_or(|u| u == a.uid);
                let gid_ok = gid.is_none_or(|g| g == a.gid || c.in_group(g));
                if !uid_ok || !gid_ok || (c.uid != a.uid && (uid.is_some() || gid.is_some())) {
                    return Err(Error::NotPermitted(
                        "only root may give a file away, and its owner only to one of their groups",
                    ));
                }
            }
        }
        let mut mode = a.mode;
        if mode & S_IFMT != S_IFDIR {
            mode = without_privs(mode);
        }
        let (uid, gid) = (uid.unwrap_or(a.uid), gid.unwrap_or(a.gid));
        self.set_mode_tx(ino, &mut d, mode, uid, gid)
    }

    /// A write, truncate or fallocate of `cell` (or a client's report of
    /// its writes in place) by the caller: as the kernel's
    /// `file_remove_privs`, a caller other than root (no `CAP_FSETID`)
    /// clears a regular file's set-user-ID bit and its group-executable
    /// set-group-ID bit. A plain mount (no caller) changes nothing.
    pub(crate) fn remove_privs(&self, cell: &Cell) -> Result<()> {
        if self.cred.is_none() {
            return Ok(());
        }
        let mode = cell.data.read().attr.mode;
        if mode & S_IFMT != S_IFREG || without_privs(mode) == mode {
            return Ok(());
        }
        // Asked only now: a thread's credentials cost system calls.
        if self.who().is_none_or(|c| c.is_root()) {
            return Ok(());
        }
        let _g = self.begin(1)?;
        let mut d = cell.data.write();
        if d.freed || without_privs(d.attr.mode) == d.attr.mode {
            return Ok(());
        }
        let (mode, uid, gid) = (without_privs(d.attr.mode), d.attr.uid, d.attr.gid);
        self.set_mode_tx(cell.ino, &mut d, mode, uid, gid)
    }

    /// `utimensat`: set the access and/or modification time (ns since the
    /// epoch; `None` leaves it, as `UTIME_OMIT`); the change time becomes now.
    pub fn set_times(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        let ino = self.resolve(path)?;
        self.set_times_ino(ino, atime_ns, mtime_ns)
    }

    /// `utimensat(AT_SYMLINK_NOFOLLOW)`: as [`Fs::set_times`], of a
    /// symbolic link itself.
    pub fn set_times_nofollow(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        let ino = self.resolve_nofollow(path)?;
        self.set_times_ino(ino, atime_ns, mtime_ns)
    }

    fn set_times_ino(&self, ino: u64, atime_ns: Option<u64>, mtime_ns: Option<u64>) -> Result<()> {
        let cell = self.cell(ino)?;
        self.permit_times(&cell.data.read().attr, atime_ns, mtime_ns)?;
        self.set_times_of(&cell, atime_ns, mtime_ns)
    }

    /// utimes' permission rule (the kernel's `setattr_prepare`): setting
    /// both times to now ([`TIME_NOW`], `UTIME_NOW` or a null `times`) is
    /// for the owner or anyone who may write the file; any explicit time
    /// is for the owner only (EPERM), root aside.
    pub(crate) fn permit_times(
        &self,
        attr: &crate::format::Attr,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        let touch = atime_ns == Some(TIME_NOW) && mtime_ns == Some(TIME_NOW);
        match self.permit_owner(attr) {
            Err(_) if touch => self.permit(attr, W, "write permission to set the times to now"),
            r => r,
        }
    }

    pub(crate) fn set_times_of(
        &self,
        cell: &Cell,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        let _g = self.begin(1)?;
        let mut d = cell.data.write();
        if d.freed {
            return Err(Error::NotFound);
        }
        // An explicit mtime replaces a lazy one not yet logged.
        // ORDERING: a time value, taken under the inode write lock (fs/mod.rs,
        // `mtime_pending`).
        let pending = if mtime_ns.is_some() {
            cell.mtime_pending.swap(0, Ordering::AcqRel)
        } else {
            cell.mtime_pending.load(Ordering::Acquire)
        };
        let a = d.attr;
        let now = now_ns();
        let at = |t: u64| if t == TIME_NOW { now } else { t };
        let op = Op::Times {
            ino: cell.ino,
            atime_ns: atime_ns.map_or(a.atime_ns, at),
            mtime_ns: mtime_ns.map_or(a.mtime_ns.max(pending), at),
            ctime_ns: now.max(a.ctime_ns),
        };
        self.run_tx(&mut [(cell.ino, &mut *d)], &[op])
    }
}

/// `mode` without the set-user-ID bit and, where group execution is on,
/// the set-group-ID bit (without it, set-group-ID marks mandatory locking
/// and stays), as the kernel's `should_remove_suid`.
fn without_privs(mode: u32) -> u32 {
    let mut m = mode & !S_ISUID;
    if m & 0o010 != 0 {
        m &= !S_ISGID;
    }
    m
}
