//! A client's open files: data read and written straight on the device
//! under a layout lease, mappings resolved by the client's own fault
//! engine, and the listener thread that answers the owner's recalls.
//!
//! Lease protocol (docs/multiprocess.md, "Leases and recall"): a file's
//! layout (size, extents, bad blocks) is cached per inode ([`Node`]), shared
//! by every handle and mapping of the file in this process. A user without
//! a layout asks the owner for one (`Lease`), which comes with the file's
//! lease epoch, and installs it only if no recall of that epoch or a later
//! one arrived meanwhile. The listener, on `Recall { ino, epoch }`, records
//! the epoch, takes the file's invalidate lock for writing (faults in
//! flight finish first, new ones wait), unmaps the file from every mapping
//! of this process and waits for its pins (as break-layouts does in one
//! process), drops the layout, and only then answers `Recalled`: the owner
//! changes the file after that answer.
//!
//! Lock order: invalidate lock -> layout lock (faults and the listener);
//! reads and writes take the layout lock alone and never fault while they
//! hold it (a buffer inside a udax mapping is copied through a bounce
//! buffer). No lock is held across a round trip to the owner, except by a
//! fault that needs blocks changed (`Iomap`): that call goes on the fault
//! channel, where the owner answers `EAGAIN` instead of waiting for a change
//! of the file (which may be waiting for this process's recall), and the
//! fault is retried with its locks dropped.

use super::{not_connected, unexpected, Inner};
use crate::dax::iomap::{DaxInode, IomapError, Lookup};
use crate::dax::mapping::Map;
use crate::dax::{self, DaxDevice, DaxFile, MapFlags, Pin, Prot};
use crate::device::DeviceError;
use crate::fs::locks::LockKind;
use crate::fs::{Error, Result};
use crate::proto::{self, wire, Ext, IomapOp, LockScope, Reply, Request, Target};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, RwLock};
use crate::BLOCK_SIZE;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The layout of a file as one lease gave it (and this client's own fault
/// allocations updated it).
#[derive(Debug)]
struct Layout {
    epoch: u64,
    /// The lease serial of its (first) grant (`Reply::Layout::serial`),
    /// and of its last (a layout asked in pieces).
    serial: u64,
    newest: u64,
    size: u64,
    /// file block -> (device block, blocks, shared with other files)
    map: BTreeMap<u64, (u64, u64, bool)>,
    /// File block ranges on media errors (`(first, count)`).
    bad: Vec<(u64, u64)>,
    /// Extents shared with other files (the fault path skips every sharing
    /// check while there are none).
    shared: usize,
}

impl Layout {
    /// An empty layout of a lease of `epoch`, granted as `serial`, for a
    /// file of `size` bytes.
    fn leased(epoch: u64, serial: u64, size: u64) -> Layout {
        Layout {
            epoch,
            serial,
            newest: serial,
            size,
            map: BTreeMap::new(),
            bad: Vec::new(),
            shared: 0,
        }
    }

    /// Add what (a page of) a lease answer listed.
    fn add(&mut self, extents: &[Ext], bad: &[(u64, u64)]) {
        self.bad.extend_from_slice(bad);
        for e in extents {
            self.map.insert(e.file_blk, (e.dev_blk, e.len, e.shared));
        }
    }

    fn count_shared(&mut self) {
        self.shared = self.map.values().filter(|e| e.2).count();
    }

    /// The device block behind file block `b` and how many blocks run on
    /// from it, or the hole's length (`u64::MAX` past the last extent).
    fn at(&self, b: u64) -> (Option<u64>, u64) {
        if let Some((&f, &(d, n, _))) = self.map.range(..=b).next_back() {
            if b < f + n {
                return (Some(d + (b - f)), f + n - b);
            }
        }
        let next = self.map.range(b + 1..).next().map(|(&f, _)| f);
        (None, next.map_or(u64::MAX, |f| f - b))
    }

    /// The first bad file block in `[b, b+n)`.
    fn first_bad(&self, b: u64, n: u64) -> Option<u64> {
        self.bad
            .iter()
            .filter(|(s, l)| *s < b + n && s + l > b)
            .map(|(s, _)| (*s).max(b))
            .min()
    }

    /// The extents over device blocks `[d, d+n)`, as (device range, file
    /// block of its start, shared).
    fn on_device(&self, d: u64, n: u64) -> impl Iterator<Item = (Range<u64>, u64, bool)> + '_ {
        self.map
            .iter()
            .filter_map(move |(&f, &(dev, len, shared))| {
                let (a, b) = (dev.max(d), (dev + len).min(d + n));
                (a < b).then(|| (a..b, f + (a - dev), shared))
            })
    }

    /// Replace what the layout says of file blocks `[a, b)` with `extents`
    /// (the owner's answer to this client's own change of them).
    fn patch(&mut self, a: u64, b: u64, extents: &[Ext], size: u64) {
        let hit: Vec<u64> = self
            .map
            .range(..b)
            .filter(|(&f, &(_, n, _))| f + n > a)
            .map(|(&f, _)| f)
            .collect();
        for f in hit {
            let (d, n, sh) = self.map.remove(&f).expect("listed above");
            if f < a {
                self.map.insert(f, (d, a - f, sh));
            }
            if f + n > b {
                self.map.insert(b, (d + (b - f), f + n - b, sh));
            }
        }
        for e in extents {
            let (s, t) = (e.file_blk.max(a), (e.file_blk + e.len).min(b));
            if s < t {
                self.map
                    .insert(s, (e.dev_blk + (s - e.file_blk), t - s, e.shared));
            }
        }
        self.size = size;
        self.count_shared();
    }
}

/// One file as this client process sees it: its layout lease and its
/// mapping state, shared by every handle and mapping of the file here.
#[derive(Debug)]
pub(super) struct Node {
    ino: u64,
    layout: RwLock<Option<Layout>>,
    /// The highest epoch recalled: a layout of that epoch or older is stale.
    recalled: AtomicU64,
    /// The highest lease serial of a layout of the file received here.
    seen: AtomicU64,
    /// This process dropped its layouts of the file itself (before a
    /// change it asked of the owner, [`Node::drop_own`]) up to this serial:
    /// a layout granted as that serial or before is stale.
    dropped: AtomicU64,
    /// The file's mapping state (entries, regions, the invalidate lock).
    dax: DaxFile,
    /// The last lease fetch for a fault failed (the owner is gone): faults
    /// that need the layout fail (SIGBUS) instead of retrying for ever.
    lost: AtomicBool,
    /// This process's size grant on the file, if it holds one (lock order:
    /// grant -> layout; the listener takes it alone).
    grant: Mutex<Option<LocalGrant>>,
    /// This process asked for a record lock or `flock` on the file: its
    /// closes of the file are waited for (a close drops its POSIX locks).
    locked: AtomicBool,
    /// The size this process grew the file to under its grant (0: none):
    /// layouts from the owner, whose size lags, are raised to it.
    grown: AtomicU64,
    /// Held while asking for a grant: one request at a time per file.
    asking: Mutex<()>,
    /// Growing writes the owner is to take before this process asks for a
    /// grant again: the first (grants are for files that keep growing),
    /// and [`GRANT_BACKOFF`] after a refusal; and what the next grant asks
    /// for.
    skip: AtomicU64,
    next_want: AtomicU64,
}

/// A size grant as its holder keeps it (`Request::Grant`).
#[derive(Clone, Copy, Debug)]
struct LocalGrant {
    /// The size this process grew the file to (its word holds it).
    size: u64,
    limit: u64,
    word_at: u64,
    serial: u32,
}

impl Node {
    pub(super) fn new(ino: u64) -> Node {
        Node {
            ino,
            layout: RwLock::new(None),
            recalled: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dax: DaxFile::new(ino),
            lost: AtomicBool::new(false),
            grant: Mutex::new(None),
            locked: AtomicBool::new(false),
            grown: AtomicU64::new(0),
            asking: Mutex::new(()),
            skip: AtomicU64::new(1),
            next_want: AtomicU64::new(GRANT_FIRST_WANT),
        }
    }

    /// A `Settle` of `epoch` (the listener): stop growing the file (the
    /// grant's word is final), then recall the pages past the size it
    /// reached (their blocks are about to be freed).
    fn settle(&self, inner: &Inner, epoch: u64) -> bool {
        // ORDERING: AcqRel, before the grant lock: a `Granted` installed
        // after this sees the epoch (`install_grant`) and is dropped.
        self.recalled.fetch_max(epoch, Ordering::AcqRel);
        let (_, size) = self.stop_grant(inner);
        let from = size.map_or(u64::MAX, |s| s.div_ceil(BLOCK_SIZE));
        self.recall(inner, epoch, true, from..u64::MAX)
    }

    /// Take the grant of a `Granted` answer of `epoch`, unless a `Settle`
    /// of it (or a later recall) came first.
    fn install_grant(&self, g: LocalGrant, epoch: u64) -> bool {
        let mut cur = self.grant.lock();
        // ORDERING: Acquire: pairs with `settle`'s AcqRel fetch_max.
        if self.recalled.load(Ordering::Acquire) >= epoch {
            return false;
        }
        *cur = Some(g);
        true
    }

