//! A client of a device's owner (docs/multiprocess.md): connects to the
//! owner's socket (starting an owner if none runs and the caller asks for
//! it), is admitted with the device fd, and sends the owner every change of
//! metadata.
//!
//! Metadata calls are one round trip each (no attribute leases yet). File
//! data is read and overwritten straight on the device, and mapped with
//! this process's own fault engine, under a layout lease that the owner
//! recalls before the layout changes ([`RemoteFile`], [`RemoteMapping`],
//! `file.rs`); a listener thread answers the recalls. Growth and hole
//! fills go through the owner. See docs/multiprocess.md, "What exists
//! today".

mod file;
mod fork;
pub mod mount;

pub use file::{RemoteFile, RemoteMapping};

use crate::dax::DaxDevice;
use crate::device::Device;
use crate::format::SUPERBLOCK_SIZE;
use crate::fs::perm::Cred;
use crate::fs::{DirEntry, DirPage, Error, Rename, Result, Stat, StatFs};
use crate::owner;
use crate::proto::calls::{self, CallPage};
use crate::proto::ring::{Caught, Rec, Ring};
use crate::proto::{self, wire, Attr, Reply, Request, Target};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
use file::Node;
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
    /// For tests: run between the owner's answer to a change of names
    /// and the caching of what its paths show (`Reply::Changed`), where
    /// another process's change may come in.
    #[doc(hidden)]
    pub before_seeding: Option<fn()>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            write: true,
            start: None,
            runtime_dir: None,
            start_timeout: Duration::from_secs(10),
            before_seeding: None,
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
    /// The main connection: one request waited for at a time.
    sock: Mutex<Conn>,
    /// The fault channel: calls made by faults with the file's locks held
    /// (`Iomap`), which the owner answers without waiting on a change.
    fault: Mutex<Conn>,
    /// A lock was asked for, handed over or adopted, or a description
    /// shared, by this process: its closes are all waited for (see
    /// `Open::drop`).
    closes_waited: AtomicBool,
    /// Requests sent without waiting for their replies (a statistic).
    unanswered: AtomicU64,
    device: OwnedFd,
    /// The device mapped whole (read-only for a read-only client), for
    /// reads and writes under a lease; `None` where it cannot be mapped.
    dev: Option<Arc<dyn Device>>,
    /// The mapping state of the device in this process (wait queues, page
    /// references of pins, counters), for mmap.
    dax: Option<DaxDevice>,
    uuid: [u8; 16],
    read_only: bool,
    /// Open files by inode (lease and mapping state), for the listener's
    /// recalls.
    files: Mutex<HashMap<u64, Weak<Node>>>,
    /// Recalls answered (for tests and statistics).
    recalls: AtomicU64,
    /// Callbacks that named a file this process had no node for (counted
    /// under the `files` lock): a layout that came with an open in flight
    /// meanwhile is not trusted (`RemoteFile::opened`).
    unclaimed: AtomicU64,
    /// The `Client` is being dropped: its listener's channel ends by its
    /// own hand, not the owner's (the files still open keep the
    /// connection).
    letting_go: AtomicBool,
    /// The owner ended the connection and every file was ended
    /// (`file::end_all`; set under the `files` lock).
    ended: AtomicBool,
    /// The owner gives no size grants (format 2, or it is gone): growing
    /// writes go to it (`RemoteFile::grow_granted`).
    no_grants: AtomicBool,
    /// Requests sent (for tests and statistics).
    requests: AtomicU64,
    /// Attributes from `stat`, by path, kept until the owner's change log
    /// names something they depend on.
    attrs: Mutex<AttrCache>,
    /// The owner's change log, mapped read-only.
    ring: Ring,
    /// The totals of the first `statfs` (the changing ones are then read
    /// from the change log's memory).
    totals: std::sync::OnceLock<proto::Totals>,
    /// [`ConnectOptions::before_seeding`].
    before_seeding: Option<fn()>,
    /// The process this connection was made in (`client::fork`).
    born: u32,
    /// This connection let go of the device in a forked child.
    left: AtomicBool,
}

/// Cached attributes, and a generation that every drop not read from the
/// change log bumps (a `stat` answered across such a drop is not cached;
/// across records of the log, only if one of them names what the answer
/// depends on: [`AttrCache::keeps`]).
#[derive(Debug, Default)]
struct AttrCache {
    gen: u64,
    /// Records of the owner's change log applied.
    seen: u64,
    /// Attributes by path (`None`: the path names nothing, ENOENT).
    map: Attrs,
    /// Directory listings, by path (kept under the same rule).
    dirs: HashMap<String, (Vec<DirEntry>, Deps)>,
    /// Pages of directory listings, by path and cookie (the same).
    pages: HashMap<(String, u64), (DirPage, Deps)>,
    /// The callback channel ended (no owner to say when to drop): keep
    /// nothing any more.
    closed: bool,
    /// The credentials the answers by path were asked with (the search
    /// permission on the way, the read permission on a directory listed,
    /// decided them): a lookup with others drops them first.
    who: Option<Cred>,
}

/// The keys of the names an answer's path walk looked up (`Walked`; a
/// listing's also the directory's listing key): it stays cached until a
/// change names one of them. `None`: not known (an answer without them),
/// dropped by any change of names.
type Deps = Option<Box<[u64]>>;

/// Where an attribute cache stood when an answer was asked for
/// ([`AttrCache::keeps`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark {
    gen: u64,
    seen: u64,
}

/// Paths whose attributes (and directories whose listings) a client keeps
/// at most.
const ATTRS_KEPT: usize = 4096;

/// Entries of a directory listing a client keeps at most (a bigger one is
/// asked again each time).
const DIR_ENTRIES_KEPT: usize = 16384;

/// Pages of listings a client keeps at most, and entries in a page kept.
const PAGES_KEPT: usize = 1024;
const PAGE_ENTRIES_KEPT: usize = 1024;

impl AttrCache {
    /// Before a lookup with credentials `me`: answers asked with others go.
    fn asked_as(&mut self, me: &Cred) {
        if self.who.as_ref() != Some(me) {
            self.drop_all();
            self.who = Some(me.clone());
        }
    }

    /// Where this cache stands, before an answer to keep is asked for.
    fn mark(&self) -> Mark {
        Mark {
            gen: self.gen,
            seen: self.seen,
        }
    }

    /// Whether an answer asked for at `mark`, which depends on the names
    /// `deps` (and on inode `ino`'s attributes), is still the owner's, so
    /// that it may be kept: no local drop since, and no record of the
    /// change log since names one of them (a change the owner made after
    /// answering is logged after it: its record is read here, or by the
    /// next catch-up, which drops the answer then).
    fn keeps(&self, ring: &Ring, mark: Mark, deps: &Deps, ino: Option<u64>) -> bool {
        !self.closed && self.gen == mark.gen && untouched_since(ring, mark.seen, deps, ino)
    }

    /// Whether an answer the owner gave as of its change log's record
    /// `at` (a `Changed` seed: the records before `at`, its own change's
    /// among them, are in it), asked for at `mark`, may be kept: this cache
    /// has applied every record before `at` (none of them can drop it
    /// later), there was no local drop since `mark`, and no record from
    /// `at` on names what it depends on ([`AttrCache::keeps`] from `at`).
    fn keeps_from(&self, ring: &Ring, mark: Mark, at: u64, deps: &Deps, ino: Option<u64>) -> bool {
        self.seen >= at
            && self.keeps(
                ring,
                Mark {
                    gen: mark.gen,
                    seen: at,
                },
                deps,
                ino,
            )
    }

