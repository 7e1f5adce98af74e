//! A client's open file: data read straight from the device under a layout
//! lease; the listener thread that answers the owner's recalls.
//!
//! Lease protocol (docs/multiprocess.md, "Leases and recall"): a reader
//! without a layout asks the owner for one (`Lease`), which comes with the
//! file's lease epoch, and installs it only if no recall of that epoch or a
//! later one arrived meanwhile. The listener, on `Recall { ino, epoch }`,
//! first records the epoch, then takes each of the file's layout locks for
//! writing (so reads in flight finish first), drops the layout, and only
//! then answers `Recalled`: the owner changes the file after that answer.
//! No lock is held across a round trip to the owner.

use super::{not_connected, unexpected, Inner};
use crate::device::DeviceError;
use crate::fs::{Error, Result};
use crate::proto::{self, wire, Reply, Request};
use crate::sync::{AtomicU64, Ordering, RwLock};
use crate::BLOCK_SIZE;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// The layout of a file as one lease gave it.
#[derive(Debug)]
struct Layout {
    epoch: u64,
    size: u64,
    /// file block -> (device block, blocks, shared with other files)
    map: BTreeMap<u64, (u64, u64, bool)>,
    /// File block ranges on media errors.
    bad: Vec<(u64, u64)>,
}

impl Layout {
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

    /// The first bad block in `[b, b+n)`.
    fn first_bad(&self, b: u64, n: u64) -> Option<u64> {
        self.bad
            .iter()
            .filter(|(s, l)| *s < b + n && s + l > b)
            .map(|(s, _)| (*s).max(b))
            .min()
    }
}

/// One open file's lease state, shared with the listener.
#[derive(Debug)]
pub(super) struct FileState {
    layout: RwLock<Option<Layout>>,
    /// The highest epoch recalled: a layout of that epoch or older is stale.
    recalled: AtomicU64,
}

impl FileState {
    /// A recall of `epoch`: record it, then drop the layout once reads in
    /// flight are done.
    fn recall(&self, epoch: u64) {
        // ORDERING: AcqRel, before the layout lock is taken: a reader that
        // installs after this sees the epoch (its Acquire load below) and
        // throws its stale layout away; one that installed before is undone
        // by the clearing under the lock.
        self.recalled.fetch_max(epoch, Ordering::AcqRel);
        *self.layout.write() = None;
    }
}

/// A file opened through the device's owner.
#[derive(Debug)]
pub struct RemoteFile {
    inner: Arc<Inner>,
    handle: u64,
    ino: u64,
    /// Opened for writing.
    write: bool,
    st: Arc<FileState>,
    /// Time (ns) of the last in-place overwrite not yet sent to the owner
    /// (0: none), and when one was last sent.
    unsent_mtime: AtomicU64,
    last_touch: AtomicU64,
}

