//! The descriptor table: udax descriptors are real kernel fd numbers.
//!
//! Each udax descriptor holds a kernel fd opened on `/dev/null` with
//! `O_PATH | O_CLOEXEC`, so its number is never handed out again while it is
//! open, and anything that reaches the kernel with it by mistake (a call this
//! shim does not interpose) fails with EBADF instead of doing I/O on the wrong
//! file. `O_CLOEXEC` on the kernel fd makes exec drop it (the shim's state does
//! not survive exec); the program-visible `FD_CLOEXEC` flag is kept here.
//!
//! Lock rule: the table lock is held only to look up, insert or remove; never
//! across file I/O (a copy into a udax mapping may fault, and the fault
//! handler's own libc calls come back through the shim's interposers).

use crate::boundary::entry::{unsupported, Errno, R};
use crate::boundary::real;
use crate::state::hooks;
use libc::c_int;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use udax::fs::{COOKIE_DOT, COOKIE_DOTDOT};

/// A directory's path inside udax, kept current across renames: checked
/// whenever directories have moved (renamed or removed) since it was last
/// found, and found again from the held directory if it no longer names it,
/// as the kernel's descriptors and working directory follow the directory.
/// ENOENT once the directory is removed.
pub struct DirPath {
    path: String,
    /// `Fs::dir_moves` when `path` was last checked (`u64::MAX`: never).
    seen: u64,
}

impl DirPath {
    pub fn new(path: String) -> DirPath {
        DirPath {
            path: crate::state::lexical::canonical(&path).to_string(),
            seen: u64::MAX,
        }
    }

    pub fn get(&mut self, dir: &udax::vfs::VDir) -> R<String> {
        let fs = crate::state::mount::fs()?;
        // Read before the check: a move after it shows as a new count next time.
        let now = fs.dir_moves();
        if self.seen != now {
            self.path = fs.dir_path(dir, &self.path)?;
            self.seen = now;
        }
        Ok(self.path.clone())
    }
}

pub enum Kind {
    File(udax::vfs::VFile),
    /// A directory (or an `O_PATH` descriptor of one), held; its path is
    /// for `*at` calls, fchdir, fstat and getdents.
    Dir(udax::vfs::VDir),
    /// An `O_PATH` descriptor of a symbolic link (`O_NOFOLLOW`) or a
    /// special file (inode `ino`), by its path as opened: for fstat,
    /// `readlinkat(fd, "")`, `fchownat`/`utimensat` with `AT_EMPTY_PATH`.
    Node {
        ino: u64,
    },
}

/// One directory entry as getdents/readdir return it.
#[derive(Clone)]
pub struct Dent {
    pub name: Vec<u8>,
    pub ino: u64,
    pub dtype: u8,
}

/// The position after the last entry: telldir, `d_off` and lseek at the
/// end of a listing. No entry's cookie is larger (cookies are 63-bit name
/// hashes); a name whose hash is exactly this comes again after a seek here.
pub const END: u64 = i64::MAX as u64;

/// Cookies per page read from a local file system (through the owner, a
/// page is what fits one reply).
const PAGE: usize = 128;

/// A position in a udax directory listing and the page of entries held
/// from it: a stream never holds more than one page.
///
/// Positions are cookies ([`udax::fs::Fs::read_dir_page`]): `.` is 0, `..`
/// is 1, and any other position `c` stands before the entries whose cookie
/// (name hash) is `c` or more. An entry keeps its cookie while it exists,
/// so a position stays valid whatever is added or removed: a listing
/// returns every entry present throughout exactly once, and a seek to a
/// position told earlier resumes at the same entry. Names sharing a cookie
/// (a hash collision) share a position: a seek to it restarts that group,
/// which may repeat names of the group (as ext4's hashed directories do).
pub struct DirStream {
    /// The entries of the page held, each with its cookie, from the next
    /// one to return on.
    ents: VecDeque<(u64, Dent)>,
    /// Where the next page starts; `None`: no page after the one held.
    next: Option<u64>,
}

impl DirStream {
    /// A stream at position `pos`, nothing read yet.
    pub fn at(pos: u64) -> DirStream {
        DirStream {
            ents: VecDeque::new(),
            next: Some(pos),
        }
    }

    /// The position of the next entry to return (telldir, `d_off`).
    pub fn pos(&self) -> u64 {
        match self.ents.front() {
            Some((c, _)) => *c,
            None => self.next.unwrap_or(END),
        }
    }

