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

pub mod wire;

use crate::format::codec::{Reader, Writer};
use crate::format::FormatError;

/// Protocol version spoken by this build; a peer with another gets an error.
pub const VERSION: u16 = 1;
/// Magic at the start of every message.
pub const MAGIC: [u8; 4] = *b"UDXP";
/// Bytes of the header.
pub const HEADER: usize = 24;
/// The largest message either side sends or accepts (header included).
pub const MAX_MESSAGE: usize = 64 << 10;
/// Longest path in a message (PATH_MAX, with its terminating NUL not sent).
pub const MAX_PATH: usize = 4095;
/// Longest name of a directory entry.
pub const MAX_NAME: usize = 255;
/// Most data bytes in one `Write` (the rest of a message is its fields).
pub const MAX_WRITE: usize = 60 << 10;

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
    Stat {
        path: Vec<u8>,
    },
    /// Entries of a directory from index `from` on (as many as fit one reply).
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
    /// dropped its layout of `ino` and waited for its reads in flight.
    Recalled {
        ino: u64,
        epoch: u64,
    },
    /// Open a file: a handle the owner keeps the file open by (an unlinked
    /// file lives while a handle does).
    Open {
        path: Vec<u8>,
        write: bool,
        create: bool,
        mode: u32,
    },
    Close {
        handle: u64,
    },
    /// A read lease on the file's layout, extents from file block
    /// `from_blk` on (as many as fit one reply).
    Lease {
        handle: u64,
        from_blk: u64,
    },
    /// Set the file's size (recalls other clients' leases first).
    Truncate {
        handle: u64,
        size: u64,
    },
    /// Write `data` at `offset` through the owner (recalls other clients'
    /// leases first when it fills a hole or grows the file).
    Write {
        handle: u64,
        offset: u64,
        data: Vec<u8>,
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
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// `d_type`.
    pub kind: u8,
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
    /// Entries, and the index to ask from for more (`None`: no more).
    Entries {
        entries: Vec<Entry>,
        next: Option<u64>,
    },
    Totals(Totals),
    /// A change was made (and committed to the journal).
    Done,
    /// Answers `Open`.
    Opened {
        handle: u64,
        attr: Attr,
    },
    /// Answers `Lease`: the layout from the asked block on, under lease
    /// epoch `epoch` of the file. `bad` lists file block ranges on media
    /// errors. `next`: the block to ask from for more extents.
    Layout {
        ino: u64,
        epoch: u64,
        size: u64,
        extents: Vec<Ext>,
        bad: Vec<(u64, u64)>,
        next: Option<u64>,
    },
    /// Answers `Write`: bytes written.
    Written {
        n: u64,
    },
    /// Sent by the owner on a client's callback channel: drop the layout of
    /// `ino` (leases of epoch `epoch` and older end) and answer `Recalled`.
    Recall {
        ino: u64,
        epoch: u64,
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
    if n == 0 || n > MAX_PATH {
        return Err(ProtoError::Malformed(format!("path of {n} bytes")));
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
        .u64(a.btime_ns);
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
    })
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
    fn kind(&self) -> u16 {
        match self {
            Request::Hello { .. } => 1,
            Request::Ping => 2,
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
        }
    }

    /// The message for this request with request id `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Hello { version, write } => {
                w.u16(*version).u8(*write as u8);
            }
            Request::Ping | Request::StatFs => {}
            Request::Stat { path } | Request::Unlink { path } | Request::Rmdir { path } => {
                path_out(&mut w, path)
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
            Request::Listen { client: a }
            | Request::Close { handle: a }
            | Request::Fsync { handle: a } => {
                w.u64(*a);
            }
            Request::Recalled { ino: a, epoch: b }
            | Request::Lease {
                handle: a,
                from_blk: b,
            }
            | Request::Truncate { handle: a, size: b }
            | Request::Touch {
                handle: a,
                mtime_ns: b,
            } => {
                w.u64(*a).u64(*b);
            }
            Request::Open {
                path,
                write,
                create,
                mode,
            } => {
                path_out(&mut w, path);
                w.u8(*write as u8).u8(*create as u8).u32(*mode);
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                w.u64(*handle)
                    .u64(*offset)
                    .u32(data.len() as u32)
                    .bytes(data);
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
            },
            13 => Request::Open {
                path: path_in(&mut r)?,
                write: bool_in(&mut r)?,
                create: bool_in(&mut r)?,
                mode: r.u32()?,
            },
            14 => Request::Close { handle: r.u64()? },
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
                }
            }
            k => return Err(ProtoError::Kind(k)),
        };
        done(r)?;
        Ok((h.id, req))
    }
}

/// Bytes of one encoded entry (for filling a reply up to [`MAX_MESSAGE`]).
pub fn entry_bytes(e: &Entry) -> usize {
    2 + e.name.len() + 8 + 1
}

