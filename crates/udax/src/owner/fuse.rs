//! The FUSE front end (issue 19, docs/fuse.md): a kernel mount served by the
//! device's owner, from the owner's own `Fs`.
//!
//! `udax mount` makes the mount itself (mount(2) as root, `fusermount3`
//! otherwise) and hands the `/dev/fuse` connection to the owner with
//! `Request::Mount` (SCM_RIGHTS); [`start`] answers the kernel's INIT and
//! serves the connection on threads of the owner until it is unmounted.
//! While it runs it counts as a client, so the owner does not exit idle;
//! when the owner dies the connection dies with it, and the mount reports
//! `ENOTCONN` until `udax mount` replaces it.
//!
//! The kernel speaks in inode numbers, the `Fs` in paths: this module keeps,
//! per inode the kernel knows (its lookup count), the names it was found by
//! and, for a directory, its birth time, so a path is found again after a
//! rename by another client (`Fs::dir_path_of`). Every call runs with the
//! requesting process's uid, gid and groups (`Fs::as_caller`), on top of
//! the kernel's own checks (`default_permissions`). Changes go through the
//! owner's machinery, as a client's calls do: a write that fills a hole or
//! grows a file, a truncate, a fallocate, a clone recall the layout leases
//! of the library and shim clients first, and every change drops what
//! their attribute caches hold of it: a change of names is traced as a
//! client's (`change_names`: the names and inodes it changed), a change of
//! one file names its inode (`uncache`), a mode or owner drops everything.
//! Regular files are opened `FOPEN_DIRECT_IO`:
//! the kernel keeps no copy of file data that a DAX client's store could
//! make stale.

use super::grants::{self, Settle};
use super::{
    blocks_changed, change_lock, changes_layout, publish_space, publish_trace,
    recall_leases as recall, uncache, Shared,
};
use crate::format::{ROOT_INO, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK};
use crate::fs::locks::{LockKind, LockOwner as TableOwner};
use crate::fs::perm::Cred;
use crate::fs::{
    child_path, Error, File, Fs, OpenOptions, Rename, Result, Stat, COOKIE_DOT, COOKIE_DOTDOT,
};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::BLOCK_SIZE;
use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep an entry or attributes without asking
/// again: not at all. Other processes change the file system through the
/// owner without the kernel knowing (library and shim clients), so a cached
/// size, mode or name could be stale; each path walk asks (docs/fuse.md).
const TTL: Duration = Duration::ZERO;
/// Cookies per directory page read for readdir.
const DIR_PAGE: usize = 128;
/// The readdir offset past the last entry (no cookie is larger).
const DIR_END: u64 = i64::MAX as u64;
/// One entry of a readdir page: inode, `d_type`, name, the offset after it.
type DirSlot = (u64, u8, String, u64);

/// The largest write the kernel sends in one request (and read it asks).
pub const MAX_WRITE: u32 = 1 << 20;

/// Threads serving one mount: a blocked lock wait or a slow fsync does not
/// stop the others.
const THREADS: usize = 4;

/// Names kept per inode (hard links): the first that still resolves is used.
const NAMES_KEPT: usize = 8;

/// How long a caller's supplementary groups (read from `/proc`) are reused.
const GROUPS_TTL: Duration = Duration::from_secs(1);

/// Largest copy made by one `copy_file_range` request that cannot clone.
const COPY_CHUNK: u64 = 16 << 20;

/// A mount being served, as the owner lists it.
#[derive(Debug)]
pub(super) struct Live {
    /// Its client id (to take it off the list, and its locks' process).
    pub id: u64,
    pub dir: PathBuf,
    /// Inodes (and the byte offset from which) whose cached pages the
    /// kernel must drop, for the thread that tells it (a client changed
    /// their layout). Never told from a thread that holds a change lock: the
    /// kernel may be waiting, with the pages locked, for a FUSE request that
    /// waits for that lock.
    inval: std::sync::mpsc::Sender<(u64, i64)>,
}