    /// The next entry, reading the next page once the one held is used up;
    /// `None` at the end of the listing.
    pub fn peek(&mut self, d: &Desc) -> R<Option<&(u64, Dent)>> {
        while self.ents.is_empty() {
            let Some(from) = self.next else {
                return Ok(None);
            };
            self.fill(d, from)?;
        }
        Ok(self.ents.front())
    }

    /// Past the entry `peek` returned.
    pub fn advance(&mut self) {
        self.ents.pop_front();
    }

    /// Read the page at position `from` (with `.` and `..` first when
    /// `from` is theirs); on an error the stream is unchanged.
    fn fill(&mut self, d: &Desc, from: u64) -> R<()> {
        let fs = crate::state::mount::fs()?;
        let p = d.path()?;
        let mut ents = VecDeque::new();
        if from == COOKIE_DOT {
            ents.push_back((
                COOKIE_DOT,
                Dent {
                    name: b".".to_vec(),
                    ino: d.ino(),
                    dtype: libc::DT_DIR,
                },
            ));
        }
        if from <= COOKIE_DOTDOT {
            let parent = fs
                .stat(crate::state::lexical::parent(&p))
                .map(|s| s.ino)
                .unwrap_or(d.ino());
            ents.push_back((
                COOKIE_DOTDOT,
                Dent {
                    name: b"..".to_vec(),
                    ino: parent,
                    dtype: libc::DT_DIR,
                },
            ));
        }
        // From the start: 0, so that a listing in one page is checked
        // against the directory's count (`Fs::read_dir_page`).
        let first = if from <= COOKIE_DOTDOT { 0 } else { from };
        let page = fs.read_dir_page(&p, first, PAGE)?;
        if page.next.is_some_and(|n| n <= first) {
            return Err(Errno(libc::EIO)); // a listing that does not advance
        }
        for (c, e) in page.entries {
            ents.push_back((
                c,
                Dent {
                    name: e.name.into_bytes(),
                    ino: e.ino,
                    dtype: e.file_type,
                },
            ));
        }
        self.ents = ents;
        self.next = page.next;
        Ok(())
    }
}

/// An open file description (shared by dup'ed descriptors).
pub struct Desc {
    /// Dropped only in the process that made it (see `Drop`).
    pub kind: std::mem::ManuallyDrop<Kind>,
    /// The process that made it.
    born: u32,
    path: Mutex<DirPath>,
    /// File offset; for a directory, the position (cookie) of the next
    /// getdents entry ([`DirStream`]).
    pub pos: Mutex<u64>,
    /// open(2) status flags: access mode, O_APPEND, O_NONBLOCK, O_SYNC, ...
    status: AtomicI32,
    /// getdents64's page of a directory (one page, and its position), read
    /// afresh when `pos` is not where it left off or after an lseek.
    pub dents: Mutex<Option<DirStream>>,
    /// The offset lives at the owner (the description is shared with
    /// another process, `state::inherit`): `pos` is not used for it, but
    /// its lock still orders this process's users.
    owner_pos: std::sync::atomic::AtomicBool,
}

