//! A client of a device's owner (docs/multiprocess.md): connects to the
//! owner's socket (starting an owner if none runs and the caller asks for
//! it), is admitted with the device fd, and sends the owner every change of
//! metadata.
//!
//! Metadata calls are one round trip each (no attribute leases yet). File
//! data is read straight from the device under a layout lease that the
//! owner recalls before the layout changes ([`RemoteFile`], `file.rs`); a
//! listener thread answers the recalls. Writes go through the owner. See
//! docs/multiprocess.md, "What exists today".

mod file;

pub use file::RemoteFile;

use crate::device::DeviceView;
use crate::format::{Superblock, SUPERBLOCK_SIZE};
use crate::fs::{DirEntry, Error, Result, Stat, StatFs};
use crate::owner;
use crate::proto::{self, wire, Attr, Reply, Request};
use crate::sync::{AtomicU64, Mutex, Ordering};
use file::FileState;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Ask for write access (the device fd is then read-write).
    pub write: bool,
    /// If no owner runs, start one with this command (`udax`, or a path to
    /// it), as `CMD serve DEVICE`, and wait for it; `None`: fail instead.
    pub start: Option<PathBuf>,
    /// Where the owner's socket is (default: [`owner::runtime_dir`]).
    pub runtime_dir: Option<PathBuf>,
    /// How long to wait for a started owner to answer.
    pub start_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            write: true,
            start: None,
            runtime_dir: None,
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection to a device's owner.
#[derive(Debug)]
pub struct Client {
    inner: Arc<Inner>,
    /// This end of the callback channel (shut down to stop the listener).
    callback: Arc<OwnedFd>,
    listener: Option<std::thread::JoinHandle<()>>,
}

/// What a client's files and its listener share.
#[derive(Debug)]
struct Inner {
    /// The socket and the next request id: one request in flight at a time.
    sock: Mutex<(OwnedFd, u64)>,
    device: OwnedFd,
    /// The device mapped read-only, for reads under a lease (`None` where
    /// the device cannot be mapped that way).
    view: Option<DeviceView>,
    uuid: [u8; 16],
    read_only: bool,
    /// Open files by inode, for the listener's recalls.
    files: Mutex<HashMap<u64, Vec<Weak<FileState>>>>,
    /// Recalls answered (for tests and statistics).
    recalls: AtomicU64,
}

/// The UUID of the file system on the device at `path`, read from its
/// primary superblock without taking the device lock.
pub fn uuid_of(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(Error::Io)?;
    let len = f.metadata().map_err(Error::Io)?.len();
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    f.read_exact_at(&mut buf, 0).map_err(Error::Io)?;
    let sb = Superblock::decode(&buf, 0, len / crate::BLOCK_SIZE)?;
    Ok(sb.uuid_str())
}

fn not_connected(what: String) -> Error {
    Error::NotConnected(what)
}

impl Client {
    /// Connect to the owner of the device at `path`.
    pub fn connect(path: &Path, opts: &ConnectOptions) -> Result<Client> {
        let uuid = uuid_of(path)?;
        let dir = opts.runtime_dir.clone().unwrap_or_else(owner::runtime_dir);
        let sock_path = owner::socket_path(&dir, &uuid);
        let sock = match wire::connect(&sock_path) {
            Ok(s) => s,
            Err(e) => match &opts.start {
                Some(cmd) => start_owner(cmd, path, &dir, &uuid, &sock_path, opts.start_timeout)?,
                None => {
                    return Err(not_connected(format!(
                        "no owner serves {} ({}: {e}); start one with `udax serve {}`",
                        path.display(),
                        sock_path.display(),
                        path.display()
                    )))
                }
            },
        };
        let c = Client::hello(sock, opts.write)?;
        // The owner at this UUID's socket must serve this very device: the
        // fd it sent is the file at `path` (a copy of an image has the same
        // UUID).
        let got = rustix::fs::fstat(&c.inner.device).map_err(|e| Error::Io(e.into()))?;
        let want = std::fs::metadata(path).map_err(Error::Io)?;
        if (got.st_dev, got.st_ino) != (want.dev(), want.ino()) {
            return Err(not_connected(format!(
                "the owner at {} serves another device with the same UUID",
                sock_path.display()
            )));
        }
        Ok(c)
    }