    /// Keep what the paths of a change of names this client made show
    /// (`seeds`, as of record `at` of the change log; asked for at `mark`
    /// with credentials `me`, the paths sent being `sent`): each seed's
    /// `lstat` answer, its `stat` answer too unless it is a symbolic link
    /// (the walk is then the same), and the file's `fstat` answer.
    fn seed(
        &mut self,
        ring: &Ring,
        mark: Mark,
        me: &Cred,
        at: u64,
        seeds: Vec<proto::Seed>,
        sent: &[&[u8]],
    ) {
        if self.who.as_ref() != Some(me) {
            return;
        }
        for seed in seeds {
            let Some(path) = sent
                .iter()
                .find(|p| p[..] == seed.path[..])
                .and_then(|p| std::str::from_utf8(p).ok())
            else {
                continue;
            };
            let s = seed.attr.as_ref().map(stat);
            let deps: Deps = Some(seed.deps.into_boxed_slice());
            if !self.keeps_from(ring, mark, at, &deps, s.map(|s| s.ino)) {
                continue;
            }
            if self.map.len() + 3 > ATTRS_KEPT {
                self.map.clear();
            }
            let link = s.is_some_and(|s| s.mode & libc::S_IFMT == libc::S_IFLNK);
            if let Some(s) = s.filter(|_| !link) {
                self.map
                    .insert(file::fstat_key(s.ino), (Some(s), Some(Box::default())));
            }
            if !link {
                self.map.insert(path.to_string(), (s, deps.clone()));
            }
            self.map.insert(lstat_key(path), (s, deps));
        }
    }

    fn drop_all(&mut self) {
        self.gen += 1;
        self.map.clear();
        self.dirs.clear();
        self.pages.clear();
    }

    /// A change of inode `ino`'s data or attributes alone: its attributes
    /// go (under every path they were cached by); listings stay (they show
    /// names and inode numbers only).
    fn drop_ino(&mut self, ino: u64) {
        self.gen += 1;
        self.map.drop_ino(ino);
    }

    /// Apply the records of the owner's change log `ring` not applied yet.
    fn catch_up(&mut self, ring: &Ring) {
        let (to, recs) = match ring.since(self.seen) {
            Caught::Records { to, recs } => (to, recs),
            Caught::Lapped { to } => (to, vec![Rec::All]),
        };
        self.seen = to;
        if recs.is_empty() {
            return;
        }
        if recs.contains(&Rec::All) {
            return self.drop_all();
        }
        let (mut names, mut inos) = (Vec::new(), Vec::new());
        for r in recs {
            match r {
                Rec::Name(k) => names.push(k),
                Rec::Ino(i) => inos.push(i),
                Rec::All => {}
            }
        }
        self.drop_names(&names, &inos);
    }

    /// A change of names: the answers whose walks looked up one of `names`
    /// go, and the attributes of `inos`.
    fn drop_names(&mut self, names: &[u64], inos: &[u64]) {
        if self.map.is_empty() && self.dirs.is_empty() && self.pages.is_empty() {
            return;
        }
        let hit = |deps: &Deps| {
            !names.is_empty()
                && deps
                    .as_ref()
                    .is_none_or(|d| d.iter().any(|k| names.contains(k)))
        };
        self.map.drop_names(names, inos);
        if !names.is_empty() {
            self.dirs.retain(|_, (_, d)| !hit(d));
            self.pages.retain(|_, (_, d)| !hit(d));
        }
    }
}

/// Cached attributes by key (a path, or a key of `lstat` or `fstat`),
/// indexed by the names each depends on and by inode, so that a record of
/// the change log drops its answers without a walk over all of them (a
/// walk per record batch, over up to [`ATTRS_KEPT`] answers, cost ~20 us
/// a request once creates filled the cache). An index may list a key whose
/// answer changed or went since (dropping it then only costs a miss); it
/// is rebuilt when such references pile up.
#[derive(Debug, Default)]
struct Attrs {
    map: HashMap<String, (Option<Stat>, Deps)>,
    /// Keys of the answers that depend on each name key.
    by_name: HashMap<u64, Vec<String>>,
    /// Keys of the answers that depend on any name (deps not known).
    any_name: Vec<String>,
    /// Keys of the answers that show each inode.
    by_ino: HashMap<u64, Vec<String>>,
    /// References in the indexes (stale ones included).
    refs: usize,
}

impl Attrs {
    fn get(&self, key: &str) -> Option<&(Option<Stat>, Deps)> {
        self.map.get(key)
    }

    #[cfg(test)]
    fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forget every answer, keeping the tables' room (a cache that fills
    /// and is cleared over and over does not grow its tables again each
    /// time).
    fn clear(&mut self) {
        self.map.clear();
        self.by_name.clear();
        self.any_name.clear();
        self.by_ino.clear();
        self.refs = 0;
    }

    fn insert(&mut self, key: String, v: (Option<Stat>, Deps)) {
        self.index(&key, &v);
        self.map.insert(key, v);
        if self.refs > 16 * ATTRS_KEPT {
            self.reindex();
        }
    }

    fn index(&mut self, key: &str, (s, deps): &(Option<Stat>, Deps)) {
        match deps {
            Some(d) => {
                for k in d.iter() {
                    self.by_name.entry(*k).or_default().push(key.to_string());
                }
                self.refs += d.len();
            }
            None => {
                self.any_name.push(key.to_string());
                self.refs += 1;
            }
        }
        if let Some(s) = s {
            self.by_ino.entry(s.ino).or_default().push(key.to_string());
            self.refs += 1;
        }
    }

    /// Rebuild the indexes from the answers kept (dropping stale keys).
    fn reindex(&mut self) {
        let map = std::mem::take(&mut self.map);
        self.clear();
        for (k, v) in &map {
            self.index(k, v);
        }
        self.map = map;
    }

    fn remove_all(&mut self, keys: Vec<String>) {
        for k in keys {
            self.map.remove(&k);
        }
    }

    /// Drop the answers that depend on one of `names`, and those that show
    /// one of `inos`.
    fn drop_names(&mut self, names: &[u64], inos: &[u64]) {
        if self.map.is_empty() {
            return;
        }
        if !names.is_empty() {
            let any = std::mem::take(&mut self.any_name);
            self.remove_all(any);
            for k in names {
                if let Some(keys) = self.by_name.remove(k) {
                    self.remove_all(keys);
                }
            }
        }
        for i in inos {
            self.drop_ino(*i);
        }
    }

    /// Drop the answers that show inode `ino`.
    fn drop_ino(&mut self, ino: u64) {
        if let Some(keys) = self.by_ino.remove(&ino) {
            self.remove_all(keys);
        }
    }
}

/// Whether `e`, from a `Hello`, says the owner went away under it (it
/// closed the connection or reset it) rather than refused the client.
fn went_away(e: &Error) -> bool {
    match e {
        Error::Io(io) => matches!(
            io.raw_os_error(),
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNREFUSED)
        ),
        Error::NotConnected(_) => true,
        _ => false,
    }
}

/// The UUID of the file system on the device at `path`, read from its
/// primary superblock without taking the device lock.
pub fn uuid_of(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(Error::Io)?;
    let len = f.metadata().map_err(Error::Io)?.len();
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    f.read_exact_at(&mut buf, 0).map_err(Error::Io)?;
    let sb = crate::format::v3::AnySuperblock::decode(&buf, 0, len / crate::BLOCK_SIZE)?;
    Ok(sb.uuid_str())
}

/// The descriptor the owner sends with `Done` to `req` on its socket
/// `sock` (`Ring`: its change log; `Calls`: a call page), named `what`.
fn shared_memory(sock: BorrowedFd<'_>, req: &Request, what: &str) -> Result<OwnedFd> {
    wire::send(sock, &req.encode(0), None).map_err(|e| not_connected(format!("owner: {e}")))?;
    let (msg, fd) = wire::recv(sock)
        .map_err(|e| not_connected(format!("owner: {e}")))?
        .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
    match Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))? {
        (_, Reply::Done) => fd.ok_or_else(|| not_connected(format!("no {what} with {req:?}"))),
        (_, Reply::Error { errno, message }) => Err(Error::from_remote(errno, message)),
        (_, other) => Err(unexpected(other)),
    }
}