/// Send the modification time of in-place overwrites at most this often
/// (and at fsync and close).
const TOUCH_EVERY_NS: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl RemoteFile {
    pub(super) fn open(
        inner: &Arc<Inner>,
        path: &str,
        write: bool,
        create: bool,
        mode: u32,
    ) -> Result<RemoteFile> {
        let r = inner.call(&Request::Open {
            path: path.as_bytes().to_vec(),
            write,
            create,
            mode,
        })?;
        let Reply::Opened { handle, attr } = r else {
            return Err(unexpected(r));
        };
        let st = Arc::new(FileState {
            layout: RwLock::new(None),
            recalled: AtomicU64::new(0),
        });
        let mut files = inner.files.lock();
        let v = files.entry(attr.ino).or_default();
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(&st));
        drop(files);
        Ok(RemoteFile {
            inner: inner.clone(),
            handle,
            ino: attr.ino,
            write,
            st,
            unsent_mtime: AtomicU64::new(0),
            last_touch: AtomicU64::new(0),
        })
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The file's size (from the lease: no round trip while it holds).
    pub fn len(&self) -> Result<u64> {
        self.with_layout(|l| Ok(l.size))
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Read up to `buf.len()` bytes at `off` straight from the device; fewer
    /// at end of file; holes read as zeros; a media error gives a short read
    /// up to it, or EIO.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let Some(view) = &self.inner.view else {
            return Err(Error::NotSupported(
                "reading through a device the client cannot map",
            ));
        };
        self.with_layout(|l| {
            if off >= l.size || buf.is_empty() {
                return Ok(0);
            }
            let n = (l.size - off).min(buf.len() as u64) as usize;
            let mut done = 0usize;
            while done < n {
                let pos = off + done as u64;
                let (b, in_blk) = (pos / BLOCK_SIZE, pos % BLOCK_SIZE);
                let (dev, run) = l.at(b);
                let room = run.saturating_mul(BLOCK_SIZE) - in_blk;
                let mut take = room.min((n - done) as u64) as usize;
                if let Some(d) = dev {
                    let blocks = (in_blk + take as u64).div_ceil(BLOCK_SIZE);
                    if let Some(bad) = l.first_bad(b, blocks) {
                        let ok = ((bad - b) * BLOCK_SIZE).saturating_sub(in_blk) as usize;
                        if done + ok == 0 {
                            return Err(Error::Device(DeviceError::Poisoned {
                                offset: (d + (bad - b)) * BLOCK_SIZE,
                            }));
                        }
                        take = take.min(ok);
                        let dst = &mut buf[done..done + take];
                        view.read(d * BLOCK_SIZE + in_blk, dst)?;
                        return Ok(done + take);
                    }
                    view.read(d * BLOCK_SIZE + in_blk, &mut buf[done..done + take])?;
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
    /// file's mtime is not updated, see docs/limits.md); anything else
    /// (growth, holes, shared blocks) goes through the owner, in pieces of at
    /// most [`proto::MAX_WRITE`]. Returns the bytes written (fewer if the
    /// device filled up part way).
    pub fn write_at(&self, data: &[u8], off: u64) -> Result<usize> {
        if let Some(n) = self.write_in_place(data, off)? {
            let now = now_ns();
            // ORDERING: Relaxed: times handed to the owner; a lost race
            // only sends one more (or one later) Touch.
            self.unsent_mtime.fetch_max(now, Ordering::Relaxed);
            if now.saturating_sub(self.last_touch.load(Ordering::Relaxed)) >= TOUCH_EVERY_NS {
                self.send_mtime()?;
            }
            return Ok(n);
        }
        let mut done = 0usize;
        for chunk in data.chunks(proto::MAX_WRITE) {
            let r = self.inner.call(&Request::Write {
                handle: self.handle,
                offset: off + done as u64,
                data: chunk.to_vec(),
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

    /// The in-place overwrite of [`RemoteFile::write_at`], under the
    /// lease's read lock (a recall waits for it); `None` if the range does
    /// not qualify.
    fn write_in_place(&self, data: &[u8], off: u64) -> Result<Option<usize>> {
        let Some(view) = self.inner.view.as_ref().filter(|v| v.is_writable()) else {
            return Ok(None);
        };
        if !self.write || data.is_empty() {
            return Ok(None);
        }
        self.with_layout(|l| {
            let Some(end) = off.checked_add(data.len() as u64).filter(|&e| e <= l.size) else {
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
            for (dev_off, at, len) in runs {
                view.write_durable(dev_off, &data[at..at + len])?;
            }
            Ok(Some(data.len()))
        })
    }

    /// Send the modification time of in-place overwrites, if any is unsent.
    fn send_mtime(&self) -> Result<()> {
        // ORDERING: Relaxed: see `write_at`.
        let t = self.unsent_mtime.swap(0, Ordering::Relaxed);
        if t == 0 {
            return Ok(());
        }
        self.last_touch.store(now_ns(), Ordering::Relaxed);
        match self.inner.call(&Request::Touch {
            handle: self.handle,
            mtime_ns: t,
        })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Make the file durable (the owner's `fsync`), with the modification
    /// time of in-place overwrites.
    pub fn fsync(&self) -> Result<()> {
        self.send_mtime()?;
        match self.inner.call(&Request::Fsync {
            handle: self.handle,
        })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Set the file's size through the owner (every lease on it is recalled
    /// first, this client's own included).
    pub fn set_len(&self, size: u64) -> Result<()> {
        match self.inner.call(&Request::Truncate {
            handle: self.handle,
            size,
        })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Run `f` on the current layout, fetching a lease first if there is
    /// none (and again if a recall overtook the fetch).
    fn with_layout<T>(&self, mut f: impl FnMut(&Layout) -> Result<T>) -> Result<T> {
        loop {
            if let Some(l) = self.st.layout.read().as_ref() {
                return f(l);
            }
            let l = self.fetch()?;
            let mut g = self.st.layout.write();
            // ORDERING: Acquire: pairs with the recall's AcqRel fetch_max
            // (see `FileState::recall`).
            if l.epoch > self.st.recalled.load(Ordering::Acquire) {
                *g = Some(l);
            }
        }
    }

    /// A lease on the whole layout (as many replies as it takes; if the
    /// epoch moves between them, start over).
    fn fetch(&self) -> Result<Layout> {
        'again: loop {
            let mut l: Option<Layout> = None;
            let mut from = 0u64;
            loop {
                let r = self.inner.call(&Request::Lease {
                    handle: self.handle,
                    from_blk: from,
                })?;
                let Reply::Layout {
                    epoch,
                    size,
                    extents,
                    bad,
                    next,
                    ..
                } = r
                else {
                    return Err(unexpected(r));
                };
                let cur = l.get_or_insert_with(|| Layout {
                    epoch,
                    size,
                    map: BTreeMap::new(),
                    bad: Vec::new(),
                });
                if cur.epoch != epoch {
                    continue 'again;
                }
                cur.bad.extend(bad);
                for e in extents {
                    cur.map.insert(e.file_blk, (e.dev_blk, e.len, e.shared));
                }
                match next {
                    Some(n) if n > from => from = n,
                    Some(_) => return Err(not_connected("lease made no progress".into())),
                    None => return l.ok_or_else(|| not_connected("empty lease".into())),
                }
            }
        }
    }
}

impl Drop for RemoteFile {
    fn drop(&mut self) {
        let _ = self.send_mtime();
        let _ = self.inner.call(&Request::Close {
            handle: self.handle,
        });
    }
}

/// Make a callback channel (a socket pair, one end sent to the owner with
/// `Listen`) and start the listener thread on the other end.
pub(super) fn listen(
    inner: &Arc<Inner>,
    client: u64,
) -> Result<(Arc<OwnedFd>, std::thread::JoinHandle<()>)> {
    let (mine, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io(e.into()))?;
    {
        let g = inner.sock.lock();
        wire::send(
            g.0.as_fd(),
            &Request::Listen { client }.encode(0),
            Some(theirs.as_fd()),
        )
        .map_err(|e| not_connected(format!("owner: {e}")))?;
        let (msg, _) = wire::recv(g.0.as_fd())
            .map_err(|e| not_connected(format!("owner: {e}")))?
            .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
        match Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))? {
            (_, Reply::Done) => {}
            (_, Reply::Error { errno, message }) => return Err(Error::from_remote(errno, message)),
            (_, other) => return Err(unexpected(other)),
        }
    }
    drop(theirs);
    let ch = Arc::new(mine);
    let (inner, c) = (inner.clone(), ch.clone());
    let t = std::thread::Builder::new()
        .name("udax-recall".into())
        .spawn(move || listener(&inner, &c))
        .map_err(Error::Io)?;
    Ok((ch, t))
}

/// Answer recalls until the channel ends.
fn listener(inner: &Inner, ch: &OwnedFd) {
    while let Ok(Some((msg, _))) = wire::recv(ch.as_fd()) {
        let Ok((_, Reply::Recall { ino, epoch })) = Reply::decode(&msg) else {
            tracing::warn!("callback channel: not a recall; closing it");
            return;
        };
        let states: Vec<Arc<FileState>> = inner
            .files
            .lock()
            .get(&ino)
            .map(|v| v.iter().filter_map(|w| w.upgrade()).collect())
            .unwrap_or_default();
        for s in states {
            s.recall(epoch);
        }
        // ORDERING: Relaxed: a statistic.
        inner.recalls.fetch_add(1, Ordering::Relaxed);
        if wire::send(
            ch.as_fd(),
            &Request::Recalled { ino, epoch }.encode(0),
            None,
        )
        .is_err()
        {
            return;
        }
    }
}