    /// Connect to the owner listening at `socket` (no device check).
    pub fn connect_socket(socket: &Path, write: bool) -> Result<Client> {
        let s = wire::connect(socket)
            .map_err(|e| not_connected(format!("{}: {e}", socket.display())))?;
        Client::hello(s, write)
    }

    fn hello(sock: OwnedFd, write: bool) -> Result<Client> {
        let req = Request::Hello {
            version: proto::VERSION,
            write,
        };
        wire::send(sock.as_fd(), &req.encode(0), None).map_err(Error::Io)?;
        let (msg, fd) = wire::recv(sock.as_fd())
            .map_err(Error::Io)?
            .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
        match Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))? {
            (
                _,
                Reply::Hello {
                    uuid,
                    read_only,
                    client,
                    ..
                },
            ) => {
                let device = fd.ok_or_else(|| not_connected("no device fd with Hello".into()))?;
                let view = device
                    .try_clone()
                    .ok()
                    .and_then(|fd| DeviceView::map(fd, None).ok());
                let inner = Arc::new(Inner {
                    sock: Mutex::new((sock, 1)),
                    device,
                    view,
                    uuid,
                    read_only,
                    files: Mutex::new(HashMap::new()),
                    recalls: AtomicU64::new(0),
                });
                let (callback, listener) = file::listen(&inner, client)?;
                Ok(Client {
                    inner,
                    callback,
                    listener: Some(listener),
                })
            }
            (_, Reply::Error { errno, message }) => Err(Error::from_remote(errno, message)),
            (_, other) => Err(not_connected(format!(
                "unexpected reply to Hello: {other:?}"
            ))),
        }
    }

    /// The device, as the owner handed it over.
    pub fn device_fd(&self) -> BorrowedFd<'_> {
        self.inner.device.as_fd()
    }

    /// The file system's UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.inner.uuid
    }

    /// Whether the owner admitted this client read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Recalls this client has answered.
    pub fn recalls(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.inner.recalls.load(Ordering::Relaxed)
    }

    /// Open the file at `path` (creating it with `mode` if `create`). Its
    /// data is read straight from the device under a layout lease; writes
    /// go through the owner.
    pub fn open(&self, path: &str, write: bool, create: bool, mode: u32) -> Result<RemoteFile> {
        RemoteFile::open(&self.inner, path, write, create, mode)
    }

    fn call(&self, req: &Request) -> Result<Reply> {
        self.inner.call(req)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The listener sees its channel end and exits; files still open keep
        // the connection (they hold `inner`) but get no more recalls, so
        // their reads go to the owner for a fresh lease each time.
        let _ = rustix::net::shutdown(&*self.callback, rustix::net::Shutdown::Both);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    /// One request and its reply.
    fn call(&self, req: &Request) -> Result<Reply> {
        let mut g = self.sock.lock();
        let id = g.1;
        g.1 += 1;
        wire::send(g.0.as_fd(), &req.encode(id), None)
            .map_err(|e| not_connected(format!("owner: {e}")))?;
        let (msg, _) = wire::recv(g.0.as_fd())
            .map_err(|e| not_connected(format!("owner: {e}")))?
            .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
        let (rid, rep) = Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))?;
        if let Reply::Error { errno, message } = rep {
            return Err(Error::from_remote(errno, message));
        }
        if rid != id {
            return Err(not_connected(format!("reply {rid} to request {id}")));
        }
        Ok(rep)
    }
}

impl Client {
    fn done(&self, req: Request) -> Result<()> {
        match self.call(&req)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A round trip to the owner; returns how long it took.
    pub fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        match self.call(&Request::Ping)? {
            Reply::Pong => Ok(t.elapsed()),
            other => Err(unexpected(other)),
        }
    }

