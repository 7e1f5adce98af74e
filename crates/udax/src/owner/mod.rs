//! The owner of a device (`udax serve`): the one process that mounts the file
//! system and changes its metadata, serving the other processes on the device
//! over a unix socket (docs/multiprocess.md).
//!
//! The owner mounts the device embedded (taking the device lock, SPEC D3),
//! listens on `<runtime dir>/<uuid>.sock`, and serves each client on its own
//! thread: a `Hello` whose peer credentials could open the device file gets
//! the device fd (SCM_RIGHTS); then requests are answered one by one. A
//! malformed message gets an error reply for that client and nothing else
//! changes. With no clients for the idle time the owner checkpoints and
//! exits.

mod cred;
mod fuse;
mod grants;

pub use fuse::MAX_WRITE as FUSE_MAX_WRITE;

use crate::dax::{self, iomap::DaxInode, iomap::IomapError};
use crate::fs::locks::{LockKind, LockOwner, LockTable};
use crate::fs::perm::Cred;
use crate::fs::{Error, File, Fs, OpenOptions, Rename, Result, Stat, StatFs};
use crate::proto::{
    self,
    calls::{self, CallPage},
    ring::{Rec, Ring, Space},
    wire, Attr, Entry, Ext, IomapOp, LockScope, Reply, Request, Target, Totals,
};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, ReentrantMutex};
use crate::BLOCK_SIZE;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an owner serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Exit (after a checkpoint) when no client has been connected for this
    /// long; `None`: never.
    pub idle: Option<Duration>,
    /// Where the socket goes (default: [`runtime_dir`]).
    pub runtime_dir: Option<PathBuf>,
    /// How long a client may take to answer a recall before it is cut off.
    pub recall_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            idle: Some(Duration::from_secs(30)),
            runtime_dir: None,
            recall_timeout: Duration::from_secs(2),
        }
    }
}

/// The directory of owner sockets: `$UDAX_RUNTIME_DIR`, else `/run/udax`
/// for root, else `$XDG_RUNTIME_DIR/udax`, else `/tmp/udax-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UDAX_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let uid = rustix::process::getuid();
    if uid.is_root() {
        return PathBuf::from("/run/udax");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => Path::new(&d).join("udax"),
        None => PathBuf::from(format!("/tmp/udax-{}", uid.as_raw())),
    }
}

/// The socket of the owner of the file system with UUID `uuid` (as
/// `Superblock::uuid_str`).
pub fn socket_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("{uuid}.sock"))
}

/// The lock that serialises starting an owner for `uuid`.
pub fn start_lock_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("{uuid}.lock"))
}

