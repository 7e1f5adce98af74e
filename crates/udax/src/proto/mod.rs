//! The owner protocol: the messages between a device's owner (`udax serve`)
//! and its clients, and their byte encoding (docs/multiprocess.md).
//!
//! One message is one datagram of a `SOCK_SEQPACKET` socket: a 24-byte header
//! (magic `UDXP`, protocol version, message kind, request id, body length,
//! reserved zero) and a body of little-endian fixed-width fields and
//! length-prefixed byte strings. Decoding is total: any byte string gives a
//! message or a [`ProtoError`], never a panic, and a message decodes only if
//! every byte of it is accounted for. Nothing here touches a socket; the
//! codec is transport-agnostic (docs/multihost.md).

pub mod calls;
pub mod ring;
pub mod wire;

use crate::format::codec::{Reader, Writer};
use crate::format::FormatError;

/// Protocol version spoken by this build; a peer with another gets an error.
pub const VERSION: u16 = 12;
/// Magic at the start of every message.
pub const MAGIC: [u8; 4] = *b"UDXP";
/// Bytes of the header.
pub const HEADER: usize = 24;
/// The largest message either side sends or accepts (header included).
pub const MAX_MESSAGE: usize = 64 << 10;
/// Longest path in a message: `fs::MAX_PATH`, the longest the file system
/// resolves (a caller's own path is at most PATH_MAX, but one relative to a
/// deep working directory is longer once joined to it).
pub const MAX_PATH: usize = crate::format::MAX_PATH;
/// Longest name of a directory entry.
pub const MAX_NAME: usize = 255;
/// Most data bytes in one `Write` (the rest of a message is its fields).
pub const MAX_WRITE: usize = 60 << 10;
/// Handles one `ShareLocks` may name (a process's descriptors kept across exec).
pub const MAX_HANDLES_SHARED: usize = 4096;
/// Supplementary groups one [`Claim`] may list.
pub const MAX_GROUPS: usize = 4096;

/// A request from a client. Paths are absolute inside the file system
/// (`/a/b`), as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// First message of a connection: the client's protocol version and
    /// whether it wants to write. The reply carries the device fd.
    Hello {
        version: u16,
        write: bool,
    },
    Ping,
    /// Answered with `Done` and a read-only descriptor of the owner's
    /// change log ([`ring`]), which the client reads before it answers
    /// from its attribute cache.
    Ring,
    /// Answered with `Done` and a descriptor of a new call page
    /// ([`calls`]) for this connection: from then on the client may post
    /// its requests there instead of on the socket.
    Calls,
    /// `req` (one that [`Request::checks_permissions`]), made by thread
    /// `claim.tid` of the client's process, whose current credentials are
    /// `claim`: the owner checks `req` with them, after verifying a claim
    /// other than the credentials the client connected with against the
    /// kernel's record of that thread (docs/multiprocess.md, "Security").
    As {
        claim: Claim,
        req: Box<Request>,
    },
    /// `stat`: a symbolic link at the end of the path is followed.
    Stat {
        path: Vec<u8>,
    },
    /// `lstat`: of a symbolic link at the end of the path itself.
    Lstat {
        path: Vec<u8>,
    },
    /// The target of the symbolic link at `path`, answered with `Path`.
    Readlink {
        path: Vec<u8>,
    },
    /// A new symbolic link at `path` to `target` (stored as written).
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
    /// `mknod`: a FIFO, socket, or character or block device (`rdev`) at
    /// `path`, of the file type and permissions in `mode`.
    Mknod {
        path: Vec<u8>,
        mode: u32,
        rdev: u64,
    },
    /// The canonical path of directory `path` (links followed, no `..`),
    /// answered with `Path`: what a `..` after `path` goes back to.
    RealDir {
        path: Vec<u8>,
    },
    /// Entries of a directory from cookie `from` on (0: from the start; as
    /// many as fit one reply): cookies are the entries' name hashes
    /// (`Fs::read_dir_page`), so a listing paged by them returns every
    /// entry present through it exactly once.
    ReadDir {
        path: Vec<u8>,
        from: u64,
    },
    StatFs,
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    /// Create a regular file; fails with EEXIST if the name exists.
    Create {
        path: Vec<u8>,
        mode: u32,
    },
    Unlink {
        path: Vec<u8>,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// First message of a client's second connection: make it the callback
    /// channel of client `client` (same process as its first connection).
    Listen {
        client: u64,
    },
    /// Answer to a `Recall` (sent on the callback channel): the client has
    /// dropped its layout of `ino`, unmapped the file from its mappings and
    /// waited for its reads in flight and its pins; `busy`: pins still held
    /// after the pin timeout (the change fails with `EBUSY`, as
    /// break-layouts fails in one process).
    Recalled {
        ino: u64,
        epoch: u64,
        busy: bool,
    },
    /// Open a file: a handle the owner keeps the file open by (an unlinked
    /// file lives while a handle does).
    /// `excl`: fail with EEXIST if it exists (`O_EXCL`, with `create`);
    /// `trunc`: cut it to 0 bytes (`O_TRUNC`, with `write`);
    /// `nofollow`: a symbolic link at the end fails with ELOOP (`O_NOFOLLOW`).
    Open {
        path: Vec<u8>,
        /// Read access is asked (`O_RDONLY`, `O_RDWR`): checked against the
        /// mode, not needed for `O_WRONLY`.
        read: bool,
        write: bool,
        create: bool,
        excl: bool,
        trunc: bool,
        nofollow: bool,
        mode: u32,
    },
    /// The current path of directory `ino`: `hint` if it still names it,
    /// else found from its parents (a directory descriptor or working
    /// directory follows a rename, as in the kernel).
    /// `btime_ns` tells the directory from a newer one that reuses `ino`.
    DirPath {
        ino: u64,
        btime_ns: u64,
        hint: Vec<u8>,
    },
    /// Close `handle`; with `mtime_ns` non-zero, first stamp the file's
    /// modification time of in-place overwrites not sent yet (as `Touch`).
    Close {
        handle: u64,
        mtime_ns: u64,
    },
    /// A read lease on the file's layout, extents from file block
    /// `from_blk` on (as many as fit one reply).
    Lease {
        handle: u64,
        from_blk: u64,
    },
    /// Set the file's size (recalls other clients' leases first).
    ///
    /// `settled`: the client stopped using its size grant of the file at
    /// word `(word_at, serial)` (`Reply::Granted`), as a settle would have
    /// it (`(0, 0)`: none said): if that grant is still the one out, the
    /// owner ends it from its word without calling the client back.
    /// `dropped`: as `Write::dropped`, for the truncate's recall
    /// (docs/multiprocess.md, "The writer's own lease").
    Truncate {
        handle: u64,
        size: u64,
        settled: (u64, u32),
        dropped: u64,
    },
    /// Write `data` at `offset` through the owner (recalls other clients'
    /// leases first when it fills a hole or grows the file).
    ///
    /// `dropped`: the client has dropped every layout of the file it was
    /// granted up to lease serial `dropped` (`Reply::Layout::serial`), as a
    /// recall would have it (0: none said): if the owner granted it none
    /// since, the write's recall leaves it out (docs/multiprocess.md,
    /// "The writer's own lease").
    Write {
        handle: u64,
        offset: u64,
        data: Vec<u8>,
        dropped: u64,
    },
    /// Make the file's data and metadata durable (`fsync`).
    Fsync {
        handle: u64,
    },
    /// The client overwrote the file in place at time `mtime_ns` (ns since
    /// the epoch): set its modification time (and its change time to now).
    Touch {
        handle: u64,
        mtime_ns: u64,
    },
    /// Grow the file open as `handle` to `size` over bytes `[offset, size)`
    /// the client copied in place into blocks its lease of `epoch` showed
    /// allocated (`Fallocate` with `KEEP_SIZE` first). Refused with
    /// `ESTALE`, changing nothing, if the lease was recalled since (a
    /// truncate, a punch, another growth may have freed or zeroed those
    /// blocks): the client writes the bytes again through `Write`.
    /// `settled` and `dropped`: as for `Truncate`.
    Extend {
        handle: u64,
        offset: u64,
        size: u64,
        epoch: u64,
        settled: (u64, u32),
        dropped: u64,
    },
    /// Ask for a size grant of the file open as `handle`: the right to
    /// grow it, with no request per write, into blocks the owner allocates
    /// for about `want` bytes past its end (docs/multiprocess.md, "Size
    /// grants"). Answered with `Granted`; a client asking again while it
    /// holds the grant (a renewal) must have stopped using the old one.
    Grant {
        handle: u64,
        want: u64,
    },
    /// First message of a client's third connection: make it the fault
    /// channel of client `client`, for the calls its fault engine makes
    /// with the file's locks held ([`Request::Iomap`]). The owner never
    /// waits on a file's change on this channel: it answers `EAGAIN`, and
    /// the fault is retried once the client's locks are dropped.
    Channel {
        client: u64,
    },
    /// A fault in a client mapping needs file blocks `[from_blk, to_blk)`
    /// changed: [`IomapOp`]. The reply is a `Layout` of that range after the
    /// change (the caller's own lease is updated, not recalled).
    Iomap {
        handle: u64,
        op: IomapOp,
        from_blk: u64,
        to_blk: u64,
    },
    /// A media error at device bytes `[offset, offset+len)`: with `inject`,
    /// emulate one there first (the device loses the data). The owner
    /// records the blocks as bad and sends `Poison` to every client that
    /// holds a lease on an owning file. Needs a read-write client.
    Poison {
        offset: u64,
        len: u64,
        inject: bool,
    },
    /// Take (`kind` 1 read, 2 write) or drop (`kind` 0) an advisory lock on
    /// the file open as `handle`: a record lock of `[start, end)` (`end`
    /// `u64::MAX`: to end of file) owned by the process ([`LockScope::Posix`])
    /// or by the handle ([`LockScope::Ofd`]), or the whole-file `flock`
    /// lock of the handle. With `wait`, a conflict is recorded for deadlock
    /// detection (`EDEADLK`) and the client retries on `EAGAIN`.
    Lock {
        handle: u64,
        scope: LockScope,
        kind: u8,
        start: u64,
        end: u64,
        wait: bool,
    },
    /// `F_GETLK`/`F_OFD_GETLK`: the first lock that a `kind` (1 read, 2
    /// write) record lock of `[start, end)` would conflict with.
    GetLock {
        handle: u64,
        scope: LockScope,
        kind: u8,
        start: u64,
        end: u64,
    },
    /// `fstat` of an open file (also one without a name).
    FStat {
        handle: u64,
    },
    /// A new name `to` for a file: by path (`link`) or by handle (`linkat`
    /// with `AT_EMPTY_PATH`, e.g. an `O_TMPFILE` file made linkable).
    Link {
        from: Target,
        to: Vec<u8>,
    },
    /// `renameat2`: `how` 0 replaces, 1 is `RENAME_NOREPLACE`, 2 is
    /// `RENAME_EXCHANGE`.
    Rename2 {
        from: Vec<u8>,
        to: Vec<u8>,
        how: u8,
    },
    /// chmod (`mode`) and utimes (`atime_ns`, `mtime_ns`; `None` leaves one
    /// as it is), by path or by handle.
    SetAttr {
        target: Target,
        mode: Option<u32>,
        atime_ns: Option<u64>,
        mtime_ns: Option<u64>,
    },
    /// chown (`None` leaves the owner or the group, as -1), by path or
    /// by handle.
    SetOwner {
        target: Target,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// `syncfs`: make everything durable.
    Sync,
    /// `fallocate(2)` with its Linux mode bits (recalls every lease first).
    /// `settled` and `dropped`: as for `Truncate`.
    Fallocate {
        handle: u64,
        mode: u32,
        offset: u64,
        len: u64,
        settled: (u64, u32),
        dropped: u64,
    },
    /// `O_TMPFILE`: a file without a name in directory `dir`, opened
    /// read-write; `linkable` unless `O_EXCL`.
    OpenUnnamed {
        dir: Vec<u8>,
        mode: u32,
        linkable: bool,
    },
    /// An `O_APPEND` write of `total` bytes, `data` its first piece (at most
    /// [`MAX_WRITE`]): the owner reserves `[eof, eof+total)` atomically
    /// (the file grows to its end at once) and writes `data` at `eof`; the
    /// client writes the rest there with `Write`. Answered with `Appended`.
    /// `settled` and `dropped`: as for `Truncate`.
    Append {
        handle: u64,
        total: u64,
        data: Vec<u8>,
        settled: (u64, u32),
        dropped: u64,
    },
    /// Serve a FUSE mount (docs/fuse.md): the `/dev/fuse` connection of a
    /// mount the client made at `dir` comes with this message (SCM_RIGHTS).
    /// The owner answers `Done` once the kernel's INIT is answered, and
    /// serves the mount until it is unmounted or the owner exits. `dir` is
    /// for the owner's log; `read_only`: every change fails with EROFS.
    Mount {
        dir: Vec<u8>,
        read_only: bool,
    },
    /// Let another client (a forked child, an exec'd program) share this
    /// open file description: its offset, its OFD and flock locks. Answered
    /// with a `Shared` token, which holds the description open until one
    /// `Adopt` by a client of the same uid takes it (or for 30 s).
    Share {
        handle: u64,
    },
    /// Take a handle to the open file description `token` names.
    Adopt {
        token: u64,
    },
    /// Before an exec: hand this client's POSIX record locks on the files
    /// of `handles` (the descriptors the exec keeps open) to the image that
    /// will run next in the same process (`Shared { token }`); the owner
    /// keeps them for the process meanwhile. Locks on other files go with
    /// this connection, as the kernel drops them when exec closes the last
    /// descriptor of their file.
    ShareLocks {
        handles: Vec<u64>,
    },
    /// The new image (or the old one, if the exec failed): take the POSIX
    /// record locks `token` names.
    AdoptLocks {
        token: u64,
    },
    /// `lseek` of the description's shared offset: `whence` 0 `SEEK_SET`,
    /// 1 `SEEK_CUR`, 2 `SEEK_END`. Answered with `Offset` (the new one).
    Seek {
        handle: u64,
        whence: u8,
        offset: i64,
    },
    /// Move the description's offset on by `len` (by no more than to the
    /// end of the file with `clamp`: a read) and answer the offset before
    /// (`Offset`): `read`/`write` at a shared offset, atomically.
    Advance {
        handle: u64,
        len: u64,
        clamp: bool,
    },
    /// `FICLONERANGE` (or `FIDEDUPERANGE` with `dedupe`): share `len` bytes
    /// of `src` at `src_off` with `dst` at `dst_off` (`len` 0: to the end of
    /// `src`). Answered with `Remapped`.
    Remap {
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
        dedupe: bool,
    },
}

/// Who makes a request ([`Request::As`]): a thread of the client's
/// process and its current file-system uid and gid and supplementary
/// groups, as the kernel checks a call with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// At most [`MAX_GROUPS`].
    pub groups: Vec<u32>,
}

