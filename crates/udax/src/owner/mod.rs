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

use crate::fs::{DirEntry, Error, Fs, Result, Stat, StatFs};
use crate::proto::{self, wire, Attr, Entry, Reply, Request, Totals};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            idle: Some(Duration::from_secs(30)),
            runtime_dir: None,
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
                    serve_client(&shared, &s);
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

/// Serve one client until it disconnects or breaks the protocol's order.
fn serve_client(sh: &Shared, sock: &OwnedFd) {
    let Ok((pid, uid, gid)) = wire::peer(sock.as_fd()) else {
        return;
    };
    let mut hello = false;
    loop {
        let msg = match wire::recv(sock.as_fd()) {
            Ok(Some((m, _fd))) => m, // a descriptor from a client is dropped
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("client {pid}: {e}");
                let r = Reply::Error {
                    errno: libc::EMSGSIZE,
                    message: e.to_string(),
                };
                if wire::send(sock.as_fd(), &r.encode(0), None).is_err() {
                    return;
                }
                continue;
            }
        };
        let (id, req) = match Request::decode(&msg) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("client {pid}: {e}");
                let r = Reply::Error {
                    errno: libc::EPROTO,
                    message: e.to_string(),
                };
                if wire::send(sock.as_fd(), &r.encode(0), None).is_err() {
                    return;
                }
                continue;
            }
        };
        let sent = match req {
            Request::Hello { version, write } if !hello => {
                match admit(sh, pid, uid, gid, version, write) {
                    Ok((reply, fd)) => {
                        hello = true;
                        wire::send(sock.as_fd(), &reply.encode(id), Some(fd.as_fd()))
                    }
                    Err(reply) => {
                        let _ = wire::send(sock.as_fd(), &reply.encode(id), None);
                        return;
                    }
                }
            }
            _ if !hello => {
                let r = Reply::Error {
                    errno: libc::EPROTO,
                    message: "the first message must be Hello".into(),
                };
                let _ = wire::send(sock.as_fd(), &r.encode(id), None);
                return;
            }
            req => wire::send(sock.as_fd(), &answer(&sh.fs, req).encode(id), None),
        };
        if sent.is_err() {
            return;
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
        },
        fd,
    ))
}

fn path_of(p: &[u8]) -> Result<&str> {
    std::str::from_utf8(p).map_err(|_| Error::Invalid("path is not UTF-8"))
}

/// Answer one request (after `Hello`) from the file system.
fn answer(fs: &Fs, req: Request) -> Reply {
    let r: Result<Reply> = (|| {
        Ok(match req {
            Request::Hello { .. } => {
                return Err(Error::Invalid("Hello sent twice"));
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
        })
    })();
    r.unwrap_or_else(|e| Reply::Error {
        errno: e.errno(),
        message: e.to_string(),
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