impl Desc {
    pub fn new(kind: Kind, path: String, status: c_int) -> Arc<Desc> {
        Arc::new(Desc {
            kind: std::mem::ManuallyDrop::new(kind),
            born: crate::state::mount::pid(),
            path: Mutex::new(DirPath::new(path)),
            pos: Mutex::new(0),
            status: AtomicI32::new(status),
            dents: Mutex::new(None),
            owner_pos: std::sync::atomic::AtomicBool::new(false),
        })
    }
    /// A description adopted from another process: its offset at the owner.
    pub fn adopted(kind: Kind, path: String, status: c_int, pos: u64) -> Arc<Desc> {
        let d = Desc::new(kind, path, status);
        *d.pos.lock().unwrap_or_else(|p| p.into_inner()) = pos;
        // ORDERING: set before the description is published (table lock).
        d.owner_pos.store(true, Ordering::Relaxed);
        d
    }
    /// Whether the offset lives at the owner; read under the `pos` lock.
    pub fn owner_pos(&self) -> bool {
        // ORDERING: only set under the `pos` lock (or before publication),
        // and read under it.
        self.owner_pos.load(Ordering::Relaxed)
    }
    /// From now on the offset lives at the owner (the caller holds the
    /// `pos` lock and has handed the offset over).
    pub fn set_owner_pos(&self) {
        // ORDERING: as in `owner_pos`.
        self.owner_pos.store(true, Ordering::Relaxed);
    }
    /// The file's owner-side handle (a description whose offset lives at
    /// the owner is always one).
    pub fn remote(&self) -> R<&udax::client::RemoteFile> {
        match self.file()? {
            udax::vfs::VFile::Remote(r) => Ok(r),
            udax::vfs::VFile::Local(_) => Err(Errno(libc::EIO)),
        }
    }
    /// The current file offset (at the owner when it lives there).
    pub fn offset(&self) -> R<u64> {
        let pos = self.pos.lock().unwrap_or_else(|p| p.into_inner());
        if self.owner_pos() {
            return Ok(self.remote()?.seek(1, 0)?);
        }
        Ok(*pos)
    }
    /// Made by this process (not inherited across fork).
    pub fn is_own(&self) -> bool {
        self.born == crate::state::mount::pid()
    }
    /// The path as opened (a directory's as last found), without a check.
    pub fn path_hint(&self) -> String {
        self.path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .clone()
    }
    pub fn ino(&self) -> u64 {
        match &*self.kind {
            Kind::File(f) => f.ino(),
            Kind::Dir(udax::vfs::VDir::Local(d)) => d.ino(),
            Kind::Dir(udax::vfs::VDir::Remote { ino, .. }) => *ino,
            Kind::Node { ino } => *ino,
        }
    }
    /// A file's path (as opened) still names this file.
    pub fn still_named(&self, path: &str) -> R<bool> {
        Ok(crate::state::mount::fs()?.stat(path).map(|s| s.ino).ok() == Some(self.ino()))
    }
    pub fn is_dir(&self) -> bool {
        matches!(*self.kind, Kind::Dir(_))
    }
    /// The path inside udax: a directory's current one; for a file, the one
    /// it was opened by.
    pub fn path(&self) -> R<String> {
        let mut p = self.path.lock().unwrap_or_else(|p| p.into_inner());
        match &*self.kind {
            Kind::Dir(d) => p.get(d),
            Kind::File(_) | Kind::Node { .. } => Ok(p.path.clone()),
        }
    }
    pub fn status(&self) -> c_int {
        // ORDERING: an independent flag word; no data is published through it.
        self.status.load(Ordering::Relaxed)
    }
    /// Set the status flags in `mask` to those of `bits` (F_SETFL, FIONBIO).
    pub fn set_status(&self, mask: c_int, bits: c_int) {
        // ORDERING: as in `status`.
        let _ = self
            .status
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s & !mask) | (bits & mask))
            });
    }
    fn path_only(&self) -> bool {
        self.status() & libc::O_PATH != 0
    }
    pub fn readable(&self) -> bool {
        !self.path_only() && self.status() & libc::O_ACCMODE != libc::O_WRONLY
    }
    pub fn writable(&self) -> bool {
        !self.path_only() && self.status() & libc::O_ACCMODE != libc::O_RDONLY
    }
    /// The file, for data I/O: EISDIR on a directory, EBADF on an O_PATH descriptor.
    pub fn file(&self) -> R<&udax::vfs::VFile> {
        if self.path_only() {
            return Err(Errno(libc::EBADF));
        }
        match &*self.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(Errno(libc::EISDIR)),
            Kind::Node { .. } => Err(Errno(libc::EBADF)),
        }
    }
    pub fn stat(&self) -> R<udax::fs::Stat> {
        match &*self.kind {
            Kind::File(f) => Ok(f.stat()?),
            Kind::Dir(_) => Ok(crate::state::mount::fs()?.stat(&self.path()?)?),
            Kind::Node { .. } => Ok(crate::state::mount::fs()?.lstat(&self.path()?)?),
        }
    }
    /// The path of an `O_PATH | O_NOFOLLOW` descriptor of a symbolic link
    /// (`readlinkat(fd, "")`); any other descriptor: ENOENT, as the kernel.
    pub fn link_path(&self) -> R<String> {
        match &*self.kind {
            Kind::Node { .. } if self.stat()?.is_symlink() => self.path(),
            _ => Err(Errno(libc::ENOENT)),
        }
    }
    /// Identifies the description while it lives.
    pub fn key(&self) -> usize {
        self as *const Desc as usize
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        if self.born != crate::state::mount::pid() {
            // Inherited across fork: the file is the parent's (through an
            // owner, its handle is the parent connection's), left alone.
            return;
        }
        flock_release(self.ino(), self.key());
        // SAFETY: dropped once, here, and `kind` is not used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.kind) };
    }
}