    /// A layout size from the owner, raised to what this process grew the
    /// file to under its grant.
    fn size_seen(&self, owner_size: u64) -> u64 {
        // ORDERING: Relaxed: see `settle`; a racing growth raises the
        // layout itself after storing its word.
        owner_size.max(self.grown.load(Ordering::Relaxed))
    }

    /// A recall of `epoch` for file pages `range` (the listener): record
    /// it, unmap the range from this process's mappings and wait for the
    /// pins on its blocks (with `wait`), then drop the layout (the next use
    /// fetches the new one; pages outside the range stay mapped, their
    /// blocks unchanged). Returns whether pins were still held after
    /// [`dax::PIN_TIMEOUT`].
    fn recall(&self, inner: &Inner, epoch: u64, wait: bool, range: std::ops::Range<u64>) -> bool {
        // ORDERING: AcqRel, before the locks are taken: a user that installs
        // a layout after this sees the epoch (its Acquire load in
        // `install`) and throws its stale layout away; one that installed
        // before is undone by the clearing under the lock.
        self.recalled.fetch_max(epoch, Ordering::AcqRel);
        self.drop_layout(inner, wait, range)
    }

    /// Unmap file pages `range` from every mapping here (with `wait`,
    /// first waiting for their pins) and drop the layout: what a recall
    /// does once its epoch is noted. Returns whether pins stayed.
    fn drop_layout(&self, inner: &Inner, wait: bool, range: std::ops::Range<u64>) -> bool {
        let _inv = self.dax.invalidate.write();
        let mut busy = false;
        if inner.dax.is_some() {
            let view = View::listener(self, inner);
            // The layout is still there: it names the blocks whose pins
            // are waited for.
            if let Err(e) = dax::hooks::break_layouts(&view, range.start, range.end, wait) {
                if wait {
                    tracing::warn!("recall of inode {}: {e}", self.ino);
                    busy = true;
                }
            }
        }
        *self.layout.write() = None;
        busy
    }

    /// Before a change of the file's layout this process asks of the owner
    /// (a `Write` that fills a hole or grows the file, a truncate): do here
    /// what the owner's recall of this process would (unmap file pages
    /// `range`, with `wait` first waiting for their pins, and drop the
    /// layout), and return the lease serial dropped through, for the
    /// request (`Request::Write::dropped`), and whether pins stayed. The
    /// owner then leaves this process out of the recall if it granted it
    /// no layout since; a layout granted as that serial or before and
    /// received later is thrown away ([`Node::install`]). This spares the
    /// recall's round trip to this process's own listener, which sleeps.
    fn drop_own(&self, inner: &Inner, wait: bool, range: std::ops::Range<u64>) -> (u64, bool) {
        // ORDERING: Acquire: pairs with the Release `fetch_max` of a
        // received layout's serial (`Node::received`).
        let through = self.seen.load(Ordering::Acquire);
        // ORDERING: Release: an install that takes the layout lock after
        // the clearing below sees it (and the lock orders it anyway).
        self.dropped.fetch_max(through, Ordering::Release);
        let busy = self.drop_layout(inner, wait, range);
        (through, busy)
    }

    /// Stop using this process's size grant of the file (a `Settle`, or
    /// before a change this process asks of the owner: a growth in flight
    /// under it finishes first, it holds the grant lock), and return the
    /// grant's word (`(word_at, serial)`; `(0, 0)`: none held), for
    /// `Request::Truncate::settled`, and the size this process knows the
    /// file to have (its grant's, else its layout's; `None`: it knows
    /// none).
    fn stop_grant(&self, inner: &Inner) -> ((u64, u32), Option<u64>) {
        let held = {
            let mut g = self.grant.lock();
            // ORDERING: Relaxed: under the grant lock, which orders it with
            // the growth that set it.
            self.grown.store(0, Ordering::Relaxed);
            g.take()
        };
        // The attributes this process cached of the file may show its
        // grant's size (an `fstat` it corrected locally).
        inner.attrs.lock().drop_ino(self.ino);
        match held {
            Some(g) => ((g.word_at, g.serial), Some(g.size)),
            None => ((0, 0), self.layout.read().as_ref().map(|l| l.size)),
        }
    }

    /// A layout granted as `serial` came from the owner.
    fn received(&self, serial: u64) {
        // ORDERING: Release: see `drop_own`.
        self.seen.fetch_max(serial, Ordering::Release);
    }

    /// File page `page` lies on a media error (the listener): leases
    /// fetched before this are stale (the epoch); the current one marks the
    /// page bad, so no fault maps it again; every mapping of it in this
    /// process gets a SIGBUS marker (`BUS_MCEERR_AR`), as in one process.
    fn poison(&self, inner: &Inner, epoch: u64, page: u64) {
        // ORDERING: AcqRel: as in `recall`.
        self.recalled.fetch_max(epoch, Ordering::AcqRel);
        if let Some(l) = self.layout.write().as_mut() {
            if l.first_bad(page, 1).is_none() {
                l.bad.push((page, 1));
            }
        }
        if inner.dax.is_some() {
            dax::hooks::poison_pages(&View::listener(self, inner), page);
        }
    }

    /// Install a layout fetched from the owner, unless a recall of its
    /// epoch came meanwhile. Fails once the owner's connection ended
    /// ([`Node::end`]): no recall could reach the layout any more.
    fn install(&self, mut l: Layout) -> Result<()> {
        l.size = self.size_seen(l.size);
        self.received(l.newest);
        let mut g = self.layout.write();
        // ORDERING: Acquire: pairs with the recall's AcqRel fetch_max.
        let recalled = self.recalled.load(Ordering::Acquire);
        if recalled == u64::MAX {
            return Err(not_connected("the owner ended the connection".into()));
        }
        // ORDERING: Acquire: pairs with `drop_own`'s Release.
        let dropped = self.dropped.load(Ordering::Acquire);
        if l.epoch > recalled && l.serial > dropped {
            *g = Some(l);
        }
        Ok(())
    }

    /// The owner ended this process's connection (it exited, died or cut
    /// the process off): no recall can reach this process any more, and a
    /// new owner may give the file's blocks to other files. Refuse every
    /// layout from now on (as recalled for ever), unmap every page of the
    /// file that shows the device from this process's mappings (their next
    /// access gets SIGBUS: there is no owner to ask) and drop the layout,
    /// after the copies in flight under it (they hold it). Private copies
    /// a `MAP_PRIVATE` mapping made stay (the mapping's own data, moved
    /// into anonymous memory: [`dax::hooks::unmap_device`]).
    fn end(&self, inner: &Inner) {
        // ORDERING: AcqRel: as in `recall`; an install that takes the
        // layout lock after the clearing below sees it and fails.
        self.recalled.fetch_max(u64::MAX, Ordering::AcqRel);
        let _inv = self.dax.invalidate.write();
        if inner.dax.is_some() {
            if let Err(e) = dax::hooks::unmap_device(&View::listener(self, inner)) {
                tracing::error!(
                    "inode {}: mappings not unmapped at the owner's end: {e}",
                    self.ino
                );
            }
        }
        *self.layout.write() = None;
    }
}

/// A file opened through the device's owner: the owner's handle, closed
/// when the last [`RemoteFile`] or mapping of this open goes.
#[derive(Debug)]
struct Open {
    inner: Arc<Inner>,
    handle: u64,
    ino: u64,
    /// Opened for writing.
    write: bool,
    node: Arc<Node>,
    /// Time (ns) of the last in-place overwrite not yet sent to the owner
    /// (0: none), and when one was last sent.
    unsent_mtime: AtomicU64,
    last_touch: AtomicU64,
    /// The file's link count when it was opened, and the change log's
    /// count of records then: while no record since names the file, the
    /// count is the same (see `Open::drop`).
    nlink: u32,
    opened_at: u64,
}

/// A file opened through the device's owner.
#[derive(Debug)]
pub struct RemoteFile {
    o: Arc<Open>,
}

/// Writes of this many bytes or more that grow the file or fill holes
/// take [`RemoteFile::write_grown`]'s three round trips instead of one
/// `Write` per [`proto::MAX_WRITE`] bytes.
const GROW_IN_PLACE_MIN: usize = 2 * proto::MAX_WRITE;

/// What a file's first size grant asks for past its end; each renewal
/// asks for twice the last, up to [`GRANT_MAX_WANT`].
const GRANT_FIRST_WANT: u64 = 256 << 10;
const GRANT_MAX_WANT: u64 = 8 << 20;

/// Growing writes of a file that go through the owner after it refused a
/// grant (no line free, blocks reserved past the end, no space) before
/// this process asks again.
const GRANT_BACKOFF: u64 = 64;

/// How [`RemoteFile::try_granted`] went.
enum Grow {
    /// Written at this offset.
    Done(u64),
    /// No grant, or the write goes past its limit: ask for one covering
    /// this many bytes past the end of file.
    Ask(u64),
    /// Not for a grant (a gap before it, shared or bad blocks).
    No,
}