/// Serve the FUSE connection `fd` of a mount at `dir` (for the log) on the
/// owner's threads: answer the kernel's INIT here, then serve until the
/// mount goes. `id` is a fresh client id.
pub(super) fn start(
    sh: &Arc<Shared>,
    id: u64,
    fd: OwnedFd,
    dir: &Path,
    read_only: bool,
) -> Result<()> {
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::Io(e.into()))?;
    let rdev = st.st_rdev;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || (rustix::fs::major(rdev), rustix::fs::minor(rdev)) != (10, 229)
    {
        return Err(Error::Invalid("Mount needs a /dev/fuse descriptor"));
    }
    let front = Front {
        sh: sh.clone(),
        read_only: read_only || sh.fs.is_read_only(),
        nodes: Mutex::new(HashMap::new()),
        handles: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        groups: Mutex::new(HashMap::new()),
        lock_owners: Mutex::new(HashMap::new()),
    };
    let mut config = fuser::Config::default();
    // The kernel enforces who may use the mount (`allow_other` or the
    // mounting user) and the mode bits (`default_permissions`).
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    let session =
        fuser::Session::from_fd(front, fd, fuser::SessionACL::All, config).map_err(Error::Io)?;
    let notifier = session.notifier();
    let (inval, todo) = std::sync::mpsc::channel::<(u64, i64)>();
    std::thread::Builder::new()
        .name("udax-fuse-inval".into())
        .spawn(move || {
            // Ends when the mount is taken off the list (its sender drops).
            for (ino, off) in todo {
                // ENOENT: the kernel does not know the inode; nothing cached.
                let _ = notifier.inval_inode(INodeNo(ino), off, 0);
            }
        })
        .map_err(Error::Io)?;
    sh.fuse.lock().push(Live {
        id,
        dir: dir.to_path_buf(),
        inval,
    });
    // A mount keeps the owner from exiting idle, as a connected client does.
    // ORDERING: Relaxed: see `Owner::run` (compared with zero under the
    // `last_left` lock).
    sh.clients.fetch_add(1, Ordering::Relaxed);
    let (shared, at) = (sh.clone(), dir.to_path_buf());
    let spawned = std::thread::Builder::new()
        .name("udax-fuse".into())
        .spawn(move || {
            match session.run() {
                Ok(()) => tracing::info!("{}: unmounted", at.display()),
                Err(e) => tracing::warn!("{}: the FUSE session ended: {e}", at.display()),
            }
            shared.fuse.lock().retain(|l| l.id != id);
            shared.locks.release_process(id);
            let mut last = shared.last_left.lock();
            *last = Instant::now();
            // ORDERING: Relaxed: under the `last_left` lock.
            shared.clients.fetch_sub(1, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        sh.fuse.lock().retain(|l| l.id != id);
        // ORDERING: Relaxed, as above.
        sh.clients.fetch_sub(1, Ordering::Relaxed);
        return Err(Error::Io(e));
    }
    tracing::info!("serving a FUSE mount at {}", dir.display());
    Ok(())
}

/// A client changed the layout of inode `ino` from file block `from_blk`
/// on: every mount drops the kernel's cached pages of it (those of a
/// `MAP_SHARED` mapping through the mount), soon after, from a thread of
/// its own (see `Live::inval`).
pub(super) fn invalidate(sh: &Shared, ino: u64, from_blk: u64) {
    let mounts = sh.fuse.lock();
    if mounts.is_empty() {
        return;
    }
    let off = i64::try_from(from_blk.saturating_mul(BLOCK_SIZE)).unwrap_or(i64::MAX);
    for l in mounts.iter() {
        let _ = l.inval.send((ino, off));
    }
}

/// A caller's uid, gid, supplementary groups, and when they were read.
type Groups = (u32, u32, Vec<u32>, Instant);

/// An inode the kernel holds (looked up and not yet forgotten).
#[derive(Debug, Default)]
struct Node {
    lookups: u64,
    /// (parent directory, name) it was found by, newest last.
    names: Vec<(u64, String)>,
    /// A directory: its birth time and last known path.
    dir: Option<(u64, String)>,
}

/// An open file or directory.
#[derive(Debug)]
enum Handle {
    File {
        file: File,
        /// `O_APPEND`: each write goes to the end of file as it is then.
        append: bool,
    },
    Dir {
        path: String,
        /// The parent's inode number (for `..`).
        parent: u64,
    },
}

/// The file system as the kernel sees it through one mount.
#[derive(Debug)]
struct Front {
    sh: Arc<Shared>,
    read_only: bool,
    nodes: Mutex<HashMap<u64, Node>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Per pid: (uid, gid, supplementary groups, when read).
    groups: Mutex<HashMap<u32, Groups>>,
    /// The kernel's POSIX lock owners, as lock-table processes.
    lock_owners: Mutex<HashMap<u64, u64>>,
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn stale(what: &str) -> Error {
    Error::Remote {
        errno: libc::ESTALE,
        message: format!("{what}: renamed or removed by another process"),
    }
}

fn name_str(name: &OsStr) -> Result<&str> {
    name.to_str().ok_or(Error::Invalid("udax names are UTF-8"))
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn ns_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

fn kind_of(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFDIR => FileType::Directory,
        S_IFLNK => FileType::Symlink,
        S_IFIFO => FileType::NamedPipe,
        S_IFCHR => FileType::CharDevice,
        S_IFBLK => FileType::BlockDevice,
        S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn attr(s: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.blocks,
        atime: time(s.atime_ns),
        mtime: time(s.mtime_ns),
        ctime: time(s.ctime_ns),
        crtime: time(s.btime_ns),
        kind: kind_of(s.mode),
        perm: (s.mode & 0o7777) as u16,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev as u32,
        blksize: s.blksize,
        flags: 0,
    }
}

/// The byte range of a FUSE lock (`end` inclusive, `OFFSET_MAX` for "to
/// the end of file") as the lock table's (end exclusive, `u64::MAX`).
fn lock_range(start: u64, end: u64) -> std::ops::Range<u64> {
    let end = if end >= i64::MAX as u64 {
        u64::MAX
    } else {
        end + 1
    };
    start..end
}

fn lock_kind(typ: i32) -> Option<LockKind> {
    match typ {
        libc::F_RDLCK => Some(LockKind::Read),
        libc::F_WRLCK => Some(LockKind::Write),
        _ => None,
    }
}

impl Front {
    /// The file system as the caller of `req` sees it.
    /// One page of directory `path` (inode `ino`, parent `parent`) from
    /// FUSE offset `at` on: each entry as `(inode, d_type, name, offset
    /// after it)`, and where the next page starts (`None`: the last).
    /// Offsets are listing positions, as the shim's (docs/preload.md,
    /// "Directory streams"): `.` is 0, `..` is 1, any other the cookie
    /// (name hash) of the first entry at or after it, the end
    /// `DIR_END`; an entry keeps its cookie while it exists, so a listing
    /// returns every entry present throughout exactly once whatever
    /// changes between calls (names sharing a cookie may repeat when a
    /// call ends inside their group).
    fn dir_page(
        &self,
        path: &str,
        ino: u64,
        parent: u64,
        at: u64,
    ) -> Result<(Vec<DirSlot>, Option<u64>)> {
        let mut out = Vec::new();
        if at == COOKIE_DOT {
            out.push((ino, crate::format::DT_DIR, ".".to_string(), COOKIE_DOTDOT));
        }
        if at <= COOKIE_DOTDOT {
            out.push((
                parent,
                crate::format::DT_DIR,
                "..".to_string(),
                COOKIE_DOTDOT + 1,
            ));
        }
        // From the start: 0 (a listing in one page is checked against
        // the directory's count).
        let from = if at <= COOKIE_DOTDOT { 0 } else { at };
        let page = self.sh.fs.read_dir_page(path, from, DIR_PAGE)?;
        if page.next.is_some_and(|n| n <= from) {
            return Err(Error::Invalid("a listing that does not advance"));
        }
        let cookies: Vec<u64> = page.entries.iter().map(|(c, _)| *c).collect();
        for (i, (_, e)) in page.entries.into_iter().enumerate() {
            let next = cookies
                .get(i + 1)
                .copied()
                .unwrap_or(page.next.unwrap_or(DIR_END));
            out.push((e.ino, e.file_type, e.name, next));
        }
        Ok((out, page.next))
    }

    fn caller(&self, req: &Request) -> Fs {
        let (uid, gid, pid) = (req.uid(), req.gid(), req.pid());
        let groups = {
            let mut m = self.groups.lock();
            match m.get(&pid) {
                Some((u, g, gs, at)) if *u == uid && *g == gid && at.elapsed() < GROUPS_TTL => {
                    gs.clone()
                }
                _ => {
                    if m.len() > 1024 {
                        m.retain(|_, v| v.3.elapsed() < GROUPS_TTL);
                    }
                    // A request from the kernel itself (pid 0), or from a
                    // process gone meanwhile: no supplementary groups.
                    let gs = super::cred::groups_of(pid as i32).unwrap_or_default();
                    m.insert(pid, (uid, gid, gs.clone(), Instant::now()));
                    gs
                }
            }
        };
        self.sh.fs.as_caller(Cred { uid, gid, groups })
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A change of the mount no key describes (a directory's mode or
    /// owner): every client drops every cached answer.
    fn changed(&self) {
        uncache(&self.sh, None);
        publish_space(&self.sh);
    }

    /// A change of inode `ino`'s data or attributes alone: the clients
    /// drop what they cached of it (for a change of a file's layout, done
    /// inside its change lock already: `truncate`, `fallocate`).
    fn changed_ino(&self, ino: u64) {
        uncache(&self.sh, Some(ino));
        publish_space(&self.sh);
    }

    /// Run `op`, a change of names made through the mount, traced as a
    /// client's (`answer_names`): the change log names the names and
    /// inodes it changed, so the clients drop only the answers that
    /// depend on them (everything, when the trace cannot say).
    fn change_names<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let (r, t) = crate::fs::trace::traced(op);
        publish_trace(&self.sh, &t);
        publish_space(&self.sh);
        r
    }

    /// The kernel now holds one more reference to `s.ino`, found as `name`
    /// in `parent` (at `path`).
    fn remember(&self, parent: u64, name: &str, path: &str, s: &Stat) {
        let mut m = self.nodes.lock();
        let n = m.entry(s.ino).or_default();
        n.lookups += 1;
        if let Some(i) = n.names.iter().position(|(p, x)| *p == parent && x == name) {
            let e = n.names.remove(i);
            n.names.push(e);
        } else {
            if n.names.len() >= NAMES_KEPT {
                n.names.remove(0);
            }
            n.names.push((parent, name.to_string()));
        }
        if s.is_dir() {
            n.dir = Some((s.btime_ns, path.to_string()));
        }
    }

    /// `name` in `parent` no longer names `ino`.
    fn forget_name(&self, ino: u64, parent: u64, name: &str) {
        if let Some(n) = self.nodes.lock().get_mut(&ino) {
            n.names.retain(|(p, x)| !(*p == parent && x == name));
        }
    }

    /// The current path of directory `ino`.
    fn dir_path(&self, ino: u64) -> Result<String> {
        if ino == ROOT_INO {
            return Ok("/".into());
        }
        let (btime, hint) = self
            .nodes
            .lock()
            .get(&ino)
            .and_then(|n| n.dir.clone())
            .ok_or_else(|| stale("a directory the kernel holds"))?;
        let path = self
            .sh
            .fs
            .dir_path_of(ino, btime, &hint)
            .map_err(|e| match e {
                Error::NotFound => stale("a directory"),
                e => e,
            })?;
        if path != hint {
            if let Some(n) = self.nodes.lock().get_mut(&ino) {
                n.dir = Some((btime, path.clone()));
            }
        }
        Ok(path)
    }

    /// A current path of inode `ino`.
    fn path(&self, ino: u64) -> Result<String> {
        let (is_dir, names) = {
            let m = self.nodes.lock();
            match m.get(&ino) {
                Some(n) => (n.dir.is_some(), n.names.clone()),
                None if ino == ROOT_INO => (true, Vec::new()),
                None => return Err(stale("an inode the kernel holds")),
            }
        };
        if is_dir {
            return self.dir_path(ino);
        }
        for (parent, name) in names.iter().rev() {
            if let Ok(d) = self.dir_path(*parent) {
                let p = child_path(&d, name);
                if self.sh.fs.resolve_nofollow(&p).ok() == Some(ino) {
                    return Ok(p);
                }
            }
        }
        Err(stale("a file"))
    }

    /// The path of `name` in directory `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> Result<(String, String)> {
        let name = name_str(name)?;
        Ok((child_path(&self.dir_path(parent)?, name), name.to_string()))
    }

    /// A file the kernel has open as `fh`, if it is one of this mount's.
    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>> {
        self.handles.lock().get(&fh.0).cloned().ok_or(Error::BadFd)
    }

    fn file(&self, fh: FileHandle) -> Result<(Arc<Handle>, bool)> {
        let h = self.handle(fh)?;
        match &*h {
            Handle::File { append, .. } => {
                let a = *append;
                Ok((h, a))
            }
            Handle::Dir { .. } => Err(Error::IsDir),
        }
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        // ORDERING: Relaxed: a unique-id counter.
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    /// An open file of inode `ino` (for attributes of an unlinked file).
    fn open_file_of(&self, ino: u64) -> Option<Arc<Handle>> {
        self.handles
            .lock()
            .values()
            .find(|h| matches!(&***h, Handle::File { file, .. } if file.ino() == ino))
            .cloned()
    }

    fn stat_ino(&self, ino: u64, fh: Option<FileHandle>) -> Result<Stat> {
        grants::settle(&self.sh, ino, Settle::Everyone)?;
        if let Some(fh) = fh {
            if let Ok(h) = self.handle(fh) {
                if let Handle::File { file, .. } = &*h {
                    return file.stat();
                }
            }
        }
        match self.path(ino).and_then(|p| self.sh.fs.lstat(&p)) {
            Ok(s) if s.ino == ino => Ok(s),
            Ok(_) => Err(stale("an inode")),
            Err(e) => match self.open_file_of(ino) {
                Some(h) => match &*h {
                    Handle::File { file, .. } => file.stat(),
                    Handle::Dir { .. } => Err(e),
                },
                None => Err(e),
            },
        }
    }

    /// Set the size of `f` (open for writing), recalling the clients'
    /// leases first (as the owner's `Truncate`).
    fn truncate(&self, f: &File, size: u64) -> Result<()> {
        let lock = change_lock(&self.sh, f.ino());
        let _g = lock.lock();
        grants::settle_locked(&self.sh, f.ino(), Settle::Everyone)?;
        let from = size.min(f.len()) / BLOCK_SIZE;
        recall(&self.sh, f.ino(), None, size < f.len(), from..u64::MAX)?;
        let r = f.set_len(size);
        // The clients drop what they cached of the file before its change
        // lock goes (as after a write).
        uncache(&self.sh, Some(f.ino()));
        r
    }

    /// Write `data` at `off` (at the end of file, for `append`), recalling
    /// the clients' leases first when the write changes the layout (as the
    /// owner's `Write` and `Append`); the clients' cached attributes of the
    /// file go before the change lock.
    fn write(&self, f: &File, append: bool, off: u64, data: &[u8]) -> Result<usize> {
        let lock = change_lock(&self.sh, f.ino());
        let _g = lock.lock();
        grants::settle_locked(&self.sh, f.ino(), Settle::Everyone)?;
        let at = if append { f.len() } else { off };
        let len = data.len() as u64;
        if changes_layout(f, at, len) {
            recall(
                &self.sh,
                f.ino(),
                None,
                false,
                blocks_changed(at, len, f.len()),
            )?;
        }
        let n = f.write_at(data, at);
        // The clients drop what they cached of the file before its change
        // lock goes (as the owner's `answer`): no lease answered after the
        // write shows a size a cached `stat` does not.
        uncache(&self.sh, Some(f.ino()));
        publish_space(&self.sh);
        n
    }

    fn read(&self, f: &File, off: u64, size: u32) -> Result<Vec<u8>> {
        grants::settle(&self.sh, f.ino(), Settle::Everyone)?;
        let want = (size as u64).min(f.len().saturating_sub(off)) as usize;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = f.read_at(&mut buf[got..], off + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn fallocate(&self, f: &File, mode: u32, offset: u64, len: u64) -> Result<()> {
        // (The change lock is reentrant: `fallocate_recalled` takes it too.)
        let lock = change_lock(&self.sh, f.ino());
        let _g = lock.lock();
        let r = super::fallocate_recalled(&self.sh, f, mode, offset, len, None);
        uncache(&self.sh, Some(f.ino()));
        r
    }

    /// `SEEK_DATA`/`SEEK_HOLE` from `off`, from the file's extents.
    fn seek(&self, f: &File, off: u64, whence: i32) -> Result<u64> {
        grants::settle(&self.sh, f.ino(), Settle::Everyone)?;
        let size = f.len();
        if off >= size {
            return Err(Error::Remote {
                errno: libc::ENXIO,
                message: "seek at or past the end of file".into(),
            });
        }
        let mut ext: Vec<(u64, u64)> = f
            .extents_shared()
            .into_iter()
            .map(|(e, _)| (e.file_blk * BLOCK_SIZE, (e.file_blk + e.len) * BLOCK_SIZE))
            .collect();
        ext.sort_unstable();
        match whence {
            libc::SEEK_DATA => ext
                .iter()
                .find(|&&(_, b)| b > off)
                .map(|&(a, _)| a.max(off))
                .filter(|&p| p < size)
                .ok_or(Error::Remote {
                    errno: libc::ENXIO,
                    message: "no data past the offset".into(),
                }),
            libc::SEEK_HOLE => {
                let mut at = off;
                for &(a, b) in &ext {
                    if b <= at {
                        continue;
                    }
                    if a > at {
                        break;
                    }
                    at = b;
                }
                Ok(at.min(size))
            }
            _ => Err(Error::Invalid("lseek whence")),
        }
    }

    /// `copy_file_range`: a clone (shared blocks) where every offset and
    /// the length are whole blocks, else a copy of up to [`COPY_CHUNK`].
    fn copy_range(&self, s: &File, s_off: u64, d: &File, d_off: u64, len: u64) -> Result<u64> {
        grants::settle(&self.sh, s.ino(), Settle::Everyone)?;
        grants::settle(&self.sh, d.ino(), Settle::Everyone)?;
        let len = len.min(s.len().saturating_sub(s_off));
        if len == 0 {
            return Ok(0);
        }
        let aligned = [s_off, d_off, len]
            .iter()
            .all(|x| x.is_multiple_of(BLOCK_SIZE));
        if aligned && s.ino() != d.ino() {
            let len = len.min(1 << 30);
            let (a, b) = (s.ino().min(d.ino()), s.ino().max(d.ino()));
            let (la, lb) = (change_lock(&self.sh, a), change_lock(&self.sh, b));
            let _ga = la.lock();
            let _gb = lb.lock();
            grants::settle_locked(&self.sh, a, Settle::Everyone)?;
            grants::settle_locked(&self.sh, b, Settle::Everyone)?;
            recall(
                &self.sh,
                s.ino(),
                None,
                false,
                blocks_changed(s_off, len, s.len()),
            )?;
            recall(
                &self.sh,
                d.ino(),
                None,
                true,
                blocks_changed(d_off, len, d.len()),
            )?;
            match self.sh.fs.clone_range(s, s_off, d, d_off, len) {
                Ok(n) => return Ok(n),
                Err(Error::Invalid(_) | Error::NotSupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let len = len.min(COPY_CHUNK);
        let mut buf = vec![0u8; len.min(MAX_WRITE as u64) as usize];
        let mut done = 0;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = s.read_at(&mut buf[..want], s_off + done)?;
            if n == 0 {
                break;
            }
            let w = self.write(d, false, d_off + done, &buf[..n])?;
            done += w as u64;
            if w < n {
                break;
            }
        }
        Ok(done)
    }

    /// The lock-table owner of the kernel's POSIX lock owner `lo`.
    fn lock_owner(&self, lo: LockOwner) -> TableOwner {
        let mut m = self.lock_owners.lock();
        let process = *m.entry(lo.0).or_insert_with(|| {
            // ORDERING: Relaxed: a unique-id counter (lock owners and
            // clients share its numbers).
            self.sh.next_client.fetch_add(1, Ordering::Relaxed)
        });
        TableOwner { process, ofd: None }
    }

    /// Drop the POSIX locks of `lo` on `ino` (a close: `flush`).
    fn unlock_owner(&self, ino: u64, lo: LockOwner) {
        let p = self.lock_owners.lock().get(&lo.0).copied();
        if let Some(process) = p {
            self.sh
                .locks
                .release(ino, TableOwner { process, ofd: None });
        }
    }

    fn entry_of(&self, parent: u64, name: &str, path: &str, fs: &Fs) -> Result<Stat> {
        let s = super::settled_stat(&self.sh, || fs.lstat(path))?;
        self.remember(parent, name, path, &s);
        Ok(s)
    }

    /// Remove entry `name` of `parent` with `op` (unlink or rmdir) as the
    /// caller, and forget the name the removed inode had here.
    fn remove(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: impl FnOnce(&Fs, &str) -> Result<()>,
    ) -> Result<()> {
        self.writable()?;
        let (path, name) = self.child(parent.0, name)?;
        let ino = self.sh.fs.resolve_nofollow(&path).ok();
        self.change_names(|| op(&self.caller(req), &path))?;
        if let Some(ino) = ino {
            self.forget_name(ino, parent.0, &name);
        }
        Ok(())
    }
}

/// Reply to an entry request with `r`.
fn reply_entry(reply: ReplyEntry, r: Result<Stat>) {
    match r {
        Ok(s) => reply.entry(&TTL, &attr(&s), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_attr(reply: ReplyAttr, r: Result<Stat>) {
    match r {
        Ok(s) => reply.attr(&TTL, &attr(&s)),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for Front {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        for cap in [
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ] {
            // A kernel without one of these goes without it.
            let _ = config.add_capabilities(cap);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = (|| {
            let (path, name) = self.child(parent.0, name)?;
            self.entry_of(parent.0, &name, &path, &self.caller(req))
        })();
        reply_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut m = self.nodes.lock();
        if let Some(n) = m.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                m.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.stat_ino(ino.0, fh));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            self.writable()?;
            let fs = self.caller(req);
            let ino = ino.0;
            let path = self.path(ino).ok();
            let open = fh.and_then(|fh| self.file(fh).ok()).map(|(h, _)| h);
            let open_file = || -> Result<Arc<Handle>> {
                open.clone()
                    .or_else(|| self.open_file_of(ino))
                    .ok_or_else(|| stale("an inode"))
            };
            if let Some(size) = size {
                match (&open, &path) {
                    (Some(h), _) => {
                        if let Handle::File { file, .. } = &**h {
                            self.truncate(file, size)?;
                        }
                    }
                    (None, Some(p)) => {
                        let f = fs.open(
                            p,
                            &OpenOptions {
                                read: false,
                                write: true,
                                ..Default::default()
                            },
                        )?;
                        self.truncate(&f, size)?;
                    }
                    (None, None) => return Err(stale("an inode")),
                }
            }
            if let Some(m) = mode {
                match &path {
                    Some(p) => fs.set_permissions_nofollow(p, m & 0o7777)?,
                    None => {
                        if let Handle::File { file, .. } = &*open_file()? {
                            file.set_permissions(m & 0o7777)?;
                        }
                    }
                }
            }
            if uid.is_some() || gid.is_some() {
                match &path {
                    Some(p) => fs.set_owner_nofollow(p, uid, gid)?,
                    None => {
                        if let Handle::File { file, .. } = &*open_file()? {
                            file.set_owner(uid, gid)?;
                        }
                    }
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ns = |t: Option<TimeOrNow>| {
                    t.map(|t| match t {
                        TimeOrNow::Now => crate::fs::TIME_NOW,
                        TimeOrNow::SpecificTime(t) => ns_of(t),
                    })
                };
                let (a, m) = (ns(atime), ns(mtime));
                match &path {
                    Some(p) => fs.set_times_nofollow(p, a, m)?,
                    None => {
                        if let Handle::File { file, .. } = &*open_file()? {
                            file.set_times(a, m)?;
                        }
                    }
                }
            }
            Ok(())
        })();
        // After any part of it, failed or not (a mode set before an owner
        // that fails stays set): a mode or owner decides the search
        // permission of every path through a directory, so drops
        // everything; the rest (size, times) is the inode's alone.
        if !self.read_only {
            if mode.is_some() || uid.is_some() || gid.is_some() {
                self.changed();
            } else {
                self.changed_ino(ino.0);
            }
        }
        let r = r.and_then(|()| self.stat_ino(ino.0, fh));
        reply_attr(reply, r);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.path(ino.0).and_then(|p| self.sh.fs.readlink(&p)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            self.writable()?;
            let (path, name) = self.child(parent.0, name)?;
            let fs = self.caller(req);
            // A FIFO's pipe is the kernel's (it opens FUSE FIFOs itself); a
            // device node does not open on the mount (nodev).
            self.change_names(|| fs.mknod(&path, mode, u64::from(rdev)))?;
            self.entry_of(parent.0, &name, &path, &fs)
        })();
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            self.writable()?;
            let (path, name) = self.child(parent.0, name)?;
            let fs = self.caller(req);
            self.change_names(|| fs.mkdir(&path, mode & 0o7777))?;
            self.entry_of(parent.0, &name, &path, &fs)
        })();
        reply_entry(reply, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove(req, parent, name, |fs, p| fs.unlink(p)));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove(req, parent, name, |fs, p| fs.rmdir(p)));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            self.writable()?;
            let (path, name) = self.child(parent.0, link_name)?;
            let fs = self.caller(req);
            self.change_names(|| fs.symlink(target.as_os_str().as_encoded_bytes(), &path))?;
            self.entry_of(parent.0, &name, &path, &fs)
        })();
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            self.writable()?;
            let how = if flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Error::Invalid("RENAME_WHITEOUT"));
            } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                Rename::Exchange
            } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                Rename::NoReplace
            } else {
                Rename::Replace
            };
            let (from, name) = self.child(parent.0, name)?;
            let (to, newname) = self.child(newparent.0, newname)?;
            let a = self.sh.fs.resolve_nofollow(&from).ok();
            let b = self.sh.fs.resolve_nofollow(&to).ok();
            self.change_names(|| self.caller(req).rename2(&from, &to, how))?;
            let mut m = self.nodes.lock();
            let mut rename_in = |ino: Option<u64>, old: (u64, &str), new: Option<(u64, &str)>| {
                if let Some(n) = ino.and_then(|i| m.get_mut(&i)) {
                    n.names.retain(|(p, x)| !(*p == old.0 && x == old.1));
                    if let Some((p, x)) = new {
                        n.names.push((p, x.to_string()));
                    }
                }
            };
            if a != b {
                if how == Rename::Exchange {
                    rename_in(b, (newparent.0, &newname), Some((parent.0, &name)));
                } else {
                    rename_in(b, (newparent.0, &newname), None);
                }
                rename_in(a, (parent.0, &name), Some((newparent.0, &newname)));
            }
            drop(m);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            self.writable()?;
            let (to, newname) = self.child(newparent.0, newname)?;
            let fs = self.caller(req);
            self.change_names(|| match self.path(ino.0) {
                Ok(from) => fs.link(&from, &to),
                // An open file whose names are gone (`O_TMPFILE`, or
                // unlinked): linked by the handle.
                Err(e) => match self.open_file_of(ino.0) {
                    Some(h) => match &*h {
                        Handle::File { file, .. } => file.link(&to),
                        Handle::Dir { .. } => Err(e),
                    },
                    None => Err(e),
                },
            })?;
            self.entry_of(newparent.0, &newname, &to, &fs)
        })();
        reply_entry(reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let (read, write) = match flags.acc_mode() {
                OpenAccMode::O_RDONLY => (true, false),
                OpenAccMode::O_WRONLY => (false, true),
                OpenAccMode::O_RDWR => (true, true),
            };
            if write {
                self.writable()?;
            }
            let path = self.path(ino.0)?;
            let f = self.caller(req).open(
                &path,
                &OpenOptions {
                    read,
                    write,
                    ..Default::default()
                },
            )?;
            if f.ino() != ino.0 {
                return Err(stale("a file"));
            }
            if write && flags.0 & libc::O_TRUNC != 0 && !f.is_empty() {
                self.truncate(&f, 0)?;
                publish_space(&self.sh);
            }
            Ok(self.add_handle(Handle::File {
                file: f,
                append: flags.0 & libc::O_APPEND != 0,
            }))
        })();
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.file(fh).and_then(|(h, _)| match &*h {
            Handle::File { file, .. } => self.read(file, offset, size),
            Handle::Dir { .. } => Err(Error::IsDir),
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.file(fh).and_then(|(h, append)| match &*h {
            Handle::File { file, .. } => self.write(file, append, offset, data),
            Handle::Dir { .. } => Err(Error::IsDir),
        });
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close: POSIX drops the process's record locks on the file.
        self.unlock_owner(ino.0, lock_owner);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(lo) = lock_owner {
            self.unlock_owner(ino.0, lo);
        }
        // The file closes here (an unlinked one is freed with it).
        let h = self.handles.lock().remove(&fh.0);
        drop(h);
        publish_space(&self.sh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|(h, _)| match &*h {
            Handle::File { file, .. } if datasync => file.sync_data(),
            Handle::File { file, .. } => file.fsync(),
            Handle::Dir { .. } => Err(Error::IsDir),
        });
        reply_empty(reply, r);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let path = self.dir_path(ino.0)?;
            // The caller's read permission; entries are read by readdir,
            // a page at a time (`dir_page`).
            self.caller(req).read_dir_page(&path, 0, 1)?;
            let parent = if ino.0 == ROOT_INO {
                ROOT_INO
            } else {
                self.sh.fs.stat(&child_path(&path, ".."))?.ino
            };
            Ok(self.add_handle(Handle::Dir { path, parent }))
        })();
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(errno(&e)),
        };
        let Handle::Dir { path, parent } = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut at = offset;
        loop {
            let (ents, more) = match self.dir_page(path, ino.0, *parent, at) {
                Ok(p) => p,
                Err(e) => return reply.error(errno(&e)),
            };
            for (ino, dtype, name, next) in &ents {
                let kind = if *dtype == crate::format::DT_DIR {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                if reply.add(INodeNo(*ino), *next, kind, name) {
                    return reply.ok();
                }
            }
            match more {
                Some(n) => at = n,
                None => return reply.ok(),
            }
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(errno(&e)),
        };
        let Handle::Dir { path, parent } = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut at = offset;
        loop {
            let (ents, more) = match self.dir_page(path, ino.0, *parent, at) {
                Ok(p) => p,
                Err(e) => return reply.error(errno(&e)),
            };
            for (_, _, name, next) in &ents {
                let dots = name == "." || name == "..";
                let p = match name.as_str() {
                    "." => path.clone(),
                    _ => child_path(path, name),
                };
                // Gone since the page was read: left out.
                let Ok(s) = self.sh.fs.lstat(&p) else {
                    continue;
                };
                if reply.add(INodeNo(s.ino), *next, name, &TTL, &attr(&s), Generation(0)) {
                    return reply.ok();
                }
                // `.` and `..`: the kernel takes no reference on them.
                if !dots {
                    self.remember(ino.0, name, &p, &s);
                }
            }
            match more {
                Some(n) => at = n,
                None => return reply.ok(),
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are durable when their call returns (the
        // journal commits before answering); a sync makes sure.
        reply_empty(reply, self.sh.fs.sync());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.sh.fs.statfs();
        let bs = s.block_size as u32;
        // Files: those there are, and at most one per free block more.
        reply.statfs(
            s.data_blocks,
            s.free_blocks,
            s.free_blocks,
            s.inodes + s.free_blocks,
            s.free_blocks,
            bs,
            crate::format::NAME_MAX as u32,
            bs,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            self.writable()?;
            let (path, name) = self.child(parent.0, name)?;
            let fs = self.caller(req);
            let acc = flags & libc::O_ACCMODE;
            let f = self.change_names(|| {
                fs.open(
                    &path,
                    &OpenOptions {
                        read: acc != libc::O_WRONLY,
                        write: acc != libc::O_RDONLY,
                        create: true,
                        create_new: flags & libc::O_EXCL != 0,
                        mode: mode & 0o7777,
                        ..Default::default()
                    },
                )
            })?;
            if acc != libc::O_RDONLY && flags & libc::O_TRUNC != 0 && !f.is_empty() {
                self.truncate(&f, 0)?;
                publish_space(&self.sh);
            }
            let s = f.stat()?;
            self.remember(parent.0, &name, &path, &s);
            let fh = self.add_handle(Handle::File {
                file: f,
                append: flags & libc::O_APPEND != 0,
            });
            Ok((s, fh))
        })();
        match r {
            Ok((s, fh)) => reply.created(
                &TTL,
                &attr(&s),
                Generation(0),
                fh,
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let owner = self.lock_owner(lock_owner);
        let range = lock_range(start, end);
        let kind = lock_kind(typ).unwrap_or(LockKind::Read);
        match self
            .sh
            .locks
            .get(ino.0, owner, kind, range.start, range.end)
        {
            Some(h) => {
                let end = if h.end == u64::MAX {
                    i64::MAX as u64
                } else {
                    h.end - 1
                };
                let typ = if h.kind == LockKind::Read {
                    libc::F_RDLCK
                } else {
                    libc::F_WRLCK
                };
                reply.locked(h.start, end, typ, h.pid.max(0) as u32);
            }
            None => reply.locked(start, end, libc::F_UNLCK, 0),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let kind = lock_kind(typ);
        if kind == Some(LockKind::Write) {
            if let Ok((h, _)) = self.file(fh) {
                if let Handle::File { file, .. } = &*h {
                    if !file.writable() {
                        return reply.error(Errno::EBADF);
                    }
                }
            }
        }
        let owner = self.lock_owner(lock_owner);
        let range = lock_range(start, end);
        let pid = if pid == 0 { req.pid() } else { pid } as i32;
        let sh = self.sh.clone();
        let ino = ino.0;
        let try_once = move |wait: bool| sh.locks.set(ino, owner, pid, kind, range.clone(), wait);
        match try_once(sleep) {
            Ok(()) => reply.ok(),
            Err(crate::fs::locks::LockError::WouldBlock) if sleep => {
                // F_SETLKW: wait on a thread of its own (the lock table
                // never sleeps), retrying with backoff as a client does,
                // until granted, a deadlock is found, or the waiter is gone.
                let spawned = std::thread::Builder::new()
                    .name("udax-fuse-lockw".into())
                    .spawn(move || {
                        let mut pause = Duration::from_micros(100);
                        loop {
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(10));
                            match try_once(true) {
                                Ok(()) => return reply.ok(),
                                Err(crate::fs::locks::LockError::WouldBlock) => {}
                                Err(e) => return reply.error(Errno::from_i32(e.errno())),
                            }
                            let alive = rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                                rustix::process::test_kill_process(p)
                                    != Err(rustix::io::Errno::SRCH)
                            });
                            if !alive {
                                return reply.error(Errno::EINTR);
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("lock wait thread: {e}");
                }
            }
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            self.writable()?;
            let (h, _) = self.file(fh)?;
            let Handle::File { file, .. } = &*h else {
                return Err(Error::IsDir);
            };
            self.fallocate(file, mode as u32, offset, length)?;
            publish_space(&self.sh);
            Ok(())
        })();
        reply_empty(reply, r);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = (|| {
            let (h, _) = self.file(fh)?;
            let Handle::File { file, .. } = &*h else {
                return Err(Error::IsDir);
            };
            let off = u64::try_from(offset).map_err(|_| Error::Invalid("negative offset"))?;
            self.seek(file, off, whence)
        })();
        match r {
            Ok(p) => reply.offset(p as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            self.writable()?;
            let (hs, _) = self.file(fh_in)?;
            let (hd, _) = self.file(fh_out)?;
            let (Handle::File { file: s, .. }, Handle::File { file: d, .. }) = (&*hs, &*hd) else {
                return Err(Error::IsDir);
            };
            if !s.readable() || !d.writable() {
                return Err(Error::BadFd);
            }
            // One reply counts at most u32::MAX bytes.
            let len = len.min(u32::MAX as u64 & !(BLOCK_SIZE - 1));
            let n = self.copy_range(s, offset_in, d, offset_out, len)?;
            self.changed_ino(d.ino());
            Ok(n)
        })();
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