/// A file named by path or by an open handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A path; a symbolic link at its end is followed.
    Path(Vec<u8>),
    Handle(u64),
    /// A path; a symbolic link at its end is the file meant (`lchown`,
    /// `utimensat(AT_SYMLINK_NOFOLLOW)`, `link`).
    LinkPath(Vec<u8>),
}

/// Who owns an advisory lock ([`Request::Lock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockScope {
    /// A POSIX record lock (`F_SETLK`): the process's.
    Posix = 1,
    /// An open-file-description record lock (`F_OFD_SETLK`): the handle's.
    Ofd = 2,
    /// A `flock` lock: the handle's, the whole file.
    Flock = 3,
}

/// What a client's fault asks of the owner ([`Request::Iomap`]), as the
/// fault engine asks the file system in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IomapOp {
    /// Give the holes zeroed blocks (a store into a hole).
    Alloc = 1,
    /// Copy blocks other files share to blocks of the file's own.
    Unshare = 2,
    /// Move the 2 MiB chunk at `from_blk` to one aligned extent (hugetlbfs).
    Relocate = 3,
}

/// File attributes, as `stat(2)` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    pub btime_ns: u64,
    pub rdev: u64,
}

/// What a path names just after a change of names its client made
/// (`Changed`): the answer a `Lstat` of `path` would get, and the keys of
/// the names its walk looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub path: Vec<u8>,
    pub deps: Vec<u64>,
    /// `None`: the path names nothing (ENOENT).
    pub attr: Option<Attr>,
}

/// Paths a `Changed` reply carries at most (a rename's two).
pub const MAX_SEEDS: usize = 2;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's listing cookie (its name hash, `Fs::read_dir_page`):
    /// a reader may go on, or come back, from it.
    pub cookie: u64,
    pub name: Vec<u8>,
    pub ino: u64,
    /// `d_type`.
    pub kind: u8,
}

/// A whole layout lease that comes with `Opened`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenLayout {
    pub epoch: u64,
    /// The grant's serial (as `Reply::Layout`'s).
    pub serial: u64,
    pub size: u64,
    pub extents: Vec<Ext>,
    pub bad: Vec<(u64, u64)>,
}

/// One extent of a layout: `len` blocks from file block `file_blk` at
/// device block `dev_blk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ext {
    pub file_blk: u64,
    pub dev_blk: u64,
    pub len: u64,
    /// Other files share these blocks (reflink): a store must go through
    /// the owner, which copies them first.
    pub shared: bool,
}

/// File-system totals, as `statvfs(3)` needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub block_size: u64,
    pub total_blocks: u64,
    pub data_blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    /// [`crate::fs::StatFs::metadata_bytes`].
    pub metadata_bytes: u64,
}

/// A reply from the owner. `Error` answers any request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Answers `Hello`; the device fd travels with it (SCM_RIGHTS).
    Hello {
        version: u16,
        uuid: [u8; 16],
        read_only: bool,
        /// The client's id (for its `Listen` connection).
        client: u64,
    },
    Pong,
    Attr(Attr),
    /// Entries (in cookie order), and the cookie to ask from for more
    /// (`None`: no more).
    Entries {
        entries: Vec<Entry>,
        next: Option<u64>,
    },
    Totals(Totals),
    /// A change was made (and committed to the journal).
    Done,
    /// Answers `Open`, `OpenUnnamed` and `Adopt`: the handle, whether it
    /// was opened for writing, and the file's attributes.
    Opened {
        handle: u64,
        write: bool,
        attr: Attr,
        /// A regular file's whole layout, leased with the open (as a
        /// `Lease` from block 0 would answer), when it fits: the first read
        /// or fault needs no round trip.
        layout: Option<Box<OpenLayout>>,
    },
    /// Answers `Share`: the token another client adopts the description by.
    Shared {
        token: u64,
    },
    /// Answers `Seek` (the new offset) and `Advance` (the offset before).
    Offset {
        pos: u64,
    },
    /// Answers `DirPath`.
    Path {
        path: Vec<u8>,
    },
    /// Answers `Lease`: the layout from the asked block on, under lease
    /// epoch `epoch` of the file. `bad` lists file block ranges on media
    /// errors. `next`: the block to ask from for more extents. `serial`:
    /// this grant's number, increasing across every grant of the owner.
    Layout {
        ino: u64,
        epoch: u64,
        serial: u64,
        size: u64,
        extents: Vec<Ext>,
        bad: Vec<(u64, u64)>,
        next: Option<u64>,
    },
    /// Answers `Write`: bytes written.
    Written {
        n: u64,
    },
    /// Sent by the owner on a client's callback channel: unmap file pages
    /// `[from_blk, to_blk)` of `ino` (`to_blk` `u64::MAX`: to the end) from
    /// every mapping, drop its layout (leases of epoch `epoch` and older
    /// end) and answer `Recalled`; with `wait`, first wait for the pins on
    /// the blocks there (they are about to be freed: a truncate or punch).
    /// Pages outside the range stay mapped: their blocks do not change.
    Recall {
        ino: u64,
        epoch: u64,
        wait: bool,
        from_blk: u64,
        to_blk: u64,
    },
    /// Answers `Poison`: file pages found on the poisoned blocks.
    Poisoned {
        file_pages: u64,
    },
    /// Sent by the owner on a client's callback channel: file page `page`
    /// of `ino` lies on a media error. The client marks it bad in its
    /// lease and unmaps it from its mappings (an access then raises SIGBUS
    /// `BUS_MCEERR_AR`), then answers `Recalled` with this epoch.
    Poison {
        ino: u64,
        epoch: u64,
        page: u64,
    },
    /// Answers `GetLock`: the conflicting lock (`kind` 1 read, 2 write), or
    /// `kind` 0 when the lock could be taken.
    LockHeld {
        kind: u8,
        start: u64,
        end: u64,
        pid: i32,
    },
    /// Answers `Append`: where the write went, and the bytes of its first
    /// piece written.
    Appended {
        at: u64,
        n: u64,
    },
    /// Answers `Grant`: the file may grow from `size` up to `limit` bytes
    /// into blocks allocated for it; the grantee stores each new size in
    /// the word at device offset `word_at`
    /// ([`crate::format::v3::grant_word`] with `serial`). A `Settle` of
    /// `epoch` or later ends it (one may come before this answer does).
    Granted {
        size: u64,
        limit: u64,
        word_at: u64,
        serial: u32,
        epoch: u64,
    },
    /// Sent by the owner on a client's callback channel: stop growing
    /// `ino` under its size grant (the grant ends: its size word is final),
    /// unmap the pages past that size and drop the layout (leases of
    /// `epoch` and older end; the blocks past the end are about to be
    /// freed); answer `Recalled`.
    Settle {
        ino: u64,
        epoch: u64,
    },
    /// Answers `Stat`, `Lstat` (`then`: `Attr`) and the first page of a
    /// `ReadDir` (`then`: `Entries`) with the keys of the names the path
    /// walk looked up (and, for a listing, the directory's listing key;
    /// the owner's file system makes the keys): the client keeps the answer
    /// until the owner's change log names one of them ([`ring`]).
    Walked {
        deps: Vec<u64>,
        then: Box<Reply>,
    },
    /// Answers a change of names (create, mkdir, unlink, rmdir, rename,
    /// link, symlink, mknod, an open that creates or truncates; `then`:
    /// its own answer) with what the paths it named show right after it:
    /// each seed is the `Lstat` answer of its path, asked after the
    /// owner's change log held `at` records, the change's own among them.
    /// The client keeps a seed unless a record from `at` on names what it
    /// depends on ([`ring`]), so its next `stat` of a path it just changed
    /// needs no round trip.
    Changed {
        at: u64,
        seeds: Vec<Seed>,
        then: Box<Reply>,
    },
    /// Answers `Remap`: bytes shared; for a dedupe, whether the contents
    /// differed (nothing shared then).
    Remapped {
        bytes: u64,
        differs: bool,
    },
    Error {
        errno: i32,
        message: String,
    },
}