/// Send the modification time of in-place overwrites at most this often
/// (and at fsync and close).
const TOUCH_EVERY_NS: u64 = 1_000_000_000;

/// The key of an open file's attributes in the attribute cache (one no
/// path can be: paths have no NUL).
pub(super) fn fstat_key(ino: u64) -> String {
    format!("\0{ino}")
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl RemoteFile {
    pub(super) fn open(
        inner: &Arc<Inner>,
        path: &str,
        opts: &crate::fs::OpenOptions,
    ) -> Result<RemoteFile> {
        // ORDERING: Relaxed: read and compared under the files lock in
        // `opened`, where the listener counts (see `Inner::unclaimed`).
        let unclaimed = inner.unclaimed.load(Ordering::Relaxed);
        let mark = inner.attrs_mark();
        let r = inner.call(&Request::Open {
            path: path.as_bytes().to_vec(),
            read: opts.read,
            write: opts.write,
            create: opts.create || opts.create_new,
            excl: opts.create_new,
            trunc: opts.truncate,
            nofollow: opts.nofollow,
            mode: opts.mode,
        })?;
        // The attributes come with the open (grants settled, as `FStat`
        // answers them): the `fstat` that usually follows needs no round
        // trip.
        if let Reply::Opened { attr, .. } = &r {
            let s = super::stat(attr);
            inner.keep_stat(&fstat_key(s.ino), mark, Some(s), Some(Box::default()));
        }
        Self::opened(inner, r, Some(unclaimed))
    }

    pub(super) fn open_unnamed(
        inner: &Arc<Inner>,
        dir: &str,
        mode: u32,
        linkable: bool,
    ) -> Result<RemoteFile> {
        let r = inner.call(&Request::OpenUnnamed {
            dir: dir.as_bytes().to_vec(),
            mode,
            linkable,
        })?;
        Self::opened(inner, r, None)
    }

    /// A handle to the open file description another client offered with
    /// [`RemoteFile::share`] (as a forked child keeps its parent's
    /// descriptors): the offset and the OFD and flock locks are shared.
    pub(super) fn adopt(inner: &Arc<Inner>, token: u64) -> Result<RemoteFile> {
        inner.wait_for_closes();
        let r = inner.call(&Request::Adopt { token })?;
        Self::opened(inner, r, None)
    }

    /// The file the owner's answer `r` to an open names. A layout that
    /// came with it is installed only if no callback naming a file this
    /// process had no node for arrived since `unclaimed` (the count before
    /// the open was sent): it may have been a recall of this very file,
    /// before its node existed.
    fn opened(inner: &Arc<Inner>, r: Reply, unclaimed: Option<u64>) -> Result<RemoteFile> {
        let Reply::Opened {
            handle,
            write,
            attr,
            layout,
        } = r
        else {
            return Err(unexpected(r));
        };
        let (node, fresh) = {
            let mut files = inner.files.lock();
            files.retain(|_, w| w.strong_count() > 0);
            let n = match files.get(&attr.ino).and_then(|w| w.upgrade()) {
                Some(n) => n,
                None => {
                    let n = Arc::new(Node::new(attr.ino));
                    files.insert(attr.ino, Arc::downgrade(&n));
                    n
                }
            };
            // ORDERING: Relaxed: under the files lock, as the listener's
            // count: a callback after this finds the node.
            let fresh = unclaimed.is_some_and(|u| inner.unclaimed.load(Ordering::Relaxed) == u);
            // ORDERING: Relaxed: under the files lock, as `end_all`'s store.
            if inner.ended.load(Ordering::Relaxed) {
                // ORDERING: Relaxed: under the files lock; every install
                // comes after (the node is not shared yet).
                n.recalled.store(u64::MAX, Ordering::Relaxed);
            }
            (n, fresh)
        };
        if let Some(l) = layout.filter(|_| fresh) {
            // Leased with the open: the first read or fault needs no
            // `Lease` (a recall of its epoch that came first voids it).
            let mut layout = Layout::leased(l.epoch, l.serial, l.size);
            layout.add(&l.extents, &l.bad);
            layout.count_shared();
            // A connection that ended meanwhile fails the next call.
            let _ = node.install(layout);
        }
        Ok(RemoteFile {
            o: Arc::new(Open {
                inner: inner.clone(),
                handle,
                ino: attr.ino,
                write,
                node,
                unsent_mtime: AtomicU64::new(0),
                // The first in-place overwrite waits too (a file written
                // and closed at once sends its time with the close).
                last_touch: AtomicU64::new(now_ns()),
                nlink: attr.nlink,
                // Read after the answer: the open's own records (a create)
                // come before it.
                opened_at: inner.log_head(),
            }),
        })
    }

    pub fn ino(&self) -> u64 {
        self.o.ino
    }

    /// The owner's handle of this open file.
    pub(super) fn handle(&self) -> u64 {
        self.o.handle
    }

    /// Offer this open file description to another client
    /// ([`super::Client::adopt`]): a token that holds the description open
    /// until one client of the same uid adopts it, or for 30 s.
    pub fn share(&self) -> Result<u64> {
        self.o.inner.wait_for_closes();
        match self.o.inner.call(&Request::Share {
            handle: self.o.handle,
        })? {
            Reply::Shared { token } => Ok(token),
            other => Err(unexpected(other)),
        }
    }

    /// `lseek` of the description's offset (shared by every handle to it,
    /// in any client): `whence` 0 `SEEK_SET`, 1 `SEEK_CUR`, 2 `SEEK_END`.
    pub fn seek(&self, whence: u8, offset: i64) -> Result<u64> {
        match self.o.inner.call(&Request::Seek {
            handle: self.o.handle,
            whence,
            offset,
        })? {
            Reply::Offset { pos } => Ok(pos),
            other => Err(unexpected(other)),
        }
    }

    /// Claim `len` bytes of the shared offset (up to the end of file with
    /// `clamp`): the offset they start at.
    fn advance(&self, len: u64, clamp: bool) -> Result<u64> {
        match self.o.inner.call(&Request::Advance {
            handle: self.o.handle,
            len,
            clamp,
        })? {
            Reply::Offset { pos } => Ok(pos),
            other => Err(unexpected(other)),
        }
    }

    /// `read` at the description's offset, which moves on by the bytes
    /// read, atomically against every other user of the description.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let at = self.advance(buf.len() as u64, true)?;
        self.read_at(buf, at)
    }

    /// `write` at the description's offset, which moves on by the length,
    /// atomically against every other user of the description.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        let at = self.advance(data.len() as u64, false)?;
        self.write_at(data, at)
    }

    /// `fstat`, from the client's attribute cache (as `Client::stat`).
    pub fn stat(&self) -> Result<crate::fs::Stat> {
        let key = fstat_key(self.o.ino);
        let handle = self.o.handle;
        // Under this process's grant the owner's size lags (it leaves the
        // grant to its holder for an fstat): the size this process grew
        // the file to, read before the answer (a settle meanwhile forgets
        // it, though the answer predates the settle) and after.
        let before = self.o.node.size_seen(0);
        let mut s = self
            .o
            .inner
            .cached_stat(&key, None, || Request::FStat { handle })?;
        s.size = self.o.node.size_seen(s.size.max(before));
        // In-place overwrites whose time the owner has not had yet.
        // ORDERING: Relaxed: see `RemoteFile::write_at`.
        let unsent = self.o.unsent_mtime.load(Ordering::Relaxed);
        s.mtime_ns = s.mtime_ns.max(unsent);
        s.ctime_ns = s.ctime_ns.max(unsent);
        Ok(s)
    }

    /// A name `path` for this open file (`linkat` with `AT_EMPTY_PATH`).
    pub fn link(&self, path: &str) -> Result<()> {
        self.o.inner.done(&Request::Link {
            from: Target::Handle(self.o.handle),
            to: path.as_bytes().to_vec(),
        })
    }

    /// `fchmod`.
    pub fn set_permissions(&self, mode: u32) -> Result<()> {
        self.o.inner.done(&Request::SetAttr {
            target: Target::Handle(self.o.handle),
            mode: Some(mode),
            atime_ns: None,
            mtime_ns: None,
        })
    }

    /// `fchown` (`None` leaves the owner or group).
    pub fn set_owner(&self, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.o.inner.done(&Request::SetOwner {
            target: Target::Handle(self.o.handle),
            uid,
            gid,
        })
    }

    /// `futimens` (`None` leaves a time as it is).
    pub fn set_times(&self, atime_ns: Option<u64>, mtime_ns: Option<u64>) -> Result<()> {
        // An explicit time replaces the one of in-place overwrites not sent.
        // ORDERING: Relaxed: see `write_at`.
        if mtime_ns.is_some() {
            self.o.unsent_mtime.store(0, Ordering::Relaxed);
        }
        self.o.inner.done(&Request::SetAttr {
            target: Target::Handle(self.o.handle),
            mode: None,
            atime_ns,
            mtime_ns,
        })
    }

    /// `fallocate(2)` with the Linux mode bits of [`crate::fs::falloc`],
    /// through the owner (every lease on the file is recalled first; a
    /// punch, collapse, insert or zero range waits for the pins on the
    /// blocks in every client).
    ///
    /// This process does its own part of the owner's settle and recall
    /// first, as for [`RemoteFile::set_len`].
    pub fn fallocate(&self, mode: u32, offset: u64, len: u64) -> Result<()> {
        use crate::fs::falloc::{COLLAPSE_RANGE, INSERT_RANGE, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE};
        let (settled, dropped) = self.done_itself(|known| {
            // The owner's recall: blocks freed or moved wait for pins;
            // shifted blocks to the end; a size kept never grows.
            let frees = mode & (PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE) != 0;
            let (first, end) = (offset / BLOCK_SIZE, offset.saturating_add(len));
            let range = if mode & (COLLAPSE_RANGE | INSERT_RANGE) != 0 {
                first..u64::MAX
            } else if mode & KEEP_SIZE != 0 || known.is_some_and(|l| end <= l) {
                first..end.div_ceil(BLOCK_SIZE)
            } else {
                first..u64::MAX
            };
            (range, frees)
        })?;
        self.o.inner.done(&Request::Fallocate {
            handle: self.o.handle,
            mode,
            offset,
            len,
            settled,
            dropped,
        })
    }

    /// Before a change of the file's layout this process asks of the
    /// owner (a truncate, a fallocate): do here what the owner's settle
    /// and recall of this process would (docs/multiprocess.md, "The
    /// writer's own lease"): stop using its size grant, unmap the file
    /// pages `change(size)` names (`size`: the file's as this process
    /// knows it, `None` if it does not; with its second part, first
    /// waiting for their pins) and those of the grant's unused blocks,
    /// and drop the layout. Returns the grant's word and the lease serial
    /// dropped through, for the request; `EBUSY` if pins stayed.
    fn done_itself(
        &self,
        change: impl FnOnce(Option<u64>) -> (std::ops::Range<u64>, bool),
    ) -> Result<((u64, u32), u64)> {
        let (node, inner) = (&self.o.node, &self.o.inner);
        let (settled, known) = node.stop_grant(inner);
        let (range, wait) = change(known);
        let (dropped, mut busy) = node.drop_own(inner, wait, range.clone());
        if settled.0 != 0 {
            // The settle frees the grant's blocks past its size: their
            // pins are waited for, unless the first pass did.
            let past = known.map_or(0, |s| s.div_ceil(BLOCK_SIZE));
            if !(wait && range.end == u64::MAX && range.start <= past) {
                busy |= node.drop_own(inner, true, past..u64::MAX).1;
            }
        }
        if busy {
            return Err(Error::Busy(format!(
                "blocks of inode {} stay pinned in this process after {:?}",
                node.ino,
                dax::PIN_TIMEOUT
            )));
        }
        Ok((settled, dropped))
    }

    /// The file's extents from the lease, as (file block, device block,
    /// blocks, shared with another file): `SEEK_DATA`, `SEEK_HOLE` and
    /// `FIEMAP` without a round trip while the lease holds.
    pub fn extents(&self) -> Result<Vec<(u64, u64, u64, bool)>> {
        self.o
            .with_layout(|l| Ok(l.map.iter().map(|(&f, &(d, n, s))| (f, d, n, s)).collect()))
    }

    /// What is at file block `fblk`, from the lease (as
    /// [`crate::fs::File::iomap`]).
    pub fn iomap(&self, fblk: u64) -> Result<crate::fs::extent::Lookup> {
        use crate::fs::extent::Lookup;
        self.o.with_layout(|l| {
            if let Some((&f, &(d, n, _))) = l.map.range(..=fblk).next_back() {
                if fblk < f + n {
                    return Ok(Lookup::Mapped {
                        dev_blk: d + (fblk - f),
                        len: f + n - fblk,
                    });
                }
            }
            let len = l
                .map
                .range(fblk..)
                .next()
                .map_or(u64::MAX, |(&f, _)| f - fblk);
            Ok(Lookup::Hole { len })
        })
    }

    /// `fdatasync`, with no round trip: what this client wrote is durable
    /// already but for its mappings' stores, flushed here. Its in-place
    /// overwrites were flushed and fenced as they went; the owner fenced
    /// what it wrote for the client (`Write`, `Append`) before answering,
    /// and its journal commits each change of size or blocks durably before
    /// answering. (The times `fsync` also makes durable are left out, as
    /// fdatasync may.)
    pub fn sync_data(&self) -> Result<()> {
        if self.o.inner.dax.is_some() {
            dax::hooks::sync_mappings(&View::listener(&self.o.node, &self.o.inner))?;
        }
        Ok(())
    }

    /// The byte ranges of the file on media errors, from the lease.
    pub fn poisoned_ranges(&self) -> Result<Vec<(u64, u64)>> {
        self.o.with_layout(|l| {
            Ok(l.bad
                .iter()
                .map(|&(b, n)| (b * BLOCK_SIZE, n * BLOCK_SIZE))
                .collect())
        })
    }

    /// The file's size (from the lease: no round trip while it holds).
    pub fn len(&self) -> Result<u64> {
        self.o.with_layout(|l| Ok(l.size))
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Read up to `buf.len()` bytes at `off` straight from the device; fewer
    /// at end of file; holes read as zeros; a media error gives a short read
    /// up to it, or EIO.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        if dax::in_mapping(buf.as_ptr() as usize, buf.len()) {
            // Copying into a udax mapping may fault, and the fault may need
            // the layout lock this read holds: go through a bounce buffer.
            let mut tmp = vec![0u8; buf.len()];
            let n = self.read_at(&mut tmp, off)?;
            buf[..n].copy_from_slice(&tmp[..n]);
            return Ok(n);
        }
        let dev = self.o.inner.dev()?;
        self.o.with_layout(|l| {
            if off >= l.size || buf.is_empty() {
                return Ok(0);
            }
            let n = (l.size - off).min(buf.len() as u64) as usize;
            let mut done = 0usize;
            while done < n {
                let pos = off + done as u64;
                let (b, in_blk) = (pos / BLOCK_SIZE, pos % BLOCK_SIZE);
                let (d, run) = l.at(b);
                let room = run.saturating_mul(BLOCK_SIZE) - in_blk;
                let mut take = room.min((n - done) as u64) as usize;
                if let Some(d) = d {
                    let blocks = (in_blk + take as u64).div_ceil(BLOCK_SIZE);
                    if let Some(bad) = l.first_bad(b, blocks) {
                        let ok = ((bad - b) * BLOCK_SIZE).saturating_sub(in_blk) as usize;
                        if done + ok == 0 {
                            return Err(Error::Device(DeviceError::Poisoned {
                                offset: (d + (bad - b)) * BLOCK_SIZE,
                            }));
                        }
                        take = take.min(ok);
                        dev.read(d * BLOCK_SIZE + in_blk, &mut buf[done..done + take])?;
                        return Ok(done + take);
                    }
                    dev.read(d * BLOCK_SIZE + in_blk, &mut buf[done..done + take])?;
                } else {
                    buf[done..done + take].fill(0);
                }
                done += take;
            }
            Ok(n)
        })
    }

    /// Write `data` at `off`. An overwrite of blocks the lease shows
    /// allocated to this file alone, inside the file and free of media
    /// errors goes straight to the device (durable when this returns; the
    /// file's mtime reaches the owner later, see docs/limits.md); anything
    /// else (growth, holes, shared blocks) goes through the owner, in pieces
    /// of at most [`proto::MAX_WRITE`]. Returns the bytes written (fewer if
    /// the device filled up part way).
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<usize> {
        if dax::in_mapping(data.as_ptr() as usize, data.len()) {
            // As in `read_at`: a load from a udax mapping may fault.
            let copy: Vec<u8> = data.to_owned();
            return self.write_at(copy.as_slice(), off);
        }
        let mut in_place = self.write_in_place(data, off)?;
        if in_place.is_none() {
            in_place = self.grow_granted(data, Some(off))?.map(|_| data.len());
        }
        if in_place.is_none() {
            in_place = self.write_grown(data, off)?;
        }
        if let Some(n) = in_place {
            self.o.note_write();
            return Ok(n);
        }
        let mut done = 0usize;
        for chunk in data.chunks(proto::MAX_WRITE) {
            let at = off + done as u64;
            // What the owner's recall would do here, done first, so that
            // it can leave this process out (`Node::drop_own`).
            let (dropped, _) =
                self.o
                    .node
                    .drop_own(&self.o.inner, false, at / BLOCK_SIZE..u64::MAX);
            let r = self.o.inner.call(&Request::Write {
                handle: self.o.handle,
                offset: at,
                data: chunk.to_vec(),
                dropped,
            })?;
            let Reply::Written { n } = r else {
                return Err(unexpected(r));
            };
            done += n as usize;
            if (n as usize) < chunk.len() {
                break;
            }
        }
        Ok(done)
    }

    /// An `O_APPEND` write: `data` goes at the end of the file, atomically
    /// against every other append in any process (the owner reserves the
    /// whole range first). Returns the offset it went to and the bytes
    /// written (fewer if the device filled up; the reserved tail then
    /// reads as zeros).
    pub fn append(&self, data: &[u8]) -> Result<(u64, usize)> {
        if dax::in_mapping(data.as_ptr() as usize, data.len()) {
            let copy: Vec<u8> = data.to_owned();
            return self.append(copy.as_slice());
        }
        if let Some(at) = self.grow_granted(data, None)? {
            self.o.note_write();
            return Ok((at, data.len()));
        }
        let first = &data[..data.len().min(proto::MAX_WRITE)];
        // The owner's recall: from the end of the file on (knowing no
        // size, from the start).
        let (settled, dropped) =
            self.done_itself(|known| (known.map_or(0, |l| l / BLOCK_SIZE)..u64::MAX, false))?;
        let r = self.o.inner.call(&Request::Append {
            handle: self.o.handle,
            total: data.len() as u64,
            data: first.to_vec(),
            settled,
            dropped,
        })?;
        let Reply::Appended { at, n } = r else {
            return Err(unexpected(r));
        };
        let mut done = n as usize;
        if done == first.len() && done < data.len() {
            done += self.write_at(&data[done..], at + done as u64)?;
        }
        Ok((at, done))
    }

    /// The in-place overwrite of [`RemoteFile::write_at`], under the
    /// layout's read lock (a recall waits for it); `None` if the range does
    /// not qualify.
    fn write_in_place(&self, data: &[u8], off: u64) -> Result<Option<usize>> {
        Ok(self.copy_in_place(data, off, false)?.map(|_| data.len()))
    }

    /// A write of [`GROW_IN_PLACE_MIN`] bytes or more that the lease cannot
    /// take in place (it grows the file or fills holes): the owner
    /// allocates the blocks without growing the size (`fallocate` with
    /// `KEEP_SIZE`), this process copies the bytes in place, and then the
    /// owner grows the size over them (`Extend`, checked against the
    /// lease's epoch): three round trips, where `Write` takes one per
    /// [`proto::MAX_WRITE`] bytes and copies them through the socket.
    /// `None`: the `Write` path is to take it (too small, no space for the
    /// blocks, or the file changed between the steps; blocks allocated
    /// past the end by then stay with the file, as `fallocate` leaves them).
    fn write_grown(&self, data: &[u8], off: u64) -> Result<Option<usize>> {
        if data.len() < GROW_IN_PLACE_MIN || !self.o.write || !self.o.inner.writable() {
            return Ok(None);
        }
        let len = data.len() as u64;
        let Some(end) = off.checked_add(len) else {
            return Ok(None);
        };
        if self
            .fallocate(crate::fs::falloc::KEEP_SIZE, off, len)
            .is_err()
        {
            return Ok(None);
        }
        let Some((epoch, size)) = self.copy_in_place(data, off, true)? else {
            return Ok(None);
        };
        if end <= size {
            return Ok(Some(data.len()));
        }
        let (settled, dropped) = self.done_itself(|_| (off / BLOCK_SIZE..u64::MAX, false))?;
        match self.o.inner.done(&Request::Extend {
            handle: self.o.handle,
            offset: off,
            size: end,
            epoch,
            settled,
            dropped,
        }) {
            Ok(()) => Ok(Some(data.len())),
            Err(Error::Remote { errno, .. }) if errno == libc::ESTALE => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copy `data` to file offset `off` straight onto the device, under the
    /// layout's read lock (a recall waits for it), if every block of the
    /// range is allocated to this file alone and free of media errors, and
    /// the range lies inside the file (or, with `past_eof`, in blocks
    /// allocated past its end); durable on return. Returns the epoch and
    /// size of the layout it was done under, or `None` (nothing written).
    fn copy_in_place(&self, data: &[u8], off: u64, past_eof: bool) -> Result<Option<(u64, u64)>> {
        if !self.o.write || data.is_empty() || !self.o.inner.writable() {
            return Ok(None);
        }
        self.o
            .with_layout(|l| self.copy_into(l, data, off, past_eof))
    }

    /// [`RemoteFile::copy_in_place`] under layout `l`.
    fn copy_into(
        &self,
        l: &Layout,
        data: &[u8],
        off: u64,
        past_eof: bool,
    ) -> Result<Option<(u64, u64)>> {
        let dev = self.o.inner.dev()?;
        let Some(end) = off
            .checked_add(data.len() as u64)
            .filter(|&e| past_eof || e <= l.size)
        else {
            return Ok(None);
        };
        // (device offset, offset in `data`, length) of each run.
        let mut runs = Vec::new();
        let mut pos = off;
        while pos < end {
            let b = pos / BLOCK_SIZE;
            let Some((&f, &(d, n, shared))) = l.map.range(..=b).next_back() else {
                return Ok(None);
            };
            if b >= f + n || shared {
                return Ok(None);
            }
            let run_end = ((f + n) * BLOCK_SIZE).min(end);
            let blocks = run_end.div_ceil(BLOCK_SIZE) - b;
            if l.first_bad(b, blocks).is_some() {
                return Ok(None);
            }
            let dev_off = (d + (b - f)) * BLOCK_SIZE + pos % BLOCK_SIZE;
            runs.push((dev_off, (pos - off) as usize, (run_end - pos) as usize));
            pos = run_end;
        }
        for &(dev_off, at, len) in &runs {
            // Plain stores: the bytes are likely read again soon (by this
            // process or through another's shared mapping); the flush and
            // fence below make them durable on pmem.
            dev.write_cached(dev_off, &data[at..at + len])?;
            dev.flush(dev_off, len as u64);
        }
        dev.fence()?;
        Ok(Some((l.epoch, l.size)))
    }

    /// A write that grows the file (at `off`, or at its end for an
    /// append: `None`) under this process's size grant, asking for one
    /// (or a renewal past its limit) when the file keeps growing. Returns
    /// where it went, or `None`: the owner is to take it.
    fn grow_granted(&self, data: &[u8], off: Option<u64>) -> Result<Option<u64>> {
        let o = &self.o;
        let len = data.len() as u64;
        if !o.write || data.is_empty() || len > GRANT_MAX_WANT || !o.inner.writable() {
            return Ok(None);
        }
        // ORDERING: Relaxed: a hint (the owner refused grants on this
        // device); a stale read asks once more.
        if o.inner.no_grants.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // Not asking for one: no layout fetched either.
        if o.node.grant.lock().is_none() {
            // ORDERING: Relaxed: a count for a heuristic (a lost race asks
            // once more or once less).
            let skip = o.node.skip.load(Ordering::Relaxed);
            if skip > 0 {
                o.node.skip.store(skip - 1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        for _ in 0..3 {
            match self.try_granted(data, off)? {
                Grow::Done(at) => return Ok(Some(at)),
                Grow::No => return Ok(None),
                Grow::Ask(need) => {
                    if !self.ask_grant(need)? {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Copy `data` in place under the grant and store the new size in its
    /// word (durable on return, as the owner's `Write` is).
    fn try_granted(&self, data: &[u8], off: Option<u64>) -> Result<Grow> {
        let node = &self.o.node;
        let len = data.len() as u64;
        loop {
            if node.layout.read().is_none() {
                // Fetched with no lock held: the owner may settle a grant
                // (ours too) before it answers.
                let l = fetch(&self.o.inner, self.o.handle)?;
                node.install(l)?;
                continue;
            }
            let mut g = node.grant.lock();
            let Some(gr) = g.as_mut() else {
                // Only a write that grows the file asks for a grant.
                let lg = node.layout.read();
                let size = lg.as_ref().map_or(0, |l| l.size);
                let end = off.unwrap_or(size).saturating_add(len);
                return Ok(if end > size {
                    Grow::Ask(end - size)
                } else {
                    Grow::No
                });
            };
            let at = off.unwrap_or(gr.size);
            let Some(end) = at.checked_add(len) else {
                return Ok(Grow::No);
            };
            if end > gr.limit {
                return Ok(Grow::Ask(end - gr.size));
            }
            let copied = {
                let lg = node.layout.read();
                let Some(l) = lg.as_ref() else {
                    continue;
                };
                // A gap from the end to the write reads as zeros: the
                // grant's blocks are zeroed when allocated, the tail of
                // the block the end lies in is zeroed here.
                let tail_end = gr.size.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
                if at > gr.size && tail_end > gr.size {
                    let zeros = vec![0u8; (at.min(tail_end) - gr.size) as usize];
                    if self.copy_into(l, &zeros, gr.size, true)?.is_none() {
                        return Ok(Grow::No);
                    }
                }
                self.copy_into(l, data, at, true)?
            };
            if copied.is_none() {
                return Ok(Grow::No);
            }
            if end > gr.size {
                let dev = self.o.inner.dev()?;
                let word = crate::format::v3::grant_word(end, gr.word_at, gr.serial);
                dev.write_word(gr.word_at, word)?;
                dev.persist(gr.word_at, 8)?;
                gr.size = end;
                // ORDERING: Relaxed: under the grant lock (see `Node::settle`).
                node.grown.store(end, Ordering::Relaxed);
                if let Some(l) = node.layout.write().as_mut() {
                    l.size = l.size.max(end);
                }
            }
            return Ok(Grow::Done(at));
        }
    }

    /// Ask the owner for a size grant covering at least `len` bytes past
    /// the end of file (a renewal if this process holds one: it stops
    /// using it first). `false`: refused (the owner takes the write, and
    /// the next [`GRANT_BACKOFF`] growths too).
    fn ask_grant(&self, len: u64) -> Result<bool> {
        let o = &self.o;
        let node = &o.node;
        if len > GRANT_MAX_WANT {
            return Ok(false);
        }
        let _one = node.asking.lock();
        let renewal = {
            let g = node.grant.lock();
            match *g {
                // Another thread got one meanwhile: try it.
                Some(gr) if gr.size + len <= gr.limit => return Ok(true),
                Some(_) => true,
                None => false,
            }
        };
        if renewal {
            // Stopped before asking (the protocol's rule): the owner reads
            // the word as final. A write that finds no grant meanwhile waits
            // for `asking`.
            let mut g = node.grant.lock();
            *g = None;
            // ORDERING: Relaxed: see `Node::settle`.
            node.grown.store(0, Ordering::Relaxed);
        }
        // ORDERING: Relaxed: a size hint.
        let want = node.next_want.load(Ordering::Relaxed).max(len);
        node.next_want
            .store((want * 2).min(GRANT_MAX_WANT), Ordering::Relaxed);
        let r = o.inner.call(&Request::Grant {
            handle: o.handle,
            want,
        });
        let (size, limit, word_at, serial, epoch) = match r {
            Ok(Reply::Granted {
                size,
                limit,
                word_at,
                serial,
                epoch,
            }) => (size, limit, word_at, serial, epoch),
            Ok(other) => return Err(unexpected(other)),
            Err(Error::Remote { errno, .. })
                if errno == libc::EOPNOTSUPP || errno == libc::ENOTSUP || errno == libc::EPROTO =>
            {
                // ORDERING: Relaxed: see `grow_granted`.
                o.inner.no_grants.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            Err(e @ (Error::NotConnected(_) | Error::Io(_))) => return Err(e),
            Err(_) => {
                // ORDERING: Relaxed: see `grow_granted`.
                node.skip.store(GRANT_BACKOFF, Ordering::Relaxed);
                return Ok(false);
            }
        };
        if size >= crate::format::v3::GRANT_MAX_SIZE || limit >= crate::format::v3::GRANT_MAX_SIZE {
            return Err(Error::Invalid("the owner's grant is out of range"));
        }
        // The blocks past the end are new: the layout is fetched again.
        // (The file's cached attributes went with the answer; an `fstat`
        // corrects the size it caches from now on: `RemoteFile::stat`.)
        *node.layout.write() = None;
        Ok(node.install_grant(
            LocalGrant {
                size,
                limit,
                word_at,
                serial,
            },
            epoch,
        ))
    }

    /// Make the file durable (the owner's `fsync`), with what this
    /// process's mappings wrote and the modification time of in-place
    /// overwrites.
    pub fn fsync(&self) -> Result<()> {
        if self.o.inner.dax.is_some() {
            dax::hooks::sync_mappings(&View::listener(&self.o.node, &self.o.inner))?;
        }
        self.o.send_mtime()?;
        self.o.inner.done(&Request::Fsync {
            handle: self.o.handle,
        })
    }

    /// Set the file's size through the owner (every lease on it is recalled
    /// first, this client's own included; a shrink waits for the pins on
    /// the blocks it frees, in every client). This process settles its own
    /// size grant and drops its own layout past the new end itself first
    /// (waiting for its own pins there), so the owner calls back only the
    /// others (docs/multiprocess.md, "The writer's own lease").
    pub fn set_len(&self, size: u64) -> Result<()> {
        let mut shrinks = true;
        let (settled, dropped) = self.done_itself(|known| {
            // What the owner's recall would unmap: from the new end, or
            // from the old one when the file grows (knowing no size, from
            // the start); its pins waited for where blocks may be freed.
            shrinks = known.is_none_or(|len| size < len);
            let from = known.map_or(0, |len| size.min(len) / BLOCK_SIZE);
            (from..u64::MAX, shrinks)
        })?;
        if shrinks {
            // Growth starts again from small grants.
            // ORDERING: Relaxed: a size hint.
            self.o
                .node
                .next_want
                .store(GRANT_FIRST_WANT, Ordering::Relaxed);
        }
        self.o.inner.done(&Request::Truncate {
            handle: self.o.handle,
            size,
            settled,
            dropped,
        })
    }

    /// `fcntl(F_SETLK)` (or `F_OFD_SETLK` with `scope` [`LockScope::Ofd`],
    /// or `flock` with [`LockScope::Flock`], which ignores the range): take
    /// a `kind` lock of `[start, end)` (`end` `u64::MAX`: to end of file), or
    /// drop it (`None`), with the kernel's rules across every process of
    /// the device (`fs::locks`). `EAGAIN` if another process holds a
    /// conflicting lock; with `wait` (`F_SETLKW`, `flock` without
    /// `LOCK_NB`) it waits instead, and fails with `EDEADLK` if waiting
    /// would close a cycle of waiting processes (POSIX locks).
    pub fn lock(
        &self,
        scope: LockScope,
        kind: Option<LockKind>,
        start: u64,
        end: u64,
        wait: bool,
    ) -> Result<()> {
        // ORDERING: Relaxed: read by this process's closes of the file
        // (see `Inner::wait_for_closes`).
        self.o.node.locked.store(true, Ordering::Relaxed);
        let req = Request::Lock {
            handle: self.o.handle,
            scope,
            kind: match kind {
                None => 0,
                Some(LockKind::Read) => 1,
                Some(LockKind::Write) => 2,
            },
            start,
            end,
            wait,
        };
        // Waiting is retrying: the owner answers at once (one request at
        // a time per client, so it never sleeps on a client's behalf),
        // and records the waiter for deadlock detection each time.
        let mut pause = std::time::Duration::from_micros(100);
        loop {
            match self.o.inner.call(&req) {
                Ok(Reply::Done) => return Ok(()),
                Ok(other) => return Err(unexpected(other)),
                Err(e) if wait && e.errno() == libc::EAGAIN => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `fcntl(F_GETLK)` (or `F_OFD_GETLK`): the first lock another owner
    /// holds that a `kind` lock of `[start, end)` would conflict with, as
    /// (kind, start, end, pid; -1 for an OFD lock), or `None`.
    pub fn get_lock(
        &self,
        scope: LockScope,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Result<Option<(LockKind, u64, u64, i32)>> {
        let r = self.o.inner.call(&Request::GetLock {
            handle: self.o.handle,
            scope,
            kind: if kind == LockKind::Read { 1 } else { 2 },
            start,
            end,
        })?;
        match r {
            Reply::LockHeld { kind: 0, .. } => Ok(None),
            Reply::LockHeld {
                kind,
                start,
                end,
                pid,
            } => Ok(Some((
                if kind == 1 {
                    LockKind::Read
                } else {
                    LockKind::Write
                },
                start,
                end,
                pid,
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// The file as a mapping of it sees it (the fault engine's
    /// [`DaxInode`]), once the open's access mode allows `prot` (a shared
    /// writable mapping needs the file open for writing) and this client
    /// maps the device. The mapping keeps the file open at the owner
    /// (`RemoteMapping` holds it), so the view needs only the handle's
    /// number.
    fn map_view(&self, prot: Prot, private: bool) -> Result<Arc<dyn DaxInode>> {
        if prot == Prot::ReadWrite && !private && !(self.o.write && self.o.inner.writable()) {
            return Err(Error::Access(
                "shared writable mmap of a file not open for writing",
            ));
        }
        if self.o.inner.dax.is_none() {
            return Err(Error::NotSupported(
                "mmap through a device the client cannot map",
            ));
        }
        Ok(Arc::new(View {
            node: self.o.node.clone(),
            inner: self.o.inner.clone(),
            handle: Some(self.o.handle),
        }))
    }

    /// Map `len` bytes of the file from `offset` (page aligned) into this
    /// process. Faults are resolved by this process's fault engine from the
    /// layout lease; a store into a hole asks the owner for blocks. Another
    /// client's truncate, punch or hole fill unmaps the file here first (the
    /// recall), as the kernel's `unmap_mapping_range` does in every process.
    pub fn mmap(
        &self,
        offset: u64,
        len: usize,
        prot: Prot,
        flags: MapFlags,
    ) -> Result<RemoteMapping> {
        let inode = self.map_view(prot, flags.private)?;
        let map = Map::new(inode, offset, len, prot, flags)?;
        Ok(RemoteMapping {
            map,
            _file: RemoteFile { o: self.o.clone() },
        })
    }
}

impl Open {
    /// Run `f` on the current layout, fetching a lease first if there is
    /// none (and again if a recall overtook the fetch).
    fn with_layout<T>(&self, mut f: impl FnMut(&Layout) -> Result<T>) -> Result<T> {
        loop {
            if let Some(l) = self.node.layout.read().as_ref() {
                return f(l);
            }
            let l = fetch(&self.inner, self.handle)?;
            self.node.install(l)?;
        }
    }

    /// A write done in place (no request): its time goes to the owner
    /// later, at most every [`TOUCH_EVERY_NS`] (and at fsync and close).
    fn note_write(&self) {
        let now = now_ns();
        // ORDERING: Relaxed: times handed to the owner; a lost race only
        // sends one more (or one later) Touch.
        self.unsent_mtime.fetch_max(now, Ordering::Relaxed);
        if now.saturating_sub(self.last_touch.load(Ordering::Relaxed)) >= TOUCH_EVERY_NS {
            // A failed Touch only loses a time (the next one sends it).
            let _ = self.send_mtime();
        }
    }

    /// Send the modification time of in-place overwrites, if any is unsent.
    fn send_mtime(&self) -> Result<()> {
        // ORDERING: Relaxed: see `RemoteFile::write_at`.
        let t = self.unsent_mtime.swap(0, Ordering::Relaxed);
        if t == 0 {
            return Ok(());
        }
        self.last_touch.store(now_ns(), Ordering::Relaxed);
        self.inner.done(&Request::Touch {
            handle: self.handle,
            mtime_ns: t,
        })
    }
}

impl Open {
    /// Whether no other process can see this close happen, so that it need
    /// not be waited for: it sends no time, this process holds no grant on
    /// the file, took no lock on it and shared or adopted no description
    /// (a close releases those), and the file still has a name (the link
    /// count it had when opened, with no change of the file logged since:
    /// the last close of an unlinked file frees its blocks, which
    /// `statfs` anywhere must show once it returns). The owner answers
    /// this process's requests in order, so its next one sees the file
    /// closed. (Another process that unlinks the file just after this
    /// close returns may find it still open for the moment the owner takes
    /// to read the close, and its blocks are freed then.)
    fn close_unseen(&self, mtime_ns: u64) -> bool {
        // ORDERING: Relaxed: see `Inner::wait_for_closes` (both flags).
        mtime_ns == 0
            && self.nlink > 0
            && !self.inner.closes_waited.load(Ordering::Relaxed)
            && !self.node.locked.load(Ordering::Relaxed)
            && self.node.grant.lock().is_none()
            && self.inner.unchanged_since(self.opened_at, self.ino)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // The modification time of in-place overwrites not sent yet goes
        // with the close (one round trip).
        // ORDERING: Relaxed: see `RemoteFile::write_at`.
        let mtime_ns = self.unsent_mtime.swap(0, Ordering::Relaxed);
        let close = Request::Close {
            handle: self.handle,
            mtime_ns,
        };
        if self.close_unseen(mtime_ns) {
            // Nothing waits for the answer; on failure, the close below.
            if self.inner.send_unanswered(&close).is_ok() {
                return;
            }
        }
        let _ = self.inner.call(&close);
        // The owner ends a grant at its holder's last close: an `fstat`
        // this process cached of the file may show the grant's old size.
        if self.node.grant.lock().is_some() {
            self.inner.attrs.lock().drop_ino(self.ino);
        }
    }
}

/// A lease on the whole layout of the file open as `handle` (as many
/// replies as it takes; if the epoch moves between them, start over).
fn fetch(inner: &Inner, handle: u64) -> Result<Layout> {
    'again: loop {
        let mut l: Option<Layout> = None;
        let mut from = 0u64;
        loop {
            let r = inner.call(&Request::Lease {
                handle,
                from_blk: from,
            })?;
            let Reply::Layout {
                epoch,
                serial,
                size,
                extents,
                bad,
                next,
                ..
            } = r
            else {
                return Err(unexpected(r));
            };
            let cur = l.get_or_insert_with(|| Layout::leased(epoch, serial, size));
            if cur.epoch != epoch {
                continue 'again;
            }
            cur.newest = cur.newest.max(serial);
            cur.add(&extents, &bad);
            match next {
                Some(n) if n > from => from = n,
                Some(_) => return Err(not_connected("lease made no progress".into())),
                None => {
                    let mut l = l.ok_or_else(|| not_connected("empty lease".into()))?;
                    l.count_shared();
                    return Ok(l);
                }
            }
        }
    }
}

/// A mapping of a file range into this process. Dropping it unmaps it.
#[derive(Debug)]
pub struct RemoteMapping {
    // Declared first: unmapped before the file's handle closes.
    map: Map,
    _file: RemoteFile,
}

impl RemoteMapping {
    /// A forked child's copy of its parent's mapping, made anew at the
    /// same address over `file`, the child's own open of the file (adopted
    /// from a token the parent shared before the fork): from now on this
    /// process's fault engine resolves it under this process's lease, so
    /// another client's truncate or punch unmaps it here too. The old
    /// mapping's objects speak for the parent and are not dropped. A
    /// private mapping keeps its private copies (see [`Map::renew`]).
    pub fn renew(self, file: &RemoteFile, flags: MapFlags) -> Result<RemoteMapping> {
        let inode = file.map_view(self.map.prot(), self.map.private())?;
        let RemoteMapping {
            map,
            _file: parents,
        } = self;
        std::mem::forget(parents);
        Ok(RemoteMapping {
            map: map.renew(inode, flags)?,
            _file: RemoteFile { o: file.o.clone() },
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }
    /// File offset shown at the first byte.
    pub fn offset(&self) -> u64 {
        self.map.offset()
    }
    /// The mapped file.
    pub fn file(&self) -> &RemoteFile {
        &self._file
    }
    /// `mprotect` of the whole mapping.
    pub fn protect(&self, prot: Prot) -> Result<()> {
        if prot == Prot::ReadWrite
            && !self.map.private()
            && !(self._file.o.write && self._file.o.inner.writable())
        {
            return Err(Error::Access("file not open for writing"));
        }
        Ok(self.map.protect(prot)?)
    }
    /// `munmap` of part of the mapping (as [`crate::fs::Mapping::unmap_range`]).
    pub fn unmap_range(&self, off: usize, len: usize) -> Result<()> {
        Ok(self.map.unmap_range(off, len)?)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// `msync(MS_SYNC)`: make stores to `[off, off+len)` durable.
    pub fn msync(&self, off: usize, len: usize) -> Result<()> {
        Ok(self.map.msync(off, len)?)
    }
    /// Pin `[off, off+len)` for in-flight I/O (as [`crate::fs::Mapping::pin`]):
    /// a truncate of the range in any client waits until the pin is dropped.
    pub fn pin(&self, off: usize, len: usize, write: bool) -> Result<Pin<'_>> {
        Ok(self.map.pin(off, len, write)?)
    }
    /// The device block mapped at byte `off` of this mapping right now, if any.
    pub fn device_block_of(&self, off: usize) -> Option<u64> {
        self.map.device_block_of(off)
    }
}

/// One file of a client, as the fault engine sees it ([`DaxInode`]):
/// answers from the layout lease; changes of blocks asked of the owner
/// through `handle`. Owned (`View<Arc<Node>, Arc<Inner>>`) where a mapping's
/// region keeps it for the fault handler threads; borrowed where the
/// listener or `fsync` calls a dax hook (no handle: it changes nothing), as
/// `fs::iomap::Inode` is for the embedded file system. Made only where the
/// client maps the device (`Inner::dax` is there).
#[derive(Debug)]
struct View<N = Arc<Node>, I = Arc<Inner>> {
    node: N,
    inner: I,
    handle: Option<u64>,
}

impl<'a> View<&'a Node, &'a Inner> {
    /// The listener's (and fsync's) view: no changes of blocks.
    fn listener(node: &'a Node, inner: &'a Inner) -> Self {
        View {
            node,
            inner,
            handle: None,
        }
    }
}

impl<N, I> View<N, I>
where
    N: Borrow<Node>,
    I: Borrow<Inner>,
{
    fn node(&self) -> &Node {
        self.node.borrow()
    }

    /// Ask the owner to change file blocks `[a, b)` for a fault, and update
    /// the layout from its answer.
    fn iomap(&self, op: IomapOp, a: u64, b: u64) -> Result<(), IomapError> {
        let Some(handle) = self.handle else {
            return Err(IomapError::ReadOnly);
        };
        let r = self.inner.borrow().call_fault(&Request::Iomap {
            handle,
            op,
            from_blk: a,
            to_blk: b,
        });
        match r {
            Ok(Reply::Layout { size, extents, .. }) => {
                if let Some(l) = self.node().layout.write().as_mut() {
                    l.patch(a, b, &extents, self.node().size_seen(size));
                }
                Ok(())
            }
            Ok(other) => Err(IomapError::Failed {
                errno: libc::EPROTO,
                what: format!("unexpected reply {other:?}"),
            }),
            Err(e) => Err(match e.errno() {
                libc::EAGAIN => IomapError::Retry,
                libc::ENOSPC => IomapError::NoSpace,
                libc::ENOENT => IomapError::Stale,
                libc::EROFS => IomapError::ReadOnly,
                errno => IomapError::Failed {
                    errno,
                    what: e.to_string(),
                },
            }),
        }
    }

    fn with<T>(&self, none: T, f: impl FnOnce(&Layout) -> T) -> T {
        self.node().layout.read().as_ref().map_or(none, f)
    }
}

impl<N, I> DaxInode for View<N, I>
where
    N: Borrow<Node> + Send + Sync + std::fmt::Debug,
    I: Borrow<Inner> + Send + Sync + std::fmt::Debug,
{
    fn ino(&self) -> u64 {
        self.node().ino
    }
    fn dax(&self) -> &DaxFile {
        &self.node().dax
    }
    fn device(&self) -> &DaxDevice {
        self.inner
            .borrow()
            .dax
            .as_ref()
            .expect("a view is made only where the client maps the device")
    }
    fn prepare(&self, block: bool) -> bool {
        let node = self.node();
        if node.layout.read().is_some() {
            return true;
        }
        if !block {
            return false;
        }
        if let Some(handle) = self.handle {
            match fetch(self.inner.borrow(), handle).and_then(|l| node.install(l)) {
                Ok(()) => {
                    // ORDERING: Relaxed: a hint for `ready`, set before the
                    // invalidate lock (which orders it) is taken.
                    node.lost.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!("lease on inode {}: {e}", node.ino);
                    // ORDERING: Relaxed: as above.
                    node.lost.store(true, Ordering::Relaxed);
                }
            }
        }
        true
    }
    fn ready(&self) -> Result<(), IomapError> {
        if self.node().layout.read().is_some() {
            Ok(())
        // ORDERING: Relaxed: see `prepare`.
        } else if self.node().lost.load(Ordering::Relaxed) {
            Err(IomapError::Failed {
                errno: libc::ENOTCONN,
                what: "no lease on the file's layout (the owner is gone)".into(),
            })
        } else {
            Err(IomapError::Retry)
        }
    }
    fn size(&self) -> u64 {
        self.with(0, |l| l.size)
    }
    fn lookup(&self, blk: u64) -> Lookup {
        self.with(Lookup::Hole { len: u64::MAX }, |l| match l.at(blk) {
            (Some(dev_blk), len) => Lookup::Mapped { dev_blk, len },
            (None, len) => Lookup::Hole { len },
        })
    }
    fn alloc_zeroed(&self, a: u64, b: u64) -> Result<(), IomapError> {
        self.iomap(IomapOp::Alloc, a, b)
    }
    fn unshare(&self, a: u64, b: u64) -> Result<(), IomapError> {
        self.iomap(IomapOp::Unshare, a, b)
    }
    fn relocate_chunk(&self, chunk: u64) -> Result<(), IomapError> {
        self.iomap(IomapOp::Relocate, chunk, chunk + crate::BLOCKS_PER_HUGE)
    }
    fn first_bad(&self, blk: u64, len: u64) -> Option<u64> {
        self.with(None, |l| {
            if l.bad.is_empty() {
                return None;
            }
            l.on_device(blk, len)
                .filter_map(|(r, f, _)| {
                    let bad = l.first_bad(f, r.end - r.start)?;
                    Some(r.start + (bad - f))
                })
                .min()
        })
    }
    fn has_shared(&self) -> bool {
        self.with(false, |l| l.shared > 0)
    }
    fn shared_in(&self, blk: u64, len: u64) -> Vec<Range<u64>> {
        self.with(Vec::new(), |l| {
            // The layout lists extents in file order, and after a clone
            // inside the file two of them show one device block: the
            // answer goes in device order, each block once, as the trait
            // asks (the fault path takes the first range as the lowest
            // shared block and maps writable up to it).
            let shared: rangemap::RangeSet<u64> = l
                .on_device(blk, len)
                .filter(|(_, _, s)| *s)
                .map(|(r, _, _)| r)
                .collect();
            shared.into_iter().collect()
        })
    }
}

/// Make a side channel to the owner: a socket pair, one end sent with
/// `req` (`Listen` or `Channel`) on the client's main connection `sock`
/// (before any other request); returns the other end.
pub(super) fn side_channel(sock: BorrowedFd<'_>, req: &Request) -> Result<OwnedFd> {
    let (mine, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io(e.into()))?;
    let mine = crate::fdnum::raise(mine);
    wire::send(sock, &req.encode(0), Some(theirs.as_fd()))
        .map_err(|e| not_connected(format!("owner: {e}")))?;
    let (msg, _) = wire::recv(sock)
        .map_err(|e| not_connected(format!("owner: {e}")))?
        .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
    match Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))? {
        (_, Reply::Done) => Ok(mine),
        (_, Reply::Error { errno, message }) => Err(Error::from_remote(errno, message)),
        (_, other) => Err(unexpected(other)),
    }
}

/// Start the listener thread on the callback channel `ch`.
pub(super) fn listen(inner: &Arc<Inner>, ch: &Arc<OwnedFd>) -> Result<std::thread::JoinHandle<()>> {
    let (inner, c) = (inner.clone(), ch.clone());
    std::thread::Builder::new()
        .name("udax-recall".into())
        .spawn(move || listener(&inner, &c))
        .map_err(Error::Io)
}

/// The owner ended the connection (it exited, died or cut this process
/// off): end every file ([`Node::end`]; one whose open is in flight ends
/// when it is made, `RemoteFile::opened`), then let go of the device, whose
/// open and mapping here would keep a new owner from starting (the owner's
/// device lock is on the open a writable client was handed).
fn end_all(inner: &Inner) {
    let nodes: Vec<Arc<Node>> = {
        let files = inner.files.lock();
        // ORDERING: Relaxed: under the files lock, which `opened` takes too.
        inner.ended.store(true, Ordering::Relaxed);
        files.values().filter_map(|w| w.upgrade()).collect()
    };
    for n in nodes {
        n.end(inner);
    }
    inner.let_go_of_device();
}

/// Answer recalls until the channel ends; then cache no attributes any
/// more (no one would say when to drop them).
fn listener(inner: &Inner, ch: &OwnedFd) {
    answer_callbacks(inner, ch);
    // No owner watches the grants any more (a restarted one frees their
    // lines at mount and may hand them to others): stop using them.
    let nodes: Vec<Arc<Node>> = inner
        .files
        .lock()
        .values()
        .filter_map(|w| w.upgrade())
        .collect();
    for n in nodes {
        n.grant.lock().take();
        // ORDERING: Relaxed: see `Node::settle`.
        n.grown.store(0, Ordering::Relaxed);
    }
    // ORDERING: Acquire: pairs with the Release store in `Client::drop`
    // before it shut the channel down.
    if !inner.letting_go.load(Ordering::Acquire) {
        end_all(inner);
    }
    // ORDERING: Relaxed: see `RemoteFile::grow_granted`.
    inner.no_grants.store(true, Ordering::Relaxed);
    let mut c = inner.attrs.lock();
    c.drop_all();
    c.closed = true;
}

fn answer_callbacks(inner: &Inner, ch: &OwnedFd) {
    while let Ok(Some((msg, _))) = wire::recv(ch.as_fd()) {
        // A callback for a file without a node here is counted (under the
        // files lock): an open in flight may be about to make that node
        // with a layout the callback voids (`RemoteFile::opened`).
        let node = |ino| {
            let files = inner.files.lock();
            let n = files.get(&ino).and_then(|w| w.upgrade());
            if n.is_none() {
                // ORDERING: Relaxed: under the files lock (see `opened`).
                inner.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            n
        };
        let (ino, epoch, busy) = match Reply::decode(&msg) {
            Ok((
                _,
                Reply::Recall {
                    ino,
                    epoch,
                    wait,
                    from_blk,
                    to_blk,
                },
            )) => {
                let busy =
                    node(ino).is_some_and(|n| n.recall(inner, epoch, wait, from_blk..to_blk));
                (ino, epoch, busy)
            }
            Ok((_, Reply::Settle { ino, epoch })) => {
                let busy = node(ino).is_some_and(|n| n.settle(inner, epoch));
                (ino, epoch, busy)
            }
            Ok((_, Reply::Poison { ino, epoch, page })) => {
                if let Some(n) = node(ino) {
                    n.poison(inner, epoch, page);
                }
                (ino, epoch, false)
            }
            _ => {
                tracing::warn!("callback channel: not a recall; closing it");
                return;
            }
        };
        // ORDERING: Relaxed: a statistic.
        inner.recalls.fetch_add(1, Ordering::Relaxed);
        if wire::send(
            ch.as_fd(),
            &Request::Recalled { ino, epoch, busy }.encode(0),
            None,
        )
        .is_err()
        {
            return;
        }
    }
}