/// Room for entries in one `Entries` reply.
pub const ENTRIES_ROOM: usize = MAX_MESSAGE - HEADER - 4 - 9;

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
        }
    }

    /// The message for this reply to request `id`.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut w = Writer::new();
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
            Reply::Opened { handle, attr } => {
                w.u64(*handle);
                attr_out(&mut w, attr);
            }
            Reply::Layout {
                ino,
                epoch,
                size,
                extents,
                bad,
                next,
            } => {
                w.u64(*ino).u64(*epoch).u64(*size).u32(extents.len() as u32);
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
                next_out(&mut w, *next);
            }
            Reply::Written { n } => {
                w.u64(*n);
            }
            Reply::Recall { ino, epoch } => {
                w.u64(*ino).u64(*epoch);
            }
            Reply::Entries { entries, next } => {
                w.u32(entries.len() as u32);
                for e in entries {
                    w.u16(e.name.len() as u16)
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
                    .u64(t.inodes);
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
                // Each entry is at least 12 bytes: the count cannot ask for
                // more than the body holds.
                let n = r.u32()? as usize;
                if n > r.remaining() / 12 {
                    return Err(ProtoError::Malformed(format!("{n} entries")));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u16()? as usize;
                    if len == 0 || len > MAX_NAME {
                        return Err(ProtoError::Malformed(format!("name of {len} bytes")));
                    }
                    let name = r.bytes(len)?.to_vec();
                    if name.contains(&0) || name.contains(&b'/') {
                        return Err(ProtoError::Malformed("'/' or NUL in a name".into()));
                    }
                    entries.push(Entry {
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
                attr: attr_in(&mut r)?,
            },
            109 => {
                let (ino, epoch, size) = (r.u64()?, r.u64()?, r.u64()?);
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
                        shared: bool_in(&mut r)?,
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
                Reply::Layout {
                    ino,
                    epoch,
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
            },
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

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u16>(), any::<bool>())
                .prop_map(|(version, write)| Request::Hello { version, write }),
            Just(Request::Ping),
            path().prop_map(|path| Request::Stat { path }),
            (path(), any::<u64>()).prop_map(|(path, from)| Request::ReadDir { path, from }),
            Just(Request::StatFs),
            (path(), any::<u32>()).prop_map(|(path, mode)| Request::Mkdir { path, mode }),
            (path(), any::<u32>()).prop_map(|(path, mode)| Request::Create { path, mode }),
            path().prop_map(|path| Request::Unlink { path }),
            path().prop_map(|path| Request::Rmdir { path }),
            (path(), path()).prop_map(|(from, to)| Request::Rename { from, to }),
            any::<u64>().prop_map(|client| Request::Listen { client }),
            (any::<u64>(), any::<u64>()).prop_map(|(ino, epoch)| Request::Recalled { ino, epoch }),
            (path(), any::<bool>(), any::<bool>(), any::<u32>()).prop_map(
                |(path, write, create, mode)| {
                    Request::Open {
                        path,
                        write,
                        create,
                        mode,
                    }
                }
            ),
            any::<u64>().prop_map(|handle| Request::Close { handle }),
            any::<u64>().prop_map(|handle| Request::Fsync { handle }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, mtime_ns)| Request::Touch { handle, mtime_ns }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, from_blk)| Request::Lease { handle, from_blk }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(handle, size)| Request::Truncate { handle, size }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(handle, offset, data)| Request::Write {
                    handle,
                    offset,
                    data,
                }),
        ]
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((1u8..=255).prop_filter("no slash", |b| *b != b'/'), 1..32)
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let attr = proptest::array::uniform12(any::<u64>()).prop_map(|v| Attr {
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
        });
        let entry = (name(), any::<u64>(), any::<u8>()).prop_map(|(name, ino, kind)| Entry {
            name,
            ino,
            kind,
        });
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
            attr.clone().prop_map(Reply::Attr),
            (any::<u64>(), attr).prop_map(|(handle, attr)| Reply::Opened { handle, attr }),
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
            (any::<u64>(), any::<u64>()).prop_map(|(ino, epoch)| Reply::Recall { ino, epoch }),
            (
                proptest::collection::vec(entry, 0..20),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(entries, next)| Reply::Entries { entries, next }),
            proptest::array::uniform5(any::<u64>()).prop_map(|v| Reply::Totals(Totals {
                block_size: v[0],
                total_blocks: v[1],
                data_blocks: v[2],
                free_blocks: v[3],
                inodes: v[4],
            })),
            Just(Reply::Done),
            (any::<i32>(), "[ -~]{0,80}")
                .prop_map(|(errno, message)| Reply::Error { errno, message }),
        ]
    }

    proptest! {
        #[test]
        fn every_request_round_trips(req in request(), id in any::<u64>()) {
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
            kind in prop_oneof![1u16..=20, 100u16..=112],
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
            req in request(), at in any::<prop::sample::Index>(), x in 1u8..=255,
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
        m[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Request::decode(&m), Err(ProtoError::Version(2)));
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