/// The owner's change log, asked for on its socket `sock` (`Ring`).
fn change_log(sock: BorrowedFd<'_>) -> Result<Ring> {
    let fd = shared_memory(sock, &Request::Ring, "change log")?;
    Ring::attach(fd).map_err(|e| not_connected(format!("the owner's change log: {e}")))
}

/// A call page for the connection `sock` (`Calls`).
fn call_page(sock: BorrowedFd<'_>) -> Result<CallPage> {
    let fd = shared_memory(sock, &Request::Calls, "call page")?;
    CallPage::attach(fd).map_err(|e| not_connected(format!("the owner's call page: {e}")))
}

/// Whether the change log `ring` holds no record after the first `from`
/// that names one of `deps` (`None`: any name), inode `ino`, or
/// everything, and has not lapped `from`.
fn untouched_since(ring: &Ring, from: u64, deps: &Deps, ino: Option<u64>) -> bool {
    let Caught::Records { recs, .. } = ring.since(from) else {
        return false;
    };
    !recs.iter().any(|r| match *r {
        Rec::All => true,
        Rec::Name(k) => deps.as_ref().is_none_or(|d| d.contains(&k)),
        Rec::Ino(i) => Some(i) == ino,
    })
}

/// The attribute cache's key of `lstat(path)` (`stat`'s is the path).
fn lstat_key(path: &str) -> String {
    format!("\0l{path}")
}