    pub fn stat(&self, path: &str) -> Result<Stat> {
        match self.call(&Request::Stat {
            path: path.as_bytes().to_vec(),
        })? {
            Reply::Attr(a) => Ok(stat(&a)),
            other => Err(unexpected(other)),
        }
    }

    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let r = self.call(&Request::ReadDir {
                path: path.as_bytes().to_vec(),
                from,
            })?;
            let Reply::Entries { entries, next } = r else {
                return Err(unexpected(r));
            };
            for e in entries {
                out.push(DirEntry {
                    name: String::from_utf8(e.name)
                        .map_err(|_| not_connected("a name that is not UTF-8".into()))?,
                    ino: e.ino,
                    file_type: e.kind,
                });
            }
            match next {
                Some(n) if n > from => from = n,
                Some(_) => return Err(not_connected("read_dir made no progress".into())),
                None => return Ok(out),
            }
        }
    }

    /// Totals of the file system (the metadata fields are not reported
    /// through the owner and read 0).
    pub fn statfs(&self) -> Result<StatFs> {
        match self.call(&Request::StatFs)? {
            Reply::Totals(t) => Ok(StatFs {
                block_size: t.block_size,
                total_blocks: t.total_blocks,
                data_blocks: t.data_blocks,
                free_blocks: t.free_blocks,
                inodes: t.inodes,
                metadata_bytes: 0,
                metadata_capacity: 0,
            }),
            other => Err(unexpected(other)),
        }
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> Result<()> {
        self.done(Request::Mkdir {
            path: path.as_bytes().to_vec(),
            mode,
        })
    }

    /// Create an empty regular file (`Exists` if the name is taken).
    pub fn create(&self, path: &str, mode: u32) -> Result<()> {
        self.done(Request::Create {
            path: path.as_bytes().to_vec(),
            mode,
        })
    }

    pub fn unlink(&self, path: &str) -> Result<()> {
        self.done(Request::Unlink {
            path: path.as_bytes().to_vec(),
        })
    }

    pub fn rmdir(&self, path: &str) -> Result<()> {
        self.done(Request::Rmdir {
            path: path.as_bytes().to_vec(),
        })
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.done(Request::Rename {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        })
    }
}

fn unexpected(r: Reply) -> Error {
    not_connected(format!("unexpected reply {r:?}"))
}

fn stat(a: &Attr) -> Stat {
    Stat {
        ino: a.ino,
        mode: a.mode,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        blksize: a.blksize,
        atime_ns: a.atime_ns,
        mtime_ns: a.mtime_ns,
        ctime_ns: a.ctime_ns,
        btime_ns: a.btime_ns,
    }
}

/// Start an owner with `cmd serve DEVICE` (which returns once its socket
/// answers) unless another starter does so first: starters serialise on the
/// UUID's lock file, and each tries to connect again once it holds it.
fn start_owner(
    cmd: &Path,
    path: &Path,
    dir: &Path,
    uuid: &str,
    sock_path: &Path,
    timeout: Duration,
) -> Result<OwnedFd> {
    owner::make_runtime_dir(dir).map_err(Error::Io)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(owner::start_lock_path(dir, uuid))
        .map_err(Error::Io)?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::Io(e.into()))?;
    if let Ok(s) = wire::connect(sock_path) {
        return Ok(s);
    }
    let out = std::process::Command::new(cmd)
        .arg("serve")
        .arg(path)
        .env("UDAX_RUNTIME_DIR", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| not_connected(format!("starting `{} serve`: {e}", cmd.display())))?;
    if !out.status.success() {
        return Err(not_connected(format!(
            "`{} serve {}` failed: {}",
            cmd.display(),
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let t = Instant::now();
    loop {
        match wire::connect(sock_path) {
            Ok(s) => return Ok(s),
            Err(e) if t.elapsed() > timeout => {
                return Err(not_connected(format!(
                    "the started owner does not answer at {}: {e}",
                    sock_path.display()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