struct Slot {
    desc: Arc<Desc>,
    cloexec: bool,
}

static TABLE: RwLock<BTreeMap<c_int, Slot>> = RwLock::new(BTreeMap::new());
/// Number of udax descriptors: 0 lets every fd call skip the table lock.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn table_read() -> std::sync::RwLockReadGuard<'static, BTreeMap<c_int, Slot>> {
    TABLE.read().unwrap_or_else(|p| p.into_inner())
}
fn table_write() -> std::sync::RwLockWriteGuard<'static, BTreeMap<c_int, Slot>> {
    TABLE.write().unwrap_or_else(|p| p.into_inner())
}

/// The udax description behind `fd`, if it is a udax descriptor.
pub fn get(fd: c_int) -> Option<Arc<Desc>> {
    // ORDERING: Acquire pairs with the Release of `insert`: a thread that got
    // the fd number from the inserting thread (through any synchronisation)
    // sees the count.
    if fd < 0 || COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    table_read().get(&fd).map(|s| s.desc.clone())
}

/// `None`: not a udax descriptor (the kernel's). A description inherited
/// across fork is usable as it is only if it holds no connection state (a
/// directory through an owner); `state::inherit::lookup` adopts a file's,
/// and an embedded mount's are an error: the file system is the parent's.
pub fn lookup(fd: libc::c_int) -> Option<R<Arc<Desc>>> {
    let d = get(fd)?;
    if !d.is_own() && !matches!(*d.kind, Kind::Dir(udax::vfs::VDir::Remote { .. })) {
        return Some(Err(unsupported(
            "descriptor",
            &format!(
                "udax fd {fd} inherited across fork from a process that mounted udax \
                 embedded, or not handed over (see docs/preload.md)"
            ),
            libc::EIO,
        )));
    }
    Some(Ok(d))
}

/// As [`lookup`], for a `/proc/self/fd/N` path: an inherited description
/// through an owner is usable for its path and inode (no call on its
/// handle is made).
pub fn lookup_for_path(fd: libc::c_int) -> Option<R<Arc<Desc>>> {
    let d = get(fd)?;
    let remote = matches!(
        *d.kind,
        Kind::File(udax::vfs::VFile::Remote(_)) | Kind::Dir(udax::vfs::VDir::Remote { .. })
    );
    if !d.is_own() && !remote {
        return lookup(fd);
    }
    Some(Ok(d))
}

/// Every udax descriptor: its number, description and `FD_CLOEXEC`.
pub fn all() -> Vec<(c_int, Arc<Desc>, bool)> {
    table_read()
        .iter()
        .map(|(fd, s)| (*fd, s.desc.clone(), s.cloexec))
        .collect()
}

/// Point every descriptor of description `old` at `new` (a forked child's
/// adopted copy); `old` (the parent's) is leaked, never dropped here.
pub fn replace(old: &Arc<Desc>, new: &Arc<Desc>) {
    let mut t = table_write();
    for s in t.values_mut() {
        if Arc::ptr_eq(&s.desc, old) {
            std::mem::forget(std::mem::replace(&mut s.desc, new.clone()));
        }
    }
}

/// Take kernel fd `fd` (open, inherited across exec: the placeholder the
/// old image held for it) as the udax descriptor of `desc`.
pub fn adopt_at(fd: c_int, desc: Arc<Desc>) {
    set_kernel_cloexec(fd, true);
    let old = insert(fd, desc, false);
    discard(old);
    hooks::std_now_udax(fd);
}

