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

use crate::fs::{DirEntry, Error, File, Fs, OpenOptions, Result, Stat, StatFs};
use crate::proto::{self, wire, Attr, Entry, Ext, Reply, Request, Totals};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::BLOCK_SIZE;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
    /// its end) and briefly by a lease grant, so no grant sees a layout a
    /// change is about to make stale.
    changing: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
    recall_timeout: Duration,
}

/// One admitted client.
#[derive(Debug)]
struct ClientRec {
    pid: i32,
    /// Its connection (shut down to cut it off).
    sock: Arc<OwnedFd>,
    /// Its callback channel (`Listen`), which recalls go to.
    callback: Option<Arc<Mutex<OwnedFd>>>,
    /// Its open files, by handle: an unlinked file lives while one is open.
    handles: HashMap<u64, Arc<File>>,
    next_handle: u64,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<u64, ClientRec>,
    /// Per inode, the clients holding a layout lease on it.
    leases: HashMap<u64, HashSet<u64>>,
    /// Per inode, the current lease epoch (bumped by each recall).
    epochs: HashMap<u64, u64>,
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
        if dev.mapping().is_none() {
            return Err(Error::NotSupported(
                "an owner serves a device that can be mapped",
            ));
        }
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
                recall_timeout: opts.recall_timeout,
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
                    tracing::info!("no clients for {idle:?}: exiting");
                    break;
                }
            }
            if !wire::wait_readable(self.listener.as_fd(), 100).map_err(Error::Io)? {
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
        for (_, s) in &threads {
            let _ = rustix::net::shutdown(&**s, rustix::net::Shutdown::Both);
        }
        for (t, _) in threads {
            let _ = t.join();
        }
        drop(self.listener);
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

/// Serve one connection until it disconnects or breaks the protocol's
/// order: a client's main connection (`Hello` first), or its callback
/// channel (`Listen` first, then kept for recalls).
fn serve_client(sh: &Shared, sock: Arc<OwnedFd>) {
    let Ok((pid, uid, gid)) = wire::peer(sock.as_fd()) else {
        return;
    };
    let mut me: Option<u64> = None;
    loop {
        // A message that cannot be read gets an error; the connection goes on.
        let refuse = |errno: i32, e: &dyn std::fmt::Display| {
            tracing::debug!("client {pid}: {e}");
            let r = Reply::Error {
                errno,
                message: e.to_string(),
            };
            wire::send(sock.as_fd(), &r.encode(0), None)
        };
        let (msg, fd) = match wire::recv(sock.as_fd()) {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => match refuse(libc::EMSGSIZE, &e) {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let (id, req) = match Request::decode(&msg) {
            Ok(x) => x,
            Err(e) => match refuse(libc::EPROTO, &e) {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let sent = match (me, req) {
            (None, Request::Hello { version, write }) => {
                match admit(sh, pid, uid, gid, version, write) {
                    Ok((mut reply, fd)) => {
                        // ORDERING: Relaxed: a unique-id counter.
                        let c = sh.next_client.fetch_add(1, Ordering::Relaxed);
                        if let Reply::Hello { client, .. } = &mut reply {
                            *client = c;
                        }
                        sh.table.lock().clients.insert(
                            c,
                            ClientRec {
                                pid,
                                sock: sock.clone(),
                                callback: None,
                                handles: HashMap::new(),
                                next_handle: 1,
                            },
                        );
                        me = Some(c);
                        wire::send(sock.as_fd(), &reply.encode(id), Some(fd.as_fd()))
                    }
                    Err(reply) => {
                        let _ = wire::send(sock.as_fd(), &reply.encode(id), None);
                        break;
                    }
                }
            }
            (None, _) => {
                let r = Reply::Error {
                    errno: libc::EPROTO,
                    message: "the first message must be Hello".into(),
                };
                let _ = wire::send(sock.as_fd(), &r.encode(id), None);
                break;
            }
            (Some(c), Request::Listen { client }) => {
                let r = listen(sh, c, client, fd);
                wire::send(sock.as_fd(), &r.encode(id), None)
            }
            // Any other descriptor sent by a client is closed unread.
            (Some(c), req) => wire::send(sock.as_fd(), &answer(sh, c, req).encode(id), None),
        };
        if sent.is_err() {
            break;
        }
    }
    if let Some(c) = me {
        drop_client(sh, c, "disconnected");
    }
}

/// Make the socket `fd` (sent with `Listen` on client `c`'s own
/// connection) its callback channel.
fn listen(sh: &Shared, c: u64, client: u64, fd: Option<OwnedFd>) -> Reply {
    let refuse = |errno, message: &str| Reply::Error {
        errno,
        message: message.into(),
    };
    if client != c {
        return refuse(libc::EPERM, "Listen names another client");
    }
    let Some(fd) = fd else {
        return refuse(libc::EINVAL, "Listen without a socket");
    };
    if rustix::net::sockopt::socket_type(&fd).ok() != Some(rustix::net::SocketType::SEQPACKET) {
        return refuse(
            libc::EINVAL,
            "Listen with a descriptor that is not a SEQPACKET socket",
        );
    }
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

/// Forget client `c`: close its files, drop its leases, and shut its
/// connections (a cut-off client sees them end).
fn drop_client(sh: &Shared, c: u64, why: &str) {
    let rec = {
        let mut t = sh.table.lock();
        for holders in t.leases.values_mut() {
            holders.remove(&c);
        }
        t.clients.remove(&c)
    };
    if let Some(rec) = rec {
        tracing::debug!("client {c} (pid {}): {why}", rec.pid);
        let _ = rustix::net::shutdown(&*rec.sock, rustix::net::Shutdown::Both);
        if let Some(cb) = &rec.callback {
            let _ = rustix::net::shutdown(&*cb.lock(), rustix::net::Shutdown::Both);
        }
        // Its files close here (an unlinked one is freed with its last handle).
        drop(rec);
    }
}

/// The lock a change of inode `ino`'s layout holds (see `Shared::changing`).
fn change_lock(sh: &Shared, ino: u64) -> Arc<Mutex<()>> {
    sh.changing.lock().entry(ino).or_default().clone()
}

/// Before a change of inode `ino`'s layout (the caller holds its change
/// lock): end every lease on it. Each holder is sent `Recall` on its
/// callback channel and must answer `Recalled` within the recall timeout,
/// after dropping its layout and waiting for its reads in flight; a holder
/// that does not is cut off.
fn recall(sh: &Shared, ino: u64) {
    let (epoch, holders) = {
        let mut t = sh.table.lock();
        let set = t.leases.remove(&ino).unwrap_or_default();
        let e = t.epochs.entry(ino).or_insert(1);
        let epoch = *e;
        *e += 1;
        let holders: Vec<(u64, Option<Arc<Mutex<OwnedFd>>>)> = set
            .into_iter()
            .map(|c| (c, t.clients.get(&c).and_then(|r| r.callback.clone())))
            .collect();
        (epoch, holders)
    };
    for (c, cb) in holders {
        let answered = cb.is_some_and(|cb| {
            let ch = cb.lock();
            recall_one(ch.as_fd(), ino, epoch, sh.recall_timeout)
        });
        if !answered {
            tracing::warn!("client {c} did not answer the recall of inode {ino}: cut off");
            drop_client(sh, c, "cut off: no answer to a recall");
        }
    }
}

/// Send one recall and wait for its answer.
fn recall_one(ch: std::os::fd::BorrowedFd<'_>, ino: u64, epoch: u64, timeout: Duration) -> bool {
    if wire::send(ch, &Reply::Recall { ino, epoch }.encode(0), None).is_err() {
        return false;
    }
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !wire::wait_readable(ch, left.as_millis().max(1) as i32).unwrap_or(false)
        {
            return false;
        }
        match wire::recv(ch) {
            Ok(Some((m, _))) => match Request::decode(&m) {
                Ok((_, Request::Recalled { ino: i, epoch: e })) if i == ino && e == epoch => {
                    return true
                }
                // An answer to an earlier recall that timed out: skip it.
                Ok((_, Request::Recalled { .. })) => continue,
                _ => return false,
            },
            _ => return false,
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
) -> std::result::Result<(Reply, OwnedFd), Reply> {
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
    // A read-only client gets a read-only open of the device (its own open
    // file description), never the owner's read-write one.
    let fd = if write {
        map.fd.try_clone_to_owned()
    } else {
        std::fs::File::open(format!("/proc/self/fd/{}", map.fd.as_raw_fd())).map(OwnedFd::from)
    };
    let fd = fd.map_err(|e| Reply::Error {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        message: format!("device fd: {e}"),
    })?;
    tracing::debug!("admitted pid {pid} (uid {uid})");
    Ok((
        Reply::Hello {
            version: proto::VERSION,
            uuid: sh.fs.superblock().uuid,
            read_only: !write || sh.fs.is_read_only(),
            client: 0,
        },
        fd,
    ))
}

fn path_of(p: &[u8]) -> Result<&str> {
    std::str::from_utf8(p).map_err(|_| Error::Invalid("path is not UTF-8"))
}

/// Answer one request of client `c` (after its `Hello`).
fn answer(sh: &Shared, c: u64, req: Request) -> Reply {
    let fs = &sh.fs;
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
            Request::Stat { path } => Reply::Attr(attr(&fs.stat(path_of(&path)?)?)),
            Request::ReadDir { path, from } => entries(fs.read_dir(path_of(&path)?)?, from),
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
                write,
                create,
                mode,
            } => {
                let f = fs.open(
                    path_of(&path)?,
                    &OpenOptions {
                        read: true,
                        write,
                        create,
                        mode,
                        ..Default::default()
                    },
                )?;
                let a = attr(&f.stat()?);
                let mut t = sh.table.lock();
                let rec = t.clients.get_mut(&c).ok_or(Error::BadFd)?;
                let handle = rec.next_handle;
                rec.next_handle += 1;
                rec.handles.insert(handle, Arc::new(f));
                Reply::Opened { handle, attr: a }
            }
            Request::Close { handle } => {
                let mut t = sh.table.lock();
                let rec = t.clients.get_mut(&c).ok_or(Error::BadFd)?;
                let f = rec.handles.remove(&handle).ok_or(Error::BadFd)?;
                let ino = f.ino();
                if !rec.handles.values().any(|g| g.ino() == ino) {
                    if let Some(h) = t.leases.get_mut(&ino) {
                        h.remove(&c);
                    }
                }
                drop(t);
                drop(f);
                Reply::Done
            }
            Request::Lease { handle, from_blk } => lease(sh, c, handle, from_blk)?,
            Request::Fsync { handle } => {
                file_of(sh, c, handle)?.fsync()?;
                Reply::Done
            }
            Request::Touch { handle, mtime_ns } => {
                file_of(sh, c, handle)?.set_times(None, Some(mtime_ns))?;
                Reply::Done
            }
            Request::Truncate { handle, size } => {
                let f = file_of(sh, c, handle)?;
                let lock = change_lock(sh, f.ino());
                let _g = lock.lock();
                recall(sh, f.ino());
                f.set_len(size)?;
                Reply::Done
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                let f = file_of(sh, c, handle)?;
                let lock = change_lock(sh, f.ino());
                let _g = lock.lock();
                if changes_layout(&f, offset, data.len() as u64) {
                    recall(sh, f.ino());
                }
                let n = f.write_at(&data, offset)?;
                Reply::Written { n: n as u64 }
            }
        })
    })();
    r.unwrap_or_else(|e| Reply::Error {
        errno: e.errno(),
        message: e.to_string(),
    })
}

/// Client `c`'s open file `handle` (another handle to it: the table lock is
/// not held while the file is used).
fn file_of(sh: &Shared, c: u64, handle: u64) -> Result<Arc<File>> {
    let t = sh.table.lock();
    let f = t
        .clients
        .get(&c)
        .and_then(|r| r.handles.get(&handle))
        .ok_or(Error::BadFd)?;
    Ok(f.clone())
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

/// A layout lease for client `c` on its file `handle`, from block `from` on.
fn lease(sh: &Shared, c: u64, handle: u64, from: u64) -> Result<Reply> {
    let f = file_of(sh, c, handle)?;
    let ino = f.ino();
    let lock = change_lock(sh, ino);
    let _g = lock.lock();
    let epoch = {
        let mut t = sh.table.lock();
        if t.clients.get(&c).is_none_or(|r| r.callback.is_none()) {
            return Err(Error::Invalid("a lease needs a callback channel (Listen)"));
        }
        t.leases.entry(ino).or_default().insert(c);
        *t.epochs.entry(ino).or_insert(1)
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
    }
}

fn totals(s: &StatFs) -> Totals {
    Totals {
        block_size: s.block_size,
        total_blocks: s.total_blocks,
        data_blocks: s.data_blocks,
        free_blocks: s.free_blocks,
        inodes: s.inodes,
    }
}

/// The entries from index `from` on that fit one reply.
fn entries(all: Vec<DirEntry>, from: u64) -> Reply {
    let mut room = proto::ENTRIES_ROOM;
    let mut out = Vec::new();
    let mut next = None;
    for (i, d) in all.into_iter().enumerate().skip(from as usize) {
        let e = Entry {
            name: d.name.into_bytes(),
            ino: d.ino,
            kind: d.file_type,
        };
        let n = proto::entry_bytes(&e);
        if n > room {
            next = Some(i as u64);
            break;
        }
        room -= n;
        out.push(e);
    }
    Reply::Entries { entries: out, next }
}