/// An answer and the names its walk looked up, if it came `Walked`.
fn unwalked(r: Reply) -> (Reply, Deps) {
    match r {
        Reply::Walked { deps, then } => (*then, Some(deps.into_boxed_slice())),
        r => (r, None),
    }
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
        let mut c = Client::hello(sock, opts.write, opts.before_seeding);
        // The owner was exiting or dying as it took the connection (its
        // listening socket closed with it pending: ECONNRESET): start one,
        // as if none had answered, until the dying one is gone and its
        // clients have let go of the device (a start meanwhile finds the
        // device busy), for at most the start timeout.
        let t = Instant::now();
        while let (Err(e), Some(cmd)) = (&c, &opts.start) {
            if !went_away(e) || t.elapsed() > opts.start_timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            c = start_owner(cmd, path, &dir, &uuid, &sock_path, opts.start_timeout)
                .and_then(|sock| Client::hello(sock, opts.write, opts.before_seeding));
        }
        let c = c?;
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
        Client::hello(s, write, None)
    }

    fn hello(sock: OwnedFd, write: bool, before_seeding: Option<fn()>) -> Result<Client> {
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
                let dev = device
                    .try_clone()
                    .ok()
                    .and_then(|fd| crate::device::adopt(fd, None).ok());
                let callback = Arc::new(file::side_channel(
                    sock.as_fd(),
                    &Request::Listen { client },
                )?);
                let fault = file::side_channel(sock.as_fd(), &Request::Channel { client })?;
                let ring = change_log(sock.as_fd())?;
                let page = call_page(sock.as_fd())?;
                let inner = Arc::new(Inner {
                    sock: Mutex::new(Conn::with_page(sock, page)),
                    fault: Mutex::new(Conn::new(fault)),
                    closes_waited: AtomicBool::new(false),
                    unanswered: AtomicU64::new(0),
                    device,
                    dax: dev.clone().map(DaxDevice::new),
                    dev,
                    uuid,
                    read_only,
                    files: Mutex::new(HashMap::new()),
                    recalls: AtomicU64::new(0),
                    no_grants: AtomicBool::new(false),
                    letting_go: AtomicBool::new(false),
                    ended: AtomicBool::new(false),
                    unclaimed: AtomicU64::new(0),
                    requests: AtomicU64::new(0),
                    attrs: Mutex::new(AttrCache::default()),
                    ring,
                    totals: std::sync::OnceLock::new(),
                    before_seeding,
                    born: fork::pid(),
                    left: AtomicBool::new(false),
                });
                let listener = file::listen(&inner, &callback)?;
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

    /// In a child made by `fork` (its `pthread_atfork` child handler; never
    /// a `vfork` child, whose memory is the parent's): this copy of the
    /// parent's connection stops holding the device. Its device descriptors
    /// are made to name `/dev/null` and its whole-device mapping is made
    /// inaccessible, in this process only; so the child, which has no
    /// listener thread to let go at the owner's death, does not keep a new
    /// owner from starting (docs/multiprocess.md, "The device lock"). The
    /// child makes a connection of its own for its udax calls; nothing of it
    /// may read or write the device through this one afterwards.
    pub fn let_go_of_the_device_in_a_forked_child(&self) {
        self.inner.let_go_of_device();
    }

    /// Whether the owner ended this client's connection (it exited or
    /// died, or cut the client off): every call that needs it fails with
    /// `ENOTCONN` from then on. Seen by the callback listener, so a call
    /// made at the very moment of the death may still find this false.
    pub fn is_closed(&self) -> bool {
        self.inner.attrs.lock().closed
    }

    /// Whether the owner admitted this client read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Requests this client has sent to the owner on its main connection
    /// (a call answered from a cache or a lease sends none).
    pub fn requests(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Requests this client has sent to the owner through its main
    /// connection's call page (the rest went on the socket: the first
    /// few, and those that carry a descriptor).
    pub fn paged_requests(&self) -> u64 {
        self.inner.sock.lock().paged
    }

    /// Counters of this client's own fault engine on the device (PMD vs PTE
    /// mappings, zero pages, faults), or `None` if it cannot map it.
    pub fn dax_stats(&self) -> Option<crate::dax::VmStats> {
        self.inner.dax.as_ref().map(|d| d.stats())
    }

    /// Recalls this client has answered.
    pub fn recalls(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.inner.recalls.load(Ordering::Relaxed)
    }

    /// Requests sent without waiting for their replies (closes no other
    /// process can see happen), so far.
    pub fn unanswered_requests(&self) -> u64 {
        // ORDERING: Relaxed: a statistic.
        self.inner.unanswered.load(Ordering::Relaxed)
    }

    /// Open the file at `path` (creating it with `mode` if `create`). Its
    /// data is read straight from the device under a layout lease; writes
    /// go through the owner.
    pub fn open(&self, path: &str, write: bool, create: bool, mode: u32) -> Result<RemoteFile> {
        self.open_with(
            path,
            &crate::fs::OpenOptions {
                write,
                create,
                mode,
                ..Default::default()
            },
        )
    }

    /// Open with `open(2)`'s choices (`append` is the caller's: use
    /// [`RemoteFile::append`] for `O_APPEND` writes).
    pub fn open_with(&self, path: &str, opts: &crate::fs::OpenOptions) -> Result<RemoteFile> {
        RemoteFile::open(&self.inner, path, opts)
    }

    /// The current path of directory `ino`: `hint` if it still names it
    /// (from the attribute cache), else the owner's answer from the parent
    /// links (as [`crate::fs::Fs::dir_path`]).
    pub fn dir_path_of(&self, ino: u64, btime_ns: u64, hint: &str) -> Result<String> {
        if self
            .stat(hint)
            .is_ok_and(|s| s.ino == ino && s.btime_ns == btime_ns && s.is_dir())
        {
            return Ok(hint.to_string());
        }
        match self.call(&Request::DirPath {
            ino,
            btime_ns,
            hint: hint.as_bytes().to_vec(),
        })? {
            Reply::Path { path } => String::from_utf8(path)
                .map_err(|_| not_connected("a path that is not UTF-8".into())),
            other => Err(unexpected(other)),
        }
    }

    fn call(&self, req: &Request) -> Result<Reply> {
        self.inner.call(req)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.inner.this_process().is_err() {
            // A forked child's copy: the sockets are the parent's too (a
            // shutdown would end the parent's recalls), and the listener
            // thread is the parent's (it did not cross the fork).
            if let Some(t) = self.listener.take() {
                std::mem::forget(t);
            }
            return;
        }
        // The listener sees its channel end and exits; files still open keep
        // the connection (they hold `inner`) but get no more recalls, so
        // their reads go to the owner for a fresh lease each time.
        // ORDERING: Release: pairs with the listener's Acquire load once
        // the shutdown below ends its channel.
        self.inner.letting_go.store(true, Ordering::Release);
        let _ = rustix::net::shutdown(&*self.callback, rustix::net::Shutdown::Both);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

/// How long a caller polls for the owner's reply before it sleeps: most
/// requests are answered within a few us, and a sleeping thread's wake-up
/// costs ~40 us on these VMs (docs/performance.md, P10-rtt).
const REPLY_SPIN: Duration = Duration::from_micros(50);

impl Inner {
    /// Stop holding the device in this process: the whole-device mapping
    /// made inaccessible, the device descriptor made to name `/dev/null`
    /// ([`Device::let_go`]). Nothing may read or write the device through
    /// this connection afterwards.
    fn let_go_of_device(&self) {
        if let Some(d) = &self.dev {
            d.let_go();
        }
        if let Err(e) = crate::device::point_at_null(&self.device) {
            tracing::warn!("the device descriptor stays open: {e}");
        }
    }

    /// The attribute cache, up to date with the owner's change log.
    fn attrs_now(&self) -> crate::sync::MutexGuard<'_, AttrCache> {
        let mut c = self.attrs.lock();
        c.catch_up(&self.ring);
        c
    }

    /// Attributes cached under `key`, or asked with `req()` and cached;
    /// `me`: the caller's credentials, for a request that checks them.
    /// An answer by path (`me` given) without the names it depends on
    /// depends on all of them; one by handle on none.
    fn cached_stat(
        &self,
        key: &str,
        me: Option<&Cred>,
        req: impl FnOnce() -> Request,
    ) -> Result<Stat> {
        let mark = {
            let mut c = self.attrs_now();
            if let Some(me) = me {
                c.asked_as(me);
            }
            if let Some((s, _)) = c.map.get(key) {
                return s.ok_or(Error::NotFound);
            }
            c.mark()
        };
        let r = match me {
            Some(me) => self.call_as(&req(), me)?,
            None => self.call(&req())?,
        };
        let (r, deps) = unwalked(r);
        let deps = deps.or_else(|| me.is_none().then(Box::default));
        // A path that names nothing is kept too (the owner sends it only
        // with the names its walk looked up).
        let s = match r {
            Reply::Attr(a) => Some(stat(&a)),
            Reply::Error { errno, .. } if errno == libc::ENOENT && deps.is_some() => None,
            Reply::Error { errno, message } => return Err(Error::from_remote(errno, message)),
            other => return Err(unexpected(other)),
        };
        self.keep_stat(key, mark, s, deps);
        s.ok_or(Error::NotFound)
    }

    /// Cache `s`, the attributes under `key` asked for at `mark`, unless
    /// they may have changed since ([`AttrCache::keeps`]).
    pub(super) fn keep_stat(&self, key: &str, mark: Mark, s: Option<Stat>, deps: Deps) {
        let mut c = self.attrs_now();
        if c.keeps(&self.ring, mark, &deps, s.map(|s| s.ino)) {
            if c.map.len() >= ATTRS_KEPT {
                c.map.clear();
            }
            c.map.insert(key.to_string(), (s, deps));
        }
    }

    /// From now on this process waits for every close (it holds, or may
    /// hold, locks or descriptions another process sees released at a
    /// close).
    pub(super) fn wait_for_closes(&self) {
        // ORDERING: Relaxed: a close ordered after this (by the program's
        // own synchronization) reads it (coherence); one racing it may go
        // either way, as the two calls may in the kernel.
        self.closes_waited.store(true, Ordering::Relaxed);
    }

    /// The change log's count of records now (`Ring::head`).
    pub(super) fn log_head(&self) -> u64 {
        self.ring.head()
    }

    /// Whether the change log holds no record since `from` that names
    /// inode `ino` (nor one that names everything), and has not lapped it.
    pub(super) fn unchanged_since(&self, from: u64, ino: u64) -> bool {
        untouched_since(&self.ring, from, &Some(Box::default()), Some(ino))
    }

    /// Where the attribute cache stands, before an answer to keep is
    /// asked for ([`Inner::keep_stat`]).
    pub(super) fn attrs_mark(&self) -> Mark {
        self.attrs_now().mark()
    }

    /// One request and its reply, on the main connection; one the owner
    /// checks with the caller's credentials goes as the calling thread
    /// ([`Request::As`], [`Cred::of_this_thread`]).
    fn call(&self, req: &Request) -> Result<Reply> {
        if req.checks_permissions() {
            return self.call_as(req, &Cred::of_this_thread());
        }
        // ORDERING: Relaxed: a statistic.
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.call_on(&self.sock, req)
    }

    /// [`Inner::call`] as this thread, whose credentials are `me`.
    fn call_as(&self, req: &Request, me: &Cred) -> Result<Reply> {
        if me.groups.len() > proto::MAX_GROUPS {
            return Err(Error::Invalid(
                "more supplementary groups than the owner protocol carries (4096)",
            ));
        }
        let claimed = Request::As {
            claim: proto::Claim {
                tid: rustix::thread::gettid().as_raw_nonzero().get() as u32,
                uid: me.uid,
                gid: me.gid,
                groups: me.groups.clone(),
            },
            req: Box::new(req.clone()),
        };
        // A change of names: what its paths show comes with the answer
        // (`Changed`), kept if nothing changed them since.
        let sent = req.changed_paths();
        let mark = (!sent.is_empty()).then(|| {
            let mut c = self.attrs_now();
            c.asked_as(me);
            c.mark()
        });
        // ORDERING: Relaxed: a statistic.
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.call_on(&self.sock, &claimed)? {
            Reply::Changed { at, seeds, then } => {
                if let Some(mark) = mark {
                    if let Some(f) = self.before_seeding {
                        f();
                    }
                    self.attrs_now()
                        .seed(&self.ring, mark, me, at, seeds, &sent);
                }
                match *then {
                    Reply::Error { errno, message } => Err(Error::from_remote(errno, message)),
                    then => Ok(then),
                }
            }
            r => Ok(r),
        }
    }

    /// A request answered with `Done`.
    fn done(&self, req: &Request) -> Result<()> {
        match self.call(req)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// One request and its reply, on the fault channel.
    fn call_fault(&self, req: &Request) -> Result<Reply> {
        self.call_on(&self.fault, req)
    }

    /// The device mapped into this process.
    fn dev(&self) -> Result<&Arc<dyn Device>> {
        self.this_process()?;
        self.dev.as_ref().ok_or(Error::NotSupported(
            "data access through a device the client cannot map",
        ))
    }

    /// This connection is this process's: not one a forked child inherited
    /// (`client::fork`), which lets go of the device (the first time) and
    /// must not send on the parent's sockets.
    fn this_process(&self) -> Result<()> {
        if self.born == fork::pid() {
            return Ok(());
        }
        // ORDERING: Relaxed: letting go twice is harmless; this only
        // spares the second.
        if !self.left.swap(true, Ordering::Relaxed) {
            self.let_go_of_device();
        }
        Err(not_connected(
            "a connection of the parent process (this one was forked from it): connect anew".into(),
        ))
    }

    /// Whether this client may store to the device.
    fn writable(&self) -> bool {
        !self.read_only && self.dev.is_some()
    }

    /// One request and its reply on `sock` (a change `stat` may show is in
    /// the owner's change log before the answer: this client's cache reads
    /// it at its next look, as every other client's does).
    fn call_on(&self, sock: &Mutex<Conn>, req: &Request) -> Result<Reply> {
        self.this_process()?;
        Self::exchange(sock, req)
    }

    fn exchange(sock: &Mutex<Conn>, req: &Request) -> Result<Reply> {
        Self::exchange_fd(sock, req, None)
    }

    /// [`Inner::exchange`], with a descriptor sent along (SCM_RIGHTS).
    fn exchange_fd(sock: &Mutex<Conn>, req: &Request, fd: Option<BorrowedFd<'_>>) -> Result<Reply> {
        let mut g = sock.lock();
        let id = g.send(req, fd)?;
        loop {
            let msg = g.next_reply()?;
            let (rid, rep) = Reply::decode(&msg).map_err(|e| not_connected(e.to_string()))?;
            if rid != id && g.unanswered > 0 {
                // The reply to a request not waited for (sent before this
                // one, so answered before it): nothing waits for it.
                g.unanswered -= 1;
                if let Reply::Error { message, .. } = rep {
                    tracing::debug!("request {rid}, not waited for, failed: {message}");
                }
                continue;
            }
            if let Reply::Error { errno, message } = rep {
                return Err(Error::from_remote(errno, message));
            }
            if rid != id {
                return Err(not_connected(format!("reply {rid} to request {id}")));
            }
            return Ok(rep);
        }
    }

    /// Send `req` on the main connection without waiting for its reply:
    /// the next exchange reads and drops it first (the owner answers one
    /// connection's requests in order). Only for a request nothing needs
    /// the outcome of, before this process's next request.
    fn send_unanswered(&self, req: &Request) -> Result<()> {
        self.this_process()?;
        // ORDERING: Relaxed: a statistic.
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut g = self.sock.lock();
        g.send(req, None)?;
        g.unanswered += 1;
        // ORDERING: Relaxed: a statistic.
        self.unanswered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A connection to the owner: the socket, the next request id, how many
/// requests were sent without waiting for their replies (which come
/// before the reply to any later request), and the call page if the
/// connection has one: the number of the last request posted there and
/// whether its reply is still to be read, replies read ahead, and how
/// many requests went through it.
#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    next: u64,
    unanswered: u64,
    page: Option<CallPage>,
    posted: u64,
    waiting: bool,
    ahead: std::collections::VecDeque<Vec<u8>>,
    paged: u64,
}

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn {
            fd,
            next: 1,
            unanswered: 0,
            page: None,
            posted: 0,
            waiting: false,
            paged: 0,
            ahead: Default::default(),
        }
    }

    fn with_page(fd: OwnedFd, page: CallPage) -> Conn {
        Conn {
            page: Some(page),
            ..Conn::new(fd)
        }
    }

    /// Send `req` (and `fd` along) under the next id, which it returns: on
    /// the call page if the connection has one and no descriptor goes
    /// along (after reading the reply to the request posted there last, if
    /// not read yet), else on the socket. A request on the socket while
    /// one on the page waits is answered after it: the owner reads the
    /// page before it reads the socket.
    fn send(&mut self, req: &Request, fd: Option<BorrowedFd<'_>>) -> Result<u64> {
        let id = self.next;
        self.next += 1;
        let msg = req.encode(id);
        if self.waiting {
            // One request on the page at a time, and none on the socket
            // while one there is unanswered: replies stay in order.
            let m = self.page_reply()?;
            self.ahead.push_back(m);
        }
        if let Some(page) = self
            .page
            .as_ref()
            .filter(|_| fd.is_none() && msg.len() <= calls::AREA)
        {
            self.posted += 1;
            self.waiting = true;
            self.paged += 1;
            if page.post(self.posted, &msg) {
                wire::send(self.fd.as_fd(), calls::DOORBELL, None)
                    .map_err(|e| not_connected(format!("owner: {e}")))?;
            }
            return Ok(id);
        }
        wire::send(self.fd.as_fd(), &msg, fd).map_err(|e| not_connected(format!("owner: {e}")))?;
        Ok(id)
    }

    /// The next reply, in the order the requests were sent.
    fn next_reply(&mut self) -> Result<Vec<u8>> {
        if let Some(m) = self.ahead.pop_front() {
            return Ok(m);
        }
        if self.waiting {
            return self.page_reply();
        }
        loop {
            let (msg, _) = wire::recv_spinning(self.fd.as_fd(), wire::spin_budget(REPLY_SPIN))
                .map_err(|e| not_connected(format!("owner: {e}")))?
                .ok_or_else(|| not_connected("the owner closed the connection".into()))?;
            // A ring the page's handshake made twice (calls::DOORBELL).
            if msg != calls::DOORBELL {
                return Ok(msg);
            }
        }
    }

    /// The reply to the request posted last on the page: polled for a
    /// while, then slept for on the socket, where the owner rings (and
    /// whose end is the owner's).
    fn page_reply(&mut self) -> Result<Vec<u8>> {
        let page = self
            .page
            .as_ref()
            .expect("a request was posted on the page");
        let seq = self.posted;
        let got = match calls::poll(wire::spin_budget(REPLY_SPIN), || page.reply(seq)) {
            Some(r) => r,
            None => {
                let fd = self.fd.as_fd();
                let woken = page
                    .sleep_for(
                        calls::Side::Client,
                        || page.reply(seq),
                        || {
                            Ok(match wire::recv(fd)? {
                                Some((msg, _)) if msg == calls::DOORBELL => calls::Woken::Bell,
                                Some(_) => calls::Woken::Message(()),
                                None => calls::Woken::Closed,
                            })
                        },
                    )
                    .map_err(|e| not_connected(format!("owner: {e}")))?;
                match woken {
                    Ok(r) => r,
                    Err(Some(())) => {
                        return Err(not_connected(
                            "a reply on the socket while one on the call page was due".into(),
                        ))
                    }
                    Err(None) => {
                        return Err(not_connected("the owner closed the connection".into()))
                    }
                }
            }
        };
        self.waiting = false;
        got.map_err(|len| not_connected(format!("a reply of {len} bytes on the call page")))
    }
}

impl Client {
    fn done(&self, req: Request) -> Result<()> {
        self.inner.done(&req)
    }

    /// Have the owner serve the FUSE connection `fuse` of a mount this
    /// process made at `dir` ([`mount::mount`] makes it): answered once
    /// the owner has answered the kernel's INIT; the owner serves it until
    /// it is unmounted. Only the owner's user or root may.
    pub fn serve_fuse(&self, fuse: BorrowedFd<'_>, dir: &Path, read_only: bool) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let req = Request::Mount {
            dir: dir.as_os_str().as_bytes().to_vec(),
            read_only,
        };
        match Inner::exchange_fd(&self.inner.sock, &req, Some(fuse))? {
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

    /// `stat`: answered from the attribute cache while no client has
    /// changed anything since (the owner drops every client's cache before
    /// it answers a change), else one round trip.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let me = Cred::of_this_thread();
        self.inner.cached_stat(path, Some(&me), || Request::Stat {
            path: path.as_bytes().to_vec(),
        })
    }

    /// `lstat` (cached as `stat`, under its own key).
    pub fn lstat(&self, path: &str) -> Result<Stat> {
        let me = Cred::of_this_thread();
        self.inner
            .cached_stat(&lstat_key(path), Some(&me), || Request::Lstat {
                path: path.as_bytes().to_vec(),
            })
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink(&self, path: &str) -> Result<Vec<u8>> {
        self.path_reply(Request::Readlink {
            path: path.as_bytes().to_vec(),
        })
    }

    /// The canonical path of directory `path` ([`crate::fs::Fs::real_dir`]).
    pub fn real_dir(&self, path: &str) -> Result<String> {
        let p = self.path_reply(Request::RealDir {
            path: path.as_bytes().to_vec(),
        })?;
        String::from_utf8(p).map_err(|_| Error::Invalid("a path that is not UTF-8"))
    }

    /// A new symbolic link at `path` to `target`.
    pub fn symlink(&self, target: &[u8], path: &str) -> Result<()> {
        // As `Fs::symlink`, before the message (which carries 1 to 4095 bytes).
        if target.is_empty() {
            return Err(Error::NotFound);
        }
        if target.len() > crate::format::SYMLINK_MAX {
            return Err(Error::NameTooLong);
        }
        self.done(Request::Symlink {
            target: target.to_vec(),
            path: path.as_bytes().to_vec(),
        })
    }

    /// `mknod` ([`crate::fs::Fs::mknod`]).
    pub fn mknod(&self, path: &str, mode: u32, rdev: u64) -> Result<()> {
        self.done(Request::Mknod {
            path: path.as_bytes().to_vec(),
            mode,
            rdev,
        })
    }

    /// A request answered with `Path`: its bytes.
    fn path_reply(&self, req: Request) -> Result<Vec<u8>> {
        match self.call(&req)? {
            Reply::Path { path } => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    /// The entries of a directory: from the client's cache while no client
    /// has changed anything since (as [`Client::stat`]), else from the
    /// owner, in as many replies as it takes.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mark = {
            let mut c = self.inner.attrs_now();
            c.asked_as(&Cred::of_this_thread());
            if let Some((d, _)) = c.dirs.get(path) {
                return Ok(d.clone());
            }
            c.mark()
        };
        let (out, deps) = self.read_dir_uncached(path)?;
        let mut c = self.inner.attrs_now();
        if out.len() <= DIR_ENTRIES_KEPT && c.keeps(&self.inner.ring, mark, &deps, None) {
            if c.dirs.len() >= ATTRS_KEPT {
                c.dirs.clear();
            }
            c.dirs.insert(path.to_string(), (out.clone(), deps));
        }
        Ok(out)
    }

    /// One page of directory `path`'s listing from cookie `from` on, as
    /// the owner sends it (one reply: as many entries as fit, each with its
    /// cookie; [`crate::fs::Fs::read_dir_page`]). Cached by path and
    /// cookie as `stat` is (until a change of a name in the directory or
    /// on the way to it), so a reader paging by cookie sees the entries as
    /// they are at each page.
    pub fn read_dir_page(&self, path: &str, from: u64) -> Result<DirPage> {
        let key = (path.to_string(), from);
        let mark = {
            let mut c = self.inner.attrs_now();
            c.asked_as(&Cred::of_this_thread());
            if let Some((p, _)) = c.pages.get(&key) {
                return Ok(p.clone());
            }
            c.mark()
        };
        let (page, deps) = self.read_dir_page_walked(path, from)?;
        let mut c = self.inner.attrs_now();
        if deps.is_some()
            && page.entries.len() <= PAGE_ENTRIES_KEPT
            && c.keeps(&self.inner.ring, mark, &deps, None)
        {
            if c.pages.len() >= PAGES_KEPT {
                c.pages.clear();
            }
            c.pages.insert(key, (page.clone(), deps));
        }
        Ok(page)
    }

    /// [`Client::read_dir_page`], and the names the page depends on (its
    /// `Walked`).
    fn read_dir_page_walked(&self, path: &str, from: u64) -> Result<(DirPage, Deps)> {
        let r = self.call(&Request::ReadDir {
            path: path.as_bytes().to_vec(),
            from,
        })?;
        let (r, deps) = unwalked(r);
        if let Reply::Error { errno, message } = r {
            return Err(Error::from_remote(errno, message));
        }
        let Reply::Entries { entries, next } = r else {
            return Err(unexpected(r));
        };
        if next.is_some_and(|n| n <= from) {
            return Err(not_connected("read_dir made no progress".into()));
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push((
                e.cookie,
                DirEntry {
                    name: String::from_utf8(e.name)
                        .map_err(|_| not_connected("a name that is not UTF-8".into()))?,
                    ino: e.ino,
                    file_type: e.kind,
                },
            ));
        }
        Ok((DirPage { entries: out, next }, deps))
    }

    fn read_dir_uncached(&self, path: &str) -> Result<(Vec<DirEntry>, Deps)> {
        let mut out = Vec::new();
        let mut from = 0;
        let mut deps = None;
        loop {
            let (page, d) = self.read_dir_page_walked(path, from)?;
            if from == 0 {
                deps = d;
            }
            out.extend(page.entries.into_iter().map(|(_, e)| e));
            match page.next {
                Some(n) if n > from => from = n,
                Some(_) => return Err(not_connected("read_dir made no progress".into())),
                None => {
                    // The owner pages by cookie (name hash); the caller
                    // gets names in order, as `Fs::read_dir`.
                    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
                    return Ok((out, deps));
                }
            }
        }
    }

    /// Totals of the file system (`metadata_capacity` is not reported
    /// through the owner and reads 0).
    /// After the first, no round trip: the owner publishes the totals that
    /// change in its change log's memory before it answers anything that
    /// may have changed them.
    pub fn statfs(&self) -> Result<StatFs> {
        let t = match (self.inner.totals.get(), self.inner.ring.space()) {
            (Some(t), Some(s)) => proto::Totals {
                free_blocks: s.free_blocks,
                inodes: s.inodes,
                metadata_bytes: s.metadata_bytes,
                ..*t
            },
            _ => match self.call(&Request::StatFs)? {
                Reply::Totals(t) => {
                    // The fixed totals stay what the first answer said.
                    let _ = self.inner.totals.set(t);
                    t
                }
                other => return Err(unexpected(other)),
            },
        };
        Ok(StatFs {
            block_size: t.block_size,
            total_blocks: t.total_blocks,
            data_blocks: t.data_blocks,
            free_blocks: t.free_blocks,
            inodes: t.inodes,
            metadata_bytes: t.metadata_bytes,
            metadata_capacity: 0,
        })
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

    /// Emulate a media error at device bytes `[offset, offset+len)` through
    /// the owner (as `Fs::inject_poison`): the data there is lost, the
    /// blocks are recorded bad, and every client mapping an owning file
    /// page gets SIGBUS `BUS_MCEERR_AR` on access. Returns the file pages
    /// found on the range.
    pub fn inject_poison(&self, offset: u64, len: u64) -> Result<u64> {
        self.poison(offset, len, true)
    }

    /// Report a media error the device found at `[offset, offset+len)` (as
    /// `Fs::notify_failure`); returns the file pages found on the range.
    pub fn notify_failure(&self, offset: u64, len: u64) -> Result<u64> {
        self.poison(offset, len, false)
    }

    fn poison(&self, offset: u64, len: u64, inject: bool) -> Result<u64> {
        match self.call(&Request::Poison {
            offset,
            len,
            inject,
        })? {
            Reply::Poisoned { file_pages } => Ok(file_pages),
            other => Err(unexpected(other)),
        }
    }

    /// A new name `to` for the file at `from` (`link`: a symbolic link
    /// there is linked itself).
    pub fn link(&self, from: &str, to: &str) -> Result<()> {
        self.done(Request::Link {
            from: Target::LinkPath(from.as_bytes().to_vec()),
            to: to.as_bytes().to_vec(),
        })
    }

    /// `linkat(AT_SYMLINK_FOLLOW)`: as [`Client::link`], following a
    /// symbolic link at the end of `from`.
    pub fn link_following(&self, from: &str, to: &str) -> Result<()> {
        self.done(Request::Link {
            from: Target::Path(from.as_bytes().to_vec()),
            to: to.as_bytes().to_vec(),
        })
    }

    /// `renameat2`: rename as `how` says, atomically.
    pub fn rename2(&self, from: &str, to: &str, how: Rename) -> Result<()> {
        self.done(Request::Rename2 {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
            how: match how {
                Rename::Replace => 0,
                Rename::NoReplace => 1,
                Rename::Exchange => 2,
            },
        })
    }

    /// chmod of the file at `path`.
    pub fn set_permissions(&self, path: &str, mode: u32) -> Result<()> {
        self.done(Request::SetAttr {
            target: Target::Path(path.as_bytes().to_vec()),
            mode: Some(mode),
            atime_ns: None,
            mtime_ns: None,
        })
    }

    /// `fchmodat(AT_SYMLINK_NOFOLLOW)` (a symbolic link's mode cannot change).
    pub fn set_permissions_nofollow(&self, path: &str, mode: u32) -> Result<()> {
        self.done(Request::SetAttr {
            target: Target::LinkPath(path.as_bytes().to_vec()),
            mode: Some(mode),
            atime_ns: None,
            mtime_ns: None,
        })
    }

    /// Before an exec: hand this process's POSIX record locks on the files
    /// of `files` (the descriptors the exec keeps) to the next image of the
    /// process; a token for [`Client::adopt_locks`]. Locks on its other
    /// files go when this connection ends, as exec's close of their last
    /// descriptor drops them.
    pub fn share_locks(&self, files: &[&RemoteFile]) -> Result<u64> {
        self.inner.wait_for_closes();
        match self.call(&Request::ShareLocks {
            handles: files.iter().map(|f| f.handle()).collect(),
        })? {
            Reply::Shared { token } => Ok(token),
            other => Err(unexpected(other)),
        }
    }

    /// Take the POSIX record locks handed over with `token` by this same
    /// process (the image before an exec, or this image if its exec failed).
    pub fn adopt_locks(&self, token: u64) -> Result<()> {
        self.inner.wait_for_closes();
        self.done(Request::AdoptLocks { token })
    }

    /// chown of the file at `path` (`None` leaves the owner or group).
    pub fn set_owner(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.done(Request::SetOwner {
            target: Target::Path(path.as_bytes().to_vec()),
            uid,
            gid,
        })
    }

    /// `lchown`: as [`Client::set_owner`], of a symbolic link itself.
    pub fn set_owner_nofollow(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.done(Request::SetOwner {
            target: Target::LinkPath(path.as_bytes().to_vec()),
            uid,
            gid,
        })
    }

    /// utimes of the file at `path` (`None` leaves a time as it is).
    pub fn set_times(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        self.set_times_of(Target::Path(path.as_bytes().to_vec()), atime_ns, mtime_ns)
    }

    /// `utimensat(AT_SYMLINK_NOFOLLOW)`: as [`Client::set_times`], of a
    /// symbolic link itself.
    pub fn set_times_nofollow(
        &self,
        path: &str,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        self.set_times_of(
            Target::LinkPath(path.as_bytes().to_vec()),
            atime_ns,
            mtime_ns,
        )
    }

    fn set_times_of(
        &self,
        target: Target,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    ) -> Result<()> {
        self.done(Request::SetAttr {
            target,
            mode: None,
            atime_ns,
            mtime_ns,
        })
    }

    /// `syncfs`.
    pub fn sync(&self) -> Result<()> {
        self.done(Request::Sync)
    }

    /// A handle to the open file description another client offered with
    /// [`RemoteFile::share`] (a forked child attaching to its parent's
    /// descriptors): offset, OFD and flock locks shared.
    pub fn adopt(&self, token: u64) -> Result<RemoteFile> {
        RemoteFile::adopt(&self.inner, token)
    }

    /// `O_TMPFILE`: a file without a name in directory `dir`, open
    /// read-write; `linkable` unless `O_EXCL` (then [`RemoteFile::link`]
    /// may give it a name once).
    pub fn open_unnamed(&self, dir: &str, mode: u32, linkable: bool) -> Result<RemoteFile> {
        RemoteFile::open_unnamed(&self.inner, dir, mode, linkable)
    }

    /// `FICLONERANGE`: make `dst`'s bytes at `dst_off` share `len` bytes of
    /// `src` at `src_off` (`len` 0: to the end of `src`); returns the
    /// bytes shared. Every lease on either file is recalled first.
    pub fn clone_range(
        &self,
        src: &RemoteFile,
        src_off: u64,
        dst: &RemoteFile,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        self.remap(src, src_off, dst, dst_off, len, false)
            .map(|(n, _)| n)
    }

    /// `FIDEDUPERANGE`: share the ranges only if their bytes are equal;
    /// returns the bytes shared and whether they differed.
    pub fn dedupe_range(
        &self,
        src: &RemoteFile,
        src_off: u64,
        dst: &RemoteFile,
        dst_off: u64,
        len: u64,
    ) -> Result<(u64, bool)> {
        self.remap(src, src_off, dst, dst_off, len, true)
    }

    fn remap(
        &self,
        src: &RemoteFile,
        src_off: u64,
        dst: &RemoteFile,
        dst_off: u64,
        len: u64,
        dedupe: bool,
    ) -> Result<(u64, bool)> {
        match self.call(&Request::Remap {
            src: src.handle(),
            src_off,
            dst: dst.handle(),
            dst_off,
            len,
            dedupe,
        })? {
            Reply::Remapped { bytes, differs } => Ok((bytes, differs)),
            other => Err(unexpected(other)),
        }
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
        rdev: a.rdev,
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
    // `udax serve` (not --foreground) starts the owner detached and exits
    // once it answers: the owner is never this process's child, so no
    // `wait` of the caller's ever waits for it. The shim's variables are
    // not passed on (the owner must not run on the shim itself).
    let out = std::process::Command::new(cmd)
        .arg("serve")
        .arg(path)
        .env("UDAX_RUNTIME_DIR", dir)
        .env_remove("LD_PRELOAD")
        .env_remove("UDAX_MOUNT")
        .env_remove("UDAX_DEVICE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match out {
        Ok(out) if !out.status.success() => {
            return Err(not_connected(format!(
                "`{} serve {}` failed: {}",
                cmd.display(),
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(_) => {}
        // A SIGCHLD handler of the calling program (a shell's) reaped the
        // starter first: whether it worked shows at the socket below.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
        Err(e) => {
            return Err(not_connected(format!(
                "starting `{} serve`: {e}",
                cmd.display()
            )))
        }
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

/// Stop the owner serving the device at `path` (found in `runtime_dir`, or
/// the default): SIGTERM to the process at the other end of its socket,
/// which checkpoints and exits; returns its pid once its socket is gone, or
/// `None` if no owner served the device. The device lock is released just
/// after the socket goes.
pub fn stop_owner(
    path: &Path,
    runtime_dir: Option<&Path>,
    timeout: Duration,
) -> Result<Option<i32>> {
    let uuid = uuid_of(path)?;
    let dir = runtime_dir.map_or_else(owner::runtime_dir, Path::to_path_buf);
    let sock_path = owner::socket_path(&dir, &uuid);
    let Ok(sock) = wire::connect(&sock_path) else {
        return Ok(None);
    };
    let (pid, _, _) = wire::peer(sock.as_fd()).map_err(Error::Io)?;
    drop(sock);
    let pid_t = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| not_connected(format!("the owner's socket reports pid {pid}")))?;
    rustix::process::kill_process(pid_t, rustix::process::Signal::TERM)
        .map_err(|e| Error::Io(e.into()))?;
    let t = Instant::now();
    while sock_path.exists() {
        if t.elapsed() > timeout {
            return Err(not_connected(format!(
                "the owner (pid {pid}) did not stop within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod attrs_index {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Insert {
                key: u8,
                ino: Option<u64>,
                deps: Option<Vec<u64>>,
            },
            Names(Vec<u64>, Vec<u64>),
            Ino(u64),
            Clear,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (
                    0u8..12,
                    proptest::option::of(0u64..6),
                    proptest::option::weighted(0.8, proptest::collection::vec(0u64..8, 0..4)),
                )
                    .prop_map(|(key, ino, deps)| Step::Insert { key, ino, deps }),
                2 => (
                    proptest::collection::vec(0u64..8, 0..3),
                    proptest::collection::vec(0u64..6, 0..2),
                )
                    .prop_map(|(n, i)| Step::Names(n, i)),
                1 => (0u64..6).prop_map(Step::Ino),
                1 => Just(Step::Clear),
            ]
        }

        proptest! {
            /// The indexed cache never keeps an answer that the plain
            /// rule (a walk over every answer) drops, and what it keeps
            /// is what was inserted.
            #[test]
            fn an_indexed_drop_keeps_nothing_a_walk_over_every_answer_drops(
                steps in proptest::collection::vec(step(), 1..80)
            ) {
                let mut a = Attrs::default();
                let mut model: HashMap<String, (Option<Stat>, Deps)> = HashMap::new();
                for st in steps {
                    match st {
                        Step::Insert { key, ino, deps } => {
                            let s = ino.map(|ino| stat(&Attr { ino, ..Default::default() }));
                            let v = (s, deps.map(Vec::into_boxed_slice));
                            a.insert(format!("k{key}"), v.clone());
                            model.insert(format!("k{key}"), v);
                        }
                        Step::Names(names, inos) => {
                            a.drop_names(&names, &inos);
                            let hit = |d: &Deps| {
                                !names.is_empty()
                                    && d.as_ref().is_none_or(|d| d.iter().any(|k| names.contains(k)))
                            };
                            model.retain(|_, (s, d)| {
                                s.is_none_or(|s| !inos.contains(&s.ino)) && !hit(d)
                            });
                        }
                        Step::Ino(i) => {
                            a.drop_ino(i);
                            model.retain(|_, (s, _)| s.is_none_or(|s| s.ino != i));
                        }
                        Step::Clear => {
                            a.clear();
                            model.clear();
                        }
                    }
                    for (k, v) in &a.map {
                        prop_assert_eq!(model.get(k), Some(v), "kept {} that the walk drops", k);
                    }
                }
            }
        }
    }

    fn me() -> Cred {
        Cred {
            uid: 1000,
            gid: 1000,
            groups: Vec::new(),
        }
    }

    fn seed(path: &str, deps: &[u64], ino: u64) -> proto::Seed {
        proto::Seed {
            path: path.as_bytes().to_vec(),
            deps: deps.to_vec(),
            attr: Some(Attr {
                ino,
                mode: libc::S_IFREG | 0o644,
                nlink: 1,
                ..Default::default()
            }),
        }
    }

    /// A cache that asked as `me()`, caught up with `ring`, and the mark
    /// a change of names takes before it is sent.
    fn marked(ring: &Ring) -> (AttrCache, Mark) {
        let mut c = AttrCache::default();
        c.asked_as(&me());
        c.catch_up(ring);
        let mark = c.mark();
        (c, mark)
    }

    // The names of a create of `/d/f`: (root, d), (d, f), and d's listing.
    const ROOT_D: u64 = 11;
    const D_F: u64 = 12;
    const D_LIST: u64 = 13;
    const D: u64 = 2;
    const F: u64 = 5;

    /// The create's own records, as the owner appends them.
    fn own_change(ring: &Ring) {
        ring.append(&[Rec::Name(D_F), Rec::Name(D_LIST), Rec::Ino(D), Rec::Ino(F)]);
    }

    /// Seed `c` with what the create of `/d/f` shows, as of `at`.
    fn seed_df(c: &mut AttrCache, ring: &Ring, mark: Mark, at: u64) {
        c.seed(
            ring,
            mark,
            &me(),
            at,
            vec![seed("/d/f", &[ROOT_D, D_F], F)],
            &[b"/d/f"],
        );
    }

    #[test]
    fn a_seeded_answer_outlives_its_own_changes_records_and_not_a_later_one_naming_it() {
        let ring = Ring::create().unwrap();
        let (mut c, mark) = marked(&ring);
        own_change(&ring);
        let at = ring.head();
        c.catch_up(&ring);
        seed_df(&mut c, &ring, mark, at);
        for key in ["/d/f".to_string(), lstat_key("/d/f"), file::fstat_key(F)] {
            assert_eq!(
                c.map.get(&key).and_then(|(s, _)| *s).map(|s| s.ino),
                Some(F),
                "{key:?}"
            );
        }
        // Records after `at` that name something else leave it.
        ring.append(&[Rec::Name(99), Rec::Ino(77)]);
        c.catch_up(&ring);
        assert!(c.map.contains_key("/d/f"));
        // One that names its walk's name drops the path's answers.
        ring.append(&[Rec::Name(D_F)]);
        c.catch_up(&ring);
        assert!(!c.map.contains_key("/d/f"));
        assert!(!c.map.contains_key(&lstat_key("/d/f")));
    }

    #[test]
    fn another_change_logged_between_the_owners_answer_and_the_seeding_keeps_the_seed_out() {
        // The owner logged A's create and read `at`; B's unlink of the same
        // name is logged after it, before A's reply is seeded.
        let ring = Ring::create().unwrap();
        let (mut c, mark) = marked(&ring);
        own_change(&ring);
        let at = ring.head();
        ring.append(&[Rec::Name(D_F), Rec::Name(D_LIST), Rec::Ino(D)]);
        c.catch_up(&ring);
        seed_df(&mut c, &ring, mark, at);
        assert!(c.map.is_empty(), "a seed older than B's change was kept");
        // The same when B's record comes after the cache caught up, before
        // the seed is checked (the check reads the log itself).
        let (mut c, mark) = marked(&ring);
        own_change(&ring);
        let at = ring.head();
        c.catch_up(&ring);
        ring.append(&[Rec::Ino(F)]);
        seed_df(&mut c, &ring, mark, at);
        assert!(
            c.map.is_empty(),
            "a seed older than a change of its inode was kept"
        );
    }

    #[test]
    fn a_seed_is_refused_before_the_cache_caught_up_to_it_after_a_local_drop_or_for_a_path_not_sent(
    ) {
        let ring = Ring::create().unwrap();
        let s = || vec![seed("/d/f", &[ROOT_D, D_F], F)];
        // Not caught up to `at`: the records before it would be applied
        // after the seed.
        let (mut c, mark) = marked(&ring);
        own_change(&ring);
        let at = ring.head();
        c.seed(&ring, mark, &me(), at, s(), &[b"/d/f"]);
        assert!(c.map.is_empty());
        // `at` past the log's end (no such record yet).
        c.catch_up(&ring);
        c.seed(&ring, mark, &me(), ring.head() + 1, s(), &[b"/d/f"]);
        assert!(c.map.is_empty());
        // A local drop since the mark (a grant ended, other credentials).
        c.drop_ino(F);
        c.seed(&ring, mark, &me(), at, s(), &[b"/d/f"]);
        assert!(c.map.is_empty());
        // A path the change did not send.
        let mark = c.mark();
        c.seed(&ring, mark, &me(), at, s(), &[b"/d/g"]);
        assert!(c.map.is_empty());
        // Asked as others.
        let other = Cred { uid: 0, ..me() };
        c.seed(&ring, mark, &other, at, s(), &[b"/d/f"]);
        assert!(c.map.is_empty());
        c.seed(&ring, mark, &me(), at, s(), &[b"/d/f"]);
        assert_eq!(c.map.len(), 3);
    }

    #[test]
    fn a_seeded_symbolic_link_answers_lstat_only_and_a_removed_name_answers_enoent() {
        let ring = Ring::create().unwrap();
        let (mut c, mark) = marked(&ring);
        own_change(&ring);
        let at = ring.head();
        c.catch_up(&ring);
        let mut link = seed("/d/l", &[ROOT_D, 14], 6);
        if let Some(a) = link.attr.as_mut() {
            a.mode = libc::S_IFLNK | 0o777;
        }
        let gone = proto::Seed {
            attr: None,
            ..seed("/d/f", &[ROOT_D, D_F], 0)
        };
        c.seed(
            &ring,
            mark,
            &me(),
            at,
            vec![link, gone],
            &[b"/d/l", b"/d/f"],
        );
        assert!(c.map.contains_key(&lstat_key("/d/l")));
        assert!(!c.map.contains_key("/d/l"), "stat follows the link");
        assert!(!c.map.contains_key(&file::fstat_key(6)));
        assert_eq!(c.map.get("/d/f").map(|(s, _)| *s), Some(None));
        assert_eq!(c.map.get(&lstat_key("/d/f")).map(|(s, _)| *s), Some(None));
    }
}