/// Set or clear `FD_CLOEXEC` on the kernel fd that reserves udax fd `fd`
/// (cleared just before an exec that hands the descriptor over).
pub fn set_kernel_cloexec(fd: c_int, on: bool) {
    if let Some(fcntl) = real::fcntl() {
        // SAFETY: F_SETFD with an int argument on a kernel fd this table owns.
        unsafe { fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
    }
}

/// Number of udax descriptors (0: none; checked before any work at fork
/// and exec).
pub fn count() -> usize {
    // ORDERING: as in `get`.
    COUNT.load(Ordering::Acquire)
}

/// Is `fd` a udax descriptor? (The cheap test every fd-taking call makes first.)
pub fn is_udax(fd: c_int) -> bool {
    // ORDERING: as in `get`.
    fd >= 0 && COUNT.load(Ordering::Acquire) != 0 && table_read().contains_key(&fd)
}

/// A fresh kernel fd number to stand for a udax descriptor.
fn reserve() -> R<c_int> {
    let Some(openat) = real::openat() else {
        return Err(Errno(libc::ENOSYS));
    };
    // SAFETY: a literal NUL-terminated path; the flags need no mode argument.
    let fd = unsafe {
        openat(
            libc::AT_FDCWD,
            c"/dev/null".as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    Ok(fd)
}

fn real_close(fd: c_int) {
    if let Some(close) = real::close() {
        // SAFETY: `fd` is a kernel fd this table owns (or just replaced).
        unsafe { close(fd) };
    }
}

/// Install a new descriptor for `desc`; returns its number.
pub fn install(desc: Arc<Desc>, cloexec: bool) -> R<c_int> {
    let fd = reserve()?;
    insert(fd, desc, cloexec);
    hooks::std_now_udax(fd); // the lowest free number may be 0, 1 or 2
    Ok(fd)
}

fn insert(fd: c_int, desc: Arc<Desc>, cloexec: bool) -> Option<Slot> {
    let old = table_write().insert(fd, Slot { desc, cloexec });
    if old.is_none() {
        // ORDERING: see `get`.
        COUNT.fetch_add(1, Ordering::Release);
    }
    old
}

/// Drop a slot outside every lock. A description inherited across fork
/// leaves the parent's file alone when it goes (`Desc`'s `Drop`).
fn discard(slot: Option<Slot>) {
    drop(slot);
}

/// close(2) of a udax descriptor.
pub fn close(fd: c_int) -> R<c_int> {
    if is_udax(fd) {
        hooks::std_not_udax(fd);
    }
    let slot = table_write().remove(&fd);
    if slot.is_none() {
        return Err(Errno(libc::EBADF));
    }
    // ORDERING: see `get`; lowered after the removal (a stale nonzero only
    // costs a lookup under the lock).
    COUNT.fetch_sub(1, Ordering::Release);
    real_close(fd);
    discard(slot);
    Ok(0)
}

/// Forget `fd` (the kernel closed or replaced it, e.g. dup2 of a host fd onto it).
pub fn forget(fd: c_int) {
    let slot = table_write().remove(&fd);
    if slot.is_some() {
        // ORDERING: as in `close`.
        COUNT.fetch_sub(1, Ordering::Release);
        hooks::std_not_udax(fd);
    }
    discard(slot);
}

/// Forget every udax descriptor in `[first, last]` (close_range).
pub fn forget_range(first: u32, last: u32) {
    let mut gone = Vec::new();
    {
        let mut t = table_write();
        let keys: Vec<c_int> = t
            .range(first.min(i32::MAX as u32) as c_int..)
            .map(|(k, _)| *k)
            .take_while(|&k| k as u32 <= last)
            .collect();
        for k in keys {
            if let Some(s) = t.remove(&k) {
                // ORDERING: as in `close`.
                COUNT.fetch_sub(1, Ordering::Release);
                gone.push(s);
            }
        }
    }
    for s in gone {
        discard(Some(s));
    }
    for fd in 0..=2u32 {
        if (first..=last).contains(&fd) {
            hooks::std_not_udax(fd as c_int);
        }
    }
}

/// dup / F_DUPFD(_CLOEXEC): a new number >= `min` for the same description.
pub fn dup_min(fd: c_int, min: c_int, cloexec: bool) -> R<c_int> {
    let desc = get(fd).ok_or(Errno(libc::EBADF))?;
    let Some(fcntl) = real::fcntl() else {
        return Err(Errno(libc::ENOSYS));
    };
    // SAFETY: F_DUPFD_CLOEXEC on a kernel fd this table owns; `min` is an int.
    let n = unsafe { fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if n < 0 {
        return Err(Errno(crate::boundary::entry::errno()));
    }
    discard(insert(n, desc, cloexec));
    hooks::std_now_udax(n);
    Ok(n)
}

/// dup2/dup3 with a udax `old`.
pub fn dup_to(old: c_int, new: c_int, cloexec: bool) -> R<c_int> {
    let Some(dup3) = real::dup3() else {
        return Err(Errno(libc::ENOSYS));
    };
    hooks::before_std_change(new);
    let replaced;
    {
        let mut t = table_write();
        let desc = t.get(&old).ok_or(Errno(libc::EBADF))?.desc.clone();
        // Under the table lock, so the kernel replacement and the table
        // update are one step for every other thread.
        // SAFETY: `old` is a kernel fd this table owns; `new` is the caller's
        // choice, as for dup3 itself.
        if unsafe { dup3(old, new, libc::O_CLOEXEC) } < 0 {
            return Err(Errno(crate::boundary::entry::errno()));
        }
        replaced = t.insert(new, Slot { desc, cloexec });
    }
    if replaced.is_none() {
        // ORDERING: see `get` (raised after the insert, as in `insert`).
        COUNT.fetch_add(1, Ordering::Release);
    }
    discard(replaced);
    hooks::std_now_udax(new);
    Ok(new)
}

pub fn cloexec(fd: c_int) -> R<bool> {
    table_read()
        .get(&fd)
        .map(|s| s.cloexec)
        .ok_or(Errno(libc::EBADF))
}

pub fn set_cloexec(fd: c_int, v: bool) -> R<()> {
    let mut t = table_write();
    let s = t.get_mut(&fd).ok_or(Errno(libc::EBADF))?;
    s.cloexec = v;
    Ok(())
}

/// At exit: close every udax file (the kernel fds go with the process).
pub fn drop_all() {
    let all = std::mem::take(&mut *table_write());
    // ORDERING: as in `close`.
    COUNT.store(0, Ordering::Release);
    drop(all);
}

// flock(2): whole-file locks owned by an open file description, so two
// descriptions of one file conflict even inside one process (as in the kernel).

#[derive(Default)]
struct FlockState {
    shared: Vec<usize>,
    exclusive: Option<usize>,
}

static FLOCKS: Mutex<Option<HashMap<u64, FlockState>>> = Mutex::new(None);
static FLOCK_FREED: Condvar = Condvar::new();

fn flock_release(ino: u64, owner: usize) {
    let mut g = FLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = g.as_mut() {
        if let Some(st) = m.get_mut(&ino) {
            let before = (st.shared.len(), st.exclusive);
            st.shared.retain(|&o| o != owner);
            if st.exclusive == Some(owner) {
                st.exclusive = None;
            }
            if before != (st.shared.len(), st.exclusive) {
                FLOCK_FREED.notify_all();
            }
            if st.shared.is_empty() && st.exclusive.is_none() {
                m.remove(&ino);
            }
        }
    }
}

/// flock(2) on a udax description: through the owner (its lock table
/// holds every process's), or in this process's table (embedded).
pub fn flock(desc: &Desc, op: c_int) -> R<()> {
    let nb = op & libc::LOCK_NB != 0;
    if let Kind::File(udax::vfs::VFile::Remote(f)) = &*desc.kind {
        use udax::fs::locks::LockKind;
        let kind = match op & !libc::LOCK_NB {
            libc::LOCK_UN => None,
            libc::LOCK_SH => Some(LockKind::Read),
            libc::LOCK_EX => Some(LockKind::Write),
            _ => return Err(Errno(libc::EINVAL)),
        };
        return f
            .lock(udax::proto::LockScope::Flock, kind, 0, u64::MAX, !nb)
            .map_err(|e| match e.errno() {
                libc::EAGAIN => Errno(libc::EWOULDBLOCK),
                n => Errno(n),
            });
    }
    let owner = desc.key();
    match op & !libc::LOCK_NB {
        libc::LOCK_UN => {
            flock_release(desc.ino(), owner);
            Ok(())
        }
        k @ (libc::LOCK_SH | libc::LOCK_EX) => {
            let mut g = FLOCKS.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let st = g
                    .get_or_insert_with(HashMap::new)
                    .entry(desc.ino())
                    .or_default();
                let others_excl = st.exclusive.is_some_and(|o| o != owner);
                let others_shared = st.shared.iter().any(|&o| o != owner);
                let free = if k == libc::LOCK_SH {
                    !others_excl
                } else {
                    !others_excl && !others_shared
                };
                if free {
                    // A conversion replaces this owner's lock.
                    st.shared.retain(|&o| o != owner);
                    if st.exclusive == Some(owner) {
                        st.exclusive = None;
                    }
                    if k == libc::LOCK_SH {
                        st.shared.push(owner);
                    } else {
                        st.exclusive = Some(owner);
                    }
                    FLOCK_FREED.notify_all();
                    return Ok(());
                }
                if nb {
                    return Err(Errno(libc::EWOULDBLOCK));
                }
                g = FLOCK_FREED.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        }
        _ => Err(Errno(libc::EINVAL)),
    }
}