/// What can go wrong decoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("protocol version {0} (this build speaks {VERSION})")]
    Version(u16),
    #[error("unknown message kind {0}")]
    Kind(u16),
    #[error("message of {0} bytes (at most {MAX_MESSAGE})")]
    TooLong(usize),
    #[error("path of {0} bytes (at most {MAX_PATH})")]
    PathTooLong(usize),
}

impl ProtoError {
    /// The errno a peer answers a message with that fails to decode so.
    pub fn errno(&self) -> i32 {
        match self {
            ProtoError::PathTooLong(_) => libc::ENAMETOOLONG,
            _ => libc::EPROTO,
        }
    }
}

impl From<FormatError> for ProtoError {
    fn from(e: FormatError) -> Self {
        ProtoError::Malformed(e.to_string())
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub id: u64,
}

fn frame(kind: u16, id: u64, body: Writer) -> Vec<u8> {
    let body = body.buf;
    let mut w = Writer::with_capacity(HEADER + body.len());
    w.bytes(&MAGIC)
        .u16(VERSION)
        .u16(kind)
        .u64(id)
        .u32(body.len() as u32)
        .u32(0)
        .bytes(&body);
    w.buf
}

/// Split a message into its header and body, checking magic, version,
/// length and the reserved field.
pub fn unframe(msg: &[u8]) -> Result<(Header, &[u8]), ProtoError> {
    if msg.len() > MAX_MESSAGE {
        return Err(ProtoError::TooLong(msg.len()));
    }
    let mut r = Reader::new(msg, 0, "message header");
    if r.array::<4>()? != MAGIC {
        return Err(ProtoError::Malformed("bad magic".into()));
    }
    let version = r.u16()?;
    if version != VERSION {
        return Err(ProtoError::Version(version));
    }
    let kind = r.u16()?;
    let id = r.u64()?;
    let len = r.u32()? as usize;
    if r.u32()? != 0 {
        return Err(ProtoError::Malformed(
            "reserved header field not zero".into(),
        ));
    }
    if len != r.remaining() {
        return Err(ProtoError::Malformed(format!(
            "body of {} bytes, header says {len}",
            r.remaining()
        )));
    }
    Ok((Header { kind, id }, &msg[HEADER..]))
}

fn path_out(w: &mut Writer, p: &[u8]) {
    w.u32(p.len() as u32).bytes(p);
}

fn path_in(r: &mut Reader<'_>) -> Result<Vec<u8>, ProtoError> {
    let n = r.u32()? as usize;
    if n > MAX_PATH {
        return Err(ProtoError::PathTooLong(n));
    }
    if n == 0 {
        return Err(ProtoError::Malformed("empty path".into()));
    }
    let p = r.bytes(n)?;
    if p.contains(&0) {
        return Err(ProtoError::Malformed("NUL byte in a path".into()));
    }
    Ok(p.to_vec())
}

fn attr_out(w: &mut Writer, a: &Attr) {
    w.u64(a.ino)
        .u32(a.mode)
        .u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid)
        .u64(a.size)
        .u64(a.blocks)
        .u32(a.blksize)
        .u64(a.atime_ns)
        .u64(a.mtime_ns)
        .u64(a.ctime_ns)
        .u64(a.btime_ns)
        .u64(a.rdev);
}

fn attr_in(r: &mut Reader<'_>) -> Result<Attr, ProtoError> {
    Ok(Attr {
        ino: r.u64()?,
        mode: r.u32()?,
        nlink: r.u32()?,
        uid: r.u32()?,
        gid: r.u32()?,
        size: r.u64()?,
        blocks: r.u64()?,
        blksize: r.u32()?,
        atime_ns: r.u64()?,
        mtime_ns: r.u64()?,
        ctime_ns: r.u64()?,
        btime_ns: r.u64()?,
        rdev: r.u64()?,
    })
}

/// A layout's extents and bad ranges: a count and 25 bytes per extent, a
/// count and 16 bytes per range.
fn extents_out(w: &mut Writer, extents: &[Ext], bad: &[(u64, u64)]) {
    w.u32(extents.len() as u32);
    for e in extents {
        w.u64(e.file_blk)
            .u64(e.dev_blk)
            .u64(e.len)
            .u8(e.shared as u8);
    }
    w.u32(bad.len() as u32);
    for (a, n) in bad {
        w.u64(*a).u64(*n);
    }
}

type ExtentsAndBad = (Vec<Ext>, Vec<(u64, u64)>);

fn extents_in(r: &mut Reader<'_>) -> Result<ExtentsAndBad, ProtoError> {
    let n = r.u32()? as usize;
    if n > r.remaining() / 25 {
        return Err(ProtoError::Malformed(format!("{n} extents")));
    }
    let mut extents = Vec::with_capacity(n);
    for _ in 0..n {
        extents.push(Ext {
            file_blk: r.u64()?,
            dev_blk: r.u64()?,
            len: r.u64()?,
            shared: bool_in(r)?,
        });
    }
    let n = r.u32()? as usize;
    if n > r.remaining() / 16 {
        return Err(ProtoError::Malformed(format!("{n} bad ranges")));
    }
    let mut bad = Vec::with_capacity(n);
    for _ in 0..n {
        bad.push((r.u64()?, r.u64()?));
    }
    Ok((extents, bad))
}

/// An optional continuation point: a flag and a value (0 when absent).
fn next_out(w: &mut Writer, next: Option<u64>) {
    match next {
        Some(n) => w.u8(1).u64(n),
        None => w.u8(0).u64(0),
    };
}

fn next_in(r: &mut Reader<'_>) -> Result<Option<u64>, ProtoError> {
    let more = bool_in(r)?;
    let at = r.u64()?;
    Ok(more.then_some(at))
}

/// An optional user or group id ([`next_out`] of a `u32`).
fn id_in(r: &mut Reader<'_>, what: &str) -> Result<Option<u32>, ProtoError> {
    next_in(r)?
        .map(|v| u32::try_from(v).map_err(|_| ProtoError::Malformed(format!("{what} {v}"))))
        .transpose()
}

fn bool_in(r: &mut Reader<'_>) -> Result<bool, ProtoError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(ProtoError::Malformed(format!("boolean {b}"))),
    }
}

fn done(r: Reader<'_>) -> Result<(), ProtoError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(ProtoError::Malformed(format!("{n} trailing bytes"))),
    }
}

impl Request {
    /// The paths a change of names links or unlinks a name at, whose
    /// `Lstat` answers its `Changed` reply carries (a rename's both, a
    /// link's new name): none for any other request.
    pub fn changed_paths(&self) -> Vec<&[u8]> {
        match self {
            Request::Mkdir { path, .. }
            | Request::Create { path, .. }
            | Request::Unlink { path }
            | Request::Rmdir { path }
            | Request::Symlink { path, .. }
            | Request::Mknod { path, .. } => vec![path.as_slice()],
            Request::Open {
                path,
                create,
                trunc,
                ..
            } if *create || *trunc => vec![path.as_slice()],
            Request::Rename { from, to } | Request::Rename2 { from, to, .. } => {
                vec![from.as_slice(), to.as_slice()]
            }
            Request::Link { to, .. } => vec![to.as_slice()],
            Request::As { req, .. } => req.changed_paths(),
            _ => Vec::new(),
        }
    }