/// Make the runtime directory: 0700 for a user; 0755 for root, whose owner
/// serves every user that may open the device.
pub fn make_runtime_dir(dir: &Path) -> std::io::Result<()> {
    let mode = if rustix::process::getuid().is_root() {
        0o755
    } else {
        0o700
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

/// Stops a running owner from another thread (tests, signal handlers'
/// threads): [`Owner::run`] returns within a poll interval.
#[derive(Clone, Debug)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    pub fn stop(&self) {
        // ORDERING: Relaxed: a flag polled by the accept loop; nothing is
        // published through it.
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The device file's owner and mode, for the credential check.
#[derive(Clone, Copy, Debug)]
struct DeviceFile {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// An open file description, held by the owner: one handle, or several
/// (in other clients too, after `Share` and `Adopt`: a forked child), share
/// its offset and its OFD and flock locks, as descriptors share a kernel
/// `struct file`.
#[derive(Debug)]
struct Desc {
    id: u64,
    file: File,
    pos: Mutex<u64>,
    /// Handles naming it; when the last one closes its OFD and flock locks go.
    handles: AtomicUsize,
}

impl std::ops::Deref for Desc {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

/// What the client threads share.
#[derive(Debug)]
struct Shared {
    fs: Fs,
    device: DeviceFile,
    /// The device path (re-opened read-only for read-only clients).
    path: PathBuf,
    /// Connected clients.
    clients: AtomicUsize,
    /// When the last client left (for the idle exit).
    last_left: Mutex<Instant>,
    /// Client ids given out.
    next_client: AtomicU64,
    /// Clients, their open files and the leases they hold.
    table: Mutex<Table>,
    /// Per inode: held by a change of the file's layout (from its recall to
    /// its end), by a client's change of the file's data or attributes
    /// until every other client has dropped what it cached of the file
    /// (`answer`), and briefly by a lease grant, so no grant sees a layout a
    /// change is about to make stale. Re-entrant: `answer` holds it around
    /// a handler that takes it again. Idle entries are pruned
    /// (`change_lock`).
    changing: Mutex<HashMap<u64, Arc<ReentrantMutex<()>>>>,
    /// The change log clients read before answering from their attribute
    /// caches ([`proto::ring`]); one appender at a time (`ring_lock`).
    ring: Ring,
    ring_lock: Mutex<()>,
    /// Held while the totals in the change log's memory are computed and
    /// published ([`publish_space`]).
    space_lock: Mutex<()>,
    recall_timeout: Duration,
    /// Advisory locks of every client (record locks, flock).
    locks: LockTable,
    /// Open file descriptions offered by `Share`, by token (see `Offer`).
    shares: Mutex<HashMap<u64, Offer>>,
    /// Open file description ids given out.
    next_desc: AtomicU64,
    /// Client threads polling for their client's next request right now
    /// (see `next_request`).
    spinning: AtomicUsize,
    /// POSIX record locks handed over by a process about to exec, by
    /// token (see `LockOffer`).
    lock_offers: Mutex<HashMap<u64, LockOffer>>,
    /// FUSE mounts being served (`udax mount`, docs/fuse.md).
    fuse: Mutex<Vec<fuse::Live>>,
    /// Size grants out, by inode (`grants`).
    grants: Mutex<HashMap<u64, Arc<grants::GrantOut>>>,
    /// Clients cut off while their processes lived, until each process
    /// exits: the blocks they may still reach are held back from reuse
    /// (`hold_for_cut_off`, `release_the_dead`). A leaf lock.
    cut_off: Mutex<Vec<CutOff>>,
    /// A read-only open of the device holding a shared device lock, as
    /// the owner's own read-write one does: a read-only client is handed
    /// a duplicate of it (a writable one of the read-write one), so every
    /// client keeps a new owner from starting until it lets go of the
    /// device ([`share_device_lock`]).
    read_only_open: OwnedFd,
}

/// A client cut off while its process lived (see `Shared::cut_off`).
#[derive(Debug)]
struct CutOff {
    client: u64,
    pid: i32,
    pidfd: Option<Arc<OwnedFd>>,
}

/// Whether the process `pid` (`pidfd`, when one was had) has exited. A
/// zombie has: it runs no more (its pidfd reads as exited).
fn exited(pid: i32, pidfd: Option<&OwnedFd>) -> bool {
    match pidfd {
        Some(fd) => wire::wait_readable(fd.as_fd(), 0).unwrap_or(false),
        None => rustix::process::Pid::from_raw(pid)
            .is_none_or(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)),
    }
}

/// The POSIX record locks of a process that is exec'ing: held under a lock
/// owner of their own (`process`) until the new image (or the old one, if
/// the exec failed) of the same process adopts them, or the process dies
/// (a program without the shim never does: its locks last its life, as the
/// kernel's).
#[derive(Debug)]
struct LockOffer {
    process: u64,
    uid: u32,
    pid: i32,
}

/// Release the handed-over locks of processes that died meanwhile (at
/// every lock request: a stale lock is never seen, and a waiter's retry
/// finds it gone).
fn prune_lock_offers(sh: &Shared) {
    let mut m = sh.lock_offers.lock();
    if m.is_empty() {
        return;
    }
    m.retain(|_, o| {
        let alive = match rustix::process::Pid::from_raw(o.pid) {
            Some(p) => rustix::process::test_kill_process(p) != Err(rustix::io::Errno::SRCH),
            None => false,
        };
        if !alive {
            sh.locks.release_process(o.process);
        }
        alive
    });
}

/// A fresh token for `Share` or `ShareLocks`: unguessable, since a token
/// is a capability to what it names; never 0.
fn new_token() -> Result<u64> {
    let mut b = [0u8; 8];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::Io(e.into()))?;
    Ok(u64::from_le_bytes(b) | 1)
}

/// A client's pid and uid.
fn caller_pid_uid(sh: &Shared, c: u64) -> Result<(i32, u32)> {
    let t = sh.table.lock();
    let rec = t.clients.get(&c).ok_or(Error::BadFd)?;
    Ok((rec.pid, rec.fs.caller().map_or(0, |cr| cr.uid)))
}

/// An open file description offered by `Share`: held (a parent may close
/// its descriptor before its forked child adopts it; an exec'ing process's
/// connection ends before the new image adopts) until one `Adopt` by a
/// client of the same uid (or root) takes it, or for [`SHARE_TTL`].
#[derive(Debug)]
struct Offer {
    desc: Arc<Desc>,
    uid: u32,
    at: Instant,
}

/// How long an unadopted `Share` keeps its description open.
const SHARE_TTL: Duration = Duration::from_secs(30);

/// One admitted client.
#[derive(Debug)]
struct ClientRec {
    pid: i32,
    /// Its process, taken at connect (`cred::peer_pidfd`): a claim of
    /// other credentials is verified against that very process's threads.
    pidfd: Option<Arc<OwnedFd>>,
    /// Admitted for writing (handed a read-write device fd).
    write: bool,
    /// The file system as this client sees it: its uid, gid and groups
    /// checked on every namespace call, its files its own.
    fs: Fs,
    /// Its connection (shut down to cut it off).
    sock: Arc<OwnedFd>,
    /// Its callback channel (`Listen`), which recalls go to.
    callback: Option<Arc<Mutex<OwnedFd>>>,
    /// Its fault channel (`Channel`), served by a thread of its own.
    fault: Option<Arc<OwnedFd>>,
    /// Its open files, by handle: an unlinked file lives while one is open.
    handles: HashMap<u64, Arc<Desc>>,
    next_handle: u64,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<u64, ClientRec>,
    /// Per inode, the clients holding a layout lease on it.
    leases: HashMap<u64, HashSet<u64>>,
    /// Per inode, the current lease epoch (bumped by each recall).
    epochs: HashMap<u64, u64>,
    /// The serial of the last layout granted, over all grants, and per
    /// (inode, client) the serial of the last one that client got
    /// (`Request::Write::dropped`).
    serial: u64,
    granted: HashMap<(u64, u64), u64>,
}

impl Table {
    /// Inode `ino`'s current lease epoch.
    fn epoch(&mut self, ino: u64) -> u64 {
        *self.epochs.entry(ino).or_insert(1)
    }

    /// Inode `ino`'s current lease epoch, for a recall (or settle) that
    /// ends every lease of it: leases granted from now on get the next.
    fn recall_epoch(&mut self, ino: u64) -> u64 {
        let e = self.epochs.entry(ino).or_insert(1);
        *e += 1;
        *e - 1
    }
}

/// A device's owner, listening.
#[derive(Debug)]
pub struct Owner {
    shared: Arc<Shared>,
    listener: OwnedFd,
    socket: PathBuf,
    idle: Option<Duration>,
    stop: Arc<AtomicBool>,
}

/// Turn the exclusive device lock the open of `fd` took into one every
/// client shares: a shared lock on `fd` (the owner's read-write open,
/// which writable clients are handed) and on a new read-only open of the
/// device, returned (which read-only clients are handed). An exclusive
/// lock, what every mount and every new owner takes, then fails while the
/// owner or any of its clients holds one of these opens: a client of an
/// owner that died keeps a new one from starting until it has unmapped
/// its files' pages and let go of the device (docs/multiprocess.md,
/// "Death"), so no block a new owner reuses shows in an old mapping. The
/// exclusive lock said no one else held the device; a taker in the moment
/// the lock changes kind (flock does not convert atomically) makes this
/// fail with the device busy.
fn share_device_lock(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::fs::FlockOperation::NonBlockingLockShared;
    let busy = |e: rustix::io::Errno| -> Error {
        if e == rustix::io::Errno::WOULDBLOCK {
            crate::device::busy(fd).into()
        } else {
            Error::Io(e.into())
        }
    };
    rustix::fs::flock(fd, NonBlockingLockShared).map_err(busy)?;
    let ro = OwnedFd::from(
        std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(Error::Io)?,
    );
    rustix::fs::flock(&ro, NonBlockingLockShared).map_err(busy)?;
    Ok(ro)
}

impl Owner {
    /// Mount the device at `path` and listen for its clients. Fails if the
    /// device is in use (another owner, or a process that mounted it
    /// embedded), or if another owner answers on the socket of this UUID
    /// (a copy of this image is being served).
    pub fn new(path: &Path, opts: &ServeOptions) -> Result<Owner> {
        let spec = path
            .to_str()
            .ok_or(Error::Invalid("device path is not UTF-8"))?;
        let meta = std::fs::metadata(path).map_err(Error::Io)?;
        let device = DeviceFile {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        };
        let dev = crate::device::open(spec, &crate::device::OpenOptions::default())?;
        let Some(map) = dev.mapping() else {
            return Err(Error::NotSupported(
                "an owner serves a device that can be mapped",
            ));
        };
        let read_only_open = share_device_lock(map.fd)?;
        let fs = Fs::mount(dev)?;
        let dir = opts.runtime_dir.clone().unwrap_or_else(runtime_dir);
        make_runtime_dir(&dir).map_err(Error::Io)?;
        let socket = socket_path(&dir, &fs.superblock().uuid_str());
        let listener = bind(&socket, &device)?;
        tracing::info!(
            "serving {} (uuid {}) at {}",
            path.display(),
            fs.superblock().uuid_str(),
            socket.display()
        );
        Ok(Owner {
            shared: Arc::new(Shared {
                fs,
                device,
                path: path.to_path_buf(),
                clients: AtomicUsize::new(0),
                last_left: Mutex::new(Instant::now()),
                next_client: AtomicU64::new(1),
                table: Mutex::new(Table::default()),
                changing: Mutex::new(HashMap::new()),
                ring: Ring::create().map_err(Error::Io)?,
                ring_lock: Mutex::new(()),
                space_lock: Mutex::new(()),
                recall_timeout: opts.recall_timeout,
                locks: LockTable::new(),
                shares: Mutex::new(HashMap::new()),
                next_desc: AtomicU64::new(1),
                spinning: AtomicUsize::new(0),
                lock_offers: Mutex::new(HashMap::new()),
                fuse: Mutex::new(Vec::new()),
                grants: Mutex::new(HashMap::new()),
                cut_off: Mutex::new(Vec::new()),
                read_only_open,
            }),
            listener,
            socket,
            idle: opts.idle,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A handle that stops [`Owner::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Serve until stopped or idle; then close every client's connection,
    /// remove the socket and unmount (a checkpoint).
    pub fn run(self) -> Result<()> {
        let mut threads: Vec<(std::thread::JoinHandle<()>, Arc<OwnedFd>)> = Vec::new();
        let mut idle_put_off = false;
        loop {
            // ORDERING: Relaxed: see `Stopper::stop`.
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            threads.retain(|(t, _)| !t.is_finished());
            if let Some(idle) = self.idle {
                // ORDERING: Relaxed: a count read under the `last_left`
                // lock that every decrement also takes.
                let last = self.shared.last_left.lock();
                if self.shared.clients.load(Ordering::Relaxed) == 0 && last.elapsed() >= idle {
                    // The blocks held for a live cut-off client are held
                    // in this process only: a next owner would hand them
                    // out while that client's mappings still reach them.
                    let held = self.shared.cut_off.lock().len();
                    if held == 0 {
                        tracing::info!("no clients for {idle:?}: exiting");
                        break;
                    }
                    if !idle_put_off {
                        tracing::info!(
                            "no clients for {idle:?}, but {held} cut-off client process(es) still live: \
                             staying until they exit (the blocks they may reach are held here)"
                        );
                        idle_put_off = true;
                    }
                }
            }
            if !wait_for_client_or_exit(&self.shared, self.listener.as_fd(), 100)? {
                continue;
            }
            let sock = match wire::accept(self.listener.as_fd()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            };
            // ORDERING: Relaxed: see above (the count is only compared
            // with zero under the `last_left` lock).
            self.shared.clients.fetch_add(1, Ordering::Relaxed);
            let (shared, s) = (self.shared.clone(), sock.clone());
            let t = std::thread::Builder::new()
                .name("udax-client".into())
                .spawn(move || {
                    serve_client(&shared, s);
                    let mut last = shared.last_left.lock();
                    *last = Instant::now();
                    // ORDERING: Relaxed: under the `last_left` lock.
                    shared.clients.fetch_sub(1, Ordering::Relaxed);
                })
                .map_err(Error::Io)?;
            threads.push((t, sock));
        }
        let _ = std::fs::remove_file(&self.socket);
        let live: Vec<i32> = self.shared.cut_off.lock().iter().map(|x| x.pid).collect();
        if !live.is_empty() {
            tracing::warn!(
                "stopping while cut-off client processes {live:?} live: the blocks held for them \
                 are free on the device, and a next owner may hand them out while their old \
                 mappings still reach them"
            );
        }
        // Holders stop growing files before their connections end.
        grants::end_all(&self.shared);
        for (_, s) in &threads {
            let _ = rustix::net::shutdown(&**s, rustix::net::Shutdown::Both);
        }
        for (t, _) in threads {
            let _ = t.join();
        }
        drop(self.listener);
        let mounts: Vec<PathBuf> = self
            .shared
            .fuse
            .lock()
            .iter()
            .map(|l| l.dir.clone())
            .collect();
        if !mounts.is_empty() {
            // Their threads hold the file system until the kernel ends the
            // sessions, which it does when this process exits: checkpoint
            // now, and the mounts report ENOTCONN from then on.
            for m in &mounts {
                tracing::warn!(
                    "{}: stays mounted without an owner (ENOTCONN) until `udax mount` or `udax umount`",
                    m.display()
                );
            }
            return self.shared.fs.checkpoint();
        }
        let shared = Arc::try_unwrap(self.shared)
            .map_err(|_| Error::Busy("a client thread still runs".into()))?;
        shared.fs.unmount()
    }
}

/// Listen at `socket`, replacing a stale socket file (no one answers) and
/// refusing if another owner answers there.
fn bind(socket: &Path, device: &DeviceFile) -> Result<OwnedFd> {
    if socket.exists() {
        match wire::connect(socket) {
            Ok(_) => {
                return Err(Error::Busy(format!(
                    "another owner answers at {} (a copy of this file system, same UUID, is being served)",
                    socket.display()
                )))
            }
            Err(_) => std::fs::remove_file(socket).map_err(Error::Io)?,
        }
    }
    let l = wire::listen(socket).map_err(Error::Io)?;
    // Root's owner lets the device file's group connect (the credential
    // check still decides who gets the device); a user's owner only its user.
    let mode = if rustix::process::getuid().is_root() {
        let _ = std::os::unix::fs::chown(socket, None, Some(device.gid));
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode)).map_err(Error::Io)?;
    Ok(l)
}

/// How long a client's thread polls for the client's next request after
/// answering one, before it sleeps: a program making changes one after
/// another (creates, appends, renames) sends the next within a few us, and
/// a sleeping thread's wake-up costs ~40 us on these VMs (docs/performance.md,
/// P10-rtt: 4 us polling).
const NEXT_REQUEST_SPIN: Duration = Duration::from_micros(30);

/// A message from a client and where it came: its call page, under the
/// request's number there, or its socket (with a descriptor, if one came).
type Incoming = (Vec<u8>, Option<OwnedFd>, Option<u64>);

/// Run `look` polled for `NEXT_REQUEST_SPIN` (once the client is
/// admitted) while fewer threads poll than the machine has CPUs less one;
/// `None` if it gave nothing or this thread may not poll now.
fn polled<T>(sh: &Shared, admitted: bool, look: impl FnOnce(Duration) -> T) -> Option<T> {
    let spin = wire::spin_budget(NEXT_REQUEST_SPIN);
    if !admitted || spin.is_zero() {
        return None;
    }
    let cpus = wire::cpus();
    // ORDERING: Relaxed: a count that only bounds how many threads
    // poll at once; nothing is published through it.
    let got = (sh.spinning.fetch_add(1, Ordering::Relaxed) < cpus.saturating_sub(1).max(1))
        .then(|| look(spin));
    // ORDERING: Relaxed, as the count above.
    sh.spinning.fetch_sub(1, Ordering::Relaxed);
    got
}

/// The next message on a client's connection: from its call page (`page`,
/// the last request read from it numbered `seen`) if it has one, else
/// from its socket; polled for a while first ([`polled`]), then waited
/// for on the socket, where a client that posts to the page of a sleeping
/// owner rings ([`calls::DOORBELL`]). `None`: the connection ended.
fn next_request(
    sh: &Shared,
    sock: std::os::fd::BorrowedFd<'_>,
    admitted: bool,
    page: Option<&CallPage>,
    seen: u64,
) -> std::io::Result<Option<Incoming>> {
    let Some(page) = page else {
        if let Some(got) = polled(sh, admitted, |spin| wire::poll_for(sock, spin)) {
            if let Some(m) = got? {
                return Ok(m.map(|(msg, fd)| (msg, fd, None)));
            }
        }
        return Ok(wire::recv(sock)?.map(|(msg, fd)| (msg, fd, None)));
    };
    let from_page = |(seq, msg): (u64, Vec<u8>)| Some((msg, None, Some(seq)));
    if let Some(Some(r)) = polled(sh, admitted, |spin| {
        calls::poll(spin, || page.request(seen))
    }) {
        return Ok(from_page(r));
    }
    let woken = page.sleep_for(
        calls::Side::Owner,
        || page.request(seen),
        || {
            Ok(match wire::recv(sock)? {
                Some((msg, _)) if msg == calls::DOORBELL => calls::Woken::Bell,
                Some(m) => calls::Woken::Message(m),
                None => calls::Woken::Closed,
            })
        },
    )?;
    Ok(match woken {
        Ok(r) => from_page(r),
        Err(m) => m.map(|(msg, fd)| (msg, fd, None)),
    })
}

/// Send the reply `msg` (with the descriptor `fd`) to a request that came
/// `via` the call page `page` (its number there) or the socket; a
/// descriptor cannot go through the page, nor a reply longer than its area:
/// that request gets an error instead.
fn respond(
    sock: std::os::fd::BorrowedFd<'_>,
    page: Option<&CallPage>,
    via: Option<u64>,
    msg: &[u8],
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let (Some(seq), Some(page)) = (via, page) else {
        return wire::send(sock, msg, fd);
    };
    let refused;
    let msg = if fd.is_some() || msg.len() > calls::AREA {
        let id = proto::unframe(msg).map_or(0, |(h, _)| h.id);
        refused = Reply::Error {
            errno: libc::EPROTO,
            message: "a reply that cannot go through the call page: ask on the socket".into(),
        }
        .encode(id);
        &refused[..]
    } else {
        msg
    };
    if page.answer(seq, msg) {
        wire::send(sock, calls::DOORBELL, None)?;
    }
    Ok(())
}

/// Serve one connection until it disconnects or breaks the protocol's
/// order: a client's main connection (`Hello` first), or its callback
/// channel (`Listen` first, then kept for recalls). Requests come on the
/// socket, or on the connection's call page once it asked for one
/// (`Calls`); each reply goes where its request came from.
fn serve_client(sh: &Arc<Shared>, sock: Arc<OwnedFd>) {
    let Ok((pid, uid, gid)) = wire::peer(sock.as_fd()) else {
        return;
    };
    let pidfd = cred::peer_pidfd(sock.as_fd(), pid).map(Arc::new);
    let mut me: Option<u64> = None;
    let mut faults: Option<std::thread::JoinHandle<()>> = None;
    // The connection's call page, once it asked for one, and the number of
    // the last request read from it.
    let mut page: Option<CallPage> = None;
    let mut seen = 0;
    loop {
        let (msg, fd, via) = match next_request(sh, sock.as_fd(), me.is_some(), page.as_ref(), seen)
        {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                // A message that cannot be read gets an error; the
                // connection goes on.
                tracing::debug!("client {pid}: {e}");
                let r = Reply::Error {
                    errno: libc::EMSGSIZE,
                    message: e.to_string(),
                };
                match wire::send(sock.as_fd(), &r.encode(0), None) {
                    Ok(()) => continue,
                    Err(_) => break,
                }
            }
        };
        if let Some(seq) = via {
            seen = seq;
        }
        let send = |msg: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>| {
            respond(sock.as_fd(), page.as_ref(), via, msg, fd)
        };
        let (id, req) = match Request::decode(&msg) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("client {pid}: {e}");
                let r = Reply::Error {
                    errno: e.errno(),
                    message: e.to_string(),
                };
                match send(&r.encode(0), None) {
                    Ok(()) => continue,
                    Err(_) => break,
                }
            }
        };
        let mut new_page = None;
        let sent = match (me, req) {
            (None, Request::Hello { version, write }) => {
                match admit(sh, pid, uid, gid, version, write) {
                    Ok((mut reply, fd, cred)) => {
                        // ORDERING: Relaxed: a unique-id counter.
                        let c = sh.next_client.fetch_add(1, Ordering::Relaxed);
                        if let Reply::Hello { client, .. } = &mut reply {
                            *client = c;
                        }
                        sh.table.lock().clients.insert(
                            c,
                            ClientRec {
                                pid,
                                pidfd: pidfd.clone(),
                                write,
                                fs: sh.fs.as_caller(cred),
                                sock: sock.clone(),
                                callback: None,
                                fault: None,
                                handles: HashMap::new(),
                                next_handle: 1,
                            },
                        );
                        me = Some(c);
                        send(&reply.encode(id), Some(fd.as_fd()))
                    }
                    Err(reply) => {
                        let _ = send(&reply.encode(id), None);
                        break;
                    }
                }
            }
            (None, _) => {
                let r = Reply::Error {
                    errno: libc::EPROTO,
                    message: "the first message must be Hello".into(),
                };
                let _ = send(&r.encode(id), None);
                break;
            }
            (Some(_), Request::Ring) => {
                let (r, fd) = match sh.ring.read_only_fd() {
                    Ok(fd) => (Reply::Done, Some(fd)),
                    Err(e) => (
                        Reply::Error {
                            errno: e.raw_os_error().unwrap_or(libc::EIO),
                            message: format!("change log: {e}"),
                        },
                        None,
                    ),
                };
                send(&r.encode(id), fd.as_ref().map(|f| f.as_fd()))
            }
            (Some(_), Request::Calls) => {
                let (r, fd) = match CallPage::create() {
                    Ok((p, fd)) => {
                        new_page = Some(p);
                        (Reply::Done, Some(fd))
                    }
                    Err(e) => (
                        Reply::Error {
                            errno: e.raw_os_error().unwrap_or(libc::EIO),
                            message: format!("call page: {e}"),
                        },
                        None,
                    ),
                };
                send(&r.encode(id), fd.as_ref().map(|f| f.as_fd()))
            }
            (Some(c), Request::Listen { client }) => {
                let r = listen(sh, c, client, fd);
                send(&r.encode(id), None)
            }
            (Some(c), Request::Mount { dir, read_only }) => {
                let r = mount(sh, c, fd, &dir, read_only).unwrap_or_else(|e| Reply::Error {
                    errno: e.errno(),
                    message: e.to_string(),
                });
                send(&r.encode(id), None)
            }
            (Some(c), Request::Channel { client }) => {
                let r = match fault_channel(sh, c, client, fd) {
                    Ok(t) => {
                        faults = Some(t);
                        Reply::Done
                    }
                    Err(r) => r,
                };
                send(&r.encode(id), None)
            }
            // Any other descriptor sent by a client is closed unread.
            (Some(c), req) => {
                let r = answer(sh, c, req);
                publish_space(sh);
                send(&encoded(r, id), None)
            }
        };
        if sent.is_err() {
            break;
        }
        // Asked on the socket (a page cannot carry its descriptor): the
        // client posts its next request to the new page, numbered from 1.
        if new_page.is_some() && via.is_none() {
            page = new_page;
            seen = 0;
        }
    }
    if let Some(c) = me {
        drop_client(sh, c, "disconnected");
    }
    // Its fault channel was shut down with it: the thread ends.
    if let Some(t) = faults {
        let _ = t.join();
    }
}

/// The socket `fd` sent with `what` (`Listen`, `Channel`) naming `client`
/// on client `c`'s own connection, if it is one.
fn side_socket(
    what: &str,
    c: u64,
    client: u64,
    fd: Option<OwnedFd>,
) -> std::result::Result<OwnedFd, Reply> {
    let refuse = |errno, message: String| Reply::Error { errno, message };
    if client != c {
        return Err(refuse(libc::EPERM, format!("{what} names another client")));
    }
    let Some(fd) = fd else {
        return Err(refuse(libc::EINVAL, format!("{what} without a socket")));
    };
    if rustix::net::sockopt::socket_type(&fd).ok() != Some(rustix::net::SocketType::SEQPACKET) {
        return Err(refuse(
            libc::EINVAL,
            format!("{what} with a descriptor that is not a SEQPACKET socket"),
        ));
    }
    Ok(fd)
}

/// `Mount`: serve the FUSE connection `fd` (a mount client `c` made at
/// `dir`) from this owner. Only the owner's own user or root may hand one
/// over: the session runs with the owner's privileges.
fn mount(
    sh: &Arc<Shared>,
    c: u64,
    fd: Option<OwnedFd>,
    dir: &[u8],
    read_only: bool,
) -> Result<Reply> {
    let (_, uid) = caller_pid_uid(sh, c)?;
    let me = rustix::process::geteuid().as_raw();
    if uid != me && uid != 0 {
        return Err(Error::NotPermitted(
            "only the owner's user or root may have it serve a FUSE mount",
        ));
    }
    let write = sh.table.lock().clients.get(&c).is_some_and(|r| r.write);
    let fd = fd.ok_or(Error::Invalid("Mount without a /dev/fuse descriptor"))?;
    let dir = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir));
    // ORDERING: Relaxed: a unique-id counter (the session is a client).
    let id = sh.next_client.fetch_add(1, Ordering::Relaxed);
    fuse::start(sh, id, fd, &dir, read_only || !write)?;
    Ok(Reply::Done)
}

/// Make the socket `fd` (sent with `Channel` on client `c`'s own
/// connection) its fault channel, served by a thread of its own until it
/// closes or the client is dropped (which shuts it down); the caller joins
/// the thread.
fn fault_channel(
    sh: &Arc<Shared>,
    c: u64,
    client: u64,
    fd: Option<OwnedFd>,
) -> std::result::Result<std::thread::JoinHandle<()>, Reply> {
    let fd = Arc::new(side_socket("Channel", c, client, fd)?);
    {
        let mut t = sh.table.lock();
        let Some(rec) = t.clients.get_mut(&c) else {
            return Err(Reply::Error {
                errno: libc::EBADF,
                message: "no such client".into(),
            });
        };
        if rec.fault.is_some() {
            return Err(Reply::Error {
                errno: libc::EEXIST,
                message: "a fault channel exists".into(),
            });
        }
        rec.fault = Some(fd.clone());
    }
    let sh = sh.clone();
    std::thread::Builder::new()
        .name("udax-faults".into())
        .spawn(move || serve_faults(&sh, c, &fd))
        .map_err(|e| Reply::Error {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            message: format!("fault channel thread: {e}"),
        })
}

/// Answer client `c`'s fault channel: `Iomap` only.
fn serve_faults(sh: &Shared, c: u64, ch: &OwnedFd) {
    loop {
        let (msg, _) = match wire::recv(ch.as_fd()) {
            Ok(Some(x)) => x,
            _ => return,
        };
        let (id, reply) = match Request::decode(&msg) {
            Ok((
                id,
                Request::Iomap {
                    handle,
                    op,
                    from_blk,
                    to_blk,
                },
            )) => {
                let ino = file_of(sh, c, handle).ok().map(|d| d.ino());
                let r = iomap(sh, c, handle, op, from_blk, to_blk);
                // The file's blocks (`st_blocks`) changed.
                uncache(sh, ino);
                publish_space(sh);
                (id, r)
            }
            Ok((id, _)) => (
                id,
                Err(Error::Invalid("only Iomap goes on the fault channel")),
            ),
            Err(e) => (
                0,
                Err(Error::Remote {
                    errno: libc::EPROTO,
                    message: e.to_string(),
                }),
            ),
        };
        let reply = reply.unwrap_or_else(|e| Reply::Error {
            errno: e.errno(),
            message: e.to_string(),
        });
        if wire::send(ch.as_fd(), &reply.encode(id), None).is_err() {
            return;
        }
    }
}

/// How long a fault's change waits for a file's change lock before it
/// answers `EAGAIN`: long enough for a lease grant (which holds it
/// briefly), short against a change that is recalling the asking client
/// (which waits for the fault to drop its locks).
const FAULT_LOCK_WAIT: Duration = Duration::from_millis(2);

/// A fault of client `c` needs file blocks `[a, b)` of its file `handle`
/// changed: recall every other client's lease (their mappings may show the
/// zero page there, or the blocks about to be copied), change them, and
/// answer with the new layout of the range. The asking client keeps its
/// lease: it updates it from the answer and fixes its own mappings (the
/// fault engine does, as in one process).
fn iomap(sh: &Shared, c: u64, handle: u64, op: IomapOp, a: u64, b: u64) -> Result<Reply> {
    let f = file_of(sh, c, handle)?;
    if !f.writable() {
        return Err(Error::BadFd);
    }
    if a >= b || b - a > 1 << 30 {
        return Err(Error::Invalid("iomap range"));
    }
    let ino = f.ino();
    let lock = change_lock(sh, ino);
    let Some(_g) = lock.try_lock_for(FAULT_LOCK_WAIT) else {
        return Err(Error::Remote {
            errno: libc::EAGAIN,
            message: "the file is being changed; fault again".into(),
        });
    };
    grants::settle_locked(sh, ino, grants::Settle::KeepFor(c))?;
    recall(sh, ino, Some(c), false, a..b)?;
    let inode = f.dax_inode();
    {
        let _inv = inode.dax().invalidate.write();
        match op {
            IomapOp::Alloc => inode.alloc_zeroed(a, b),
            IomapOp::Unshare => inode.unshare(a, b),
            IomapOp::Relocate => inode.relocate_chunk(a),
        }
        .map_err(|e| match e {
            IomapError::NoSpace => Error::NoSpace,
            IomapError::Stale => Error::NotFound,
            IomapError::ReadOnly => Error::ReadOnly,
            e => Error::Remote {
                errno: libc::EIO,
                message: e.to_string(),
            },
        })?;
    }
    let extents = f
        .extents_shared()
        .into_iter()
        .filter(|(e, _)| e.file_blk < b && e.file_blk + e.len > a)
        .take(MAX_IOMAP_EXTENTS)
        .map(|(e, shared)| Ext {
            file_blk: e.file_blk,
            dev_blk: e.dev_blk,
            len: e.len,
            shared,
        })
        .collect();
    let epoch = sh.table.lock().epoch(ino);
    // Blocks for a fault, patched into a layout the client holds: not a
    // grant of one (serial 0).
    Ok(Reply::Layout {
        ino,
        epoch,
        serial: 0,
        size: f.len(),
        extents,
        bad: Vec::new(),
        next: None,
    })
}

/// A media error at device bytes `[off, off+len)` (emulated first with
/// `inject`), reported by client `c`: record it (SPEC E1-E3), then tell
/// every lease holder of every owning file which page was lost, so each
/// process's mappings raise SIGBUS `BUS_MCEERR_AR` there (the kernel's
/// `memory_failure` reaching every process that maps the page).
fn poison(sh: &Shared, c: u64, off: u64, len: u64, inject: bool) -> Result<Reply> {
    if sh.table.lock().clients.get(&c).is_none_or(|r| !r.write) {
        return Err(Error::Access(
            "reporting media errors needs a read-write client",
        ));
    }
    let report = if inject {
        sh.fs.inject_poison(off, len)?
    } else {
        sh.fs.notify_failure(off, len)?
    };
    let mut pages: Vec<(u64, u64)> = report
        .owners
        .iter()
        .filter_map(|(_, o)| match o {
            crate::fs::Owner::File { ino, file_off } => Some((*ino, file_off / BLOCK_SIZE)),
            _ => None,
        })
        .collect();
    pages.sort_unstable();
    pages.dedup();
    for &(ino, page) in &pages {
        callback(sh, ino, None, |epoch| Reply::Poison { ino, epoch, page });
    }
    Ok(Reply::Poisoned {
        file_pages: pages.len() as u64,
    })
}

/// Extents of one `Iomap` answer (a fault's range is at most 2 MiB: 512
/// blocks, so at most 512 extents; this bounds a hostile range's answer to
/// one message).
const MAX_IOMAP_EXTENTS: usize = 2048;

/// Make the socket `fd` (sent with `Listen` on client `c`'s own
/// connection) its callback channel.
fn listen(sh: &Shared, c: u64, client: u64, fd: Option<OwnedFd>) -> Reply {
    let refuse = |errno, message: &str| Reply::Error {
        errno,
        message: message.into(),
    };
    let fd = match side_socket("Listen", c, client, fd) {
        Ok(fd) => fd,
        Err(r) => return r,
    };
    let mut t = sh.table.lock();
    match t.clients.get_mut(&c) {
        Some(rec) if rec.callback.is_none() => {
            rec.callback = Some(Arc::new(Mutex::new(fd)));
            Reply::Done
        }
        Some(_) => refuse(libc::EEXIST, "a callback channel exists"),
        None => refuse(libc::EBADF, "no such client"),
    }
}

/// `stat` by `look`, after settling a size grant on the file it finds.
fn settled_stat(sh: &Shared, look: impl Fn() -> Result<Stat>) -> Result<Stat> {
    let s = look()?;
    if !grants::out(sh, s.ino) {
        return Ok(s);
    }
    grants::settle(sh, s.ino, grants::Settle::Everyone)?;
    look()
}

/// Forget client `c`: close its files, drop its leases, and shut its
/// connections (a cut-off client sees them end).
fn drop_client(sh: &Shared, c: u64, why: &str) {
    let cut = why.starts_with("cut off");
    let (rec, leased) = {
        let mut t = sh.table.lock();
        let mut leased = Vec::new();
        for (ino, holders) in t.leases.iter_mut() {
            if holders.remove(&c) {
                leased.push(*ino);
            }
        }
        t.granted.retain(|&(_, holder), _| holder != c);
        let rec = t.clients.remove(&c);
        // A client that closed its connection (it exited, exec'd or let go
        // of its last file) writes no more; one cut off may, while it
        // lives, and its mappings still show the blocks of its files: from
        // here on (before any change that cut it off frees a block, and
        // before another thread can find it gone) freed blocks are held.
        let alive = cut
            && rec
                .as_ref()
                .is_some_and(|r| !exited(r.pid, r.pidfd.as_deref()));
        if alive {
            sh.fs.hold_frees_for(c);
        }
        (rec, alive.then_some(leased))
    };
    let may_write = leased.is_some();
    if let (Some(leased), Some(rec)) = (leased, &rec) {
        hold_for_cut_off(sh, c, rec, leased);
    }
    grants::client_gone(sh, c, may_write);
    // Its record locks and those of the descriptions it held last go in one
    // step: another client never sees some of them gone and others held.
    let last: Vec<(u64, LockOwner)> = rec
        .iter()
        .flat_map(|r| r.handles.values())
        .filter(|d| last_handle(d))
        .map(|d| (d.ino(), ofd_owner(d)))
        .collect();
    sh.locks.release_gone(c, &last);
    if let Some(rec) = rec {
        tracing::debug!("client {c} (pid {}): {why}", rec.pid);
        let _ = rustix::net::shutdown(&*rec.sock, rustix::net::Shutdown::Both);
        if let Some(cb) = &rec.callback {
            let _ = rustix::net::shutdown(&*cb.lock(), rustix::net::Shutdown::Both);
        }
        if let Some(f) = &rec.fault {
            let _ = rustix::net::shutdown(&**f, rustix::net::Shutdown::Both);
        }
        // Its files close here (an unlinked one is freed with its last handle).
        drop(rec);
    }
    publish_space(sh);
}

/// Client `c` (`rec`) was cut off while its process lives, and every block
/// freed since is held for it: from now on only the blocks it may reach are,
/// those of the files it had leases on (`leased`) or open, as they are now
/// (its mappings and layouts show no others), until its process exits
/// (`release_the_dead`).
fn hold_for_cut_off(sh: &Shared, c: u64, rec: &ClientRec, mut inos: Vec<u64>) {
    inos.extend(rec.handles.values().map(|d| d.ino()));
    inos.sort_unstable();
    inos.dedup();
    let runs: Vec<(u64, u64)> = inos
        .iter()
        .flat_map(|&ino| sh.fs.device_runs_of(ino))
        .collect();
    let blocks: u64 = runs.iter().map(|(_, l)| l).sum();
    sh.fs.set_hold_reach(c, runs);
    tracing::warn!(
        "client {c} (pid {}) was cut off while its process lives: the blocks of the {} files it may still \
         reach through its mappings ({blocks} blocks) are not reused when freed, until it exits",
        rec.pid,
        inos.len()
    );
    sh.cut_off.lock().push(CutOff {
        client: c,
        pid: rec.pid,
        pidfd: rec.pidfd.clone(),
    });
}

/// Release the blocks held for cut-off clients whose processes exited.
fn release_the_dead(sh: &Shared) {
    let dead: Vec<CutOff> = {
        let mut l = sh.cut_off.lock();
        let (dead, live) = std::mem::take(&mut *l)
            .into_iter()
            .partition(|x| exited(x.pid, x.pidfd.as_deref()));
        *l = live;
        dead
    };
    if dead.is_empty() {
        return;
    }
    for x in dead {
        tracing::debug!(
            "cut-off client {} (pid {}) exited: its held blocks go back",
            x.client,
            x.pid
        );
        sh.fs.release_held(x.client);
    }
    publish_space(sh);
}

/// Wait up to `timeout_ms` for a connection on `listener`, or for a cut-off
/// client's process to exit (its pidfd becomes readable: its held blocks
/// are released here). Returns whether a connection waits.
fn wait_for_client_or_exit(
    sh: &Shared,
    listener: std::os::fd::BorrowedFd<'_>,
    timeout_ms: i32,
) -> Result<bool> {
    let pidfds: Vec<Arc<OwnedFd>> = {
        let l = sh.cut_off.lock();
        if l.iter().any(|x| x.pidfd.is_none()) {
            // A process without a pidfd is looked at once per wait.
            drop(l);
            release_the_dead(sh);
            sh.cut_off
                .lock()
                .iter()
                .filter_map(|x| x.pidfd.clone())
                .collect()
        } else {
            l.iter().filter_map(|x| x.pidfd.clone()).collect()
        }
    };
    if pidfds.is_empty() {
        return wire::wait_readable(listener, timeout_ms).map_err(Error::Io);
    }
    use rustix::event::{PollFd, PollFlags};
    let mut p: Vec<PollFd<'_>> = std::iter::once(PollFd::new(&listener, PollFlags::IN))
        .chain(pidfds.iter().map(|f| PollFd::new(&**f, PollFlags::IN)))
        .collect();
    let t = rustix::time::Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    };
    match rustix::event::poll(&mut p, Some(&t)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(Error::Io(e.into())),
    }
    let accept = !p[0].revents().is_empty();
    if p[1..].iter().any(|x| !x.revents().is_empty()) {
        drop(p);
        release_the_dead(sh);
    }
    Ok(accept)
}

/// The lock a change of inode `ino`'s layout holds (see `Shared::changing`).
/// `fallocate` of `f` for a client or the FUSE mount: under the file's
/// change lock, after the other clients' leases on the blocks it frees,
/// moves or grows into are recalled.
/// `own`: the client asking did its part of the settle and recall itself
/// (as for a truncate, [`truncate_asked`]).
fn fallocate_recalled(
    sh: &Shared,
    f: &File,
    mode: u32,
    offset: u64,
    len: u64,
    own: Option<&DoneItself>,
) -> Result<()> {
    use crate::fs::falloc::{COLLAPSE_RANGE, INSERT_RANGE, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE};
    let lock = change_lock(sh, f.ino());
    let _g = lock.lock();
    settle_before(sh, f.ino(), own)?;
    // Blocks freed or moved: every holder waits for its pins.
    let frees = mode & (PUNCH_HOLE | COLLAPSE_RANGE | ZERO_RANGE | INSERT_RANGE) != 0;
    // Shifted blocks: to the end. A size kept: never grows.
    let range = if mode & (COLLAPSE_RANGE | INSERT_RANGE) != 0 {
        offset / BLOCK_SIZE..u64::MAX
    } else if mode & KEEP_SIZE != 0 {
        blocks_changed(offset, len, u64::MAX)
    } else {
        blocks_changed(offset, len, f.len())
    };
    recall(sh, f.ino(), left_out(sh, f.ino(), own), frees, range)?;
    f.fallocate(mode, offset, len)
}

/// Grow `f` to `size` over bytes `[offset, size)` a client copied in place
/// under its lease of `epoch` (`Request::Extend`). Under the file's change
/// lock, the lease is still current only if no recall moved the file's
/// epoch since: then no truncate, punch or other growth touched those
/// blocks after the client's copy (each recalls first). Every lease is
/// recalled before the size moves, as for a growing `Write`, and the size
/// is durable before the answer.
/// The client did its part of the settle and recall itself (`own`, as for
/// a truncate).
fn extend_written(
    sh: &Shared,
    f: &File,
    offset: u64,
    size: u64,
    epoch: u64,
    own: &DoneItself,
) -> Result<()> {
    if !f.writable() {
        return Err(Error::BadFd);
    }
    let ino = f.ino();
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    settle_before(sh, ino, Some(own))?;
    let stale = || Error::Remote {
        errno: libc::ESTALE,
        message: "the file changed after the lease the bytes were written under".into(),
    };
    if sh.table.lock().epoch(ino) != epoch {
        return Err(stale());
    }
    if size > f.len() {
        let except = left_out(sh, ino, Some(own));
        recall(sh, ino, except, false, offset / BLOCK_SIZE..u64::MAX)?;
    }
    if !f.extend_written(offset, size)? {
        return Err(stale());
    }
    f.sync_data()
}

/// Set the size of `f` (a client's `ftruncate` or `open(O_TRUNC)`): under
/// the file's change lock, after every lease on the blocks past the new
/// end is recalled (a shrink waits for the pins on the blocks it frees).
fn truncate_recalled(sh: &Shared, f: &File, size: u64) -> Result<()> {
    truncate_asked(sh, f, size, None)
}

/// What a client that asks for a change of a file did itself first, as the
/// owner's settle and recall of it would (`Request::Truncate`): its
/// client number, the size grant it stopped using (`(word_at, serial)`,
/// `(0, 0)`: none) and the lease serial it dropped its layouts through.
struct DoneItself {
    client: u64,
    settled: (u64, u32),
    dropped: u64,
}

impl DoneItself {
    /// What client `client` says it did (a `Write` settles no grant
    /// itself: `settled` `(0, 0)`).
    fn of(client: u64, settled: (u64, u32), dropped: u64) -> DoneItself {
        DoneItself {
            client,
            settled,
            dropped,
        }
    }
}

/// Before a change of `ino` (its change lock held): settle its size grant,
/// the one `own`'s client stopped using itself ending from its word with
/// no call back ([`grants::settle_own`]).
fn settle_before(sh: &Shared, ino: u64, own: Option<&DoneItself>) -> Result<()> {
    match own {
        Some(o) => grants::settle_own(sh, ino, o.client, o.settled),
        None => grants::settle_locked(sh, ino, grants::Settle::Everyone),
    }
}

/// [`truncate_recalled`], leaving out of the settle and the recall the
/// client that did their part itself (`own`).
fn truncate_asked(sh: &Shared, f: &File, size: u64, own: Option<&DoneItself>) -> Result<()> {
    let lock = change_lock(sh, f.ino());
    let _g = lock.lock();
    settle_before(sh, f.ino(), own)?;
    let from = size.min(f.len()) / BLOCK_SIZE;
    let except = left_out(sh, f.ino(), own);
    recall(sh, f.ino(), except, size < f.len(), from..u64::MAX)?;
    f.set_len(size)
}

/// `own`'s client, which dropped its own layouts of `ino` through lease
/// serial `dropped` before asking for a change (0: it says none), if the
/// change's recall may leave it out: it was granted no layout since
/// (checked under the file's change lock, which grants take too).
fn left_out(sh: &Shared, ino: u64, own: Option<&DoneItself>) -> Option<u64> {
    let o = own.filter(|o| o.dropped != 0)?;
    let granted = sh.table.lock().granted.get(&(ino, o.client)).copied();
    granted.is_none_or(|s| s <= o.dropped).then_some(o.client)
}

fn change_lock(sh: &Shared, ino: u64) -> Arc<ReentrantMutex<()>> {
    let mut m = sh.changing.lock();
    if m.len() >= CHANGE_LOCKS_KEPT {
        // Forget the locks no change holds or waits for (only the map has
        // them): the map stays bounded by the files changed at once.
        m.retain(|_, l| Arc::strong_count(l) > 1);
    }
    m.entry(ino).or_default().clone()
}

/// Change locks kept before the idle ones are pruned.
const CHANGE_LOCKS_KEPT: usize = 1024;

/// Before a change of file blocks `range` of inode `ino` (the caller holds
/// its change lock): recall every lease on it. Each holder is sent `Recall` on
/// its callback channel and must answer `Recalled` within the recall
/// timeout, after unmapping the range, dropping its layout and waiting for
/// its reads in flight; a holder that does not is cut off.
///
/// `except`: the client whose own fault asks for the change keeps its
/// layout (it updates it from the answer). `wait`: the change frees blocks (a
/// shrink), so each holder also waits for its pins on them, for up to
/// [`dax::PIN_TIMEOUT`] more than the recall bound; a holder whose pins
/// outlast that answers busy, and the change fails with `EBUSY` (as
/// break-layouts fails in one process).
fn recall(
    sh: &Shared,
    ino: u64,
    except: Option<u64>,
    wait: bool,
    range: std::ops::Range<u64>,
) -> Result<()> {
    let from = range.start;
    recall_leases(sh, ino, except, wait, range)?;
    // FUSE mounts drop the kernel's cached pages of the file (a change made
    // through a mount recalls with `recall_leases`: the kernel keeps its own
    // cache in step with its own requests).
    fuse::invalidate(sh, ino, from);
    Ok(())
}

/// [`recall`] without the FUSE mounts' invalidation.
fn recall_leases(
    sh: &Shared,
    ino: u64,
    except: Option<u64>,
    wait: bool,
    range: std::ops::Range<u64>,
) -> Result<()> {
    let busy = callback(sh, ino, except, |epoch| Reply::Recall {
        ino,
        epoch,
        wait,
        from_blk: range.start,
        to_blk: range.end,
    });
    if busy {
        return Err(Error::Busy(format!(
            "blocks of inode {ino} stay pinned by another process after {:?}",
            dax::PIN_TIMEOUT
        )));
    }
    Ok(())
}

/// Send `msg(epoch)` to every client holding a lease on `ino` but
/// `except` under a new epoch, and wait for each answer; a holder that does
/// not answer within the bound is cut off. Returns whether a holder
/// answered busy.
///
/// A recall ends no one's place among the holders: a client drops its
/// layout, but its mappings still show the blocks outside the recalled
/// range, so every later change must reach it too (until it closes its last
/// handle of the file) even before it fetches a layout again.
fn callback(sh: &Shared, ino: u64, except: Option<u64>, msg: impl Fn(u64) -> Reply) -> bool {
    let (epoch, holders) = {
        let mut t = sh.table.lock();
        let mut set = t.leases.get(&ino).cloned().unwrap_or_default();
        if let Some(c) = except {
            set.remove(&c);
        }
        let epoch = t.recall_epoch(ino);
        (epoch, callbacks(&t, set))
    };
    let m = msg(epoch);
    let wait = matches!(m, Reply::Recall { wait: true, .. });
    let timeout = sh.recall_timeout
        + if wait {
            dax::PIN_TIMEOUT
        } else {
            Duration::ZERO
        };
    ask_all(sh, holders, &m, ino, epoch, timeout)
}

/// The callback channels of clients `set` (a client without one is listed,
/// to be cut off; one already gone is skipped).
type Callbacks = Vec<(u64, Option<Arc<Mutex<OwnedFd>>>)>;

fn callbacks(t: &Table, set: impl IntoIterator<Item = u64>) -> Callbacks {
    set.into_iter()
        .filter_map(|c| Some((c, t.clients.get(&c)?.callback.clone())))
        .collect()
}

/// Send `m` (of `ino`, `epoch`) to each of `holders` and wait for each
/// answer; a holder that does not answer within `timeout` is cut off.
/// Returns whether a holder answered busy.
fn ask_all(
    sh: &Shared,
    holders: Callbacks,
    m: &Reply,
    ino: u64,
    epoch: u64,
    timeout: Duration,
) -> bool {
    let mut busy = false;
    for (c, cb) in holders {
        let answer = cb.and_then(|cb| {
            let ch = cb.lock();
            ask(ch.as_fd(), m, ino, epoch, timeout)
        });
        match answer {
            Some(b) => busy |= b,
            None => {
                tracing::warn!("client {c} did not answer a callback on inode {ino}: cut off");
                drop_client(sh, c, "cut off: no answer to a callback");
            }
        }
    }
    busy
}

/// Send one callback and wait for its answer: whether the holder's pins
/// outlasted its wait, or `None` without an answer.
fn ask(
    ch: std::os::fd::BorrowedFd<'_>,
    msg: &Reply,
    ino: u64,
    epoch: u64,
    timeout: Duration,
) -> Option<bool> {
    wire::send(ch, &msg.encode(0), None).ok()?;
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !wire::wait_readable(ch, left.as_millis().max(1) as i32).unwrap_or(false)
        {
            return None;
        }
        match wire::recv(ch) {
            Ok(Some((m, _))) => match Request::decode(&m) {
                Ok((
                    _,
                    Request::Recalled {
                        ino: i,
                        epoch: e,
                        busy,
                    },
                )) if i == ino && e == epoch => return Some(busy),
                // An answer to an earlier recall that timed out: skip it.
                Ok((_, Request::Recalled { .. })) => continue,
                _ => return None,
            },
            _ => return None,
        }
    }
}

/// The reply to a `Hello` and the device fd to send with it, or the refusal.
fn admit(
    sh: &Shared,
    pid: i32,
    uid: u32,
    gid: u32,
    version: u16,
    write: bool,
) -> std::result::Result<(Reply, OwnedFd, Cred), Reply> {
    if version != proto::VERSION {
        return Err(Reply::Error {
            errno: libc::EPROTO,
            message: format!(
                "protocol version {version}; this owner speaks {}",
                proto::VERSION
            ),
        });
    }
    let groups = cred::groups_of(pid).unwrap_or_default();
    let d = sh.device;
    if !cred::may_open(d.uid, d.gid, d.mode, uid, gid, &groups, write) {
        tracing::info!(
            "refused pid {pid} (uid {uid}): may not open {} for {}",
            sh.path.display(),
            if write { "writing" } else { "reading" }
        );
        return Err(Reply::Error {
            errno: libc::EACCES,
            message: format!(
                "uid {uid} may not open {} for {}",
                sh.path.display(),
                if write { "writing" } else { "reading" }
            ),
        });
    }
    let map = sh.fs.device().mapping().expect("checked at start");
    // A read-only client gets the owner's read-only open of the device,
    // never its read-write one; both hold the shared device lock
    // (`share_device_lock`).
    let fd = if write {
        map.fd.try_clone_to_owned()
    } else {
        sh.read_only_open.try_clone()
    };
    let fd = fd.map_err(|e| Reply::Error {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        message: format!("device fd: {e}"),
    })?;
    tracing::debug!("admitted pid {pid} (uid {uid})");
    Ok((
        Reply::Hello {
            version: proto::VERSION,
            uuid: sh.fs.superblock().uuid(),
            read_only: !write || sh.fs.is_read_only(),
            client: 0,
        },
        fd,
        Cred { uid, gid, groups },
    ))
}

fn path_of(p: &[u8]) -> Result<&str> {
    std::str::from_utf8(p).map_err(|_| Error::Invalid("path is not UTF-8"))
}

/// Answer one request of client `c` (after its `Hello`).
fn answer(sh: &Shared, c: u64, req: Request) -> Reply {
    let changes = req.changes_attributes();
    // A change of one file's data or attributes: the others keep what
    // they cached of other files and their directory listings.
    let one = req
        .changes_one_file()
        .and_then(|h| file_of(sh, c, h).ok())
        // A directory's mode or owner decides the search permission of
        // every path through it: those changes drop everything.
        .filter(|d| !(sets_permissions(&req) && d.file.stat().is_ok_and(|s| s.is_dir())))
        .map(|d| d.ino());
    match one {
        // The others drop what they cached of the file before its change
        // lock goes: a lease, layout or open answered after the change
        // (each waits for the lock) can then never show a client a size
        // newer than a `stat` it answers from its cache.
        Some(ino) if changes => {
            let lock = change_lock(sh, ino);
            let _g = lock.lock();
            let r = answer_inner(sh, c, req);
            uncache(sh, one);
            r
        }
        None if req.changes_names() => answer_names(sh, c, req),
        _ => {
            let r = answer_inner(sh, c, req);
            if changes {
                uncache(sh, one);
            }
            r
        }
    }
}

/// Whether `req` is an open with `O_TRUNC`.
fn opens_truncating(req: &Request) -> bool {
    match req {
        Request::Open { trunc, .. } => *trunc,
        Request::As { req, .. } => opens_truncating(req),
        _ => false,
    }
}

/// Whether `req` sets a mode or an owner.
fn sets_permissions(req: &Request) -> bool {
    match req {
        Request::SetAttr { mode, .. } => mode.is_some(),
        Request::SetOwner { .. } => true,
        Request::As { req, .. } => sets_permissions(req),
        _ => false,
    }
}

/// `answer` traced: wrapped with the names its path walks looked up
/// (`Walked`), when they were few enough to keep. A path that names
/// nothing (ENOENT) is an answer too: it stays so until one of the names
/// its walk looked up (the missing one among them) changes.
fn walked(answer: impl FnOnce() -> Result<Reply>) -> Result<Reply> {
    const _: () = assert!(crate::fs::trace::TRACE_MAX <= proto::MAX_KEYS);
    let (r, t) = crate::fs::trace::traced(answer);
    let r = match r {
        Ok(r) => r,
        Err(Error::NotFound) if t.deps().is_some() => Reply::Error {
            errno: libc::ENOENT,
            message: Error::NotFound.to_string(),
        },
        Err(e) => return Err(e),
    };
    Ok(match t.deps() {
        Some(deps) => Reply::Walked {
            deps: deps.to_vec(),
            then: Box::new(r),
        },
        None => r,
    })
}

/// After a change by client `c` that `stat` may show, before `c` is
/// answered: the change goes into the change log every client reads before
/// it answers from its attribute cache ([`proto::ring`]), so `stat`
/// anywhere sees it once `c`'s call returns. With `one`, the change
/// touched that inode's data or attributes alone: only its attributes go
/// (the caches keep the rest); else everything goes.
fn uncache(sh: &Shared, one: Option<u64>) {
    publish(
        sh,
        &[match one {
            Some(ino) => Rec::Ino(ino),
            None => Rec::All,
        }],
    );
}

/// Append `recs` to the change log.
fn publish(sh: &Shared, recs: &[Rec]) {
    let _g = sh.ring_lock.lock();
    sh.ring.append(recs);
}

/// Append what a traced change of names changed to the change log: the
/// names and inodes its transactions named, or everything when the trace
/// could not keep them all.
fn publish_trace(sh: &Shared, t: &crate::fs::trace::Trace) {
    if !t.complete() {
        return uncache(sh, None);
    }
    let recs: Vec<Rec> = (t.names.iter().map(|&k| Rec::Name(k)))
        .chain(t.inos.iter().map(|&i| Rec::Ino(i)))
        .collect();
    if !recs.is_empty() {
        publish(sh, &recs);
    }
}

/// Publish the totals `statfs` shows that change (free blocks, inodes,
/// metadata bytes) in the change log's memory, where clients read them
/// without a round trip: after every answer to a client (before it is
/// sent; its fault channel's too), every change of the FUSE mount and
/// every client gone, so a `statfs` anywhere sees a change, a close that
/// freed an unlinked file included, once its call returns. Computed under the lock: a thread that read older totals
/// cannot publish them over newer ones.
fn publish_space(sh: &Shared) {
    let _g = sh.space_lock.lock();
    let s = sh.fs.statfs();
    let space = Space {
        free_blocks: s.free_blocks,
        inodes: s.inodes,
        metadata_bytes: s.metadata_bytes,
    };
    if sh.ring.space() != Some(space) {
        sh.ring.set_space(space);
    }
}

/// [`answer_inner`] of a change of names (`Request::changes_names`),
/// traced: the change log names the names and the inodes it changed, so
/// the clients drop only the answers that depend on them. A change the
/// trace cannot describe drops everything.
fn answer_names(sh: &Shared, c: u64, req: Request) -> Reply {
    let truncates = opens_truncating(&req);
    let lstats = seed_lstats(&req);
    let r = answer_names_logged(sh, c, req, truncates);
    seeded(sh, c, r, lstats)
}

/// The `Lstat` requests (as the change's caller) of the paths a change
/// of names `req` links or unlinks a name at, each with its path.
fn seed_lstats(req: &Request) -> Vec<(Vec<u8>, Request)> {
    let claim = match req {
        Request::As { claim, .. } => Some(claim),
        _ => None,
    };
    req.changed_paths()
        .into_iter()
        .map(|p| {
            let lstat = Request::Lstat { path: p.to_vec() };
            let req = match claim {
                Some(claim) => Request::As {
                    claim: claim.clone(),
                    req: Box::new(lstat),
                },
                None => lstat,
            };
            (p.to_vec(), req)
        })
        .collect()
}

/// The answer `r` to a change of names by client `c`, whose records the
/// change log holds, wrapped with what its paths show now (`Changed`):
/// each `Lstat` of `lstats` answered as one sent now would be. The log's
/// count is read first: every change it counts was made before, so the
/// answers show it, and a change they do not show is logged after it,
/// where the client's check finds it (docs/multiprocess.md, "Attribute
/// cache in clients").
fn seeded(sh: &Shared, c: u64, r: Reply, lstats: Vec<(Vec<u8>, Request)>) -> Reply {
    if lstats.is_empty() || matches!(r, Reply::Error { .. }) {
        return r;
    }
    let at = sh.ring.head();
    let mut seeds = Vec::with_capacity(lstats.len());
    for (path, lstat) in lstats {
        let Reply::Walked { deps, then } = answer_inner(sh, c, lstat) else {
            continue;
        };
        let attr = match *then {
            Reply::Attr(a) => Some(a),
            Reply::Error { errno, .. } if errno == libc::ENOENT => None,
            _ => continue,
        };
        seeds.push(proto::Seed { path, deps, attr });
    }
    if seeds.is_empty() {
        return r;
    }
    Reply::Changed {
        at,
        seeds,
        then: Box::new(r),
    }
}

/// Answer `r` to request `id` as sent: a `Changed` answer too big for one
/// message goes without its seeds (encoded once in the usual case).
fn encoded(r: Reply, id: u64) -> Vec<u8> {
    let msg = r.encode(id);
    if msg.len() <= proto::MAX_MESSAGE {
        return msg;
    }
    match r {
        Reply::Changed { then, .. } => then.encode(id),
        _ => msg,
    }
}

/// [`answer_names`] without the seeds: the change, and its records
/// appended to the change log.
fn answer_names_logged(sh: &Shared, c: u64, req: Request, truncates: bool) -> Reply {
    let (r, mut t) = crate::fs::trace::traced(|| answer_inner(sh, c, req));
    // An open that truncates: the file's size and times changed whatever
    // the transactions said. (One that found the file it would have
    // created changed nothing: the opener may keep the attributes.)
    if let (Reply::Opened { attr, .. }, true) = (&r, truncates) {
        if !t.inos.contains(&attr.ino) {
            t.inos.push(attr.ino);
        }
    }
    publish_trace(sh, &t);
    r
}

/// [`answer`] without the attribute-cache upkeep.
fn answer_inner(sh: &Shared, c: u64, req: Request) -> Reply {
    let Some((fs, write, pid, pidfd)) = sh
        .table
        .lock()
        .clients
        .get(&c)
        .map(|r| (r.fs.clone(), r.write, r.pid, r.pidfd.clone()))
    else {
        return Reply::Error {
            errno: libc::EBADF,
            message: "no such client".into(),
        };
    };
    // A request as a thread with credentials of its own is checked with
    // them, once verified.
    let (req, fs) = match req {
        Request::As { claim, req } => match claimed(sh, c, pid, pidfd.as_deref(), &fs, claim) {
            Ok(fs) => (*req, fs),
            Err(e) => {
                return Reply::Error {
                    errno: e.errno(),
                    message: e.to_string(),
                }
            }
        },
        req => (req, fs),
    };
    // A read-only client (as a read-only mount) changes nothing.
    if !write && req.changes_attributes() {
        return Reply::Error {
            errno: libc::EROFS,
            message: "the client attached read-only".into(),
        };
    }
    let fs = &fs;
    let r: Result<Reply> = (|| {
        Ok(match req {
            Request::Hello { .. } => return Err(Error::Invalid("Hello sent twice")),
            Request::Listen { .. } => {
                return Err(Error::Invalid("Listen on a client's main connection"))
            }
            Request::Recalled { .. } => {
                return Err(Error::Invalid("Recalled outside the callback channel"))
            }
            Request::Ping => Reply::Pong,
            Request::As { .. } => return Err(Error::Invalid("As inside As")),
            Request::Ring => return Err(Error::Invalid("Ring inside As")),
            Request::Calls => return Err(Error::Invalid("Calls inside As")),
            Request::Stat { path } => {
                let p = path_of(&path)?;
                walked(|| Ok(Reply::Attr(attr(&settled_stat(sh, || fs.stat(p))?))))?
            }
            Request::Lstat { path } => {
                let p = path_of(&path)?;
                walked(|| Ok(Reply::Attr(attr(&settled_stat(sh, || fs.lstat(p))?))))?
            }
            Request::Readlink { path } => Reply::Path {
                path: fs.readlink(path_of(&path)?)?,
            },
            Request::RealDir { path } => Reply::Path {
                path: fs.real_dir(path_of(&path)?)?.into_bytes(),
            },
            Request::Symlink { target, path } => {
                fs.symlink(&target, path_of(&path)?)?;
                Reply::Done
            }
            Request::Mknod { path, mode, rdev } => {
                fs.mknod(path_of(&path)?, mode, rdev)?;
                Reply::Done
            }
            Request::ReadDir { path, from } => {
                let p = path_of(&path)?;
                // A page also depends on the directory's entries.
                walked(|| {
                    let dir = fs.resolve(p)?;
                    crate::fs::trace::looked_up(dir, b"");
                    entries(fs, dir, from)
                })?
            }
            Request::StatFs => Reply::Totals(totals(&fs.statfs())),
            Request::Mkdir { path, mode } => {
                fs.mkdir(path_of(&path)?, mode)?;
                Reply::Done
            }
            Request::Create { path, mode } => {
                drop(fs.create(path_of(&path)?, mode)?);
                Reply::Done
            }
            Request::Unlink { path } => {
                fs.unlink(path_of(&path)?)?;
                Reply::Done
            }
            Request::Rmdir { path } => {
                fs.rmdir(path_of(&path)?)?;
                Reply::Done
            }
            Request::Rename { from, to } => {
                fs.rename(path_of(&from)?, path_of(&to)?)?;
                Reply::Done
            }
            Request::Open {
                path,
                read,
                write,
                create,
                excl,
                trunc,
                nofollow,
                mode,
            } => {
                let f = fs.open(
                    path_of(&path)?,
                    &OpenOptions {
                        read,
                        write,
                        create,
                        create_new: create && excl,
                        nofollow,
                        mode,
                        ..Default::default()
                    },
                )?;
                if trunc {
                    // Not by the open itself: the blocks it frees may be
                    // in other clients' layouts, recalled first. Read-only
                    // it truncates too (Linux), with write permission.
                    if write {
                        truncate_recalled(sh, &f, 0)?;
                    } else {
                        let w = fs.open(
                            path_of(&path)?,
                            &OpenOptions {
                                read: false,
                                write: true,
                                nofollow,
                                ..Default::default()
                            },
                        )?;
                        truncate_recalled(sh, &w, 0)?;
                    }
                }
                grants::settle(sh, f.ino(), grants::Settle::Everyone)?;
                with_lease(sh, c, register(sh, c, f)?)?
            }
            Request::DirPath {
                ino,
                btime_ns,
                hint,
            } => {
                let path = fs.dir_path_of(ino, btime_ns, path_of(&hint)?)?;
                Reply::Path {
                    path: path.into_bytes(),
                }
            }
            Request::OpenUnnamed {
                dir,
                mode,
                linkable,
            } => register(sh, c, fs.create_unnamed(path_of(&dir)?, mode, linkable)?)?,
            Request::FStat { handle } => {
                let f = file_of(sh, c, handle)?;
                // The holder of a grant corrects the size with its own.
                grants::settle(sh, f.ino(), grants::Settle::KeepFor(c))?;
                Reply::Attr(attr(&f.stat()?))
            }
            Request::Link { from, to } => {
                let to = path_of(&to)?;
                match from {
                    Target::Path(p) => fs.link_following(path_of(&p)?, to)?,
                    Target::LinkPath(p) => fs.link(path_of(&p)?, to)?,
                    Target::Handle(h) => as_caller(&*file_of(sh, c, h)?, fs, |f| f.link(to))?,
                }
                Reply::Done
            }
            Request::Rename2 { from, to, how } => {
                let how = match how {
                    0 => Rename::Replace,
                    1 => Rename::NoReplace,
                    _ => Rename::Exchange,
                };
                fs.rename2(path_of(&from)?, path_of(&to)?, how)?;
                Reply::Done
            }
            Request::SetAttr {
                target,
                mode,
                atime_ns,
                mtime_ns,
            } => {
                match target {
                    Target::Path(p) => {
                        let p = path_of(&p)?;
                        if let Some(m) = mode {
                            fs.set_permissions(p, m)?;
                        }
                        if atime_ns.is_some() || mtime_ns.is_some() {
                            fs.set_times(p, atime_ns, mtime_ns)?;
                        }
                    }
                    Target::LinkPath(p) => {
                        let p = path_of(&p)?;
                        if let Some(m) = mode {
                            fs.set_permissions_nofollow(p, m)?;
                        }
                        if atime_ns.is_some() || mtime_ns.is_some() {
                            fs.set_times_nofollow(p, atime_ns, mtime_ns)?;
                        }
                    }
                    Target::Handle(h) => as_caller(&*file_of(sh, c, h)?, fs, |f| {
                        if let Some(m) = mode {
                            f.set_permissions(m)?;
                        }
                        if atime_ns.is_some() || mtime_ns.is_some() {
                            f.set_times(atime_ns, mtime_ns)?;
                        }
                        Ok(())
                    })?,
                }
                Reply::Done
            }
            Request::SetOwner { target, uid, gid } => {
                match target {
                    Target::Path(p) => fs.set_owner(path_of(&p)?, uid, gid)?,
                    Target::LinkPath(p) => fs.set_owner_nofollow(path_of(&p)?, uid, gid)?,
                    Target::Handle(h) => {
                        as_caller(&*file_of(sh, c, h)?, fs, |f| f.set_owner(uid, gid))?
                    }
                }
                Reply::Done
            }
            Request::Sync => {
                fs.sync()?;
                Reply::Done
            }
            Request::Fallocate {
                handle,
                mode,
                offset,
                len,
                settled,
                dropped,
            } => {
                let own = DoneItself::of(c, settled, dropped);
                let f = file_of(sh, c, handle)?;
                fallocate_recalled(sh, &f.file, mode, offset, len, Some(&own))?;
                Reply::Done
            }
            Request::Share { handle } => {
                let desc = file_of(sh, c, handle)?;
                let token = new_token()?;
                let mut m = sh.shares.lock();
                m.retain(|_, o| o.at.elapsed() < SHARE_TTL);
                m.insert(
                    token,
                    Offer {
                        desc,
                        uid: caller_uid(sh, c)?,
                        at: Instant::now(),
                    },
                );
                Reply::Shared { token }
            }
            Request::Adopt { token } => {
                let uid = caller_uid(sh, c)?;
                let offer = {
                    let mut m = sh.shares.lock();
                    match m.get(&token) {
                        Some(o) if o.at.elapsed() < SHARE_TTL && (o.uid == uid || uid == 0) => {
                            m.remove(&token)
                        }
                        _ => None,
                    }
                };
                add_handle(sh, c, offer.ok_or(Error::BadFd)?.desc)?
            }
            Request::ShareLocks { handles } => {
                prune_lock_offers(sh);
                let (pid, uid) = caller_pid_uid(sh, c)?;
                let token = new_token()?;
                // ORDERING: Relaxed: a unique-id counter (lock owners and
                // clients share its numbers).
                let process = sh.next_client.fetch_add(1, Ordering::Relaxed);
                let mut inodes = Vec::new();
                for h in handles {
                    inodes.push(file_of(sh, c, h)?.ino());
                }
                sh.locks.move_process(c, process, Some(&inodes));
                sh.lock_offers
                    .lock()
                    .insert(token, LockOffer { process, uid, pid });
                Reply::Shared { token }
            }
            Request::AdoptLocks { token } => {
                prune_lock_offers(sh);
                let (pid, uid) = caller_pid_uid(sh, c)?;
                let offer = {
                    let mut m = sh.lock_offers.lock();
                    match m.get(&token) {
                        // The same process (an exec keeps the pid), and the
                        // same user or root.
                        Some(o) if o.pid == pid && (o.uid == uid || uid == 0) => m.remove(&token),
                        _ => None,
                    }
                };
                let o = offer.ok_or(Error::BadFd)?;
                sh.locks.move_process(o.process, c, None);
                Reply::Done
            }
            Request::Seek {
                handle,
                whence,
                offset,
            } => {
                let d = file_of(sh, c, handle)?;
                grants::settle(sh, d.ino(), grants::Settle::Everyone)?;
                let mut pos = d.pos.lock();
                let base = match whence {
                    0 => 0,
                    1 => *pos,
                    _ => d.len(),
                };
                let to = base
                    .checked_add_signed(offset)
                    .filter(|&p| p <= i64::MAX as u64)
                    .ok_or(Error::Invalid("seek to a negative or too large offset"))?;
                *pos = to;
                Reply::Offset { pos: to }
            }
            Request::Advance { handle, len, clamp } => {
                let d = file_of(sh, c, handle)?;
                if clamp {
                    grants::settle(sh, d.ino(), grants::Settle::Everyone)?;
                }
                let mut pos = d.pos.lock();
                let old = *pos;
                let n = if clamp {
                    len.min(d.len().saturating_sub(old))
                } else {
                    len
                };
                *pos = old.checked_add(n).ok_or(Error::FileTooBig)?;
                Reply::Offset { pos: old }
            }
            Request::Append {
                handle,
                total,
                data,
                settled,
                dropped,
            } => {
                let f = file_of(sh, c, handle)?;
                let lock = change_lock(sh, f.ino());
                let _g = lock.lock();
                let own = DoneItself::of(c, settled, dropped);
                settle_before(sh, f.ino(), Some(&own))?;
                let at = f.len();
                let end = at.checked_add(total).ok_or(Error::FileTooBig)?;
                let except = left_out(sh, f.ino(), Some(&own));
                recall(sh, f.ino(), except, false, at / BLOCK_SIZE..u64::MAX)?;
                if total > data.len() as u64 {
                    // The rest follows in `Write`s: reserve it now, so no
                    // other append lands inside it.
                    f.set_len(end)?;
                }
                let n = f.write_at(&data, at)?;
                // Durable before the answer: the client's fdatasync then
                // needs no round trip (`RemoteFile::sync_data`).
                f.sync_data()?;
                Reply::Appended { at, n: n as u64 }
            }
            Request::Remap {
                src,
                src_off,
                dst,
                dst_off,
                len,
                dedupe,
            } => {
                let (s, d) = (file_of(sh, c, src)?, file_of(sh, c, dst)?);
                // Both files' layouts change (the source's blocks become
                // shared: no client may overwrite them in place any more;
                // the destination's are freed): their change locks in
                // inode order, then the recalls.
                let (a, b) = (s.ino().min(d.ino()), s.ino().max(d.ino()));
                let (la, lb) = (change_lock(sh, a), change_lock(sh, b));
                let _ga = la.lock();
                let _gb = (a != b).then(|| lb.lock());
                grants::settle_locked(sh, a, grants::Settle::Everyone)?;
                grants::settle_locked(sh, b, grants::Settle::Everyone)?;
                let n = if len == 0 {
                    s.len().saturating_sub(src_off)
                } else {
                    len
                };
                if s.ino() == d.ino() {
                    recall(sh, s.ino(), None, true, 0..u64::MAX)?;
                } else {
                    recall(
                        sh,
                        s.ino(),
                        None,
                        false,
                        blocks_changed(src_off, n, s.len()),
                    )?;
                    recall(sh, d.ino(), None, true, blocks_changed(dst_off, n, d.len()))?;
                }
                if dedupe {
                    let r = fs.dedupe_range(&s, src_off, &d, dst_off, len)?;
                    Reply::Remapped {
                        bytes: r.bytes_deduped,
                        differs: r.differs,
                    }
                } else {
                    Reply::Remapped {
                        bytes: fs.clone_range(&s, src_off, &d, dst_off, len)?,
                        differs: false,
                    }
                }
            }
            Request::Close { handle, mtime_ns } => {
                if mtime_ns != 0 {
                    let f = file_of(sh, c, handle)?;
                    if f.writable() {
                        f.note_write_time(mtime_ns)?;
                    }
                }
                let mut t = sh.table.lock();
                let rec = t.clients.get_mut(&c).ok_or(Error::BadFd)?;
                let f = rec.handles.remove(&handle).ok_or(Error::BadFd)?;
                let ino = f.ino();
                // POSIX: closing any descriptor of a file drops the
                // process's record locks on it; the description's own (OFD,
                // flock) go with its last handle.
                sh.locks.release(ino, lock_owner(c, 0, LockScope::Posix));
                unhandle(sh, &f);
                let last = !rec.handles.values().any(|g| g.ino() == ino);
                if last {
                    if let Some(h) = t.leases.get_mut(&ino) {
                        h.remove(&c);
                    }
                    t.granted.remove(&(ino, c));
                }
                drop(t);
                if last {
                    grants::closed(sh, c, ino)?;
                }
                drop(f);
                Reply::Done
            }
            Request::Lease { handle, from_blk } => lease(sh, c, handle, from_blk)?,
            Request::Grant { handle, want } => grants::grant(sh, c, handle, want)?,
            Request::Fsync { handle } => {
                file_of(sh, c, handle)?.fsync()?;
                Reply::Done
            }
            Request::Touch { handle, mtime_ns } => {
                let f = file_of(sh, c, handle)?;
                if !f.writable() {
                    return Err(Error::BadFd);
                }
                f.note_write_time(mtime_ns)?;
                Reply::Done
            }
            Request::Truncate {
                handle,
                size,
                settled,
                dropped,
            } => {
                let own = DoneItself::of(c, settled, dropped);
                truncate_asked(sh, &file_of(sh, c, handle)?.file, size, Some(&own))?;
                Reply::Done
            }
            Request::Extend {
                handle,
                offset,
                size,
                epoch,
                settled,
                dropped,
            } => {
                let own = DoneItself::of(c, settled, dropped);
                let f = file_of(sh, c, handle)?;
                extend_written(sh, &f.file, offset, size, epoch, &own)?;
                Reply::Done
            }
            Request::Channel { .. } => return Err(Error::Invalid("Channel after other requests")),
            Request::Mount { .. } => return Err(Error::Invalid("Mount without its descriptor")),
            Request::Iomap { .. } => return Err(Error::Invalid("Iomap outside the fault channel")),
            Request::Poison {
                offset,
                len,
                inject,
            } => poison(sh, c, offset, len, inject)?,
            Request::Lock {
                handle,
                scope,
                kind,
                start,
                end,
                wait,
            } => {
                prune_lock_offers(sh);
                let f = file_of(sh, c, handle)?;
                let kind = lock_kind(kind);
                if kind == Some(LockKind::Write) && !f.writable() {
                    return Err(Error::BadFd);
                }
                let owner = lock_owner(c, f.id, scope);
                let r = if scope == LockScope::Flock {
                    sh.locks.flock(f.ino(), owner, kind)
                } else {
                    let pid = sh.table.lock().clients.get(&c).map_or(-1, |r| r.pid);
                    sh.locks.set(f.ino(), owner, pid, kind, start..end, wait)
                };
                r.map_err(|e| Error::Remote {
                    errno: e.errno(),
                    message: e.to_string(),
                })?;
                Reply::Done
            }
            Request::GetLock {
                handle,
                scope,
                kind,
                start,
                end,
            } => {
                prune_lock_offers(sh);
                let f = file_of(sh, c, handle)?;
                if scope == LockScope::Flock {
                    return Err(Error::Invalid("GetLock of a flock lock"));
                }
                let kind = lock_kind(kind).unwrap_or(LockKind::Read);
                match sh
                    .locks
                    .get(f.ino(), lock_owner(c, f.id, scope), kind, start, end)
                {
                    Some(h) => Reply::LockHeld {
                        kind: if h.kind == LockKind::Read { 1 } else { 2 },
                        start: h.start,
                        end: h.end,
                        pid: h.pid,
                    },
                    None => Reply::LockHeld {
                        kind: 0,
                        start,
                        end,
                        pid: 0,
                    },
                }
            }
            Request::Write {
                handle,
                offset,
                data,
                dropped,
            } => {
                let f = file_of(sh, c, handle)?;
                let lock = change_lock(sh, f.ino());
                let _g = lock.lock();
                // The writer settles no grant itself; it dropped its own
                // layouts first, up to serial `dropped`.
                let own = DoneItself::of(c, (0, 0), dropped);
                settle_before(sh, f.ino(), Some(&own))?;
                if changes_layout(&f, offset, data.len() as u64) {
                    let range = blocks_changed(offset, data.len() as u64, f.len());
                    recall(sh, f.ino(), left_out(sh, f.ino(), Some(&own)), false, range)?;
                }
                let n = f.write_at(&data, offset)?;
                // As for `Append`.
                f.sync_data()?;
                Reply::Written { n: n as u64 }
            }
        })
    })();
    r.unwrap_or_else(|e| {
        let (errno, message) = e.to_remote();
        Reply::Error { errno, message }
    })
}

/// The file system as a request of client `c` (process `pid`) made as
/// `claim` sees it: the client's own view (`conn`, its credentials at
/// connect) when the claim is those, else a view with the claimed ones
/// once the kernel's record of the claiming thread shows them
/// (`cred::thread_cred`; docs/multiprocess.md, "Security"). A claim the
/// record does not show is refused (EPERM) and logged.
fn claimed(
    sh: &Shared,
    c: u64,
    pid: i32,
    pidfd: Option<&OwnedFd>,
    conn: &Fs,
    claim: proto::Claim,
) -> Result<Fs> {
    let want = Cred {
        uid: claim.uid,
        gid: claim.gid,
        groups: claim.groups,
    };
    if conn.caller().is_some_and(|have| cred::same(have, &want)) {
        return Ok(conn.clone());
    }
    let seen = match pidfd {
        Some(fd) => cred::thread_cred(pid, claim.tid, fd.as_fd()),
        None => Err("no pidfd of the process was had at connect".into()),
    };
    match seen {
        Ok(seen) if cred::same(&seen, &want) => Ok(sh.fs.as_caller(want)),
        seen => {
            let why = match seen {
                Ok(s) => format!(
                    "the thread has uid {} gid {} groups {:?}",
                    s.uid, s.gid, s.groups
                ),
                Err(e) => e,
            };
            tracing::warn!(
                "client {c} (pid {pid}): refused a request as thread {} with uid {} gid {} \
                 groups {:?}: {why}",
                claim.tid,
                want.uid,
                want.gid,
                want.groups
            );
            Err(Error::NotPermitted(
                "the credentials claimed are not the calling thread's",
            ))
        }
    }
}

/// Run `op` on `d`'s file checked as `fs` checks (the request's caller,
/// who may not be who opened it: `fchmod` after `seteuid`, or a handle
/// adopted by another client).
fn as_caller<R>(d: &Desc, fs: &Fs, op: impl FnOnce(&File) -> Result<R>) -> Result<R> {
    if d.file.fs().same_caller(fs) {
        op(&d.file)
    } else {
        op(&d.file.dup_as(fs))
    }
}

/// Keep `f` open for client `c` as a new open file description: its
/// handle and attributes.
fn register(sh: &Shared, c: u64, f: File) -> Result<Reply> {
    let desc = Arc::new(Desc {
        // ORDERING: Relaxed: a unique-id counter.
        id: sh.next_desc.fetch_add(1, Ordering::Relaxed),
        file: f,
        pos: Mutex::new(0),
        handles: AtomicUsize::new(0),
    });
    add_handle(sh, c, desc)
}

/// A handle of client `c` to open file description `desc`.
/// The uid client `c` was admitted with.
fn caller_uid(sh: &Shared, c: u64) -> Result<u32> {
    caller_pid_uid(sh, c).map(|(_, uid)| uid)
}

fn add_handle(sh: &Shared, c: u64, desc: Arc<Desc>) -> Result<Reply> {
    let a = attr(&desc.stat()?);
    let write = desc.writable();
    let mut t = sh.table.lock();
    let rec = t.clients.get_mut(&c).ok_or(Error::BadFd)?;
    let handle = rec.next_handle;
    rec.next_handle += 1;
    // ORDERING: under the table lock, as every change of the count.
    desc.handles.fetch_add(1, Ordering::Relaxed);
    rec.handles.insert(handle, desc);
    Ok(Reply::Opened {
        handle,
        write,
        layout: None,
        attr: a,
    })
}

/// A handle to `desc` was closed (or its client is gone): with the last
/// one, the description's OFD and flock locks go.
fn unhandle(sh: &Shared, desc: &Desc) {
    if last_handle(desc) {
        sh.locks.release(desc.ino(), ofd_owner(desc));
    }
}

/// Let go of one handle of `desc`: whether it was the last.
fn last_handle(desc: &Desc) -> bool {
    // ORDERING: AcqRel: the last closer (in any client thread) sees every
    // other's decrement before it releases the locks.
    desc.handles.fetch_sub(1, Ordering::AcqRel) == 1
}

/// The owner of the OFD and flock locks of open file description `desc`.
fn ofd_owner(desc: &Desc) -> LockOwner {
    LockOwner {
        process: 0,
        ofd: Some(desc.id),
    }
}

/// A lock kind on the wire: 1 read, 2 write, anything else none (unlock).
fn lock_kind(k: u8) -> Option<LockKind> {
    match k {
        1 => Some(LockKind::Read),
        2 => Some(LockKind::Write),
        _ => None,
    }
}

/// The owner of a lock of `scope` taken by client `c` through open file
/// description `desc`: the client (a process) for POSIX record locks, the
/// description for OFD and flock locks.
fn lock_owner(c: u64, desc: u64, scope: LockScope) -> LockOwner {
    match scope {
        LockScope::Posix => LockOwner {
            process: c,
            ofd: None,
        },
        _ => LockOwner {
            process: 0,
            ofd: Some(desc),
        },
    }
}

/// Client `c`'s open file `handle` (another reference to its description:
/// the table lock is not held while the file is used).
fn file_of(sh: &Shared, c: u64, handle: u64) -> Result<Arc<Desc>> {
    let t = sh.table.lock();
    let f = t
        .clients
        .get(&c)
        .and_then(|r| r.handles.get(&handle))
        .ok_or(Error::BadFd)?;
    Ok(f.clone())
}

/// The file blocks a change of bytes `[off, off+len)` of a file of `size`
/// bytes touches: to the end of the file (`u64::MAX`) when it grows it, as
/// pages past the old end then stop raising SIGBUS.
fn blocks_changed(off: u64, len: u64, size: u64) -> std::ops::Range<u64> {
    let end = off.saturating_add(len);
    off / BLOCK_SIZE..if end > size {
        u64::MAX
    } else {
        end.div_ceil(BLOCK_SIZE)
    }
}

/// Whether writing `[off, off+len)` changes the file's layout: it grows the
/// file, or fills a hole, or writes a shared (reflinked) block, which gets
/// a copy. An overwrite in place changes no layout: lease holders read the
/// new bytes where they are, as other processes do through the kernel's
/// shared page.
fn changes_layout(f: &File, off: u64, len: u64) -> bool {
    if len == 0 {
        return false;
    }
    let end = off.saturating_add(len);
    if end > f.len() {
        return true;
    }
    let (a, b) = (off / BLOCK_SIZE, end.div_ceil(BLOCK_SIZE));
    let mut covered = a;
    for (e, shared) in f.extents_shared() {
        let (s, t) = (e.file_blk, e.file_blk + e.len);
        if t <= a || s >= b {
            continue;
        }
        if shared || s > covered {
            return true;
        }
        covered = covered.max(t);
    }
    covered < b
}

/// `Opened` with the file's whole layout leased to client `c`, when it is
/// a regular file, the layout fits in the answer and `c` listens for
/// recalls (else as it was).
fn with_lease(sh: &Shared, c: u64, mut opened: Reply) -> Result<Reply> {
    let Reply::Opened {
        handle,
        attr,
        layout: layout @ None,
        ..
    } = &mut opened
    else {
        return Ok(opened);
    };
    let listens = sh
        .table
        .lock()
        .clients
        .get(&c)
        .is_some_and(|r| r.callback.is_some());
    if !listens || attr.mode & crate::format::S_IFMT != crate::format::S_IFREG {
        return Ok(opened);
    }
    if let Reply::Layout {
        epoch,
        serial,
        size,
        extents,
        bad,
        next: None,
        ..
    } = lease(sh, c, *handle, 0)?
    {
        if extents.len() <= OPEN_LAYOUT_EXTENTS {
            *layout = Some(Box::new(proto::OpenLayout {
                epoch,
                serial,
                size,
                extents,
                bad,
            }));
        }
    }
    Ok(opened)
}

/// Extents a layout sent with `Opened` holds at most (a bigger one is
/// fetched by `Lease` when first needed: an open answer stays small).
const OPEN_LAYOUT_EXTENTS: usize = 64;

/// A layout lease for client `c` on its file `handle`, from block `from` on.
fn lease(sh: &Shared, c: u64, handle: u64, from: u64) -> Result<Reply> {
    let f = file_of(sh, c, handle)?;
    let ino = f.ino();
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    grants::settle_locked(sh, ino, grants::Settle::KeepFor(c))?;
    let (epoch, serial) = {
        let mut t = sh.table.lock();
        if t.clients.get(&c).is_none_or(|r| r.callback.is_none()) {
            return Err(Error::Invalid("a lease needs a callback channel (Listen)"));
        }
        t.leases.entry(ino).or_default().insert(c);
        t.serial += 1;
        let serial = t.serial;
        t.granted.insert((ino, c), serial);
        (t.epoch(ino), serial)
    };
    // Fixed fields, the two counts and `next`: 24 + 8 + 9 bytes; an extent
    // is 25.
    let mut room = proto::MAX_MESSAGE - proto::HEADER - 41;
    let mut bad = Vec::new();
    if from == 0 {
        for (off, len) in f.poisoned_ranges() {
            if room < 16 * 64 {
                break;
            }
            room -= 16;
            bad.push((off / BLOCK_SIZE, len / BLOCK_SIZE));
        }
    }
    let mut extents = Vec::new();
    let mut next = None;
    for (e, shared) in f.extents_shared() {
        if e.file_blk + e.len <= from {
            continue;
        }
        if room < 25 {
            next = Some(e.file_blk.max(from));
            break;
        }
        room -= 25;
        let skip = from.saturating_sub(e.file_blk);
        extents.push(Ext {
            file_blk: e.file_blk + skip,
            dev_blk: e.dev_blk + skip,
            len: e.len - skip,
            shared,
        });
    }
    Ok(Reply::Layout {
        ino,
        epoch,
        serial,
        size: f.len(),
        extents,
        bad,
        next,
    })
}

fn attr(s: &Stat) -> Attr {
    Attr {
        ino: s.ino,
        mode: s.mode,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        blocks: s.blocks,
        blksize: s.blksize,
        atime_ns: s.atime_ns,
        mtime_ns: s.mtime_ns,
        ctime_ns: s.ctime_ns,
        btime_ns: s.btime_ns,
        rdev: s.rdev,
    }
}

fn totals(s: &StatFs) -> Totals {
    Totals {
        block_size: s.block_size,
        total_blocks: s.total_blocks,
        data_blocks: s.data_blocks,
        free_blocks: s.free_blocks,
        inodes: s.inodes,
        metadata_bytes: s.metadata_bytes,
    }
}

/// Entries of directory inode `dir` (its path walked once for the whole
/// reply) from cookie `from` on ([`Fs::read_dir_page_ino`]) that fit one
/// reply, and the cookie to go on from: an entry present
/// through a whole listing comes exactly once, whatever changes between
/// replies. Names sharing a cookie go in one reply (all or none).
fn entries(fs: &Fs, dir: u64, from: u64) -> Result<Reply> {
    let mut room = proto::ENTRIES_ROOM;
    let mut out = Vec::new();
    let mut from = from;
    loop {
        let page = fs.read_dir_page_ino(dir, from, 256)?;
        let mut group: Vec<Entry> = Vec::new();
        let mut rest = page.entries.into_iter().peekable();
        while let Some((cookie, d)) = rest.next() {
            group.push(Entry {
                cookie,
                name: d.name.into_bytes(),
                ino: d.ino,
                kind: d.file_type,
            });
            if rest.peek().is_some_and(|(c, _)| *c == cookie) {
                continue;
            }
            let n: usize = group.iter().map(proto::entry_bytes).sum();
            if n > room {
                if out.is_empty() {
                    return Err(Error::Invalid(
                        "names sharing one cookie do not fit a reply",
                    ));
                }
                return Ok(Reply::Entries {
                    entries: out,
                    next: Some(cookie),
                });
            }
            room -= n;
            out.append(&mut group);
        }
        match page.next {
            Some(n) => from = n,
            None => {
                return Ok(Reply::Entries {
                    entries: out,
                    next: None,
                })
            }
        }
    }
}