    /// Whether this is a change of names, or of attributes by path, whose
    /// effects the file system's trace describes (the owner logs the names
    /// and inodes it changed, [`ring`]): the namespace changes, an open
    /// that creates or truncates, and a chmod, chown or utimes by path.
    pub fn changes_names(&self) -> bool {
        match self {
            Request::Mkdir { .. }
            | Request::Create { .. }
            | Request::Unlink { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Rename2 { .. }
            | Request::Link { .. }
            | Request::Symlink { .. }
            | Request::Mknod { .. }
            | Request::OpenUnnamed { .. }
            | Request::SetAttr {
                target: Target::Path(_) | Target::LinkPath(_),
                ..
            }
            | Request::SetOwner {
                target: Target::Path(_) | Target::LinkPath(_),
                ..
            } => true,
            Request::Open { create, trunc, .. } => *create || *trunc,
            Request::As { req, .. } => req.changes_names(),
            _ => false,
        }
    }

    /// The open file a change touches alone, for a request that changes
    /// one file's data or attributes and no name (caches of other files and
    /// of directory listings stay): its handle.
    pub fn changes_one_file(&self) -> Option<u64> {
        match self {
            Request::Write { handle, .. }
            | Request::Append { handle, .. }
            | Request::Extend { handle, .. }
            | Request::Grant { handle, .. }
            | Request::Truncate { handle, .. }
            | Request::Fallocate { handle, .. }
            | Request::Touch { handle, .. }
            | Request::SetAttr {
                target: Target::Handle(handle),
                ..
            }
            | Request::SetOwner {
                target: Target::Handle(handle),
                ..
            } => Some(*handle),
            Request::Close { handle, mtime_ns } if *mtime_ns != 0 => Some(*handle),
            Request::As { req, .. } => req.changes_one_file(),
            _ => None,
        }
    }

    /// Whether this request may change what `stat` of some path shows (a
    /// name, a size, a mode, a time, a link count, the blocks): the owner
    /// logs it in its change log ([`ring`]) before it answers.
    pub fn changes_attributes(&self) -> bool {
        match self {
            Request::Hello { .. }
            | Request::Ping
            | Request::Ring
            | Request::Calls
            | Request::Stat { .. }
            | Request::Lstat { .. }
            | Request::Readlink { .. }
            | Request::RealDir { .. }
            | Request::ReadDir { .. }
            | Request::StatFs
            | Request::Listen { .. }
            | Request::Recalled { .. }
            | Request::Lease { .. }
            | Request::Fsync { .. }
            | Request::Channel { .. }
            | Request::Poison { .. }
            | Request::Lock { .. }
            | Request::GetLock { .. }
            | Request::FStat { .. }
            | Request::Sync
            | Request::Share { .. }
            | Request::Adopt { .. }
            | Request::ShareLocks { .. }
            | Request::AdoptLocks { .. }
            | Request::Seek { .. }
            | Request::Advance { .. }
            | Request::DirPath { .. }
            | Request::Mount { .. } => false,
            Request::Open { create, trunc, .. } => *create || *trunc,
            Request::Close { mtime_ns, .. } => *mtime_ns != 0,
            Request::As { req, .. } => req.changes_attributes(),
            Request::Mkdir { .. }
            | Request::Create { .. }
            | Request::Unlink { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Truncate { .. }
            | Request::Write { .. }
            | Request::Touch { .. }
            | Request::Extend { .. }
            | Request::Grant { .. }
            | Request::Iomap { .. }
            | Request::Link { .. }
            | Request::Rename2 { .. }
            | Request::SetAttr { .. }
            | Request::SetOwner { .. }
            | Request::Fallocate { .. }
            | Request::OpenUnnamed { .. }
            | Request::Remap { .. }
            | Request::Symlink { .. }
            | Request::Mknod { .. }
            | Request::Append { .. } => true,
        }
    }

    /// Whether the owner checks this request with the caller's
    /// credentials (a name looked up, made or removed; a mode, owner or
    /// time changed): a client sends it [`Request::As`] its calling
    /// thread. Calls on an open file's data (read, write, truncate,
    /// fallocate) are checked by how it was opened, as through a descriptor.
    pub fn checks_permissions(&self) -> bool {
        match self {
            Request::Stat { .. }
            | Request::Lstat { .. }
            | Request::Readlink { .. }
            | Request::Symlink { .. }
            | Request::Mknod { .. }
            | Request::RealDir { .. }
            | Request::ReadDir { .. }
            | Request::Mkdir { .. }
            | Request::Create { .. }
            | Request::Unlink { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Open { .. }
            | Request::DirPath { .. }
            | Request::Link { .. }
            | Request::Rename2 { .. }
            | Request::SetAttr { .. }
            | Request::SetOwner { .. }
            | Request::OpenUnnamed { .. } => true,
            Request::Hello { .. }
            | Request::Ping
            | Request::Ring
            | Request::Calls
            | Request::As { .. }
            | Request::StatFs
            | Request::Listen { .. }
            | Request::Recalled { .. }
            | Request::Close { .. }
            | Request::Lease { .. }
            | Request::Truncate { .. }
            | Request::Write { .. }
            | Request::Fsync { .. }
            | Request::Touch { .. }
            | Request::Extend { .. }
            | Request::Grant { .. }
            | Request::Channel { .. }
            | Request::Iomap { .. }
            | Request::Poison { .. }
            | Request::Lock { .. }
            | Request::GetLock { .. }
            | Request::FStat { .. }
            | Request::Sync
            | Request::Fallocate { .. }
            | Request::Append { .. }
            | Request::Share { .. }
            | Request::Adopt { .. }
            | Request::ShareLocks { .. }
            | Request::AdoptLocks { .. }
            | Request::Mount { .. }
            | Request::Seek { .. }
            | Request::Advance { .. }
            | Request::Remap { .. } => false,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Request::Hello { .. } => 1,
            Request::Ping => 2,
            Request::As { .. } => 64,
            Request::Stat { .. } => 3,
            Request::ReadDir { .. } => 4,
            Request::StatFs => 5,
            Request::Mkdir { .. } => 6,
            Request::Create { .. } => 7,
            Request::Unlink { .. } => 8,
            Request::Rmdir { .. } => 9,
            Request::Rename { .. } => 10,
            Request::Listen { .. } => 11,
            Request::Recalled { .. } => 12,
            Request::Open { .. } => 13,
            Request::Close { .. } => 14,
            Request::Lease { .. } => 15,
            Request::Truncate { .. } => 16,
            Request::Write { .. } => 17,
            Request::Fsync { .. } => 18,
            Request::Touch { .. } => 19,
            Request::Channel { .. } => 20,
            Request::Iomap { .. } => 21,
            Request::Poison { .. } => 22,
            Request::Lock { .. } => 23,
            Request::GetLock { .. } => 24,
            Request::FStat { .. } => 25,
            Request::Link { .. } => 26,
            Request::Rename2 { .. } => 27,
            Request::SetAttr { .. } => 28,
            Request::Sync => 29,
            Request::Fallocate { .. } => 30,
            Request::OpenUnnamed { .. } => 31,
            Request::Remap { .. } => 32,
            Request::Append { .. } => 33,
            Request::Share { .. } => 34,
            Request::Adopt { .. } => 35,
            Request::ShareLocks { .. } => 40,
            Request::AdoptLocks { .. } => 41,
            Request::Mount { .. } => 42,
            Request::Seek { .. } => 36,
            Request::Advance { .. } => 37,
            Request::DirPath { .. } => 38,
            Request::SetOwner { .. } => 39,
            Request::Lstat { .. } => 43,
            Request::Readlink { .. } => 44,
            Request::Symlink { .. } => 45,
            Request::RealDir { .. } => 46,
            Request::Mknod { .. } => 47,
            Request::Extend { .. } => 48,
            Request::Grant { .. } => 49,
            Request::Ring => 50,
            Request::Calls => 51,
        }
    }

    /// The message for this request with request id `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        // Most messages are a few hundred bytes: no regrowth on the way.
        let mut w = Writer::with_capacity(256);
        match self {
            Request::Hello { version, write } => {
                w.u16(*version).u8(*write as u8);
            }
            Request::Ping | Request::Ring | Request::Calls | Request::StatFs | Request::Sync => {}
            Request::As { claim, req } => {
                w.u32(claim.tid).u32(claim.uid).u32(claim.gid);
                w.u32(claim.groups.len() as u32);
                for g in &claim.groups {
                    w.u32(*g);
                }
                let inner = req.encode(0);
                w.u32(inner.len() as u32).bytes(&inner);
            }
            Request::ShareLocks { handles } => {
                w.u32(handles.len() as u32);
                for h in handles {
                    w.u64(*h);
                }
            }
            Request::FStat { handle } | Request::Share { handle } => {
                w.u64(*handle);
            }
            Request::Adopt { token } | Request::AdoptLocks { token } => {
                w.u64(*token);
            }
            Request::Mount { dir, read_only } => {
                path_out(&mut w, dir);
                w.u8(*read_only as u8);
            }
            Request::Seek {
                handle,
                whence,
                offset,
            } => {
                w.u64(*handle).u8(*whence).u64(*offset as u64);
            }
            Request::Advance { handle, len, clamp } => {
                w.u64(*handle).u64(*len).u8(*clamp as u8);
            }
            Request::Link { from, to } => {
                target_out(&mut w, from);
                path_out(&mut w, to);
            }
            Request::Rename2 { from, to, how } => {
                path_out(&mut w, from);
                path_out(&mut w, to);
                w.u8(*how);
            }
            Request::SetAttr {
                target,
                mode,
                atime_ns,
                mtime_ns,
            } => {
                target_out(&mut w, target);
                next_out(&mut w, mode.map(u64::from));
                next_out(&mut w, *atime_ns);
                next_out(&mut w, *mtime_ns);
            }
            Request::SetOwner { target, uid, gid } => {
                target_out(&mut w, target);
                next_out(&mut w, uid.map(u64::from));
                next_out(&mut w, gid.map(u64::from));
            }
            Request::Fallocate {
                handle,
                mode,
                offset,
                len,
                settled,
                dropped,
            } => {
                w.u64(*handle)
                    .u32(*mode)
                    .u64(*offset)
                    .u64(*len)
                    .u64(settled.0)
                    .u32(settled.1)
                    .u64(*dropped);
            }
            Request::Extend {
                handle,
                offset,
                size,
                epoch,
                settled,
                dropped,
            } => {
                w.u64(*handle)
                    .u64(*offset)
                    .u64(*size)
                    .u64(*epoch)
                    .u64(settled.0)
                    .u32(settled.1)
                    .u64(*dropped);
            }
            Request::Grant { handle, want } => {
                w.u64(*handle).u64(*want);
            }
            Request::OpenUnnamed {
                dir,
                mode,
                linkable,
            } => {
                path_out(&mut w, dir);
                w.u32(*mode).u8(*linkable as u8);
            }
            Request::Remap {
                src,
                src_off,
                dst,
                dst_off,
                len,
                dedupe,
            } => {
                w.u64(*src)
                    .u64(*src_off)
                    .u64(*dst)
                    .u64(*dst_off)
                    .u64(*len)
                    .u8(*dedupe as u8);
            }
            Request::Stat { path }
            | Request::Lstat { path }
            | Request::Readlink { path }
            | Request::RealDir { path }
            | Request::Unlink { path }
            | Request::Rmdir { path } => path_out(&mut w, path),
            Request::Symlink { target, path } => {
                path_out(&mut w, target);
                path_out(&mut w, path);
            }
            Request::Mknod { path, mode, rdev } => {
                path_out(&mut w, path);
                w.u32(*mode).u64(*rdev);
            }
            Request::ReadDir { path, from } => {
                path_out(&mut w, path);
                w.u64(*from);
            }
            Request::Mkdir { path, mode } | Request::Create { path, mode } => {
                path_out(&mut w, path);
                w.u32(*mode);
            }
            Request::Rename { from, to } => {
                path_out(&mut w, from);
                path_out(&mut w, to);
            }
            Request::Close { handle, mtime_ns } => {
                w.u64(*handle).u64(*mtime_ns);
            }
            Request::Listen { client: a }
            | Request::Channel { client: a }
            | Request::Fsync { handle: a } => {
                w.u64(*a);
            }
            Request::Recalled { ino, epoch, busy } => {
                w.u64(*ino).u64(*epoch).u8(*busy as u8);
            }
            Request::Iomap {
                handle,
                op,
                from_blk,
                to_blk,
            } => {
                w.u64(*handle).u8(*op as u8).u64(*from_blk).u64(*to_blk);
            }
            Request::Poison {
                offset,
                len,
                inject,
            } => {
                w.u64(*offset).u64(*len).u8(*inject as u8);
            }
            Request::Lock {
                handle,
                scope,
                kind,
                start,
                end,
                wait,
            } => {
                w.u64(*handle)
                    .u8(*scope as u8)
                    .u8(*kind)
                    .u64(*start)
                    .u64(*end)
                    .u8(*wait as u8);
            }
            Request::GetLock {
                handle,
                scope,
                kind,
                start,
                end,
            } => {
                w.u64(*handle)
                    .u8(*scope as u8)
                    .u8(*kind)
                    .u64(*start)
                    .u64(*end);
            }
            Request::Lease {
                handle: a,
                from_blk: b,
            }
            | Request::Touch {
                handle: a,
                mtime_ns: b,
            } => {
                w.u64(*a).u64(*b);
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
                path_out(&mut w, path);
                w.u8(*read as u8)
                    .u8(*write as u8)
                    .u8(*create as u8)
                    .u8(*excl as u8)
                    .u8(*trunc as u8)
                    .u8(*nofollow as u8)
                    .u32(*mode);
            }
            Request::DirPath {
                ino,
                btime_ns,
                hint,
            } => {
                w.u64(*ino).u64(*btime_ns);
                path_out(&mut w, hint);
            }
            Request::Truncate {
                handle,
                size,
                settled,
                dropped,
            } => {
                w.u64(*handle)
                    .u64(*size)
                    .u64(settled.0)
                    .u32(settled.1)
                    .u64(*dropped);
            }
            Request::Write {
                handle,
                offset,
                data,
                dropped,
            } => {
                w.u64(*handle)
                    .u64(*offset)
                    .u32(data.len() as u32)
                    .bytes(data)
                    .u64(*dropped);
            }
            Request::Append {
                handle,
                total,
                data,
                settled,
                dropped,
            } => {
                w.u64(*handle)
                    .u64(*total)
                    .u32(data.len() as u32)
                    .bytes(data)
                    .u64(settled.0)
                    .u32(settled.1)
                    .u64(*dropped);
            }
        }
        frame(self.kind(), id, w)
    }

    /// Decode a request message.
    pub fn decode(msg: &[u8]) -> Result<(u64, Request), ProtoError> {
        let (h, body) = unframe(msg)?;
        let mut r = Reader::new(body, 0, "request");
        let req = match h.kind {
            1 => Request::Hello {
                version: r.u16()?,
                write: bool_in(&mut r)?,
            },
            2 => Request::Ping,
            50 => Request::Ring,
            51 => Request::Calls,
            64 => {
                let (tid, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
                let n = r.u32()? as usize;
                if n > MAX_GROUPS {
                    return Err(ProtoError::Malformed(format!("{n} groups")));
                }
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push(r.u32()?);
                }
                let len = r.u32()? as usize;
                let inner = r.bytes(len)?;
                // One level: the inner message's kind is read before it is
                // decoded, so no nesting recurses.
                if unframe(inner)?.0.kind == 64 {
                    return Err(ProtoError::Malformed("As inside As".into()));
                }
                let (_, req) = Request::decode(inner)?;
                if !req.checks_permissions() {
                    return Err(ProtoError::Malformed(format!(
                        "As around a request checked without credentials (kind {})",
                        req.kind()
                    )));
                }
                Request::As {
                    claim: Claim {
                        tid,
                        uid,
                        gid,
                        groups,
                    },
                    req: Box::new(req),
                }
            }
            3 => Request::Stat {
                path: path_in(&mut r)?,
            },
            4 => Request::ReadDir {
                path: path_in(&mut r)?,
                from: r.u64()?,
            },
            5 => Request::StatFs,
            6 => Request::Mkdir {
                path: path_in(&mut r)?,
                mode: r.u32()?,
            },
            7 => Request::Create {
                path: path_in(&mut r)?,
                mode: r.u32()?,
            },
            8 => Request::Unlink {
                path: path_in(&mut r)?,
            },
            9 => Request::Rmdir {
                path: path_in(&mut r)?,
            },
            10 => Request::Rename {
                from: path_in(&mut r)?,
                to: path_in(&mut r)?,
            },
            11 => Request::Listen { client: r.u64()? },
            12 => Request::Recalled {
                ino: r.u64()?,
                epoch: r.u64()?,
                busy: bool_in(&mut r)?,
            },
            13 => Request::Open {
                path: path_in(&mut r)?,
                read: bool_in(&mut r)?,
                write: bool_in(&mut r)?,
                create: bool_in(&mut r)?,
                excl: bool_in(&mut r)?,
                trunc: bool_in(&mut r)?,
                nofollow: bool_in(&mut r)?,
                mode: r.u32()?,
            },
            43 => Request::Lstat {
                path: path_in(&mut r)?,
            },
            44 => Request::Readlink {
                path: path_in(&mut r)?,
            },
            45 => Request::Symlink {
                target: path_in(&mut r)?,
                path: path_in(&mut r)?,
            },
            46 => Request::RealDir {
                path: path_in(&mut r)?,
            },
            47 => Request::Mknod {
                path: path_in(&mut r)?,
                mode: r.u32()?,
                rdev: r.u64()?,
            },
            38 => Request::DirPath {
                ino: r.u64()?,
                btime_ns: r.u64()?,
                hint: path_in(&mut r)?,
            },
            14 => Request::Close {
                handle: r.u64()?,
                mtime_ns: r.u64()?,
            },
            18 => Request::Fsync { handle: r.u64()? },
            19 => Request::Touch {
                handle: r.u64()?,
                mtime_ns: r.u64()?,
            },
            15 => Request::Lease {
                handle: r.u64()?,
                from_blk: r.u64()?,
            },
            16 => Request::Truncate {
                handle: r.u64()?,
                size: r.u64()?,
                settled: (r.u64()?, r.u32()?),
                dropped: r.u64()?,
            },
            17 => {
                let (handle, offset) = (r.u64()?, r.u64()?);
                let n = r.u32()? as usize;
                if n > MAX_WRITE {
                    return Err(ProtoError::Malformed(format!("write of {n} bytes")));
                }
                Request::Write {
                    handle,
                    offset,
                    data: r.bytes(n)?.to_vec(),
                    dropped: r.u64()?,
                }
            }
            20 => Request::Channel { client: r.u64()? },
            21 => Request::Iomap {
                handle: r.u64()?,
                op: match r.u8()? {
                    1 => IomapOp::Alloc,
                    2 => IomapOp::Unshare,
                    3 => IomapOp::Relocate,
                    o => return Err(ProtoError::Malformed(format!("iomap op {o}"))),
                },
                from_blk: r.u64()?,
                to_blk: r.u64()?,
            },
            22 => Request::Poison {
                offset: r.u64()?,
                len: r.u64()?,
                inject: bool_in(&mut r)?,
            },
            23 => Request::Lock {
                handle: r.u64()?,
                scope: scope_in(&mut r)?,
                kind: kind_in(&mut r, true)?,
                start: r.u64()?,
                end: r.u64()?,
                wait: bool_in(&mut r)?,
            },
            24 => Request::GetLock {
                handle: r.u64()?,
                scope: scope_in(&mut r)?,
                kind: kind_in(&mut r, false)?,
                start: r.u64()?,
                end: r.u64()?,
            },
            25 => Request::FStat { handle: r.u64()? },
            26 => Request::Link {
                from: target_in(&mut r)?,
                to: path_in(&mut r)?,
            },
            27 => Request::Rename2 {
                from: path_in(&mut r)?,
                to: path_in(&mut r)?,
                how: match r.u8()? {
                    h @ 0..=2 => h,
                    h => return Err(ProtoError::Malformed(format!("rename flags {h}"))),
                },
            },
            39 => Request::SetOwner {
                target: target_in(&mut r)?,
                uid: id_in(&mut r, "uid")?,
                gid: id_in(&mut r, "gid")?,
            },
            28 => Request::SetAttr {
                target: target_in(&mut r)?,
                mode: match next_in(&mut r)? {
                    Some(m) => Some(
                        u32::try_from(m).map_err(|_| ProtoError::Malformed(format!("mode {m}")))?,
                    ),
                    None => None,
                },
                atime_ns: next_in(&mut r)?,
                mtime_ns: next_in(&mut r)?,
            },
            29 => Request::Sync,
            30 => Request::Fallocate {
                handle: r.u64()?,
                mode: r.u32()?,
                offset: r.u64()?,
                len: r.u64()?,
                settled: (r.u64()?, r.u32()?),
                dropped: r.u64()?,
            },
            48 => Request::Extend {
                handle: r.u64()?,
                offset: r.u64()?,
                size: r.u64()?,
                epoch: r.u64()?,
                settled: (r.u64()?, r.u32()?),
                dropped: r.u64()?,
            },
            49 => Request::Grant {
                handle: r.u64()?,
                want: r.u64()?,
            },
            31 => Request::OpenUnnamed {
                dir: path_in(&mut r)?,
                mode: r.u32()?,
                linkable: bool_in(&mut r)?,
            },
            33 => {
                let (handle, total) = (r.u64()?, r.u64()?);
                let n = r.u32()? as usize;
                if n > MAX_WRITE || n as u64 > total {
                    return Err(ProtoError::Malformed(format!(
                        "append of {n} bytes of {total}"
                    )));
                }
                Request::Append {
                    handle,
                    total,
                    data: r.bytes(n)?.to_vec(),
                    settled: (r.u64()?, r.u32()?),
                    dropped: r.u64()?,
                }
            }
            34 => Request::Share { handle: r.u64()? },
            35 => Request::Adopt { token: r.u64()? },
            40 => {
                let n = r.u32()? as usize;
                if n > MAX_HANDLES_SHARED {
                    return Err(ProtoError::Malformed(format!("{n} handles")));
                }
                let mut handles = Vec::with_capacity(n);
                for _ in 0..n {
                    handles.push(r.u64()?);
                }
                Request::ShareLocks { handles }
            }
            41 => Request::AdoptLocks { token: r.u64()? },
            42 => Request::Mount {
                dir: path_in(&mut r)?,
                read_only: bool_in(&mut r)?,
            },
            36 => Request::Seek {
                handle: r.u64()?,
                whence: match r.u8()? {
                    w @ 0..=2 => w,
                    w => return Err(ProtoError::Malformed(format!("whence {w}"))),
                },
                offset: r.u64()? as i64,
            },
            37 => Request::Advance {
                handle: r.u64()?,
                len: r.u64()?,
                clamp: bool_in(&mut r)?,
            },
            32 => Request::Remap {
                src: r.u64()?,
                src_off: r.u64()?,
                dst: r.u64()?,
                dst_off: r.u64()?,
                len: r.u64()?,
                dedupe: bool_in(&mut r)?,
            },
            k => return Err(ProtoError::Kind(k)),
        };
        done(r)?;
        Ok((h.id, req))
    }
}

fn target_out(w: &mut Writer, t: &Target) {
    match t {
        Target::Path(p) => {
            w.u8(0);
            path_out(w, p);
        }
        Target::Handle(h) => {
            w.u8(1).u64(*h);
        }
        Target::LinkPath(p) => {
            w.u8(2);
            path_out(w, p);
        }
    }
}

fn target_in(r: &mut Reader<'_>) -> Result<Target, ProtoError> {
    match r.u8()? {
        0 => Ok(Target::Path(path_in(r)?)),
        1 => Ok(Target::Handle(r.u64()?)),
        2 => Ok(Target::LinkPath(path_in(r)?)),
        t => Err(ProtoError::Malformed(format!("target kind {t}"))),
    }
}

fn scope_in(r: &mut Reader<'_>) -> Result<LockScope, ProtoError> {
    match r.u8()? {
        1 => Ok(LockScope::Posix),
        2 => Ok(LockScope::Ofd),
        3 => Ok(LockScope::Flock),
        s => Err(ProtoError::Malformed(format!("lock scope {s}"))),
    }
}

/// A lock kind: 1 read, 2 write, and 0 (unlock) where `unlock` allows it.
fn kind_in(r: &mut Reader<'_>, unlock: bool) -> Result<u8, ProtoError> {
    match r.u8()? {
        0 if unlock => Ok(0),
        k @ (1 | 2) => Ok(k),
        k => Err(ProtoError::Malformed(format!("lock kind {k}"))),
    }
}

/// Keys in a `Walked` list at most (the owner sends no more than the file
/// system's trace keeps).
pub const MAX_KEYS: usize = 64;

fn keys_out(w: &mut Writer, keys: &[u64]) {
    w.u16(keys.len() as u16);
    for k in keys {
        w.u64(*k);
    }
}

fn keys_in(r: &mut Reader<'_>) -> Result<Vec<u64>, ProtoError> {
    let n = r.u16()? as usize;
    if n > MAX_KEYS {
        return Err(ProtoError::Malformed(format!("{n} keys")));
    }
    (0..n).map(|_| Ok(r.u64()?)).collect()
}

/// The reply a `Walked` or `Changed` wraps: the rest of the body, a whole
/// message of its own, which may not wrap another.
fn wrapped_in(r: &mut Reader<'_>) -> Result<Box<Reply>, ProtoError> {
    let rest = r.bytes(r.remaining())?;
    match Reply::decode(rest)?.1 {
        Reply::Walked { .. } | Reply::Changed { .. } => Err(ProtoError::Malformed(
            "a wrapped reply wraps another".into(),
        )),
        then => Ok(Box::new(then)),
    }
}

/// Bytes of one encoded entry (for filling a reply up to [`MAX_MESSAGE`]).
pub fn entry_bytes(e: &Entry) -> usize {
    8 + 2 + e.name.len() + 8 + 1
}

/// Room for entries in one `Entries` reply (inside a `Walked`).
pub const ENTRIES_ROOM: usize = MAX_MESSAGE - HEADER - 4 - 9 - (HEADER + 2 + 8 * MAX_KEYS);

/// Longest error message sent (longer ones are cut at a char boundary).
const MAX_ERROR_TEXT: usize = 1024;

impl Reply {
    fn kind(&self) -> u16 {
        match self {
            Reply::Hello { .. } => 101,
            Reply::Pong => 102,
            Reply::Attr(_) => 103,
            Reply::Entries { .. } => 104,
            Reply::Totals(_) => 105,
            Reply::Done => 106,
            Reply::Error { .. } => 107,
            Reply::Opened { .. } => 108,
            Reply::Layout { .. } => 109,
            Reply::Written { .. } => 110,
            Reply::Recall { .. } => 111,
            Reply::Poisoned { .. } => 112,
            Reply::Poison { .. } => 113,
            Reply::LockHeld { .. } => 114,
            Reply::Remapped { .. } => 115,
            Reply::Appended { .. } => 116,
            Reply::Shared { .. } => 117,
            Reply::Offset { .. } => 118,
            Reply::Path { .. } => 120,
            Reply::Granted { .. } => 121,
            Reply::Settle { .. } => 122,
            Reply::Walked { .. } => 123,
            Reply::Changed { .. } => 124,
        }
    }

    /// The message for this reply to request `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        // Most messages are a few hundred bytes: no regrowth on the way.
        let mut w = Writer::with_capacity(256);
        match self {
            Reply::Hello {
                version,
                uuid,
                read_only,
                client,
            } => {
                w.u16(*version)
                    .bytes(uuid)
                    .u8(*read_only as u8)
                    .u64(*client);
            }
            Reply::Pong | Reply::Done => {}
            Reply::Attr(a) => attr_out(&mut w, a),
            Reply::Opened {
                handle,
                write,
                attr,
                layout,
            } => {
                w.u64(*handle).u8(*write as u8);
                attr_out(&mut w, attr);
                match layout {
                    None => {
                        w.u8(0);
                    }
                    Some(l) => {
                        w.u8(1).u64(l.epoch).u64(l.serial).u64(l.size);
                        extents_out(&mut w, &l.extents, &l.bad);
                    }
                }
            }
            Reply::Shared { token } => {
                w.u64(*token);
            }
            Reply::Offset { pos } => {
                w.u64(*pos);
            }
            Reply::Path { path } => {
                path_out(&mut w, path);
            }
            Reply::Layout {
                ino,
                epoch,
                serial,
                size,
                extents,
                bad,
                next,
            } => {
                w.u64(*ino).u64(*epoch).u64(*serial).u64(*size);
                extents_out(&mut w, extents, bad);
                next_out(&mut w, *next);
            }
            Reply::Written { n } => {
                w.u64(*n);
            }
            Reply::Recall {
                ino,
                epoch,
                wait,
                from_blk,
                to_blk,
            } => {
                w.u64(*ino)
                    .u64(*epoch)
                    .u8(*wait as u8)
                    .u64(*from_blk)
                    .u64(*to_blk);
            }
            Reply::Poisoned { file_pages } => {
                w.u64(*file_pages);
            }
            Reply::Poison { ino, epoch, page } => {
                w.u64(*ino).u64(*epoch).u64(*page);
            }
            Reply::LockHeld {
                kind,
                start,
                end,
                pid,
            } => {
                w.u8(*kind).u64(*start).u64(*end).u32(*pid as u32);
            }
            Reply::Remapped { bytes, differs } => {
                w.u64(*bytes).u8(*differs as u8);
            }
            Reply::Appended { at, n } => {
                w.u64(*at).u64(*n);
            }
            Reply::Granted {
                size,
                limit,
                word_at,
                serial,
                epoch,
            } => {
                w.u64(*size)
                    .u64(*limit)
                    .u64(*word_at)
                    .u32(*serial)
                    .u64(*epoch);
            }
            Reply::Settle { ino, epoch } => {
                w.u64(*ino).u64(*epoch);
            }
            Reply::Walked { deps, then } => {
                keys_out(&mut w, deps);
                w.bytes(&then.encode(0));
            }
            Reply::Changed { at, seeds, then } => {
                w.u64(*at).u8(seeds.len() as u8);
                for s in seeds {
                    path_out(&mut w, &s.path);
                    keys_out(&mut w, &s.deps);
                    match &s.attr {
                        None => {
                            w.u8(0);
                        }
                        Some(a) => {
                            w.u8(1);
                            attr_out(&mut w, a);
                        }
                    }
                }
                w.bytes(&then.encode(0));
            }
            Reply::Entries { entries, next } => {
                w.u32(entries.len() as u32);
                for e in entries {
                    w.u64(e.cookie)
                        .u16(e.name.len() as u16)
                        .bytes(&e.name)
                        .u64(e.ino)
                        .u8(e.kind);
                }
                next_out(&mut w, *next);
            }
            Reply::Totals(t) => {
                w.u64(t.block_size)
                    .u64(t.total_blocks)
                    .u64(t.data_blocks)
                    .u64(t.free_blocks)
                    .u64(t.inodes)
                    .u64(t.metadata_bytes);
            }
            Reply::Error { errno, message } => {
                let mut end = message.len().min(MAX_ERROR_TEXT);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                w.u32(*errno as u32)
                    .u32(end as u32)
                    .bytes(&message.as_bytes()[..end]);
            }
        }
        frame(self.kind(), id, w)
    }

    /// Decode a reply message.
    pub fn decode(msg: &[u8]) -> Result<(u64, Reply), ProtoError> {
        let (h, body) = unframe(msg)?;
        let mut r = Reader::new(body, 0, "reply");
        let rep = match h.kind {
            101 => Reply::Hello {
                version: r.u16()?,
                uuid: r.array::<16>()?,
                read_only: bool_in(&mut r)?,
                client: r.u64()?,
            },
            102 => Reply::Pong,
            103 => Reply::Attr(attr_in(&mut r)?),
            104 => {
                // Each entry is at least 20 bytes: the count cannot ask for
                // more than the body holds.
                let n = r.u32()? as usize;
                if n > r.remaining() / 20 {
                    return Err(ProtoError::Malformed(format!("{n} entries")));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let cookie = r.u64()?;
                    let len = r.u16()? as usize;
                    if len == 0 || len > MAX_NAME {
                        return Err(ProtoError::Malformed(format!("name of {len} bytes")));
                    }
                    let name = r.bytes(len)?.to_vec();
                    if name.contains(&0) || name.contains(&b'/') {
                        return Err(ProtoError::Malformed("'/' or NUL in a name".into()));
                    }
                    entries.push(Entry {
                        cookie,
                        name,
                        ino: r.u64()?,
                        kind: r.u8()?,
                    });
                }
                Reply::Entries {
                    entries,
                    next: next_in(&mut r)?,
                }
            }
            105 => Reply::Totals(Totals {
                block_size: r.u64()?,
                total_blocks: r.u64()?,
                data_blocks: r.u64()?,
                free_blocks: r.u64()?,
                inodes: r.u64()?,
                metadata_bytes: r.u64()?,
            }),
            106 => Reply::Done,
            107 => {
                let errno = r.u32()? as i32;
                let n = r.u32()? as usize;
                if n > MAX_ERROR_TEXT {
                    return Err(ProtoError::Malformed(format!("error text of {n} bytes")));
                }
                let message = String::from_utf8_lossy(r.bytes(n)?).into_owned();
                Reply::Error { errno, message }
            }
            108 => Reply::Opened {
                handle: r.u64()?,
                write: bool_in(&mut r)?,
                attr: attr_in(&mut r)?,
                layout: if bool_in(&mut r)? {
                    let (epoch, serial, size) = (r.u64()?, r.u64()?, r.u64()?);
                    let (extents, bad) = extents_in(&mut r)?;
                    Some(Box::new(OpenLayout {
                        epoch,
                        serial,
                        size,
                        extents,
                        bad,
                    }))
                } else {
                    None
                },
            },
            117 => Reply::Shared { token: r.u64()? },
            118 => Reply::Offset { pos: r.u64()? },
            120 => Reply::Path {
                path: path_in(&mut r)?,
            },
            109 => {
                let (ino, epoch, serial, size) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                let (extents, bad) = extents_in(&mut r)?;
                Reply::Layout {
                    ino,
                    epoch,
                    serial,
                    size,
                    extents,
                    bad,
                    next: next_in(&mut r)?,
                }
            }
            110 => Reply::Written { n: r.u64()? },
            111 => Reply::Recall {
                ino: r.u64()?,
                epoch: r.u64()?,
                wait: bool_in(&mut r)?,
                from_blk: r.u64()?,
                to_blk: r.u64()?,
            },
            112 => Reply::Poisoned {
                file_pages: r.u64()?,
            },
            113 => Reply::Poison {
                ino: r.u64()?,
                epoch: r.u64()?,
                page: r.u64()?,
            },
            114 => Reply::LockHeld {
                kind: kind_in(&mut r, true)?,
                start: r.u64()?,
                end: r.u64()?,
                pid: r.u32()? as i32,
            },
            115 => Reply::Remapped {
                bytes: r.u64()?,
                differs: bool_in(&mut r)?,
            },
            116 => Reply::Appended {
                at: r.u64()?,
                n: r.u64()?,
            },
            121 => Reply::Granted {
                size: r.u64()?,
                limit: r.u64()?,
                word_at: r.u64()?,
                serial: r.u32()?,
                epoch: r.u64()?,
            },
            122 => Reply::Settle {
                ino: r.u64()?,
                epoch: r.u64()?,
            },
            123 => Reply::Walked {
                deps: keys_in(&mut r)?,
                then: wrapped_in(&mut r)?,
            },
            124 => {
                let at = r.u64()?;
                let n = r.u8()? as usize;
                if n > MAX_SEEDS {
                    return Err(ProtoError::Malformed(format!("{n} seeds")));
                }
                let mut seeds = Vec::with_capacity(n);
                for _ in 0..n {
                    seeds.push(Seed {
                        path: path_in(&mut r)?,
                        deps: keys_in(&mut r)?,
                        attr: if bool_in(&mut r)? {
                            Some(attr_in(&mut r)?)
                        } else {
                            None
                        },
                    });
                }
                Reply::Changed {
                    at,
                    seeds,
                    then: wrapped_in(&mut r)?,
                }
            }
            k => return Err(ProtoError::Kind(k)),
        };
        done(r)?;
        Ok((h.id, rep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 1..64)
    }

    fn scope() -> impl Strategy<Value = LockScope> {
        prop_oneof![
            Just(LockScope::Posix),
            Just(LockScope::Ofd),
            Just(LockScope::Flock)
        ]
    }

    fn target() -> impl Strategy<Value = Target> {
        prop_oneof![
            path().prop_map(Target::Path),
            any::<u64>().prop_map(Target::Handle),
            path().prop_map(Target::LinkPath)
        ]
    }

    /// The requests added for the shim's calls (a second strategy: one
    /// `prop_oneof!` takes a bounded number of arms).
    fn file_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u64>().prop_map(|handle| Request::FStat { handle }),
            (target(), path()).prop_map(|(from, to)| Request::Link { from, to }),
            (path(), path(), 0..3u8).prop_map(|(from, to, how)| Request::Rename2 { from, to, how }),
            (
                target(),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(target, mode, atime_ns, mtime_ns)| Request::SetAttr {
                    target,
                    mode,
                    atime_ns,
                    mtime_ns
                }),
            Just(Request::Sync),
            (
                target(),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(target, uid, gid)| Request::SetOwner { target, uid, gid }),
            any::<u64>().prop_map(|handle| Request::Share { handle }),
            any::<u64>().prop_map(|token| Request::Adopt { token }),
            proptest::collection::vec(any::<u64>(), 0..8)
                .prop_map(|handles| Request::ShareLocks { handles }),
            any::<u64>().prop_map(|token| Request::AdoptLocks { token }),
            (path(), any::<bool>()).prop_map(|(dir, read_only)| Request::Mount { dir, read_only }),
            (any::<u64>(), 0..3u8, any::<i64>()).prop_map(|(handle, whence, offset)| {
                Request::Seek {
                    handle,
                    whence,
                    offset,
                }
            }),
            (any::<u64>(), any::<u64>(), any::<bool>())
                .prop_map(|(handle, len, clamp)| Request::Advance { handle, len, clamp }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300),
                0..1000u64
            )
                .prop_map(|(handle, data, extra)| Request::Append {
                    handle,
                    total: data.len() as u64 + extra,
                    settled: (extra, data.len() as u32),
                    dropped: handle ^ extra,
                    data,
                }),
            (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
                |(handle, mode, offset, len)| Request::Fallocate {
                    handle,
                    mode,
                    offset,
                    len,
                    settled: (offset ^ len, mode),
                    dropped: handle.rotate_left(3),
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(handle, offset, size, epoch)| Request::Extend {
                    handle,
                    offset,
                    size,
                    epoch,
                    settled: (size, epoch as u32),
                    dropped: offset ^ epoch,
                }
            ),
            (any::<u64>(), any::<u64>()).prop_map(|(handle, want)| Request::Grant { handle, want }),
            (path(), any::<u32>(), any::<bool>()).prop_map(|(dir, mode, linkable)| {
                Request::OpenUnnamed {
                    dir,
                    mode,
                    linkable,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(src, src_off, dst, dst_off, len, dedupe)| Request::Remap {
                    src,
                    src_off,
                    dst,
                    dst_off,
                    len,
                    dedupe
                }),
        ]
    }

    /// A request sent as a thread with credentials of its own.
    fn claimed_request() -> impl Strategy<Value = Request> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..40),
            prop_oneof![request(), file_request()]
                .prop_filter("checked", |r| r.checks_permissions()),
        )
            .prop_map(|(tid, uid, gid, groups, req)| Request::As {
                claim: Claim {
                    tid,
                    uid,
                    gid,
                    groups,
                },
                req: Box::new(req),
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), any::<bool>())
                .prop_map(|(version, write)| Request::Hello { version, write }),
            Just(Request::Ping),
            Just(Request::Ring),
            Just(Request::Calls),
            path().prop_map(|path| Request::Stat { path }),
            path().prop_map(|path| Request::Lstat { path }),
            path().prop_map(|path| Request::Readlink { path }),
            path().prop_map(|path| Request::RealDir { path }),
            (path(), path()).prop_map(|(target, path)| Request::Symlink { target, path }),
            (path(), any::<u32>(), any::<u64>()).prop_map(|(path, mode, rdev)| Request::Mknod {
                path,
                mode,
                rdev
            }),
            (path(), any::<u64>()).prop_map(|(path, from)| Request::ReadDir { path, from }),
            Just(Request::StatFs),
            (path(), any::<u32>()).prop_map(|(path, mode)| Request::Mkdir { path, mode }),
            (path(), any::<u32>()).prop_map(|(path, mode)| Request::Create { path, mode }),
            path().prop_map(|path| Request::Unlink { path }),
            path().prop_map(|path| Request::Rmdir { path }),
            (path(), path()).prop_map(|(from, to)| Request::Rename { from, to }),
            any::<u64>().prop_map(|client| Request::Listen { client }),
            (any::<u64>(), any::<u64>(), any::<bool>())
                .prop_map(|(ino, epoch, busy)| Request::Recalled { ino, epoch, busy }),
            any::<u64>().prop_map(|client| Request::Channel { client }),
            (
                any::<u64>(),
                scope(),
                0..3u8,
                any::<u64>(),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(handle, scope, kind, start, end, wait)| Request::Lock {
                    handle,
                    scope,
                    kind,
                    start,
                    end,
                    wait
                }),
            (any::<u64>(), scope(), 1..3u8, any::<u64>(), any::<u64>()).prop_map(
                |(handle, scope, kind, start, end)| Request::GetLock {
                    handle,
                    scope,
                    kind,
                    start,
                    end
                }
            ),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(offset, len, inject)| {
                Request::Poison {
                    offset,
                    len,
                    inject,
                }
            }),
            (
                any::<u64>(),
                prop_oneof![
                    Just(IomapOp::Alloc),
                    Just(IomapOp::Unshare),
                    Just(IomapOp::Relocate)
                ],
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(handle, op, from_blk, to_blk)| Request::Iomap {
                    handle,
                    op,
                    from_blk,
                    to_blk
                }),
            (
                path(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                (any::<bool>(), any::<u32>(), any::<bool>())
            )
                .prop_map(
                    |(path, write, create, excl, trunc, (nofollow, mode, read))| {
                        Request::Open {
                            path,
                            read,
                            write,
                            create,
                            excl,
                            trunc,
                            nofollow,
                            mode,
                        }
                    }
                ),
            (any::<u64>(), any::<u64>(), path()).prop_map(|(ino, btime_ns, hint)| {
                Request::DirPath {
                    ino,
                    btime_ns,
                    hint,
                }
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, mtime_ns)| Request::Close { handle, mtime_ns }),
            any::<u64>().prop_map(|handle| Request::Fsync { handle }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, mtime_ns)| Request::Touch { handle, mtime_ns }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, from_blk)| Request::Lease { handle, from_blk }),
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(handle, size, serial)| {
                Request::Truncate {
                    handle,
                    size,
                    settled: (handle ^ size, serial),
                    dropped: size.rotate_left(7),
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(handle, offset, data)| Request::Write {
                    handle,
                    offset,
                    dropped: handle ^ offset,
                    data,
                }),
        ]
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((1u8..=255).prop_filter("no slash", |b| *b != b'/'), 1..32)
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let keys = || proptest::collection::vec(any::<u64>(), 0..=MAX_KEYS);
        prop_oneof![
            4 => leaf_reply(),
            1 => (keys(), leaf_reply()).prop_map(|(deps, then)| Reply::Walked {
                deps,
                then: Box::new(then)
            }),
            1 => (
                any::<u64>(),
                proptest::collection::vec(seed(), 0..=MAX_SEEDS),
                leaf_reply()
            )
                .prop_map(|(at, seeds, then)| Reply::Changed {
                    at,
                    seeds,
                    then: Box::new(then)
                }),
        ]
    }

    fn attr() -> impl Strategy<Value = Attr> {
        (proptest::array::uniform12(any::<u64>()), any::<u64>()).prop_map(|(v, rdev)| Attr {
            ino: v[0],
            mode: v[1] as u32,
            nlink: v[2] as u32,
            uid: v[3] as u32,
            gid: v[4] as u32,
            size: v[5],
            blocks: v[6],
            blksize: v[7] as u32,
            atime_ns: v[8],
            mtime_ns: v[9],
            ctime_ns: v[10],
            btime_ns: v[11],
            rdev,
        })
    }

    fn seed() -> impl Strategy<Value = Seed> {
        (
            path(),
            proptest::collection::vec(any::<u64>(), 0..=MAX_KEYS),
            proptest::option::of(attr()),
        )
            .prop_map(|(path, deps, attr)| Seed { path, deps, attr })
    }

    /// Every reply but the wrapping ones.
    fn leaf_reply() -> impl Strategy<Value = Reply> {
        let entry = (any::<u64>(), name(), any::<u64>(), any::<u8>()).prop_map(
            |(cookie, name, ino, kind)| Entry {
                cookie,
                name,
                ino,
                kind,
            },
        );
        prop_oneof![
            (any::<u16>(), any::<[u8; 16]>(), any::<bool>(), any::<u64>()).prop_map(
                |(version, uuid, read_only, client)| {
                    Reply::Hello {
                        version,
                        uuid,
                        read_only,
                        client,
                    }
                }
            ),
            Just(Reply::Pong),
            attr().prop_map(Reply::Attr),
            (any::<u64>(), any::<bool>(), attr()).prop_map(|(handle, write, attr)| {
                Reply::Opened {
                    handle,
                    write,
                    attr,
                    layout: None,
                }
            }),
            (
                any::<u64>(),
                attr(),
                proptest::array::uniform2(any::<u64>()),
                proptest::collection::vec(
                    (proptest::array::uniform3(any::<u64>()), any::<bool>()),
                    0..4
                ),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3)
            )
                .prop_map(|(handle, attr, [epoch, size], ext, bad)| Reply::Opened {
                    handle,
                    write: true,
                    attr,
                    layout: Some(Box::new(OpenLayout {
                        epoch,
                        serial: epoch ^ size,
                        size,
                        extents: ext
                            .into_iter()
                            .map(|([file_blk, dev_blk, len], shared)| Ext {
                                file_blk,
                                dev_blk,
                                len,
                                shared
                            })
                            .collect(),
                        bad,
                    })),
                }),
            any::<u64>().prop_map(|token| Reply::Shared { token }),
            any::<u64>().prop_map(|pos| Reply::Offset { pos }),
            path().prop_map(|path| Reply::Path { path }),
            (
                proptest::array::uniform3(any::<u64>()),
                proptest::collection::vec(
                    (proptest::array::uniform3(any::<u64>()), any::<bool>()),
                    0..20
                ),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(|(h, ext, bad, next)| Reply::Layout {
                    ino: h[0],
                    epoch: h[1],
                    serial: h[0] ^ h[2],
                    size: h[2],
                    extents: ext
                        .into_iter()
                        .map(|(e, shared)| Ext {
                            file_blk: e[0],
                            dev_blk: e[1],
                            len: e[2],
                            shared,
                        })
                        .collect(),
                    bad,
                    next,
                }),
            any::<u64>().prop_map(|n| Reply::Written { n }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(ino, epoch, wait, from_blk, to_blk)| Reply::Recall {
                    ino,
                    epoch,
                    wait,
                    from_blk,
                    to_blk
                }),
            any::<u64>().prop_map(|file_pages| Reply::Poisoned { file_pages }),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(ino, epoch, page)| Reply::Poison { ino, epoch, page }),
            (any::<u64>(), any::<bool>())
                .prop_map(|(bytes, differs)| Reply::Remapped { bytes, differs }),
            (any::<u64>(), any::<u64>()).prop_map(|(at, n)| Reply::Appended { at, n }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(size, limit, word_at, serial, epoch)| Reply::Granted {
                    size,
                    limit,
                    word_at,
                    serial,
                    epoch
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(ino, epoch)| Reply::Settle { ino, epoch }),
            (0..3u8, any::<u64>(), any::<u64>(), any::<i32>()).prop_map(
                |(kind, start, end, pid)| Reply::LockHeld {
                    kind,
                    start,
                    end,
                    pid
                }
            ),
            (
                proptest::collection::vec(entry, 0..20),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(entries, next)| Reply::Entries { entries, next }),
            proptest::array::uniform6(any::<u64>()).prop_map(|v| Reply::Totals(Totals {
                block_size: v[0],
                total_blocks: v[1],
                data_blocks: v[2],
                free_blocks: v[3],
                inodes: v[4],
                metadata_bytes: v[5],
            })),
            Just(Reply::Done),
            (any::<i32>(), "[ -~]{0,80}")
                .prop_map(|(errno, message)| Reply::Error { errno, message }),
        ]
    }

    proptest! {
        #[test]
        fn every_request_round_trips(req in prop_oneof![request(), file_request(), claimed_request()], id in any::<u64>()) {
            prop_assert_eq!(Request::decode(&req.encode(id)).unwrap(), (id, req));
        }

        #[test]
        fn every_reply_round_trips(rep in reply(), id in any::<u64>()) {
            prop_assert_eq!(Reply::decode(&rep.encode(id)).unwrap(), (id, rep));
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_message_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }

        #[test]
        fn a_valid_header_over_arbitrary_bodies_never_panics(
            kind in prop_oneof![1u16..=51, Just(64u16), 100u16..=126],
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut w = Writer::new();
            w.bytes(&body);
            let msg = frame(kind, 7, w);
            let _ = Request::decode(&msg);
            let _ = Reply::decode(&msg);
        }

        #[test]
        fn any_single_byte_change_of_a_request_is_caught_or_decodes_to_a_message(
            req in prop_oneof![request(), file_request(), claimed_request()], at in any::<prop::sample::Index>(), x in 1u8..=255,
        ) {
            let mut m = req.encode(1);
            let i = at.index(m.len());
            m[i] ^= x;
            // Never a panic; and a change in the header's fixed fields is an error.
            let r = Request::decode(&m);
            if i < 4 || (4..6).contains(&i) || (16..24).contains(&i) {
                prop_assert!(r.is_err());
            }
        }
    }

    #[test]
    fn a_wrapped_reply_that_wraps_another_or_carries_too_many_keys_is_refused() {
        let inner = Reply::Walked {
            deps: vec![1],
            then: Box::new(Reply::Done),
        };
        let nested = Reply::Walked {
            deps: vec![2],
            then: Box::new(inner),
        };
        assert!(matches!(
            Reply::decode(&nested.encode(3)),
            Err(ProtoError::Malformed(_))
        ));
        // A `Changed` wraps neither kind, and carries at most two seeds
        // of at most `MAX_KEYS` keys each.
        let seed = Seed {
            path: b"/a".to_vec(),
            deps: vec![1, 2],
            attr: None,
        };
        let changed = |seeds: Vec<Seed>, then: Reply| Reply::Changed {
            at: 9,
            seeds,
            then: Box::new(then),
        };
        let ok = changed(vec![seed.clone(); MAX_SEEDS], Reply::Done);
        assert_eq!(Reply::decode(&ok.encode(3)).unwrap(), (3, ok.clone()));
        for bad in [
            changed(vec![seed.clone(); MAX_SEEDS + 1], Reply::Done),
            changed(
                vec![Seed {
                    deps: vec![3; MAX_KEYS + 1],
                    ..seed.clone()
                }],
                Reply::Done,
            ),
            changed(
                vec![],
                Reply::Walked {
                    deps: vec![],
                    then: Box::new(Reply::Done),
                },
            ),
            changed(vec![], ok.clone()),
            Reply::Walked {
                deps: vec![],
                then: Box::new(ok.clone()),
            },
        ] {
            assert!(matches!(
                Reply::decode(&bad.encode(3)),
                Err(ProtoError::Malformed(_))
            ));
        }
        let too_many = Reply::Walked {
            deps: vec![7; MAX_KEYS + 1],
            then: Box::new(Reply::Done),
        };
        assert!(matches!(
            Reply::decode(&too_many.encode(3)),
            Err(ProtoError::Malformed(_))
        ));
        // A full page of entries still fits its message inside a `Walked`.
        let name = vec![b'n'; 200];
        let e = Entry {
            cookie: 1,
            name,
            ino: 2,
            kind: 1,
        };
        let n = ENTRIES_ROOM / entry_bytes(&e);
        let page = Reply::Walked {
            deps: vec![9; MAX_KEYS],
            then: Box::new(Reply::Entries {
                entries: vec![e; n],
                next: Some(5),
            }),
        };
        assert!(page.encode(1).len() <= MAX_MESSAGE);
    }

    fn claim() -> Claim {
        Claim {
            tid: 7,
            uid: 1000,
            gid: 100,
            groups: vec![4, 27],
        }
    }

    #[test]
    fn a_claim_wraps_only_a_permission_checked_request_and_only_once() {
        let stat = Request::Stat {
            path: b"/a".to_vec(),
        };
        let ok = Request::As {
            claim: claim(),
            req: Box::new(stat.clone()),
        };
        assert_eq!(Request::decode(&ok.encode(5)).unwrap(), (5, ok.clone()));
        for inner in [
            Request::Ping,
            Request::Hello {
                version: VERSION,
                write: true,
            },
            Request::Close {
                handle: 1,
                mtime_ns: 0,
            },
            ok,
        ] {
            let m = Request::As {
                claim: claim(),
                req: Box::new(inner.clone()),
            }
            .encode(1);
            assert!(
                matches!(Request::decode(&m), Err(ProtoError::Malformed(_))),
                "{inner:?}"
            );
        }
    }

    #[test]
    fn a_claim_with_too_many_groups_is_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(1).u32(2).u32(3).u32(u32::MAX);
        let m = frame(64, 1, w);
        assert!(matches!(Request::decode(&m), Err(ProtoError::Malformed(_))));
        let big = Request::As {
            claim: Claim {
                groups: vec![9; MAX_GROUPS + 1],
                ..claim()
            },
            req: Box::new(Request::Stat {
                path: b"/a".to_vec(),
            }),
        };
        assert!(Request::decode(&big.encode(1)).is_err());
    }

    #[test]
    fn a_truncated_message_is_malformed_not_a_panic() {
        let m = Request::Rename {
            from: b"/a".to_vec(),
            to: b"/b".to_vec(),
        }
        .encode(3);
        for n in 0..m.len() {
            assert!(Request::decode(&m[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut m = Request::Ping.encode(1);
        m.push(0);
        let n = m.len() - HEADER;
        m[16..20].copy_from_slice(&(n as u32).to_le_bytes());
        assert!(matches!(Request::decode(&m), Err(ProtoError::Malformed(_))));
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut m = Request::Ping.encode(1);
        let other = VERSION + 1;
        m[4..6].copy_from_slice(&other.to_le_bytes());
        assert_eq!(Request::decode(&m), Err(ProtoError::Version(other)));
    }

    #[test]
    fn paths_must_be_non_empty_short_and_nul_free() {
        for bad in [Vec::new(), vec![b'a'; MAX_PATH + 1], b"/a\0b".to_vec()] {
            let m = Request::Stat { path: bad.clone() }.encode(1);
            assert!(Request::decode(&m).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX).u8(0).u64(0);
        let m = frame(104, 1, w);
        assert!(matches!(Reply::decode(&m), Err(ProtoError::Malformed(_))));
    }

    #[test]
    fn error_text_is_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_TEXT);
        let m = Reply::Error {
            errno: 5,
            message: long,
        }
        .encode(1);
        let (_, r) = Reply::decode(&m).unwrap();
        let Reply::Error { message, .. } = r else {
            panic!("not an error")
        };
        assert!(message.len() <= MAX_ERROR_TEXT && message.chars().all(|c| c == 'é'));
    }
}
